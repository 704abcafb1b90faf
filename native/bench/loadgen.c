/*
 * loadgen.c — the load generator of `mtcp-loop bench compare`, in C on the project's own engine
 * and a ring backend (as mTCP's epwget runs on mTCP), so it drives kernel servers and ours alike
 * without the kernel-socket client's cost (its softirq runs on the sender's core).
 *
 * It attaches to an existing interface (the peer end of the link: a veth end or the kernel side
 * of the TAP) with AF_PACKET (default) or AF_XDP, owns --ip on it (the interface itself must have
 * no kernel addresses, or the kernel answers our peers with RSTs) and talks to --dst.
 *
 *   --mode short   connect, send --size bytes, read the echo, close; --conc in flight, a finished
 *                  one is replaced at once. Reports completed connections/s over --seconds after
 *                  --warmup. Every echo is compared with what was sent.
 *   --mode idle    open --conns connections spread over ports --port .. --port+--ports-1 (at most
 *                  --conc handshakes in flight; --port-step between the ports), print one JSON line {"established":...} and hold
 *                  them (answering ACKs/keepalives) until stdin closes or --seconds pass.
 *   --mode sizes   print the engine's per-connection sizes (sizeof struct conn, chunk size).
 *
 * Engine settings (stated with the figures): MTU 1500, TIME-WAIT shortened to 2*50 ms and the
 * ephemeral range 1024-65535 (the kernel client uses tcp_tw_reuse for the same reason),
 * 16 KB buffers. The first connection resolves ARP before the others start.
 * Output: one JSON object on stdout. Exit 0, or 1 with a message on stderr.
 *
 * Build: make -C native loadgen  (-> native/build/bench/loadgen)
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "mtcp.h"
#include "engine/engine.h"

#define EV_BATCH 4096
#define MAXMSG 65536
/* New connections per engine iteration while ramping up: a burst of 1000 SYNs at once filled
 * the AF_PACKET TX ring on a TAP (whose queue drops) and stalled the run. */
#define RAMP_BATCH 64

struct opts {
    const char *backend, *ifname, *mode;
    uint8_t ip[4], dst[4];
    int prefix;
    int port, ports, port_step;
    uint32_t conc, conns, size;
    double seconds, warmup;
    int cpu, no_offload, busy;
};

struct conn_st {
    uint32_t got;
    uint8_t live;
};

struct lg {
    struct opts o;
    mtcp_engine *e;
    mtcp_link *l;
    struct conn_st *st;
    uint32_t max_conns;
    uint8_t msg[MAXMSG], rbuf[MAXMSG];
    uint64_t done, errors, started, established, active;
    int ramped;
    uint32_t pending;            /* connections still to start during the ramp */
    int kick_fd;                 /* AF_PACKET socket to re-kick (see step()), or -1 */
    uint32_t next_port;
};

static volatile sig_atomic_t g_stop;
static void on_sig(int s) { (void)s; g_stop = 1; }

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double cpu_s(int who_sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval t = who_sys ? ru.ru_stime : ru.ru_utime;
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static void die(const char *m)
{
    fprintf(stderr, "loadgen: %s\n", m);
    exit(1);
}

static int parse_ip(const char *s, uint8_t out[4], int *prefix)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = 0;
        if (prefix)
            *prefix = atoi(slash + 1);
    }
    return inet_pton(AF_INET, buf, out) == 1 ? 0 : -1;
}

static int if_mac(const char *ifname, uint8_t mac[6])
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    int rc = ioctl(s, SIOCGIFHWADDR, &ifr);
    close(s);
    if (rc < 0)
        return -1;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

static uint64_t counter(mtcp_engine *e, const char *name)
{
    uint32_t n = mtcp_counter_count();
    uint64_t v[256];
    if (n > 256)
        n = 256;
    mtcp_engine_counters(e, v, n);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(mtcp_counter_name(i), name) == 0)
            return v[i];
    return 0;
}

