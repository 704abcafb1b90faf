/*
 * buf.c — chunk pool, FIFO byte streams and out-of-order reassembly (see buf.h).
 *
 * Pool: one allocation at init; chunks are indices, free ones chained through p->next
 * (LIFO free list, O(1) get/put).
 *
 * Stream layout invariant: the bytes live in a chain head -> ... -> tail (linked by p->next);
 * the first byte is at head_off in head (head_off < chunk_size), every chunk but the first
 * is filled from offset 0, every chunk but the last is filled to chunk_size. So the last
 * byte sits at offset (head_off + len - 1) % chunk_size of tail. An empty stream holds no
 * chunk (head == tail == BUF_NONE, head_off == 0).
 *
 * Reassembly: each range keeps its bytes in its own stream, and all ranges of one buf_ooo
 * are "aligned" with each other: a byte's offset inside its chunk is a fixed function of its
 * sequence number (relative to the first range ever created while the queue was empty). So
 * a range can grow at either end in place, and joining two ranges that became adjacent only
 * copies the one chunk they share (O(chunk)), never shifts a whole range. Moving a range
 * into the in-order stream (pull) is O(1) when that stream is empty or happens to have the
 * same alignment, and otherwise re-aligns the range in place (one memmove per chunk, no new
 * chunk needed, so pull always succeeds even when the pool is dry).
 */
#include "buf.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---------- pool ---------- */

int tcp_buf_pool_init(struct buf_pool *p, uint32_t chunk_size, uint32_t nchunks)
{
    memset(p, 0, sizeof *p);
    p->free_head = BUF_NONE;
    if (chunk_size == 0 || nchunks == 0 || nchunks >= BUF_NONE)
        return -EINVAL;
    if ((uint64_t)chunk_size * nchunks > (uint64_t)SIZE_MAX / 2)
        return -ENOMEM;
    p->mem = malloc((size_t)chunk_size * nchunks);
    p->next = malloc((size_t)nchunks * sizeof *p->next);
    if (!p->mem || !p->next) {
        free(p->mem);
        free(p->next);
        p->mem = NULL;
        p->next = NULL;
        return -ENOMEM;
    }
    for (uint32_t i = 0; i + 1 < nchunks; i++)
        p->next[i] = i + 1;
    p->next[nchunks - 1] = BUF_NONE;
    p->chunk_size = chunk_size;
    p->nchunks = nchunks;
    p->free_head = 0;
    p->nfree = nchunks;
    return 0;
}

void tcp_buf_pool_fini(struct buf_pool *p)
{
    free(p->mem);
    free(p->next);
    memset(p, 0, sizeof *p);
    p->free_head = BUF_NONE;
}

uint32_t tcp_buf_chunk_get(struct buf_pool *p)
{
    uint32_t c = p->free_head;
    if (c == BUF_NONE)
        return BUF_NONE;
    p->free_head = p->next[c];
    p->next[c] = BUF_NONE;
    p->nfree--;
    return c;
}

void tcp_buf_chunk_put(struct buf_pool *p, uint32_t c)
{
    p->next[c] = p->free_head;
    p->free_head = c;
    p->nfree++;
}

static inline uint8_t *cptr(const struct buf_pool *p, uint32_t c)
{
    return p->mem + (size_t)c * p->chunk_size;
}

static inline uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* x / chunk_size and x % chunk_size: a shift and a mask for power-of-two chunk sizes (the
 * default 2048), a 32-bit division otherwise. Stream offsets fit in 32 bits: append keeps
 * head_off + len below 2^32. */
static inline uint32_t cdiv(const struct buf_pool *p, uint32_t x)
{
    uint32_t cs = p->chunk_size;
    return (cs & (cs - 1)) ? x / cs : x >> __builtin_ctz(cs);
}
static inline uint32_t cmod(const struct buf_pool *p, uint32_t x)
{
    uint32_t cs = p->chunk_size;
    return (cs & (cs - 1)) ? x % cs : x & (cs - 1);
}

/* ---------- stream ---------- */

void tcp_buf_stream_init(struct buf_stream *s)
{
    s->head = s->tail = BUF_NONE;
    s->head_off = 0;
    s->len = 0;
}

/* Offset just past the last byte in tail (1..cs), for a non-empty stream. */
static inline uint32_t tail_end(const struct buf_pool *p, const struct buf_stream *s)
{
    return cmod(p, s->head_off + s->len - 1) + 1;
}

