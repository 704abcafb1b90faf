/* test_link.c — ring contract helpers, sim pair, loopback switch, pcap.
 * Shared helpers: link_helpers.h. */
#include "link_helpers.h"

/* ---- ring arithmetic ---- */
static void test_ring_arith(void)
{
    struct mtcp_link l;
    memset(&l, 0, sizeof(l));
    CHECK_EQ(link_rings_alloc(&l, 6, 8, 100), 0);  /* 6 rounds up to 8 */
    CHECK_EQ(l.rx.num_slots, 8);
    CHECK_EQ(l.rx.mask, 7);
    CHECK_EQ(l.tx.num_slots, 8);
    CHECK(l.rx.buf_size >= 100 && l.rx.buf_size % 64 == 0);
    CHECK_EQ(link_ring_space(&l.rx), 0);            /* RX: no frame */
    CHECK_EQ(link_ring_space(&l.tx), 7);            /* TX: all but one slot free */
    CHECK_EQ(link_ring_next(&l.tx, 7), 0);
    CHECK_EQ(link_ring_next(&l.tx, 3), 4);
    /* buffers distinct, aligned, writable end to end */
    for (uint32_t i = 0; i < 8; i++) {
        CHECK(((uintptr_t)l.rx.slot[i].buf & 63) == 0);
        CHECK(((uintptr_t)l.tx.slot[i].buf & 63) == 0);
        memset(l.rx.slot[i].buf, (int)i, l.rx.buf_size);
        memset(l.tx.slot[i].buf, (int)(i + 8), l.tx.buf_size);
    }
    for (uint32_t i = 0; i < 8; i++) {
        CHECK_EQ(l.rx.slot[i].buf[l.rx.buf_size - 1], i);
        CHECK_EQ(l.tx.slot[i].buf[0], i + 8);
    }
    /* wrap-around space computations */
    l.tx.head = 6; l.tx.tail = 2;
    CHECK_EQ(link_ring_space(&l.tx), 4);
    l.tx.head = 2; l.tx.tail = 1;
    CHECK_EQ(link_ring_space(&l.tx), 7);
    link_rings_free(&l);
    CHECK(l.rx.slot == NULL);
    /* slot arrays only (backends with kernel-mapped buffers) */
    memset(&l, 0, sizeof(l));
    CHECK_EQ(link_rings_alloc(&l, 4, 4, 0), 0);
    CHECK(l.rx.slot[0].buf == NULL);
    link_rings_free(&l);
}

/* ---- buffer recycling: the given-back buffers move to the slots written next ---- */
static void test_ring_recycle(void)
{
    struct mtcp_link l;
    memset(&l, 0, sizeof(l));
    CHECK_EQ(link_rings_alloc(&l, 8, 8, 65536), 0);
    struct link_ring *r = &l.tx;
    /* a 64 KiB buffer size gets one more cache line between buffers */
    CHECK_EQ((size_t)(r->slot[1].buf - r->slot[0].buf), 65536u + 64u);
    uint8_t *orig[8];
    for (uint32_t i = 0; i < 8; i++) orig[i] = r->slot[i].buf;
    /* slots 2,3,4 sent, 5.. written next: 2<->5, 3<->6, 4<->7 */
    link_ring_recycle(r, 2, 5, 5);
    CHECK(r->slot[5].buf == orig[2] && r->slot[6].buf == orig[3] && r->slot[7].buf == orig[4]);
    CHECK(r->slot[2].buf == orig[5] && r->slot[3].buf == orig[6] && r->slot[4].buf == orig[7]);
    CHECK(r->slot[0].buf == orig[0] && r->slot[1].buf == orig[1]);
    /* wrap-around; room limited to the free slots before `from - 1`: [6, 7) is one slot */
    for (uint32_t i = 0; i < 8; i++) orig[i] = r->slot[i].buf;
    link_ring_recycle(r, 0, 4, 6);
    CHECK(r->slot[6].buf == orig[0] && r->slot[0].buf == orig[6]);
    for (uint32_t i = 1; i < 8; i++)
        if (i != 6) CHECK(r->slot[i].buf == orig[i]);
    /* nothing given back, or no room: nothing moves */
    link_ring_recycle(r, 3, 3, 4);
    link_ring_recycle(r, 3, 5, 2);
    CHECK(r->slot[6].buf == orig[0] && r->slot[2].buf == orig[2] && r->slot[3].buf == orig[3]);
    /* every buffer is still held by exactly one slot */
    for (uint32_t i = 0; i < 8; i++)
        for (uint32_t j = i + 1; j < 8; j++) CHECK(r->slot[i].buf != r->slot[j].buf);
    link_rings_free(&l);
}

