/* test_sim.c — two engines over mtcp_simlink_pair (optionally behind mtcp_impair_wrap) with a
 * virtual clock: many connections, random amounts of data both ways, random close orders.
 * Checks every byte arrives intact, in order, exactly once; every connection reaches CLOSED;
 * no pool entry (connection block, chunk, ooo buffer, event) leaks.
 * A failing case prints its seed; replay with  SIM_SEED=<seed> build/san/test_sim  */
#include <errno.h>
#include "ctest.h"
#include "engine/engine.h"

static const uint8_t MAC_A[6] = {2, 0, 0, 0, 0, 1}, MAC_B[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t IP_A[4] = {198, 18, 0, 1}, IP_B[4] = {198, 18, 0, 2};
static const uint8_t IP6_A[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t IP6_B[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

static uint64_t rng_state;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
/* byte i of stream s */
static inline uint8_t pat(uint32_t s, uint64_t i) {
    uint64_t x = (i / 8) * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)s << 32);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i % 8)));
}

struct side {
    mtcp_cid cid;
    uint32_t stream_tx, stream_rx;
    uint64_t to_send, sent, expect, got;
    int early_shutdown;      /* shutdown right after the last byte is queued */
    int shut, peer_closed, released, closed_ev, errors, connected;
    int corrupt;
    int retries;
};
struct pair { struct side c, s; uint16_t cport; };

#define MAXP 64
static struct pair P[MAXP];
static int NP;
static uint64_t g_now;               /* virtual clock, for reconnects from the event handler */
static struct mtcp_addr g_raddr;

struct simcfg {
    const char *name;
    int nconns;
    uint64_t maxbytes;
    uint32_t rcvbuf, sndbuf, chunk;
    struct mtcp_impair imp;
    int use_impair;
    int v6;
    uint8_t sack, ts;
};

static struct side *find(int server, mtcp_cid cid) {
    for (int i = 0; i < NP; i++) {
        struct side *s = server ? &P[i].s : &P[i].c;
        if (s->cid == cid && !s->released) return s;
    }
    return NULL;
}


static void app_side(mtcp_engine *e, struct side *s) {
    if (!s->cid || s->released || !s->connected) return;
    uint8_t buf[16384];
    /* send */
    while (s->sent < s->to_send) {
        uint32_t n = (uint32_t)(s->to_send - s->sent);
        if (n > sizeof buf) n = sizeof buf;
        uint32_t r = (uint32_t)(rnd() % n) + 1;
        for (uint32_t i = 0; i < r; i++) buf[i] = pat(s->stream_tx, s->sent + i);
        int64_t k = mtcp_send(e, s->cid, buf, r);
        if (k < 0) { s->errors++; break; }
        s->sent += (uint64_t)k;
        if ((uint32_t)k < r) break;
    }
    if (s->sent == s->to_send && s->early_shutdown && !s->shut) {
        if (mtcp_shutdown(e, s->cid) == 0) s->shut = 1; else s->errors++;
    }
    /* receive */
    for (;;) {
        uint32_t cap = (uint32_t)(rnd() % sizeof buf) + 1;
        int64_t k = mtcp_recv(e, s->cid, buf, cap);
        if (k <= 0) { if (k < 0) s->errors++; break; }
        for (int64_t i = 0; i < k; i++) if (buf[i] != pat(s->stream_rx, s->got + (uint64_t)i)) { s->corrupt++; break; }
        s->got += (uint64_t)k;
    }
    /* close once the peer finished and everything was read and sent */
    if (s->peer_closed && s->got == s->expect && s->sent == s->to_send) {
        if (mtcp_close(e, s->cid) == 0) s->released = 1; else s->errors++;
    }
}

