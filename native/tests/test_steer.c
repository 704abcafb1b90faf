/* test_steer.c — flow steering (io/steer.c): the C steering function, the classic BPF fanout
 * program (run on a small cBPF interpreter here; the kernel runs it in the netns tests of
 * tests/workers/test_workers.py), the eBPF TAP program (run in the kernel with BPF_PROG_TEST_RUN when
 * the process may load BPF, else reported as skipped), claim_port steering, the misdirected
 * filter and the shared-memory hand-off between two wrappers over sim links. */
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "ctest.h"
#include "io/steer.h"
#include "io/link.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)rng; }

/* ---- frame builders ---- */
static uint32_t mk_tcp4(uint8_t *f, const uint8_t sip[4], uint16_t sport, uint16_t dport, int ihl_words, int frag)
{
    memset(f, 0, 128);
    f[12] = 0x08; f[13] = 0x00;
    uint8_t *n = f + 14;
    n[0] = (uint8_t)(0x40 | ihl_words);
    n[6] = (uint8_t)(frag >> 8); n[7] = (uint8_t)frag;
    n[8] = 64; n[9] = 6;
    memcpy(n + 12, sip, 4);
    n[16] = 198; n[17] = 18; n[18] = 0; n[19] = 2;
    uint8_t *t = n + ihl_words * 4;
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    t[12] = 0x50;
    uint32_t len = 14 + (uint32_t)ihl_words * 4 + 20;
    n[2] = (uint8_t)((len - 14) >> 8); n[3] = (uint8_t)(len - 14);
    return len;
}

static uint32_t mk_tcp6(uint8_t *f, const uint8_t sip[16], uint16_t sport, uint16_t dport, uint8_t nh)
{
    memset(f, 0, 128);
    f[12] = 0x86; f[13] = 0xdd;
    uint8_t *n = f + 14;
    n[0] = 0x60; n[5] = 20; n[6] = nh; n[7] = 64;
    memcpy(n + 8, sip, 16);
    n[24] = 0x20; n[25] = 0x01; n[26] = 0x0d; n[27] = 0xb8; n[39] = 2;
    uint8_t *t = n + 40;
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    t[12] = 0x50;
    if (nh == 58) t[0] = 136;          /* ICMPv6 NA */
    return 14 + 40 + 20;
}

static uint32_t mk_arp(uint8_t *f, int op)
{
    memset(f, 0, 64);
    f[12] = 0x08; f[13] = 0x06;
    uint8_t *a = f + 14;
    a[1] = 1; a[2] = 8; a[4] = 6; a[5] = 4; a[7] = (uint8_t)op;
    return 14 + 28;
}

/* ---- a classic BPF interpreter for the instructions the fanout program uses ---- */
static int cbpf_load(const uint8_t *f, uint32_t len, int32_t k, int size, uint32_t *v)
{
    if (k == SKF_AD_OFF + SKF_AD_PROTOCOL) { *v = (uint32_t)f[12] << 8 | f[13]; return 0; }
    uint32_t off;
    if (k >= 0) off = 14 + (uint32_t)k;                       /* data at the network header */
    else if (k >= SKF_NET_OFF && k < SKF_AD_OFF) off = 14 + (uint32_t)(k - SKF_NET_OFF);
    else return -1;
    if (off + (uint32_t)size > len) return -1;
    uint32_t x = 0;
    for (int i = 0; i < size; i++) x = x << 8 | f[off + (uint32_t)i];
    *v = x;
    return 0;
}