/* ---- sim pair ---- */
struct seqcheck { uint32_t next; int bad; uint32_t len; };
static void check_eth_seq(const struct link_slot *s, void *arg)
{
    struct seqcheck *c = arg;
    uint8_t ref[2048];
    eth_frame(ref, s->len, frame_seq(s->buf));
    if (frame_seq(s->buf) != c->next || (c->len && s->len != c->len) || memcmp(ref, s->buf, s->len) != 0)
        c->bad++;
    c->next++;
}

static void test_sim_both_ways(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(64, 1500, &a, &b), 0);
    CHECK_EQ(a->link_type, MTCP_LINK_ETHERNET);
    CHECK_EQ(a->mtu, 1500);
    CHECK_EQ(mtcp_link_fd(a) >= 0, 1);   /* lazily created eventfd */
    uint8_t f[1514];
    struct seqcheck ca = {0, 0, 0}, cb = {0, 0, 0};
    uint32_t sa = 0, sb = 0;
    for (int round = 0; round < 50; round++) {
        for (int k = 0; k < 10; k++) {
            uint32_t len = 60 + (sa * 37) % 1454;
            eth_frame(f, len, sa);
            CHECK_EQ(tx_put(a, f, len, 0), 0);
            sa++;
        }
        for (int k = 0; k < 7; k++) {
            eth_frame(f, 1514, sb);
            CHECK_EQ(tx_put(b, f, 1514, 0), 0);
            sb++;
        }
        CHECK_EQ(link_txsync(a, 0), 10);
        CHECK_EQ(link_txsync(b, 0), 7);
        CHECK_EQ(link_ring_space(&a->tx), 63);        /* completed at once */
        struct pollfd pfd = { .fd = mtcp_link_fd(a), .events = POLLIN };
        CHECK_EQ(poll(&pfd, 1, 0), 1);                /* a has frames waiting */
        CHECK_EQ(link_rxsync(a, 0), 7);
        CHECK_EQ(poll(&pfd, 1, 0), 0);                /* drained */
        CHECK_EQ(link_rxsync(b, 0), 10);
        CHECK_EQ(rx_take(a, check_eth_seq, &cb), 7);
        CHECK_EQ(rx_take(b, check_eth_seq, &ca), 10);
    }
    CHECK_EQ(ca.next, 500);
    CHECK_EQ(cb.next, 350);
    CHECK_EQ(ca.bad + cb.bad, 0);
    CHECK_EQ(link_rxsync(b, 0), 0);
    mtcp_link_close(a);
    /* the survivor drops what it sends */
    eth_frame(f, 100, 0);
    CHECK_EQ(tx_put(b, f, 100, 0), 0);
    CHECK_EQ(link_txsync(b, 0), 0);
    mtcp_link_close(b);
}

