/*
 * fuzz_wire.c — libFuzzer harness A: arbitrary bytes into every native/wire parser.
 *
 * Input layout: byte 0 selects the target, the rest is the packet.
 *   (sel & 0x7f) % 9 == 0 full receive chain eth -> arp | ipv4 -> tcp/icmp | ipv6 -> tcp/icmpv6
 *                 (sel & 0x80: checksums along the chain are fixed up first, so the fuzzer
 *                 reaches the layers behind them)
 *   1..7          one parser directly: eth, arp, ipv4, ipv6, icmp4, icmp6, tcp
 *                 (sel & 0x80: that parser's checksum fixed up first)
 *   8             checksum properties: split sums, odd lengths, RFC 1624 update
 * Whatever parses is re-emitted and parsed again: the second parse must succeed and give the
 * same fields (parse(emit(x)) == x) and emit must be stable (emit(parse(emit(x))) == emit(x)).
 * A violated property aborts (a libFuzzer finding). libFuzzer hands over an exact-size heap
 * copy, so ASan flags any read past the end.
 */
#include "wire/wire.h"
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static const uint8_t SRC6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t DST6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};

static void fix16(uint8_t *p, size_t n, size_t off, uint32_t pseudo) {
    if (n < off + 2) return;
    p[off] = p[off + 1] = 0;
    wire_put16(p + off, wire_csum_fold(wire_csum_add(pseudo, p, n)));
}

/* ---- round trips ---- */
static void rt_eth(const struct wire_eth *e) {
    uint8_t b[WIRE_ETH_HLEN];
    struct wire_eth e2;
    REQUIRE(wire_eth_emit(b, sizeof b, e) == WIRE_ETH_HLEN);
    REQUIRE(wire_eth_parse(b, sizeof b, &e2) == WIRE_ETH_HLEN);
    REQUIRE(memcmp(e, &e2, sizeof e2) == 0);
}

static void rt_arp(const struct wire_arp *a) {
    uint8_t b[WIRE_ARP_LEN];
    struct wire_arp a2;
    REQUIRE(wire_arp_emit(b, sizeof b, a) == WIRE_ARP_LEN);
    REQUIRE(wire_arp_parse(b, sizeof b, &a2) == WIRE_OK);
    REQUIRE(memcmp(a, &a2, sizeof a2) == 0);
}

static void rt_ipv4(const struct wire_ipv4 *ip) {
    uint8_t *b = malloc(WIRE_IPV4_HLEN + ip->payload_len);
    struct wire_ipv4 in = *ip, o;
    in.total_len = (uint16_t)(WIRE_IPV4_HLEN + ip->payload_len);
    REQUIRE(wire_ipv4_emit(b, WIRE_IPV4_HLEN + ip->payload_len, &in) == WIRE_IPV4_HLEN);
    memcpy(b + WIRE_IPV4_HLEN, ip->payload, ip->payload_len);
    REQUIRE(wire_ipv4_parse(b, WIRE_IPV4_HLEN + ip->payload_len, &o) == WIRE_OK);
    REQUIRE(o.hdr_len == WIRE_IPV4_HLEN && o.tos == ip->tos && o.total_len == in.total_len);
    REQUIRE(o.id == ip->id && o.frag == ip->frag && o.ttl == ip->ttl && o.proto == ip->proto);
    REQUIRE(memcmp(o.src, ip->src, 4) == 0 && memcmp(o.dst, ip->dst, 4) == 0);
    REQUIRE(o.payload_len == ip->payload_len && memcmp(o.payload, ip->payload, o.payload_len) == 0);
    free(b);
}

