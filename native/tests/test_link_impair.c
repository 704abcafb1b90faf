/* test_link_impair.c — the impairment wrapper (rates, determinism, delay, rate limit, corruption, spec
 * parsing) and scripted fault rules (mtcp_fault_add).
 * Shared helpers: link_helpers.h. */
#include "link_helpers.h"

/* ---- impairment ---- */


struct imp_run {
    uint32_t received, intact, inversions, max_seq_seen;
    uint64_t hash;
    uint8_t seen[1 << 17];     /* per sequence number: copies received (intact frames) */
};

static void imp_collect(struct mtcp_link *l, struct imp_run *r)
{
    struct link_ring *q = &l->rx;
    while (q->head != q->tail) {
        struct link_slot *s = &q->slot[q->head];
        r->received++;
        uint32_t seq = frame_seq(s->buf);
        r->hash = (r->hash ^ seq ^ ((uint64_t)s->len << 32)) * 0x100000001b3ULL;
        if (eth_intact(s)) {
            r->intact++;
            if (seq < (1u << 17) && r->seen[seq] < 255) r->seen[seq]++;
            if (seq < r->max_seq_seen) r->inversions++;
            else r->max_seq_seen = seq;
        }
        q->head = q->cur = link_ring_next(q, q->head);
    }
}

/* Send n frames through tx (time advancing step_us per batch of 16), collect at rx. Flushes
 * delay/hold queues at the end. */
static void imp_pump(mtcp_link *tx, mtcp_link *rx, uint32_t n, uint64_t step_us, struct imp_run *r,
                     uint64_t *now_io)
{
    uint8_t f[1514];
    uint64_t now = *now_io;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = 64 + (i * 131) % 1400;
        eth_frame(f, len, i);
        CHECK_EQ(tx_put(tx, f, len, 0), 0);
        if ((i & 15) == 15 || i == n - 1) {
            link_txsync(tx, now);
            link_rxsync(rx, now);
            imp_collect(rx, r);
            now += step_us;
        }
    }
    /* drain: advance time until nothing is pending (bounded) */
    for (int k = 0; k < 10000; k++) {
        int64_t d1 = link_next_deadline(tx), d2 = link_next_deadline(rx);
        if (d1 < 0 && d2 < 0)
            break;
        int64_t d = d1 < 0 ? d2 : d2 < 0 ? d1 : (d1 < d2 ? d1 : d2);
        if ((uint64_t)d > now) now = (uint64_t)d;
        link_txsync(tx, now);
        link_rxsync(rx, now);
        imp_collect(rx, r);
    }
    *now_io = now;
}

static mtcp_link *wrap_spec(mtcp_link *inner, const char *spec)
{
    struct mtcp_impair c;
    char err[200];
    err[0] = 0;
    int rc = mtcp_impair_parse(spec, &c, err, sizeof(err));
    CHECK_EQ(rc, 0);
    if (rc) fprintf(stderr, "    parse: %s\n", err);
    mtcp_link *w = mtcp_impair_wrap(inner, &c, err, sizeof(err));
    CHECK(w != NULL);
    return w;
}

static int within(double got, double want, double tol) { return got >= want - tol && got <= want + tol; }

