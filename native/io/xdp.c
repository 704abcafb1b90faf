/*
 * xdp.c — AF_XDP backend (mtcp_xdp_open): one XSK bound to (interface, queue), a UMEM of
 * XDP_FRAMES 2 KiB frames (half for RX, half for TX), fill/completion/RX/TX rings, and a
 * minimal XDP program that redirects every frame of a queue with a bound XSK into it
 * (bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)). Everything goes through the raw bpf()
 * syscall and kernel UAPI headers: no libbpf/libxdp, no extra link flags.
 *
 * The program and its XSKMAP are attached with BPF_LINK_CREATE (native/driver mode first,
 * generic/SKB mode as fallback) and shared by every XSK this process opens on the same
 * interface (a small registry, refcounted; the link is detached when the last XSK closes).
 *
 * Bind mode: copy mode by default (veth supports only that); MTCP_XDP_ZEROCOPY asks for
 * zero copy (NICs whose driver supports it), with a fallback to copy mode.
 * RX (zero copy into the user's view): RX descriptors become link RX slots pointing into the
 *   UMEM; released slots return their frames to the fill ring at the next rxsync.
 * TX: TX slot i is UMEM TX frame i; txsync posts descriptors for released slots and kicks
 *   the kernel with sendto() (copy mode sends at most 32 frames per call, so one call per 32
 *   frames there; zero copy: one call when the ring asks for a wakeup); completions give
 *   slots back (in order). Every txsync kicks again while frames are outstanding; after a
 *   refused kick (EBUSY/ENOBUFS) next_deadline is XDP_KICK_RETRY_US later instead of "now".
 * XDP frames carry no checksum metadata: flags are 0 (the engine checks checksums), except
 *   that in copy mode a TCP segment whose checksum field holds exactly its folded pseudo-header
 *   sum is taken as a partial checksum (LINK_SLOT_F_CSUM_PARTIAL, csum_start = TCP header,
 *   csum_offset 16): that is what a local kernel peer with tx checksum offload (a veth end, our
 *   own packet backend with CSUM_TX) puts there; otherwise every frame of such a peer would fail
 *   the checksum check. On a wire frame the field equals that value by chance with probability 2^-16, like
 *   any checksum collision. TSO from such a peer still needs the testbed's offload-off setting
 *   (a super-frame does not fit a 2 KiB UMEM frame).
 */
#if defined(__has_include)
#if !__has_include(<linux/if_xdp.h>) || !__has_include(<linux/bpf.h>)
#define MTCP_NO_XDP 1
#endif
#endif

#ifdef MTCP_NO_XDP
/* Built without the kernel's AF_XDP/BPF UAPI headers: the backend reports that plainly. */
#include <string.h>
#include "link.h"
#include "io_util.h"
mtcp_link *mtcp_xdp_open(const char *ifname, uint32_t queue, uint32_t flags, char *err, size_t errlen)
{
    (void)ifname; (void)queue; (void)flags;
    io_errf(err, errlen, "xdp: not built (linux/if_xdp.h or linux/bpf.h missing at build time)");
    return NULL;
}
int link_xdp_skb_mode(struct mtcp_link *l) { (void)l; return -1; }
int mtcp_xdp_share(const char *ifname, uint32_t flags, char *err, size_t errlen)
{
    (void)ifname; (void)flags;
    io_errf(err, errlen, "xdp: not built (linux/if_xdp.h or linux/bpf.h missing at build time)");
    return -95;
}
#else
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include "link.h"
#include "io_util.h"

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define XDP_FRAME_SIZE 2048u
#define XDP_RX_FRAMES 2048u
#define XDP_TX_FRAMES 2048u
#define XDP_RING 2048u
#define XDP_KICK_RETRY_US 100u

struct xring {
    uint32_t *producer, *consumer, *flags;
    void *desc;
    uint32_t mask, size;
    uint32_t cached_prod, cached_cons;
    void *map;
    size_t map_len;
};

