/*
 * fuzz_fault.c — libFuzzer harness C: frames through an impairment wrapper with scripted fault
 * rules (mtcp_fault_add), on an Ethernet sim link pair or on an isolated loopback attachment
 * (link type IP). Only the public API and the link contract (io/link.h) are used.
 *
 * Input: setup(1) then records ctl(1) len(2, big-endian) bytes(len, cut at the end).
 *   setup & 0x01        isolated loopback (IP frames: the first 14 bytes of each frame are
 *                       dropped, so the Ethernet seeds serve both) instead of the sim pair
 *   (setup >> 1) & 7    random impairment preset (0 = none)
 *   ctl & 0xc0 == 0x80  RULE: a struct mtcp_fault mapped from bytes (mostly valid, sometimes not)
 *   ctl & 0xc0 == 0xc0  bytes[0] & 0x80: clear every rule, else remove rule bytes[0] % 64 (and
 *                       read its counters)
 *   otherwise           FRAME: ctl & 0x01 sent by the wrapper's user (TX side), else by the peer
 *                       (RX side; sim only); ctl & 0x02 partial checksum (csum_start = IP header
 *                       end, offset 16); ctl & 0x04 GSO flag; the clock advances
 *                       ((ctl >> 3) & 7) * 700 us first
 * After each record both sides sync and every delivered frame is taken (its length checked
 * against the ring's buffer size). At the end the clock runs forward until no deadline is left
 * (bounded), counters are read, everything is closed (LeakSanitizer checks).
 */
#include "mtcp.h"
#include "io/link.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_fault: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)
#define MAX_RECORDS 128

static const char *PRESETS[8] = {
    NULL, "loss=0.2,seed=3", "delay=2ms,jitter=1ms,seed=4", "reorder=0.3,seed=5",
    "corrupt=0.2,seed=6", "duplicate=0.3,seed=7", "rate=1mbit,seed=8",
    "loss=0.05,reorder=0.1,duplicate=0.05,corrupt=0.05,delay=1ms,jitter=500us,seed=9",
};

static void take(struct mtcp_link *l)
{
    struct link_ring *r = &l->rx;
    while (r->head != r->tail) {
        REQUIRE(r->slot[r->head].len <= r->buf_size);
        r->head = r->cur = link_ring_next(r, r->head);
    }
}

static void put(struct mtcp_link *l, const uint8_t *b, size_t n, uint16_t flags, uint16_t cs)
{
    struct link_ring *t = &l->tx;
    if (link_ring_space(t) == 0 || n > t->buf_size)
        return;
    struct link_slot *s = &t->slot[t->head];
    memcpy(s->buf, b, n);
    s->len = (uint32_t)n;
    s->flags = flags;
    s->gso_size = (flags & LINK_SLOT_F_GSO) ? 1448 : 0;
    s->csum_start = cs;
    s->csum_offset = 16;
    t->head = t->cur = link_ring_next(t, t->head);
}

static void addr(struct mtcp_addr *a, uint8_t fam, uint8_t p0, uint8_t p1, uint8_t ip)
{
    static const uint8_t fams[4] = { 0, MTCP_AF_INET, MTCP_AF_INET6, 7 };
    memset(a, 0, sizeof(*a));
    a->family = fams[fam & 3];
    a->port = (uint16_t)(p0 << 8 | p1);
    if (ip % 3) {
        if (a->family == MTCP_AF_INET6) {
            a->ip[0] = 0x20; a->ip[1] = 0x01; a->ip[2] = 0x0d; a->ip[3] = 0xb8; a->ip[15] = ip % 3;
        } else {
            a->ip[0] = 198; a->ip[1] = 18; a->ip[3] = ip % 3;
        }
    }
}

