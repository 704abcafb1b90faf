/*
 * netmap.c — netmap backend (mtcp_netmap_open) through /dev/netmap: NIOCCTRL register of one
 * hardware ring pair (NR_REG_ONE_NIC, ring = queue), mmap of the shared region, then the
 * netmap ring is mirrored slot for slot by the link ring (same head/cur/tail semantics, no
 * copy): link slot i's buf is netmap slot i's buffer.
 *   rxsync: hand back what the user released (ring->head = cur = link head), NIOCRXSYNC,
 *           map the new slots [old tail, ring->tail) and publish link tail = ring->tail.
 *   txsync: copy len of the released slots into netmap slots, ring->head = cur = link head,
 *           NIOCTXSYNC, link tail = ring->tail.
 * netmap ring sizes are powers of two in every driver we know; a ring that is not is refused.
 * UNTESTED AGAINST A KERNEL: no netmap module exists on our machines; the ring logic is tested
 * against an in-memory mock of netmap's memory layout (tests/test_netmap_mock.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "link.h"
#include "io_util.h"
#include "netmap_abi.h"

struct nm_link {
    struct mtcp_link l;
    int fd;
    void *mem;
    size_t memsize;
    int own_mem;
    struct netmap_ring *txr, *rxr;
    netmap_sync_fn sync;
    void *sync_arg;
    uint32_t tx_hwcur;
};

static int nm_ioctl(int fd, unsigned long req, void *arg)
{
    (void)arg;
    return ioctl(fd, req, NULL);
}

static void nm_map_rx(struct nm_link *n, uint32_t from, uint32_t to, uint64_t now)
{
    struct link_ring *r = &n->l.rx;
    for (uint32_t i = from; i != to; i = link_ring_next(r, i)) {
        struct netmap_slot *ns = &n->rxr->slot[i];
        struct link_slot *s = &r->slot[i];
        s->buf = (uint8_t *)NETMAP_BUF(n->rxr, ns->buf_idx);
        s->len = ns->len;
        s->flags = 0;
        s->gso_size = 0;
        s->csum_start = s->csum_offset = 0;
        if (n->l.pcap)
            link_pcap_slot(&n->l, s, now);
    }
}

static int nm_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct nm_link *n = (struct nm_link *)l;
    struct link_ring *r = &l->rx;
    n->rxr->head = n->rxr->cur = r->head;
    if (n->sync(n->fd, NIOCRXSYNC, n->sync_arg) < 0)
        return -errno;
    uint32_t old = r->tail, nt = n->rxr->tail;
    if (nt >= r->num_slots)
        return -EIO;
    nm_map_rx(n, old, nt, now);
    r->tail = nt;
    return (int)((nt - old) & r->mask);
}

static int nm_txsync(struct mtcp_link *l, uint64_t now)
{
    struct nm_link *n = (struct nm_link *)l;
    struct link_ring *t = &l->tx;
    int cnt = 0;
    for (uint32_t i = n->tx_hwcur; i != t->head; i = link_ring_next(t, i), cnt++) {
        struct link_slot *s = &t->slot[i];
        struct netmap_slot *ns = &n->txr->slot[i];
        ns->len = (uint16_t)(s->len > n->txr->nr_buf_size ? n->txr->nr_buf_size : s->len);
        ns->flags = 0;
        if (l->pcap)
            link_pcap_slot(l, s, now);
    }
    n->tx_hwcur = t->head;
    n->txr->head = n->txr->cur = t->head;
    if (n->sync(n->fd, NIOCTXSYNC, n->sync_arg) < 0)
        return -errno;
    if (n->txr->tail >= t->num_slots)
        return -EIO;
    t->tail = n->txr->tail;
    return cnt;
}

static int nm_fd(struct mtcp_link *l) { return ((struct nm_link *)l)->fd; }
static int64_t nm_next_deadline(struct mtcp_link *l) { (void)l; return -1; }

static void nm_destroy(struct mtcp_link *l)
{
    struct nm_link *n = (struct nm_link *)l;
    if (n->own_mem && n->mem)
        munmap(n->mem, n->memsize);
    if (n->own_mem && n->fd >= 0)
        close(n->fd);
    link_rings_free(l);
    free(n);
}

static const struct link_ops nm_ops = {
    .name = "netmap",
    .rxsync = nm_rxsync,
    .txsync = nm_txsync,
    .fd = nm_fd,
    .next_deadline = nm_next_deadline,
    .claim_port = NULL,
    .release_port = NULL,
    .destroy = nm_destroy,
};

struct mtcp_link *link_netmap_attach(int fd, void *mem, size_t memsize, uint64_t nifp_off, uint32_t queue,
                                     netmap_sync_fn sync, void *sync_arg, int own_mem,
                                     char *err, size_t errlen)
{
    char msg[160];
    if (nifp_off + sizeof(struct netmap_if) > memsize) {
        io_errf(err, errlen, "netmap: interface descriptor outside the shared region");
        return NULL;
    }
    struct netmap_if *nifp = NETMAP_IF(mem, nifp_off);
    if (queue >= nifp->ni_tx_rings || queue >= nifp->ni_rx_rings) {
        snprintf(msg, sizeof(msg), "netmap: %.16s has %u tx / %u rx rings, no queue %u", nifp->ni_name,
                 nifp->ni_tx_rings, nifp->ni_rx_rings, queue);
        io_errf(err, errlen, msg);
        return NULL;
    }
    struct netmap_ring *txr = NETMAP_TXRING(nifp, queue), *rxr = NETMAP_RXRING(nifp, queue);
    if ((char *)txr < (char *)mem || (char *)txr >= (char *)mem + memsize ||
        (char *)rxr < (char *)mem || (char *)rxr >= (char *)mem + memsize) {
        io_errf(err, errlen, "netmap: ring outside the shared region");
        return NULL;
    }
    uint32_t nt = txr->num_slots, nr = rxr->num_slots;
    if (nt < 2 || nr < 2 || (nt & (nt - 1)) || (nr & (nr - 1))) {
        snprintf(msg, sizeof(msg), "netmap: ring sizes %u/%u are not powers of two (unsupported)", nt, nr);
        io_errf(err, errlen, msg);
        return NULL;
    }
    struct nm_link *n = calloc(1, sizeof(*n));
    if (!n || link_rings_alloc(&n->l, nr, nt, 0) != 0) {
        free(n);
        io_errf(err, errlen, "netmap: out of memory");
        return NULL;
    }
    n->fd = fd;
    n->mem = mem;
    n->memsize = memsize;
    n->own_mem = own_mem;
    n->txr = txr;
    n->rxr = rxr;
    n->sync = sync ? sync : nm_ioctl;
    n->sync_arg = sync_arg;
    /* mirror the kernel's indices */
    struct link_ring *t = &n->l.tx, *r = &n->l.rx;
    t->head = t->cur = txr->head;
    t->tail = txr->tail;
    n->tx_hwcur = txr->head;
    for (uint32_t i = 0; i < nt; i++)
        t->slot[i].buf = (uint8_t *)NETMAP_BUF(txr, txr->slot[i].buf_idx);
    t->buf_size = txr->nr_buf_size;
    r->head = r->cur = rxr->head;
    r->tail = rxr->head;                 /* frames already there are mapped by the first rxsync */
    r->buf_size = rxr->nr_buf_size;
    for (uint32_t i = 0; i < nr; i++)
        r->slot[i].buf = (uint8_t *)NETMAP_BUF(rxr, rxr->slot[i].buf_idx);
    n->l.ops = &nm_ops;
    n->l.link_type = MTCP_LINK_ETHERNET;
    n->l.mtu = txr->nr_buf_size >= 1518 ? 1500 : txr->nr_buf_size - 18;
    n->l.features = 0;
    return &n->l;
}