/* Append; when the stream is empty its first byte goes at offset off0 of the first chunk. */
static uint32_t stream_append_at(struct buf_pool *p, struct buf_stream *s, uint32_t off0,
                                 const uint8_t *data, uint32_t len)
{
    const uint32_t cs = p->chunk_size;
    uint32_t done = 0, pos;
    /* keep head_off + len < 2^32 (offsets are 32-bit) */
    uint32_t room = 0xffffffffu - cs - s->len;
    if (s->len > 0xffffffffu - cs)
        room = 0;
    if (len > room)
        len = room;
    if (len == 0)
        return 0;
    if (s->len == 0) {
        uint32_t c = tcp_buf_chunk_get(p);
        if (c == BUF_NONE)
            return 0;
        s->head = s->tail = c;
        s->head_off = off0;
        pos = off0;
    } else {
        pos = tail_end(p, s);
    }
    for (;;) {
        if (pos == cs) {
            uint32_t c = tcp_buf_chunk_get(p);
            if (c == BUF_NONE)
                break;
            p->next[s->tail] = c;
            s->tail = c;
            pos = 0;
        }
        uint32_t n = min32(cs - pos, len - done);
        memcpy(cptr(p, s->tail) + pos, data + done, n);
        pos += n;
        done += n;
        if (done == len)
            break;
    }
    s->len += done;
    return done;
}

/* The k-th chunk of a non-empty stream: a walk from head, except that the last chunk is
 * reached directly through tail (freshly appended data is the common read target). */
static inline uint32_t chunk_at(const struct buf_pool *p, const struct buf_stream *s, uint32_t k)
{
    if (k == cdiv(p, s->head_off + s->len - 1))
        return s->tail;
    uint32_t c = s->head;
    for (; k; k--)
        c = p->next[c];
    return c;
}

uint32_t tcp_buf_stream_append(struct buf_pool *p, struct buf_stream *s, const uint8_t *data, uint32_t len)
{
    return stream_append_at(p, s, 0, data, len);
}

uint32_t tcp_buf_stream_peek(const struct buf_pool *p, const struct buf_stream *s, uint32_t off,
                         uint8_t *out, uint32_t len)
{
    const uint32_t cs = p->chunk_size;
    if (off >= s->len || len == 0)
        return 0;
    len = min32(len, s->len - off);
    uint32_t abs = s->head_off + off;
    uint32_t c = chunk_at(p, s, cdiv(p, abs));
    uint32_t pos = cmod(p, abs), done = 0;
    for (;;) {
        uint32_t n = min32(cs - pos, len - done);
        memcpy(out + done, cptr(p, c) + pos, n);
        done += n;
        if (done == len)
            return done;
        c = p->next[c];
        pos = 0;
    }
}

uint32_t tcp_buf_stream_peek_cur(const struct buf_pool *p, const struct buf_stream *s, uint32_t base,
                             uint32_t off, uint8_t *out, uint32_t len, struct buf_cursor *cur)
{
    const uint32_t cs = p->chunk_size;
    if (off >= s->len || len == 0)
        return 0;
    len = min32(len, s->len - off);
    uint32_t abs = s->head_off + off;
    uint32_t k = cdiv(p, abs);                      /* ordinal of the chunk holding off */
    uint32_t head_pos = base - s->head_off;         /* absolute number of head's slot 0 */
    uint32_t c = BUF_NONE;
    if (cur->chunk1) {
        uint32_t d = cur->pos - head_pos;           /* wraps (huge) when the chunk was consumed */
        uint32_t kc = cdiv(p, d);
        if (cmod(p, d) == 0 && kc <= k) {
            c = cur->chunk1 - 1;
            for (; kc < k; kc++)
                c = p->next[c];
        }
    }
    if (c == BUF_NONE)
        c = chunk_at(p, s, k);
    uint32_t pos = cmod(p, abs), done = 0;
    for (;;) {
        uint32_t n = min32(cs - pos, len - done);
        memcpy(out + done, cptr(p, c) + pos, n);
        done += n;
        if (done == len)
            break;
        c = p->next[c];
        k++;
        pos = 0;
    }
    cur->chunk1 = c + 1;
    cur->pos = head_pos + k * cs;
    return done;
}

