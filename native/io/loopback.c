/*
 * loopback.c — the process-wide in-process loopback switch (link type MTCP_LINK_IP).
 *
 * Every attachment (one per engine/loop) owns 127.0.0.0/8 and ::1. A port table maps
 * (family, port) to the attachment that claimed it (a listener or an ephemeral port of an
 * active open); txsync parses just enough of the IPv4/IPv6 + TCP header to find the
 * destination port and copies the frame into the owner's RX ring, or back into the sender's
 * own ring when nobody owns the port (or the frame is not TCP): the sender's engine then
 * answers it (RST for TCP, echo reply for ICMP).
 *
 * Threads: engines of loops in different threads talk through the switch.
 *   - the port table is guarded by a rwlock: claim/release/close take it for writing,
 *     txsync holds it for reading during the whole batch, which also keeps every destination
 *     alive while frames are copied into it (close needs the write lock);
 *   - each attachment's RX ring has a mutex. Senders write slots in [hwtail, hwhead-1) under
 *     it; the owner's rxsync publishes tail = hwtail and takes back the slots the user
 *     released (hwhead = head) under it. The user reads [head, tail) without locks.
 *   - lock order: table (read) -> destination RX mutex. One RX-mutex acquisition per
 *     destination per txsync: frames are first routed, then delivered grouped by destination.
 *   - each attachment has an eventfd (mtcp_link_fd), written by another thread's txsync on the
 *     "not signalled -> signalled" transition and drained by rxsync. Frames an engine sends to
 *     itself need no syscall: they make next_deadline() return 0 (due now) instead.
 * A long frame an attachment sends to itself changes buffers with the free RX slot (no copy;
 * slot buffers are not fixed to a slot). Frames are delivered with LINK_SLOT_F_CSUM_VALID (a partial checksum stays marked PARTIAL,
 * so a wrapper that corrupts a frame can still finish the checksum first).
 *
 * Isolated attachments (mtcp_loopback_open_isolated, virtual time): the port table is the
 * attachment's own (allocated at open, touched by the owner thread only) and every frame goes
 * back to the sender, so nothing another loop in the process does changes what this engine
 * sees or which ports it gets.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "link.h"
#include "io_util.h"

#define LO_BUF_SIZE 65536u
#define LO_MTU 65535u
#define LO_DEFAULT_SLOTS 1024u

struct lo_port {
    struct lo_att *owner;
    uint32_t nlisten, nconn;
};

struct lo_att {
    struct mtcp_link l;
    pthread_mutex_t rxmu;
    uint32_t hwtail;          /* next RX slot a sender writes (guarded by rxmu) */
    uint32_t hwhead;          /* RX head as of the last rxsync (guarded by rxmu) */
    int efd;
    int efd_signaled;         /* guarded by rxmu */
    int self_pending;         /* owner thread only: frames to itself await rxsync */
    uint32_t tx_hwcur;
    struct lo_att **route;    /* per TX slot: destination chosen in pass 1 of txsync */
    uint64_t drops;           /* frames that found the destination ring full (guarded by rxmu) */
    uint64_t tx_frames, rx_frames;
    struct lo_port (*own_ports)[65536];   /* isolated: this attachment's table, else NULL */
};

/* The switch is process-wide by definition: its state is this one static table. */
/* Writers (claim/release/close) must not starve behind the txsyncs of busy loops. */
#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
static pthread_rwlock_t lo_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#else
static pthread_rwlock_t lo_lock = PTHREAD_RWLOCK_INITIALIZER;
#endif
static struct lo_port lo_ports[2][65536];

static int lo_fam(int family)
{
    if (family == MTCP_AF_INET || family == 2 /* AF_INET */)
        return 0;
    if (family == MTCP_AF_INET6 || family == 10 /* AF_INET6 */)
        return 1;
    return -1;
}

/* Destination port of a TCP segment in an IPv4/IPv6 packet, or -1. *fam gets 0/1. */
static int lo_dport(const uint8_t *p, uint32_t len, int *fam)
{
    if (len < 1)
        return -1;
    uint8_t v = p[0] >> 4;
    if (v == 4) {
        uint32_t ihl = (uint32_t)(p[0] & 15) * 4;
        if (ihl < 20 || len < ihl + 4 || p[9] != 6)
            return -1;
        if (((p[6] << 8 | p[7]) & 0x1fff) != 0)     /* non-first fragment: no TCP header */
            return -1;
        *fam = 0;
        return p[ihl + 2] << 8 | p[ihl + 3];
    }
    if (v == 6) {
        if (len < 44 || p[6] != 6)
            return -1;
        *fam = 1;
        return p[42] << 8 | p[43];
    }
    return -1;
}

/* Frames to oneself at least this long change buffers with the free RX slot instead of being
 * copied (both buffers belong to the same attachment's ring block). */
#define LO_SWAP_MIN 512u

/* Put one frame into a's RX ring. Caller holds a->rxmu. 0 or -1 (full / too long). own: src is
 * a TX slot of a itself (a frame to oneself): a long frame's buffer is swapped, not copied. */
