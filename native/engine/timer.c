/*
 * timer.c — a two-level hashed timer wheel (Varghese & Lauck), one entry per connection.
 *
 *   level 0: 1024 slots of 1 ms: ticks in the current 1024-tick block (fine timers: RTO,
 *            delayed ACK, persist).
 *   level 1: 1024 slots of 1024 ms (~17 min per turn): later blocks (TIME-WAIT, keepalive,
 *            SYN-RECEIVED expiry). A level-1 slot is cascaded into level 0 when its block
 *            starts; entries more than one turn away stay there until their turn comes.
 *
 * Deadlines are rounded UP to the tick, so a timer never fires early (at most 1 ms late).
 * Insert/remove are O(1); advancing skips empty ranges with per-level bitmaps, so a virtual
 * clock jumping hours ahead costs O(blocks), not O(ticks).
 */
#include <string.h>
#include "engine.h"

static inline struct wheel_node *node(const struct wheel *w, uint32_t i) {
    return (struct wheel_node *)(w->base + (size_t)i * w->stride + w->off);
}

void eng_wheel_init(struct wheel *w, void *base, size_t stride, size_t off) {
    memset(w, 0, sizeof *w);
    w->base = base;
    w->stride = stride;
    w->off = off;
    for (int l = 0; l < 2; l++)
        for (uint32_t s = 0; s < WHEEL_SLOTS; s++) w->head[l][s] = NONE32;
}

void eng_wheel_start(struct wheel *w, uint64_t now_us) {
    if (w->started) return;
    w->started = 1;
    w->cur = now_us / WHEEL_TICK_US;
}

static void link_slot(struct wheel *w, uint32_t idx, int level, uint32_t slot) {
    struct wheel_node *n = node(w, idx);
    n->slot = (uint16_t)((level << 15) | slot);
    n->prev = NONE32;
    n->next = w->head[level][slot];
    if (n->next != NONE32) node(w, n->next)->prev = idx;
    w->head[level][slot] = idx;
    w->bm[level][slot >> 6] |= 1ULL << (slot & 63);
    n->linked = 1;
    if (level) w->n1++; else w->n0++;
}

static void place(struct wheel *w, uint32_t idx) {
    uint64_t t = node(w, idx)->tick;
    if ((t >> WHEEL_BITS) == (w->cur >> WHEEL_BITS))
        link_slot(w, idx, 0, (uint32_t)(t & WHEEL_MASK));
    else
        link_slot(w, idx, 1, (uint32_t)((t >> WHEEL_BITS) & WHEEL_MASK));
}

void eng_wheel_insert(struct wheel *w, uint32_t idx, uint64_t deadline_us) {
    struct wheel_node *n = node(w, idx);
    if (n->linked) eng_wheel_remove(w, idx);
    if (!w->started) eng_wheel_start(w, deadline_us);
    uint64_t t = (deadline_us + WHEEL_TICK_US - 1) / WHEEL_TICK_US;
    if (t <= w->cur) t = w->cur + 1;
    n->tick = t;
    place(w, idx);
}

void eng_wheel_remove(struct wheel *w, uint32_t idx) {
    struct wheel_node *n = node(w, idx);
    if (!n->linked) return;
    int level = n->slot >> 15;
    uint32_t slot = n->slot & 0x7fff;
    if (n->prev != NONE32) node(w, n->prev)->next = n->next;
    else w->head[level][slot] = n->next;
    if (n->next != NONE32) node(w, n->next)->prev = n->prev;
    if (w->head[level][slot] == NONE32) w->bm[level][slot >> 6] &= ~(1ULL << (slot & 63));
    n->linked = 0;
    n->next = n->prev = NONE32;
    if (level) w->n1--; else w->n0--;
}

int eng_wheel_linked(const struct wheel *w, uint32_t idx) { return node(w, idx)->linked; }

/* Move the level-1 entries of the block starting at w->cur + 1 into level 0. */
static void cascade(struct wheel *w, uint64_t block) {
    uint32_t slot = (uint32_t)(block & WHEEL_MASK);
    uint32_t i = w->head[1][slot];
    while (i != NONE32) {
        struct wheel_node *n = node(w, i);
        uint32_t nx = n->next;
        if ((n->tick >> WHEEL_BITS) == block) {
            eng_wheel_remove(w, i);
            link_slot(w, i, 0, (uint32_t)(n->tick & WHEEL_MASK));
        }
        i = nx;
    }
}