static void test_sim_ring_full(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(8, 1500, &a, &b), 0);
    uint8_t f[1514];
    /* TX ring: 7 free slots, the 8th put fails */
    for (uint32_t i = 0; i < 7; i++) {
        eth_frame(f, 64, i);
        CHECK_EQ(tx_put(a, f, 64, 0), 0);
    }
    CHECK_EQ(tx_put(a, f, 64, 0), -1);
    CHECK_EQ(link_txsync(a, 0), 7);
    /* peer RX holds 7; 7 more are dropped until b consumes */
    for (uint32_t i = 7; i < 14; i++) {
        eth_frame(f, 64, i);
        CHECK_EQ(tx_put(a, f, 64, 0), 0);
    }
    CHECK_EQ(link_txsync(a, 0), 0);
    CHECK_EQ(link_sim_drops(b), 7);
    CHECK_EQ(link_rxsync(b, 0), 7);
    /* consume only 3: released slots are reusable, the rest stay with the user */
    struct link_ring *r = &b->rx;
    CHECK_EQ(frame_seq(r->slot[r->head].buf), 0);
    for (int k = 0; k < 3; k++) r->head = r->cur = link_ring_next(r, r->head);
    for (uint32_t i = 100; i < 105; i++) {
        eth_frame(f, 64, i);
        CHECK_EQ(tx_put(a, f, 64, 0), 0);
    }
    CHECK_EQ(link_txsync(a, 0), 3);
    CHECK_EQ(link_sim_drops(b), 9);
    CHECK_EQ(link_rxsync(b, 0), 3);
    CHECK_EQ(link_ring_space(r), 7);
    uint32_t expect[7] = {3, 4, 5, 6, 100, 101, 102};
    for (int k = 0; k < 7; k++) {
        CHECK_EQ(frame_seq(r->slot[r->head].buf), expect[k]);
        r->head = r->cur = link_ring_next(r, r->head);
    }
    /* a frame longer than a buffer is dropped, not truncated */
    struct link_slot *s = &a->tx.slot[a->tx.head];
    s->len = a->tx.buf_size; /* fits TX buffer */
    a->tx.head = a->tx.cur = link_ring_next(&a->tx, a->tx.head);
    b->rx.buf_size = 100;    /* pretend the peer's buffers are small */
    CHECK_EQ(link_txsync(a, 0), 0);
    CHECK_EQ(link_sim_drops(b), 10);
    b->rx.buf_size = a->tx.buf_size;
    uint64_t st[MTCP_LINK_NSTATS + 1];
    memset(st, 0xff, sizeof(st));
    mtcp_link_stats(b, st, MTCP_LINK_NSTATS);
    CHECK_EQ(st[0], 10);              /* rx_frames published by rxsync */
    CHECK_EQ(st[2], 10);              /* rx_dropped */
    CHECK_EQ(st[MTCP_LINK_NSTATS], (long long)0xffffffffffffffffULL);   /* n respected */
    mtcp_link_stats(a, st, MTCP_LINK_NSTATS);
    CHECK_EQ(st[1], 7 + 7 + 5 + 1);   /* tx_frames */
    CHECK(strcmp(mtcp_link_stat_name(2), "rx_dropped") == 0 && strcmp(mtcp_link_stat_name(6), "tx_kicks_refused") == 0 &&
          mtcp_link_stat_name(7) == NULL);
    CHECK(strcmp(mtcp_link_kind(a), "sim") == 0);
    mtcp_link_close(b);
    mtcp_link_close(a);
}

