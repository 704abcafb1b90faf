/*
 * tap.c — multi-queue TAP backend with virtio-net headers (mtcp_tap_open).
 *
 * The device is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (| IFF_MULTI_QUEUE when more
 * than one queue is asked for or the device already is multi-queue); every open attaches one
 * queue (the kernel numbers queues in attach order). With offloads on (the default),
 * TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) lets the kernel hand us 64 KiB TSO
 * super-frames and partial checksums and take ours:
 *   RX: each read() gets struct virtio_net_hdr + one frame (readv straight into the slot).
 *       VIRTIO_NET_HDR_F_NEEDS_CSUM -> LINK_SLOT_F_CSUM_PARTIAL + csum_start/csum_offset;
 *       VIRTIO_NET_HDR_F_DATA_VALID -> LINK_SLOT_F_CSUM_VALID; gso_type != NONE ->
 *       LINK_SLOT_F_GSO + gso_size (a coalesced super-frame).
 *   TX: writev(vnet hdr, frame). LINK_SLOT_F_CSUM_PARTIAL -> NEEDS_CSUM; LINK_SLOT_F_GSO ->
 *       gso_type TCPV4/TCPV6 by ethertype, gso_size, hdr_len (must come with CSUM_PARTIAL).
 * A tun fd has no batch read/write: this backend costs one syscall per frame (TSO keeps the
 * frame count low); rxsync reads until the ring is full or EAGAIN. A write refused with
 * EAGAIN/ENOBUFS keeps that frame and the rest for the next txsync; while they wait,
 * next_deadline reports TAP_TX_RETRY_US after the last attempt (the fd does not signal
 * writability to the engine, so without it they would wait for unrelated traffic).
 * The fd (mtcp_link_fd) is the tap queue fd itself: readable when frames wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include "link.h"
#include "io_util.h"

#define TAP_BUF_SIZE (65536u + 64u)   /* a 64 KiB super-frame + Ethernet/VLAN header */
#define TAP_TX_RETRY_US 100u          /* frames refused by a write are retried this much later */

struct tap_link {
    struct mtcp_link l;
    int fd;
    uint32_t queue, offload;
    uint32_t tx_hwcur;
    uint64_t tx_now;                  /* now_us of the last txsync */
    uint64_t rx_frames, tx_frames, rx_errors, tx_errors, writes_refused;
    char ifname[IFNAMSIZ];
};

static int tap_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct tap_link *t = (struct tap_link *)l;
    struct link_ring *r = &l->rx;
    int n = 0;
    while (link_ring_next(r, r->tail) != r->head) {
        struct link_slot *s = &r->slot[r->tail];
        struct virtio_net_hdr vh;
        struct iovec iov[2] = {
            { .iov_base = &vh, .iov_len = sizeof(vh) },
            { .iov_base = s->buf, .iov_len = r->buf_size },
        };
        ssize_t got = readv(t->fd, iov, 2);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            t->rx_errors++;
            return n ? n : -errno;
        }
        if ((size_t)got <= sizeof(vh) || (size_t)got - sizeof(vh) >= r->buf_size) {
            t->rx_errors++;              /* empty, or filled the buffer: possibly truncated */
            continue;
        }
        s->len = (uint32_t)(got - (ssize_t)sizeof(vh));
        s->flags = 0;
        s->gso_size = 0;
        s->csum_start = s->csum_offset = 0;
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
        if (l->pcap)
            link_pcap_slot(l, s, now);
        r->tail = link_ring_next(r, r->tail);
        t->rx_frames++;
        n++;
    }
    return n;
}

/* Ethertype after optional VLAN tags; 0 if too short. */
static uint16_t eth_type(const uint8_t *f, uint32_t len, uint32_t *l3off)
{
    uint32_t off = 12;
    while (off + 2 <= len) {
        uint16_t et = (uint16_t)(f[off] << 8 | f[off + 1]);
        if (et == 0x8100 || et == 0x88a8) { off += 4; continue; }
        *l3off = off + 2;
        return et;
    }
    return 0;
}

static int tap_txsync(struct mtcp_link *l, uint64_t now)
{
    struct tap_link *t = (struct tap_link *)l;
    struct link_ring *r = &l->tx;
    int n = 0;
    uint32_t i = t->tx_hwcur;
    for (; i != r->head; i = link_ring_next(r, i)) {
        struct link_slot *s = &r->slot[i];
        struct virtio_net_hdr vh;
        memset(&vh, 0, sizeof(vh));
        if (s->flags & LINK_SLOT_F_CSUM_PARTIAL) {
            vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            vh.csum_start = s->csum_start;
            vh.csum_offset = s->csum_offset;
        }
        if ((s->flags & LINK_SLOT_F_GSO) && s->gso_size) {
            uint32_t l3 = 0;
            uint16_t et = eth_type(s->buf, s->len, &l3);
            vh.gso_type = et == 0x86dd ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
            vh.gso_size = s->gso_size;
            uint32_t th = s->csum_start;
            uint32_t doff = th + 12 < s->len ? (uint32_t)(s->buf[th + 12] >> 4) * 4 : 20;
            vh.hdr_len = (uint16_t)(th + doff);
        }
        if (l->pcap)
            link_pcap_slot(l, s, now);
        struct iovec iov[2] = {
            { .iov_base = &vh, .iov_len = sizeof(vh) },
            { .iov_base = s->buf, .iov_len = s->len },
        };
        ssize_t w = writev(t->fd, iov, 2);
        if (w < 0) {
            if (errno == EINTR) { i = (i + r->mask) & r->mask; continue; }
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
                t->writes_refused++;
                break;                       /* keep the rest for the next txsync */
            }
            t->tx_errors++;                  /* EINVAL (bad header), EIO (down): drop it */
            continue;
        }
        t->tx_frames++;
        n++;
    }
    t->tx_hwcur = i;
    t->tx_now = now;
    r->tail = (i + r->mask) & r->mask;
    return n;
}