static void rt_ipv6(const struct wire_ipv6 *ip) {
    /* re-emitted without the extension headers that were skipped */
    size_t n = WIRE_IPV6_HLEN + ip->upper_len;
    uint8_t *b = malloc(n);
    struct wire_ipv6 in = *ip, o;
    in.payload_len = (uint16_t)ip->upper_len;
    REQUIRE(wire_ipv6_emit(b, n, &in) == WIRE_IPV6_HLEN);
    memcpy(b + WIRE_IPV6_HLEN, ip->payload, ip->upper_len);
    int r = wire_ipv6_parse(b, n, &o);
    /* the upper layer number may itself look like an extension header (e.g. 59 stays, 44/0/43/60 can't: parse stopped there) */
    REQUIRE(r == WIRE_OK);
    REQUIRE(o.tclass == ip->tclass && o.flow == ip->flow && o.next == ip->next && o.hop_limit == ip->hop_limit);
    REQUIRE(memcmp(o.src, ip->src, 16) == 0 && memcmp(o.dst, ip->dst, 16) == 0);
    REQUIRE(o.upper_len == ip->upper_len && memcmp(o.payload, ip->payload, o.upper_len) == 0);
    free(b);
}

static void rt_icmp4(const struct wire_icmp4 *c) {
    size_t n = 8 + c->data_len;
    uint8_t *b = malloc(n);
    struct wire_icmp4 o;
    REQUIRE(wire_icmp4_emit(b, n, c) == n);
    REQUIRE(wire_icmp4_parse(b, n, &o) == WIRE_OK);
    REQUIRE(o.type == c->type && o.code == c->code && o.id == c->id && o.seq == c->seq);
    REQUIRE(o.next_mtu == c->next_mtu && o.data_len == c->data_len);
    REQUIRE(memcmp(o.data, c->data, c->data_len) == 0);
    free(b);
}

static void rt_icmp6(const struct wire_icmp6 *c, const uint8_t *src, const uint8_t *dst) {
    size_t n = 32 + c->data_len;
    uint8_t *b = malloc(n);
    struct wire_icmp6 o;
    size_t w = wire_icmp6_emit(b, n, src, dst, c);
    REQUIRE(w > 0);
    REQUIRE(wire_icmp6_parse(b, w, src, dst, &o) == WIRE_OK);
    REQUIRE(o.type == c->type && o.code == c->code && o.id == c->id && o.seq == c->seq && o.mtu == c->mtu);
    REQUIRE(o.nd_flags == c->nd_flags && memcmp(o.target, c->target, 16) == 0);
    REQUIRE(o.has_lladdr == c->has_lladdr);
    if (c->has_lladdr) REQUIRE(memcmp(o.lladdr, c->lladdr, 6) == 0);
    REQUIRE(o.data_len == c->data_len);
    if (c->data_len) REQUIRE(memcmp(o.data, c->data, c->data_len) == 0);
    /* emit is stable */
    uint8_t *b2 = malloc(n);
    REQUIRE(wire_icmp6_emit(b2, n, src, dst, &o) == w);
    REQUIRE(memcmp(b, b2, w) == 0);
    free(b2);
    free(b);
}

static void rt_tcp(const struct wire_tcp *t) {
    uint8_t h[WIRE_TCP_MAX_HLEN], h2[WIRE_TCP_MAX_HLEN];
    size_t hl = wire_tcp_emit(h, sizeof h, t);
    REQUIRE(hl >= WIRE_TCP_HLEN && hl <= WIRE_TCP_MAX_HLEN && hl % 4 == 0 && hl == wire_tcp_hdr_len(t));
    size_t n = hl + t->payload_len;
    uint8_t *b = malloc(n);
    memcpy(b, h, hl);
    memcpy(b + hl, t->payload, t->payload_len);
    struct wire_tcp o;
    REQUIRE(wire_tcp_parse(b, n, &o) == WIRE_OK);
    REQUIRE(o.sport == t->sport && o.dport == t->dport && o.seq == t->seq && o.ack == t->ack);
    REQUIRE(o.hdr_len == hl && o.flags == t->flags && o.win == t->win && o.urg == t->urg);
    REQUIRE(o.has_mss == t->has_mss && o.has_wscale == t->has_wscale);
    REQUIRE(o.sack_perm == t->sack_perm && o.has_ts == t->has_ts);
    if (t->has_mss) REQUIRE(o.mss == t->mss);
    if (t->has_wscale) REQUIRE(o.wscale == t->wscale && o.wscale <= 14);
    if (t->has_ts) REQUIRE(o.tsval == t->tsval && o.tsecr == t->tsecr);
    REQUIRE(o.nsack <= t->nsack && (t->nsack == 0 || o.nsack >= 1));
    REQUIRE(memcmp(o.sack, t->sack, o.nsack * sizeof o.sack[0]) == 0);
    REQUIRE(o.payload_len == t->payload_len && memcmp(o.payload, t->payload, o.payload_len) == 0);
    REQUIRE(wire_tcp_emit(h2, sizeof h2, &o) == hl && memcmp(h, h2, hl) == 0);
    /* checksum fill / verify agree */
    uint32_t ps = wire_pseudo6(SRC6, DST6, WIRE_PROTO_TCP, (uint32_t)n);
    wire_tcp_csum_fill(b, n, ps);
    REQUIRE(wire_tcp_csum_ok(b, n, ps));
    free(b);
}