uint32_t tcp_buf_stream_map(const struct buf_pool *p, const struct buf_stream *s, uint32_t off,
                        const uint8_t **ptr)
{
    const uint32_t cs = p->chunk_size;
    if (off >= s->len) {
        *ptr = NULL;
        return 0;
    }
    uint32_t abs = s->head_off + off;
    uint32_t c = chunk_at(p, s, cdiv(p, abs));
    uint32_t pos = cmod(p, abs);
    *ptr = cptr(p, c) + pos;
    return min32(cs - pos, s->len - off);
}

void tcp_buf_stream_consume(struct buf_pool *p, struct buf_stream *s, uint32_t n)
{
    const uint32_t cs = p->chunk_size;
    if (n >= s->len) {
        tcp_buf_stream_clear(p, s);
        return;
    }
    uint32_t abs = s->head_off + n;
    while (abs >= cs) {
        uint32_t c = s->head;
        s->head = p->next[c];
        tcp_buf_chunk_put(p, c);
        abs -= cs;
    }
    s->head_off = (uint32_t)abs;
    s->len -= n;
}

void tcp_buf_stream_clear(struct buf_pool *p, struct buf_stream *s)
{
    uint32_t c = s->head;
    if (c != BUF_NONE) {
        /* splice the whole chain onto the free list: walk only to count */
        uint32_t n = 1;
        while (c != s->tail) {
            c = p->next[c];
            n++;
        }
        p->next[s->tail] = p->free_head;
        p->free_head = s->head;
        p->nfree += n;
    }
    tcp_buf_stream_init(s);
}

/* Prepend up to len bytes (data[0..len)) so that the stream's alignment is kept: the new
 * first byte sits (len mod cs) bytes before the old one. When the pool cannot supply every
 * chunk, only the suffix that fits is stored. Returns bytes stored (a suffix of data). */
static uint32_t stream_prepend(struct buf_pool *p, struct buf_stream *s, const uint8_t *data, uint32_t len)
{
    const uint32_t cs = p->chunk_size;
    uint32_t h = s->head_off;
    if (len <= h) {
        memcpy(cptr(p, s->head) + h - len, data, len);
        s->head_off = h - len;
        s->len += len;
        return len;
    }
    uint32_t need = (uint32_t)(((uint64_t)len - h + cs - 1) / cs);
    uint32_t k = len;
    if (need > p->nfree) {
        need = p->nfree;
        k = h + need * cs;     /* everything that fits, ending right before the old first byte */
    }
    const uint8_t *src = data + (len - k);
    /* fill the head chunk [0, h) with the last h bytes */
    uint32_t rest = k - h;
    memcpy(cptr(p, s->head), src + rest, h);
    h = 0;
    while (rest) {
        uint32_t c = tcp_buf_chunk_get(p);
        uint32_t n = min32(cs, rest);
        memcpy(cptr(p, c) + cs - n, src + rest - n, n);
        p->next[c] = s->head;
        s->head = c;
        rest -= n;
        h = cs - n;
    }
    s->head_off = h;
    s->len += k;
    return k;
}

/* Moves every byte of src to the end of dst (src becomes empty). Needs no new chunk. If the
 * end of dst and the start of src sit at the same chunk offset, O(1) (plus one chunk's copy
 * when they share a partial chunk); otherwise src is re-aligned in place first. */
static void stream_concat(struct buf_pool *p, struct buf_stream *dst, struct buf_stream *src)
{
    const uint32_t cs = p->chunk_size;
    if (src->len == 0)
        return;
    if (dst->len == 0) {
        *dst = *src;
        tcp_buf_stream_init(src);
        return;
    }
    uint32_t e = tail_end(p, dst);      /* 1..cs */
    if (e % cs != src->head_off) {
        /* fill dst's tail from src's front, then shift src down so that it starts at 0 */
        if (e < cs) {
            uint32_t n = min32(cs - e, src->len);
            tcp_buf_stream_peek(p, src, 0, cptr(p, dst->tail) + e, n);
            dst->len += n;
            tcp_buf_stream_consume(p, src, n);
            if (src->len == 0)
                return;
        }
        uint32_t h = src->head_off;
        if (h != 0) {
            uint32_t c = src->head, rem = src->len, last = c;
            for (;;) {
                uint32_t n1 = min32(cs - h, rem);
                memmove(cptr(p, c), cptr(p, c) + h, n1);
                rem -= n1;
                last = c;
                if (!rem)
                    break;
                uint32_t nx = p->next[c];
                uint32_t n2 = min32(h, rem);
                memcpy(cptr(p, c) + n1, cptr(p, nx), n2);
                rem -= n2;
                if (!rem)
                    break;
                c = nx;
            }
            if (last != src->tail) {        /* the old tail's bytes all moved down */
                tcp_buf_chunk_put(p, src->tail);
                src->tail = last;
            }
            p->next[last] = BUF_NONE;
            src->head_off = 0;
        }
        p->next[dst->tail] = src->head;
        dst->tail = src->tail;
        dst->len += src->len;
        tcp_buf_stream_init(src);
        return;
    }
    if (e == cs) {                       /* dst's tail is full, src starts a chunk */
        p->next[dst->tail] = src->head;
        dst->tail = src->tail;
    } else {                             /* both hold part of the same chunk-sized block */
        uint32_t c = src->head;
        uint32_t n = min32(cs - e, src->len);
        memcpy(cptr(p, dst->tail) + e, cptr(p, c) + e, n);
        if (c != src->tail) {
            p->next[dst->tail] = p->next[c];
            dst->tail = src->tail;
        }
        tcp_buf_chunk_put(p, c);
    }
    dst->len += src->len;
    tcp_buf_stream_init(src);
}