/* First set bit at or after from in a level's bitmap (within [from, WHEEL_SLOTS)), or -1. */
static int bm_next(const uint64_t *bm, uint32_t from) {
    if (from >= WHEEL_SLOTS) return -1;
    uint32_t wi = from >> 6;
    uint64_t word = bm[wi] & (~0ULL << (from & 63));
    for (;;) {
        if (word) return (int)(wi * 64 + (uint32_t)__builtin_ctzll(word));
        if (++wi >= WHEEL_SLOTS / 64) return -1;
        word = bm[wi];
    }
}

uint32_t eng_wheel_advance(struct wheel *w, uint64_t now_us, void (*fire)(void *ctx, uint32_t idx), void *ctx) {
    if (!w->started) { eng_wheel_start(w, now_us); return 0; }
    uint64_t target = now_us / WHEEL_TICK_US;
    uint32_t fired = 0;
    while (w->cur < target) {
        if (w->n0 == 0 && w->n1 == 0) { w->cur = target; break; }
        if (w->n0 == 0) {
            /* nothing in this block: jump to the end of the block (or target) */
            uint64_t end = w->cur | WHEEL_MASK;
            if (end >= target) { w->cur = target; break; }
            w->cur = end;
            /* skip whole empty level-1 blocks */
            while (w->cur < target) {
                uint64_t nb = (w->cur + 1) >> WHEEL_BITS;
                if (w->head[1][nb & WHEEL_MASK] != NONE32) break;
                uint64_t bend = (nb << WHEEL_BITS) | WHEEL_MASK;
                if (bend >= target) { w->cur = target; break; }
                w->cur = bend;
            }
            if (w->cur >= target) break;
        }
        uint64_t next = w->cur + 1;
        if ((next & WHEEL_MASK) == 0) {
            w->cur = next - 1;      /* block of `next` not current yet: cascade places by block */
            cascade(w, next >> WHEEL_BITS);
        }
        w->cur = next;
        uint32_t slot = (uint32_t)(next & WHEEL_MASK);
        uint32_t i;
        while ((i = w->head[0][slot]) != NONE32) {
            eng_wheel_remove(w, i);
            fired++;
            fire(ctx, i);
        }
        if (w->n0 == 0) continue;
        /* jump to the next occupied level-0 slot of this block (or its end) */
        int s = bm_next(w->bm[0], (uint32_t)((w->cur & WHEEL_MASK) + 1));
        uint64_t base = w->cur & ~(uint64_t)WHEEL_MASK;
        uint64_t to = s < 0 ? (base | WHEEL_MASK) : base + (uint64_t)s - 1;
        if (to > w->cur) w->cur = to < target ? to : target;
    }
    return fired;
}

int64_t eng_wheel_next_deadline(const struct wheel *w) {
    if (!w->started || (w->n0 == 0 && w->n1 == 0)) return -1;
    if (w->n0) {
        int s = bm_next(w->bm[0], (uint32_t)((w->cur & WHEEL_MASK) + 1));
        if (s >= 0) return (int64_t)(((w->cur & ~(uint64_t)WHEEL_MASK) + (uint64_t)s) * WHEEL_TICK_US);
    }
    /* first occupied level-1 slot after the current block, circularly */
    uint64_t blk = w->cur >> WHEEL_BITS;
    for (uint32_t d = 1; d <= WHEEL_SLOTS; d++) {
        uint32_t slot = (uint32_t)((blk + d) & WHEEL_MASK);
        if (w->bm[1][slot >> 6] & (1ULL << (slot & 63))) {
            /* exact minimum if one of its entries is due this turn, else the block start */
            uint64_t b = blk + d, best = UINT64_MAX;
            for (uint32_t i = w->head[1][slot]; i != NONE32; i = node(w, i)->next) {
                uint64_t t = node(w, i)->tick;
                if ((t >> WHEEL_BITS) == b && t < best) best = t;
            }
            if (best == UINT64_MAX) best = b << WHEEL_BITS;
            return (int64_t)(best * WHEEL_TICK_US);
        }
    }
    return (int64_t)((w->cur + 1) * WHEEL_TICK_US);
}