static int tap_fd(struct mtcp_link *l) { return ((struct tap_link *)l)->fd; }
static int64_t tap_next_deadline(struct mtcp_link *l)
{
    struct tap_link *t = (struct tap_link *)l;
    return t->tx_hwcur != l->tx.head ? (int64_t)(t->tx_now + TAP_TX_RETRY_US) : -1;
}

static void tap_destroy(struct mtcp_link *l)
{
    struct tap_link *t = (struct tap_link *)l;
    if (t->fd >= 0)
        close(t->fd);
    link_rings_free(l);
    free(t);
}

static void tap_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct tap_link *t = (struct tap_link *)l;
    o->rx_frames = t->rx_frames;
    o->tx_frames = t->tx_frames;
    o->rx_errors = t->rx_errors;
    o->tx_errors = t->tx_errors;
    o->tx_kicks_refused = t->writes_refused;
}

static const struct link_ops tap_ops = {
    .name = "tap",
    .rxsync = tap_rxsync,
    .txsync = tap_txsync,
    .fd = tap_fd,
    .next_deadline = tap_next_deadline,
    .claim_port = NULL,
    .release_port = NULL,
    .destroy = tap_destroy,
    .stats = tap_stats,
};

static int tun_attach(const char *ifname, int multi, char *name_out)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi ? IFF_MULTI_QUEUE : 0);
    if (ifname)
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    memcpy(name_out, ifr.ifr_name, IFNAMSIZ);
    return fd;
}

static uint32_t if_mtu(const char *ifname)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 1500;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    uint32_t mtu = 1500;
    if (ioctl(s, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu >= 68)
        mtu = (uint32_t)ifr.ifr_mtu;
    close(s);
    return mtu;
}

mtcp_link *mtcp_tap_open(const char *ifname, uint32_t queue, uint32_t nqueues, uint32_t flags,
                         char *err, size_t errlen)
{
    char msg[200];
    char name[IFNAMSIZ];
    if (ifname && strlen(ifname) >= IFNAMSIZ) {
        io_errf(err, errlen, "tap: interface name too long (max 15 characters)");
        return NULL;
    }
    if (nqueues == 0)
        nqueues = 1;
    if (queue >= nqueues) {
        io_errf(err, errlen, "tap: queue must be < nqueues");
        return NULL;
    }
    int multi = nqueues > 1;
    int fd = tun_attach(ifname, multi, name);
    if (fd == -EINVAL && !multi)            /* device exists as multi-queue */
        fd = tun_attach(ifname, 1, name);
    if (fd < 0) {
        snprintf(msg, sizeof(msg), "tap: cannot attach to %s: %s%s", ifname && *ifname ? ifname : "(new)",
                 strerror(-fd), fd == -EPERM || fd == -EACCES ? " (needs CAP_NET_ADMIN)" :
                 fd == -EBUSY ? " (device exists with other flags, or all queues taken)" : "");
        io_errf(err, errlen, msg);
        return NULL;
    }
    int hdrsz = (int)sizeof(struct virtio_net_hdr);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
        snprintf(msg, sizeof(msg), "tap: TUNSETVNETHDRSZ on %s: %s", name, strerror(errno));
        io_errf(err, errlen, msg);
        close(fd);
        return NULL;
    }
    uint32_t offload = 0;
    if (!(flags & MTCP_LINK_NO_OFFLOAD)) {
        unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        if (ioctl(fd, TUNSETOFFLOAD, off) == 0)
            offload = off;
        else if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM) == 0)
            offload = TUN_F_CSUM;
    } else {
        (void)ioctl(fd, TUNSETOFFLOAD, 0u);
    }
    /* With offloads a slot must hold a 64 KiB super-frame: fewer slots keep the touched memory
     * bounded (512 x 64 KiB per direction); without, MTU-sized buffers and more slots. */
    uint32_t mtu = if_mtu(name);
    uint32_t nslots = offload ? 512 : 1024;
    uint32_t bufsz = offload ? TAP_BUF_SIZE : mtu + 64;
    struct tap_link *t = calloc(1, sizeof(*t));
    if (!t || link_rings_alloc(&t->l, nslots, nslots, bufsz) != 0) {
        free(t);
        close(fd);
        io_errf(err, errlen, "tap: out of memory");
        return NULL;
    }
    t->fd = fd;
    t->queue = queue;
    t->offload = offload;
    memcpy(t->ifname, name, IFNAMSIZ);
    t->l.ops = &tap_ops;
    t->l.link_type = MTCP_LINK_ETHERNET;
    t->l.mtu = mtu;
    t->l.features = (offload & TUN_F_CSUM ? LINK_FEAT_CSUM_TX : 0) |
                    (offload & TUN_F_TSO4 ? LINK_FEAT_TSO | LINK_FEAT_RX_GRO : 0);
    return &t->l;
}

/* The kernel's name for this tap device (tests, diagnostics). */
const char *tap_link_ifname(struct mtcp_link *l)
{
    return l && l->ops == &tap_ops ? ((struct tap_link *)l)->ifname : NULL;
}