/* ---- loopback switch ---- */
static void test_loopback_isolated(void)
{
    char err[128];
    mtcp_link *g = mtcp_loopback_open(64, err, sizeof(err));          /* on the shared switch */
    mtcp_link *i1 = mtcp_loopback_open_isolated(64, err, sizeof(err));
    mtcp_link *i2 = mtcp_loopback_open_isolated(64, err, sizeof(err));
    CHECK(g && i1 && i2);
    CHECK_EQ(g->ops->claim_port(g, MTCP_AF_INET, 7100, 1), 0);
    CHECK_EQ(i1->ops->claim_port(i1, MTCP_AF_INET, 7100, 1), 0);      /* own table: no conflict */
    CHECK_EQ(i2->ops->claim_port(i2, MTCP_AF_INET, 7100, 1), 0);
    CHECK_EQ(i1->ops->claim_port(i1, MTCP_AF_INET, 7200, 1), 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7100), 1);       /* g's */
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7200), 0);       /* i1's is invisible */
    uint8_t f[128];
    uint32_t n;
    /* i1 -> 7100 (also g's port) and -> 7200: both back to i1, nothing to g or i2 */
    n = ip_tcp_frame(f, 0, 50000, 7100, 1); CHECK_EQ(tx_put(i1, f, n, 0), 0);
    n = ip_tcp_frame(f, 0, 50000, 7200, 2); CHECK_EQ(tx_put(i1, f, n, 0), 0);
    CHECK_EQ(link_txsync(i1, 0), 2);
    CHECK_EQ(link_next_deadline(i1), 0);
    CHECK_EQ(link_rxsync(i1, 0), 2);
    CHECK_EQ(ip_seq(&i1->rx.slot[i1->rx.head]), 1);
    rx_take(i1, NULL, NULL);
    CHECK_EQ(link_rxsync(g, 0), 0);
    CHECK_EQ(link_rxsync(i2, 0), 0);
    /* g -> 7200 (claimed only inside i1): unowned on the switch, back to g */
    n = ip_tcp_frame(f, 0, 50001, 7200, 3); CHECK_EQ(tx_put(g, f, n, 0), 0);
    CHECK_EQ(link_txsync(g, 0), 1);
    CHECK_EQ(link_rxsync(g, 0), 1);
    rx_take(g, NULL, NULL);
    CHECK_EQ(link_rxsync(i1, 0), 0);
    struct pollfd p1 = { .fd = mtcp_link_fd(i1), .events = POLLIN };
    CHECK_EQ(poll(&p1, 1, 0), 0);
    i1->ops->release_port(i1, MTCP_AF_INET, 7100, 1);
    i1->ops->release_port(i1, MTCP_AF_INET, 7200, 1);
    mtcp_link_close(i1);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7100), 1);       /* g's untouched */
    mtcp_link_close(i2);
    mtcp_link_close(g);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 7100), 0);
}

