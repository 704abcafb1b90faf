/*
 * packet.c — AF_PACKET backend: TPACKET_V2 RX ring + TX ring in one mmap (mtcp_packet_open).
 *
 * Bound to an existing interface by name (a veth end, a NIC), ETH_P_ALL, PACKET_QDISC_BYPASS
 * for TX, PACKET_IGNORE_OUTGOING so frames the kernel itself sends on the interface are not
 * seen. With nqueues > 1 the socket joins a PACKET_FANOUT_HASH group keyed by the ifindex
 * (one socket per queue/worker).
 *
 * RX (zero copy): TPACKET_V2, per-frame status: a frame is the user's (TP_STATUS_USER) as soon
 *   as the kernel has written it and the socket is woken for every frame, so a lone frame is
 *   handed over at once (TPACKET_V3 hands over whole blocks, and a block that does not fill
 *   waits for its retire timer: 1 ms per message in a ping-pong). PKT_RX_MEM of ring frames
 *   of an MTU-sized frame each (2 KiB at MTU 1500: bursts of thousands of small frames fit);
 *   rxsync maps ready frames into link RX slots (slot.buf points into the ring) and gives a
 *   frame back to the kernel (TP_STATUS_KERNEL) once the user releases its slot.
 *   Frames longer than a ring frame (GSO super-frames from a local veth peer, up to 64 KiB):
 *   PACKET_COPY_THRESH makes the kernel queue the whole skb on the socket and mark the
 *   (truncated) ring frame TP_STATUS_COPY; rxsync then recv()s it, in order, into one of
 *   PKT_RX_BIG_NR preallocated 64 KiB buffers (released with the slot, in order). A frame
 *   truncated without a copy (receive buffer full) is dropped and counted (rx_errors).
 *   With PACKET_VNET_HDR (the default; MTCP_LINK_NO_OFFLOAD turns it off) every frame is
 *   preceded by a struct virtio_net_hdr: NEEDS_CSUM -> LINK_SLOT_F_CSUM_PARTIAL with the
 *   kernel's csum_start/csum_offset, DATA_VALID -> LINK_SLOT_F_CSUM_VALID, a GSO skb (from a
 *   local veth peer) -> LINK_SLOT_F_GSO with its gso_size. Without it: TP_STATUS_CSUMNOTREADY
 *   -> CSUM_PARTIAL with csum_start = transport header (IPv4/IPv6 parsed), csum_offset 16 (TCP)
 *   / 6 (UDP); TP_STATUS_CSUM_VALID -> CSUM_VALID; frames longer than the MTU -> GSO, size 0.
 * TX (zero copy): TX slot i is TX ring frame i; txsync marks every released slot
 *   TP_STATUS_SEND_REQUEST and issues one sendto() for the batch; slots come back as the
 *   kernel hands frames back (TP_STATUS_AVAILABLE; WRONG_FORMAT counted as an error).
 *   A kick that fails (ENOBUFS: the device refused a frame, e.g. a full TAP/veth queue with
 *   PACKET_QDISC_BYPASS; EAGAIN) leaves that frame and every later one SEND_REQUEST, and the
 *   kernel looks at them only when kicked again: txsync then owes a kick, repeats it at every
 *   call (also when it queued nothing new) until one succeeds, and next_deadline reports
 *   PKT_KICK_RETRY_US after the last attempt so the engine comes back for it.
 *   With the vnet header TX takes partial checksums (LINK_FEAT_CSUM_TX: NEEDS_CSUM with the
 *   slot's csum_start/offset) and TSO super-frames (LINK_FEAT_TSO: a LINK_SLOT_F_GSO slot gets
 *   gso_type TCPV4/TCPV6, gso_size, hdr_len; the kernel segments in software where the device
 *   cannot): PKT_TX_FRAMES_TSO frames of 128 KiB then, instead of PKT_TX_FRAMES MTU-sized ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include "link.h"
#include "io_util.h"

#define PKT_RX_BLOCK_SIZE (1u << 17)      /* 128 KiB blocks of whole frames */
#define PKT_RX_MEM (8u << 20)             /* RX ring: 8 MiB (4096 frames of 2 KiB at MTU 1500) */
#define PKT_RX_BIG_NR 64u                 /* buffers for frames longer than a ring frame */
#define PKT_RX_BIG_SIZE (65536u + 256u)   /* vnet header + a 64 KiB GSO frame */
#define PKT_RX_BIG 0xffffffffu            /* rx_frame_of[]: the slot holds a big buffer */
#define PKT_RX_SLOTS 8192u                /* > ring frames + big buffers: the link ring never limits */
#define PKT_TX_FRAMES 1024u               /* MTU-sized TX frames (no vnet header: no TSO) */
#define PKT_TX_FRAMES_TSO 256u            /* TSO: 128 KiB frames (a 64 KiB super-frame + headers) */
#define PKT_TX_FRAME_TSO (1u << 17)
#define PKT_KICK_RETRY_US 100u           /* a refused TX kick is retried this much later */
#define PKT_TX_HDR TPACKET_ALIGN(sizeof(struct tpacket2_hdr))

