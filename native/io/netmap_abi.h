/*
 * netmap_abi.h — the parts of netmap's user ABI (net/netmap.h, net/netmap_user.h, API 14)
 * this backend needs, restated so the code builds without netmap's headers. Layouts follow
 * netmap's headers exactly; tests/test_netmap_mock.c builds a memory region in this layout.
 */
#ifndef MTCP_NETMAP_ABI_H
#define MTCP_NETMAP_ABI_H
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/types.h>

#define NETMAP_API 14
#define NM_CACHE_ALIGN 128
#define NM_IFNAMSIZ 16

struct netmap_slot {
    uint32_t buf_idx;       /* buffer index */
    uint16_t len;           /* length of the packet */
    uint16_t flags;         /* NS_* */
    uint64_t ptr;           /* offsets / indirect buffers */
};
#define NS_BUF_CHANGED 0x0001
#define NS_REPORT 0x0002
#define NS_FORWARD 0x0004
#define NS_NO_LEARN 0x0008
#define NS_INDIRECT 0x0010
#define NS_MOREFRAG 0x0020

struct netmap_ring {
    const int64_t buf_ofs;
    const uint32_t num_slots;
    const uint32_t nr_buf_size;
    const uint16_t ringid;
    const uint16_t dir;     /* 0: tx, 1: rx */
    uint32_t head;          /* (u) first user slot */
    uint32_t cur;           /* (u) wakeup point */
    uint32_t tail;          /* (k) first kernel slot */
    uint32_t flags;
    struct timeval ts;
    const uint64_t offset_mask;
    const uint64_t buf_align;
    uint8_t __attribute__((__aligned__(NM_CACHE_ALIGN))) sem[128];
    struct netmap_slot slot[];
};

struct netmap_if {
    char ni_name[NM_IFNAMSIZ];
    const uint32_t ni_version;
    const uint32_t ni_flags;
    const uint32_t ni_tx_rings;
    const uint32_t ni_rx_rings;
    uint32_t ni_bufs_head;
    const uint32_t ni_host_tx_rings;
    const uint32_t ni_host_rx_rings;
    uint32_t ni_spare1[3];
    const ssize_t ring_ofs[];
};

#define NETMAP_IF(base, ofs) ((struct netmap_if *)(void *)((char *)(base) + (ofs)))
#define NETMAP_TXRING(nifp, i) ((struct netmap_ring *)(void *)((char *)(nifp) + (nifp)->ring_ofs[i]))
#define NETMAP_RXRING(nifp, i) ((struct netmap_ring *)(void *)((char *)(nifp) + \
    (nifp)->ring_ofs[(i) + (nifp)->ni_tx_rings + (nifp)->ni_host_tx_rings]))
#define NETMAP_BUF(ring, index) ((char *)(ring) + (ring)->buf_ofs + ((size_t)(index) * (ring)->nr_buf_size))
#define NETMAP_BUF_IDX(ring, buf) ((uint32_t)(((char *)(buf) - ((char *)(ring) + (ring)->buf_ofs)) / (ring)->nr_buf_size))

#define NETMAP_REQ_IFNAMSIZ 64
struct nmreq_header {
    uint16_t nr_version;
    uint16_t nr_reqtype;
    uint32_t nr_reserved;
    char nr_name[NETMAP_REQ_IFNAMSIZ];
    uint64_t nr_options;
    uint64_t nr_body;
};
#define NETMAP_REQ_REGISTER 1

struct nmreq_register {
    uint64_t nr_offset;     /* nifp offset in the shared region */
    uint64_t nr_memsize;
    uint32_t nr_tx_slots;
    uint32_t nr_rx_slots;
    uint16_t nr_tx_rings;
    uint16_t nr_rx_rings;
    uint16_t nr_host_tx_rings;
    uint16_t nr_host_rx_rings;
    uint16_t nr_mem_id;
    uint16_t nr_ringid;
    uint32_t nr_mode;
    uint32_t nr_extra_bufs;
    uint64_t nr_flags;
};
#define NR_REG_ALL_NIC 1
#define NR_REG_ONE_NIC 4

#define NIOCCTRL _IOWR('i', 151, struct nmreq_header)
#define NIOCTXSYNC _IO('i', 148)
#define NIOCRXSYNC _IO('i', 149)

/* Internal constructor shared with the mock test: attach to an already registered region.
 * sync(fd, NIOCTXSYNC/NIOCRXSYNC, arg) defaults to ioctl; close_fn may be NULL. */
struct mtcp_link;
typedef int (*netmap_sync_fn)(int fd, unsigned long req, void *arg);
struct mtcp_link *link_netmap_attach(int fd, void *mem, size_t memsize, uint64_t nifp_off, uint32_t queue,
                                     netmap_sync_fn sync, void *sync_arg, int own_mem,
                                     char *err, size_t errlen);

#endif