static void dst_addr(struct lg *g, struct mtcp_addr *a)
{
    memset(a, 0, sizeof *a);
    a->family = MTCP_AF_INET;
    memcpy(a->ip, g->o.dst, 4);
    a->port = (uint16_t)(g->o.port + g->o.port_step * (int)(g->next_port++ % (uint32_t)g->o.ports));
}

static void start_one(struct lg *g, uint64_t now)
{
    struct mtcp_addr a;
    dst_addr(g, &a);
    int64_t cid = mtcp_connect(g->e, now, &a, NULL);
    if (cid < 0) {
        g->errors++;
        return;
    }
    struct conn_st *c = &g->st[(uint32_t)cid % g->max_conns];
    c->got = 0;
    c->live = 1;
    g->started++;
    g->active++;
}

static void finish(struct lg *g, mtcp_cid cid, int ok, uint64_t now)
{
    struct conn_st *c = &g->st[(uint32_t)cid % g->max_conns];
    if (!c->live)
        return;
    c->live = 0;
    g->active--;
    if (ok) {
        mtcp_close(g->e, cid);
        g->done++;
    } else {
        mtcp_abort(g->e, cid);
        g->errors++;
    }
    if (!g_stop && strcmp(g->o.mode, "short") == 0)
        start_one(g, now);
}

static void ramp(struct lg *g, uint64_t now)
{
    if (g->ramped)
        return;
    g->ramped = 1;
    uint32_t want = g->o.conc;
    if (strcmp(g->o.mode, "idle") == 0 && g->o.conns < want)
        want = g->o.conns;
    g->pending = want - 1;       /* started by step(), at most RAMP_BATCH per iteration */
    (void)now;
}

/* returns the number of events handled */
static uint32_t dispatch(struct lg *g, uint64_t now)
{
    static struct mtcp_event ev[EV_BATCH];
    uint32_t total = 0, n;
    int idle = strcmp(g->o.mode, "idle") == 0;
    while ((n = mtcp_engine_events(g->e, ev, EV_BATCH)) > 0) {
        total += n;
        for (uint32_t i = 0; i < n; i++) {
            struct mtcp_event *e = &ev[i];
            struct conn_st *c = &g->st[(uint32_t)e->cid % g->max_conns];
            switch (e->type) {
            case MTCP_EV_CONNECTED:
                ramp(g, now);
                if (idle) {
                    g->established++;
                    g->active--;
                    if (g->started < g->o.conns)
                        start_one(g, now);
                    break;
                }
                if (mtcp_send(g->e, e->cid, g->msg, g->o.size) != (int64_t)g->o.size)
                    finish(g, e->cid, 0, now);
                break;
            case MTCP_EV_READABLE:
                for (;;) {
                    int64_t r = mtcp_recv(g->e, e->cid, g->rbuf, sizeof g->rbuf);
                    if (r <= 0)
                        break;
                    if (!idle && c->live) {
                        if (c->got + r > g->o.size || memcmp(g->rbuf, g->msg + c->got, (size_t)r) != 0) {
                            finish(g, e->cid, 0, now);
                            break;
                        }
                        c->got += (uint32_t)r;
                        if (c->got == g->o.size)
                            finish(g, e->cid, 1, now);
                    }
                }
                break;
            case MTCP_EV_CONNECT_FAILED:
                ramp(g, now);
                if (idle) {
                    g->errors++;
                    g->active--;
                    mtcp_close(g->e, e->cid);
                    if (g->started < g->o.conns)
                        start_one(g, now);
                    break;
                }
                finish(g, e->cid, 0, now);
                break;
            case MTCP_EV_ERROR:
            case MTCP_EV_PEER_CLOSED:
            case MTCP_EV_CLOSED:
                if (idle) {
                    if (e->type != MTCP_EV_PEER_CLOSED)
                        mtcp_close(g->e, e->cid);
                    break;
                }
                if (c->live)
                    finish(g, e->cid, 0, now);
                else if (e->type != MTCP_EV_PEER_CLOSED)
                    mtcp_close(g->e, e->cid);
                break;
            default:
                break;
            }
        }
    }
    return total;
}

