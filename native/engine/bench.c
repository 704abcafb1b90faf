/*
 * bench.c — the engine benchmark (mtcp_bench_engine): two engines joined by an in-memory
 * link (mtcp_simlink_pair), both driven from this one thread, no Python anywhere.
 *
 *   mode 0 (and 2), short connections: `param` clients at a time each do connect (handshake),
 *     send 64 B, the server echoes 64 B, the client reads them and closes, the server closes
 *     on the peer's FIN; a finished client is replaced by a new connect at once.
 *     Reported: completed connections per second.
 *   mode 1 (and 3), bulk: one connection; the client keeps its send buffer full with writes of
 *     `param` bytes, the server reads everything. Reported: Gbit/s of payload delivered to
 *     the server application.
 *
 * Loop (modes 0/1, sim link): now = CLOCK_MONOTONIC; mtcp_engine_poll(client) (RX, timers, TX),
 * dispatch its events; the same for the server; repeat. Writes made while dispatching go out at
 * the next poll, after the ACKs that poll already sent.
 * Loop (modes 2/3, frame API): client output -> server input, dispatch server events, server
 * output -> client input, dispatch client events; repeat. Output follows dispatch, so a reply
 * and the ACK it answers share a segment (what "one TX flush per loop iteration" after the
 * protocol callbacks gives).
 * This file and native/io are the only places that read a clock.
 *
 * mode | 4 (sim link only): the link advertises checksum offload (LINK_FEAT_CSUM_TX): the
 * engine leaves TCP checksums to the "device" (CSUM_PARTIAL) and the receiving engine trusts
 * such frames, as Linux does over veth and loopback. Without it both checksum passes run.
 *
 * Configuration choices (state them with the figures):
 *   MTU 1500 (MSS 1460 with the options in use), Ethernet framing with ARP, default CUBIC,
 *   SACK + timestamps + window scaling on (the defaults). Short mode shortens TIME-WAIT
 *   (msl_us 50 ms, so 2*MSL = 100 ms) and uses the ephemeral range 1024-65535, because at
 *   200k connections/s the default 60 s TIME-WAIT would need 12 million connection blocks and
 *   28k ports last 0.14 s (Linux hosts use tcp_tw_reuse for the same reason); per-connection
 *   buffers 16 KB. Not shorter: the engine also uses 2*MSL as the orphan FIN-WAIT-2 timeout,
 *   and with 2*MSL = 4 ms a loaded machine let the client give up before the server's FIN
 *   came (the server then retransmitted FINs from LAST-ACK into RSTs). The same happens at
 *   very high concurrency (8192 clients: a round through all of them over the 256-slot ring
 *   takes ~100 ms), so `retransmits` is not 0 there; 1024 clients keep it at 0.
 *   Short mode opens one connection first and the rest once it is established, so the first
 *   SYNs do not overflow the ARP wait queue (that cost a 1 s SYN retransmission).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mtcp.h"
#include "mtcp_bench.h"
#include "engine/counters.h"
#include "io/link.h"

#define BENCH_MSG 64
#define BENCH_SERVER_PORT 5001
#define BENCH_EV_BATCH 1024
/* Ring slots per direction of the in-memory link. Small rings keep the frame buffers in cache
 * (256 slots x ~1.5 KB x 4 rings = 1.6 MB); 16384 slots ran 2x slower (every frame buffer cold).
 * Each poll drains its RX ring completely, so nothing is dropped (link_drops reports it). */
#define BENCH_RING_SLOTS 256
#define BENCH_FRAMES 256        /* frame API batch */
#define BENCH_FRAME_CAP 1536

static uint64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
static uint64_t mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