static void test_loopback_routing(void)
{
    char err[128];
    mtcp_link *a = mtcp_loopback_open(64, err, sizeof(err));
    mtcp_link *b = mtcp_loopback_open(64, err, sizeof(err));
    CHECK(a && b);
    CHECK_EQ(a->link_type, MTCP_LINK_IP);
    CHECK(mtcp_link_fd(a) >= 0 && mtcp_link_fd(b) >= 0 && mtcp_link_fd(a) != mtcp_link_fd(b));
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 8080, 1), 0);         /* listener on a */
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 40000, 0), 0);        /* b's ephemeral */
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET6, 8080, 1), 0);        /* other family: ok */
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 8080), 1);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 40000), 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET6, 8080), 1);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET6, 8081), 0);

    uint8_t f[128];
    uint32_t n;
    /* b -> a:8080 (v4), b -> b:8080 v6 (owned by b), b -> 9999 (unowned: back to b) */
    n = ip_tcp_frame(f, 0, 40000, 8080, 1); CHECK_EQ(tx_put(b, f, n, LINK_SLOT_F_CSUM_PARTIAL), 0);
    n = ip_tcp_frame(f, 1, 40000, 8080, 2); CHECK_EQ(tx_put(b, f, n, 0), 0);
    n = ip_tcp_frame(f, 0, 40000, 9999, 3); CHECK_EQ(tx_put(b, f, n, 0), 0);
    n = ip_tcp_frame(f, 0, 40000, 8080, 4); CHECK_EQ(tx_put(b, f, n, 0), 0);
    f[0] = 0x00; CHECK_EQ(tx_put(b, f, n, 0), 0);                      /* garbage: back to b */
    CHECK_EQ(link_txsync(b, 0), 5);
    struct pollfd pa = { .fd = mtcp_link_fd(a), .events = POLLIN };
    struct pollfd pb = { .fd = mtcp_link_fd(b), .events = POLLIN };
    CHECK_EQ(poll(&pa, 1, 0), 1);                   /* cross-attachment: eventfd */
    CHECK_EQ(poll(&pb, 1, 0), 0);                   /* to itself: no syscall ... */
    CHECK_EQ(link_next_deadline(b), 0);             /* ... but due now */
    CHECK_EQ(link_next_deadline(a), -1);
    CHECK_EQ(link_rxsync(a, 0), 2);
    CHECK_EQ(poll(&pa, 1, 0), 0);
    struct link_ring *r = &a->rx;
    CHECK_EQ(ip_seq(&r->slot[r->head]), 1);
    /* the sender's checksum state passes through: an engine's offloaded frame stays PARTIAL
     * (trusted, not re-verified); a frame with a finished checksum (flags 0) is verified by the
     * receiver — so a frame corrupted after its checksum was finished is caught */
    CHECK_EQ(r->slot[r->head].flags & (LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID),
             LINK_SLOT_F_CSUM_PARTIAL);
    CHECK_EQ(ip_seq(&r->slot[link_ring_next(r, r->head)]), 4);
    CHECK_EQ(r->slot[link_ring_next(r, r->head)].flags & (LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID), 0);
    rx_take(a, NULL, NULL);
    CHECK_EQ(link_rxsync(b, 0), 3);
    CHECK_EQ(link_next_deadline(b), -1);
    r = &b->rx;
    CHECK_EQ(ip_seq(&r->slot[r->head]), 2);
    CHECK_EQ(ip_seq(&r->slot[link_ring_next(r, r->head)]), 3);
    rx_take(b, NULL, NULL);
    /* a answers b's ephemeral port */
    n = ip_tcp_frame(f, 0, 8080, 40000, 7); CHECK_EQ(tx_put(a, f, n, 0), 0);
    CHECK_EQ(link_txsync(a, 0), 1);
    CHECK_EQ(link_rxsync(b, 0), 1);
    CHECK_EQ(ip_seq(&b->rx.slot[b->rx.head]), 7);
    rx_take(b, NULL, NULL);

    /* claim conflicts */
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 8080, 1), -EADDRINUSE);
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 8080, 0), -EADDRINUSE);
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 40000, 0), -EADDRINUSE);
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 0, 0), -EINVAL);
    CHECK_EQ(a->ops->claim_port(a, 99, 1234, 0), -EINVAL);
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 8080, 0), 0);         /* same owner: counted */
    a->ops->release_port(a, MTCP_AF_INET, 8080, 1);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 8080), 0);
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 8080, 1), -EADDRINUSE); /* a's conn still holds it */
    a->ops->release_port(a, MTCP_AF_INET, 8080, 0);
    b->ops->release_port(b, MTCP_AF_INET, 8080, 1);                     /* not the owner: ignored */
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 8080, 1), 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 8080), 1);
    /* closing an attachment frees its ports */
    mtcp_link_close(b);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET, 8080), 0);
    CHECK_EQ(mtcp_loopback_has_listener(MTCP_AF_INET6, 8080), 0);
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 40000, 0), 0);
    a->ops->release_port(a, MTCP_AF_INET, 40000, 0);
    /* RX ring full: frames dropped and counted */
    mtcp_link *c = mtcp_loopback_open(8, err, sizeof(err));
    CHECK_EQ(c->ops->claim_port(c, MTCP_AF_INET, 5555, 1), 0);
    for (uint32_t i = 0; i < 10; i++) {
        n = ip_tcp_frame(f, 0, 1000, 5555, i);
        CHECK_EQ(tx_put(a, f, n, 0), 0);
        if (i == 5) link_txsync(a, 0);
    }
    link_txsync(a, 0);
    CHECK_EQ(link_loopback_drops(c), 3);
    CHECK_EQ(link_rxsync(c, 0), 7);
    uint64_t st[MTCP_LINK_NSTATS];
    mtcp_link_stats(c, st, MTCP_LINK_NSTATS);
    CHECK_EQ(st[0], 7);
    CHECK_EQ(st[2], 3);
    mtcp_link_close(c);
    mtcp_link_close(a);
}

/* two threads: each sends N frames to the other's port, both wake on eventfds */
#define LT_FRAMES 200000u
struct lt_arg { mtcp_link *l; uint16_t my_port, peer_port; uint32_t received, bad, sent; int v6; };