static int lo_put(struct lo_att *a, struct link_slot *src, int own)
{
    struct link_ring *r = &a->l.rx;
    uint32_t next = link_ring_next(r, a->hwtail);
    if (next == a->hwhead || src->len > r->buf_size) {
        a->drops++;
        return -1;
    }
    struct link_slot *d = &r->slot[a->hwtail];
    if (own && src->len >= LO_SWAP_MIN) {
        uint8_t *b = d->buf;
        d->buf = src->buf;
        src->buf = b;
    } else {
        memcpy(d->buf, src->buf, src->len);
    }
    d->len = src->len;
    /* Pass the sender's checksum state through: frames from an engine carry CSUM_PARTIAL
     * (in-process offload, trusted like Linux's CHECKSUM_PARTIAL); a frame whose checksum was
     * finalized and then altered (the impairment wrapper's corrupt) carries neither flag, so the
     * receiving engine verifies it and drops it as bad-checksum. */
    d->flags = (uint16_t)(src->flags & (LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID));
    d->gso_size = 0;
    d->csum_start = src->csum_start;
    d->csum_offset = src->csum_offset;
    a->hwtail = next;
    return 0;
}

static int lo_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct lo_att *a = (struct lo_att *)l;
    struct link_ring *r = &l->rx;
    uint32_t old = r->tail;
    pthread_mutex_lock(&a->rxmu);
    link_ring_recycle(r, a->hwhead, r->head, a->hwtail);
    a->hwhead = r->head;
    r->tail = a->hwtail;
    if (a->efd_signaled) {
        /* Drained under the mutex so that "eventfd readable" == efd_signaled always holds:
         * a sender that delivers after this unlock sees 0 and writes again. */
        uint64_t v;
        (void)!read(a->efd, &v, sizeof(v));
        a->efd_signaled = 0;
    }
    pthread_mutex_unlock(&a->rxmu);
    a->self_pending = 0;
    uint32_t n = 0;
    for (uint32_t i = old; i != r->tail; i = link_ring_next(r, i), n++)
        if (l->pcap)
            link_pcap_slot(l, &r->slot[i], now);
    a->rx_frames += n;
    return (int)n;
}

static int lo_txsync(struct mtcp_link *l, uint64_t now)
{
    struct lo_att *a = (struct lo_att *)l;
    struct link_ring *t = &l->tx;
    uint32_t first = a->tx_hwcur, end = t->head;
    if (first == end)
        return 0;
    int sent = 0;
    int shared = a->own_ports == NULL;
    if (shared)
        pthread_rwlock_rdlock(&lo_lock);
    /* pass 1: route every frame */
    for (uint32_t i = first; i != end; i = link_ring_next(t, i)) {
        struct link_slot *s = &t->slot[i];
        struct lo_att *d = NULL;
        if (shared) {
            int fam = 0, port = lo_dport(s->buf, s->len, &fam);
            d = port >= 0 ? lo_ports[fam][port].owner : NULL;
        }
        a->route[i] = d ? d : a;
        if (l->pcap)
            link_pcap_slot(l, s, now);
        a->tx_frames++;
    }
    /* pass 2: one lock per destination, frames in order */
    for (uint32_t i = first; i != end; i = link_ring_next(t, i)) {
        struct lo_att *d = a->route[i];
        if (!d)
            continue;                      /* already delivered with an earlier group */
        pthread_mutex_lock(&d->rxmu);
        int got = 0;
        for (uint32_t j = i; j != end; j = link_ring_next(t, j)) {
            if (a->route[j] != d)
                continue;
            a->route[j] = NULL;
            if (lo_put(d, &t->slot[j], d == a) == 0)
                got++;
        }
        if (got && d != a && !d->efd_signaled) {
            uint64_t one = 1;
            if (write(d->efd, &one, sizeof(one)) == sizeof(one))
                d->efd_signaled = 1;
        }
        pthread_mutex_unlock(&d->rxmu);
        if (d == a && got)
            a->self_pending = 1;
        sent += got;
    }
    if (shared)
        pthread_rwlock_unlock(&lo_lock);
    link_ring_recycle(t, first, end, end);
    a->tx_hwcur = end;
    t->tail = (end + t->mask) & t->mask;
    return sent;
}

static int lo_fd(struct mtcp_link *l) { return ((struct lo_att *)l)->efd; }

static int64_t lo_next_deadline(struct mtcp_link *l)
{
    return ((struct lo_att *)l)->self_pending ? 0 : -1;
}

static int lo_claim(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    int f = lo_fam(family);
    if (f < 0 || port == 0)
        return -EINVAL;
    struct lo_att *a = (struct lo_att *)l;
    int rc = 0;
    if (a->own_ports) {                     /* isolated: owner thread only, no lock */
        struct lo_port *p = &a->own_ports[f][port];
        p->owner = a;
        if (listener) p->nlisten++; else p->nconn++;
        return 0;
    }
    pthread_rwlock_wrlock(&lo_lock);
    struct lo_port *p = &lo_ports[f][port];
    if (p->owner && p->owner != a) {
        rc = -EADDRINUSE;
    } else {
        p->owner = a;
        if (listener) p->nlisten++; else p->nconn++;
    }
    pthread_rwlock_unlock(&lo_lock);
    return rc;
}