/* ---------- out-of-order reassembly ---------- */

void tcp_buf_ooo_init(struct buf_ooo *o)
{
    o->n = 0;
    o->last = 0;
    for (int i = 0; i < BUF_OOO_MAX; i++) {
        o->r[i].seq = 0;
        o->r[i].len = 0;
        tcp_buf_stream_init(&o->r[i].data);
    }
}

static void ooo_remove(struct buf_ooo *o, uint32_t i)
{
    for (uint32_t j = i; j + 1 < o->n; j++)
        o->r[j] = o->r[j + 1];
    o->n--;
    tcp_buf_stream_init(&o->r[o->n].data);
    o->r[o->n].len = 0;
    if (o->last > i)
        o->last--;
    else if (o->last == i)
        o->last = 0;
    if (o->last >= o->n)
        o->last = 0;
}

/* Drops every byte before rcv_nxt (TCP may have advanced rcv_nxt over held data). */
static void ooo_trim(struct buf_pool *p, struct buf_ooo *o, uint32_t rcv_nxt)
{
    while (o->n && seq_lt(o->r[0].seq, rcv_nxt)) {
        struct buf_ooo_range *r = &o->r[0];
        uint32_t d = rcv_nxt - r->seq;
        if (d >= r->len) {
            tcp_buf_stream_clear(p, &r->data);
            ooo_remove(o, 0);
            continue;
        }
        tcp_buf_stream_consume(p, &r->data, d);
        r->seq += d;
        r->len -= d;
        break;
    }
}

/* Chunk offset of the byte with sequence seq, consistent with the ranges held. */
static uint32_t ooo_align(const struct buf_pool *p, const struct buf_ooo *o, uint32_t seq)
{
    const uint32_t cs = p->chunk_size;
    if (o->n == 0)
        return seq % cs;
    int64_t d = (int32_t)(seq - o->r[0].seq);
    int64_t a = ((int64_t)o->r[0].data.head_off + d) % cs;
    return (uint32_t)(a < 0 ? a + cs : a);
}