/* ---- targets ---- */
static void do_tcp(uint8_t *seg, size_t n, int fix, uint32_t pseudo) {
    if (fix) fix16(seg, n, 16, pseudo);
    int ok = wire_tcp_csum_ok(seg, n, pseudo);
    struct wire_tcp t;
    int r = wire_tcp_parse(seg, n, &t);
    REQUIRE(r <= 0 && r > -WIRE_E_COUNT_);
    if (r == WIRE_OK) {
        REQUIRE(t.hdr_len >= 20 && t.hdr_len <= n && t.payload == seg + t.hdr_len);
        REQUIRE(t.nsack <= WIRE_TCP_MAX_SACK && (!t.has_wscale || t.wscale <= 14));
        rt_tcp(&t);
    }
    (void)ok;
}

static void do_icmp4(uint8_t *p, size_t n, int fix) {
    if (fix) fix16(p, n, 2, 0);
    struct wire_icmp4 c;
    int r = wire_icmp4_parse(p, n, &c);
    REQUIRE(r <= 0 && r > -WIRE_E_COUNT_);
    if (r == WIRE_OK) {
        REQUIRE(c.data == p + 8 && c.data_len == n - 8);
        rt_icmp4(&c);
    }
}

static void do_icmp6(uint8_t *p, size_t n, int fix, const uint8_t *src, const uint8_t *dst) {
    if (fix) fix16(p, n, 2, wire_pseudo6(src, dst, WIRE_PROTO_ICMPV6, (uint32_t)n));
    struct wire_icmp6 c;
    int r = wire_icmp6_parse(p, n, src, dst, &c);
    REQUIRE(r <= 0 && r > -WIRE_E_COUNT_);
    if (r == WIRE_OK) {
        if (c.data_len) REQUIRE(c.data >= p && c.data + c.data_len <= p + n);
        rt_icmp6(&c, src, dst);
    }
}

static void fix_ipv4_hdr(uint8_t *p, size_t n) {
    if (n < 20) return;
    size_t hl = (size_t)(p[0] & 15) * 4;
    if (hl >= 20 && hl <= n) fix16(p, hl, 10, 0);
}

static void do_ipv4(uint8_t *p, size_t n, int fix, int deep) {
    if (fix) fix_ipv4_hdr(p, n);
    struct wire_ipv4 ip;
    int r = wire_ipv4_parse(p, n, &ip);
    REQUIRE(r <= 0 && r > -WIRE_E_COUNT_);
    if (r != WIRE_OK) return;
    REQUIRE(ip.payload == p + ip.hdr_len && ip.hdr_len + ip.payload_len <= n);
    rt_ipv4(&ip);
    if (!deep) return;
    uint8_t *pl = p + ip.hdr_len;
    if (ip.proto == WIRE_PROTO_TCP)
        do_tcp(pl, ip.payload_len, fix, wire_pseudo4(ip.src, ip.dst, WIRE_PROTO_TCP, ip.payload_len));
    else if (ip.proto == WIRE_PROTO_ICMP)
        do_icmp4(pl, ip.payload_len, fix);
}