struct xdp_link {
    struct mtcp_link l;
    int fd;
    int ifindex;
    uint64_t netns;
    uint32_t queue;
    uint8_t *umem;
    size_t umem_len;
    struct xring rx, tx, fill, comp;
    uint32_t last_head;       /* RX slots released up to here were returned to the fill ring */
    uint32_t tx_hwcur, tx_done;
    int kick_owed;            /* the last TX kick was refused (EBUSY/ENOBUFS): retry later */
    uint64_t tx_now;          /* now_us of the last txsync */
    uint64_t rx_frames, tx_frames, tx_errors, kicks_refused;
    int zerocopy;
};

static long sys_bpf(int cmd, union bpf_attr *attr, unsigned size)
{
    return syscall(__NR_bpf, cmd, attr, size);
}

/* ---- process-wide registry: one program + XSKMAP per interface ---- */
struct xdp_prog {
    uint64_t netns;                     /* ifindexes are per network namespace */
    int ifindex, map_fd, prog_fd, link_fd, refs;
    int skb_mode;
};
static pthread_mutex_t xdp_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xdp_prog xdp_reg[16];

static int xdp_prog_load(int map_fd, char *log, size_t loglen)
{
    struct bpf_insn insns[] = {
        /* r2 = ctx->rx_queue_index */
        { .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_1,
          .off = offsetof(struct xdp_md, rx_queue_index) },
        /* r1 = map (ld_imm64, pseudo map fd) */
        { .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map_fd },
        { .code = 0 },
        /* r3 = XDP_PASS: the action when the queue has no XSK */
        { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = XDP_PASS },
        { .code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map },
        { .code = BPF_JMP | BPF_EXIT },
    };
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
    a.license = (uint64_t)(uintptr_t)"GPL";
    a.expected_attach_type = BPF_XDP;
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = (uint32_t)loglen;
    a.log_level = log ? 1 : 0;
    memcpy(a.prog_name, "mtcp_xsk_redir", 15);
    return (int)sys_bpf(BPF_PROG_LOAD, &a, sizeof(a));
}

/* Identity of the calling thread's network namespace (inode of its ns file). */
static uint64_t cur_netns(void)
{
    struct stat st;
    if (stat("/proc/thread-self/ns/net", &st) == 0 || stat("/proc/self/ns/net", &st) == 0)
        return (uint64_t)st.st_ino;
    return 0;
}

static struct xdp_prog *xdp_prog_get(uint64_t netns, int ifindex, int force_skb, char *msg, size_t msglen)
{
    struct xdp_prog *free_e = NULL;
    for (int i = 0; i < 16; i++) {
        if (xdp_reg[i].refs && xdp_reg[i].ifindex == ifindex && xdp_reg[i].netns == netns) {
            xdp_reg[i].refs++;
            return &xdp_reg[i];
        }
        if (!xdp_reg[i].refs && !free_e)
            free_e = &xdp_reg[i];
    }
    if (!free_e) {
        snprintf(msg, msglen, "xdp: too many interfaces");
        return NULL;
    }
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_XSKMAP;
    a.key_size = 4;
    a.value_size = 4;
    a.max_entries = 64;
    memcpy(a.map_name, "mtcp_xsks", 10);
    int map_fd = (int)sys_bpf(BPF_MAP_CREATE, &a, sizeof(a));
    if (map_fd < 0) {
        snprintf(msg, msglen, "xdp: cannot create XSKMAP: %s%s", strerror(errno),
                 errno == EPERM ? " (needs CAP_BPF/CAP_NET_ADMIN)" : "");
        return NULL;
    }
    static __thread char log[4096];
    log[0] = 0;
    int prog_fd = xdp_prog_load(map_fd, log, sizeof(log));
    if (prog_fd < 0) {
        snprintf(msg, msglen, "xdp: cannot load the redirect program: %s %.100s", strerror(errno), log);
        close(map_fd);
        return NULL;
    }
    int link_fd = -1, skb_mode = 0;
    for (int attempt = force_skb ? 1 : 0; attempt < 2 && link_fd < 0; attempt++) {
        memset(&a, 0, sizeof(a));
        a.link_create.prog_fd = (uint32_t)prog_fd;
        a.link_create.target_ifindex = (uint32_t)ifindex;
        a.link_create.attach_type = BPF_XDP;
        a.link_create.flags = attempt == 0 ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
        link_fd = (int)sys_bpf(BPF_LINK_CREATE, &a, sizeof(a));
        skb_mode = attempt == 1;
    }
    if (link_fd < 0) {
        snprintf(msg, msglen, "xdp: cannot attach the XDP program: %s%s", strerror(errno),
                 errno == EBUSY || errno == EEXIST ? " (another XDP program is attached)" : "");
        close(prog_fd);
        close(map_fd);
        return NULL;
    }
    free_e->netns = netns;
    free_e->ifindex = ifindex;
    free_e->map_fd = map_fd;
    free_e->prog_fd = prog_fd;
    free_e->link_fd = link_fd;
    free_e->skb_mode = skb_mode;
    free_e->refs = 1;
    return free_e;
}

