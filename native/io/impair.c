/*
 * impair.c — the impairment wrapper (mtcp_impair_wrap): loss, duplicate, reorder, delay +
 * jitter, corrupt (one bit flip) and rate limit, applied to frames in both directions of any
 * link. This kernel has no netem; this is how faults are injected, also against kernel peers.
 *
 * Shape: the wrapper is a link with its own rings. txsync takes the frames the engine
 * released, impairs them and copies them into the inner link's TX ring, then txsyncs the
 * inner link. rxsync rxsyncs the inner link, impairs every received frame and copies it
 * into the wrapper's RX ring. fd / claim_port / release_port are the inner link's;
 * next_deadline is the earliest of the inner link's and the wrapper's own (delayed frames,
 * frames held back for reordering).
 *
 * Per frame and direction, in this order (each draw from the direction's own PRNG, drawn only
 * when that impairment is enabled, so a configuration replays exactly for a given seed):
 *   1. loss:      dropped with probability `loss`.
 *   2. corrupt:   with probability `corrupt` one bit anywhere in the frame is flipped. A
 *                 partial checksum (LINK_SLOT_F_CSUM_PARTIAL) is completed first and the
 *                 CSUM flags are cleared, so the receiver's checksum check can see the damage.
 *                 A TX GSO super-frame cannot carry a detectable flip (the kernel recomputes
 *                 checksums per segment), so it is dropped instead (still counted as corrupted).
 *   3. duplicate: with probability `duplicate` the frame is sent twice.
 *   4. reorder:   with probability `reorder` a frame is held back and released after
 *                 IMP_REORDER_GAP later frames of the same direction have passed it, or after
 *                 IMP_REORDER_HOLD_US if the stream goes quiet (no stalls).
 *   5. rate:      token bucket (rate_bps, burst = max(16 frames of 1514 B, 1 ms of rate));
 *                 a frame waits for its tokens (queueing delay); a frame that would wait more
 *                 than IMP_RATE_MAX_QUEUE_US is dropped (tail drop, counted as dropped).
 *   6. delay:     released at departure + delay_us + uniform(-jitter_us, +jitter_us), but never
 *                 before the previous frame of the same direction: jitter does not reorder
 *                 (that is the reorder knob's job), the delay queue is a time-ordered FIFO.
 * Counters (mtcp_impair_counters): dropped (loss + rate tail drops + queue overflow),
 * duplicated, reordered, corrupted, delayed (frames released later than they arrived).
 *
 * Fault scripting (mtcp_fault_add, rules table below): before stage 1, every rule whose time
 * window, side (TX/RX), endpoints and TCP flags match a frame counts it; past its `skip` and
 * within its `count` it acts: drop (stop), corrupt (as stage 2, but deterministic: the last
 * byte's low bit), duplicate, or delay. A scripted delay sends the frame through a second
 * time-ordered FIFO of the direction, so one delayed flow does not hold back the others.
 * Rules read no clock: the window is compared with the now_us every sync is given (the loop's
 * virtual clock in virtual-time mode).
 *
 * Memory: per direction one byte FIFO (IMP_FIFO_BYTES, records of header + frame) and
 * IMP_HELD_MAX hold-back buffers, allocated in mtcp_impair_wrap; the scripted-delay FIFOs when
 * the first delay rule is added; nothing per packet.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "link.h"
#include "io_util.h"

#define IMP_REORDER_GAP 3u
#define IMP_REORDER_HOLD_US 2000u
#define IMP_HELD_MAX 32u
#define IMP_FIFO_BYTES (8u << 20)
#define IMP_RATE_MAX_QUEUE_US 100000u

enum { IMP_TX = 0, IMP_RX = 1 };
enum { C_DROPPED, C_DUPLICATED, C_REORDERED, C_CORRUPTED, C_DELAYED };

struct imp_rec {            /* FIFO record header, followed by len bytes (padded to 8) */
    uint64_t release;
    uint32_t len;
    uint16_t flags, gso_size, csum_start, csum_offset;
    uint32_t pad;
};

struct imp_held {
    uint8_t *buf;
    uint64_t deadline;
    uint32_t remaining;     /* later frames still to pass it */
    uint32_t len;
    uint16_t flags, gso_size, csum_start, csum_offset;
    int used;
};

struct imp_q {              /* a time-ordered FIFO of delayed frames */
    uint8_t *fifo;          /* IMP_FIFO_BYTES (power of two) */
    uint64_t rd, wr;        /* free-running byte offsets */
    uint64_t last_release;
};