static void *lt_thread(void *p)
{
    struct lt_arg *a = p;
    uint8_t f[128];
    uint32_t next_rx = 0;
    struct pollfd pfd = { .fd = mtcp_link_fd(a->l), .events = POLLIN };
    int idle = 0;
    while (a->received < LT_FRAMES || a->sent < LT_FRAMES) {
        /* send a burst (ring space permitting); receiver's ring may drop -> retry logic below */
        uint32_t burst = 0;
        while (a->sent < LT_FRAMES && burst < 64 && link_ring_space(&a->l->tx) > 0) {
            uint32_t n = ip_tcp_frame(f, a->v6, a->my_port, a->peer_port, a->sent);
            tx_put(a->l, f, n, 0);
            a->sent++;
            burst++;
        }
        if (burst)
            link_txsync(a->l, 0);
        link_rxsync(a->l, 0);
        struct link_ring *r = &a->l->rx;
        uint32_t got = 0;
        while (r->head != r->tail) {
            uint32_t s = ip_seq(&r->slot[r->head]);
            if (s < next_rx) a->bad++;
            next_rx = s + 1;
            a->received++;
            got++;
            r->head = r->cur = link_ring_next(r, r->head);
        }
        if (!got && a->sent >= LT_FRAMES) {
            /* wait for the peer: must be woken by the eventfd (2 s = lost wakeup) */
            int pr = poll(&pfd, 1, 2000);
            if (pr == 0 && ++idle > 2) {
                fprintf(stderr, "    thread on port %u: timed out waiting (lost wakeup?)\n", a->my_port);
                break;
            }
        }
        /* let the ring drain: the other side could be slow; drops are counted separately */
        if (a->sent >= LT_FRAMES && a->received + link_loopback_drops(a->l) >= LT_FRAMES)
            break;
    }
    return NULL;
}

/* claims and releases ports while the two senders run: writers make progress, nothing breaks */
struct claimer_arg { mtcp_link *l; int *stop; uint32_t cycles; };
static void *claimer_thread(void *p)
{
    struct claimer_arg *c = p;
    while (!__atomic_load_n(c->stop, __ATOMIC_RELAXED) && c->cycles < 5000) {
        uint16_t port = (uint16_t)(20000 + c->cycles % 1000);
        if (c->l->ops->claim_port(c->l, MTCP_AF_INET, port, c->cycles & 1) == 0)
            c->l->ops->release_port(c->l, MTCP_AF_INET, port, c->cycles & 1);
        c->cycles++;
    }
    return NULL;
}

static void test_loopback_threads(void)
{
    char err[128];
    mtcp_link *a = mtcp_loopback_open(4096, err, sizeof(err));
    mtcp_link *b = mtcp_loopback_open(4096, err, sizeof(err));
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 1111, 0), 0);
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET6, 2222, 0), 0);
    struct lt_arg x = { .l = a, .my_port = 1111, .peer_port = 2222, .v6 = 1 };
    struct lt_arg y = { .l = b, .my_port = 2222, .peer_port = 1111, .v6 = 0 };
    pthread_t tx, ty, tc;
    int stop = 0;
    mtcp_link *cl = mtcp_loopback_open(16, err, sizeof(err));
    struct claimer_arg ca = { .l = cl, .stop = &stop, .cycles = 0 };
    pthread_create(&tc, NULL, claimer_thread, &ca);
    pthread_create(&tx, NULL, lt_thread, &x);
    pthread_create(&ty, NULL, lt_thread, &y);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(tc, NULL);
    fprintf(stderr, "    claimer thread: %u claim/release cycles meanwhile\n", ca.cycles);
    CHECK(ca.cycles > 0);
    mtcp_link_close(cl);
    uint64_t da = link_loopback_drops(a), db = link_loopback_drops(b);
    fprintf(stderr, "    threads: a got %u (+%llu dropped), b got %u (+%llu dropped)\n",
            x.received, (unsigned long long)da, y.received, (unsigned long long)db);
    CHECK_EQ(x.received + da, LT_FRAMES);     /* every frame delivered or counted as dropped */
    CHECK_EQ(y.received + db, LT_FRAMES);
    CHECK(x.received > 0 && y.received > 0);  /* how many fit depends on scheduling */
    CHECK_EQ(x.bad + y.bad, 0);               /* order kept */
    mtcp_link_close(a);
    mtcp_link_close(b);
}