static void xdp_prog_put(uint64_t netns, int ifindex, uint32_t queue)
{
    pthread_mutex_lock(&xdp_reg_lock);
    for (int i = 0; i < 16; i++) {
        struct xdp_prog *e = &xdp_reg[i];
        if (!e->refs || e->ifindex != ifindex || e->netns != netns)
            continue;
        union bpf_attr a;
        memset(&a, 0, sizeof(a));
        uint32_t key = queue;
        a.map_fd = (uint32_t)e->map_fd;
        a.key = (uint64_t)(uintptr_t)&key;
        (void)sys_bpf(BPF_MAP_DELETE_ELEM, &a, sizeof(a));
        if (--e->refs == 0) {
            close(e->link_fd);
            close(e->prog_fd);
            close(e->map_fd);
            memset(e, 0, sizeof(*e));
        }
        break;
    }
    pthread_mutex_unlock(&xdp_reg_lock);
}

/* ---- rings ---- */
static int xring_map(int fd, struct xring *r, const struct xdp_ring_offset *off, uint64_t pgoff,
                     uint32_t n, size_t desc_size)
{
    r->map_len = off->desc + (size_t)n * desc_size;
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)pgoff);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        return -errno;
    }
    r->producer = (uint32_t *)((uint8_t *)r->map + off->producer);
    r->consumer = (uint32_t *)((uint8_t *)r->map + off->consumer);
    r->flags = (uint32_t *)((uint8_t *)r->map + off->flags);
    r->desc = (uint8_t *)r->map + off->desc;
    r->size = n;
    r->mask = n - 1;
    r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
    r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
    return 0;
}

static void fill_push(struct xdp_link *x, uint64_t addr)
{
    struct xring *f = &x->fill;
    ((uint64_t *)f->desc)[f->cached_prod & f->mask] = addr;
    f->cached_prod++;
}

/* Copy mode: a TCP segment (IPv4 without fragmentation / IPv6 without extension headers) whose
 * checksum field equals its folded pseudo-header sum carries a partial checksum (virtio
 * NEEDS_CSUM convention, as a local kernel peer with checksum offload sends it). */
static void xdp_csum_partial_guess(struct link_slot *s)
{
    const uint8_t *f = s->buf;
    uint32_t len = s->len, off = 12;
    uint16_t et = len >= 14 ? (uint16_t)(f[12] << 8 | f[13]) : 0;
    if (et == 0x8100 && len >= 18) {
        off = 16;
        et = (uint16_t)(f[16] << 8 | f[17]);
    }
    off += 2;
    uint32_t th, tcp_len, sum;
    if (et == 0x0800 && off + 20 <= len) {
        const uint8_t *ip = f + off;
        uint32_t ihl = (uint32_t)(ip[0] & 15) * 4, tot = (uint32_t)(ip[2] << 8 | ip[3]);
        if ((ip[0] >> 4) != 4 || ip[9] != 6 || ihl < 20 || tot < ihl + 20 || off + tot > len ||
            ((ip[6] & 0x3f) | ip[7]))                          /* MF or a fragment offset */
            return;
        th = off + ihl;
        tcp_len = tot - ihl;
        sum = io_csum_add(0, ip + 12, 8);
    } else if (et == 0x86dd && off + 40 <= len) {
        const uint8_t *ip = f + off;
        tcp_len = (uint32_t)(ip[4] << 8 | ip[5]);
        if ((ip[0] >> 4) != 6 || ip[6] != 6 || tcp_len < 20 || off + 40 + tcp_len > len)
            return;
        th = off + 40;
        sum = io_csum_add(0, ip + 8, 32);
    } else {
        return;
    }
    uint64_t t = (uint64_t)sum + 6 + (tcp_len >> 16) + (tcp_len & 0xffff);
    while (t >> 16) t = (t & 0xffff) + (t >> 16);
    if ((uint16_t)(f[th + 16] << 8 | f[th + 17]) == (uint16_t)t) {
        s->flags |= LINK_SLOT_F_CSUM_PARTIAL;
        s->csum_start = (uint16_t)th;
        s->csum_offset = 16;
    }
}