mtcp_link *mtcp_netmap_open(const char *ifname, uint32_t queue, uint32_t flags, char *err, size_t errlen)
{
    char msg[200];
    (void)flags;
    if (!ifname || !*ifname || strlen(ifname) >= NETMAP_REQ_IFNAMSIZ) {
        io_errf(err, errlen, "netmap: a port name is required (e.g. eth0, netmap:eth0, vale0:1)");
        return NULL;
    }
    if (!strncmp(ifname, "netmap:", 7))
        ifname += 7;
    int fd = open("/dev/netmap", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, sizeof(msg), "netmap: cannot open /dev/netmap: %s%s", strerror(errno),
                 errno == ENOENT ? " (netmap kernel module not loaded)" : "");
        io_errf(err, errlen, msg);
        return NULL;
    }
    struct nmreq_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.nr_mode = NR_REG_ONE_NIC;
    reg.nr_ringid = (uint16_t)queue;
    struct nmreq_header hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.nr_version = NETMAP_API;
    hdr.nr_reqtype = NETMAP_REQ_REGISTER;
    snprintf(hdr.nr_name, sizeof(hdr.nr_name), "%s", ifname);
    hdr.nr_body = (uint64_t)(uintptr_t)&reg;
    if (ioctl(fd, NIOCCTRL, &hdr) < 0) {
        snprintf(msg, sizeof(msg), "netmap: register %s ring %u: %s", ifname, queue, strerror(errno));
        io_errf(err, errlen, msg);
        close(fd);
        return NULL;
    }
    void *mem = mmap(NULL, reg.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        snprintf(msg, sizeof(msg), "netmap: mmap %s: %s", ifname, strerror(errno));
        io_errf(err, errlen, msg);
        close(fd);
        return NULL;
    }
    /* with NR_REG_ONE_NIC the registered ring pair is index `queue` of the interface */
    struct mtcp_link *l = link_netmap_attach(fd, mem, reg.nr_memsize, reg.nr_offset, queue, NULL, NULL, 1,
                                             err, errlen);
    if (!l) {
        munmap(mem, reg.nr_memsize);
        close(fd);
    }
    return l;
}
