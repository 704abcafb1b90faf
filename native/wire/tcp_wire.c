/*
 * tcp_wire.c — TCP header and options (RFC 9293, RFC 7323 WS/TS, RFC 2018 SACK).
 *
 * Parse rejects: data offset < 5 or past the segment, impossible flag combinations,
 * option overruns, zero/one-length options, wrong lengths for the known kinds, port 0.
 * Emit layout (Linux-compatible, always a multiple of 4):
 *   MSS(4) | SACKOK+TS(12) or NOP NOP TS(12) or NOP NOP SACKOK(4) | NOP WS(4) | NOP NOP SACK(2+8n)
 * SACK blocks are trimmed to what fits in the 40 option bytes (with TS: at most 3).
 */
#include "wire/wire.h"
#include <string.h>

#define OPT_EOL 0
#define OPT_NOP 1
#define OPT_MSS 2
#define OPT_WS 3
#define OPT_SACKOK 4
#define OPT_SACK 5
#define OPT_TS 8
#define MAX_OPT (WIRE_TCP_MAX_HLEN - WIRE_TCP_HLEN)
#define MAX_WSCALE 14

static int tcp_options(const uint8_t *p, unsigned n, struct wire_tcp *out) {
    unsigned i = 0;
    while (i < n) {
        uint8_t kind = p[i];
        if (kind == OPT_EOL) break;
        if (kind == OPT_NOP) { i++; continue; }
        if (n - i < 2) return WIRE_E_OPT_OVERRUN;
        unsigned ol = p[i + 1];
        if (ol < 2) return WIRE_E_OPT_BAD_LEN;
        if (ol > n - i) return WIRE_E_OPT_OVERRUN;
        const uint8_t *o = p + i + 2;
        switch (kind) {
        case OPT_MSS:
            if (ol != 4) return WIRE_E_OPT_BAD_LEN;
            out->has_mss = 1;
            out->mss = wire_get16(o);
            break;
        case OPT_WS:
            if (ol != 3) return WIRE_E_OPT_BAD_LEN;
            out->has_wscale = 1;
            out->wscale = o[0] > MAX_WSCALE ? MAX_WSCALE : o[0];
            break;
        case OPT_SACKOK:
            if (ol != 2) return WIRE_E_OPT_BAD_LEN;
            out->sack_perm = 1;
            break;
        case OPT_SACK: {
            if (ol < 10 || (ol - 2) % 8 != 0) return WIRE_E_OPT_BAD_LEN;
            unsigned nb = (ol - 2) / 8;    /* <= 4: options are at most 40 bytes */
            for (unsigned b = 0; b < nb; b++) {
                out->sack[b].left = wire_get32(o + 8 * b);
                out->sack[b].right = wire_get32(o + 8 * b + 4);
            }
            out->nsack = (uint8_t)nb;
            break;
        }
        case OPT_TS:
            if (ol != 10) return WIRE_E_OPT_BAD_LEN;
            out->has_ts = 1;
            out->tsval = wire_get32(o);
            out->tsecr = wire_get32(o + 4);
            break;
        default:
            break;   /* unknown: skipped by length */
        }
        i += ol;
    }
    return WIRE_OK;
}

int wire_tcp_parse(const uint8_t *seg, size_t len, struct wire_tcp *out) {
    if (len < WIRE_TCP_HLEN) return WIRE_E_TRUNCATED;
    unsigned hl = (unsigned)(seg[12] >> 4) * 4;
    if (hl < WIRE_TCP_HLEN || hl > len) return WIRE_E_BAD_HDRLEN;
    memset(out, 0, sizeof *out);
    out->sport = wire_get16(seg);
    out->dport = wire_get16(seg + 2);
    out->seq = wire_get32(seg + 4);
    out->ack = wire_get32(seg + 8);
    out->hdr_len = (uint8_t)hl;
    out->flags = seg[13];
    out->win = wire_get16(seg + 14);
    out->csum = wire_get16(seg + 16);
    out->urg = wire_get16(seg + 18);
    out->payload = seg + hl;
    out->payload_len = (uint32_t)(len - hl);

    uint8_t f = out->flags;
    if ((f & (WIRE_TCP_SYN | WIRE_TCP_ACK | WIRE_TCP_RST)) == 0) return WIRE_E_BAD_FLAGS;  /* incl. none */
    if ((f & WIRE_TCP_SYN) && (f & (WIRE_TCP_FIN | WIRE_TCP_RST))) return WIRE_E_BAD_FLAGS;
    if ((f & (WIRE_TCP_FIN | WIRE_TCP_RST)) == (WIRE_TCP_FIN | WIRE_TCP_RST)) return WIRE_E_BAD_FLAGS;
    if (out->sport == 0 || out->dport == 0) return WIRE_E_BAD_ADDR;
    return tcp_options(seg + WIRE_TCP_HLEN, hl - WIRE_TCP_HLEN, out);
}

