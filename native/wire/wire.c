/*
 * wire.c — drop-reason names, Ethernet II, ARP, IPv4 and IPv6 (fixed header + extension
 * header skipping). Pure: no I/O, no clock, no malloc. Every parser checks a length before
 * each read.
 */
#include "wire/wire.h"
#include <string.h>

const char *wire_err_name(int err) {
    static const char *const names[WIRE_E_COUNT_] = {
        "ok", "truncated", "bad_version", "bad_hdrlen", "bad_len", "bad_csum", "fragment",
        "opt_overrun", "opt_bad_len", "bad_flags", "bad_addr", "unsupported",
    };
    if (err > 0 || err <= -WIRE_E_COUNT_) return "unknown";
    return names[-err];
}

/* ---- Ethernet II ---- */
int wire_eth_parse(const uint8_t *buf, size_t len, struct wire_eth *out) {
    if (len < WIRE_ETH_HLEN) return WIRE_E_TRUNCATED;
    memcpy(out->dst, buf, 6);
    memcpy(out->src, buf + 6, 6);
    out->ethertype = wire_get16(buf + 12);
    if (out->src[0] & 1) return WIRE_E_BAD_ADDR;   /* group (multicast/broadcast) source */
    return WIRE_ETH_HLEN;
}

size_t wire_eth_emit(uint8_t *buf, size_t cap, const struct wire_eth *eth) {
    if (cap < WIRE_ETH_HLEN) return 0;
    memcpy(buf, eth->dst, 6);
    memcpy(buf + 6, eth->src, 6);
    wire_put16(buf + 12, eth->ethertype);
    return WIRE_ETH_HLEN;
}

/* ---- ARP (RFC 826), Ethernet + IPv4 only ---- */
int wire_arp_parse(const uint8_t *buf, size_t len, struct wire_arp *out) {
    if (len < WIRE_ARP_LEN) return WIRE_E_TRUNCATED;
    if (wire_get16(buf) != 1 || wire_get16(buf + 2) != WIRE_ETHERTYPE_IPV4) return WIRE_E_UNSUPPORTED;
    if (buf[4] != 6 || buf[5] != 4) return WIRE_E_BAD_LEN;
    out->op = wire_get16(buf + 6);
    memcpy(out->sha, buf + 8, 6);
    memcpy(out->spa, buf + 14, 4);
    memcpy(out->tha, buf + 18, 6);
    memcpy(out->tpa, buf + 24, 4);
    if (out->op != WIRE_ARP_REQUEST && out->op != WIRE_ARP_REPLY) return WIRE_E_UNSUPPORTED;
    if (out->sha[0] & 1) return WIRE_E_BAD_ADDR;
    return WIRE_OK;
}

size_t wire_arp_emit(uint8_t *buf, size_t cap, const struct wire_arp *arp) {
    if (cap < WIRE_ARP_LEN) return 0;
    wire_put16(buf, 1);
    wire_put16(buf + 2, WIRE_ETHERTYPE_IPV4);
    buf[4] = 6;
    buf[5] = 4;
    wire_put16(buf + 6, arp->op);
    memcpy(buf + 8, arp->sha, 6);
    memcpy(buf + 14, arp->spa, 4);
    memcpy(buf + 18, arp->tha, 6);
    memcpy(buf + 24, arp->tpa, 4);
    return WIRE_ARP_LEN;
}

/* ---- IPv4 (RFC 791) ---- */
int wire_ipv4_parse(const uint8_t *buf, size_t len, struct wire_ipv4 *out) {
    if (len < WIRE_IPV4_HLEN) return WIRE_E_TRUNCATED;
    if ((buf[0] >> 4) != 4) return WIRE_E_BAD_VERSION;
    unsigned hl = (unsigned)(buf[0] & 0x0f) * 4;
    if (hl < WIRE_IPV4_HLEN) return WIRE_E_BAD_HDRLEN;
    if (hl > len) return WIRE_E_TRUNCATED;
    unsigned tot = wire_get16(buf + 2);
    if (tot < hl) return WIRE_E_BAD_LEN;
    if (tot > len) return WIRE_E_TRUNCATED;
    if (wire_csum_fold(wire_csum_add(0, buf, hl)) != 0) return WIRE_E_BAD_CSUM;
    out->hdr_len = (uint8_t)hl;
    out->tos = buf[1];
    out->total_len = (uint16_t)tot;
    out->id = wire_get16(buf + 4);
    out->frag = wire_get16(buf + 6);
    out->ttl = buf[8];
    out->proto = buf[9];
    memcpy(out->src, buf + 12, 4);
    memcpy(out->dst, buf + 16, 4);
    out->payload = buf + hl;
    out->payload_len = tot - hl;
    if (out->frag & 0x3fff) return WIRE_E_FRAGMENT;        /* MF set or offset != 0 */
    if (out->src[0] >= 224) return WIRE_E_BAD_ADDR;        /* multicast, class E, broadcast source */
    return WIRE_OK;
}