static void test_impair_rates(void)
{
    static struct imp_run r;
    const uint32_t N = 50000;
    struct { const char *spec; int what; double p; } cases[] = {
        { "loss=0.1,seed=42", 0, 0.1 },
        { "duplicate=5%,seed=42", 1, 0.05 },
        { "reorder=0.2,seed=42", 2, 0.2 },
        { "corrupt=0.03,seed=42", 3, 0.03 },
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        mtcp_link *a, *b;
        CHECK_EQ(mtcp_simlink_pair(64, 1500, &a, &b), 0);
        mtcp_link *w = wrap_spec(a, cases[c].spec);
        memset(&r, 0, sizeof(r));
        uint64_t now = 1000000;
        imp_pump(w, b, N, 10, &r, &now);
        uint64_t cnt[5];
        mtcp_impair_counters(w, cnt);
        double frac = (double)cnt[cases[c].what] / N;
        fprintf(stderr, "    %-22s counter %llu (%.4f) received %u intact %u inversions %u\n", cases[c].spec,
                (unsigned long long)cnt[cases[c].what], frac, r.received, r.intact, r.inversions);
        /* 4 standard deviations of a binomial(N, p) */
        double tol = 4 * sqrt(cases[c].p * (1 - cases[c].p) / N);
        CHECK(within(frac, cases[c].p, tol));
        /* nothing lost except what loss drops; copies = 1 + duplicated */
        CHECK_EQ(r.received, N - cnt[0] + cnt[1]);
        CHECK_EQ(r.intact, r.received - cnt[3]);
        uint32_t missing = 0, twice = 0;
        for (uint32_t i = 0; i < N; i++) { missing += r.seen[i] == 0; twice += r.seen[i] == 2; }
        if (cases[c].what == 0) CHECK_EQ(missing, cnt[0]);
        if (cases[c].what == 1) { CHECK_EQ(missing, 0); CHECK_EQ(twice, cnt[1]); }
        if (cases[c].what == 2) { CHECK_EQ(missing, 0); CHECK(r.inversions > N / 20); }
        else CHECK_EQ(r.inversions, 0);
        if (cases[c].what == 3) CHECK_EQ(missing, cnt[3]);
        for (int k = 0; k < 5; k++)
            if (k != cases[c].what) CHECK_EQ(cnt[k], 0);
        mtcp_link_close(w);
        mtcp_link_close(b);
    }
}

static void test_impair_determinism(void)
{
    static struct imp_run r1, r2, r3;
    const char *spec = "loss=0.05,duplicate=0.05,reorder=0.1,corrupt=0.01,delay=1ms,jitter=500us,seed=7";
    struct imp_run *rs[3] = { &r1, &r2, &r3 };
    uint64_t cnts[3][5];
    for (int k = 0; k < 3; k++) {
        mtcp_link *a, *b;
        CHECK_EQ(mtcp_simlink_pair(256, 1500, &a, &b), 0);
        mtcp_link *w = wrap_spec(a, k < 2 ? spec : "loss=0.05,duplicate=0.05,reorder=0.1,corrupt=0.01,delay=1ms,jitter=500us,seed=8");
        memset(rs[k], 0, sizeof(*rs[k]));
        uint64_t now = 0;
        imp_pump(w, b, 20000, 50, rs[k], &now);
        mtcp_impair_counters(w, cnts[k]);
        /* all five mechanisms at work; counters add up */
        for (int j = 0; j < 5; j++) CHECK(cnts[k][j] > 0);
        CHECK_EQ(rs[k]->received, 20000 - cnts[k][0] + cnts[k][1]);
        mtcp_link_close(w);
        mtcp_link_close(b);
    }
    CHECK_EQ(r1.hash, r2.hash);
    CHECK_EQ(r1.received, r2.received);
    CHECK_MEM(cnts[0], cnts[1], sizeof(cnts[0]));
    CHECK(r1.hash != r3.hash);
}

/* delay + jitter on the RX side: nothing early, order kept, deadlines exposed */
static void test_impair_delay(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &a, &b), 0);
    mtcp_link *w = wrap_spec(b, "delay=5ms,jitter=2ms,seed=3");    /* wraps the receiver */
    uint8_t f[200];
    uint64_t sent_at[100];
    uint64_t now = 10000000;
    uint32_t got = 0, late = 0, early = 0, order_bad = 0, last = 0;
    CHECK_EQ(link_next_deadline(w), -1);
    for (uint32_t i = 0; i < 100; i++) {
        eth_frame(f, 100, i);
        tx_put(a, f, 100, 0);
        link_txsync(a, now);
        sent_at[i] = now;
        link_rxsync(w, now);              /* frame enters the delay queue */
        if (i == 0) {
            int64_t d = link_next_deadline(w);
            CHECK(d >= (int64_t)(now + 3000) && d <= (int64_t)(now + 7000));
        }
        now += 100;
        struct link_ring *q = &w->rx;
        while (q->head != q->tail) {
            uint32_t s = frame_seq(q->slot[q->head].buf);
            if (now - 100 < sent_at[s] + 3000) early++;
            if (got && s != last + 1) order_bad++;
            last = s; got++;
            q->head = q->cur = link_ring_next(q, q->head);
        }
    }
    for (int k = 0; k < 1000 && got < 100; k++) {
        int64_t d = link_next_deadline(w);
        CHECK(d >= 0);
        if (d < 0) break;
        if ((uint64_t)d > now) now = (uint64_t)d;
        link_rxsync(w, now);
        struct link_ring *q = &w->rx;
        while (q->head != q->tail) {
            uint32_t s = frame_seq(q->slot[q->head].buf);
            if (now < sent_at[s] + 3000) early++;
            if (now > sent_at[s] + 7000 + 100 * 100) late++;
            if (got && s != last + 1) order_bad++;
            last = s; got++;
            q->head = q->cur = link_ring_next(q, q->head);
        }
    }
    CHECK_EQ(got, 100);
    CHECK_EQ(early, 0);
    CHECK_EQ(late, 0);
    CHECK_EQ(order_bad, 0);
    uint64_t cnt[5];
    mtcp_impair_counters(w, cnt);
    CHECK_EQ(cnt[4], 100);
    CHECK_EQ(cnt[0] + cnt[1] + cnt[2] + cnt[3], 0);
    CHECK_EQ(link_next_deadline(w), -1);
    mtcp_link_close(w);
    mtcp_link_close(a);
}