static int64_t cbpf_run(const struct sock_filter *p, int n, const uint8_t *f, uint32_t len)
{
    uint32_t A = 0, X = 0, M[16] = {0};
    for (int pc = 0; pc < n; pc++) {
        const struct sock_filter *i = &p[pc];
        uint32_t v;
        int sz = BPF_SIZE(i->code) == BPF_W ? 4 : BPF_SIZE(i->code) == BPF_H ? 2 : 1;
        switch (BPF_CLASS(i->code)) {
        case BPF_LD:
            if (BPF_MODE(i->code) == BPF_MEM) { A = M[i->k & 15]; break; }
            if (cbpf_load(f, len, (int32_t)(i->k + (BPF_MODE(i->code) == BPF_IND ? X : 0)), sz, &v) < 0) return 0;
            A = v;
            break;
        case BPF_LDX:
            if (cbpf_load(f, len, (int32_t)i->k, 1, &v) < 0) return 0;
            X = (v & 0xf) * 4;
            break;
        case BPF_ST: M[i->k & 15] = A; break;
        case BPF_MISC: X = A; break;
        case BPF_ALU: {
            uint32_t o = BPF_SRC(i->code) == BPF_X ? X : i->k;
            switch (BPF_OP(i->code)) {
            case BPF_XOR: A ^= o; break;
            case BPF_MUL: A *= o; break;
            case BPF_RSH: A >>= o; break;
            case BPF_MOD: A %= o; break;
            default: return -1;
            }
            break;
        }
        case BPF_JMP: {
            if (BPF_OP(i->code) == BPF_JA) { pc += (int)i->k; break; }
            int c;
            switch (BPF_OP(i->code)) {
            case BPF_JEQ: c = A == i->k; break;
            case BPF_JGE: c = A >= i->k; break;
            case BPF_JGT: c = A > i->k; break;
            case BPF_JSET: c = (A & i->k) != 0; break;
            default: return -1;
            }
            pc += c ? i->jt : i->jf;
            break;
        }
        case BPF_RET: return i->k;
        default: return -1;
        }
    }
    return -1;
}

static int ebpf_test_run(int pfd, const uint8_t *f, uint32_t len, uint32_t *ret)
{
    union bpf_attr a;
    uint8_t out[256];
    memset(&a, 0, sizeof(a));
    a.test.prog_fd = (uint32_t)pfd;
    a.test.data_in = (uint64_t)(uintptr_t)f;
    a.test.data_size_in = len;
    a.test.data_out = (uint64_t)(uintptr_t)out;
    a.test.data_size_out = sizeof(out);
    a.test.repeat = 1;
    if (syscall(__NR_bpf, BPF_PROG_TEST_RUN, &a, sizeof(a)) < 0) return -errno;
    *ret = a.test.retval;
    return 0;
}

static uint32_t mk_random(uint8_t *f, uint16_t lo, uint16_t hi)
{
    uint8_t ip[16];
    for (int i = 0; i < 16; i++) ip[i] = (uint8_t)rnd();
    uint16_t sport = (uint16_t)rnd(), dport;
    switch (rnd() % 4) {
    case 0: dport = (uint16_t)(lo + rnd() % (hi - lo + 1u)); break;   /* active open (our eph port) */
    case 1: dport = 8080; break;                                      /* a listener */
    default: dport = (uint16_t)rnd(); break;
    }
    switch (rnd() % 10) {
    case 0: return mk_arp(f, 1 + (int)(rnd() % 2));
    case 1: return mk_tcp4(f, ip, sport, dport, 5, (rnd() % 2) ? 0x2000 : 0x0010); /* MF / frag offset */
    case 2: return mk_tcp6(f, ip, sport, dport, 17);
    case 3: return mk_tcp6(f, ip, sport, dport, 58);
    case 4: return mk_tcp4(f, ip, sport, dport, 5 + (int)(rnd() % 4), 0);     /* IP options */
    case 5: case 6: return mk_tcp6(f, ip, sport, dport, 6);
    default: return mk_tcp4(f, ip, sport, dport, 5, (rnd() % 3) ? 0 : 0x4000); /* DF */
    }
}