int tcp_buf_ooo_insert(struct buf_pool *p, struct buf_ooo *o, uint32_t rcv_nxt, uint32_t seq,
                   const uint8_t *data, uint32_t len)
{
    if (len == 0)
        return 0;
    if (seq_lt(seq, rcv_nxt)) {
        uint32_t d = rcv_nxt - seq;
        if (d >= len)
            return 0;
        seq += d;
        data += d;
        len -= d;
    }
    if (len > 0x7fffffffu - (seq - rcv_nxt)) {    /* keep relative offsets in [0, 2^31] */
        if (seq - rcv_nxt >= 0x7fffffffu)
            return 0;
        len = 0x7fffffffu - (seq - rcv_nxt);
    }
    ooo_trim(p, o, rcv_nxt);

    /* work in offsets relative to rcv_nxt: [s, e) */
    const uint32_t s = seq - rcv_nxt, e = s + len;
#define RS(i) (o->r[i].seq - rcv_nxt)
#define RE(i) (o->r[i].seq - rcv_nxt + o->r[i].len)
    uint32_t pos = s, stored = 0, i = 0;
    int err = 0;
    while (i < o->n && RE(i) < pos)
        i++;
    while (pos < e) {
        if (i < o->n && RS(i) <= pos) {
            struct buf_ooo_range *r = &o->r[i];
            if (pos < RE(i)) {                       /* already held: first copy wins */
                pos = min32(e, RE(i));
                continue;
            }
            /* pos == end of range i: the gap after it extends it */
            uint32_t ge = e;
            int touch_next = 0;
            if (i + 1 < o->n && RS(i + 1) <= e) {
                ge = RS(i + 1);
                touch_next = 1;
            }
            uint32_t want = ge - pos;
            uint32_t k = stream_append_at(p, &r->data, 0, data + (pos - s), want);
            r->len += k;
            stored += k;
            pos += k;
            if (k < want) {
                err = 1;
                break;
            }
            if (touch_next) {                        /* now adjacent: join i and i+1 */
                struct buf_ooo_range *nx = &o->r[i + 1];
                uint32_t nlen = nx->len;
                stream_concat(p, &r->data, &nx->data);
                r->len += nlen;
                ooo_remove(o, i + 1);
            }
            continue;
        }
        /* pos lies before range i (or after every range): a gap [pos, ge) */
        if (i < o->n && RS(i) <= e) {                /* ends at range i: grow it downwards */
            struct buf_ooo_range *r = &o->r[i];
            uint32_t ge = RS(i);
            uint32_t want = ge - pos;
            uint32_t k = stream_prepend(p, &r->data, data + (pos - s), want);
            r->seq -= k;
            r->len += k;
            stored += k;
            if (k < want) {
                err = 1;
                break;
            }
            pos = ge;
            continue;
        }
        /* a new range at index i holding [pos, e) */
        if (o->n >= BUF_OOO_MAX) {
            err = 1;
            break;
        }
        struct buf_stream ns;
        tcp_buf_stream_init(&ns);
        uint32_t k = stream_append_at(p, &ns, ooo_align(p, o, rcv_nxt + pos), data + (pos - s), e - pos);
        if (k == 0) {
            err = 1;
            break;
        }
        for (uint32_t j = o->n; j > i; j--)
            o->r[j] = o->r[j - 1];
        o->n++;
        if (o->last >= i && o->n > 1)
            o->last++;
        o->r[i].seq = rcv_nxt + pos;
        o->r[i].len = k;
        o->r[i].data = ns;
        stored += k;
        pos += k;
        if (pos < e) {
            err = 1;
            break;
        }
    }
    /* RFC 2018: the first SACK block reports the range holding (the first held byte of)
     * the segment that triggered this ACK. */
    for (uint32_t j = 0; j < o->n; j++)
        if (RE(j) > s && RS(j) < e) {
            o->last = (uint8_t)j;
            break;
        }
#undef RS
#undef RE
    return err ? -ENOBUFS : (int)stored;
}

uint32_t tcp_buf_ooo_pull(struct buf_pool *p, struct buf_ooo *o, uint32_t rcv_nxt, struct buf_stream *dst)
{
    ooo_trim(p, o, rcv_nxt);
    if (o->n == 0 || o->r[0].seq != rcv_nxt)
        return 0;
    uint32_t n = o->r[0].len;
    stream_concat(p, dst, &o->r[0].data);
    ooo_remove(o, 0);
    return n;
}

uint32_t tcp_buf_ooo_sack(const struct buf_ooo *o, uint32_t *left, uint32_t *right, uint32_t max)
{
    uint32_t k = 0;
    if (o->n == 0 || max == 0)
        return 0;
    uint32_t first = o->last < o->n ? o->last : 0;
    left[k] = o->r[first].seq;
    right[k] = o->r[first].seq + o->r[first].len;
    k++;
    for (uint32_t i = 0; i < o->n && k < max; i++) {
        if (i == first)
            continue;
        left[k] = o->r[i].seq;
        right[k] = o->r[i].seq + o->r[i].len;
        k++;
    }
    return k;
}

uint32_t tcp_buf_ooo_bytes(const struct buf_ooo *o)
{
    uint32_t t = 0;
    for (uint32_t i = 0; i < o->n; i++)
        t += o->r[i].len;
    return t;
}

void tcp_buf_ooo_clear(struct buf_pool *p, struct buf_ooo *o)
{
    for (uint32_t i = 0; i < o->n; i++)
        tcp_buf_stream_clear(p, &o->r[i].data);
    tcp_buf_ooo_init(o);
}