/* token bucket: offered 3x the rate for one second */
static void test_impair_rate(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &a, &b), 0);
    mtcp_link *w = wrap_spec(a, "rate=10mbit");
    uint8_t f[1250];
    uint64_t now = 0, t_end = 1000000;
    uint32_t got = 0, i = 0;
    uint64_t last_arrival = 0;
    for (; now < t_end; now += 100) {
        if ((now / 100) % 3 != 2) {     /* 2 frames per 300 us = 6667 frames/s = 53 Mbit/s */
            eth_frame(f, 1250, i++);
            tx_put(w, f, 1250, 0);
        }
        link_txsync(w, now);
        link_rxsync(b, now);
        uint32_t n = rx_take(b, NULL, NULL);
        if (n) last_arrival = now;
        got += n;
    }
    /* 10 Mbit/s of 10000-bit frames = 1000/s, plus the initial burst (16 * 1514 B = 19.4 frames) */
    fprintf(stderr, "    rate: offered %u, delivered %u in 1 s\n", i, got);
    CHECK(got >= 1000 && got <= 1000 + 20);
    CHECK(last_arrival > t_end - 2000);
    uint64_t cnt[5];
    mtcp_impair_counters(w, cnt);
    CHECK(cnt[0] > i / 2);                               /* tail drops */
    CHECK(cnt[4] > 0);                                   /* queued = delayed */
    mtcp_link_close(w);
    mtcp_link_close(b);
}

/* corrupting a frame with a partial checksum completes the checksum first */
static void test_impair_corrupt_csum(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(64, 1500, &a, &b), 0);
    mtcp_link *w = wrap_spec(a, "corrupt=1,seed=11");
    uint8_t f[300];
    uint32_t detected = 0, header_flips = 0;
    for (uint32_t i = 0; i < 40; i++) {
        eth_frame(f, 300, i);
        f[34 + 16] = 0x12; f[34 + 17] = 0x34;            /* "pseudo-header sum" in the field */
        uint8_t orig[300];
        memcpy(orig, f, 300);
        tx_put(w, f, 300, LINK_SLOT_F_CSUM_PARTIAL);
        w->tx.slot[(w->tx.head + w->tx.mask) & w->tx.mask].csum_start = 34;
        w->tx.slot[(w->tx.head + w->tx.mask) & w->tx.mask].csum_offset = 16;
        link_txsync(w, 0);
        link_rxsync(b, 0);
        struct link_slot *s = &b->rx.slot[b->rx.head];
        CHECK_EQ(s->flags & (LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID), 0);
        /* locate the flipped bit: exactly one bit differs outside the checksum field */
        uint32_t diffbits = 0, where = 0;
        for (uint32_t k = 0; k < 300; k++) {
            if (k == 50 || k == 51) continue;
            uint8_t x = (uint8_t)(orig[k] ^ s->buf[k]);
            if (x) { diffbits += (uint32_t)__builtin_popcount(x); where = k; }
        }
        /* the flip may hit the checksum field itself: then nothing else differs */
        CHECK(diffbits <= 1);
        uint32_t sum = 0x1234;                            /* the receiver adds the pseudo header */
        for (uint32_t k = 34; k + 1 < 300; k += 2) sum += (uint32_t)(s->buf[k] << 8 | s->buf[k + 1]);
        while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
        int ok = sum == 0xffff;
        if (diffbits == 1 && where < 34) { header_flips++; CHECK(ok); }
        else { detected += !ok; CHECK(!ok); }
        rx_take(b, NULL, NULL);
    }
    CHECK(detected > 20);
    /* GSO super-frames on TX are dropped instead */
    eth_frame(f, 300, 99);
    tx_put(w, f, 300, LINK_SLOT_F_GSO);
    link_txsync(w, 0);
    CHECK_EQ(link_rxsync(b, 0), 0);
    uint64_t cnt[5];
    mtcp_impair_counters(w, cnt);
    CHECK_EQ(cnt[3], 41);
    mtcp_link_close(w);
    mtcp_link_close(b);
}