struct pkt_link {
    struct mtcp_link l;
    int fd;
    uint8_t *map;
    size_t map_len;
    uint8_t *rx_base, *tx_base;
    uint32_t tx_frame_size, tx_frames;
    /* RX frame bookkeeping */
    uint32_t rx_next;                   /* next RX ring frame the kernel fills */
    uint32_t last_head;                 /* link RX slots before this were given back */
    uint32_t rx_frame_of[PKT_RX_SLOTS]; /* RX ring frame behind each link RX slot, or PKT_RX_BIG */
    uint32_t rx_frame_size, rx_ring_frames;
    uint8_t *big;                       /* PKT_RX_BIG_NR buffers of PKT_RX_BIG_SIZE */
    uint32_t big_next, bigs_out;        /* next big buffer to fill; in use (oldest first) */
    uint64_t rx_errors;
    /* TX */
    uint32_t tx_hwcur;                  /* first slot not yet submitted */
    uint32_t tx_done;                   /* first slot not yet completed */
    int kick_owed;                      /* the last sendto() did not take every frame */
    uint64_t tx_now;                    /* now_us of the last txsync */
    uint64_t tx_errors, rx_frames, tx_frames_sent, kernel_drops, kicks_refused;
    int vnet;                           /* PACKET_VNET_HDR on: a virtio_net_hdr precedes frames */
    char ifname[IFNAMSIZ];
};

static inline struct tpacket2_hdr *rx_frame(struct pkt_link *p, uint32_t i)
{
    /* frame size divides the block size (powers of two): frames are contiguous */
    return (struct tpacket2_hdr *)(p->rx_base + (size_t)i * p->rx_frame_size);
}
static inline struct tpacket2_hdr *tx_frame(struct pkt_link *p, uint32_t i)
{
    return (struct tpacket2_hdr *)(p->tx_base + (size_t)i * p->tx_frame_size);
}

static void csum_partial_from_headers(struct link_slot *s)
{
    const uint8_t *f = s->buf;
    uint32_t off = 12, len = s->len;
    uint16_t et = 0;
    while (off + 2 <= len) {
        et = (uint16_t)(f[off] << 8 | f[off + 1]);
        off += 2;
        if (et != 0x8100 && et != 0x88a8) break;
        off += 2;
    }
    uint32_t th = 0;
    uint8_t proto = 0;
    if (et == 0x0800 && off + 20 <= len) {
        th = off + (uint32_t)(f[off] & 15) * 4;
        proto = f[off + 9];
    } else if (et == 0x86dd && off + 40 <= len) {
        th = off + 40;
        proto = f[off + 6];
    }
    if (th && th < len && (proto == 6 || proto == 17)) {
        s->flags |= LINK_SLOT_F_CSUM_PARTIAL;
        s->csum_start = (uint16_t)th;
        s->csum_offset = proto == 6 ? 16 : 6;
    }
}

/* Frames of released RX slots back to the kernel. Also done by txsync (the engine releases its RX
 * slots before it transmits): a frame still held at the kernel's head - 1 keeps the socket
 * readable (packet_poll), which would wake the loop once more for nothing. */