static void lo_release(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    int f = lo_fam(family);
    if (f < 0)
        return;
    struct lo_att *a = (struct lo_att *)l;
    int shared = a->own_ports == NULL;
    if (shared)
        pthread_rwlock_wrlock(&lo_lock);
    struct lo_port *p = shared ? &lo_ports[f][port] : &a->own_ports[f][port];
    if (p->owner == a) {
        if (listener) { if (p->nlisten) p->nlisten--; }
        else { if (p->nconn) p->nconn--; }
        if (!p->nlisten && !p->nconn)
            p->owner = NULL;
    }
    if (shared)
        pthread_rwlock_unlock(&lo_lock);
}

static void lo_destroy(struct mtcp_link *l)
{
    struct lo_att *a = (struct lo_att *)l;
    if (!a->own_ports) {
        pthread_rwlock_wrlock(&lo_lock);
        for (int f = 0; f < 2; f++)
            for (uint32_t p = 0; p < 65536; p++)
                if (lo_ports[f][p].owner == a)
                    memset(&lo_ports[f][p], 0, sizeof(lo_ports[f][p]));
        pthread_rwlock_unlock(&lo_lock);
    }
    free(a->own_ports);
    /* no sender can reach us now: they route under the read lock */
    pthread_mutex_destroy(&a->rxmu);
    if (a->efd >= 0)
        close(a->efd);
    free(a->route);
    link_rings_free(l);
    free(a);
}

static void lo_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct lo_att *a = (struct lo_att *)l;
    o->rx_frames = a->rx_frames;
    o->tx_frames = a->tx_frames;
    pthread_mutex_lock(&a->rxmu);
    o->rx_dropped = a->drops;
    pthread_mutex_unlock(&a->rxmu);
}

static const struct link_ops lo_ops = {
    .name = "loopback",
    .rxsync = lo_rxsync,
    .txsync = lo_txsync,
    .fd = lo_fd,
    .next_deadline = lo_next_deadline,
    .claim_port = lo_claim,
    .release_port = lo_release,
    .destroy = lo_destroy,
    .stats = lo_stats,
};

mtcp_link *mtcp_loopback_open(uint32_t slots, char *err, size_t errlen)
{
    if (slots == 0)
        slots = LO_DEFAULT_SLOTS;
    if (slots > (1u << 16)) {
        io_errf(err, errlen, "loopback: slots must be <= 65536");
        return NULL;
    }
    struct lo_att *a = calloc(1, sizeof(*a));
    if (!a) {
        io_errf(err, errlen, "loopback: out of memory");
        return NULL;
    }
    if (link_rings_alloc(&a->l, slots, slots, LO_BUF_SIZE) != 0) {
        free(a);
        io_errf(err, errlen, "loopback: cannot allocate rings");
        return NULL;
    }
    a->route = calloc(a->l.tx.num_slots, sizeof(*a->route));
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!a->route || a->efd < 0) {
        io_errf(err, errlen, a->route ? "loopback: eventfd failed" : "loopback: out of memory");
        if (a->efd >= 0) close(a->efd);
        free(a->route);
        link_rings_free(&a->l);
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->rxmu, NULL);
    a->l.ops = &lo_ops;
    a->l.link_type = MTCP_LINK_IP;
    a->l.mtu = LO_MTU;
    a->l.features = LINK_FEAT_CSUM_TX;
    return &a->l;
}

mtcp_link *mtcp_loopback_open_isolated(uint32_t slots, char *err, size_t errlen)
{
    struct lo_port (*own)[65536] = calloc(2, sizeof(*own));
    if (!own) {
        io_errf(err, errlen, "loopback: out of memory");
        return NULL;
    }
    mtcp_link *l = mtcp_loopback_open(slots, err, errlen);
    if (!l) {
        free(own);
        return NULL;
    }
    ((struct lo_att *)l)->own_ports = own;
    return l;
}

int mtcp_loopback_has_listener(int family, uint16_t port)
{
    int f = lo_fam(family);
    if (f < 0)
        return 0;
    pthread_rwlock_rdlock(&lo_lock);
    int r = lo_ports[f][port].owner != NULL && lo_ports[f][port].nlisten > 0;
    pthread_rwlock_unlock(&lo_lock);
    return r;
}

/* Frames dropped because this attachment's RX ring was full (tests/diagnostics). */
uint64_t link_loopback_drops(struct mtcp_link *l)
{
    if (!l || l->ops != &lo_ops)
        return 0;
    struct lo_att *a = (struct lo_att *)l;
    pthread_mutex_lock(&a->rxmu);
    uint64_t d = a->drops;
    pthread_mutex_unlock(&a->rxmu);
    return d;
}