struct imp_dir {
    struct io_rng rng;
    struct imp_q q[2];      /* [0]: impairment delay/rate; [1]: scripted delays (lazily) */
    double tb_tokens;       /* bits */
    uint64_t tb_time;       /* us the token count refers to */
    struct imp_held held[IMP_HELD_MAX];
    uint32_t nheld;
};

struct imp_rule {
    struct mtcp_fault f;
    uint64_t matched, acted;
    int used;
};

struct imp_link {
    struct mtcp_link l;
    struct mtcp_link *inner;
    struct mtcp_impair cfg;
    double burst_bits;
    uint32_t tx_hwcur;
    struct imp_dir dir[2];
    uint64_t counters[5];
    uint8_t *held_area;
    uint32_t nrules;        /* used entries in rules[] */
    struct imp_rule rules[MTCP_FAULT_MAX_RULES];
};

/* ---- byte FIFO with wrap ---- */
static void fifo_write(struct imp_q *d, uint64_t off, const void *src, size_t n)
{
    size_t o = (size_t)(off & (IMP_FIFO_BYTES - 1)), first = IMP_FIFO_BYTES - o;
    if (first >= n) {
        memcpy(d->fifo + o, src, n);
    } else {
        memcpy(d->fifo + o, src, first);
        memcpy(d->fifo, (const uint8_t *)src + first, n - first);
    }
}

static void fifo_read(const struct imp_q *d, uint64_t off, void *dst, size_t n)
{
    size_t o = (size_t)(off & (IMP_FIFO_BYTES - 1)), first = IMP_FIFO_BYTES - o;
    if (first >= n) {
        memcpy(dst, d->fifo + o, n);
    } else {
        memcpy(dst, d->fifo + o, first);
        memcpy((uint8_t *)dst + first, d->fifo, n - first);
    }
}

static inline size_t rec_size(uint32_t len) { return sizeof(struct imp_rec) + ((len + 7u) & ~7u); }

/* ---- sinks: where a released frame goes ---- */
static int sink_put(struct imp_link *w, int dir, const uint8_t *buf, uint32_t len, uint16_t flags,
                    uint16_t gso, uint16_t cs, uint16_t co, const struct imp_q *d, uint64_t fifo_off)
{
    struct link_ring *r;
    struct link_slot *s;
    if (dir == IMP_TX) {
        r = &w->inner->tx;
        if (link_ring_space(r) == 0)
            return -1;
        s = &r->slot[r->head];
    } else {
        r = &w->l.rx;
        if (link_ring_next(r, r->tail) == r->head)
            return -1;
        s = &r->slot[r->tail];
    }
    if (len > r->buf_size) {
        w->counters[C_DROPPED]++;     /* cannot happen with equal buffer sizes; never truncate */
        return 0;
    }
    if (buf)
        memcpy(s->buf, buf, len);
    else
        fifo_read(d, fifo_off, s->buf, len);
    s->len = len;
    s->flags = flags;
    s->gso_size = gso;
    s->csum_start = cs;
    s->csum_offset = co;
    if (dir == IMP_TX)
        r->head = r->cur = link_ring_next(r, r->head);
    else
        r->tail = link_ring_next(r, r->tail);
    return 0;
}

/* ---- stage 5+6: rate and delay, then out (directly or through a FIFO) ---- */
static void imp_enqueue(struct imp_link *w, int dir, const uint8_t *buf, uint32_t len, uint16_t flags,
                        uint16_t gso, uint16_t cs, uint16_t co, uint64_t now, uint32_t extra_us)
{
    struct imp_dir *dd = &w->dir[dir];
    struct imp_q *d = &dd->q[extra_us && dd->q[1].fifo ? 1 : 0];
    const struct mtcp_impair *c = &w->cfg;
    uint64_t depart = now;
    if (c->rate_bps) {
        uint64_t t = now > dd->tb_time ? now : dd->tb_time;
        double tokens = dd->tb_tokens + (double)(t - dd->tb_time) * (double)c->rate_bps / 1e6;
        if (tokens > w->burst_bits)
            tokens = w->burst_bits;
        double bits = (double)len * 8.0;
        if (tokens >= bits) {
            depart = t;
            tokens -= bits;
        } else {
            depart = t + (uint64_t)ceil((bits - tokens) * 1e6 / (double)c->rate_bps);
            tokens = 0;
        }
        if (depart - now > IMP_RATE_MAX_QUEUE_US) {
            w->counters[C_DROPPED]++;      /* queue full: tail drop, bucket unchanged */
            return;
        }
        dd->tb_time = depart;
        dd->tb_tokens = tokens;
    }
    uint64_t release = depart + c->delay_us;
    if (c->jitter_us) {
        int64_t j = (int64_t)io_rng_below(&dd->rng, 2ull * c->jitter_us + 1) - (int64_t)c->jitter_us;
        release = (int64_t)release + j < (int64_t)depart ? depart : (uint64_t)((int64_t)release + j);
    }
    release += extra_us;
    if (release < d->last_release)
        release = d->last_release;
    d->last_release = release;
    if (release > now)
        w->counters[C_DELAYED]++;
    if (d->rd == d->wr && release <= now &&
        sink_put(w, dir, buf, len, flags, gso, cs, co, NULL, 0) == 0)
        return;
    size_t need = rec_size(len);
    if (IMP_FIFO_BYTES - (d->wr - d->rd) < need) {
        w->counters[C_DROPPED]++;
        return;
    }
    struct imp_rec rec = { .release = release, .len = len, .flags = flags, .gso_size = gso,
                           .csum_start = cs, .csum_offset = co, .pad = 0 };
    fifo_write(d, d->wr, &rec, sizeof(rec));
    fifo_write(d, d->wr + sizeof(rec), buf, len);
    d->wr += need;
}

