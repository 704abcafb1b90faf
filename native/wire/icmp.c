/*
 * icmp.c — ICMPv4 (RFC 792/1191: echo, destination unreachable incl. fragmentation needed)
 * and ICMPv6 (RFC 4443: echo, packet too big; RFC 4861: neighbour solicitation/advertisement
 * with the link-layer address options). Checksums are verified on parse and filled on emit.
 */
#include "wire/wire.h"
#include <string.h>

#define ICMP_HLEN 8
/* quoted header needed to find the connection: minimal IP header + 8 bytes (ports, seq) */
#define ICMP4_MIN_QUOTE (WIRE_IPV4_HLEN + 8)
#define ICMP6_MIN_QUOTE (WIRE_IPV6_HLEN + 8)
#define NDP_LEN 24          /* 8-byte ICMP header + 16-byte target */
#define NDP_OPT_SLLA 1
#define NDP_OPT_TLLA 2

/* ---- ICMPv4 ---- */
int wire_icmp4_parse(const uint8_t *buf, size_t len, struct wire_icmp4 *out) {
    if (len < ICMP_HLEN) return WIRE_E_TRUNCATED;
    if (len > 0xffff) return WIRE_E_BAD_LEN;
    if (wire_csum_fold(wire_csum_add(0, buf, len)) != 0) return WIRE_E_BAD_CSUM;
    out->type = buf[0];
    out->code = buf[1];
    out->id = out->seq = 0;
    out->next_mtu = 0;
    out->data = buf + ICMP_HLEN;
    out->data_len = (uint32_t)(len - ICMP_HLEN);
    switch (out->type) {
    case WIRE_ICMP4_ECHO_REQUEST:
    case WIRE_ICMP4_ECHO_REPLY:
        out->id = wire_get16(buf + 4);
        out->seq = wire_get16(buf + 6);
        return WIRE_OK;
    case WIRE_ICMP4_DEST_UNREACH:
        if (out->code == 4) out->next_mtu = wire_get16(buf + 6);
        if (out->data_len < ICMP4_MIN_QUOTE) return WIRE_E_TRUNCATED;
        return WIRE_OK;
    default:
        return WIRE_E_UNSUPPORTED;
    }
}

size_t wire_icmp4_emit(uint8_t *buf, size_t cap, const struct wire_icmp4 *icmp) {
    size_t dl = icmp->data ? icmp->data_len : 0;
    if (cap < ICMP_HLEN || cap - ICMP_HLEN < dl) return 0;
    if (dl) memmove(buf + ICMP_HLEN, icmp->data, dl);   /* may overlap (reply built in place) */
    buf[0] = icmp->type;
    buf[1] = icmp->code;
    buf[2] = buf[3] = 0;
    if (icmp->type == WIRE_ICMP4_DEST_UNREACH) {
        buf[4] = buf[5] = 0;
        wire_put16(buf + 6, icmp->code == 4 ? icmp->next_mtu : 0);
    } else {
        wire_put16(buf + 4, icmp->id);
        wire_put16(buf + 6, icmp->seq);
    }
    wire_put16(buf + 2, wire_csum_fold(wire_csum_add(0, buf, ICMP_HLEN + dl)));
    return ICMP_HLEN + dl;
}

/* ---- ICMPv6 ---- */
static int all_zero16(const uint8_t a[16]) {
    uint8_t x = 0;
    for (int i = 0; i < 16; i++) x |= a[i];
    return x == 0;
}

/* Walk NDP options (RFC 4861 4.6): each is type, length in 8-octet units (0 invalid). */
static int ndp_opts(const uint8_t *p, size_t n, uint8_t want, struct wire_icmp6 *out) {
    while (n > 0) {
        if (n < 2) return WIRE_E_OPT_OVERRUN;
        size_t ol = (size_t)p[1] * 8;
        if (ol == 0) return WIRE_E_OPT_BAD_LEN;
        if (ol > n) return WIRE_E_OPT_OVERRUN;
        if (p[0] == want) {
            memcpy(out->lladdr, p + 2, 6);
            out->has_lladdr = 1;
        }
        p += ol;
        n -= ol;
    }
    return WIRE_OK;
}