static int xdp_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct xdp_link *x = (struct xdp_link *)l;
    struct link_ring *r = &l->rx;
    /* 1. frames of released slots back to the fill ring */
    uint32_t refilled = 0;
    for (uint32_t i = x->last_head; i != r->head; i = link_ring_next(r, i)) {
        uint64_t addr = (uint64_t)(r->slot[i].buf - x->umem) & ~(uint64_t)(XDP_FRAME_SIZE - 1);
        fill_push(x, addr);
        refilled++;
    }
    x->last_head = r->head;
    if (refilled) {
        __atomic_store_n(x->fill.producer, x->fill.cached_prod, __ATOMIC_RELEASE);
        if (__atomic_load_n(x->fill.flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP)
            (void)recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
    }
    /* 2. RX descriptors into slots */
    struct xring *rx = &x->rx;
    uint32_t prod = __atomic_load_n(rx->producer, __ATOMIC_ACQUIRE);
    int n = 0;
    while (rx->cached_cons != prod && link_ring_next(r, r->tail) != r->head) {
        const struct xdp_desc *d = &((const struct xdp_desc *)rx->desc)[rx->cached_cons & rx->mask];
        struct link_slot *s = &r->slot[r->tail];
        s->buf = x->umem + d->addr;
        s->len = d->len;
        s->flags = 0;
        s->gso_size = 0;
        s->csum_start = s->csum_offset = 0;
        if (!x->zerocopy)
            xdp_csum_partial_guess(s);
        if (l->pcap)
            link_pcap_slot(l, s, now);
        r->tail = link_ring_next(r, r->tail);
        rx->cached_cons++;
        n++;
    }
    if (n) {
        __atomic_store_n(rx->consumer, rx->cached_cons, __ATOMIC_RELEASE);
        x->rx_frames += (uint64_t)n;
    }
    return n;
}

static void xdp_reap(struct xdp_link *x)
{
    struct xring *c = &x->comp;
    uint32_t prod = __atomic_load_n(c->producer, __ATOMIC_ACQUIRE);
    uint32_t done = prod - c->cached_cons;
    if (!done)
        return;
    c->cached_cons = prod;
    __atomic_store_n(c->consumer, c->cached_cons, __ATOMIC_RELEASE);
    struct link_ring *t = &x->l.tx;
    x->tx_done = (x->tx_done + done) & t->mask;
}