/* Release every due frame of the FIFOs into the sink (stops when the sink is full). */
static void imp_drain_q(struct imp_link *w, int dir, struct imp_q *d, uint64_t now)
{
    while (d->rd != d->wr) {
        struct imp_rec rec;
        fifo_read(d, d->rd, &rec, sizeof(rec));
        if (rec.release > now)
            break;
        if (sink_put(w, dir, NULL, rec.len, rec.flags, rec.gso_size, rec.csum_start, rec.csum_offset,
                     d, d->rd + sizeof(rec)) != 0)
            break;
        d->rd += rec_size(rec.len);
    }
}

static void imp_drain(struct imp_link *w, int dir, uint64_t now)
{
    imp_drain_q(w, dir, &w->dir[dir].q[0], now);
    if (w->dir[dir].q[1].fifo)
        imp_drain_q(w, dir, &w->dir[dir].q[1], now);
}

static void held_release(struct imp_link *w, int dir, struct imp_held *h, uint64_t now)
{
    struct imp_dir *d = &w->dir[dir];
    h->used = 0;
    d->nheld--;
    imp_enqueue(w, dir, h->buf, h->len, h->flags, h->gso_size, h->csum_start, h->csum_offset, now, 0);
}

/* A frame passed the held ones: count down, release those whose gap is reached. */
static void held_passed(struct imp_link *w, int dir, uint64_t now)
{
    struct imp_dir *d = &w->dir[dir];
    if (!d->nheld)
        return;
    for (uint32_t i = 0; i < IMP_HELD_MAX; i++) {
        struct imp_held *h = &d->held[i];
        if (h->used && --h->remaining == 0)
            held_release(w, dir, h, now);
    }
}

static void held_expire(struct imp_link *w, int dir, uint64_t now)
{
    struct imp_dir *d = &w->dir[dir];
    if (!d->nheld)
        return;
    /* oldest first so two expired frames keep their order */
    for (;;) {
        struct imp_held *best = NULL;
        for (uint32_t i = 0; i < IMP_HELD_MAX; i++) {
            struct imp_held *h = &d->held[i];
            if (h->used && h->deadline <= now && (!best || h->deadline < best->deadline))
                best = h;
        }
        if (!best)
            break;
        held_release(w, dir, best, now);
    }
}

/* ---- fault rules ---- */
struct imp_seg {            /* what a rule looks at in a frame */
    uint8_t family;         /* MTCP_AF_INET / MTCP_AF_INET6 */
    uint8_t tcpflags;
    uint16_t sport, dport;
    uint32_t paylen;
    const uint8_t *src, *dst;
};