static void pkt_rx_release(struct pkt_link *p)
{
    struct link_ring *r = &p->l.rx;
    for (uint32_t i = p->last_head; i != r->head; i = link_ring_next(r, i)) {
        if (p->rx_frame_of[i] == PKT_RX_BIG)
            p->bigs_out--;                          /* big buffers come back in order */
        else
            __atomic_store_n(&rx_frame(p, p->rx_frame_of[i])->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    }
    p->last_head = r->head;
}

static int pkt_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct pkt_link *p = (struct pkt_link *)l;
    struct link_ring *r = &l->rx;
    /* 1. frames of released slots back to the kernel */
    pkt_rx_release(p);
    /* 2. ready frames into slots, in ring order */
    int n = 0;
    while (link_ring_next(r, r->tail) != r->head) {
        struct tpacket2_hdr *h = rx_frame(p, p->rx_next);
        uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
        if (!(st & TP_STATUS_USER))
            break;
        if ((st & TP_STATUS_COPY) && p->bigs_out == PKT_RX_BIG_NR)
            break;                                  /* wait until the user releases a big buffer */
        uint32_t fi = p->rx_next;
        p->rx_next = p->rx_next + 1 == p->rx_ring_frames ? 0 : p->rx_next + 1;
        struct link_slot *s = &r->slot[r->tail];
        const uint8_t *vnet_at = NULL;
        if (st & TP_STATUS_COPY) {
            /* longer than a ring frame: the whole frame waits on the socket, in ring order */
            uint8_t *b = p->big + (size_t)p->big_next * PKT_RX_BIG_SIZE;
            ssize_t got = recv(p->fd, b, PKT_RX_BIG_SIZE, MSG_DONTWAIT | MSG_TRUNC);
            __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
            uint32_t vsz = p->vnet ? (uint32_t)sizeof(struct virtio_net_hdr) : 0;
            if (got <= (ssize_t)vsz || got > (ssize_t)PKT_RX_BIG_SIZE) {
                p->rx_errors++;
                continue;
            }
            s->buf = b + vsz;
            s->len = (uint32_t)got - vsz;
            vnet_at = p->vnet ? b : NULL;
            fi = PKT_RX_BIG;
            p->big_next = p->big_next + 1 == PKT_RX_BIG_NR ? 0 : p->big_next + 1;
            p->bigs_out++;
        } else if (h->tp_snaplen < h->tp_len) {
            p->rx_errors++;                         /* truncated and no copy (receive buffer full) */
            __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
            continue;
        } else {
            uint8_t *fp = (uint8_t *)h;
            s->buf = fp + h->tp_mac;
            s->len = h->tp_snaplen;
            if (p->vnet && h->tp_mac >= sizeof(struct virtio_net_hdr))
                vnet_at = fp + h->tp_mac - sizeof(struct virtio_net_hdr);
        }
        s->flags = 0;
        s->gso_size = 0;
        s->csum_start = s->csum_offset = 0;
        if (vnet_at) {
            struct virtio_net_hdr vh;
            memcpy(&vh, vnet_at, sizeof(vh));
            if (vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
                s->flags |= LINK_SLOT_F_CSUM_PARTIAL;
                s->csum_start = vh.csum_start;
                s->csum_offset = vh.csum_offset;
            }
            if (vh.flags & VIRTIO_NET_HDR_F_DATA_VALID)
                s->flags |= LINK_SLOT_F_CSUM_VALID;
            if ((vh.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) != VIRTIO_NET_HDR_GSO_NONE) {
                s->flags |= LINK_SLOT_F_GSO;
                s->gso_size = vh.gso_size;
            }
        } else {
            if (st & TP_STATUS_CSUMNOTREADY)
                csum_partial_from_headers(s);
            if (st & TP_STATUS_CSUM_VALID)
                s->flags |= LINK_SLOT_F_CSUM_VALID;
            if (s->len > l->mtu + 18)
                s->flags |= LINK_SLOT_F_GSO;
        }
        if (l->pcap)
            link_pcap_slot(l, s, now);
        p->rx_frame_of[r->tail] = fi;
        r->tail = link_ring_next(r, r->tail);
        n++;
    }
    p->rx_frames += (uint64_t)n;
    return n;
}