/* one engine iteration; blocks on the link fd (up to 1 ms or the next deadline) when idle */
static uint64_t g_ramp_at;

static void step(struct lg *g)
{
    uint64_t now = now_us();
    if (!g->ramped && now >= g_ramp_at)
        ramp(g, now);
    for (uint32_t k = 0; k < RAMP_BATCH && g->pending > 0 && !g_stop; k++) {
        g->pending--;
        start_one(g, now);
    }
    mtcp_engine_poll(g->e, now);
    uint32_t n = dispatch(g, now);
    if (n || g->o.busy || g->pending)
        return;
    int64_t dl = mtcp_engine_next_deadline(g->e);
    int tmo = 1;
    if (dl >= 0 && (uint64_t)dl <= now) {
        tmo = 0;
        /* Work-around for native/io/packet.c pkt_txsync: after sendto() failed with ENOBUFS (the
         * TAP's queue was full: PACKET_QDISC_BYPASS drops and stops), the frames left in
         * TP_STATUS_SEND_REQUEST are never kicked again, because txsync only calls sendto() when
         * it queued new frames, and with the ring full it queues none. Kick it here. */
        if (g->kick_fd >= 0)
            (void)sendto(g->kick_fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
    }
    struct pollfd p = {.fd = mtcp_engine_fd(g->e), .events = POLLIN};
    if (p.fd >= 0 && tmo)
        poll(&p, 1, tmo);
}

/* RST every connection still open (so the server keeps no stale state for the next run) and
 * give the TX ring time to drain. */
static void abort_all(struct lg *g)
{
    static mtcp_cid cids[4096];
    uint32_t n;
    mtcp_cid after = 0;
    while ((n = mtcp_conn_list(g->e, after, cids, 4096)) > 0) {
        after = cids[n - 1];
        for (uint32_t i = 0; i < n; i++)
            mtcp_abort(g->e, cids[i]);
        mtcp_engine_poll(g->e, now_us());
    }
    uint64_t end = now_us() + 200000;
    g->o.busy = 0;
    while (now_us() < end) {
        mtcp_engine_poll(g->e, now_us());
        struct mtcp_event ev[256];
        while (mtcp_engine_events(g->e, ev, 256) > 0) {}
        usleep(1000);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --ifname IF --ip A.B.C.D/N --dst A.B.C.D --port P [--ports K] [--port-step D]\n"
            "               [--mode short|idle|sizes] [--backend packet|xdp] [--conc N] [--conns N]\n"
            "               [--size B] [--seconds S] [--warmup S] [--cpu C] [--no-offload] [--busy]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static struct lg g;
    struct opts *o = &g.o;
    o->backend = "packet";
    o->mode = "short";
    o->ifname = NULL;
    o->prefix = 24;
    o->port = 0;
    o->ports = 1;
    o->port_step = 1;
    o->conc = 256;
    o->conns = 1000;
    o->size = 64;
    o->seconds = 5;
    o->warmup = 1;
    o->cpu = -1;
    int have_ip = 0, have_dst = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--backend")) o->backend = v;
        else if (ARG("--ifname")) o->ifname = v;
        else if (ARG("--mode")) o->mode = v;
        else if (ARG("--ip")) { if (parse_ip(v, o->ip, &o->prefix)) usage(); have_ip = 1; }
        else if (ARG("--dst")) { if (parse_ip(v, o->dst, NULL)) usage(); have_dst = 1; }
        else if (ARG("--port")) o->port = atoi(v);
        else if (ARG("--ports")) o->ports = atoi(v);
        else if (ARG("--port-step")) o->port_step = atoi(v);
        else if (ARG("--conc")) o->conc = (uint32_t)atoi(v);
        else if (ARG("--conns")) o->conns = (uint32_t)atoi(v);
        else if (ARG("--size")) o->size = (uint32_t)atoi(v);
        else if (ARG("--seconds")) o->seconds = atof(v);
        else if (ARG("--warmup")) o->warmup = atof(v);
        else if (ARG("--cpu")) o->cpu = atoi(v);
        else if (strcmp(a, "--no-offload") == 0) o->no_offload = 1;
        else if (strcmp(a, "--busy") == 0) o->busy = 1;
        else usage();
#undef ARG
    }
    struct mtcp_config c;
    mtcp_config_default(&c);
    if (strcmp(o->mode, "sizes") == 0) {
        printf("{\"sizeof_conn\": %zu, \"chunk_size\": %u, \"sizeof_tcp_conn\": %zu}\n",
               sizeof(struct conn), c.chunk_size, sizeof(struct tcp_conn));
        return 0;
    }
    if (!o->ifname || !have_ip || !have_dst || o->port <= 0 || o->ports < 1 || o->size == 0 ||
        o->size > MAXMSG || o->conc == 0)
        usage();
    if (o->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o->cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            perror("loadgen: sched_setaffinity");
    }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    signal(SIGPIPE, SIG_IGN);
    int idle = strcmp(o->mode, "idle") == 0;
    if (!idle && strcmp(o->mode, "short") != 0)
        usage();

    char err[256] = "";
    uint32_t flags = o->no_offload ? MTCP_LINK_NO_OFFLOAD : 0;
    if (strcmp(o->backend, "xdp") == 0)
        g.l = mtcp_xdp_open(o->ifname, 0, flags, err, sizeof err);
    else
        g.l = mtcp_packet_open(o->ifname, 0, 1, flags, err, sizeof err);
    if (!g.l)
        die(err);

    c.link_type = MTCP_LINK_ETHERNET;
    c.mtu = 1500;
    if (if_mac(o->ifname, c.mac) < 0)
        die("cannot read the interface's MAC");
    memcpy(c.ipv4, o->ip, 4);
    c.ipv4_prefix = (uint8_t)o->prefix;
    c.msl_us = 50000;
    c.eph_port_lo = 1024;
    c.eph_port_hi = 65535;
    c.sndbuf = 16384;
    c.rcvbuf = 16384;
    c.max_events = 1u << 17;
    c.seed = (uint64_t)now_us() ^ ((uint64_t)getpid() << 32);
    g.max_conns = idle ? o->conns + 4096 : 65536;
    c.max_conns = g.max_conns;
    c.max_chunks = idle ? 8192 : g.max_conns + 1024;
    g.e = mtcp_engine_new(&c, g.l, err, sizeof err);
    if (!g.e)
        die(err);
    /* AF_PACKET: a TX-ring frame stays charged to the socket's send buffer until the skb is freed,
     * and on a TAP that is when the server reads it. With the default buffer, 1000 frames in flight
     * made sendto() fail with ENOBUFS/EAGAIN, and pkt_txsync (native/io/packet.c) only calls
     * sendto() again for new frames: the frames stayed TP_STATUS_SEND_REQUEST with the ring full,
     * and the run stalled. A send buffer that holds the whole ring avoids that (root: FORCE). */
    g.kick_fd = -1;
    if (strcmp(o->backend, "packet") == 0) {
        int fd = mtcp_engine_fd(g.e), sz = 32 << 20;
        g.kick_fd = fd;
        if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    g.st = calloc(g.max_conns, sizeof *g.st);
    if (!g.st)
        die("out of memory");
    for (uint32_t i = 0; i < MAXMSG; i++)
        g.msg[i] = (uint8_t)(i * 7 + 1);

    uint64_t t_start = now_us();
    g_ramp_at = t_start + 200000;   /* the first connection resolves ARP; the rest follow it */
    start_one(&g, t_start);
    if (idle) {
        /* ramp up; give up after --seconds (default 60 s) without reaching the target */
        uint64_t limit = t_start + (uint64_t)((o->seconds > 0 ? o->seconds : 60) * 1e6);
        while (!g_stop && g.established + g.errors < o->conns && now_us() < limit)
            step(&g);
        double el = (double)(now_us() - t_start) / 1e6;
        printf("{\"mode\": \"idle\", \"established\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
               "\"conns_per_sec\": %.1f}\n",
               (unsigned long long)g.established, (unsigned long long)g.errors, el,
               (double)g.established / (el > 0 ? el : 1));
        fflush(stdout);
        /* hold until stdin closes (harness done measuring) or SIGTERM */
        int in_open = 1;
        while (!g_stop && in_open) {
            step(&g);
            struct pollfd p = {.fd = 0, .events = POLLIN};
            if (poll(&p, 1, 0) > 0) {
                char b[64];
                if (read(0, b, sizeof b) <= 0)
                    in_open = 0;
            }
        }
        abort_all(&g);
        return 0;
    }

    uint64_t warm_end = t_start + (uint64_t)(o->warmup * 1e6);
    while (!g_stop && now_us() < warm_end)
        step(&g);
    uint64_t d0 = g.done, e0 = g.errors, r0 = counter(g.e, "retrans_segs");
    uint64_t ls0[MTCP_LINK_NSTATS], ls1[MTCP_LINK_NSTATS];
    mtcp_link_stats(g.l, ls0, MTCP_LINK_NSTATS);
    double u0 = cpu_s(0), s0 = cpu_s(1);
    uint64_t t0 = now_us(), end = t0 + (uint64_t)(o->seconds * 1e6);
    while (!g_stop && now_us() < end)
        step(&g);
    uint64_t t1 = now_us();
    double u1 = cpu_s(0), s1 = cpu_s(1);
    mtcp_link_stats(g.l, ls1, MTCP_LINK_NSTATS);
    uint64_t done = g.done - d0, errs = g.errors - e0;
    double el = (double)(t1 - t0) / 1e6;
    printf("{\"mode\": \"short\", \"backend\": \"%s\", \"conc\": %u, \"size\": %u, \"conns\": %llu, "
           "\"errors\": %llu, \"seconds\": %.3f, \"conns_per_sec\": %.1f, \"frames_tx\": %llu, "
           "\"frames_rx\": %llu, \"rx_dropped\": %llu, \"retransmits\": %llu, \"cpu_user\": %.3f, "
           "\"cpu_sys\": %.3f}\n",
           o->backend, o->conc, o->size, (unsigned long long)done, (unsigned long long)errs, el,
           (double)done / el, (unsigned long long)(ls1[1] - ls0[1]), (unsigned long long)(ls1[0] - ls0[0]),
           (unsigned long long)(ls1[2] - ls0[2]), (unsigned long long)(counter(g.e, "retrans_segs") - r0),
           u1 - u0, s1 - s0);
    fflush(stdout);
    if (getenv("LOADGEN_DEBUG")) {
        uint32_t nc = mtcp_counter_count();
        uint64_t v[256], pu[4];
        mtcp_engine_counters(g.e, v, nc < 256 ? nc : 256);
        for (uint32_t i = 0; i < nc && i < 256; i++)
            if (v[i])
                fprintf(stderr, "%s=%llu ", mtcp_counter_name(i), (unsigned long long)v[i]);
        mtcp_engine_pool_usage(g.e, pu);
        fprintf(stderr, "\npool %llu %llu %llu %llu active %llu started %llu pending %u deadline %lld now %llu\n",
                (unsigned long long)pu[0], (unsigned long long)pu[1], (unsigned long long)pu[2],
                (unsigned long long)pu[3], (unsigned long long)g.active, (unsigned long long)g.started,
                g.pending, (long long)mtcp_engine_next_deadline(g.e), (unsigned long long)now_us());
        mtcp_link_stats(g.l, ls1, MTCP_LINK_NSTATS);
        for (int i = 0; i < MTCP_LINK_NSTATS; i++)
            fprintf(stderr, "%s=%llu ", mtcp_link_stat_name((uint32_t)i), (unsigned long long)ls1[i]);
        fprintf(stderr, "\n");
    }
    g_stop = 1;
    abort_all(&g);
    mtcp_engine_free(g.e);
    mtcp_link_close(g.l);
    free(g.st);
    return 0;
}
