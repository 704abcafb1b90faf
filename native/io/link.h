/*
 * link.h — the ring-pair contract every link backend implements (sim, loopback, impair,
 * TAP, AF_PACKET, AF_XDP, netmap). Modelled on netmap's rings:
 *
 *   ring->slot[num_slots], indices head, cur, tail in [0, num_slots) (num_slots is a power of 2)
 *
 *   RX ring: after rxsync(), slots [head, tail) hold received frames and belong to the user.
 *            The user consumes them and sets head = cur = tail (or any point between) to give
 *            them back; the next rxsync() reclaims released slots and appends newly arrived ones.
 *   TX ring: slots [head, tail) are free for the user. The user writes frames at head (buf,
 *            len, flags), advances head = cur, then calls txsync(), which transmits every slot
 *            the user released since the previous txsync and advances tail as slots free up.
 *            A ring never fills completely: one slot stays unused so head == tail means
 *            "no free slot" on TX and "no frame" on RX.
 *
 * One rxsync and one txsync per engine poll: at most one syscall per batch in real backends.
 *
 * Buffers:
 *   - RX slot->buf may point into kernel-shared memory (AF_PACKET blocks, AF_XDP UMEM, netmap)
 *     and may change at every rxsync: read it fresh per frame, never keep it after releasing.
 *   - TX slot->buf is the backend's (possibly kernel-shared): write at most tx.buf_size bytes,
 *     never replace the pointer, read it fresh for every frame (the loopback backend exchanges
 *     a long frame's buffer with a free RX slot at txsync). buf_size differs per backend
 *     (AF_XDP: 2048).
 *   - Exceptions to "one syscall per batch": TAP (a tun fd has no batch I/O: one read/writev
 *     per frame) and AF_XDP copy mode (the kernel sends at most 32 frames per sendto).
 *   - next_deadline() returning 0 (or any past time) means "poll again now" (loopback frames
 *     to itself, TX completions pending in AF_PACKET/AF_XDP, due impairment queues).
 */
#ifndef MTCP_IO_LINK_H
#define MTCP_IO_LINK_H
#include <stdint.h>
#include "../include/mtcp.h"

#define LINK_SLOT_F_CSUM_PARTIAL 0x1  /* RX/TX: transport checksum incomplete: csum_start/offset valid
                                         (virtio NEEDS_CSUM, TP_STATUS_CSUMNOTREADY) */
#define LINK_SLOT_F_CSUM_VALID   0x2  /* RX: lower layer verified checksums (loopback, DATA_VALID) */
#define LINK_SLOT_F_GSO          0x4  /* frame is a TSO/GSO super-frame to be cut at gso_size */

#define LINK_FEAT_TSO       0x1   /* TX accepts super-frames up to 64 KiB with gso_size */
#define LINK_FEAT_CSUM_TX   0x2   /* TX accepts LINK_SLOT_F_CSUM_PARTIAL */
#define LINK_FEAT_RX_GRO    0x4   /* RX may deliver coalesced super-frames */

struct link_slot {
    uint8_t *buf;          /* frame buffer owned by the ring, buf_size bytes */
    uint32_t len;          /* frame length in bytes */
    uint16_t flags;        /* LINK_SLOT_F_* */
    uint16_t gso_size;
    uint16_t csum_start;   /* offset of the transport header from frame start */
    uint16_t csum_offset;  /* offset of the checksum field from csum_start */
};

struct link_ring {
    uint32_t num_slots;    /* power of two */
    uint32_t mask;         /* num_slots - 1 */
    uint32_t head, cur, tail;
    uint32_t buf_size;     /* capacity of each slot buffer */
    struct link_slot *slot;
};

static inline uint32_t link_ring_next(const struct link_ring *r, uint32_t i) { return (i + 1) & r->mask; }
static inline uint32_t link_ring_space(const struct link_ring *r) { return (r->tail - r->head) & r->mask; }

/* Keep slot buffers warm (backends whose buffers are ours, not a kernel mmap). Buffers of up to
 * 64 KiB sit a page or more apart, so a ring that walks all its slots touches a new page and a
 * cold cache line with every small frame. The slots just given back, [from, to), hold buffers
 * touched a moment ago: move those buffers to the slots written next, from `next` on, so that a
 * small set of buffers circulates. Buffers are not fixed to a slot and every slot involved is
 * free; the ranges never overlap (only the free slots in [next, from - 1) take part). */