static int xdp_txsync(struct mtcp_link *l, uint64_t now)
{
    struct xdp_link *x = (struct xdp_link *)l;
    struct link_ring *t = &l->tx;
    struct xring *tx = &x->tx;
    int n = 0;
    xdp_reap(x);
    tx->cached_cons = __atomic_load_n(tx->consumer, __ATOMIC_ACQUIRE);
    uint32_t i = x->tx_hwcur;
    for (; i != t->head; i = link_ring_next(t, i)) {
        if (tx->cached_prod - tx->cached_cons >= tx->size)
            break;                                   /* XSK TX ring full: rest next time */
        struct link_slot *s = &t->slot[i];
        if (l->pcap)
            link_pcap_slot(l, s, now);
        struct xdp_desc *d = &((struct xdp_desc *)tx->desc)[tx->cached_prod & tx->mask];
        d->addr = (uint64_t)(s->buf - x->umem);
        d->len = s->len;
        d->options = 0;
        tx->cached_prod++;
        n++;
    }
    x->tx_hwcur = i;
    if (n)
        __atomic_store_n(tx->producer, tx->cached_prod, __ATOMIC_RELEASE);
    x->tx_now = now;
    x->kick_owed = 0;
    if (x->tx_done != x->tx_hwcur &&
        (!x->zerocopy || (__atomic_load_n(tx->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP))) {
        /* Copy mode transmits at most 32 descriptors per sendto (the kernel's TX batch):
         * kick until the kernel has consumed everything posted, or refuses. */
        for (int k = 0; k < (int)(XDP_RING / 32) + 1; k++) {
            /* EAGAIN from a copy-mode kick means "batch limit reached, call again" */
            if (sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN) {
                if (errno != EBUSY && errno != ENOBUFS && errno != ENETDOWN)
                    x->tx_errors++;
                else
                    x->kicks_refused++;
                x->kick_owed = 1;          /* refused: retried at the next txsync (deadline) */
                break;
            }
            if (x->zerocopy || __atomic_load_n(tx->consumer, __ATOMIC_ACQUIRE) == tx->cached_prod)
                break;
        }
    }
    xdp_reap(x);
    t->tail = (x->tx_done + t->mask) & t->mask;
    x->tx_frames += (uint64_t)n;
    return n;
}

static int xdp_fd(struct mtcp_link *l) { return ((struct xdp_link *)l)->fd; }
static int64_t xdp_next_deadline(struct mtcp_link *l)
{
    struct xdp_link *x = (struct xdp_link *)l;
    if (x->tx_done == x->tx_hwcur)
        return -1;
    /* completions come without a wakeup: look again now; after a refused kick, a little later */
    return x->kick_owed ? (int64_t)(x->tx_now + XDP_KICK_RETRY_US) : 0;
}

static void xdp_free(struct xdp_link *x)
{
    struct xring *rs[4] = { &x->rx, &x->tx, &x->fill, &x->comp };
    for (int i = 0; i < 4; i++)
        if (rs[i]->map)
            munmap(rs[i]->map, rs[i]->map_len);
    if (x->fd >= 0)
        close(x->fd);
    if (x->umem)
        munmap(x->umem, x->umem_len);
    link_rings_free(&x->l);
    free(x);
}

static void xdp_destroy(struct mtcp_link *l)
{
    struct xdp_link *x = (struct xdp_link *)l;
    xdp_prog_put(x->netns, x->ifindex, x->queue);
    xdp_free(x);
}

static void xdp_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct xdp_link *x = (struct xdp_link *)l;
    struct xdp_statistics st;
    socklen_t sl = sizeof(st);
    memset(&st, 0, sizeof(st));
    if (getsockopt(x->fd, SOL_XDP, XDP_STATISTICS, &st, &sl) == 0) {
        o->rx_dropped = st.rx_dropped + st.rx_ring_full + st.rx_fill_ring_empty_descs;
        o->rx_errors = st.rx_invalid_descs;
        o->tx_errors = st.tx_invalid_descs;
    }
    o->rx_frames = x->rx_frames;
    o->tx_frames = x->tx_frames;
    o->tx_errors += x->tx_errors;
    o->tx_kicks_refused = x->kicks_refused;
}

static const struct link_ops xdp_ops = {
    .name = "xdp",
    .rxsync = xdp_rxsync,
    .txsync = xdp_txsync,
    .fd = xdp_fd,
    .next_deadline = xdp_next_deadline,
    .claim_port = NULL,
    .release_port = NULL,
    .destroy = xdp_destroy,
    .stats = xdp_stats,
};

/* Per-core workers (mtcp_loop/workers.py, io/steer.c): attach the redirect program + XSKMAP for
 * ifname in this process and keep that reference, so processes forked afterwards find it in
 * their copy of xdp_reg and insert their queue's socket into the same (inherited) map; the
 * program stays attached while workers die and restart. 0 or -errno. */
int mtcp_xdp_share(const char *ifname, uint32_t flags, char *err, size_t errlen)
{
    char msg[256];
    int ifindex = ifname ? (int)if_nametoindex(ifname) : 0;
    if (!ifindex) {
        snprintf(msg, sizeof(msg), "xdp: no interface %s in this network namespace", ifname ? ifname : "(null)");
        io_errf(err, errlen, msg);
        return -ENODEV;
    }
    pthread_mutex_lock(&xdp_reg_lock);
    struct xdp_prog *pe = xdp_prog_get(cur_netns(), ifindex, (flags & MTCP_XDP_SKB_MODE) != 0, msg, sizeof(msg));
    pthread_mutex_unlock(&xdp_reg_lock);
    if (!pe) {
        io_errf(err, errlen, msg);
        return -EIO;
    }
    return 0;
}