struct bench {
    mtcp_engine *cli, *srv;
    mtcp_link *la, *lb;
    struct mtcp_addr srv_addr;
    uint8_t *rx_count;          /* short mode: bytes received per connection index (server/client) */
    uint32_t max_conns;
    uint8_t *buf, *rbuf;
    uint8_t *fbuf;              /* frame API: frames of one output call, back to back */
    uint32_t *flens;
    uint32_t buf_len;
    uint32_t spos, vpos;        /* bulk: write / verify position in buf */
    uint64_t verified;          /* bulk: bytes checked byte for byte (warm-up) */
    uint64_t conns_done, bytes, errors;
    uint32_t active;            /* client connections in flight */
    uint32_t write_size;
    uint32_t conc;              /* short: clients to keep going */
    int ramped;                 /* short: all clients started (after ARP resolved) */
    mtcp_cid bulk_cid;
    int bulk_ready;
};

static void addr4(struct mtcp_addr *a, uint8_t d, uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->family = MTCP_AF_INET;
    a->port = port;
    a->ip[0] = 198;
    a->ip[1] = 18;
    a->ip[2] = 0;
    a->ip[3] = d;
}

static mtcp_engine *make_engine(mtcp_link *l, uint8_t host, int mode, uint32_t max_conns, char *err, size_t errlen)
{
    struct mtcp_config c;
    mtcp_config_default(&c);
    c.link_type = MTCP_LINK_ETHERNET;
    c.mtu = 1500;
    c.mac[0] = 0x02;
    c.mac[5] = host;
    c.ipv4[0] = 198;
    c.ipv4[1] = 18;
    c.ipv4[2] = 0;
    c.ipv4[3] = host;
    c.ipv4_prefix = 24;
    c.seed = 0x6d74637062656e63ull + host;
    c.max_events = 1u << 17;
    if (mode == 0) {
        c.max_conns = max_conns;
        c.msl_us = 50000;
        c.eph_port_lo = 1024;
        c.eph_port_hi = 65535;
        c.syn_backlog = 65535;
        c.sndbuf = 16384;
        c.rcvbuf = 16384;
        c.max_chunks = max_conns * 2 + 1024;
    } else {
        c.max_conns = 64;
    }
    return mtcp_engine_new(&c, l, err, errlen);
}

static void bench_free(struct bench *b)
{
    if (b->cli)
        mtcp_engine_free(b->cli);
    if (b->srv)
        mtcp_engine_free(b->srv);
    if (b->la)
        mtcp_link_close(b->la);
    if (b->lb)
        mtcp_link_close(b->lb);
    free(b->rx_count);
    free(b->buf);
    free(b->rbuf);
    free(b->fbuf);
    free(b->flens);
}

/* Frame API: everything `from` has to send (timers, ACKs, data the application queued while
 * its events were dispatched) goes straight into `to`. Output runs after dispatch, so replies
 * and the ACKs they answer leave in one segment. */
static void pump(struct bench *b, mtcp_engine *from, mtcp_engine *to, uint64_t now)
{
    for (;;) {
        uint32_t n = mtcp_engine_output(from, now, b->fbuf, BENCH_FRAMES * BENCH_FRAME_CAP, b->flens,
                                        BENCH_FRAMES);
        const uint8_t *f = b->fbuf;
        for (uint32_t i = 0; i < n; i++) {
            mtcp_engine_input(to, now, f, b->flens[i]);
            f += b->flens[i];
        }
        if (n < BENCH_FRAMES / 2)
            break;
    }
}

static uint32_t cidx(mtcp_cid c) { return (uint32_t)c; }

/* ---------- short connections ---------- */

static void short_start(struct bench *b, uint64_t now)
{
    int64_t cid = mtcp_connect(b->cli, now, &b->srv_addr, NULL);
    if (cid < 0) {
        b->errors++;
        return;
    }
    b->rx_count[cidx((mtcp_cid)cid)] = 0;
    b->active++;
}

