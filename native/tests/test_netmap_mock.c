/* test_netmap_mock.c — the netmap backend's ring logic against an in-memory mock of netmap's
 * shared memory layout (netmap_if -> ring_ofs[] -> netmap_ring + slots -> buffers at buf_ofs)
 * and a mock kernel implementing NIOCTXSYNC / NIOCRXSYNC with netmap's index rules.
 * No netmap module exists on our machines: this is the only test of io/netmap.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "ctest.h"
#include "io/link.h"
#include "io/netmap_abi.h"

#define NSLOTS 64u
#define BUFSZ 2048u
#define NQ 2u                   /* NIC rings per direction; + one host ring each */
#define NBUFS (2 * (NQ + 1) * NSLOTS + 64)

struct mock {
    uint8_t *mem;
    size_t memsize;
    struct netmap_if *nifp;
    struct netmap_ring *tx[NQ + 1], *rx[NQ + 1];
    uint32_t q;                  /* the ring pair under test */
    /* kernel state of the pair under test */
    uint32_t tx_hwcur, rx_hwcur, rx_hwtail;
    uint32_t tx_complete_max;    /* TX slots completed per sync (0 = all) */
    uint32_t tx_pending_hw;      /* sent but not yet completed */
    /* frames to deliver on RX, frames seen on TX */
    uint32_t inject_next, inject_end;
    uint32_t tx_seen, tx_bad;
    uint32_t spare_buf;          /* next spare buffer index for RX buffer swaps */
    int swap_rx_bufs;
    int syncs;
};

static uint32_t frame_len_for(uint32_t seq) { return 60 + (seq * 97) % 1400; }
static void fill_frame(uint8_t *b, uint32_t seq)
{
    uint32_t len = frame_len_for(seq);
    for (uint32_t i = 0; i < len; i++) b[i] = (uint8_t)(i + seq * 31);
    b[0] = (uint8_t)(seq >> 24); b[1] = (uint8_t)(seq >> 16); b[2] = (uint8_t)(seq >> 8); b[3] = (uint8_t)seq;
}
static int check_frame(const uint8_t *b, uint32_t len, uint32_t seq)
{
    if (len != frame_len_for(seq)) return 0;
    uint8_t ref[BUFSZ];
    fill_frame(ref, seq);
    return memcmp(ref, b, len) == 0;
}

static struct netmap_ring *make_ring(struct mock *m, size_t *off, uint16_t id, uint16_t dir, uint32_t *next_buf)
{
    struct netmap_ring *r = (struct netmap_ring *)(m->mem + *off);
    size_t ring_size = sizeof(struct netmap_ring) + NSLOTS * sizeof(struct netmap_slot);
    /* const fields: write through a plain pointer */
    size_t bufs_at = m->memsize - (size_t)NBUFS * BUFSZ;
    *(int64_t *)&r->buf_ofs = (int64_t)bufs_at - (int64_t)*off;
    *(uint32_t *)&r->num_slots = NSLOTS;
    *(uint32_t *)&r->nr_buf_size = BUFSZ;
    *(uint16_t *)&r->ringid = id;
    *(uint16_t *)&r->dir = dir;
    for (uint32_t i = 0; i < NSLOTS; i++) r->slot[i].buf_idx = (*next_buf)++;
    r->head = r->cur = 0;
    r->tail = dir == 0 ? NSLOTS - 1 : 0;
    *off += (ring_size + 127) & ~(size_t)127;
    return r;
}