/* Option bytes before SACK blocks, and how many SACK blocks fit after them. */
static unsigned base_opt_len(const struct wire_tcp *t) {
    unsigned n = 0;
    if (t->has_mss) n += 4;
    if (t->has_ts) n += 12;               /* SACKOK rides in the TS option's NOP slots */
    else if (t->sack_perm) n += 4;
    if (t->has_wscale) n += 4;
    return n;
}

static unsigned sack_fit(const struct wire_tcp *t, unsigned base) {
    unsigned nb = t->nsack > WIRE_TCP_MAX_SACK ? WIRE_TCP_MAX_SACK : t->nsack;
    if (nb == 0 || base + 4 + 8 > MAX_OPT) return 0;
    unsigned room = (MAX_OPT - base - 4) / 8;
    return nb < room ? nb : room;
}

size_t wire_tcp_hdr_len(const struct wire_tcp *t) {
    unsigned base = base_opt_len(t);
    unsigned nb = sack_fit(t, base);
    unsigned n = base + (nb ? 4 + 8 * nb : 0);
    n = (n + 3) & ~3u;
    return WIRE_TCP_HLEN + n;
}

size_t wire_tcp_emit(uint8_t *buf, size_t cap, const struct wire_tcp *t) {
    size_t hl = wire_tcp_hdr_len(t);
    if (cap < hl) return 0;
    wire_put16(buf, t->sport);
    wire_put16(buf + 2, t->dport);
    wire_put32(buf + 4, t->seq);
    wire_put32(buf + 8, t->ack);
    buf[12] = (uint8_t)((hl / 4) << 4);
    buf[13] = t->flags;
    wire_put16(buf + 14, t->win);
    buf[16] = buf[17] = 0;
    wire_put16(buf + 18, t->urg);

    uint8_t *o = buf + WIRE_TCP_HLEN;
    if (t->has_mss) {
        o[0] = OPT_MSS; o[1] = 4; wire_put16(o + 2, t->mss); o += 4;
    }
    if (t->has_ts) {
        if (t->sack_perm) { o[0] = OPT_SACKOK; o[1] = 2; }
        else { o[0] = OPT_NOP; o[1] = OPT_NOP; }
        o[2] = OPT_TS; o[3] = 10;
        wire_put32(o + 4, t->tsval);
        wire_put32(o + 8, t->tsecr);
        o += 12;
    } else if (t->sack_perm) {
        o[0] = OPT_NOP; o[1] = OPT_NOP; o[2] = OPT_SACKOK; o[3] = 2; o += 4;
    }
    if (t->has_wscale) {
        o[0] = OPT_NOP; o[1] = OPT_WS; o[2] = 3;
        o[3] = t->wscale > MAX_WSCALE ? MAX_WSCALE : t->wscale;
        o += 4;
    }
    unsigned nb = sack_fit(t, base_opt_len(t));
    if (nb) {
        o[0] = OPT_NOP; o[1] = OPT_NOP; o[2] = OPT_SACK; o[3] = (uint8_t)(2 + 8 * nb);
        o += 4;
        for (unsigned b = 0; b < nb; b++) {
            wire_put32(o, t->sack[b].left);
            wire_put32(o + 4, t->sack[b].right);
            o += 8;
        }
    }
    while (o < buf + hl) *o++ = OPT_NOP;   /* pad to the 4-byte boundary */
    return hl;
}

int wire_tcp_csum_ok(const uint8_t *seg, size_t len, uint32_t pseudo) {
    return wire_csum_fold(wire_csum_add(pseudo, seg, len)) == 0;
}

void wire_tcp_csum_fill(uint8_t *seg, size_t len, uint32_t pseudo) {
    seg[16] = seg[17] = 0;
    wire_put16(seg + 16, wire_csum_fold(wire_csum_add(pseudo, seg, len)));
}