static void short_client_events(struct bench *b, uint64_t now, int measuring)
{
    struct mtcp_event ev[BENCH_EV_BATCH];
    uint32_t n;
    while ((n = mtcp_engine_events(b->cli, ev, BENCH_EV_BATCH)) > 0) {
        for (uint32_t i = 0; i < n; i++) {
            struct mtcp_event *e = &ev[i];
            switch (e->type) {
            case MTCP_EV_CONNECTED:
                if (mtcp_send(b->cli, e->cid, b->buf, BENCH_MSG) != BENCH_MSG)
                    b->errors++;
                if (!b->ramped) {               /* the neighbour is resolved: start the others */
                    b->ramped = 1;
                    for (uint32_t k = 1; k < b->conc; k++)
                        short_start(b, now);
                }
                break;
            case MTCP_EV_READABLE: {
                uint8_t *cnt = &b->rx_count[cidx(e->cid)];
                int64_t r = mtcp_recv(b->cli, e->cid, b->buf + BENCH_MSG, BENCH_MSG);
                if (r > 0) {
                    if (*cnt + r > BENCH_MSG || memcmp(b->buf + BENCH_MSG, b->buf + *cnt, (size_t)r) != 0)
                        b->errors++;                  /* the echo must be what we sent */
                    *cnt = (uint8_t)(*cnt + r);
                    if (*cnt >= BENCH_MSG) {
                        mtcp_close(b->cli, e->cid);
                        b->active--;
                        if (measuring)
                            b->conns_done++;
                        short_start(b, now);
                    }
                }
                break;
            }
            case MTCP_EV_CONNECT_FAILED:
            case MTCP_EV_ERROR:
            case MTCP_EV_PEER_CLOSED:
            case MTCP_EV_CLOSED:
                b->errors++;
                mtcp_close(b->cli, e->cid);
                b->active--;
                short_start(b, now);
                break;
            default:
                break;
            }
        }
    }
}

static void short_server_events(struct bench *b)
{
    struct mtcp_event ev[BENCH_EV_BATCH];
    uint32_t n;
    while ((n = mtcp_engine_events(b->srv, ev, BENCH_EV_BATCH)) > 0) {
        for (uint32_t i = 0; i < n; i++) {
            struct mtcp_event *e = &ev[i];
            switch (e->type) {
            case MTCP_EV_READABLE: {
                /* echo what arrived, as it arrives */
                int64_t r;
                while ((r = mtcp_recv(b->srv, e->cid, b->buf + 2 * BENCH_MSG, 2 * BENCH_MSG)) > 0)
                    if (mtcp_send(b->srv, e->cid, b->buf + 2 * BENCH_MSG, (uint32_t)r) != r)
                        b->errors++;
                break;
            }
            case MTCP_EV_PEER_CLOSED:
            case MTCP_EV_ERROR:
            case MTCP_EV_CLOSED:
                mtcp_close(b->srv, e->cid);
                break;
            default:
                break;
            }
        }
    }
}

/* ---------- bulk ---------- */

/* The stream is b->buf repeated: writes of write_size bytes (after a short write, the rest of
 * that one), so the receiver can check every byte during the warm-up. */
static void bulk_fill(struct bench *b)
{
    for (;;) {
        uint32_t want = b->write_size - b->spos;
        int64_t r = mtcp_send(b->cli, b->bulk_cid, b->buf + b->spos, want);
        if (r < 0) {
            b->errors++;
            return;
        }
        b->spos = (uint32_t)((b->spos + (uint64_t)r) % b->write_size);
        if ((uint64_t)r < want)
            return;
    }
}

static void bulk_verify(struct bench *b, const uint8_t *d, uint32_t n)
{
    while (n) {
        uint32_t k = b->write_size - b->vpos;
        if (k > n)
            k = n;
        if (memcmp(d, b->buf + b->vpos, k) != 0)
            b->errors++;
        b->vpos = (uint32_t)((b->vpos + (uint64_t)k) % b->write_size);
        b->verified += k;
        d += k;
        n -= k;
    }
}