/* reclaim completed frames, in order */
static void pkt_tx_reclaim(struct pkt_link *p)
{
    struct link_ring *t = &p->l.tx;
    while (p->tx_done != p->tx_hwcur) {
        struct tpacket2_hdr *h = tx_frame(p, p->tx_done);
        uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
        if (st & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING))
            break;
        if (st & TP_STATUS_WRONG_FORMAT) {
            p->tx_errors++;
            __atomic_store_n(&h->tp_status, TP_STATUS_AVAILABLE, __ATOMIC_RELEASE);
        }
        p->tx_done = link_ring_next(t, p->tx_done);
    }
}

/* The oldest outstanding frame still waits for the kernel to take it (not yet SENDING). */
static int pkt_tx_oldest_waiting(struct pkt_link *p)
{
    if (p->tx_done == p->tx_hwcur)
        return 0;
    uint32_t st = __atomic_load_n(&tx_frame(p, p->tx_done)->tp_status, __ATOMIC_ACQUIRE);
    return (st & TP_STATUS_SEND_REQUEST) != 0;
}

static int pkt_txsync(struct mtcp_link *l, uint64_t now)
{
    struct pkt_link *p = (struct pkt_link *)l;
    struct link_ring *t = &l->tx;
    int n = 0;
    pkt_rx_release(p);
    for (uint32_t i = p->tx_hwcur; i != t->head; i = link_ring_next(t, i)) {
        struct tpacket2_hdr *h = tx_frame(p, i);
        struct link_slot *s = &t->slot[i];
        if (l->pcap)
            link_pcap_slot(l, s, now);
        uint32_t len = s->len;
        if (p->vnet) {
            struct virtio_net_hdr vh;
            memset(&vh, 0, sizeof(vh));
            if (s->flags & LINK_SLOT_F_CSUM_PARTIAL) {
                vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
                vh.csum_start = s->csum_start;
                vh.csum_offset = s->csum_offset;
                if ((s->flags & LINK_SLOT_F_GSO) && s->gso_size) {
                    /* TSO super-frame (the engine marks it only with CSUM_PARTIAL) */
                    uint32_t off = 12;
                    uint16_t et = 0;
                    while (off + 2 <= s->len) {
                        et = (uint16_t)(s->buf[off] << 8 | s->buf[off + 1]);
                        if (et != 0x8100 && et != 0x88a8) break;
                        off += 4;
                    }
                    uint32_t th = s->csum_start;
                    uint32_t doff = th + 12 < s->len ? (uint32_t)(s->buf[th + 12] >> 4) * 4 : 20;
                    vh.gso_type = et == 0x86dd ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
                    vh.gso_size = s->gso_size;
                    vh.hdr_len = (uint16_t)(th + doff);
                }
            }
            memcpy(s->buf - sizeof(vh), &vh, sizeof(vh));
            len += (uint32_t)sizeof(vh);
        }
        h->tp_len = len;
        h->tp_snaplen = len;
        __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
        n++;
    }
    p->tx_hwcur = t->head;
    p->tx_now = now;
    p->tx_frames_sent += (uint64_t)n;
    pkt_tx_reclaim(p);
    /* Kick for new frames, and again while frames the kernel refused wait: after ENOBUFS the
     * kernel leaves the refused frame and the rest SEND_REQUEST and will not look at them until
     * the next sendto(), which the engine would never issue once the ring is full. */
    if (n || p->kick_owed || pkt_tx_oldest_waiting(p)) {
        if (sendto(p->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0) {
            if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
                p->tx_errors++;
            else
                p->kicks_refused++;
            p->kick_owed = 1;
        } else {
            p->kick_owed = 0;
        }
        pkt_tx_reclaim(p);
    }
    if (p->tx_done == p->tx_hwcur)
        p->kick_owed = 0;               /* nothing left: a later failure is for later frames */
    t->tail = (p->tx_done + t->mask) & t->mask;
    return n;
}

static int pkt_fd(struct mtcp_link *l) { return ((struct pkt_link *)l)->fd; }
static int64_t pkt_next_deadline(struct mtcp_link *l)
{
    /* TX frames still in flight complete without a wakeup on the fd: look again soon; frames
     * the kernel refused (a kick is owed) are retried PKT_KICK_RETRY_US after the last try */
    struct pkt_link *p = (struct pkt_link *)l;
    if (p->tx_done == p->tx_hwcur)
        return -1;
    return p->kick_owed ? (int64_t)(p->tx_now + PKT_KICK_RETRY_US) : 0;
}

static void pkt_destroy(struct mtcp_link *l)
{
    struct pkt_link *p = (struct pkt_link *)l;
    if (p->map)
        munmap(p->map, p->map_len);
    if (p->fd >= 0)
        close(p->fd);
    link_rings_free(l);
    free(p->big);
    free(p);
}

static void pkt_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct pkt_link *p = (struct pkt_link *)l;
    struct tpacket_stats st;
    socklen_t sl = sizeof(st);
    /* PACKET_STATISTICS resets the kernel's counters on read: accumulate */
    if (getsockopt(p->fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0)
        p->kernel_drops += st.tp_drops;
    o->rx_frames = p->rx_frames;
    o->tx_frames = p->tx_frames_sent;
    o->rx_dropped = p->kernel_drops;
    o->rx_errors = p->rx_errors;
    o->tx_errors = p->tx_errors;
    o->tx_kicks_refused = p->kicks_refused;
}

static const struct link_ops pkt_ops = {
    .name = "packet",
    .rxsync = pkt_rxsync,
    .txsync = pkt_txsync,
    .fd = pkt_fd,
    .next_deadline = pkt_next_deadline,
    .claim_port = NULL,
    .release_port = NULL,
    .destroy = pkt_destroy,
    .stats = pkt_stats,
};

static uint32_t sock_if_mtu(int fd, const char *ifname)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(fd, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu >= 68)
        return (uint32_t)ifr.ifr_mtu;
    return 1500;
}