/* ping-pong: every receive is preceded by a blocking poll on the eventfd, so a lost wakeup
 * shows as a 2 s timeout */
#define PP_ROUNDS 20000u
struct pp_arg { mtcp_link *l; uint16_t my_port, peer_port; int starter; uint32_t done, timeouts, bad; };

static void *pp_thread(void *p)
{
    struct pp_arg *a = p;
    uint8_t f[128];
    struct pollfd pfd = { .fd = mtcp_link_fd(a->l), .events = POLLIN };
    uint32_t expect = a->starter ? 1 : 0;
    if (a->starter) {
        uint32_t n = ip_tcp_frame(f, 0, a->my_port, a->peer_port, 0);
        tx_put(a->l, f, n, 0);
        link_txsync(a->l, 0);
    }
    while (a->done < PP_ROUNDS) {
        link_rxsync(a->l, 0);
        struct link_ring *r = &a->l->rx;
        if (r->head == r->tail) {
            if (poll(&pfd, 1, 2000) == 0 && ++a->timeouts > 1)
                break;
            continue;
        }
        while (r->head != r->tail) {
            uint32_t s = ip_seq(&r->slot[r->head]);
            if (s != expect) a->bad++;
            r->head = r->cur = link_ring_next(r, r->head);
            a->done++;
            expect = s + 2;
            uint32_t n = ip_tcp_frame(f, 0, a->my_port, a->peer_port, s + 1);
            tx_put(a->l, f, n, 0);
        }
        link_txsync(a->l, 0);
    }
    return NULL;
}

static void test_loopback_pingpong(void)
{
    char err[128];
    mtcp_link *a = mtcp_loopback_open(64, err, sizeof(err));
    mtcp_link *b = mtcp_loopback_open(64, err, sizeof(err));
    CHECK_EQ(a->ops->claim_port(a, MTCP_AF_INET, 3333, 1), 0);
    CHECK_EQ(b->ops->claim_port(b, MTCP_AF_INET, 4444, 0), 0);
    struct pp_arg x = { .l = a, .my_port = 3333, .peer_port = 4444, .starter = 1 };
    struct pp_arg y = { .l = b, .my_port = 4444, .peer_port = 3333, .starter = 0 };
    x.bad = 0;
    pthread_t tx, ty;
    pthread_create(&tx, NULL, pp_thread, &x);
    pthread_create(&ty, NULL, pp_thread, &y);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    /* x expects odd sequence numbers back: seq 1, 3, 5 ... */
    CHECK_EQ(y.done, PP_ROUNDS);
    CHECK_EQ(x.done, PP_ROUNDS);
    CHECK_EQ(x.bad, 0);
    CHECK_EQ(x.timeouts + y.timeouts, 0);
    CHECK_EQ(y.bad, 0);
    mtcp_link_close(a);
    mtcp_link_close(b);
}