static void bulk_client_events(struct bench *b)
{
    struct mtcp_event ev[BENCH_EV_BATCH];
    uint32_t n;
    while ((n = mtcp_engine_events(b->cli, ev, BENCH_EV_BATCH)) > 0) {
        for (uint32_t i = 0; i < n; i++) {
            switch (ev[i].type) {
            case MTCP_EV_CONNECTED:
                b->bulk_ready = 1;
                bulk_fill(b);
                break;
            case MTCP_EV_WRITABLE:
                bulk_fill(b);
                break;
            case MTCP_EV_CONNECT_FAILED:
            case MTCP_EV_ERROR:
                b->errors++;
                b->bulk_ready = -1;
                break;
            default:
                break;
            }
        }
    }
}

static void bulk_server_events(struct bench *b, int measuring)
{
    struct mtcp_event ev[BENCH_EV_BATCH];
    uint32_t n;
    while ((n = mtcp_engine_events(b->srv, ev, BENCH_EV_BATCH)) > 0) {
        for (uint32_t i = 0; i < n; i++) {
            if (ev[i].type != MTCP_EV_READABLE)
                continue;
            int64_t r;
            while ((r = mtcp_recv(b->srv, ev[i].cid, b->rbuf, b->buf_len)) > 0) {
                if (measuring)
                    b->bytes += (uint64_t)r;
                else
                    bulk_verify(b, b->rbuf, (uint32_t)r);   /* content check while warming up */
            }
        }
    }
}

/* ---------- driver ---------- */