/* A TCP segment's addresses, ports, flags and payload length; 0 if the frame is not one. */
static int seg_parse(const uint8_t *f, uint32_t len, uint32_t link_type, struct imp_seg *g)
{
    uint32_t off = 0;
    if (link_type == MTCP_LINK_ETHERNET) {
        off = 12;
        for (;;) {
            if (off + 2 > len)
                return 0;
            uint16_t et = (uint16_t)(f[off] << 8 | f[off + 1]);
            off += 2;
            if (et == 0x8100 || et == 0x88a8) { off += 2; continue; }
            if (et != 0x0800 && et != 0x86dd)
                return 0;
            break;
        }
    }
    if (off + 20 > len)
        return 0;
    uint32_t tcp, end;
    if (f[off] >> 4 == 4) {
        uint32_t ihl = (uint32_t)(f[off] & 15) * 4;
        if (ihl < 20 || f[off + 9] != 6 || ((f[off + 6] << 8 | f[off + 7]) & 0x1fff))
            return 0;
        g->family = MTCP_AF_INET;
        g->src = f + off + 12;
        g->dst = f + off + 16;
        tcp = off + ihl;
        end = off + ((uint32_t)f[off + 2] << 8 | f[off + 3]);
    } else if (f[off] >> 4 == 6) {
        if (off + 40 > len || f[off + 6] != 6)
            return 0;
        g->family = MTCP_AF_INET6;
        g->src = f + off + 8;
        g->dst = f + off + 24;
        tcp = off + 40;
        end = tcp + ((uint32_t)f[off + 4] << 8 | f[off + 5]);
    } else {
        return 0;
    }
    if (end > len || end <= tcp)
        end = len;                 /* 0 length (TSO super-frame) or padding: the frame end */
    if (tcp + 20 > end)
        return 0;
    uint32_t doff = (uint32_t)(f[tcp + 12] >> 4) * 4;
    if (doff < 20 || tcp + doff > end)
        return 0;
    g->sport = (uint16_t)(f[tcp] << 8 | f[tcp + 1]);
    g->dport = (uint16_t)(f[tcp + 2] << 8 | f[tcp + 3]);
    g->tcpflags = f[tcp + 13];
    g->paylen = end - tcp - doff;
    return 1;
}

static int ep_match(const struct mtcp_addr *e, const struct imp_seg *g, const uint8_t *ip, uint16_t port)
{
    static const uint8_t zero[16];
    if (e->family && e->family != g->family)
        return 0;
    if (e->port && e->port != port)
        return 0;
    if (e->family) {
        size_t n = g->family == MTCP_AF_INET ? 4 : 16;
        if (memcmp(e->ip, zero, n) != 0 && memcmp(e->ip, ip, n) != 0)
            return 0;
    }
    return 1;
}

static int rule_match(const struct mtcp_fault *f, const struct imp_seg *g)
{
    if ((g->tcpflags & f->tcp_mask) != f->tcp_value)
        return 0;
    if ((f->flags & MTCP_FAULT_DATA) && g->paylen == 0)
        return 0;
    if (ep_match(&f->a, g, g->src, g->sport) && ep_match(&f->b, g, g->dst, g->dport))
        return 1;
    return (f->flags & MTCP_FAULT_BOTH_WAYS) && ep_match(&f->a, g, g->dst, g->dport) &&
           ep_match(&f->b, g, g->src, g->sport);
}