size_t wire_ipv4_emit(uint8_t *buf, size_t cap, const struct wire_ipv4 *ip) {
    if (cap < WIRE_IPV4_HLEN) return 0;
    buf[0] = 0x45;
    buf[1] = ip->tos;
    wire_put16(buf + 2, ip->total_len);
    wire_put16(buf + 4, ip->id);
    wire_put16(buf + 6, ip->frag);
    buf[8] = ip->ttl;
    buf[9] = ip->proto;
    buf[10] = buf[11] = 0;
    memcpy(buf + 12, ip->src, 4);
    memcpy(buf + 16, ip->dst, 4);
    wire_put16(buf + 10, wire_csum_fold(wire_csum_add(0, buf, WIRE_IPV4_HLEN)));
    return WIRE_IPV4_HLEN;
}

/* ---- IPv6 (RFC 8200) ---- */
#define IP6_HOPOPTS 0
#define IP6_ROUTING 43
#define IP6_FRAGMENT 44
#define IP6_DSTOPTS 60

int wire_ipv6_parse(const uint8_t *buf, size_t len, struct wire_ipv6 *out) {
    if (len < WIRE_IPV6_HLEN) return WIRE_E_TRUNCATED;
    if ((buf[0] >> 4) != 6) return WIRE_E_BAD_VERSION;
    uint32_t plen = wire_get16(buf + 4);
    if (plen > len - WIRE_IPV6_HLEN) return WIRE_E_TRUNCATED;
    out->tclass = (uint8_t)((buf[0] << 4) | (buf[1] >> 4));
    out->flow = ((uint32_t)(buf[1] & 0x0f) << 16) | wire_get16(buf + 2);
    out->payload_len = (uint16_t)plen;
    out->hop_limit = buf[7];
    memcpy(out->src, buf + 8, 16);
    memcpy(out->dst, buf + 24, 16);

    const uint8_t *p = buf + WIRE_IPV6_HLEN;
    uint32_t left = plen;
    uint8_t next = buf[6];
    int first = 1;
    int err = WIRE_OK;
    for (;;) {
        if (next == IP6_HOPOPTS && !first) { err = WIRE_E_UNSUPPORTED; break; } /* HBH only first */
        if (next == IP6_HOPOPTS || next == IP6_ROUTING || next == IP6_DSTOPTS) {
            if (left < 8) { err = WIRE_E_TRUNCATED; break; }
            uint32_t el = ((uint32_t)p[1] + 1) * 8;
            if (el > left) { err = WIRE_E_TRUNCATED; break; }
            next = p[0];
            p += el;
            left -= el;
            first = 0;
            continue;
        }
        if (next == IP6_FRAGMENT) err = WIRE_E_FRAGMENT;
        break;
    }
    out->next = next;
    out->payload = p;
    out->upper_len = left;
    if (err) return err;
    if (out->src[0] == 0xff) return WIRE_E_BAD_ADDR;     /* multicast source */
    return WIRE_OK;
}

size_t wire_ipv6_emit(uint8_t *buf, size_t cap, const struct wire_ipv6 *ip) {
    if (cap < WIRE_IPV6_HLEN) return 0;
    buf[0] = (uint8_t)(0x60 | (ip->tclass >> 4));
    buf[1] = (uint8_t)((ip->tclass << 4) | ((ip->flow >> 16) & 0x0f));
    wire_put16(buf + 2, (uint16_t)ip->flow);
    wire_put16(buf + 4, ip->payload_len);
    buf[6] = ip->next;
    buf[7] = ip->hop_limit;
    memcpy(buf + 8, ip->src, 16);
    memcpy(buf + 24, ip->dst, 16);
    return WIRE_IPV6_HLEN;
}