/* ---- fault rules (mtcp_fault_add) ---- */
#define FR_ETH 14
/* Ethernet + IPv4 127.0.0.1 -> 127.0.0.<dst_last> + TCP (flags, tcp seq = id) + paylen bytes. */
static uint32_t fr_frame(uint8_t *f, uint16_t sport, uint16_t dport, uint8_t flags, uint32_t paylen,
                         uint32_t id)
{
    uint32_t len = FR_ETH + 20 + 20 + paylen;
    memset(f, 0, len);
    memset(f, 0xff, 6);
    f[6] = 0x02; f[11] = 1;
    f[12] = 0x08; f[13] = 0x00;
    uint8_t *ip = f + FR_ETH;
    ip[0] = 0x45; ip[2] = (uint8_t)((len - FR_ETH) >> 8); ip[3] = (uint8_t)(len - FR_ETH);
    ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
    ip[12] = 127; ip[15] = 1; ip[16] = 127; ip[19] = 1;
    uint8_t *t = ip + 20;
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    t[4] = (uint8_t)(id >> 24); t[5] = (uint8_t)(id >> 16); t[6] = (uint8_t)(id >> 8); t[7] = (uint8_t)id;
    t[12] = 0x50; t[13] = flags;
    for (uint32_t i = 0; i < paylen; i++) t[20 + i] = (uint8_t)(i * 3 + id);
    return len;
}
static uint32_t fr_id(const uint8_t *f)
{
    const uint8_t *t = f + FR_ETH + 20;
    return (uint32_t)t[4] << 24 | t[5] << 16 | t[6] << 8 | t[7];
}

struct fr_got { uint32_t n; uint32_t ids[64]; uint16_t flags[64]; uint8_t last[64]; };
static void fr_collect(const struct link_slot *s, void *arg)
{
    struct fr_got *g = arg;
    if (g->n < 64) {
        g->ids[g->n] = fr_id(s->buf);
        g->flags[g->n] = s->flags;
        g->last[g->n] = s->buf[s->len - 1];
    }
    g->n++;
}

/* send one frame through the wrapper w (TX side) at now; collect what b received */
static void fr_send(mtcp_link *w, mtcp_link *b, uint16_t sp, uint16_t dp, uint8_t fl, uint32_t pl,
                    uint32_t id, uint64_t now, struct fr_got *g)
{
    uint8_t f[256];
    uint32_t len = fr_frame(f, sp, dp, fl, pl, id);
    CHECK_EQ(tx_put(w, f, len, LINK_SLOT_F_CSUM_VALID), 0);
    link_txsync(w, now);
    link_rxsync(b, now);
    rx_take(b, fr_collect, g);
}

static struct mtcp_fault fr_rule(uint32_t action, uint16_t aport, uint16_t bport)
{
    struct mtcp_fault f;
    memset(&f, 0, sizeof(f));
    f.action = action;
    f.dirs = MTCP_FAULT_DIR_TX;
    f.a.port = aport;
    f.b.port = bport;
    return f;
}