static void test_function(void)
{
    uint8_t f[128];
    uint8_t ip[4] = {198, 18, 0, 1};
    int kind;
    /* active opens: local port in the ephemeral range decides */
    for (uint16_t p = 32768; p < 32800; p++) {
        mk_tcp4(f, ip, 80, p, 5, 0);
        CHECK_EQ(link_steer_frame(f, 54, 2, 32768, 60999, &kind), p % 2);
        CHECK_EQ(kind, STEER_TCP);
        CHECK_EQ(mtcp_steer_flow(MTCP_AF_INET, ip, 80, p, 3, 32768, 60999), p % 3);
    }
    /* listeners: the remote port/address spread over both queues, consistent with steer_flow */
    int hist[2] = {0, 0};
    for (uint16_t p = 40000; p < 40400; p += 2) {           /* Linux connect() prefers even ports */
        mk_tcp4(f, ip, p, 8080, 5, 0);
        uint32_t q = link_steer_frame(f, 54, 2, 32768, 60999, &kind);
        CHECK_EQ(q, mtcp_steer_flow(MTCP_AF_INET, ip, p, 8080, 2, 32768, 60999));
        hist[q]++;
    }
    CHECK(hist[0] > 60 && hist[1] > 60);
    uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    mk_tcp6(f, ip6, 45678, 8080, 6);
    CHECK_EQ(link_steer_frame(f, 74, 4, 32768, 60999, &kind), mtcp_steer_flow(MTCP_AF_INET6, ip6, 45678, 8080, 4, 32768, 60999));
    /* neighbour replies are flagged; everything not TCP is queue 0 */
    mk_arp(f, 2);
    CHECK_EQ(link_steer_frame(f, 42, 4, 32768, 60999, &kind), 0);
    CHECK_EQ(kind, STEER_NEIGH);
    mk_arp(f, 1);
    link_steer_frame(f, 42, 4, 32768, 60999, &kind);
    CHECK_EQ(kind, STEER_OTHER);
    mk_tcp6(f, ip6, 1, 2, 58);
    link_steer_frame(f, 74, 4, 32768, 60999, &kind);
    CHECK_EQ(kind, STEER_NEIGH);
    CHECK_EQ(link_steer_frame(f, 10, 4, 32768, 60999, &kind), 0);  /* runt */
    /* nq = 1: always 0 */
    mk_tcp4(f, ip, 80, 40001, 5, 0);
    CHECK_EQ(link_steer_frame(f, 54, 1, 32768, 60999, &kind), 0);
}

static void test_cbpf_matches_c(void)
{
    struct sock_filter prog[STEER_PROG_MAX];
    uint8_t f[128];
    int mismatches = 0, runs = 0;
    uint32_t nqs[] = {1, 2, 3, 4, 8, 16};
    for (size_t qi = 0; qi < 2 * sizeof(nqs) / sizeof(nqs[0]); qi++) {
        uint32_t nq = nqs[qi % 6], slots[16];
        int32_t net = qi < 6 ? STEER_NET_FANOUT : SKF_NET_OFF;
        for (uint32_t i = 0; i < nq; i++) slots[i] = i;
        for (uint32_t i = nq; i > 1; i--) { uint32_t j = rnd() % i, t = slots[i - 1]; slots[i - 1] = slots[j]; slots[j] = t; }
        int n = link_steer_build_cbpf(prog, STEER_PROG_MAX, nq, 32768, 60999, slots, net);
        CHECK(n > 0);
        for (int k = 0; k < 3000; k++) {
            uint32_t len = mk_random(f, 32768, 60999);
            int kind;
            uint32_t want = slots[link_steer_frame(f, len, nq, 32768, 60999, &kind)];
            int64_t got = cbpf_run(prog, n, f, len);
            runs++;
            if (got != (int64_t)want && mismatches++ < 5)
                fprintf(stderr, "  cbpf nq=%u frame kind %d: got %lld want %u\n", nq, kind, (long long)got, want);
        }
    }
    CHECK_EQ(mismatches, 0);
    CHECK(runs == 36000);
    CHECK_EQ(link_steer_build_cbpf(prog, 8, 2, 32768, 60999, NULL, 0), -E2BIG);
}

