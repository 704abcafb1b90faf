/*
 * sim.c — two in-memory Ethernet links joined back to back (mtcp_simlink_pair).
 *
 * Single thread, deterministic: txsync() on one side copies every frame the user released
 * since the previous txsync into the peer's RX ring (behind the peer's published tail, in
 * the slots the peer gave back at its last rxsync or later); the peer's next rxsync()
 * publishes them. A frame that does not fit (peer RX ring full, frame longer than a buffer,
 * peer closed) is dropped and counted. TX completes at once: after txsync every slot but one
 * is free again.
 *
 * fd: none until asked for (a pure single-thread simulation needs no syscall); the first
 * mtcp_link_fd() creates an eventfd, written on the "no frame pending -> frames pending"
 * transition and drained by rxsync, so two engines on one asyncio loop can wake each other.
 *
 * The slot's flags, gso_size, csum_start/csum_offset travel with the frame.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "link.h"
#include "io_util.h"

struct sim_link {
    struct mtcp_link l;
    struct sim_link *peer;
    uint32_t rx_hwtail;       /* next RX slot the peer writes into (published at rxsync) */
    uint32_t tx_hwcur;        /* first TX slot not yet transmitted */
    int efd;                  /* -1 until mtcp_link_fd() asks for it */
    int efd_signaled;
    uint64_t tx_frames, rx_frames, drops;
};

static int sim_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct sim_link *s = (struct sim_link *)l;
    struct link_ring *r = &l->rx;
    uint32_t i = r->tail, n = 0;
    r->tail = s->rx_hwtail;
    for (; i != r->tail; i = link_ring_next(r, i), n++)
        if (l->pcap)
            link_pcap_slot(l, &r->slot[i], now);
    s->rx_frames += n;
    if (s->efd_signaled) {
        uint64_t v;
        if (read(s->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            return -errno;
        s->efd_signaled = 0;
    }
    return (int)n;
}

static int sim_txsync(struct mtcp_link *l, uint64_t now)
{
    struct sim_link *s = (struct sim_link *)l;
    struct link_ring *t = &l->tx;
    struct sim_link *p = s->peer;
    uint32_t sent = 0;
    for (uint32_t i = s->tx_hwcur; i != t->head; i = link_ring_next(t, i)) {
        struct link_slot *src = &t->slot[i];
        if (l->pcap)
            link_pcap_slot(l, src, now);
        s->tx_frames++;
        if (!p) { s->drops++; continue; }
        struct link_ring *r = &p->l.rx;
        uint32_t next = link_ring_next(r, p->rx_hwtail);
        if (next == r->head || src->len > r->buf_size) { p->drops++; continue; }
        struct link_slot *dst = &r->slot[p->rx_hwtail];
        memcpy(dst->buf, src->buf, src->len);
        dst->len = src->len;
        dst->flags = src->flags;
        dst->gso_size = src->gso_size;
        dst->csum_start = src->csum_start;
        dst->csum_offset = src->csum_offset;
        p->rx_hwtail = next;
        sent++;
    }
    s->tx_hwcur = t->head;
    t->tail = (t->head + t->mask) & t->mask;
    if (sent && p && p->efd >= 0 && !p->efd_signaled) {
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof(one)) == sizeof(one))
            p->efd_signaled = 1;
    }
    return (int)sent;
}

static int sim_fd(struct mtcp_link *l)
{
    struct sim_link *s = (struct sim_link *)l;
    if (s->efd < 0) {
        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->efd >= 0 && s->rx_hwtail != l->rx.tail) {   /* frames already waiting */
            uint64_t one = 1;
            if (write(s->efd, &one, sizeof(one)) == sizeof(one))
                s->efd_signaled = 1;
        }
    }
    return s->efd;
}

static int64_t sim_next_deadline(struct mtcp_link *l)
{
    (void)l;
    return -1;
}

static void sim_destroy(struct mtcp_link *l)
{
    struct sim_link *s = (struct sim_link *)l;
    if (s->peer)
        s->peer->peer = NULL;
    if (s->efd >= 0)
        close(s->efd);
    link_rings_free(l);
    free(s);
}

static void sim_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct sim_link *s = (struct sim_link *)l;
    o->rx_frames = s->rx_frames;
    o->tx_frames = s->tx_frames;
    o->rx_dropped = s->drops;
}

static const struct link_ops sim_ops = {
    .name = "sim",
    .rxsync = sim_rxsync,
    .txsync = sim_txsync,
    .fd = sim_fd,
    .next_deadline = sim_next_deadline,
    .claim_port = NULL,
    .release_port = NULL,
    .destroy = sim_destroy,
    .stats = sim_stats,
};

static struct sim_link *sim_new(uint32_t slots, uint32_t mtu)
{
    struct sim_link *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    /* Ethernet header + IP MTU, room for a VLAN tag */
    if (link_rings_alloc(&s->l, slots, slots, mtu + 18) != 0) {
        free(s);
        return NULL;
    }
    s->l.ops = &sim_ops;
    s->l.link_type = MTCP_LINK_ETHERNET;
    s->l.mtu = mtu;
    s->l.features = 0;
    s->efd = -1;
    return s;
}

int mtcp_simlink_pair(uint32_t slots, uint32_t mtu, mtcp_link **a, mtcp_link **b)
{
    if (!a || !b)
        return -EINVAL;
    if (slots == 0)
        slots = 1024;
    if (mtu == 0)
        mtu = 1500;
    if (mtu < 68 || mtu > 65535 || slots > (1u << 20))
        return -EINVAL;
    struct sim_link *x = sim_new(slots, mtu), *y = sim_new(slots, mtu);
    if (!x || !y) {
        if (x) sim_destroy(&x->l);
        if (y) sim_destroy(&y->l);
        return -ENOMEM;
    }
    x->peer = y;
    y->peer = x;
    *a = &x->l;
    *b = &y->l;
    return 0;
}

/* Frames dropped on arrival at this side (RX ring full / too long) — for tests. */
uint64_t link_sim_drops(struct mtcp_link *l)
{
    return l && l->ops == &sim_ops ? ((struct sim_link *)l)->drops : 0;
}