int mtcp_bench_engine(int mode, double seconds, uint32_t param, struct mtcp_bench_result *out)
{
    char err[256];
    struct bench b;
    memset(&b, 0, sizeof b);
    if (!out || mode < 0 || mode > 7 || !(seconds > 0) || seconds > 3600)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    const int frames = (mode & 2) != 0;         /* frame API instead of the sim link */
    const int offload = (mode & 4) != 0;        /* sim link: checksum offload */
    if (frames && offload)
        return -EINVAL;
    mode &= 1;
    if (mode == 0) {
        if (param == 0)
            param = 256;
        if (param > 100000)
            return -EINVAL;
        /* concurrency + TIME-WAIT residue (2*MSL = 100 ms: 40000 at 400k/s) */
        b.max_conns = param * 2 + 65536;
    } else {
        if (param == 0)
            param = 65536;
        if (param > (1u << 24))
            return -EINVAL;
        b.max_conns = 64;
    }
    b.write_size = param;
    b.buf_len = mode == 1 ? (param > 65536 ? param : 65536) : 4 * BENCH_MSG;
    b.buf = malloc(b.buf_len);
    b.rbuf = malloc(b.buf_len);
    if (!b.buf || !b.rbuf) {
        bench_free(&b);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < b.buf_len; i++)
        b.buf[i] = (uint8_t)(i * 131 + 7);
    if (mode == 0) {
        b.rx_count = calloc(2 * (size_t)b.max_conns, 1);
        if (!b.rx_count) {
            bench_free(&b);
            return -ENOMEM;
        }
    }
    if (frames) {
        b.fbuf = malloc((size_t)BENCH_FRAMES * BENCH_FRAME_CAP);
        b.flens = malloc(BENCH_FRAMES * sizeof *b.flens);
        if (!b.fbuf || !b.flens) {
            bench_free(&b);
            return -ENOMEM;
        }
    } else {
        int rc = mtcp_simlink_pair(BENCH_RING_SLOTS, 1500, &b.la, &b.lb);
        if (rc < 0) {
            bench_free(&b);
            return rc;
        }
        if (offload) {
            /* like veth/loopback: TX frames leave CSUM_PARTIAL, the receiver trusts them */
            b.la->features |= LINK_FEAT_CSUM_TX;
            b.lb->features |= LINK_FEAT_CSUM_TX;
        }
    }
    b.cli = make_engine(b.la, 1, mode, b.max_conns, err, sizeof err);
    b.srv = make_engine(b.lb, 2, mode, b.max_conns, err, sizeof err);
    if (!b.cli || !b.srv) {
        fprintf(stderr, "mtcp_bench_engine: engine: %s\n", err);
        bench_free(&b);
        return -EINVAL;
    }
    addr4(&b.srv_addr, 2, BENCH_SERVER_PORT);
    struct mtcp_addr any;
    memset(&any, 0, sizeof any);
    any.family = MTCP_AF_INET;
    any.port = BENCH_SERVER_PORT;
    int64_t lid = mtcp_listen(b.srv, &any, 65535);
    if (lid < 0) {
        bench_free(&b);
        return (int)lid;
    }

    uint64_t now = mono_us();
    uint64_t retr0 = 0, segs0 = 0, cpu0 = 0, drops0 = 0;
    if (mode == 0) {
        b.conc = param;
        short_start(&b, now);
    } else {
        int64_t cid = mtcp_connect(b.cli, now, &b.srv_addr, NULL);
        if (cid < 0) {
            bench_free(&b);
            return (int)cid;
        }
        b.bulk_cid = (mtcp_cid)cid;
    }

    /* warm-up: ARP, the first handshakes, slow start */
    const uint64_t warm_us = 200000;
    uint64_t t_start = now, t_meas = 0, t_end = 0;
    int measuring = 0;
    uint64_t cnt[2][CTR_COUNT];
    for (;;) {
        now = mono_us();
        if (!measuring && now - t_start >= warm_us) {
            measuring = 1;
            t_meas = now;
            mtcp_engine_counters(b.cli, cnt[0], CTR_COUNT);
            mtcp_engine_counters(b.srv, cnt[1], CTR_COUNT);
            retr0 = cnt[0][CTR_RETRANS_SEGS] + cnt[1][CTR_RETRANS_SEGS];
            segs0 = cnt[0][CTR_SEGS_OUT] + cnt[1][CTR_SEGS_OUT];
            drops0 = frames ? 0 : link_sim_drops(b.la) + link_sim_drops(b.lb);
            cpu0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
        }
        if (measuring && (double)(now - t_meas) >= seconds * 1e6) {
            t_end = now;
            out->cpu_seconds = (double)(clock_us(CLOCK_THREAD_CPUTIME_ID) - cpu0) / 1e6;
            break;
        }
        if (frames)
            pump(&b, b.srv, b.cli, now);        /* server's output (after its dispatch) -> client */
        else
            mtcp_engine_poll(b.cli, now);
        if (mode == 0)
            short_client_events(&b, now, measuring);
        else
            bulk_client_events(&b);
        if (frames)
            pump(&b, b.cli, b.srv, now);
        else
            mtcp_engine_poll(b.srv, now);
        if (mode == 0)
            short_server_events(&b);
        else
            bulk_server_events(&b, measuring);
        if (mode == 1 && b.bulk_ready < 0)
            break;
    }
    if (!t_end) {
        bench_free(&b);
        return -ECONNRESET;
    }
    mtcp_engine_counters(b.cli, cnt[0], CTR_COUNT);
    mtcp_engine_counters(b.srv, cnt[1], CTR_COUNT);
    out->seconds = (double)(t_end - t_meas) / 1e6;
    out->conns = b.conns_done;
    out->bytes = b.bytes;
    out->conns_per_sec = (double)b.conns_done / out->seconds;
    out->gbps = (double)b.bytes * 8 / out->seconds / 1e9;
    out->retransmits = cnt[0][CTR_RETRANS_SEGS] + cnt[1][CTR_RETRANS_SEGS] - retr0;
    out->errors = b.errors;
    out->verified = mode == 0 ? b.conns_done * BENCH_MSG : b.verified;
    out->segments = cnt[0][CTR_SEGS_OUT] + cnt[1][CTR_SEGS_OUT] - segs0;
    out->link_drops = frames ? cnt[0][CTR_DROP_TX_TOO_BIG] + cnt[1][CTR_DROP_TX_TOO_BIG]
                             : link_sim_drops(b.la) + link_sim_drops(b.lb) - drops0;
    bench_free(&b);
    return 0;
}