static void mock_init(struct mock *m, uint32_t q)
{
    memset(m, 0, sizeof(*m));
    m->q = q;
    size_t ring_area = 2 * (NQ + 1) * (((sizeof(struct netmap_ring) + NSLOTS * sizeof(struct netmap_slot)) + 127) & ~(size_t)127);
    m->memsize = (4096 + ring_area + (size_t)NBUFS * BUFSZ + 4095) & ~(size_t)4095;
    m->mem = aligned_alloc(4096, m->memsize);
    memset(m->mem, 0xa5, m->memsize);
    m->nifp = (struct netmap_if *)(void *)m->mem;
    memset(m->nifp, 0, sizeof(*m->nifp) + 2 * (NQ + 1) * sizeof(ssize_t));
    snprintf(m->nifp->ni_name, sizeof(m->nifp->ni_name), "mock0");
    *(uint32_t *)&m->nifp->ni_tx_rings = NQ;
    *(uint32_t *)&m->nifp->ni_rx_rings = NQ;
    *(uint32_t *)&m->nifp->ni_host_tx_rings = 1;
    *(uint32_t *)&m->nifp->ni_host_rx_rings = 1;
    size_t off = 4096;
    uint32_t next_buf = 2;                 /* netmap reserves buffers 0 and 1 */
    ssize_t *ofs = (ssize_t *)m->nifp->ring_ofs;
    for (uint32_t i = 0; i < NQ + 1; i++) { ofs[i] = (ssize_t)off; m->tx[i] = make_ring(m, &off, (uint16_t)i, 0, &next_buf); }
    for (uint32_t i = 0; i < NQ + 1; i++) { ofs[NQ + 1 + i] = (ssize_t)off; m->rx[i] = make_ring(m, &off, (uint16_t)i, 1, &next_buf); }
    m->spare_buf = next_buf;
    CHECK(off <= m->memsize - (size_t)NBUFS * BUFSZ);
    CHECK(next_buf + 8 <= NBUFS);
}

/* the mock kernel: netmap's rules for one ring pair */
static int mock_sync(int fd, unsigned long req, void *arg)
{
    struct mock *m = arg;
    (void)fd;
    m->syncs++;
    if (req == NIOCTXSYNC) {
        struct netmap_ring *r = m->tx[m->q];
        if (r->head >= NSLOTS || r->cur >= NSLOTS) { errno = EINVAL; return -1; }
        /* transmit [hwcur, head) */
        for (uint32_t i = m->tx_hwcur; i != r->head; i = (i + 1) % NSLOTS) {
            struct netmap_slot *s = &r->slot[i];
            if (!check_frame((uint8_t *)NETMAP_BUF(r, s->buf_idx), s->len, m->tx_seen)) m->tx_bad++;
            m->tx_seen++;
            m->tx_pending_hw++;
        }
        m->tx_hwcur = r->head;
        /* complete some: tail advances toward hwcur - 1 */
        uint32_t done = m->tx_pending_hw;
        if (m->tx_complete_max && done > m->tx_complete_max) done = m->tx_complete_max;
        m->tx_pending_hw -= done;
        r->tail = (r->tail + done) % NSLOTS;
        return 0;
    }
    if (req == NIOCRXSYNC) {
        struct netmap_ring *r = m->rx[m->q];
        if (r->head >= NSLOTS) { errno = EINVAL; return -1; }
        m->rx_hwcur = r->head;                              /* reclaim released slots */
        while ((m->rx_hwtail + 1) % NSLOTS != m->rx_hwcur && m->inject_next < m->inject_end) {
            struct netmap_slot *s = &r->slot[m->rx_hwtail];
            if (m->swap_rx_bufs && (m->inject_next % 3) == 0) {   /* a zero-copy driver swapping buffers */
                uint32_t old = s->buf_idx;
                s->buf_idx = m->spare_buf;
                m->spare_buf = old;
            }
            fill_frame((uint8_t *)NETMAP_BUF(r, s->buf_idx), m->inject_next);
            s->len = (uint16_t)frame_len_for(m->inject_next);
            m->inject_next++;
            m->rx_hwtail = (m->rx_hwtail + 1) % NSLOTS;
        }
        r->tail = m->rx_hwtail;
        return 0;
    }
    errno = ENOTTY;
    return -1;
}

static void test_layout_and_queue(void)
{
    static struct mock m;
    char err[200];
    mock_init(&m, 1);
    /* the macros find the right rings (host rings sit between TX and RX) */
    CHECK(NETMAP_TXRING(m.nifp, 1) == m.tx[1]);
    CHECK(NETMAP_RXRING(m.nifp, 1) == m.rx[1]);
    CHECK(NETMAP_RXRING(m.nifp, 0) == m.rx[0]);
    CHECK_EQ(sizeof(struct nmreq_header), 88);
    CHECK_EQ(sizeof(struct netmap_slot), 16);
    CHECK_EQ(offsetof(struct netmap_ring, sem), 128);
    CHECK_EQ(offsetof(struct netmap_ring, slot), 256);
    mtcp_link *l = link_netmap_attach(-1, m.mem, m.memsize, 0, 1, mock_sync, &m, 0, err, sizeof(err));
    CHECK(l != NULL);
    if (!l) { fprintf(stderr, "%s\n", err); return; }
    CHECK_EQ(l->tx.num_slots, NSLOTS);
    CHECK_EQ(link_ring_space(&l->tx), NSLOTS - 1);
    CHECK(l->tx.slot[0].buf == (uint8_t *)NETMAP_BUF(m.tx[1], m.tx[1]->slot[0].buf_idx));
    mtcp_link_close(l);
    CHECK(link_netmap_attach(-1, m.mem, m.memsize, 0, 2, mock_sync, &m, 0, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "no queue 2") != NULL);
    *(uint32_t *)&m.tx[0]->num_slots = 48;
    CHECK(link_netmap_attach(-1, m.mem, m.memsize, 0, 0, mock_sync, &m, 0, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "powers of two") != NULL);
    free(m.mem);
    /* the real constructor explains what is missing */
    CHECK(mtcp_netmap_open("eth0", 0, 0, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "netmap") != NULL);
    fprintf(stderr, "    mtcp_netmap_open: %s\n", err);
}