static void test_ebpf_matches_c(void)
{
    struct bpf_insn prog[STEER_PROG_MAX];
    static char log[65536];
    uint8_t f[128];
    uint32_t nqs[] = {1, 2, 3, 4, 8};
    int loaded = 0, mismatches = 0;
    /* BPF_PROG_TEST_RUN hands a socket filter the skb at its network header (the TAP path has it
     * at the mac header: STEER_NET_TAP, checked end to end by tests/workers/test_workers.py) */
    for (size_t qi = 0; qi < 2 * sizeof(nqs) / sizeof(nqs[0]); qi++) {
        uint32_t nq = nqs[qi % 5], slots[8];
        int32_t net = qi < 5 ? 0 : SKF_NET_OFF;
        for (uint32_t i = 0; i < nq; i++) slots[i] = (i + 1) % nq;   /* a rotation */
        int n = link_steer_build_ebpf(prog, STEER_PROG_MAX, nq, 32768, 60999, slots, net);
        CHECK(n > 0);
        log[0] = 0;
        int pfd = link_steer_load_ebpf(prog, n, log, sizeof(log));
        if (pfd == -EPERM || pfd == -EACCES) {
            fprintf(stderr, "  (eBPF load not permitted: kernel check of the TAP program skipped)\n");
            return;
        }
        CHECK(pfd >= 0);
        if (pfd < 0) { fprintf(stderr, "verifier: %s\n", log); return; }
        loaded++;
        for (int k = 0; k < 1500; k++) {
            uint32_t len = mk_random(f, 32768, 60999), got = 0;
            int kind;
            uint32_t want = slots[link_steer_frame(f, len, nq, 32768, 60999, &kind)];
            int rc = ebpf_test_run(pfd, f, len, &got);
            if (rc == -EPERM || rc == -524 /* ENOTSUPP */ || rc == -EINVAL) {
                fprintf(stderr, "  (BPF_PROG_TEST_RUN unavailable: %s)\n", strerror(-rc));
                close(pfd);
                return;
            }
            CHECK_EQ(rc, 0);
            if (got != want && mismatches++ < 5)
                fprintf(stderr, "  ebpf nq=%u kind %d: got %u want %u\n", nq, kind, got, want);
        }
        close(pfd);
    }
    CHECK_EQ(mismatches, 0);
    CHECK_EQ(loaded, 10);
    CHECK(link_steer_build_ebpf(prog, STEER_PROG_MAX, 2, 32768, 60999, NULL, STEER_NET_TAP) > 0);
    int pfd = link_steer_load_ebpf(prog, link_steer_build_ebpf(prog, STEER_PROG_MAX, 16, 32768, 60999, NULL, STEER_NET_TAP),
                              log, sizeof(log));
    CHECK(pfd >= 0);                                   /* the TAP variant passes the verifier */
    if (pfd >= 0) close(pfd);
}

/* ---- the wrapper over sim links ---- */
static void put_frame(struct mtcp_link *tx, const uint8_t *f, uint32_t len)
{
    struct link_ring *r = &tx->tx;
    CHECK(r->head != r->tail);
    memcpy(r->slot[r->head].buf, f, len);
    r->slot[r->head].len = len;
    r->slot[r->head].flags = 0;
    r->head = r->cur = link_ring_next(r, r->head);
    tx->ops->txsync(tx, 1);
}

static uint32_t take_all(struct mtcp_link *l, uint16_t *dports, uint32_t max)
{
    l->ops->rxsync(l, 2);
    uint32_t n = 0;
    while (l->rx.head != l->rx.tail) {
        struct link_slot *s = &l->rx.slot[l->rx.head];
        if (n < max) dports[n] = s->len >= 38 && s->buf[12] == 0x08 && s->buf[13] == 0 ? (uint16_t)(s->buf[36] << 8 | s->buf[37]) : 0;
        n++;
        l->rx.head = l->rx.cur = link_ring_next(&l->rx, l->rx.head);
    }
    return n;
}