static void test_fault_rules(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(64, 1500, &a, &b), 0);
    struct mtcp_impair zero;
    memset(&zero, 0, sizeof(zero));
    char err[128];
    mtcp_link *w = mtcp_impair_wrap(a, &zero, err, sizeof(err));
    CHECK(w != NULL);
    uint64_t now = 5000000, st[2];
    struct fr_got g;

    /* drop the next SYN-ACK sent by port 80: exact on SYN/ACK/RST/FIN */
    struct mtcp_fault f = fr_rule(MTCP_FAULT_DROP, 80, 0);
    f.tcp_mask = 0x17; f.tcp_value = 0x12; f.count = 1;
    int r0 = mtcp_fault_add(w, &f);
    CHECK_EQ(r0, 0);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 80, 4000, 0x10, 0, 1, now, &g);      /* ACK: passes */
    fr_send(w, b, 80, 4000, 0x12, 0, 2, now, &g);      /* SYN-ACK: dropped */
    fr_send(w, b, 80, 4000, 0x12, 0, 3, now, &g);      /* count used up: passes */
    fr_send(w, b, 81, 4000, 0x12, 0, 4, now, &g);      /* other port */
    fr_send(w, b, 4000, 80, 0x02, 0, 5, now, &g);      /* SYN to 80: one-way rule, passes */
    CHECK_EQ(g.n, 4);
    CHECK(g.ids[0] == 1 && g.ids[1] == 3 && g.ids[2] == 4 && g.ids[3] == 5);
    CHECK_EQ(mtcp_fault_stats(w, r0, st), 0);
    CHECK_EQ(st[0], 2);
    CHECK_EQ(st[1], 1);
    CHECK_EQ(mtcp_fault_remove(w, r0), 0);
    CHECK_EQ(mtcp_fault_remove(w, r0), -ENOENT);
    CHECK_EQ(mtcp_fault_stats(w, r0, st), -ENOENT);

    /* partition port 80 <-> anyone during [now+1000, now+2000) */
    f = fr_rule(MTCP_FAULT_DROP, 80, 0);
    f.flags = MTCP_FAULT_BOTH_WAYS;
    f.start_us = now + 1000; f.end_us = now + 2000;
    int r1 = mtcp_fault_add(w, &f);
    CHECK(r1 >= 0);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 80, 4000, 0x10, 10, 10, now + 999, &g);     /* before: passes */
    fr_send(w, b, 80, 4000, 0x10, 10, 11, now + 1000, &g);    /* dropped */
    fr_send(w, b, 4000, 80, 0x10, 10, 12, now + 1500, &g);    /* other way: dropped */
    fr_send(w, b, 4001, 81, 0x10, 10, 13, now + 1500, &g);    /* not port 80 */
    fr_send(w, b, 4000, 80, 0x10, 10, 14, now + 2000, &g);    /* window over */
    CHECK_EQ(g.n, 3);
    CHECK(g.ids[0] == 10 && g.ids[1] == 13 && g.ids[2] == 14);
    CHECK_EQ(mtcp_fault_stats(w, r1, st), 0);
    CHECK_EQ(st[0], 2);
    CHECK_EQ(st[1], 2);
    mtcp_fault_clear(w);
    CHECK_EQ(mtcp_fault_stats(w, r1, st), -ENOENT);
    now += 2000;                       /* time never goes back: the wrapper's queues are FIFOs */

    /* corrupt the 2nd data segment to port 80 (pure ACKs do not count) */
    f = fr_rule(MTCP_FAULT_CORRUPT, 0, 80);
    f.flags = MTCP_FAULT_DATA; f.skip = 1; f.count = 1;
    int r2 = mtcp_fault_add(w, &f);
    CHECK(r2 >= 0);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 4000, 80, 0x10, 0, 20, now, &g);
    fr_send(w, b, 4000, 80, 0x18, 16, 21, now, &g);
    fr_send(w, b, 4000, 80, 0x10, 0, 22, now, &g);
    fr_send(w, b, 4000, 80, 0x18, 16, 23, now, &g);    /* corrupted */
    fr_send(w, b, 4000, 80, 0x18, 16, 24, now, &g);
    CHECK_EQ(g.n, 5);
    uint8_t ref[256];
    fr_frame(ref, 4000, 80, 0x18, 16, 23);
    CHECK_EQ(g.last[3], ref[FR_ETH + 40 + 15] ^ 1);
    CHECK_EQ(g.flags[3] & (LINK_SLOT_F_CSUM_VALID | LINK_SLOT_F_CSUM_PARTIAL), 0);
    fr_frame(ref, 4000, 80, 0x18, 16, 24);
    CHECK_EQ(g.last[4], ref[FR_ETH + 40 + 15]);
    CHECK(g.flags[4] & LINK_SLOT_F_CSUM_VALID);
    CHECK_EQ(mtcp_fault_stats(w, r2, st), 0);
    CHECK_EQ(st[0], 3);
    CHECK_EQ(st[1], 1);
    mtcp_fault_clear(w);

    /* delay what port 80 sends by 5 ms: others are not held behind it */
    f = fr_rule(MTCP_FAULT_DELAY, 80, 0);
    f.delay_us = 5000;
    CHECK(mtcp_fault_add(w, &f) >= 0);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 80, 4000, 0x10, 4, 30, now, &g);
    fr_send(w, b, 81, 4000, 0x10, 4, 31, now + 10, &g);
    CHECK_EQ(g.n, 1);
    CHECK_EQ(g.ids[0], 31);
    CHECK_EQ(link_next_deadline(w), (int64_t)(now + 5000));
    link_txsync(w, now + 4999);
    link_rxsync(b, now + 4999);
    rx_take(b, fr_collect, &g);
    CHECK_EQ(g.n, 1);
    link_txsync(w, now + 5000);
    link_rxsync(b, now + 5000);
    rx_take(b, fr_collect, &g);
    CHECK_EQ(g.n, 2);
    CHECK_EQ(g.ids[1], 30);
    CHECK_EQ(link_next_deadline(w), -1);
    mtcp_fault_clear(w);
    now += 6000;

    /* duplicate once; address match: 127.0.0.1 matches, 10.0.0.1 does not */
    f = fr_rule(MTCP_FAULT_DUPLICATE, 0, 0);
    f.a.family = MTCP_AF_INET; f.a.ip[0] = 10; f.a.ip[3] = 1;
    int r3 = mtcp_fault_add(w, &f);
    f.a.ip[0] = 127; f.count = 1;
    int r4 = mtcp_fault_add(w, &f);
    CHECK(r3 >= 0 && r4 >= 0 && r3 != r4);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 80, 4000, 0x10, 4, 40, now, &g);
    fr_send(w, b, 80, 4000, 0x10, 4, 41, now, &g);
    CHECK_EQ(g.n, 3);
    CHECK(g.ids[0] == 40 && g.ids[1] == 40 && g.ids[2] == 41);
    CHECK_EQ(mtcp_fault_stats(w, r3, st), 0);
    CHECK_EQ(st[0], 0);
    /* RX-side rules do not see TX frames */
    mtcp_fault_clear(w);
    f = fr_rule(MTCP_FAULT_DROP, 0, 0);
    f.dirs = MTCP_FAULT_DIR_RX;
    CHECK(mtcp_fault_add(w, &f) >= 0);
    memset(&g, 0, sizeof(g));
    fr_send(w, b, 80, 4000, 0x10, 4, 50, now, &g);
    CHECK_EQ(g.n, 1);
    mtcp_fault_clear(w);

    /* validation */
    f = fr_rule(9, 0, 0);
    CHECK_EQ(mtcp_fault_add(w, &f), -EINVAL);
    f = fr_rule(MTCP_FAULT_DELAY, 0, 0);                   /* delay 0 */
    CHECK_EQ(mtcp_fault_add(w, &f), -EINVAL);
    f = fr_rule(MTCP_FAULT_DROP, 0, 0);
    f.dirs = 0;
    CHECK_EQ(mtcp_fault_add(w, &f), -EINVAL);
    f = fr_rule(MTCP_FAULT_DROP, 0, 0);
    f.tcp_value = 0x02;                                    /* value outside mask */
    CHECK_EQ(mtcp_fault_add(w, &f), -EINVAL);
    f = fr_rule(MTCP_FAULT_DROP, 0, 0);
    f.start_us = 10; f.end_us = 10;
    CHECK_EQ(mtcp_fault_add(w, &f), -EINVAL);
    f = fr_rule(MTCP_FAULT_DROP, 0, 0);
    CHECK_EQ(mtcp_fault_add(b, &f), -EOPNOTSUPP);          /* not a wrapper */
    for (int i = 0; i < MTCP_FAULT_MAX_RULES; i++)
        CHECK_EQ(mtcp_fault_add(w, &f), i);
    CHECK_EQ(mtcp_fault_add(w, &f), -ENOSPC);
    mtcp_fault_clear(w);
    mtcp_link_close(w);
    mtcp_link_close(b);
}