/* Run the rules on one frame: 1 = dropped; else *flags, *copies, *extra_us updated. */
static int rules_apply(struct imp_link *w, int dir, struct link_slot *s, uint64_t now,
                       uint16_t *flags, int *copies, uint32_t *extra_us)
{
    struct imp_seg g;
    if (!seg_parse(s->buf, s->len, w->l.link_type, &g))
        return 0;
    uint32_t want = dir == IMP_TX ? MTCP_FAULT_DIR_TX : MTCP_FAULT_DIR_RX;
    for (uint32_t i = 0, seen = 0; i < MTCP_FAULT_MAX_RULES && seen < w->nrules; i++) {
        struct imp_rule *r = &w->rules[i];
        if (!r->used)
            continue;
        seen++;
        const struct mtcp_fault *f = &r->f;
        if (!(f->dirs & want) || now < f->start_us || (f->end_us && now >= f->end_us) ||
            !rule_match(f, &g))
            continue;
        r->matched++;
        if (r->matched <= f->skip || (f->count && r->acted >= f->count))
            continue;
        r->acted++;
        switch (f->action) {
        case MTCP_FAULT_DROP:
            return 1;
        case MTCP_FAULT_DUPLICATE:
            *copies = 2;
            break;
        case MTCP_FAULT_DELAY:
            *extra_us += f->delay_us;
            break;
        case MTCP_FAULT_CORRUPT:
            if (dir == IMP_TX && (*flags & LINK_SLOT_F_GSO))
                return 1;       /* as stage 2: a super-frame cannot carry a detectable flip */
            {
                uint32_t end = io_ip_end(s->buf, s->len, w->l.link_type);
                if ((*flags & LINK_SLOT_F_CSUM_PARTIAL) &&
                    io_csum_finalize(s->buf, end, s->csum_start, s->csum_offset) != 0)
                    return 1;
                s->buf[end - 1] ^= 1u;
                *flags &= (uint16_t)~(LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID);
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

/* ---- stages 1-4 ---- */
static void imp_input(struct imp_link *w, int dir, struct link_slot *s, uint64_t now)
{
    struct imp_dir *d = &w->dir[dir];
    const struct mtcp_impair *c = &w->cfg;
    uint16_t flags = s->flags;
    int copies = 1;
    uint32_t extra_us = 0;
    if (w->nrules && rules_apply(w, dir, s, now, &flags, &copies, &extra_us))
        return;
    if (c->loss > 0 && io_rng_double(&d->rng) < c->loss) {
        w->counters[C_DROPPED]++;
        return;
    }
    if (c->corrupt > 0 && io_rng_double(&d->rng) < c->corrupt && s->len > 0) {
        w->counters[C_CORRUPTED]++;
        if (dir == IMP_TX && (flags & LINK_SLOT_F_GSO))
            return;
        if ((flags & LINK_SLOT_F_CSUM_PARTIAL) &&
            io_csum_finalize(s->buf, io_ip_end(s->buf, s->len, w->l.link_type), s->csum_start,
                             s->csum_offset) != 0)
            return;
        uint64_t bit = io_rng_below(&d->rng, (uint64_t)s->len * 8);
        s->buf[bit >> 3] ^= (uint8_t)(1u << (bit & 7));
        flags &= (uint16_t)~(LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID);
    }
    if (c->duplicate > 0 && io_rng_double(&d->rng) < c->duplicate) {
        copies = 2;
        w->counters[C_DUPLICATED]++;
    }
    for (int k = 0; k < copies; k++) {
        if (c->reorder > 0 && io_rng_double(&d->rng) < c->reorder && d->nheld < IMP_HELD_MAX) {
            struct imp_held *h = NULL;
            for (uint32_t i = 0; i < IMP_HELD_MAX; i++)
                if (!d->held[i].used) { h = &d->held[i]; break; }
            if (h && s->len <= w->l.rx.buf_size) {
                memcpy(h->buf, s->buf, s->len);
                h->len = s->len;
                h->flags = flags;
                h->gso_size = s->gso_size;
                h->csum_start = s->csum_start;
                h->csum_offset = s->csum_offset;
                h->remaining = IMP_REORDER_GAP;
                h->deadline = now + IMP_REORDER_HOLD_US;
                h->used = 1;
                d->nheld++;
                w->counters[C_REORDERED]++;
                continue;
            }
        }
        imp_enqueue(w, dir, s->buf, s->len, flags, s->gso_size, s->csum_start, s->csum_offset, now,
                    extra_us);
        held_passed(w, dir, now);
    }
}

/* ---- link ops ---- */
static int imp_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct imp_link *w = (struct imp_link *)l;
    struct mtcp_link *in = w->inner;
    struct link_ring *r = &l->rx;
    uint32_t old = r->tail;
    int rc = link_rxsync(in, now);
    held_expire(w, IMP_RX, now);
    imp_drain(w, IMP_RX, now);
    struct link_ring *ir = &in->rx;
    while (ir->head != ir->tail) {
        imp_input(w, IMP_RX, &ir->slot[ir->head], now);
        ir->head = ir->cur = link_ring_next(ir, ir->head);
    }
    imp_drain(w, IMP_RX, now);
    uint32_t n = 0;
    for (uint32_t i = old; i != r->tail; i = link_ring_next(r, i), n++)
        if (l->pcap)
            link_pcap_slot(l, &r->slot[i], now);
    return rc < 0 ? rc : (int)n;
}

static int imp_txsync(struct mtcp_link *l, uint64_t now)
{
    struct imp_link *w = (struct imp_link *)l;
    struct link_ring *t = &l->tx;
    held_expire(w, IMP_TX, now);
    imp_drain(w, IMP_TX, now);
    uint32_t n = 0;
    for (uint32_t i = w->tx_hwcur; i != t->head; i = link_ring_next(t, i), n++) {
        struct link_slot *s = &t->slot[i];
        if (l->pcap)
            link_pcap_slot(l, s, now);
        imp_input(w, IMP_TX, s, now);
    }
    w->tx_hwcur = t->head;
    t->tail = (t->head + t->mask) & t->mask;
    imp_drain(w, IMP_TX, now);
    int rc = link_txsync(w->inner, now);
    struct imp_dir *d = &w->dir[IMP_TX];
    if (rc >= 0 && (d->q[0].rd != d->q[0].wr || d->q[1].rd != d->q[1].wr) &&
        link_ring_space(&w->inner->tx) > 0) {
        uint32_t before = w->inner->tx.head;
        imp_drain(w, IMP_TX, now);       /* the inner ring had been full: one more round */
        if (w->inner->tx.head != before)
            rc = link_txsync(w->inner, now);
    }
    return rc < 0 ? rc : (int)n;
}

static int imp_fd(struct mtcp_link *l) { return mtcp_link_fd(((struct imp_link *)l)->inner); }

static int64_t imp_next_deadline(struct mtcp_link *l)
{
    struct imp_link *w = (struct imp_link *)l;
    int64_t best = link_next_deadline(w->inner);
    for (int k = 0; k < 2; k++) {
        struct imp_dir *d = &w->dir[k];
        for (int qi = 0; qi < 2; qi++) {
            struct imp_q *q = &d->q[qi];
            if (q->rd != q->wr) {
                struct imp_rec rec;
                fifo_read(q, q->rd, &rec, sizeof(rec));
                if (best < 0 || (int64_t)rec.release < best)
                    best = (int64_t)rec.release;
            }
        }
        if (d->nheld)
            for (uint32_t i = 0; i < IMP_HELD_MAX; i++)
                if (d->held[i].used && (best < 0 || (int64_t)d->held[i].deadline < best))
                    best = (int64_t)d->held[i].deadline;
    }
    return best;
}

static int imp_claim(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    struct mtcp_link *in = ((struct imp_link *)l)->inner;
    return in->ops->claim_port ? in->ops->claim_port(in, family, port, listener) : 0;
}

static void imp_release(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    struct mtcp_link *in = ((struct imp_link *)l)->inner;
    if (in->ops->release_port)
        in->ops->release_port(in, family, port, listener);
}

static void imp_destroy(struct mtcp_link *l)
{
    struct imp_link *w = (struct imp_link *)l;
    mtcp_link_close(w->inner);
    for (int k = 0; k < 2; k++)
        for (int qi = 0; qi < 2; qi++)
            free(w->dir[k].q[qi].fifo);
    free(w->held_area);
    link_rings_free(l);
    free(w);
}

static void imp_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct mtcp_link *in = ((struct imp_link *)l)->inner;
    if (in->ops->stats)
        in->ops->stats(in, o);
}

static const struct link_ops imp_ops = {
    .name = "impair",
    .rxsync = imp_rxsync,
    .txsync = imp_txsync,
    .fd = imp_fd,
    .next_deadline = imp_next_deadline,
    .claim_port = imp_claim,
    .release_port = imp_release,
    .destroy = imp_destroy,
    .stats = imp_stats,
};

static int prob_ok(double p) { return p >= 0.0 && p <= 1.0; }   /* false for NaN */

mtcp_link *mtcp_impair_wrap(mtcp_link *inner, const struct mtcp_impair *cfg, char *err, size_t errlen)
{
    char msg[160];
    if (!inner || !cfg) {
        io_errf(err, errlen, "impair: inner link and config are required");
        return NULL;
    }
    const char *bad = !prob_ok(cfg->loss) ? "loss" : !prob_ok(cfg->duplicate) ? "duplicate"
                    : !prob_ok(cfg->reorder) ? "reorder" : !prob_ok(cfg->corrupt) ? "corrupt" : NULL;
    if (bad) {
        snprintf(msg, sizeof(msg), "impair: %s must be a probability in [0, 1]", bad);
        io_errf(err, errlen, msg);
        return NULL;
    }
    if (cfg->delay_us > 60000000u || cfg->jitter_us > 60000000u) {
        io_errf(err, errlen, cfg->delay_us > 60000000u ? "impair: delay must be <= 60 s"
                                                       : "impair: jitter must be <= 60 s");
        return NULL;
    }
    if (cfg->rate_bps && cfg->rate_bps < 8000) {
        io_errf(err, errlen, "impair: rate must be 0 (unlimited) or >= 8 kbit/s");
        return NULL;
    }
    struct imp_link *w = calloc(1, sizeof(*w));
    if (!w) {
        io_errf(err, errlen, "impair: out of memory");
        return NULL;
    }
    uint32_t bs = inner->rx.buf_size > inner->tx.buf_size ? inner->rx.buf_size : inner->tx.buf_size;
    if (link_rings_alloc(&w->l, inner->rx.num_slots, inner->tx.num_slots, bs) != 0) {
        free(w);
        io_errf(err, errlen, "impair: cannot allocate rings");
        return NULL;
    }
    w->dir[0].q[0].fifo = malloc(IMP_FIFO_BYTES);
    w->dir[1].q[0].fifo = malloc(IMP_FIFO_BYTES);
    w->held_area = malloc((size_t)2 * IMP_HELD_MAX * w->l.rx.buf_size);
    if (!w->dir[0].q[0].fifo || !w->dir[1].q[0].fifo || !w->held_area) {
        free(w->dir[0].q[0].fifo);
        free(w->dir[1].q[0].fifo);
        free(w->held_area);
        link_rings_free(&w->l);
        free(w);
        io_errf(err, errlen, "impair: out of memory");
        return NULL;
    }
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; i < IMP_HELD_MAX; i++)
            w->dir[k].held[i].buf = w->held_area + ((size_t)k * IMP_HELD_MAX + i) * w->l.rx.buf_size;
    w->inner = inner;
    w->cfg = *cfg;
    io_rng_seed(&w->dir[IMP_TX].rng, cfg->seed);
    io_rng_seed(&w->dir[IMP_RX].rng, cfg->seed ^ 0x5a5a5a5a5a5a5a5aULL);
    if (cfg->rate_bps) {
        double b1ms = (double)cfg->rate_bps / 1000.0, b16 = 16.0 * 1514 * 8;
        w->burst_bits = b1ms > b16 ? b1ms : b16;
        w->dir[0].tb_tokens = w->dir[1].tb_tokens = w->burst_bits;
    }
    w->l.ops = &imp_ops;
    w->l.link_type = inner->link_type;
    w->l.mtu = inner->mtu;
    w->l.features = inner->features;
    return &w->l;
}

void mtcp_impair_counters(mtcp_link *l, uint64_t *out5)
{
    if (!out5)
        return;
    if (!l || l->ops != &imp_ops) {
        memset(out5, 0, 5 * sizeof(*out5));
        return;
    }
    memcpy(out5, ((struct imp_link *)l)->counters, 5 * sizeof(*out5));
}

/* ---- fault scripting API ---- */
static struct imp_link *imp_of(mtcp_link *l) { return l && l->ops == &imp_ops ? (struct imp_link *)l : NULL; }

int mtcp_fault_add(mtcp_link *l, const struct mtcp_fault *f)
{
    struct imp_link *w = imp_of(l);
    if (!w)
        return -EOPNOTSUPP;
    if (!f || f->action < MTCP_FAULT_DROP || f->action > MTCP_FAULT_DUPLICATE ||
        !f->dirs || (f->dirs & ~(uint32_t)(MTCP_FAULT_DIR_TX | MTCP_FAULT_DIR_RX)) ||
        (f->flags & ~(uint32_t)(MTCP_FAULT_BOTH_WAYS | MTCP_FAULT_DATA)) ||
        (f->tcp_value & ~f->tcp_mask) || (f->end_us && f->end_us <= f->start_us) ||
        (f->a.family && f->a.family != MTCP_AF_INET && f->a.family != MTCP_AF_INET6) ||
        (f->b.family && f->b.family != MTCP_AF_INET && f->b.family != MTCP_AF_INET6) ||
        (f->action == MTCP_FAULT_DELAY && (f->delay_us == 0 || f->delay_us > 60000000u)))
        return -EINVAL;
    int id = -1;
    for (int i = 0; i < MTCP_FAULT_MAX_RULES; i++)
        if (!w->rules[i].used) { id = i; break; }
    if (id < 0)
        return -ENOSPC;
    if (f->action == MTCP_FAULT_DELAY && !w->dir[0].q[1].fifo) {
        uint8_t *a = malloc(IMP_FIFO_BYTES), *b = malloc(IMP_FIFO_BYTES);
        if (!a || !b) {
            free(a);
            free(b);
            return -ENOMEM;
        }
        w->dir[0].q[1].fifo = a;
        w->dir[1].q[1].fifo = b;
    }
    struct imp_rule *r = &w->rules[id];
    memset(r, 0, sizeof(*r));
    r->f = *f;
    r->used = 1;
    w->nrules++;
    return id;
}

int mtcp_fault_remove(mtcp_link *l, int id)
{
    struct imp_link *w = imp_of(l);
    if (!w || id < 0 || id >= MTCP_FAULT_MAX_RULES || !w->rules[id].used)
        return -ENOENT;
    w->rules[id].used = 0;
    w->nrules--;
    return 0;
}

void mtcp_fault_clear(mtcp_link *l)
{
    struct imp_link *w = imp_of(l);
    if (!w)
        return;
    for (int i = 0; i < MTCP_FAULT_MAX_RULES; i++)
        w->rules[i].used = 0;
    w->nrules = 0;
}

int mtcp_fault_stats(mtcp_link *l, int id, uint64_t *out2)
{
    struct imp_link *w = imp_of(l);
    if (!w || !out2 || id < 0 || id >= MTCP_FAULT_MAX_RULES || !w->rules[id].used)
        return -ENOENT;
    out2[0] = w->rules[id].matched;
    out2[1] = w->rules[id].acted;
    return 0;
}

/* ---- spec string ---- */
static int parse_prob(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v)
        return -1;
    if (*end == '%') { x /= 100.0; end++; }
    if (*end || !prob_ok(x))
        return -1;
    *out = x;
    return 0;
}