static void test_wrapper_filter_and_ports(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &a, &b), 0);
    struct mtcp_steer_cfg cfg = { .queue = 1, .nqueues = 2, .eph_lo = 32768, .eph_hi = 60999 };
    char err[256];
    mtcp_link *w = mtcp_steer_wrap(b, &cfg, err, sizeof(err));
    CHECK(w != NULL);
    if (!w) return;
    /* claim_port: odd ephemeral ports are ours, even ones are not; listeners and ports outside
     * the range are always accepted */
    CHECK_EQ(w->ops->claim_port(w, MTCP_AF_INET, 40001, 0), 0);
    CHECK_EQ(w->ops->claim_port(w, MTCP_AF_INET, 40002, 0), -EAGAIN);
    CHECK_EQ(w->ops->claim_port(w, MTCP_AF_INET, 40002, 1), 0);
    CHECK_EQ(w->ops->claim_port(w, MTCP_AF_INET6, 8080, 0), 0);
    uint8_t f[128], ip[4] = {198, 18, 0, 1};
    uint16_t d[64];
    for (uint16_t p = 40000; p < 40010; p++) put_frame(a, f, mk_tcp4(f, ip, 80, p, 5, 0));
    put_frame(a, f, mk_arp(f, 2));
    uint32_t n = take_all(w, d, 64);
    CHECK_EQ(n, 6);                        /* 5 odd ports + the ARP reply */
    for (uint32_t i = 0; i < n && i < 5; i++) CHECK_EQ(d[i] % 2, 1);
    uint64_t c[MTCP_STEER_NCOUNTERS];
    mtcp_steer_counters(w, c, MTCP_STEER_NCOUNTERS);
    CHECK_EQ(c[0], 11);                    /* rx_frames */
    CHECK_EQ(c[1], 5);                     /* misdirected */
    CHECK_EQ(c[7], 1);                     /* ports_skipped: 40002 as an ephemeral port */
    CHECK(strcmp(mtcp_steer_counter_name(1), "misdirected") == 0);
    CHECK(mtcp_steer_counter_name(MTCP_STEER_NCOUNTERS) == NULL);
    /* TX passes through */
    put_frame(w, f, mk_arp(f, 1));
    CHECK_EQ(take_all(a, d, 64), 1);
    mtcp_link_close(w);
    mtcp_link_close(a);
}