int wire_icmp6_parse(const uint8_t *buf, size_t len, const uint8_t src[16], const uint8_t dst[16],
                     struct wire_icmp6 *out) {
    if (len < ICMP_HLEN) return WIRE_E_TRUNCATED;
    if (len > 0xffffffffu) return WIRE_E_BAD_LEN;
    uint32_t ps = wire_pseudo6(src, dst, WIRE_PROTO_ICMPV6, (uint32_t)len);
    if (wire_csum_fold(wire_csum_add(ps, buf, len)) != 0) return WIRE_E_BAD_CSUM;
    memset(out, 0, sizeof *out);
    out->type = buf[0];
    out->code = buf[1];
    out->data = buf + ICMP_HLEN;
    out->data_len = (uint32_t)(len - ICMP_HLEN);
    switch (out->type) {
    case WIRE_ICMP6_ECHO_REQUEST:
    case WIRE_ICMP6_ECHO_REPLY:
        out->id = wire_get16(buf + 4);
        out->seq = wire_get16(buf + 6);
        return WIRE_OK;
    case WIRE_ICMP6_PACKET_TOO_BIG:
        out->mtu = wire_get32(buf + 4);
        if (out->data_len < ICMP6_MIN_QUOTE) return WIRE_E_TRUNCATED;
        return WIRE_OK;
    case WIRE_ICMP6_NEIGH_SOLICIT:
    case WIRE_ICMP6_NEIGH_ADVERT: {
        out->data = NULL;
        out->data_len = 0;
        if (len < NDP_LEN) return WIRE_E_TRUNCATED;
        if (out->code != 0) return WIRE_E_UNSUPPORTED;               /* RFC 4861 7.1 */
        if (out->type == WIRE_ICMP6_NEIGH_ADVERT)
            out->nd_flags = wire_get32(buf + 4) &
                (WIRE_NDP_FLAG_ROUTER | WIRE_NDP_FLAG_SOLICITED | WIRE_NDP_FLAG_OVERRIDE);
        memcpy(out->target, buf + 8, 16);
        int r = ndp_opts(buf + NDP_LEN, len - NDP_LEN,
                         out->type == WIRE_ICMP6_NEIGH_SOLICIT ? NDP_OPT_SLLA : NDP_OPT_TLLA, out);
        if (r) return r;
        if (out->target[0] == 0xff) return WIRE_E_BAD_ADDR;          /* multicast target */
        if (out->type == WIRE_ICMP6_NEIGH_SOLICIT && all_zero16(src) && out->has_lladdr)
            return WIRE_E_BAD_ADDR;                                  /* DAD NS carries no SLLA */
        if (out->type == WIRE_ICMP6_NEIGH_ADVERT && dst[0] == 0xff &&
            (out->nd_flags & WIRE_NDP_FLAG_SOLICITED))
            return WIRE_E_BAD_FLAGS;                                 /* solicited NA to multicast */
        return WIRE_OK;
    }
    default:
        return WIRE_E_UNSUPPORTED;
    }
}

size_t wire_icmp6_emit(uint8_t *buf, size_t cap, const uint8_t src[16], const uint8_t dst[16],
                       const struct wire_icmp6 *icmp) {
    size_t n;
    if (cap < ICMP_HLEN) return 0;
    switch (icmp->type) {
    case WIRE_ICMP6_NEIGH_SOLICIT:
    case WIRE_ICMP6_NEIGH_ADVERT:
        n = NDP_LEN + (icmp->has_lladdr ? 8 : 0);
        if (cap < n) return 0;
        wire_put32(buf + 4, icmp->type == WIRE_ICMP6_NEIGH_ADVERT ? icmp->nd_flags : 0);
        memcpy(buf + 8, icmp->target, 16);
        if (icmp->has_lladdr) {
            buf[24] = icmp->type == WIRE_ICMP6_NEIGH_SOLICIT ? NDP_OPT_SLLA : NDP_OPT_TLLA;
            buf[25] = 1;
            memcpy(buf + 26, icmp->lladdr, 6);
        }
        break;
    default: {
        size_t dl = icmp->data ? icmp->data_len : 0;
        if (cap - ICMP_HLEN < dl) return 0;
        if (icmp->type == WIRE_ICMP6_PACKET_TOO_BIG) {
            wire_put32(buf + 4, icmp->mtu);
        } else {
            wire_put16(buf + 4, icmp->id);
            wire_put16(buf + 6, icmp->seq);
        }
        if (dl) memmove(buf + ICMP_HLEN, icmp->data, dl);
        n = ICMP_HLEN + dl;
        break;
    }
    }
    buf[0] = icmp->type;
    buf[1] = icmp->code;
    buf[2] = buf[3] = 0;
    uint32_t ps = wire_pseudo6(src, dst, WIRE_PROTO_ICMPV6, (uint32_t)n);
    wire_put16(buf + 2, wire_csum_fold(wire_csum_add(ps, buf, n)));
    return n;
}