static int handle_events(mtcp_engine *e, int server, int64_t lid) {
    struct mtcp_event ev[64];
    uint32_t n, total = 0;
    while ((n = mtcp_engine_events(e, ev, 64)) > 0) {
        total += n;
        for (uint32_t i = 0; i < n; i++) {
            struct side *s;
            if (ev[i].type == MTCP_EV_ACCEPT) {
                CHECK_EQ(ev[i].parent, (uint64_t)lid);
                /* bind to the pair by the client's local port */
                struct mtcp_addr rem;
                mtcp_getaddrs(e, ev[i].cid, NULL, &rem);
                int idx = -1;
                for (int j = 0; j < NP; j++) if (!P[j].s.cid && P[j].cport == rem.port) idx = j;
                if (idx < 0) { CHECK(idx >= 0); continue; }
                s = &P[idx].s;
                s->cid = ev[i].cid;
                s->connected = 1;
                continue;
            }
            s = find(server, ev[i].cid);
            if (!s) { CHECK(s != NULL); continue; }
            switch (ev[i].type) {
            case MTCP_EV_CONNECTED: s->connected = 1; break;
            case MTCP_EV_CONNECT_FAILED:
                if (ev[i].err == EHOSTUNREACH && !server && s->retries < 5) {
                    /* ARP/NDP lost every time on a very lossy link: an application retries */
                    int j = 0;
                    while (j < NP && &P[j].c != s) j++;
                    mtcp_close(e, s->cid);
                    int64_t cid = mtcp_connect(e, g_now, &g_raddr, NULL);
                    if (cid <= 0) { s->errors++; break; }
                    s->cid = (mtcp_cid)cid;
                    s->retries++;
                    struct mtcp_addr loc;
                    mtcp_getaddrs(e, s->cid, &loc, NULL);
                    P[j].cport = loc.port;
                    break;
                }
                s->errors++;
                fprintf(stderr, "connect failed %d\n", ev[i].err);
                break;
            case MTCP_EV_PEER_CLOSED: s->peer_closed = 1; break;
            case MTCP_EV_ERROR: s->errors++; fprintf(stderr, "error %d\n", ev[i].err); break;
            case MTCP_EV_CLOSED: s->closed_ev = 1; break;
            default: break;
            }
        }
    }
    return (int)total;
}