mtcp_link *mtcp_xdp_open(const char *ifname, uint32_t queue, uint32_t flags, char *err, size_t errlen)
{
    char msg[256];
    if (!ifname || !*ifname || strlen(ifname) >= IFNAMSIZ) {
        io_errf(err, errlen, "xdp: an interface name (max 15 characters) is required");
        return NULL;
    }
    int ifindex = (int)if_nametoindex(ifname);
    if (!ifindex) {
        snprintf(msg, sizeof(msg), "xdp: no interface %s in this network namespace", ifname);
        io_errf(err, errlen, msg);
        return NULL;
    }
    struct xdp_link *x = calloc(1, sizeof(*x));
    if (!x) {
        io_errf(err, errlen, "xdp: out of memory");
        return NULL;
    }
    x->fd = -1;
    x->ifindex = ifindex;
    x->netns = cur_netns();
    x->queue = queue;
    const char *step = "socket(AF_XDP)";
    x->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (x->fd < 0)
        goto fail;
    step = "UMEM allocation";
    x->umem_len = (size_t)(XDP_RX_FRAMES + XDP_TX_FRAMES) * XDP_FRAME_SIZE;
    x->umem = mmap(NULL, x->umem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (x->umem == MAP_FAILED) {
        x->umem = NULL;
        goto fail;
    }
    struct xdp_umem_reg ur;
    memset(&ur, 0, sizeof(ur));
    ur.addr = (uint64_t)(uintptr_t)x->umem;
    ur.len = x->umem_len;
    ur.chunk_size = XDP_FRAME_SIZE;
    ur.headroom = 0;
    step = "XDP_UMEM_REG";
    if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_REG, &ur, sizeof(ur)) < 0)
        goto fail;
    int rs = (int)XDP_RING;
    step = "XDP ring sizes";
    if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_FILL_RING, &rs, sizeof(rs)) < 0 ||
        setsockopt(x->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &rs, sizeof(rs)) < 0 ||
        setsockopt(x->fd, SOL_XDP, XDP_RX_RING, &rs, sizeof(rs)) < 0 ||
        setsockopt(x->fd, SOL_XDP, XDP_TX_RING, &rs, sizeof(rs)) < 0)
        goto fail;
    struct xdp_mmap_offsets off;
    socklen_t ol = sizeof(off);
    step = "XDP_MMAP_OFFSETS";
    if (getsockopt(x->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol) < 0)
        goto fail;
    step = "mmap of the XSK rings";
    int e;
    if ((e = xring_map(x->fd, &x->rx, &off.rx, XDP_PGOFF_RX_RING, XDP_RING, sizeof(struct xdp_desc))) ||
        (e = xring_map(x->fd, &x->tx, &off.tx, XDP_PGOFF_TX_RING, XDP_RING, sizeof(struct xdp_desc))) ||
        (e = xring_map(x->fd, &x->fill, &off.fr, XDP_UMEM_PGOFF_FILL_RING, XDP_RING, sizeof(uint64_t))) ||
        (e = xring_map(x->fd, &x->comp, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, XDP_RING, sizeof(uint64_t)))) {
        errno = -e;
        goto fail;
    }
    /* every RX frame into the fill ring */
    for (uint32_t i = 0; i < XDP_RX_FRAMES; i++)
        fill_push(x, (uint64_t)i * XDP_FRAME_SIZE);
    __atomic_store_n(x->fill.producer, x->fill.cached_prod, __ATOMIC_RELEASE);
    /* bind (EBUSY right after a previous XSK on this queue closed: retry briefly) */
    struct sockaddr_xdp sx;
    memset(&sx, 0, sizeof(sx));
    sx.sxdp_family = AF_XDP;
    sx.sxdp_ifindex = (uint32_t)ifindex;
    sx.sxdp_queue_id = queue;
    int rc = -1;
    x->zerocopy = (flags & MTCP_XDP_ZEROCOPY) != 0;
    for (int attempt = 0; attempt < 50; attempt++) {
        sx.sxdp_flags = (uint16_t)(XDP_USE_NEED_WAKEUP | (x->zerocopy ? XDP_ZEROCOPY : XDP_COPY));
        rc = bind(x->fd, (struct sockaddr *)&sx, sizeof(sx));
        if (rc == 0)
            break;
        if (x->zerocopy && (errno == EOPNOTSUPP || errno == EINVAL)) {
            x->zerocopy = 0;
            continue;
        }
        if (errno != EBUSY)
            break;
        usleep(20000);
    }
    step = "bind";
    if (rc < 0)
        goto fail;
    /* program + map, then our XSK into the map at our queue */
    pthread_mutex_lock(&xdp_reg_lock);
    struct xdp_prog *pe = xdp_prog_get(x->netns, ifindex, (flags & MTCP_XDP_SKB_MODE) != 0, msg, sizeof(msg));
    if (pe) {
        union bpf_attr a;
        memset(&a, 0, sizeof(a));
        uint32_t key = queue, val = (uint32_t)x->fd;
        a.map_fd = (uint32_t)pe->map_fd;
        a.key = (uint64_t)(uintptr_t)&key;
        a.value = (uint64_t)(uintptr_t)&val;
        a.flags = BPF_ANY;
        if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a, sizeof(a)) < 0) {
            snprintf(msg, sizeof(msg), "xdp: cannot insert the XSK into the map: %s", strerror(errno));
            pthread_mutex_unlock(&xdp_reg_lock);
            xdp_prog_put(x->netns, ifindex, queue);
            pe = NULL;
            pthread_mutex_lock(&xdp_reg_lock);
        }
    }
    pthread_mutex_unlock(&xdp_reg_lock);
    if (!pe) {
        io_errf(err, errlen, msg);
        xdp_free(x);
        return NULL;
    }
    step = "ring allocation";
    errno = ENOMEM;
    if (link_rings_alloc(&x->l, XDP_RX_FRAMES * 2, XDP_TX_FRAMES, 0) != 0) {
        xdp_prog_put(x->netns, ifindex, queue);
        goto fail;
    }
    for (uint32_t i = 0; i < x->l.tx.num_slots; i++)
        x->l.tx.slot[i].buf = x->umem + (size_t)(XDP_RX_FRAMES + i) * XDP_FRAME_SIZE;
    x->l.tx.buf_size = XDP_FRAME_SIZE;
    x->l.rx.buf_size = XDP_FRAME_SIZE;
    x->l.ops = &xdp_ops;
    x->l.link_type = MTCP_LINK_ETHERNET;
    {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
        x->l.mtu = ioctl(x->fd, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu >= 68 ? (uint32_t)ifr.ifr_mtu : 1500;
        if (x->l.mtu > XDP_FRAME_SIZE - 18)
            x->l.mtu = XDP_FRAME_SIZE - 18;
    }
    x->l.features = 0;
    return &x->l;
fail:
    snprintf(msg, sizeof(msg), "xdp: %s on %s queue %u: %s%s", step, ifname, queue, strerror(errno),
             errno == EPERM ? " (needs CAP_NET_RAW/CAP_BPF)" :
             errno == EBUSY ? " (queue busy: another XSK is bound, or was just closed)" :
             errno == EINVAL && !strcmp(step, "bind") ? " (no such queue?)" : "");
    io_errf(err, errlen, msg);
    xdp_free(x);
    return NULL;
}

/* 1 if the shared XDP program of this interface runs in generic (SKB) mode. */
int link_xdp_skb_mode(struct mtcp_link *l)
{
    if (!l || l->ops != &xdp_ops)
        return -1;
    struct xdp_link *x = (struct xdp_link *)l;
    int r = -1;
    pthread_mutex_lock(&xdp_reg_lock);
    for (int i = 0; i < 16; i++)
        if (xdp_reg[i].refs && xdp_reg[i].ifindex == x->ifindex && xdp_reg[i].netns == x->netns)
            r = xdp_reg[i].skb_mode;
    pthread_mutex_unlock(&xdp_reg_lock);
    return r;
}
#endif /* MTCP_NO_XDP */
