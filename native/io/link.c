/*
 * link.c — helpers shared by every link backend (ring allocation) and the public link
 * functions of mtcp.h that are not backend specific (mtcp_link_close, mtcp_link_fd).
 *
 * link_rings_alloc() makes one allocation: [rx slots][tx slots][pad][buffers]. Buffers are
 * 64-byte aligned, buf_size rounded up to 64 (a stride of a multiple of 4 KiB gets one more
 * cache line between buffers, see below); the block is freed through rx.slot, so a
 * backend must never replace rx.slot. buf_size == 0 allocates slot arrays only (backends
 * whose buffers live in a kernel mmap, e.g. AF_PACKET/AF_XDP, point slot->buf themselves).
 *
 * Initial indices: RX head = cur = tail = 0 (no frame); TX head = cur = 0, tail = n - 1
 * (all but one slot free).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "link.h"
#include "io_util.h"

int link_rings_alloc(struct mtcp_link *l, uint32_t rx_slots, uint32_t tx_slots, uint32_t buf_size)
{
    rx_slots = io_pow2_roundup(rx_slots);
    tx_slots = io_pow2_roundup(tx_slots);
    if (rx_slots > (1u << 20) || tx_slots > (1u << 20) || buf_size > (1u << 20))
        return -EINVAL;
    uint32_t bs = (buf_size + 63u) & ~63u;
    /* Buffers one power-of-two size apart put every frame's headers into the same cache set
     * (a 64 KiB stride maps every buffer to one L1 set and one L2 set): small frames then
     * evict each other's headers. A stride one cache line longer spreads them over the sets. */
    size_t stride = bs && (bs & 4095u) == 0 ? (size_t)bs + 64u : bs;
    size_t nslots = (size_t)rx_slots + tx_slots;
    size_t head = nslots * sizeof(struct link_slot);
    size_t total = head + 64 + stride * nslots;
    uint8_t *block = calloc(1, total);
    if (!block)
        return -ENOMEM;
    struct link_slot *slots = (struct link_slot *)block;
    uint8_t *area = NULL;
    if (bs) {
        uintptr_t a = (uintptr_t)(block + head);
        area = (uint8_t *)((a + 63) & ~(uintptr_t)63);
    }
    for (size_t i = 0; i < nslots; i++)
        slots[i].buf = area ? area + i * stride : NULL;

    l->rx.num_slots = rx_slots;
    l->rx.mask = rx_slots - 1;
    l->rx.head = l->rx.cur = l->rx.tail = 0;
    l->rx.buf_size = bs;
    l->rx.slot = slots;
    l->tx.num_slots = tx_slots;
    l->tx.mask = tx_slots - 1;
    l->tx.head = l->tx.cur = 0;
    l->tx.tail = tx_slots - 1;
    l->tx.buf_size = bs;
    l->tx.slot = slots + rx_slots;
    return 0;
}

void link_rings_free(struct mtcp_link *l)
{
    free(l->rx.slot);
    l->rx.slot = l->tx.slot = NULL;
}


void mtcp_link_close(mtcp_link *l)
{
    if (!l)
        return;
    link_pcap_close(l);
    l->ops->destroy(l);
}

int mtcp_link_fd(mtcp_link *l)
{
    if (!l || !l->ops->fd)
        return -1;
    return l->ops->fd(l);
}

static const char *const link_stat_names[] = {
    "rx_frames", "tx_frames", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors", "tx_kicks_refused",
};

void mtcp_link_stats(mtcp_link *l, uint64_t *out, uint32_t n)
{
    struct link_stats st;
    memset(&st, 0, sizeof(st));
    if (l && l->ops->stats)
        l->ops->stats(l, &st);
    const uint64_t v[MTCP_LINK_NSTATS] = { st.rx_frames, st.tx_frames, st.rx_dropped, st.tx_dropped, st.rx_errors,
                                           st.tx_errors, st.tx_kicks_refused };
    for (uint32_t i = 0; i < n && i < MTCP_LINK_NSTATS; i++)
        out[i] = v[i];
}

const char *mtcp_link_stat_name(uint32_t i)
{
    return i < MTCP_LINK_NSTATS ? link_stat_names[i] : NULL;
}

const char *mtcp_link_kind(mtcp_link *l)
{
    return l ? l->ops->name : NULL;
}