static int run_case(const struct simcfg *sc, uint64_t seed) {
    int fails_before = ctest_failures;
    rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    mtcp_link *la = NULL, *lb = NULL;
    CHECK_EQ(mtcp_simlink_pair(1024, 1500, &la, &lb), 0);
    if (sc->use_impair) {
        char err[128];
        struct mtcp_impair im = sc->imp;
        im.seed = seed;
        la = mtcp_impair_wrap(la, &im, err, sizeof err);
        CHECK(la != NULL);
        if (!la) return 1;
    }
    struct mtcp_config ca, cb;
    mtcp_config_default(&ca);
    ca.max_conns = 256;
    ca.max_chunks = 8192;
    ca.chunk_size = sc->chunk;
    ca.rcvbuf = sc->rcvbuf;
    ca.sndbuf = sc->sndbuf;
    ca.msl_us = 2000000;
    ca.seed = seed + 1;
    ca.sack = sc->sack;
    ca.timestamps = sc->ts;
    ca.max_retries = 30;
    ca.syn_retries = 20;
    ca.synack_retries = 20;
    cb = ca;
    cb.seed = seed + 2;
    memcpy(ca.mac, MAC_A, 6);
    memcpy(cb.mac, MAC_B, 6);
    memcpy(ca.ipv4, IP_A, 4);
    memcpy(cb.ipv4, IP_B, 4);
    memcpy(ca.ipv6, IP6_A, 16);
    memcpy(cb.ipv6, IP6_B, 16);
    char err[128];
    mtcp_engine *A = mtcp_engine_new(&ca, la, err, sizeof err);
    mtcp_engine *B = mtcp_engine_new(&cb, lb, err, sizeof err);
    CHECK(A && B);
    if (!A || !B) return 1;
    int fam = sc->v6 ? MTCP_AF_INET6 : MTCP_AF_INET;
    struct mtcp_addr laddr = {.family = (uint8_t)fam, .port = 8080};
    int64_t lid = mtcp_listen(B, &laddr, 128);
    CHECK(lid > 0);
    struct mtcp_addr raddr = {.family = (uint8_t)fam, .port = 8080};
    memcpy(raddr.ip, sc->v6 ? IP6_B : IP_B, sc->v6 ? 16 : 4);

    uint64_t now = 1000000;
    NP = sc->nconns;
    memset(P, 0, sizeof P);
    for (int i = 0; i < NP; i++) {
        struct pair *p = &P[i];
        p->c.to_send = rnd() % (sc->maxbytes + 1);
        p->s.to_send = rnd() % (sc->maxbytes + 1);
        if (rnd() % 4 == 0) p->c.to_send = 0;
        p->c.expect = p->s.to_send;
        p->s.expect = p->c.to_send;
        p->c.early_shutdown = (int)(rnd() % 2);
        p->s.early_shutdown = p->c.early_shutdown ? (int)(rnd() % 2) : 1;
        p->c.stream_tx = p->s.stream_rx = (uint32_t)(2 * i + 1);
        p->s.stream_tx = p->c.stream_rx = (uint32_t)(2 * i + 2);
        int64_t cid = mtcp_connect(A, now, &raddr, NULL);
        CHECK(cid > 0);
        p->c.cid = (mtcp_cid)cid;
        struct mtcp_addr loc;
        mtcp_getaddrs(A, p->c.cid, &loc, NULL);
        p->cport = loc.port;
    }
    uint64_t end = now + 1800ull * 1000000;    /* virtual 30 minutes max (60 s RTOs under harsh loss) */
    long iters = 0;
    uint64_t last_moved = 0;
    for (; now < end && iters < 3000000; iters++) {
        mtcp_engine_poll(A, now);
        mtcp_engine_poll(B, now);
        g_now = now;
        g_raddr = raddr;
        int act = handle_events(A, 0, lid) + handle_events(B, 1, lid);
        /* frames still on the wire count as activity: don't jump the clock past them */
        uint64_t fa[2], fb[2];
        mtcp_engine_counters(A, fa, 2);
        mtcp_engine_counters(B, fb, 2);
        uint64_t moved = fa[0] + fa[1] + fb[0] + fb[1];
        if (moved != last_moved) act++;
        last_moved = moved;
        for (int i = 0; i < NP; i++) { app_side(A, &P[i].c); app_side(B, &P[i].s); }
        int done = 1;
        for (int i = 0; i < NP; i++) if (!P[i].c.released || !P[i].s.released) done = 0;
        uint64_t pa[4], pb[4];
        mtcp_engine_pool_usage(A, pa);
        mtcp_engine_pool_usage(B, pb);
        if (done && pa[0] == 0 && pb[0] == 1) break;
        int64_t da = mtcp_engine_next_deadline(A), db = mtcp_engine_next_deadline(B);
        int64_t d = da < 0 ? db : (db < 0 ? da : (da < db ? da : db));
        if (act || d == (int64_t)now) now += 20;
        else if (d > (int64_t)now) now = (uint64_t)d;
        else now += 1000;
    }
    int bad = 0;
    for (int i = 0; i < NP; i++) {
        struct pair *p = &P[i];
        if (p->c.got != p->c.expect || p->s.got != p->s.expect || p->c.corrupt || p->s.corrupt ||
            p->c.errors || p->s.errors || !p->c.released || !p->s.released) {
            if (bad++ < 4)
                fprintf(stderr, "    pair %d: c got %llu/%llu sent %llu/%llu rel %d err %d corrupt %d | s got %llu/%llu sent %llu/%llu rel %d err %d corrupt %d (cid %llx)\n",
                        i, (unsigned long long)p->c.got, (unsigned long long)p->c.expect,
                        (unsigned long long)p->c.sent, (unsigned long long)p->c.to_send, p->c.released, p->c.errors, p->c.corrupt,
                        (unsigned long long)p->s.got, (unsigned long long)p->s.expect,
                        (unsigned long long)p->s.sent, (unsigned long long)p->s.to_send, p->s.released, p->s.errors, p->s.corrupt,
                        (unsigned long long)p->s.cid);
            if (bad <= 2) {
                struct mtcp_conn_info ci;
                for (int side = 0; side < 2; side++) {
                    mtcp_engine *E = side ? B : A;
                    struct side *sd = side ? &p->s : &p->c;
                    if (sd->released || mtcp_conn_info(E, sd->cid, &ci) < 0) continue;
                    fprintf(stderr, "      %s: state %u mss %u srtt %u rto %u cwnd %u ssth %u snd_wnd %u rcv_wnd %u unacked %u sndbuf %u rcvbuf %u rexmit %u flags %x\n",
                            side ? "B" : "A", ci.state, ci.mss, ci.srtt_us, ci.rto_us, ci.cwnd, ci.ssthresh, ci.snd_wnd,
                            ci.rcv_wnd, ci.unacked, ci.sndbuf_used, ci.rcvbuf_used, ci.retransmits, ci.flags);
                    struct conn *k = eng_conn_get(E, sd->cid);
                    if (k) fprintf(stderr, "         una %u nxt %u max %u rcv_nxt %u rcv_adv %u t_rexmit %llu persist %u retries %u wheel %d now %llu\n",
                                   k->tcp.snd_una, k->tcp.snd_nxt, k->tcp.snd_max, k->tcp.rcv_nxt, k->tcp.rcv_adv,
                                   (unsigned long long)k->tcp.t_rexmit, k->tcp.persist, k->tcp.retries,
                                   eng_wheel_linked(&E->wheel, conn_idx(E, k)), (unsigned long long)now);
                    if (k) fprintf(stderr, "         ts_now %u ts_recent %u last_ack_sent %u\n",
                                   (uint32_t)(now / 1000) + k->tcp.ts_offset, k->tcp.ts_recent, k->tcp.last_ack_sent);
                }
            }
        }
    }
    CHECK_EQ(bad, 0);
    uint64_t pa[4], pb[4];
    mtcp_engine_pool_usage(A, pa);
    mtcp_engine_pool_usage(B, pb);
    CHECK_EQ(pa[0], 0);
    CHECK_EQ(pb[0], 1);          /* the listener */
    CHECK_EQ(pa[1] + pb[1], 0);
    CHECK_EQ(pa[2] + pb[2], 0);
    uint64_t ra[2], rb[2];       /* RACK transmit records all back in the pools */
    mtcp_engine_rack_usage(A, ra);
    mtcp_engine_rack_usage(B, rb);
    CHECK_EQ(ra[0] + rb[0], 0);
    CHECK(ra[1] > 0 && rb[1] > 0);
    CHECK_EQ(mtcp_close(B, (mtcp_cid)lid), 0);
    mtcp_engine_pool_usage(B, pb);
    CHECK_EQ(pb[0], 0);
    uint64_t ctrA[CTR_COUNT], ctrB[CTR_COUNT];
    mtcp_engine_counters(A, ctrA, CTR_COUNT);
    mtcp_engine_counters(B, ctrB, CTR_COUNT);
    fprintf(stderr, "    %-34s seed %-6llu %s virt %6.2f s, %ld iters, segs %llu/%llu, rexmit %llu, fast %llu, rto %llu (syn %llu), csum drops %llu, neighq drops %llu\n",
            sc->name, (unsigned long long)seed, ctest_failures == fails_before ? "ok  " : "FAIL",
            (double)(now - 1000000) / 1e6, iters,
            (unsigned long long)(ctrA[CTR_SEGS_OUT]), (unsigned long long)(ctrB[CTR_SEGS_OUT]),
            (unsigned long long)(ctrA[CTR_RETRANS_SEGS] + ctrB[CTR_RETRANS_SEGS]),
            (unsigned long long)(ctrA[CTR_FAST_RETRANS] + ctrB[CTR_FAST_RETRANS]),
            (unsigned long long)(ctrA[CTR_TIMEOUTS] + ctrB[CTR_TIMEOUTS]),
            (unsigned long long)(ctrA[CTR_SYN_RETRANS] + ctrB[CTR_SYN_RETRANS]),
            (unsigned long long)(ctrA[CTR_DROP_BAD_CSUM] + ctrB[CTR_DROP_BAD_CSUM]),
            (unsigned long long)(ctrA[CTR_DROP_NEIGH_QUEUE] + ctrB[CTR_DROP_NEIGH_QUEUE]));
    mtcp_engine_free(A);
    mtcp_engine_free(B);
    mtcp_link_close(la);
    mtcp_link_close(lb);
    return ctest_failures != fails_before;
}