mtcp_link *mtcp_packet_open(const char *ifname, uint32_t queue, uint32_t nqueues, uint32_t flags,
                            char *err, size_t errlen)
{
    char msg[200];
    if (!ifname || !*ifname || strlen(ifname) >= IFNAMSIZ) {
        io_errf(err, errlen, "packet: an interface name (max 15 characters) is required");
        return NULL;
    }
    if (nqueues == 0)
        nqueues = 1;
    if (queue >= nqueues) {
        io_errf(err, errlen, "packet: queue must be < nqueues");
        return NULL;
    }
    unsigned ifindex = if_nametoindex(ifname);
    if (!ifindex) {
        snprintf(msg, sizeof(msg), "packet: no interface %s in this network namespace", ifname);
        io_errf(err, errlen, msg);
        return NULL;
    }
    struct pkt_link *p = calloc(1, sizeof(*p));
    if (!p) {
        io_errf(err, errlen, "packet: out of memory");
        return NULL;
    }
    p->fd = -1;
    const char *step = "socket(AF_PACKET)";
    /* protocol 0: no receive hook until bind() (a socket made with ETH_P_ALL copies every frame of
     * every interface until then, and a fanout member would hold other members' frames; steer.c) */
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    p->fd = fd;
    uint32_t mtu = sock_if_mtu(fd, ifname);
    int v = TPACKET_V2, one = 1;
    step = "PACKET_VERSION";
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0)
        goto fail;
    if (!(flags & MTCP_LINK_NO_OFFLOAD))      /* before the rings; optional */
        p->vnet = setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) == 0;
    step = "PACKET_QDISC_BYPASS";
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0)
        goto fail;
    (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
    /* RX ring frames hold an MTU-sized frame; longer ones come through the socket (COPY_THRESH)
     * into big buffers, so the receive buffer must hold PKT_RX_BIG_NR of them */
    uint32_t rfs = io_pow2_roundup(mtu + 18 + 128);
    if (rfs < 2048) rfs = 2048;
    if (rfs > PKT_RX_BLOCK_SIZE) rfs = PKT_RX_BLOCK_SIZE;
    struct tpacket_req rx = {
        .tp_block_size = PKT_RX_BLOCK_SIZE, .tp_block_nr = PKT_RX_MEM / PKT_RX_BLOCK_SIZE,
        .tp_frame_size = rfs, .tp_frame_nr = PKT_RX_MEM / rfs,
    };
    step = "PACKET_COPY_THRESH";
    if (setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one)) < 0)
        goto fail;
    int rcvbuf = (int)(PKT_RX_BIG_NR * 2 * PKT_RX_BIG_SIZE);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    step = "big RX buffers";
    errno = ENOMEM;
    p->big = malloc((size_t)PKT_RX_BIG_NR * PKT_RX_BIG_SIZE);
    if (!p->big)
        goto fail;
    p->rx_frame_size = rfs;
    p->rx_ring_frames = rx.tp_frame_nr;
    step = "PACKET_RX_RING";
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &rx, sizeof(rx)) < 0)
        goto fail;
    /* With the vnet header, TX takes TSO super-frames (gso_type/gso_size; the kernel segments
     * them in software if the device cannot): frames hold 64 KiB, fewer of them */
    uint32_t fs = io_pow2_roundup(mtu + 18 + (uint32_t)PKT_TX_HDR + (uint32_t)sizeof(struct virtio_net_hdr));
    if (fs < 2048) fs = 2048;
    uint32_t txn = PKT_TX_FRAMES;
    if (p->vnet && fs < PKT_TX_FRAME_TSO) {
        fs = PKT_TX_FRAME_TSO;
        txn = PKT_TX_FRAMES_TSO;
    }
    uint32_t bs = fs > 65536 ? fs : 65536;
    struct tpacket_req tx = {
        .tp_block_size = bs, .tp_block_nr = txn * fs / bs,
        .tp_frame_size = fs, .tp_frame_nr = txn,
    };
    step = "PACKET_TX_RING";
    if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &tx, sizeof(tx)) < 0)
        goto fail;
    p->map_len = (size_t)rx.tp_block_size * rx.tp_block_nr + (size_t)tx.tp_block_size * tx.tp_block_nr;
    step = "mmap";
    void *m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED)
        m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        goto fail;
    p->map = m;
    p->rx_base = p->map;
    p->tx_base = p->map + (size_t)rx.tp_block_size * rx.tp_block_nr;
    p->tx_frame_size = fs;
    p->tx_frames = txn;
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                               .sll_ifindex = (int)ifindex };
    step = "bind";
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        goto fail;
    if (nqueues > 1) {
        uint32_t mode = flags & MTCP_PACKET_FANOUT_CBPF ? PACKET_FANOUT_CBPF : PACKET_FANOUT_HASH; /* steer.c */
        int fan = (int)((ifindex & 0xffff) | (mode << 16));
        step = "PACKET_FANOUT";
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &fan, sizeof(fan)) < 0)
            goto fail;
    }
    step = "ring allocation";
    errno = ENOMEM;
    if (link_rings_alloc(&p->l, PKT_RX_SLOTS, txn, 0) != 0)
        goto fail;
    for (uint32_t i = 0; i < p->l.tx.num_slots; i++)
        p->l.tx.slot[i].buf = (uint8_t *)tx_frame(p, i) + PKT_TX_HDR + (p->vnet ? sizeof(struct virtio_net_hdr) : 0);
    p->l.tx.buf_size = fs - (uint32_t)PKT_TX_HDR - (p->vnet ? (uint32_t)sizeof(struct virtio_net_hdr) : 0);
    p->l.rx.buf_size = PKT_RX_BIG_SIZE;
    p->l.ops = &pkt_ops;
    p->l.link_type = MTCP_LINK_ETHERNET;
    p->l.mtu = mtu;
    p->l.features = LINK_FEAT_RX_GRO | (p->vnet ? LINK_FEAT_CSUM_TX | LINK_FEAT_TSO : 0);
    snprintf(p->ifname, IFNAMSIZ, "%s", ifname);
    return &p->l;
fail:
    snprintf(msg, sizeof(msg), "packet: %s on %s: %s%s", step, ifname, strerror(errno),
             errno == EPERM ? " (needs CAP_NET_RAW)" : "");
    io_errf(err, errlen, msg);
    if (p->map) munmap(p->map, p->map_len);
    if (p->fd >= 0) close(p->fd);
    free(p->big);
    free(p);
    return NULL;
}