static inline void link_ring_recycle(struct link_ring *r, uint32_t from, uint32_t to, uint32_t next)
{
    uint32_t n = (to - from) & r->mask;
    uint32_t room = (from - next - 1) & r->mask;
    if (n > room)
        n = room;
    for (uint32_t k = 0; k < n; k++) {
        struct link_slot *x = &r->slot[(from + k) & r->mask], *y = &r->slot[(next + k) & r->mask];
        uint8_t *b = x->buf;
        x->buf = y->buf;
        y->buf = b;
    }
}

struct mtcp_link;

/* Frame counters of a link (mtcp_link_stats; order = MTCP_LINK_STAT_*). */
struct link_stats {
    uint64_t rx_frames;    /* delivered to the user */
    uint64_t tx_frames;    /* handed to the lower layer */
    uint64_t rx_dropped;   /* lost on the way in: ring full, kernel drops (tp_drops, XDP rx_dropped) */
    uint64_t tx_dropped;   /* refused by the lower layer */
    uint64_t rx_errors;    /* malformed / truncated */
    uint64_t tx_errors;    /* syscall or format errors */
    uint64_t tx_kicks_refused; /* TX kicks / writes the device refused (ENOBUFS, EAGAIN, EBUSY): the
                                * frames wait in the ring for the next txsync */
};

struct link_ops {
    const char *name;
    int (*rxsync)(struct mtcp_link *l, uint64_t now_us);   /* >= 0 or -errno */
    int (*txsync)(struct mtcp_link *l, uint64_t now_us);
    int (*fd)(struct mtcp_link *l);                         /* pollable fd or -1 */
    int64_t (*next_deadline)(struct mtcp_link *l);          /* absolute us or -1 (delay queues) */
    /* Port ownership (loopback switch, per-core steering). May be NULL = anything goes.
     * claim: 0 or -EADDRINUSE (port taken) / -EAGAIN (port not steered to this link). */
    int (*claim_port)(struct mtcp_link *l, int family, uint16_t port, int listener);
    void (*release_port)(struct mtcp_link *l, int family, uint16_t port, int listener);
    void (*destroy)(struct mtcp_link *l);
    /* May be NULL: frame counters for mtcp_link_stats. Wrappers report
     * their inner link's. */
    void (*stats)(struct mtcp_link *l, struct link_stats *out);
};

struct mtcp_link {
    const struct link_ops *ops;
    struct link_ring rx, tx;
    uint32_t link_type;    /* MTCP_LINK_ETHERNET / MTCP_LINK_IP */
    uint32_t mtu;          /* IP MTU */
    uint32_t features;     /* LINK_FEAT_* */
    struct pcap_writer *pcap; /* optional capture (io/pcap.c); backends call link_pcap_frame */
    void *priv;
};

/* Helpers shared by backends (io/link.c). */
int link_rings_alloc(struct mtcp_link *l, uint32_t rx_slots, uint32_t tx_slots, uint32_t buf_size);
void link_rings_free(struct mtcp_link *l);
/* Called by backends for each frame they deliver (rx=1) or transmit (rx=0) when l->pcap is set. */
void link_pcap_frame(struct mtcp_link *l, const uint8_t *frame, uint32_t len, uint64_t now_us);

/* Capture control used by mtcp_link_close / tests. */
void link_pcap_close(struct mtcp_link *l);
void link_pcap_flush(struct mtcp_link *l);
/* Like link_pcap_frame for a whole slot: a partial checksum is completed in the captured copy. */
void link_pcap_slot(struct mtcp_link *l, const struct link_slot *s, uint64_t now_us);
/* Diagnostics for tests: frames dropped on arrival (RX ring full / frame too long). */
uint64_t link_sim_drops(struct mtcp_link *l);
uint64_t link_loopback_drops(struct mtcp_link *l);
static inline int64_t link_next_deadline(struct mtcp_link *l)
{
    return l->ops->next_deadline ? l->ops->next_deadline(l) : -1;
}

static inline int link_rxsync(struct mtcp_link *l, uint64_t now) { return l->ops->rxsync(l, now); }
static inline int link_txsync(struct mtcp_link *l, uint64_t now) { return l->ops->txsync(l, now); }

#endif