static uint64_t seed_base(void) {
    const char *s = getenv("SIM_SEED");
    return s ? strtoull(s, NULL, 0) : 1;
}

static void test_clean(void) {
    struct simcfg sc = {.name = "clean v4", .nconns = 24, .maxbytes = 300000, .rcvbuf = 65536,
                        .sndbuf = 65536, .chunk = 2048, .sack = 1, .ts = 1};
    uint64_t s0 = seed_base();
    for (uint64_t s = s0; s < s0 + 3; s++) run_case(&sc, s);
    sc.name = "clean v6 small bufs, no sack/ts";
    sc.v6 = 1;
    sc.rcvbuf = 4096;
    sc.sndbuf = 4096;
    sc.chunk = 512;
    sc.sack = 0;
    sc.ts = 0;
    sc.maxbytes = 50000;
    for (uint64_t s = s0; s < s0 + 2; s++) run_case(&sc, s);
}

static void test_impaired(void) {
    static const struct { const char *name; double loss, dup, reorder, corrupt; uint32_t delay; } grid[] = {
        {"loss 2%", 0.02, 0, 0, 0, 200},
        {"loss 10%", 0.10, 0, 0, 0, 500},
        {"dup 5%", 0, 0.05, 0, 0, 200},
        {"reorder 10%", 0, 0, 0.10, 0, 200},
        {"corrupt 2%", 0, 0, 0, 0.02, 200},
        {"mix 3/3/5/1", 0.03, 0.03, 0.05, 0.01, 1000},
        {"harsh 15/10/30/5", 0.15, 0.10, 0.30, 0.05, 2000},
    };
    uint64_t s0 = seed_base();
    for (unsigned g = 0; g < sizeof grid / sizeof grid[0]; g++) {
        for (int variant = 0; variant < 2; variant++) {
            char name[64];
            struct simcfg sc = {.nconns = 8, .maxbytes = 100000, .rcvbuf = variant ? 16384 : 131072,
                                .sndbuf = variant ? 16384 : 131072, .chunk = 2048, .use_impair = 1,
                                .sack = (uint8_t)!variant, .ts = 1, .v6 = variant};
            snprintf(name, sizeof name, "%s %s", grid[g].name, variant ? "v6 16k nosack" : "v4 128k sack");
            sc.name = name;
            sc.imp.loss = grid[g].loss;
            sc.imp.duplicate = grid[g].dup;
            sc.imp.reorder = grid[g].reorder;
            sc.imp.corrupt = grid[g].corrupt;
            sc.imp.delay_us = grid[g].delay;
            sc.imp.jitter_us = grid[g].delay / 2;
            run_case(&sc, s0 + g * 10 + (uint64_t)variant);
        }
    }
}