static void do_ipv6(uint8_t *p, size_t n, int fix, int deep) {
    struct wire_ipv6 ip;
    int r = wire_ipv6_parse(p, n, &ip);
    REQUIRE(r <= 0 && r > -WIRE_E_COUNT_);
    if (r != WIRE_OK) return;
    REQUIRE(ip.payload >= p + WIRE_IPV6_HLEN && ip.payload + ip.upper_len <= p + n);
    rt_ipv6(&ip);
    if (!deep) return;
    uint8_t *pl = p + (ip.payload - p);
    if (ip.next == WIRE_PROTO_TCP)
        do_tcp(pl, ip.upper_len, fix, wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_TCP, ip.upper_len));
    else if (ip.next == WIRE_PROTO_ICMPV6)
        do_icmp6(pl, ip.upper_len, fix, ip.src, ip.dst);
}

static void do_chain(uint8_t *f, size_t n, int fix) {
    struct wire_eth e;
    int r = wire_eth_parse(f, n, &e);
    REQUIRE(r == WIRE_ETH_HLEN || (r < 0 && r > -WIRE_E_COUNT_));
    if (r < 0) return;
    rt_eth(&e);
    uint8_t *p = f + WIRE_ETH_HLEN;
    size_t l = n - WIRE_ETH_HLEN;
    if (e.ethertype == WIRE_ETHERTYPE_ARP) {
        struct wire_arp a;
        if (wire_arp_parse(p, l, &a) == WIRE_OK) rt_arp(&a);
    } else if (e.ethertype == WIRE_ETHERTYPE_IPV4) {
        do_ipv4(p, l, fix, 1);
    } else if (e.ethertype == WIRE_ETHERTYPE_IPV6) {
        do_ipv6(p, l, fix, 1);
    }
}

static void do_csum(const uint8_t *p, size_t n) {
    if (n < 4) return;
    uint32_t start = wire_get32(p);
    p += 4; n -= 4;
    /* reference */
    uint64_t s = (start >> 16) + (start & 0xffff);
    for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1) s += (uint32_t)p[n - 1] << 8;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    uint16_t want = (uint16_t)~s;
    REQUIRE(wire_csum_fold(wire_csum_add(start, p, n)) == want);
    /* split at an even point: same answer */
    size_t cut = n ? (size_t)(p[0] % (n + 1)) & ~(size_t)1 : 0;
    REQUIRE(wire_csum_fold(wire_csum_add(wire_csum_add(start, p, cut), p + cut, n - cut)) == want);
    /* RFC 1624 on the first word */
    if (n >= 4 && (n % 2) == 0) {
        uint8_t *b = malloc(n);
        memcpy(b, p, n);
        uint16_t c0 = wire_csum_fold(wire_csum_add(0, b, n));
        uint16_t ov = wire_get16(b), nv = wire_get16(b + 2);
        wire_put16(b, nv);
        uint16_t full = wire_csum_fold(wire_csum_add(0, b, n));
        uint16_t inc = wire_csum_update16(c0, ov, nv);
        uint8_t any = 0;
        for (size_t i = 0; i < n; i++) any |= b[i];
        REQUIRE(inc == full || (!any && (inc == 0 || inc == 0xffff)));
        free(b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t sel = data[0];
    size_t n = size - 1;
    uint8_t *p = malloc(n ? n : 1);          /* exact-size mutable copy (fix-ups write into it) */
    if (n) memcpy(p, data + 1, n);
    int fix = (sel & 0x80) != 0;
    switch ((sel & 0x7f) % 9) {
    case 0: do_chain(p, n, fix); break;
    case 1: { struct wire_eth e; if (wire_eth_parse(p, n, &e) == WIRE_ETH_HLEN) rt_eth(&e); break; }
    case 2: { struct wire_arp a; if (wire_arp_parse(p, n, &a) == WIRE_OK) rt_arp(&a); break; }
    case 3: do_ipv4(p, n, fix, 0); break;
    case 4: do_ipv6(p, n, fix, 0); break;
    case 5: do_icmp4(p, n, fix); break;
    case 6: do_icmp6(p, n, fix, SRC6, DST6); break;
    case 7: do_tcp(p, n, fix, wire_pseudo4((const uint8_t *)"\xc6\x12\x00\x01", (const uint8_t *)"\xc6\x12\x00\x02",
                                           WIRE_PROTO_TCP, (uint32_t)n)); break;
    case 8: do_csum(p, n); break;
    }
    free(p);
    return 0;
}