static int parse_time_us(const char *v, uint32_t *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || !(x >= 0))
        return -1;
    double mul = 1000.0;                              /* default unit: ms (as netem) */
    if (!strcmp(end, "us")) mul = 1.0;
    else if (!strcmp(end, "ms") || !*end) mul = 1000.0;
    else if (!strcmp(end, "s")) mul = 1e6;
    else return -1;
    x *= mul;
    if (x > 60e6)
        return -1;
    *out = (uint32_t)llround(x);
    return 0;
}

static int parse_rate(const char *v, uint64_t *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || !(x >= 0))
        return -1;
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"bit", 1}, {"k", 1e3}, {"kbit", 1e3}, {"m", 1e6}, {"mbit", 1e6},
        {"g", 1e9}, {"gbit", 1e9}, {"bps", 8}, {"kbps", 8e3}, {"mbps", 8e6}, {"gbps", 8e9},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcasecmp(end, units[i].u)) {
            x *= units[i].m;
            if (x > 1e15)
                return -1;
            *out = (uint64_t)llround(x);
            return 0;
        }
    return -1;
}

int mtcp_impair_parse(const char *spec, struct mtcp_impair *out, char *err, size_t errlen)
{
    char msg[200];
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (!spec)
        return 0;
    char buf[512];
    if (strlen(spec) >= sizeof(buf)) {
        io_errf(err, errlen, "impair: spec too long");
        return -EINVAL;
    }
    strcpy(buf, spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (!strcmp(tok, "none"))
            continue;
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(msg, sizeof(msg), "impair: '%.60s' is not key=value", tok);
            io_errf(err, errlen, msg);
            return -EINVAL;
        }
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        int bad;
        const char *want;
        if (!strcmp(k, "loss")) { bad = parse_prob(v, &out->loss); want = "a probability 0..1 or a percentage"; }
        else if (!strcmp(k, "duplicate") || !strcmp(k, "dup")) { bad = parse_prob(v, &out->duplicate); want = "a probability 0..1 or a percentage"; }
        else if (!strcmp(k, "reorder")) { bad = parse_prob(v, &out->reorder); want = "a probability 0..1 or a percentage"; }
        else if (!strcmp(k, "corrupt")) { bad = parse_prob(v, &out->corrupt); want = "a probability 0..1 or a percentage"; }
        else if (!strcmp(k, "delay")) { bad = parse_time_us(v, &out->delay_us); want = "a time like 5ms, 300us, 1s (<= 60 s)"; }
        else if (!strcmp(k, "jitter")) { bad = parse_time_us(v, &out->jitter_us); want = "a time like 1ms, 300us (<= 60 s)"; }
        else if (!strcmp(k, "rate")) {
            bad = parse_rate(v, &out->rate_bps);
            if (!bad && out->rate_bps && out->rate_bps < 8000) bad = 1;
            want = "a rate like 100mbit, 1gbit, 500kbit (>= 8kbit, 0 = unlimited)";
        }
        else if (!strcmp(k, "seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 0);
            bad = (end == v || *end || errno || *v == '-');
            out->seed = s;
            want = "an unsigned integer";
        } else {
            snprintf(msg, sizeof(msg), "impair: unknown key '%.40s' (known: loss, duplicate, reorder, "
                     "corrupt, delay, jitter, rate, seed)", k);
            io_errf(err, errlen, msg);
            return -EINVAL;
        }
        if (bad) {
            snprintf(msg, sizeof(msg), "impair: bad value '%.40s' for %s (want %s)", v, k, want);
            io_errf(err, errlen, msg);
            return -EINVAL;
        }
    }
    return 0;
}