static void test_handoff(void)
{
    mtcp_link *a0, *b0, *a1, *b1;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &a0, &b0), 0);
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &a1, &b1), 0);
    size_t sz = mtcp_steer_shm_size(16);
    void *shm = calloc(1, sz);
    char err[256];
    struct mtcp_steer_cfg bad = { .queue = 0, .nqueues = 2, .eph_lo = 32768, .eph_hi = 60999, .shm = shm, .shm_len = sz };
    CHECK(mtcp_steer_wrap(b0, &bad, err, sizeof(err)) == NULL);        /* not initialised */
    CHECK_EQ(mtcp_steer_shm_init(shm, sz, 16), 0);
    int32_t ev[2] = {-1, -1};
    struct mtcp_steer_cfg c0 = { .queue = 0, .nqueues = 2, .eph_lo = 32768, .eph_hi = 60999,
                                 .flags = MTCP_STEER_HANDOFF, .shm = shm, .shm_len = sz, .evfds = ev };
    struct mtcp_steer_cfg c1 = c0;
    c1.queue = 1;
    mtcp_link *w0 = mtcp_steer_wrap(b0, &c0, err, sizeof(err));
    mtcp_link *w1 = mtcp_steer_wrap(b1, &c1, err, sizeof(err));
    CHECK(w0 && w1);
    if (!w0 || !w1) return;
    uint8_t f[128], ip[4] = {198, 18, 0, 1};
    uint16_t d[64];
    /* frames of queue 1's flows arriving at queue 0 are handed to queue 1 */
    for (uint16_t p = 40000; p < 40004; p++) put_frame(a0, f, mk_tcp4(f, ip, 80, p, 5, 0));
    put_frame(a0, f, mk_arp(f, 2));                  /* neighbour reply: both get it */
    CHECK_EQ(take_all(w0, d, 64), 3);                /* 40000, 40002, ARP */
    uint32_t n1 = take_all(w1, d, 64);
    CHECK_EQ(n1, 3);                                 /* 40001, 40003 handed off + the ARP copy */
    CHECK_EQ(d[0], 40001);
    CHECK_EQ(d[1], 40003);
    CHECK_EQ(d[2], 0);
    uint64_t c[MTCP_STEER_NCOUNTERS];
    mtcp_steer_counters(w1, c, MTCP_STEER_NCOUNTERS);
    CHECK_EQ(c[3], 2);                               /* handoff_in */
    CHECK_EQ(c[5], 1);                               /* neigh_shared_in */
    mtcp_steer_counters(w0, c, MTCP_STEER_NCOUNTERS);
    CHECK_EQ(c[1], 2);
    CHECK_EQ(c[2], 2);
    CHECK_EQ(c[4], 1);
    /* a writer laps a slow reader: the lost frames are counted, nothing torn is delivered */
    for (int k = 0; k < 40; k++) put_frame(a0, f, mk_tcp4(f, ip, 80, 40001, 5, 0));
    take_all(w0, d, 64);
    n1 = take_all(w1, d, 64);
    mtcp_steer_counters(w1, c, MTCP_STEER_NCOUNTERS);
    CHECK(n1 <= 16);
    CHECK_EQ(n1 + c[6], 40);
    /* more than one batch of hand-offs (INJ_SLOTS = 64): the rest comes with the next poll and
     * next_deadline says "now" meanwhile */
    {
        mtcp_link *a2, *b2;
        CHECK_EQ(mtcp_simlink_pair(256, 1500, &a2, &b2), 0);
        size_t sz2 = mtcp_steer_shm_size(256);
        void *shm2 = calloc(1, sz2);
        CHECK_EQ(mtcp_steer_shm_init(shm2, sz2, 256), 0);
        struct mtcp_steer_cfg x0 = c0, x1 = c0;
        x0.shm = x1.shm = shm2;
        x0.shm_len = x1.shm_len = sz2;
        x1.queue = 1;
        mtcp_link *v0 = mtcp_steer_wrap(b2, &x0, err, sizeof(err));
        mtcp_link *v1 = mtcp_steer_wrap(a2, &x1, err, sizeof(err));   /* only its hand-off input matters */
        for (int k = 0; k < 100; k++) {
            struct link_ring *r = &a2->tx;
            uint32_t len = mk_tcp4(r->slot[r->head].buf, ip, 80, 40001, 5, 0);
            r->slot[r->head].len = len;
            r->head = r->cur = link_ring_next(r, r->head);
            if (k % 50 == 49) a2->ops->txsync(a2, 1);
        }
        CHECK_EQ(take_all(v0, d, 64), 0);
        CHECK_EQ(take_all(v1, d, 64), 64);
        CHECK_EQ(v1->ops->next_deadline(v1), 2);                    /* poll again now */
        CHECK_EQ(take_all(v1, d, 64), 36);
        CHECK_EQ(v1->ops->next_deadline(v1), -1);
        mtcp_link_close(v0);
        mtcp_link_close(v1);
        free(shm2);
    }
    /* without a hand-off area the misdirected frames are dropped */
    CHECK_EQ(take_all(w1, d, 64), 0);
    mtcp_link_close(w0);
    mtcp_link_close(w1);
    mtcp_link_close(a0);
    mtcp_link_close(a1);
    free(shm);
}

int main(void)
{
    RUN(test_function);
    RUN(test_cbpf_matches_c);
    RUN(test_ebpf_matches_c);
    RUN(test_wrapper_filter_and_ports);
    RUN(test_handoff);
    CTEST_END();
}
