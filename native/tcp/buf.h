/*
 * buf.h — per-engine chunk pool and the byte buffers TCP builds on.
 * Pure: no I/O, no clock. The only allocation is tcp_buf_pool_init (once per engine);
 * the steady state takes and returns fixed-size chunks in O(1).
 *
 *   buf_stream : a FIFO byte stream in a chain of chunks (send buffer: unacked + unsent bytes;
 *                receive buffer: in-order bytes waiting for the application). An empty stream
 *                holds no chunk, so an idle connection costs no buffer memory.
 *   buf_ooo    : out-of-order reassembly: sequence ranges not yet contiguous with rcv_nxt,
 *                bounded (at most BUF_OOO_MAX ranges and by the pool); overlapping data is
 *                resolved "first copy wins" (bytes already held are never overwritten).
 *                Ranges are kept sorted by sequence (modular, relative to rcv_nxt).
 */
#ifndef MTCP_TCP_BUF_H
#define MTCP_TCP_BUF_H
#include <stdint.h>
#include <stddef.h>

#define BUF_NONE 0xffffffffu
#define BUF_OOO_MAX 16     /* ranges per connection */

struct buf_pool {
    uint8_t *mem;          /* nchunks * chunk_size bytes */
    uint32_t *next;        /* chain link per chunk */
    uint32_t chunk_size;
    uint32_t nchunks;
    uint32_t free_head;
    uint32_t nfree;
};

int tcp_buf_pool_init(struct buf_pool *p, uint32_t chunk_size, uint32_t nchunks); /* 0 or -ENOMEM/-EINVAL */
void tcp_buf_pool_fini(struct buf_pool *p);
/* Chunks kept for received data: send buffers may not take the last nchunks/16 (at least one),
 * so in-order data always finds room (tcp_send; the engine's WRITABLE wake-up). */
static inline uint32_t buf_pool_reserve(const struct buf_pool *p) { return p->nchunks / 16 ? p->nchunks / 16 : 1; }

struct buf_stream {
    uint32_t head;         /* first chunk or BUF_NONE */
    uint32_t tail;         /* last chunk or BUF_NONE */
    uint32_t head_off;     /* offset of the first byte in head */
    uint32_t len;          /* bytes held */
};
void tcp_buf_stream_init(struct buf_stream *s);
/* Bytes a stream can take without a new chunk (room left in its last chunk). */
static inline uint32_t buf_stream_tail_room(const struct buf_pool *p, const struct buf_stream *s)
{
    uint32_t end = (s->head_off + s->len) % p->chunk_size;
    return s->len && end ? p->chunk_size - end : 0;
}
/* Appends up to len bytes (stops when the pool runs dry); returns bytes appended. */
uint32_t tcp_buf_stream_append(struct buf_pool *p, struct buf_stream *s, const uint8_t *data, uint32_t len);
/* Copies up to len bytes starting at byte offset off into out; returns bytes copied. O(off/chunk). */
uint32_t tcp_buf_stream_peek(const struct buf_pool *p, const struct buf_stream *s, uint32_t off,
                         uint8_t *out, uint32_t len);
/* Drops n bytes from the front (n <= len), returning emptied chunks to the pool. */
void tcp_buf_stream_consume(struct buf_pool *p, struct buf_stream *s, uint32_t n);
/* Frees everything. */
void tcp_buf_stream_clear(struct buf_pool *p, struct buf_stream *s);

struct buf_ooo_range {
    uint32_t seq;          /* first sequence number */
    uint32_t len;
    struct buf_stream data;
};
struct buf_ooo {
    uint8_t n;             /* ranges in use, sorted by seq */
    uint8_t last;          /* index of the most recently changed range (first SACK block, RFC 2018) */
    struct buf_ooo_range r[BUF_OOO_MAX];
};
/* Note: struct buf_ooo is large; TCP keeps it out of line (engine gives each connection one
 * lazily from its own pool when the first out-of-order segment arrives). */
void tcp_buf_ooo_init(struct buf_ooo *o);
/* Stores data [seq, seq+len) that lies beyond rcv_nxt (the caller trims what is before rcv_nxt
 * and beyond the window). Bytes already held are kept (first copy wins); returns bytes newly
 * stored, or -ENOBUFS if the range limit or the pool stopped it (partial storage possible). */
int tcp_buf_ooo_insert(struct buf_pool *p, struct buf_ooo *o, uint32_t rcv_nxt, uint32_t seq,
                   const uint8_t *data, uint32_t len);
/* Moves the bytes contiguous with rcv_nxt to the end of dst; returns how many (rcv_nxt advances by it). */
uint32_t tcp_buf_ooo_pull(struct buf_pool *p, struct buf_ooo *o, uint32_t rcv_nxt, struct buf_stream *dst);
/* SACK blocks to advertise (RFC 2018 4: most recently changed first, then the others by
 * sequence): fills up to max {left,right} pairs; returns how many. */
uint32_t tcp_buf_ooo_sack(const struct buf_ooo *o, uint32_t *left, uint32_t *right, uint32_t max);
/* Total bytes held. */
uint32_t tcp_buf_ooo_bytes(const struct buf_ooo *o);
void tcp_buf_ooo_clear(struct buf_pool *p, struct buf_ooo *o);

/* Modular sequence-number comparisons (RFC 9293 3.4). */
static inline int seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline int seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline int seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline int seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

/* --- raw chunk access and zero-copy reads --- */
/* One chunk from the pool (BUF_NONE when dry) / back to it. O(1). */
uint32_t tcp_buf_chunk_get(struct buf_pool *p);
void tcp_buf_chunk_put(struct buf_pool *p, uint32_t c);
/* Zero-copy view: *ptr = address of the byte at offset off; returns how many bytes are
 * contiguous there (up to the end of that chunk or of the stream), 0 if off >= len. O(off/chunk). */
uint32_t tcp_buf_stream_map(const struct buf_pool *p, const struct buf_stream *s, uint32_t off,
                        const uint8_t **ptr);

/* Read cursor for repeated reads at increasing offsets (TCP output reads its send buffer at
 * snd_nxt - snd_una, so a plain peek walks ~flight/chunk_size links per segment). The cursor
 * remembers the chunk where the last read ended, numbered in a caller-chosen absolute byte space
 * (for the send buffer: sequence numbers, base = the number of stream offset 0 = snd_una).
 * All-zero is a valid "no position" cursor. It is checked against the stream before use
 * (consumed chunks are never followed); the caller must zero it when it clears the stream
 * and starts a new numbering (connection reuse). */
struct buf_cursor {
    uint32_t chunk1;       /* cached chunk + 1; 0 = none */
    uint32_t pos;          /* absolute number of the cached chunk's first slot */
};
/* tcp_buf_stream_peek with a cursor: O(1) for reads at or after the previous one. */
uint32_t tcp_buf_stream_peek_cur(const struct buf_pool *p, const struct buf_stream *s, uint32_t base,
                             uint32_t off, uint8_t *out, uint32_t len, struct buf_cursor *cur);

#endif