static void test_impair_parse_and_proxy(void)
{
    struct mtcp_impair c;
    char err[200];
    CHECK_EQ(mtcp_impair_parse("loss=0.01,delay=5ms,jitter=1ms,reorder=0.1,duplicate=0.01,corrupt=0.001,rate=100mbit,seed=42",
                               &c, err, sizeof(err)), 0);
    CHECK(c.loss == 0.01 && c.reorder == 0.1 && c.duplicate == 0.01 && c.corrupt == 0.001);
    CHECK_EQ(c.delay_us, 5000);
    CHECK_EQ(c.jitter_us, 1000);
    CHECK_EQ(c.rate_bps, 100000000ULL);
    CHECK_EQ(c.seed, 42);
    CHECK_EQ(mtcp_impair_parse("loss=5%, delay=300us rate=1gbit", &c, err, sizeof(err)), 0);
    CHECK(c.loss == 0.05);
    CHECK_EQ(c.delay_us, 300);
    CHECK_EQ(c.rate_bps, 1000000000ULL);
    CHECK_EQ(mtcp_impair_parse("", &c, err, sizeof(err)), 0);
    CHECK_EQ(mtcp_impair_parse("none", &c, err, sizeof(err)), 0);
    CHECK(c.loss == 0 && c.rate_bps == 0);
    CHECK_EQ(mtcp_impair_parse("delay=2", &c, err, sizeof(err)), 0);
    CHECK_EQ(c.delay_us, 2000);
    CHECK_EQ(mtcp_impair_parse("rate=10mbps", &c, err, sizeof(err)), 0);
    CHECK_EQ(c.rate_bps, 80000000ULL);
    CHECK_EQ(mtcp_impair_parse("loss=1.5", &c, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "loss") != NULL);
    CHECK_EQ(mtcp_impair_parse("loss=0.1,jitter=fast", &c, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "jitter") != NULL && strstr(err, "fast") != NULL);
    CHECK_EQ(mtcp_impair_parse("los=0.1", &c, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "unknown key 'los'") != NULL);
    CHECK_EQ(mtcp_impair_parse("rate=12parsecs", &c, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "rate") != NULL);
    CHECK_EQ(mtcp_impair_parse("seed=-1", &c, err, sizeof(err)), -EINVAL);
    CHECK_EQ(mtcp_impair_parse("loss", &c, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "key=value") != NULL);
    /* wrap validates */
    memset(&c, 0, sizeof(c));
    c.duplicate = -0.5;
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(16, 1500, &a, &b), 0);
    CHECK(mtcp_impair_wrap(a, &c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "duplicate") != NULL);
    c.duplicate = NAN;
    CHECK(mtcp_impair_wrap(a, &c, err, sizeof(err)) == NULL);
    mtcp_link_close(a);
    mtcp_link_close(b);
    /* proxies fd / ports to the inner link; counters of a non-impair link read 0 */
    mtcp_link *lo = mtcp_loopback_open(16, err, sizeof(err));
    memset(&c, 0, sizeof(c));
    mtcp_link *w = mtcp_impair_wrap(lo, &c, err, sizeof(err));
    CHECK(w != NULL);
    CHECK_EQ(mtcp_link_fd(w), mtcp_link_fd(lo));
    CHECK_EQ(w->link_type, MTCP_LINK_IP);
    CHECK_EQ(w->ops->claim_port(w, MTCP_AF_INET, 7777, 1), 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7777), 1);
    w->ops->release_port(w, MTCP_AF_INET, 7777, 1);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7777), 0);
    uint64_t cnt[5] = {1, 1, 1, 1, 1};
    mtcp_impair_counters(lo, cnt);
    CHECK_EQ(cnt[0] + cnt[4], 0);
    /* frames to itself through the wrapper: deadline 0 comes from the inner link */
    uint8_t f[128];
    uint32_t n = ip_tcp_frame(f, 0, 1, 9, 5);
    tx_put(w, f, n, 0);
    link_txsync(w, 0);
    CHECK_EQ(link_next_deadline(w), 0);
    CHECK_EQ(link_rxsync(w, 0), 1);
    CHECK_EQ(ip_seq(&w->rx.slot[w->rx.head]), 5);
    mtcp_link_close(w);   /* closes lo too (ASan would report a leak otherwise) */
}

int main(void)
{
    RUN(test_impair_rates);
    RUN(test_impair_determinism);
    RUN(test_impair_delay);
    RUN(test_impair_rate);
    RUN(test_impair_corrupt_csum);
    RUN(test_impair_parse_and_proxy);
    RUN(test_fault_rules);
    CTEST_END();
}