/* ---- the in-process loopback switch (link type IP): one engine talking to itself, and two ---- */
static mtcp_engine *lo_engine(mtcp_link **lk, uint64_t seed) {
    char err[128];
    *lk = mtcp_loopback_open(256, err, sizeof err);
    CHECK(*lk != NULL);
    if (!*lk) return NULL;
    struct mtcp_config c;
    mtcp_config_default(&c);
    c.link_type = MTCP_LINK_IP;
    c.mtu = 65535;
    c.max_conns = 64;
    c.max_chunks = 4096;
    c.seed = seed;
    c.own_prefix = 1;
    uint8_t v4[4] = {127, 0, 0, 1};
    memcpy(c.ipv4, v4, 4);
    c.ipv4_prefix = 8;
    memset(c.ipv6, 0, 16);
    c.ipv6[15] = 1;
    c.ipv6_prefix = 128;
    mtcp_engine *e = mtcp_engine_new(&c, *lk, err, sizeof err);
    if (!e) fprintf(stderr, "lo engine: %s\n", err);
    CHECK(e != NULL);
    return e;
}

static uint32_t evs(mtcp_engine *e, struct mtcp_event *ev, uint32_t max) { return mtcp_engine_events(e, ev, max); }

static void test_loopback(void) {
    mtcp_link *lk, *lk2;
    mtcp_engine *e = lo_engine(&lk, 7);
    if (!e) return;
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 9000};
    int64_t lid = mtcp_listen(e, &la, 16);
    CHECK(lid > 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 9000), 1);
    CHECK_EQ(mtcp_listen(e, &la, 16), -EADDRINUSE);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 9000, .ip = {127, 0, 0, 1}};
    uint64_t now = 1000;
    int64_t cid = mtcp_connect(e, now, &ra, NULL);
    CHECK(cid > 0);
    /* one poll: SYN, SYN-ACK, ACK all loop back inside it */
    mtcp_engine_poll(e, now);
    struct mtcp_event ev[16];
    uint32_t n = evs(e, ev, 16);
    int connected = 0;
    mtcp_cid acc = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (ev[i].type == MTCP_EV_CONNECTED && ev[i].cid == (mtcp_cid)cid) connected = 1;
        if (ev[i].type == MTCP_EV_ACCEPT) { acc = ev[i].cid; CHECK_EQ(ev[i].parent, (uint64_t)lid); }
    }
    CHECK(connected);
    CHECK(acc != 0);
    /* 1 MB one way, 300 KB the other, through 64 KB frames */
    static uint8_t big[1 << 20], rb[1 << 16];
    for (uint32_t i = 0; i < sizeof big; i++) big[i] = pat(9, i);
    uint64_t sent_c = 0, sent_s = 0, got_s = 0, got_c = 0;
    int bad = 0;
    for (int it = 0; it < 2000 && (got_s < sizeof big || got_c < 300000); it++) {
        if (sent_c < sizeof big) { int64_t k = mtcp_send(e, (mtcp_cid)cid, big + sent_c, (uint32_t)(sizeof big - sent_c)); if (k > 0) sent_c += (uint64_t)k; }
        if (sent_s < 300000) { int64_t k = mtcp_send(e, acc, big + sent_s, (uint32_t)(300000 - sent_s)); if (k > 0) sent_s += (uint64_t)k; }
        mtcp_engine_poll(e, now);
        evs(e, ev, 16);
        int64_t k;
        while ((k = mtcp_recv(e, acc, rb, sizeof rb)) > 0) { if (memcmp(rb, big + got_s, (size_t)k)) bad++; got_s += (uint64_t)k; }
        while ((k = mtcp_recv(e, (mtcp_cid)cid, rb, sizeof rb)) > 0) { if (memcmp(rb, big + got_c, (size_t)k)) bad++; got_c += (uint64_t)k; }
        now += 100;
    }
    CHECK_EQ(got_s, sizeof big);
    CHECK_EQ(got_c, 300000);
    CHECK_EQ(bad, 0);
    struct mtcp_conn_info ci;
    mtcp_conn_info(e, (mtcp_cid)cid, &ci);
    CHECK(ci.mss > 60000);
    /* a closed port answers RST through the switch (frame comes back to the sender) */
    struct mtcp_addr rc = {.family = MTCP_AF_INET, .port = 9, .ip = {127, 0, 0, 1}};
    int64_t c2 = mtcp_connect(e, now, &rc, NULL);
    CHECK(c2 > 0);
    mtcp_engine_poll(e, now);
    n = evs(e, ev, 16);
    int refused = 0;
    for (uint32_t i = 0; i < n; i++)
        if (ev[i].cid == (mtcp_cid)c2 && ev[i].type == MTCP_EV_CONNECT_FAILED && ev[i].err == ECONNREFUSED) refused = 1;
    CHECK(refused);
    CHECK_EQ(mtcp_close(e, (mtcp_cid)c2), 0);

    /* a second engine on the switch connects over IPv6 to a listener of the first */
    mtcp_engine *e2 = lo_engine(&lk2, 8);
    struct mtcp_addr l6 = {.family = MTCP_AF_INET6, .port = 9001};
    int64_t lid6 = mtcp_listen(e, &l6, 16);
    CHECK(lid6 > 0);
    struct mtcp_addr r6 = {.family = MTCP_AF_INET6, .port = 9001};
    r6.ip[15] = 1;
    int64_t c3 = mtcp_connect(e2, now, &r6, NULL);
    CHECK(c3 > 0);
    int ok3 = 0, acc3 = 0;
    for (int it = 0; it < 10 && !(ok3 && acc3); it++) {
        mtcp_engine_poll(e2, now);
        mtcp_engine_poll(e, now);
        n = evs(e2, ev, 16);
        for (uint32_t i = 0; i < n; i++) if (ev[i].type == MTCP_EV_CONNECTED) ok3 = 1;
        n = evs(e, ev, 16);
        for (uint32_t i = 0; i < n; i++) if (ev[i].type == MTCP_EV_ACCEPT && ev[i].parent == (uint64_t)lid6) acc3 = 1;
    }
    CHECK(ok3);
    CHECK(acc3);
    mtcp_engine_free(e2);
    mtcp_link_close(lk2);
    mtcp_engine_free(e);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 9000), 0);
    mtcp_link_close(lk);
}