static void rule(struct mtcp_link *w, const uint8_t *d, size_t n, uint64_t now)
{
    uint8_t b[24] = {0};
    memcpy(b, d, n < sizeof(b) ? n : sizeof(b));
    struct mtcp_fault f;
    memset(&f, 0, sizeof(f));
    f.action = b[0] == 0xff ? 9u : 1u + b[0] % 4;
    f.dirs = b[1] % 4;
    f.flags = b[2] % 4;
    f.tcp_mask = b[3];
    f.tcp_value = (b[2] & 0x80) ? b[4] : (uint8_t)(b[4] & b[3]);
    addr(&f.a, b[5], b[6], b[7], b[8]);
    addr(&f.b, b[9], b[10], b[11], b[12]);
    f.start_us = now + (uint64_t)(b[13] % 8) * 1000;
    f.end_us = b[14] ? f.start_us + (uint64_t)b[14] * 500 : 0;
    f.skip = b[15] % 8;
    f.count = b[16] % 4;
    f.delay_us = (uint32_t)(b[17] | b[18] << 8) * 10;
    int id = mtcp_fault_add(w, &f);
    REQUIRE(id < MTCP_FAULT_MAX_RULES);
    if (id < 0)
        REQUIRE(id == -EINVAL || id == -ENOSPC || id == -ENOMEM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char err[200];
    uint8_t setup = data[0];
    int ip_link = setup & 1;
    struct mtcp_link *inner, *peer = NULL;
    if (ip_link) {
        inner = mtcp_loopback_open_isolated(64, err, sizeof(err));
        REQUIRE(inner);
    } else {
        REQUIRE(mtcp_simlink_pair(64, 1500, &inner, &peer) == 0);
    }
    struct mtcp_impair cfg;
    memset(&cfg, 0, sizeof(cfg));
    const char *spec = PRESETS[(setup >> 1) & 7];
    if (spec)
        REQUIRE(mtcp_impair_parse(spec, &cfg, err, sizeof(err)) == 0);
    struct mtcp_link *w = mtcp_impair_wrap(inner, &cfg, err, sizeof(err));
    REQUIRE(w);
    uint64_t now = 1000000;
    size_t i = 1;
    for (int r = 0; r < MAX_RECORDS && i < size; r++) {
        uint8_t ctl = data[i++];
        size_t len = 0;
        if (size - i >= 2) { len = (size_t)(data[i] << 8 | data[i + 1]); i += 2; } else { i = size; }
        if (len > size - i) len = size - i;
        const uint8_t *b = data + i;
        i += len;
        if ((ctl & 0xc0) == 0x80) {
            rule(w, b, len, now);
        } else if ((ctl & 0xc0) == 0xc0) {
            uint8_t x = len ? b[0] : 0;
            if (x & 0x80) {
                mtcp_fault_clear(w);
            } else {
                uint64_t st[2];
                if (mtcp_fault_stats(w, x % 64, st) == 0)
                    REQUIRE(st[1] <= st[0]);
                (void)mtcp_fault_remove(w, x % 64);
            }
        } else {
            now += (uint64_t)((ctl >> 3) & 7) * 700;
            if (ip_link) {
                if (len > 14) { b += 14; len -= 14; } else { len = 0; }
            }
            uint16_t fl = (uint16_t)(((ctl & 2) ? LINK_SLOT_F_CSUM_PARTIAL : 0) |
                                     ((ctl & 4) ? LINK_SLOT_F_GSO : 0));
            uint16_t cs = ip_link ? 20 : 34;
            if (len) {
                if ((ctl & 1) || ip_link)
                    put(w, b, len, fl, cs);
                else
                    put(peer, b, len, fl, cs);
            }
        }
        link_txsync(w, now);
        if (peer) {
            link_txsync(peer, now);
            link_rxsync(peer, now);
            take(peer);
        }
        link_rxsync(w, now);
        take(w);
    }
    for (int k = 0; k < 1000; k++) {
        int64_t d = link_next_deadline(w);
        if (d < 0)
            break;
        if ((uint64_t)d > now)
            now = (uint64_t)d;
        link_txsync(w, now);
        if (peer) {
            link_rxsync(peer, now);
            take(peer);
        }
        link_rxsync(w, now);
        take(w);
    }
    uint64_t c[5];
    mtcp_impair_counters(w, c);
    for (int id = 0; id < MTCP_FAULT_MAX_RULES; id++) {
        uint64_t st[2];
        if (mtcp_fault_stats(w, id, st) == 0)
            REQUIRE(st[1] <= st[0]);
    }
    mtcp_link_close(w);
    if (peer)
        mtcp_link_close(peer);
    return 0;
}