/* ---- pcap ---- */
static void test_pcap(void)
{
    mtcp_link *a, *b;
    CHECK_EQ(mtcp_simlink_pair(16, 1500, &a, &b), 0);
    char path[] = "/tmp/mtcp_test_link_XXXXXX.pcap";
    int fd = mkstemps(path, 5);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ(mtcp_link_pcap_offset(a, 0), -EINVAL);       /* no capture open yet */
    CHECK_EQ(mtcp_link_pcap(a, path), 0);
    /* a fixed capture clock (virtual time): ts = now_us + offset */
    CHECK_EQ(mtcp_link_pcap_offset(a, 946684800LL * 1000000 - 1000000), 0);
    uint8_t f[1514];
    for (uint32_t i = 0; i < 5; i++) {
        eth_frame(f, 100 + i, i);
        tx_put(a, f, 100 + i, 0);
    }
    link_txsync(a, 1000000);
    for (uint32_t i = 0; i < 3; i++) {
        eth_frame(f, 200, i);
        tx_put(b, f, 200, 0);
    }
    link_txsync(b, 1000100);
    link_rxsync(a, 1000200);
    link_pcap_flush(a);
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    uint8_t buf[8192];
    size_t got = fp ? fread(buf, 1, sizeof(buf), fp) : 0;
    if (fp) fclose(fp);
    CHECK_EQ(got, 24 + 5 * 16 + (100 + 101 + 102 + 103 + 104) + 3 * (16 + 200));
    uint32_t magic, linktype, incl0, orig0;
    memcpy(&magic, buf, 4); memcpy(&linktype, buf + 20, 4);
    memcpy(&incl0, buf + 24 + 8, 4); memcpy(&orig0, buf + 24 + 12, 4);
    CHECK_EQ(magic, 0xa1b2c3d4u);
    CHECK_EQ(linktype, 1);
    CHECK_EQ(incl0, 100);
    CHECK_EQ(orig0, 100);
    uint32_t ts_sec, ts_usec, last_sec, last_usec;
    memcpy(&ts_sec, buf + 24, 4); memcpy(&ts_usec, buf + 28, 4);
    CHECK_EQ(ts_sec, 946684800u);
    CHECK_EQ(ts_usec, 0);
    size_t last = got - (16 + 200);                  /* last record: received at 1000200 */
    memcpy(&last_sec, buf + last, 4); memcpy(&last_usec, buf + last + 4, 4);
    CHECK_EQ(last_sec, 946684800u);
    CHECK_EQ(last_usec, 200);
    mtcp_link_close(a);       /* closes the capture */
    mtcp_link_close(b);
    /* tshark must read it without complaint (skipped when tshark is absent) */
    if (system("command -v tshark >/dev/null 2>&1") == 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "tshark -r %s 2>&1 | grep -v -i 'running as user' | "
                 "grep -ci -E 'malformed|error|cut short|appears to be damaged' >/dev/null && exit 1; "
                 "test $(tshark -r %s 2>/dev/null | wc -l) -eq 8", path, path);
        CHECK_EQ(system(cmd), 0);
    }
    unlink(path);

    /* IP link: LINKTYPE_RAW */
    char err[64];
    mtcp_link *lo = mtcp_loopback_open(16, err, sizeof(err));
    char path2[] = "/tmp/mtcp_test_lo_XXXXXX.pcap";
    fd = mkstemps(path2, 5);
    close(fd);
    CHECK_EQ(mtcp_link_pcap(lo, path2), 0);
    uint32_t n = ip_tcp_frame(f, 0, 1, 2, 3);
    tx_put(lo, f, n, 0);
    n = ip_tcp_frame(f, 1, 1, 2, 3);
    tx_put(lo, f, n, 0);
    link_txsync(lo, 5);
    link_rxsync(lo, 6);
    mtcp_link_close(lo);
    fp = fopen(path2, "rb");
    got = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    memcpy(&linktype, buf + 20, 4);
    CHECK_EQ(linktype, 101);
    CHECK_EQ(got, 24 + 4 * 16 + 2 * 48 + 2 * 68);
    if (system("command -v tshark >/dev/null 2>&1") == 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "test $(tshark -r %s 2>/dev/null | grep -c TCP) -eq 4", path2);
        CHECK_EQ(system(cmd), 0);
    }
    unlink(path2);
}

int main(void)
{
    RUN(test_ring_arith);
    RUN(test_ring_recycle);
    RUN(test_sim_both_ways);
    RUN(test_sim_ring_full);
    RUN(test_loopback_routing);
    RUN(test_loopback_isolated);
    RUN(test_loopback_threads);
    RUN(test_loopback_pingpong);
    RUN(test_pcap);
    CTEST_END();
}