/* Long idle times on the virtual clock: keepalive probes answered for hours (the timer wheel's
 * coarse level), then the peer vanishes and keepalive gives up with ETIMEDOUT. */
static void test_keepalive_idle(void) {
    mtcp_link *la = NULL, *lb = NULL;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &la, &lb), 0);
    struct mtcp_config ca, cb;
    mtcp_config_default(&ca);
    ca.max_conns = 16;
    ca.max_chunks = 256;
    ca.seed = 5;
    cb = ca;
    memcpy(ca.mac, MAC_A, 6);
    memcpy(cb.mac, MAC_B, 6);
    memcpy(ca.ipv4, IP_A, 4);
    memcpy(cb.ipv4, IP_B, 4);
    char err[128];
    mtcp_engine *A = mtcp_engine_new(&ca, la, err, sizeof err);
    mtcp_engine *B = mtcp_engine_new(&cb, lb, err, sizeof err);
    struct mtcp_addr l = {.family = MTCP_AF_INET, .port = 22};
    int64_t lid = mtcp_listen(B, &l, 4);
    CHECK(lid > 0);
    struct mtcp_addr r = {.family = MTCP_AF_INET, .port = 22};
    memcpy(r.ip, IP_B, 4);
    uint64_t now = 1000000;
    int64_t cid = mtcp_connect(A, now, &r, NULL);
    CHECK(cid > 0);
    CHECK_EQ(mtcp_setopt(A, (mtcp_cid)cid, MTCP_OPT_KEEPIDLE, 600000000), 0);   /* 10 min */
    CHECK_EQ(mtcp_setopt(A, (mtcp_cid)cid, MTCP_OPT_KEEPINTVL, 10000000), 0);
    CHECK_EQ(mtcp_setopt(A, (mtcp_cid)cid, MTCP_OPT_KEEPCNT, 3), 0);
    CHECK_EQ(mtcp_setopt(A, (mtcp_cid)cid, MTCP_OPT_KEEPALIVE, 1), 0);
    int64_t v = 0;
    CHECK_EQ(mtcp_getopt(A, (mtcp_cid)cid, MTCP_OPT_KEEPIDLE, &v), 0);
    CHECK_EQ(v, 600000000);
    struct mtcp_event ev[16];
    int connected = 0, timedout = 0;
    uint32_t n;
    /* 3 virtual hours with both sides alive, jumping from deadline to deadline */
    long steps = 0;
    while (now < 1000000 + 3ull * 3600 * 1000000 && steps < 100000) {
        mtcp_engine_poll(A, now);
        mtcp_engine_poll(B, now);
        while ((n = mtcp_engine_events(A, ev, 16)) > 0)
            for (uint32_t i = 0; i < n; i++) {
                if (ev[i].type == MTCP_EV_CONNECTED) connected = 1;
                if (ev[i].type == MTCP_EV_ERROR) timedout = 1;
            }
        mtcp_engine_events(B, ev, 16);
        int64_t da = mtcp_engine_next_deadline(A), db = mtcp_engine_next_deadline(B);
        int64_t d = da < 0 ? db : (db < 0 ? da : (da < db ? da : db));
        now = d > (int64_t)now + 100 ? (uint64_t)d : now + 100;
        steps++;
    }
    CHECK(connected);
    CHECK(!timedout);
    uint64_t c[CTR_COUNT];
    mtcp_engine_counters(A, c, CTR_COUNT);
    CHECK(c[CTR_KEEPALIVE_PROBES] >= 15);     /* one per 10 min idle */
    CHECK(steps < 2000);                        /* the loop slept from deadline to deadline */
    struct mtcp_conn_info ci;
    CHECK_EQ(mtcp_conn_info(A, (mtcp_cid)cid, &ci), 0);
    CHECK_EQ(ci.state, MTCP_ST_ESTABLISHED);
    /* B vanishes: nobody polls it any more */
    uint64_t until = now + 3600ull * 1000000;
    while (now < until && !timedout) {
        mtcp_engine_poll(A, now);
        while ((n = mtcp_engine_events(A, ev, 16)) > 0)
            for (uint32_t i = 0; i < n; i++)
                if (ev[i].type == MTCP_EV_ERROR && ev[i].err == ETIMEDOUT) timedout = 1;
        int64_t d = mtcp_engine_next_deadline(A);
        now = d > (int64_t)now ? (uint64_t)d : now + 1000;
    }
    CHECK(timedout);
    CHECK_EQ(mtcp_close(A, (mtcp_cid)cid), 0);
    uint64_t pu[4];
    mtcp_engine_pool_usage(A, pu);
    CHECK_EQ(pu[0], 0);
    CHECK_EQ(pu[1], 0);
    mtcp_engine_rack_usage(A, pu);
    CHECK_EQ(pu[0], 0);
    mtcp_engine_free(A);
    mtcp_engine_free(B);
    mtcp_link_close(la);
    mtcp_link_close(lb);
}

int main(void) {
    RUN(test_loopback);
    RUN(test_keepalive_idle);
    RUN(test_clean);
    RUN(test_impaired);
    CTEST_END();
}