static void test_tx_wrap_and_partial_completion(void)
{
    static struct mock m;
    char err[200];
    mock_init(&m, 0);
    mtcp_link *l = link_netmap_attach(-1, m.mem, m.memsize, 0, 0, mock_sync, &m, 0, err, sizeof(err));
    CHECK(l != NULL);
    m.tx_complete_max = 5;                   /* the "NIC" completes 5 frames per sync */
    uint32_t seq = 0, full_seen = 0;
    for (int round = 0; round < 400; round++) {
        uint32_t want = 1 + (uint32_t)(round * 7) % 23;
        for (uint32_t k = 0; k < want; k++) {
            struct link_ring *t = &l->tx;
            if (link_ring_space(t) == 0) { full_seen++; break; }
            struct link_slot *s = &t->slot[t->head];
            fill_frame(s->buf, seq);
            s->len = frame_len_for(seq++);
            t->head = t->cur = link_ring_next(t, t->head);
        }
        CHECK(link_txsync(l, 0) >= 0);
        /* the user's view agrees with the kernel's */
        CHECK_EQ(l->tx.tail, m.tx[0]->tail);
        CHECK_EQ(m.tx[0]->head, l->tx.head);
    }
    m.tx_complete_max = 0;
    link_txsync(l, 0);
    CHECK_EQ(link_ring_space(&l->tx), NSLOTS - 1);
    CHECK_EQ(m.tx_seen, seq);
    CHECK_EQ(m.tx_bad, 0);
    CHECK(full_seen > 0);                    /* the ring did fill and recover */
    CHECK(seq > 5 * NSLOTS);                 /* indices wrapped many times */
    mtcp_link_close(l);
    free(m.mem);
}

static void test_rx_wrap_release_and_swaps(void)
{
    static struct mock m;
    char err[200];
    mock_init(&m, 1);
    m.swap_rx_bufs = 1;
    mtcp_link *l = link_netmap_attach(-1, m.mem, m.memsize, 0, 1, mock_sync, &m, 0, err, sizeof(err));
    CHECK(l != NULL);
    m.inject_end = 5000;
    uint32_t expect = 0, bad = 0, max_held = 0;
    for (int round = 0; round < 2000 && expect < 5000; round++) {
        int n = link_rxsync(l, 0);
        CHECK(n >= 0);
        struct link_ring *r = &l->rx;
        uint32_t avail = (r->tail - r->head) & r->mask;
        if (avail > max_held) max_held = avail;
        CHECK(avail <= NSLOTS - 1);
        /* consume a varying part, keep the rest for later rounds */
        uint32_t take = round % 5 == 0 ? 0 : (avail + 1) / 2 + (uint32_t)(round % 3);
        if (take > avail) take = avail;
        for (uint32_t k = 0; k < take; k++) {
            struct link_slot *s = &r->slot[r->head];
            if (!check_frame(s->buf, s->len, expect)) bad++;
            expect++;
            r->head = r->cur = link_ring_next(r, r->head);
        }
    }
    CHECK_EQ(expect, 5000);
    CHECK_EQ(bad, 0);
    CHECK_EQ(max_held, NSLOTS - 1);          /* the ring filled completely (one slot reserved) */
    mtcp_link_close(l);
    free(m.mem);
}

int main(void)
{
    RUN(test_layout_and_queue);
    RUN(test_tx_wrap_and_partial_completion);
    RUN(test_rx_wrap_release_and_swaps);
    CTEST_END();
}
