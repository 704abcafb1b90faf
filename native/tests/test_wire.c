/*
 * test_wire.c — tests for native/wire: checksums (RFC 1071 known answer, reference
 * comparison at every length/alignment, RFC 1624 incremental update), and every format from
 * hand-built byte literals (generated with independently computed checksums): parse, emit
 * into a 0xa5-filled buffer and compare bytes, round trip, rejection cases, truncation and
 * garbage at every length (exact-size heap copies, so ASan catches any out-of-bounds read).
 */
#include "ctest.h"
#include "wire/wire.h"

/* ---------------- frames (Ethernet II) ----------------
 * f_syn      IPv4 TCP SYN 198.18.0.1:43210 -> 198.18.0.2:80, Linux option layout
 *            MSS 1460, SACKOK, TS 0x0019b4c1/0, NOP, WS 7
 * f_data     IPv4 TCP ACK|PSH with NOP NOP TS, NOP NOP SACK(2 blocks), payload "hello"
 * f_arp      ARP request who-has 198.18.0.2 tell 198.18.0.1, padded to 60 bytes
 * f_ping     ICMPv4 echo request id 0x1234 seq 1, "abcdefgh"
 * f_fragneed ICMPv4 dest unreach code 4 next-mtu 1280 quoting f_syn's IP header + 8 bytes
 * f_ns       ICMPv6 NS 2001:db8::1 -> solicited-node of 2001:db8::2, SLLA option
 * f_na       ICMPv6 NA (S|O) 2001:db8::2 -> 2001:db8::1, TLLA option
 * f_echo6    ICMPv6 echo request id 0xbeef seq 3
 * f_syn6x    IPv6 TCP SYN behind a hop-by-hop (8 B) and a destination-options (16 B) header
 * f_frag6    IPv6 with a fragment header
 * f_ptb      ICMPv6 packet too big mtu 1280 quoting an IPv6 TCP header
 */
static const uint8_t f_syn[74] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x92, 0x4e, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0xa8, 0xca, 0x00, 0x50, 0x6e, 0x3d, 0x1c, 0x2a, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0xd8, 0x8a, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x19,
    0xb4, 0xc1, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
};

static const uint8_t f_data[91] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x4d, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xae, 0x83, 0xc6, 0x12, 0x00, 0x02, 0xc6, 0x12,
    0x00, 0x01, 0x00, 0x50, 0xa8, 0xca, 0x11, 0x11, 0x11, 0x11, 0x6e, 0x3d, 0x1c, 0x2b, 0xd0, 0x18,
    0x01, 0xf6, 0xe9, 0x53, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00,
    0x07, 0xd0, 0x01, 0x01, 0x05, 0x12, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0xc8, 0x00, 0x00,
    0x01, 0x2c, 0x00, 0x00, 0x01, 0x90, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
};

static const uint8_t f_arp[60] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t f_ping[50] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x24, 0x00, 0x07, 0x00, 0x00, 0x40, 0x01, 0xee, 0xaa, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68,
};

static const uint8_t f_fragneed[70] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x38, 0x00, 0x09, 0x00, 0x00, 0x40, 0x01, 0xee, 0x94, 0xc6, 0x12, 0x00, 0x02, 0xc6, 0x12,
    0x00, 0x01, 0x03, 0x04, 0xc4, 0x79, 0x00, 0x00, 0x05, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46,
    0x40, 0x00, 0x40, 0x06, 0x92, 0x4e, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x02, 0xa8, 0xca,
    0x00, 0x50, 0x6e, 0x3d, 0x1c, 0x2a,
};

static const uint8_t f_ns[86] = {
    0x33, 0x33, 0xff, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xff, 0x00, 0x00, 0x02, 0x87, 0x00, 0x1c, 0x27, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
};

static const uint8_t f_na[86] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x00, 0x8a, 0x71, 0x60, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
};

static const uint8_t f_echo6[68] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x0e, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x50, 0x5d, 0xbe, 0xef, 0x00, 0x03, 0x70, 0x69,
    0x6e, 0x67, 0x36, 0x21,
};

static const uint8_t f_syn6x[102] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x30, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x06, 0x01,
    0x01, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9c, 0x40,
    0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff, 0xff, 0x9e, 0xc9,
    0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
};

static const uint8_t f_frag6[86] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x2c, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x06, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2a, 0x9c, 0x40,
    0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff, 0xff, 0x9e, 0xc9,
    0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
};

static const uint8_t f_ptb[110] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x38, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x3d, 0x4e, 0x00, 0x00, 0x05, 0x00, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x18, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01,
};


static const uint8_t MAC_A[6] = {2, 0, 0, 0, 0, 1}, MAC_B[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t IP_A[4] = {198, 18, 0, 1}, IP_B[4] = {198, 18, 0, 2};
static const uint8_t IP6_A[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t IP6_B[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};

/* deterministic PRNG (xorshift64*) so a failure replays */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* reference RFC 1071 sum, one 16-bit word at a time */
static uint32_t ref_sum(const uint8_t *p, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1) s += (uint32_t)p[n - 1] << 8;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}

/* Full receive chain as the engine would run it; returns the first error or a positive tag. */
static int chain(const uint8_t *f, size_t n) {
    struct wire_eth eth;
    int r = wire_eth_parse(f, n, &eth);
    if (r < 0) return r;
    const uint8_t *p = f + WIRE_ETH_HLEN;
    size_t l = n - WIRE_ETH_HLEN;
    if (eth.ethertype == WIRE_ETHERTYPE_ARP) {
        struct wire_arp a;
        r = wire_arp_parse(p, l, &a);
        return r < 0 ? r : 1;
    }
    if (eth.ethertype == WIRE_ETHERTYPE_IPV4) {
        struct wire_ipv4 ip;
        if ((r = wire_ipv4_parse(p, l, &ip)) < 0) return r;
        if (ip.proto == WIRE_PROTO_TCP) {
            struct wire_tcp t;
            if (!wire_tcp_csum_ok(ip.payload, ip.payload_len,
                                  wire_pseudo4(ip.src, ip.dst, WIRE_PROTO_TCP, ip.payload_len)))
                return WIRE_E_BAD_CSUM;
            r = wire_tcp_parse(ip.payload, ip.payload_len, &t);
            return r < 0 ? r : 2;
        }
        if (ip.proto == WIRE_PROTO_ICMP) {
            struct wire_icmp4 ic;
            r = wire_icmp4_parse(ip.payload, ip.payload_len, &ic);
            return r < 0 ? r : 3;
        }
        return WIRE_E_UNSUPPORTED;
    }
    if (eth.ethertype == WIRE_ETHERTYPE_IPV6) {
        struct wire_ipv6 ip;
        if ((r = wire_ipv6_parse(p, l, &ip)) < 0) return r;
        if (ip.next == WIRE_PROTO_TCP) {
            struct wire_tcp t;
            if (!wire_tcp_csum_ok(ip.payload, ip.upper_len,
                                  wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_TCP, ip.upper_len)))
                return WIRE_E_BAD_CSUM;
            r = wire_tcp_parse(ip.payload, ip.upper_len, &t);
            return r < 0 ? r : 4;
        }
        if (ip.next == WIRE_PROTO_ICMPV6) {
            struct wire_icmp6 ic;
            r = wire_icmp6_parse(ip.payload, ip.upper_len, ip.src, ip.dst, &ic);
            return r < 0 ? r : 5;
        }
        return WIRE_E_UNSUPPORTED;
    }
    return WIRE_E_UNSUPPORTED;
}

/* Every parser directly on the same bytes (garbage/truncation: must not crash). */
static void all_parsers(const uint8_t *p, size_t n) {
    struct wire_eth e; struct wire_arp a; struct wire_ipv4 i4; struct wire_ipv6 i6;
    struct wire_icmp4 c4; struct wire_icmp6 c6; struct wire_tcp t;
    (void)wire_eth_parse(p, n, &e);
    (void)wire_arp_parse(p, n, &a);
    (void)wire_ipv4_parse(p, n, &i4);
    (void)wire_ipv6_parse(p, n, &i6);
    (void)wire_icmp4_parse(p, n, &c4);
    (void)wire_icmp6_parse(p, n, IP6_A, IP6_B, &c6);
    (void)wire_tcp_parse(p, n, &t);
    (void)wire_tcp_csum_ok(p, n, 0);
    (void)chain(p, n);
}

/* exact-size heap copy so ASan flags a read one past the end */
static uint8_t *dup_exact(const uint8_t *p, size_t n) {
    uint8_t *d = malloc(n ? n : 1);
    if (n) memcpy(d, p, n);
    return d;
}

/* ---------------- checksums ---------------- */
static void test_csum_rfc1071_example(void) {
    /* RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 -> sum ddf2, checksum 220d */
    static const uint8_t d[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    uint32_t s = wire_csum_add(0, d, 8);
    CHECK_EQ((s & 0xffff) + (s >> 16), 0xddf2);
    CHECK_EQ(wire_csum_fold(s), 0x220d);
    /* the same split into two calls at an even offset */
    CHECK_EQ(wire_csum_fold(wire_csum_add(wire_csum_add(0, d, 4), d + 4, 4)), 0x220d);
    /* odd length: trailing byte is the high byte of a zero-padded word */
    static const uint8_t o[3] = {0x12, 0x34, 0x56};
    CHECK_EQ(wire_csum_fold(wire_csum_add(0, o, 3)), (uint16_t)~(0x1234 + 0x5600));
    CHECK_EQ(wire_csum_fold(0), 0xffff);
    CHECK_EQ(wire_csum_fold(0xffff), 0);
    CHECK_EQ(wire_csum_fold(0xffffffffu), 0);     /* ffff + ffff = 1fffe -> fffe + 1 = ffff */
}

static void test_csum_vs_reference(void) {
    uint8_t buf[1600 + 8];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)rnd();
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 1600; n += (n < 130 ? 1 : 37)) {
            uint32_t start = (uint32_t)rnd();
            uint32_t got = wire_csum_add(start, buf + off, n);
            uint64_t want = (uint64_t)ref_sum(buf + off, n) + (start >> 16) + (start & 0xffff);
            while (want >> 16) want = (want & 0xffff) + (want >> 16);
            if (wire_csum_fold(got) != (uint16_t)~want) {
                CHECK_EQ(wire_csum_fold(got), (uint16_t)~want);
                return;
            }
        }
    /* all-0xff input: worst case for carries */
    memset(buf, 0xff, sizeof buf);
    CHECK_EQ(wire_csum_fold(wire_csum_add(0xffffffffu, buf, 1600)), 0);
    CHECK_EQ(wire_csum_fold(wire_csum_add(0, buf, 1601)), (uint16_t)~ref_sum(buf, 1601));
}

static void test_csum_incremental(void) {
    uint8_t buf[64];
    int mismatches = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 2 + 2 * (rnd() % 31);
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rnd();
        if (iter % 7 == 0) memset(buf, iter % 2 ? 0xff : 0x00, n - 2);   /* carry edge cases */
        uint16_t c0 = wire_csum_fold(wire_csum_add(0, buf, n));
        size_t w = 2 * (rnd() % (n / 2));
        uint16_t oldv = wire_get16(buf + w), newv = (uint16_t)rnd();
        if (iter % 5 == 0) newv = (uint16_t)~oldv;
        wire_put16(buf + w, newv);
        uint16_t full = wire_csum_fold(wire_csum_add(0, buf, n));
        uint16_t inc = wire_csum_update16(c0, oldv, newv);
        /* eqn. 3 can only differ from full recomputation by +0/-0 when all data is zero */
        int all_zero = ref_sum(buf, n) == 0;
        if (inc != full && !(all_zero && (inc == 0 || inc == 0xffff))) mismatches++;
    }
    CHECK_EQ(mismatches, 0);
    /* a real use: patch the IPv4 TTL/proto word of f_ping and verify the header again */
    uint8_t ip[20];
    memcpy(ip, f_ping + 14, 20);
    uint16_t oldw = wire_get16(ip + 8);
    ip[8]--;
    wire_put16(ip + 10, wire_csum_update16(wire_get16(ip + 10), oldw, wire_get16(ip + 8)));
    CHECK_EQ(wire_csum_fold(wire_csum_add(0, ip, 20)), 0);
}

static void test_pseudo(void) {
    /* pseudo4 equals the sum over the explicit 12-byte pseudo-header */
    uint8_t ph[12] = {198, 18, 0, 1, 198, 18, 0, 2, 0, 6, 0x05, 0xdc};
    CHECK_EQ(wire_csum_fold(wire_pseudo4(IP_A, IP_B, 6, 1500)), wire_csum_fold(wire_csum_add(0, ph, 12)));
    uint8_t ph6[40] = {0};
    memcpy(ph6, IP6_A, 16); memcpy(ph6 + 16, IP6_B, 16);
    ph6[33] = 0x01; ph6[34] = 0x02; ph6[35] = 0x03; ph6[39] = 58;
    CHECK_EQ(wire_csum_fold(wire_pseudo6(IP6_A, IP6_B, 58, 0x10203)), wire_csum_fold(wire_csum_add(0, ph6, 40)));
}

/* ---------------- Ethernet / ARP ---------------- */
static void test_eth(void) {
    struct wire_eth e;
    CHECK_EQ(wire_eth_parse(f_syn, sizeof f_syn, &e), WIRE_ETH_HLEN);
    CHECK_MEM(e.dst, MAC_B, 6);
    CHECK_MEM(e.src, MAC_A, 6);
    CHECK_EQ(e.ethertype, WIRE_ETHERTYPE_IPV4);
    uint8_t out[64];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_eth_emit(out, sizeof out, &e), WIRE_ETH_HLEN);
    CHECK_MEM(out, f_syn, WIRE_ETH_HLEN);
    CHECK_EQ(out[WIRE_ETH_HLEN], 0xa5);
    CHECK_EQ(wire_eth_emit(out, 13, &e), 0);
    for (size_t n = 0; n < WIRE_ETH_HLEN; n++) CHECK_EQ(wire_eth_parse(f_syn, n, &e), WIRE_E_TRUNCATED);
    uint8_t bad[14];
    memcpy(bad, f_syn, 14);
    bad[6] = 0xff;   /* group source MAC */
    CHECK_EQ(wire_eth_parse(bad, 14, &e), WIRE_E_BAD_ADDR);
}

static void test_arp(void) {
    struct wire_eth e;
    struct wire_arp a;
    CHECK_EQ(wire_eth_parse(f_arp, sizeof f_arp, &e), WIRE_ETH_HLEN);
    CHECK_EQ(e.ethertype, WIRE_ETHERTYPE_ARP);
    const uint8_t *p = f_arp + 14;
    CHECK_EQ(wire_arp_parse(p, sizeof f_arp - 14, &a), WIRE_OK);
    CHECK_EQ(a.op, WIRE_ARP_REQUEST);
    CHECK_MEM(a.sha, MAC_A, 6);
    CHECK_MEM(a.spa, IP_A, 4);
    CHECK_MEM(a.tpa, IP_B, 4);
    uint8_t out[40];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_arp_emit(out, sizeof out, &a), WIRE_ARP_LEN);
    CHECK_MEM(out, p, WIRE_ARP_LEN);
    CHECK_EQ(out[WIRE_ARP_LEN], 0xa5);
    CHECK_EQ(wire_arp_emit(out, WIRE_ARP_LEN - 1, &a), 0);
    /* reply round trip */
    struct wire_arp r = a, r2;
    r.op = WIRE_ARP_REPLY;
    memcpy(r.sha, MAC_B, 6); memcpy(r.spa, IP_B, 4); memcpy(r.tha, MAC_A, 6); memcpy(r.tpa, IP_A, 4);
    CHECK_EQ(wire_arp_emit(out, sizeof out, &r), WIRE_ARP_LEN);
    CHECK_EQ(wire_arp_parse(out, WIRE_ARP_LEN, &r2), WIRE_OK);
    CHECK_MEM(&r, &r2, sizeof r);
    for (size_t n = 0; n < WIRE_ARP_LEN; n++) CHECK_EQ(wire_arp_parse(p, n, &a), WIRE_E_TRUNCATED);
    uint8_t bad[WIRE_ARP_LEN];
    memcpy(bad, p, sizeof bad); bad[1] = 6;      /* htype 6 */
    CHECK_EQ(wire_arp_parse(bad, sizeof bad, &a), WIRE_E_UNSUPPORTED);
    memcpy(bad, p, sizeof bad); bad[4] = 8;      /* hlen 8 */
    CHECK_EQ(wire_arp_parse(bad, sizeof bad, &a), WIRE_E_BAD_LEN);
    memcpy(bad, p, sizeof bad); bad[7] = 3;      /* RARP op */
    CHECK_EQ(wire_arp_parse(bad, sizeof bad, &a), WIRE_E_UNSUPPORTED);
}

/* ---------------- IPv4 ---------------- */
static void test_ipv4(void) {
    struct wire_ipv4 ip;
    const uint8_t *p = f_syn + 14;
    size_t n = sizeof f_syn - 14;
    CHECK_EQ(wire_ipv4_parse(p, n, &ip), WIRE_OK);
    CHECK_EQ(ip.hdr_len, 20);
    CHECK_EQ(ip.total_len, 60);
    CHECK_EQ(ip.id, 0x1c46);
    CHECK_EQ(ip.frag, 0x4000);
    CHECK_EQ(ip.ttl, 64);
    CHECK_EQ(ip.proto, WIRE_PROTO_TCP);
    CHECK_MEM(ip.src, IP_A, 4);
    CHECK_MEM(ip.dst, IP_B, 4);
    CHECK(ip.payload == p + 20);
    CHECK_EQ(ip.payload_len, 40);
    uint8_t out[64];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_ipv4_emit(out, sizeof out, &ip), 20);
    CHECK_MEM(out, p, 20);
    CHECK_EQ(out[20], 0xa5);
    CHECK_EQ(wire_ipv4_emit(out, 19, &ip), 0);
    /* DF emitted as given */
    ip.frag = 0;
    CHECK_EQ(wire_ipv4_emit(out, sizeof out, &ip), 20);
    CHECK_EQ(out[6], 0);
    struct wire_ipv4 ip2;
    CHECK_EQ(wire_ipv4_parse(out, 20, &ip2), WIRE_E_TRUNCATED);   /* total_len 60 > 20 */
    /* link padding excluded: ARP-sized pad after a ping */
    uint8_t padded[sizeof f_ping - 14 + 10];
    memcpy(padded, f_ping + 14, sizeof f_ping - 14);
    memset(padded + sizeof f_ping - 14, 0, 10);
    CHECK_EQ(wire_ipv4_parse(padded, sizeof padded, &ip2), WIRE_OK);
    CHECK_EQ(ip2.payload_len, sizeof f_ping - 14 - 20);
    /* truncation */
    for (size_t k = 0; k < n; k++) CHECK(wire_ipv4_parse(p, k, &ip2) == WIRE_E_TRUNCATED);
    uint8_t b[60];
    memcpy(b, p, 60);
    b[0] = 0x65; CHECK_EQ(wire_ipv4_parse(b, 60, &ip2), WIRE_E_BAD_VERSION);
    b[0] = 0x44; CHECK_EQ(wire_ipv4_parse(b, 60, &ip2), WIRE_E_BAD_HDRLEN);
    b[0] = 0x4f; CHECK_EQ(wire_ipv4_parse(b, 59, &ip2), WIRE_E_TRUNCATED);
    b[0] = 0x45; b[3] = 19; CHECK_EQ(wire_ipv4_parse(b, 60, &ip2), WIRE_E_BAD_LEN);
    memcpy(b, p, 60); b[8] ^= 1;   /* TTL flipped */
    CHECK_EQ(wire_ipv4_parse(b, 60, &ip2), WIRE_E_BAD_CSUM);
}

static void ipv4_fix_csum(uint8_t *h, size_t hl) {
    h[10] = h[11] = 0;
    wire_put16(h + 10, wire_csum_fold(wire_csum_add(0, h, hl)));
}

static void test_ipv4_fragment_and_options(void) {
    struct wire_ipv4 ip;
    uint8_t b[64];
    memcpy(b, f_syn + 14, 60);
    wire_put16(b + 6, 0x2000);   /* MF */
    ipv4_fix_csum(b, 20);
    memset(&ip, 0, sizeof ip);
    CHECK_EQ(wire_ipv4_parse(b, 60, &ip), WIRE_E_FRAGMENT);
    CHECK_EQ(ip.id, 0x1c46);       /* filled so the caller can count it */
    CHECK_EQ(ip.frag, 0x2000);
    CHECK_EQ(ip.proto, WIRE_PROTO_TCP);
    wire_put16(b + 6, 0x4000 | 185);  /* DF + offset: last fragment */
    ipv4_fix_csum(b, 20);
    CHECK_EQ(wire_ipv4_parse(b, 60, &ip), WIRE_E_FRAGMENT);
    /* IHL 6 with a 4-byte option (NOP NOP NOP EOL): skipped */
    memcpy(b, f_syn + 14, 20);
    b[0] = 0x46;
    wire_put16(b + 2, 64);
    b[20] = 1; b[21] = 1; b[22] = 1; b[23] = 0;
    memcpy(b + 24, f_syn + 34, 40);
    ipv4_fix_csum(b, 24);
    CHECK_EQ(wire_ipv4_parse(b, 64, &ip), WIRE_OK);
    CHECK_EQ(ip.hdr_len, 24);
    CHECK(ip.payload == b + 24);
    CHECK_EQ(ip.payload_len, 40);
    /* multicast source */
    memcpy(b, f_syn + 14, 60);
    b[12] = 224;
    ipv4_fix_csum(b, 20);
    CHECK_EQ(wire_ipv4_parse(b, 60, &ip), WIRE_E_BAD_ADDR);
}

/* ---------------- TCP ---------------- */
static void test_tcp_syn(void) {
    const uint8_t *seg = f_syn + 34;
    size_t n = sizeof f_syn - 34;
    CHECK(wire_tcp_csum_ok(seg, n, wire_pseudo4(IP_A, IP_B, WIRE_PROTO_TCP, (uint32_t)n)));
    CHECK_EQ(chain(f_syn, sizeof f_syn), 2);
    struct wire_tcp t;
    CHECK_EQ(wire_tcp_parse(seg, n, &t), WIRE_OK);
    CHECK_EQ(t.sport, 43210);
    CHECK_EQ(t.dport, 80);
    CHECK_EQ(t.seq, 0x6e3d1c2a);
    CHECK_EQ(t.ack, 0);
    CHECK_EQ(t.hdr_len, 40);
    CHECK_EQ(t.flags, WIRE_TCP_SYN);
    CHECK_EQ(t.win, 64240);
    CHECK_EQ(t.csum, wire_get16(seg + 16));
    CHECK_EQ(t.has_mss, 1); CHECK_EQ(t.mss, 1460);
    CHECK_EQ(t.sack_perm, 1);
    CHECK_EQ(t.has_ts, 1); CHECK_EQ(t.tsval, 0x0019b4c1); CHECK_EQ(t.tsecr, 0);
    CHECK_EQ(t.has_wscale, 1); CHECK_EQ(t.wscale, 7);
    CHECK_EQ(t.nsack, 0);
    CHECK_EQ(t.payload_len, 0);
    CHECK_EQ(wire_tcp_hdr_len(&t), 40);
    uint8_t out[80];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_tcp_emit(out, sizeof out, &t), 40);
    CHECK_EQ(out[16], 0); CHECK_EQ(out[17], 0);   /* csum left 0 */
    CHECK_EQ(out[40], 0xa5);
    wire_tcp_csum_fill(out, 40, wire_pseudo4(IP_A, IP_B, WIRE_PROTO_TCP, 40));
    CHECK_MEM(out, seg, 40);
    CHECK_EQ(wire_tcp_emit(out, 39, &t), 0);
}

static void test_tcp_data_sack(void) {
    const uint8_t *seg = f_data + 34;
    size_t n = sizeof f_data - 34;
    CHECK_EQ(chain(f_data, sizeof f_data), 2);
    struct wire_tcp t;
    CHECK_EQ(wire_tcp_parse(seg, n, &t), WIRE_OK);
    CHECK_EQ(t.flags, WIRE_TCP_ACK | WIRE_TCP_PSH);
    CHECK_EQ(t.has_ts, 1); CHECK_EQ(t.tsval, 1000); CHECK_EQ(t.tsecr, 2000);
    CHECK_EQ(t.nsack, 2);
    CHECK_EQ(t.sack[0].left, 100); CHECK_EQ(t.sack[0].right, 200);
    CHECK_EQ(t.sack[1].left, 300); CHECK_EQ(t.sack[1].right, 400);
    CHECK_EQ(t.has_mss, 0); CHECK_EQ(t.sack_perm, 0); CHECK_EQ(t.has_wscale, 0);
    CHECK_EQ(t.payload_len, 5);
    CHECK_MEM(t.payload, "hello", 5);
    uint8_t out[80];
    memset(out, 0xa5, sizeof out);
    size_t hl = wire_tcp_emit(out, sizeof out, &t);
    CHECK_EQ(hl, t.hdr_len);
    memcpy(out + hl, t.payload, t.payload_len);
    wire_tcp_csum_fill(out, hl + 5, wire_pseudo4(IP_B, IP_A, WIRE_PROTO_TCP, (uint32_t)(hl + 5)));
    CHECK_MEM(out, seg, n);
}

static void test_tcp_emit_sack_trim(void) {
    struct wire_tcp t, p;
    memset(&t, 0, sizeof t);
    t.sport = 1; t.dport = 2; t.flags = WIRE_TCP_ACK;
    t.nsack = 4;
    for (int i = 0; i < 4; i++) { t.sack[i].left = 1000u * i + 1; t.sack[i].right = 1000u * i + 500; }
    uint8_t out[64];
    /* no TS: 4 blocks fit in 36 bytes */
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_tcp_emit(out, sizeof out, &t), 56);
    CHECK_EQ(wire_tcp_parse(out, 56, &p), WIRE_OK);
    CHECK_EQ(p.nsack, 4);
    CHECK_MEM(p.sack, t.sack, sizeof t.sack);
    /* with TS: 3 */
    t.has_ts = 1; t.tsval = 7; t.tsecr = 9;
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_tcp_emit(out, sizeof out, &t), 60);
    CHECK_EQ(wire_tcp_parse(out, 60, &p), WIRE_OK);
    CHECK_EQ(p.nsack, 3); CHECK_EQ(p.has_ts, 1); CHECK_EQ(p.tsval, 7); CHECK_EQ(p.tsecr, 9);
    CHECK_MEM(p.sack, t.sack, 3 * sizeof t.sack[0]);
    /* with MSS + TS + WS + SACKOK (SYN-ACK-like): 2 */
    t.has_mss = 1; t.mss = 1460; t.has_wscale = 1; t.wscale = 20; t.sack_perm = 1;
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_tcp_emit(out, sizeof out, &t), 60);
    CHECK_EQ(wire_tcp_parse(out, 60, &p), WIRE_OK);
    CHECK_EQ(p.nsack, 2); CHECK_EQ(p.wscale, 14); CHECK_EQ(p.mss, 1460); CHECK_EQ(p.sack_perm, 1);
    /* nsack beyond the array is clamped, not read past */
    t.has_mss = t.has_wscale = t.has_ts = t.sack_perm = 0;
    t.nsack = 200;
    CHECK_EQ(wire_tcp_hdr_len(&t), 56);
    /* every option combination round-trips and is 4-aligned */
    for (unsigned m = 0; m < 64; m++) {
        memset(&t, 0, sizeof t);
        t.sport = 0x1234; t.dport = 0x5678; t.seq = 0xdeadbeef; t.ack = 0xfeedface;
        t.flags = WIRE_TCP_ACK | WIRE_TCP_ECE; t.win = 0xabcd; t.urg = 3;
        t.has_mss = m & 1; t.mss = 536; t.has_wscale = (m >> 1) & 1; t.wscale = 3;
        t.sack_perm = (m >> 2) & 1; t.has_ts = (m >> 3) & 1; t.tsval = 0x01020304; t.tsecr = 0x05060708;
        t.nsack = (uint8_t)((m >> 4) * 2);
        for (int i = 0; i < 4; i++) { t.sack[i].left = rnd(); t.sack[i].right = rnd(); }
        memset(out, 0xa5, sizeof out);
        size_t hl = wire_tcp_emit(out, sizeof out, &t);
        CHECK(hl >= 20 && hl <= 60 && hl % 4 == 0);
        CHECK_EQ(hl, wire_tcp_hdr_len(&t));
        CHECK_EQ(out[12] >> 4, hl / 4);
        CHECK_EQ(wire_tcp_parse(out, hl, &p), WIRE_OK);
        CHECK_EQ(p.hdr_len, hl);
        CHECK_EQ(p.sport, t.sport); CHECK_EQ(p.dport, t.dport); CHECK_EQ(p.seq, t.seq); CHECK_EQ(p.ack, t.ack);
        CHECK_EQ(p.flags, t.flags); CHECK_EQ(p.win, t.win); CHECK_EQ(p.urg, t.urg);
        CHECK_EQ(p.has_mss, t.has_mss); CHECK_EQ(p.has_wscale, t.has_wscale);
        CHECK_EQ(p.sack_perm, t.sack_perm); CHECK_EQ(p.has_ts, t.has_ts);
        if (t.has_mss) CHECK_EQ(p.mss, t.mss);
        if (t.has_wscale) CHECK_EQ(p.wscale, t.wscale);
        if (t.has_ts) { CHECK_EQ(p.tsval, t.tsval); CHECK_EQ(p.tsecr, t.tsecr); }
        CHECK(p.nsack <= t.nsack);
        if (t.nsack) CHECK(p.nsack >= 1);
        CHECK_MEM(p.sack, t.sack, p.nsack * sizeof t.sack[0]);
        /* emit(parse(emit(x))) == emit(x) */
        uint8_t out2[64];
        memset(out2, 0x5a, sizeof out2);
        CHECK_EQ(wire_tcp_emit(out2, sizeof out2, &p), hl);
        CHECK_MEM(out2, out, hl);
    }
}

/* Build a segment with the given option bytes (padded with EOL to 4) and parse it. */
static int parse_opts(const uint8_t *opt, size_t olen, struct wire_tcp *t) {
    uint8_t s[60];
    memset(s, 0, sizeof s);
    size_t hl = 20 + ((olen + 3) & ~(size_t)3);
    wire_put16(s, 1000); wire_put16(s + 2, 80);
    s[12] = (uint8_t)((hl / 4) << 4);
    s[13] = WIRE_TCP_ACK;
    memcpy(s + 20, opt, olen);
    uint8_t *d = dup_exact(s, hl);
    int r = wire_tcp_parse(d, hl, t);
    free(d);
    return r;
}

static void test_tcp_option_rejects(void) {
    struct wire_tcp t;
    { uint8_t o[] = {1, 1, 1, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_OK); }
    { uint8_t o[] = {0, 2, 4, 0x05}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_OK); CHECK_EQ(t.has_mss, 0); } /* EOL stops */
    { uint8_t o[] = {99, 0, 1, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_BAD_LEN); }   /* zero length */
    { uint8_t o[] = {99, 1, 1, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_BAD_LEN); }   /* one length */
    { uint8_t o[] = {99, 6, 1, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_OVERRUN); }
    { uint8_t o[] = {1, 1, 1, 2}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_OVERRUN); }     /* kind, no length */
    { uint8_t o[] = {2, 3, 5, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_BAD_LEN); }     /* MSS len 3 */
    { uint8_t o[] = {2, 5, 5, 0xb4, 0, 0, 0, 0}; CHECK_EQ(parse_opts(o, 8, &t), WIRE_E_OPT_BAD_LEN); }
    { uint8_t o[] = {3, 4, 7, 0}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_BAD_LEN); }     /* WS len 4 */
    { uint8_t o[] = {4, 3, 0, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_E_OPT_BAD_LEN); }     /* SACKOK len 3 */
    { uint8_t o[12] = {8, 9}; CHECK_EQ(parse_opts(o, 12, &t), WIRE_E_OPT_BAD_LEN); }        /* TS len 9 */
    { uint8_t o[12] = {5, 9}; CHECK_EQ(parse_opts(o, 12, &t), WIRE_E_OPT_BAD_LEN); }        /* SACK len 9 */
    { uint8_t o[12] = {5, 2}; CHECK_EQ(parse_opts(o, 12, &t), WIRE_E_OPT_BAD_LEN); }        /* SACK no blocks */
    { uint8_t o[20] = {5, 18}; CHECK_EQ(parse_opts(o, 20, &t), WIRE_OK); CHECK_EQ(t.nsack, 2); }
    { uint8_t o[40] = {5, 34}; CHECK_EQ(parse_opts(o, 40, &t), WIRE_OK); CHECK_EQ(t.nsack, 4); }
    { uint8_t o[40] = {5, 42}; CHECK_EQ(parse_opts(o, 40, &t), WIRE_E_OPT_OVERRUN); }
    { uint8_t o[] = {3, 3, 200, 1}; CHECK_EQ(parse_opts(o, 4, &t), WIRE_OK); CHECK_EQ(t.wscale, 14); }
    { uint8_t o[] = {254, 6, 0xf9, 0x89, 0, 0, 2, 4, 2, 0, 1, 1};                         /* unknown skipped */
      CHECK_EQ(parse_opts(o, 12, &t), WIRE_OK); CHECK_EQ(t.has_mss, 1); CHECK_EQ(t.mss, 512); }
}

static void test_tcp_header_rejects(void) {
    struct wire_tcp t;
    uint8_t s[40];
    memcpy(s, f_syn + 34, 40);
    for (size_t k = 0; k < 40; k++) {
        uint8_t *d = dup_exact(s, k);
        int r = wire_tcp_parse(d, k, &t);
        CHECK(r == (k < 20 ? WIRE_E_TRUNCATED : WIRE_E_BAD_HDRLEN));
        free(d);
    }
    s[12] = 0x40; CHECK_EQ(wire_tcp_parse(s, 40, &t), WIRE_E_BAD_HDRLEN);
    s[12] = 0xf0; CHECK_EQ(wire_tcp_parse(s, 40, &t), WIRE_E_BAD_HDRLEN);
    s[12] = 0x50;
    static const struct { uint8_t f; int ok; } cases[] = {
        {0, 0}, {WIRE_TCP_FIN, 0}, {WIRE_TCP_PSH, 0}, {WIRE_TCP_URG, 0}, {WIRE_TCP_FIN | WIRE_TCP_PSH | WIRE_TCP_URG, 0},
        {WIRE_TCP_SYN | WIRE_TCP_FIN, 0}, {WIRE_TCP_SYN | WIRE_TCP_RST, 0}, {WIRE_TCP_SYN | WIRE_TCP_FIN | WIRE_TCP_ACK, 0},
        {WIRE_TCP_RST | WIRE_TCP_FIN | WIRE_TCP_ACK, 0}, {0xff, 0},
        {WIRE_TCP_SYN, 1}, {WIRE_TCP_SYN | WIRE_TCP_ACK, 1}, {WIRE_TCP_ACK, 1}, {WIRE_TCP_RST, 1},
        {WIRE_TCP_RST | WIRE_TCP_ACK, 1}, {WIRE_TCP_FIN | WIRE_TCP_ACK, 1}, {WIRE_TCP_ACK | WIRE_TCP_PSH | WIRE_TCP_URG, 1},
        {WIRE_TCP_SYN | WIRE_TCP_ECE | WIRE_TCP_CWR, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s[13] = cases[i].f;
        int r = wire_tcp_parse(s, 20, &t);
        if (cases[i].ok) CHECK_EQ(r, WIRE_OK); else CHECK_EQ(r, WIRE_E_BAD_FLAGS);
    }
    s[13] = WIRE_TCP_ACK;
    wire_put16(s, 0); CHECK_EQ(wire_tcp_parse(s, 20, &t), WIRE_E_BAD_ADDR);
    wire_put16(s, 5); wire_put16(s + 2, 0); CHECK_EQ(wire_tcp_parse(s, 20, &t), WIRE_E_BAD_ADDR);
    /* bad checksum detected */
    memcpy(s, f_syn + 34, 40);
    s[25] ^= 0x10;
    CHECK(!wire_tcp_csum_ok(s, 40, wire_pseudo4(IP_A, IP_B, WIRE_PROTO_TCP, 40)));
}

/* ---------------- ICMPv4 ---------------- */
static void test_icmp4(void) {
    CHECK_EQ(chain(f_ping, sizeof f_ping), 3);
    const uint8_t *p = f_ping + 34;
    size_t n = sizeof f_ping - 34;
    struct wire_icmp4 c;
    CHECK_EQ(wire_icmp4_parse(p, n, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP4_ECHO_REQUEST); CHECK_EQ(c.code, 0);
    CHECK_EQ(c.id, 0x1234); CHECK_EQ(c.seq, 1);
    CHECK_EQ(c.data_len, 8); CHECK_MEM(c.data, "abcdefgh", 8);
    uint8_t out[128];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp4_emit(out, sizeof out, &c), n);
    CHECK_MEM(out, p, n);
    CHECK_EQ(out[n], 0xa5);
    CHECK_EQ(wire_icmp4_emit(out, n - 1, &c), 0);
    /* echo reply built in place (data overlaps the output) */
    uint8_t inplace[64];
    memcpy(inplace, p, n);
    struct wire_icmp4 rep;
    CHECK_EQ(wire_icmp4_parse(inplace, n, &rep), WIRE_OK);
    rep.type = WIRE_ICMP4_ECHO_REPLY;
    CHECK_EQ(wire_icmp4_emit(inplace, sizeof inplace, &rep), n);
    CHECK_EQ(wire_icmp4_parse(inplace, n, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP4_ECHO_REPLY); CHECK_EQ(c.id, 0x1234); CHECK_MEM(c.data, "abcdefgh", 8);
    /* frag needed */
    CHECK_EQ(chain(f_fragneed, sizeof f_fragneed), 3);
    p = f_fragneed + 34;
    n = sizeof f_fragneed - 34;
    CHECK_EQ(wire_icmp4_parse(p, n, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP4_DEST_UNREACH); CHECK_EQ(c.code, 4);
    CHECK_EQ(c.next_mtu, 1280);
    CHECK_EQ(c.data_len, 28);
    CHECK_MEM(c.data, f_syn + 14, 28);
    struct wire_ipv4 q;   /* the quoted header parses far enough for the caller (truncated total) */
    CHECK_EQ(wire_ipv4_parse(c.data, c.data_len, &q), WIRE_E_TRUNCATED);
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp4_emit(out, sizeof out, &c), n);
    CHECK_MEM(out, p, n);
    /* rejects */
    for (size_t k = 0; k < n; k++) {
        uint8_t *d = dup_exact(p, k);
        CHECK(wire_icmp4_parse(d, k, &c) < 0);   /* truncated or (with a partial sum) bad csum */
        free(d);
    }
    uint8_t b[64];
    memcpy(b, f_ping + 34, 16); b[9] ^= 1;
    CHECK_EQ(wire_icmp4_parse(b, 16, &c), WIRE_E_BAD_CSUM);
    memset(b, 0, 8); b[0] = 13;   /* timestamp request: unsupported */
    wire_put16(b + 2, wire_csum_fold(wire_csum_add(0, b, 8)));
    CHECK_EQ(wire_icmp4_parse(b, 8, &c), WIRE_E_UNSUPPORTED);
}

/* ---------------- IPv6 / ICMPv6 / NDP ---------------- */
static void test_ipv6(void) {
    struct wire_ipv6 ip;
    const uint8_t *p = f_echo6 + 14;
    size_t n = sizeof f_echo6 - 14;
    CHECK_EQ(wire_ipv6_parse(p, n, &ip), WIRE_OK);
    CHECK_EQ(ip.next, WIRE_PROTO_ICMPV6); CHECK_EQ(ip.hop_limit, 64);
    CHECK_EQ(ip.payload_len, n - 40); CHECK_EQ(ip.upper_len, n - 40);
    CHECK(ip.payload == p + 40);
    CHECK_MEM(ip.src, IP6_A, 16); CHECK_MEM(ip.dst, IP6_B, 16);
    uint8_t out[64];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_ipv6_emit(out, sizeof out, &ip), 40);
    CHECK_MEM(out, p, 40);
    CHECK_EQ(out[40], 0xa5);
    CHECK_EQ(wire_ipv6_emit(out, 39, &ip), 0);
    /* traffic class / flow label round trip */
    ip.tclass = 0xb8; ip.flow = 0xabcde;
    CHECK_EQ(wire_ipv6_emit(out, sizeof out, &ip), 40);
    CHECK_EQ(out[0], 0x6b); CHECK_EQ(out[1], 0x8a); CHECK_EQ(out[2], 0xbc); CHECK_EQ(out[3], 0xde);
    struct wire_ipv6 ip2;
    memcpy(out + 40, p + 40, n - 40);
    CHECK_EQ(wire_ipv6_parse(out, n, &ip2), WIRE_OK);
    CHECK_EQ(ip2.tclass, 0xb8); CHECK_EQ(ip2.flow, 0xabcde);
    for (size_t k = 0; k < n; k++) CHECK_EQ(wire_ipv6_parse(p, k, &ip2), WIRE_E_TRUNCATED);
    uint8_t b[40];
    memcpy(b, p, 40); b[0] = 0x40;
    CHECK_EQ(wire_ipv6_parse(b, 40, &ip2), WIRE_E_BAD_VERSION);
}

static void test_ipv6_ext(void) {
    struct wire_ipv6 ip;
    const uint8_t *p = f_syn6x + 14;
    size_t n = sizeof f_syn6x - 14;
    CHECK_EQ(chain(f_syn6x, sizeof f_syn6x), 4);
    CHECK_EQ(wire_ipv6_parse(p, n, &ip), WIRE_OK);
    CHECK_EQ(ip.next, WIRE_PROTO_TCP);
    CHECK_EQ(ip.payload_len, 8 + 16 + 24);
    CHECK_EQ(ip.upper_len, 24);
    CHECK(ip.payload == p + 40 + 24);
    struct wire_tcp t;
    CHECK_EQ(wire_tcp_parse(ip.payload, ip.upper_len, &t), WIRE_OK);
    CHECK_EQ(t.dport, 443); CHECK_EQ(t.mss, 1440);
    /* each truncation of the extension chain is caught */
    uint8_t b[128];
    memcpy(b, p, n);
    for (uint16_t pl = 0; pl < 24; pl++) {
        wire_put16(b + 4, pl);
        CHECK_EQ(wire_ipv6_parse(b, 40 + pl, &ip), WIRE_E_TRUNCATED);
    }
    memcpy(b, p, n);
    b[40 + 8 + 1] = 9;                     /* dest-opts length 80 > what is left */
    CHECK_EQ(wire_ipv6_parse(b, n, &ip), WIRE_E_TRUNCATED);
    memcpy(b, p, n);
    b[40] = 0;                             /* hop-by-hop not first */
    CHECK_EQ(wire_ipv6_parse(b, n, &ip), WIRE_E_UNSUPPORTED);
    /* fragment header */
    CHECK_EQ(wire_ipv6_parse(f_frag6 + 14, sizeof f_frag6 - 14, &ip), WIRE_E_FRAGMENT);
    CHECK_EQ(ip.next, 44);
    CHECK_MEM(ip.src, IP6_A, 16);
    CHECK_EQ(chain(f_frag6, sizeof f_frag6), WIRE_E_FRAGMENT);
}

static void test_icmp6_echo_ptb(void) {
    CHECK_EQ(chain(f_echo6, sizeof f_echo6), 5);
    const uint8_t *p = f_echo6 + 54;
    size_t n = sizeof f_echo6 - 54;
    struct wire_icmp6 c;
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_A, IP6_B, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP6_ECHO_REQUEST); CHECK_EQ(c.id, 0xbeef); CHECK_EQ(c.seq, 3);
    CHECK_EQ(c.data_len, 6); CHECK_MEM(c.data, "ping6!", 6);
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_B, IP6_A, &c), WIRE_OK);   /* swapped pseudo-header still sums the same */
    uint8_t wrong[16];
    memcpy(wrong, IP6_B, 16); wrong[14] = 1;
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_A, wrong, &c), WIRE_E_BAD_CSUM);
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_A, IP6_B, &c), WIRE_OK);
    uint8_t out[128];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp6_emit(out, sizeof out, IP6_A, IP6_B, &c), n);
    CHECK_MEM(out, p, n);
    CHECK_EQ(out[n], 0xa5);
    CHECK_EQ(wire_icmp6_emit(out, n - 1, IP6_A, IP6_B, &c), 0);
    /* packet too big */
    CHECK_EQ(chain(f_ptb, sizeof f_ptb), 5);
    p = f_ptb + 54;
    n = sizeof f_ptb - 54;
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_B, IP6_A, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP6_PACKET_TOO_BIG); CHECK_EQ(c.mtu, 1280);
    CHECK_EQ(c.data_len, 48);
    CHECK_EQ(c.data[0] >> 4, 6);
    CHECK_MEM(c.data + 8, IP6_A, 16);              /* quoted source = our address */
    struct wire_ipv6 q;                            /* quote is cut: payload_len says more */
    CHECK_EQ(wire_ipv6_parse(c.data, c.data_len, &q), WIRE_E_TRUNCATED);
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp6_emit(out, sizeof out, IP6_B, IP6_A, &c), n);
    CHECK_MEM(out, p, n);
    for (size_t k = 0; k < n; k++) {
        uint8_t *d = dup_exact(p, k);
        CHECK(wire_icmp6_parse(d, k, IP6_B, IP6_A, &c) < 0);
        free(d);
    }
}

static const uint8_t SOL_NODE[16] = {0xff, 0x02, [11] = 1, [12] = 0xff, [15] = 2};

static void fix_icmp6(uint8_t *m, size_t n, const uint8_t *s, const uint8_t *d) {
    m[2] = m[3] = 0;
    wire_put16(m + 2, wire_csum_fold(wire_csum_add(wire_pseudo6(s, d, 58, (uint32_t)n), m, n)));
}

static void test_ndp(void) {
    CHECK_EQ(chain(f_ns, sizeof f_ns), 5);
    CHECK_EQ(chain(f_na, sizeof f_na), 5);
    const uint8_t *p = f_ns + 54;
    size_t n = sizeof f_ns - 54;
    struct wire_icmp6 c;
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_A, SOL_NODE, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP6_NEIGH_SOLICIT);
    CHECK_MEM(c.target, IP6_B, 16);
    CHECK_EQ(c.has_lladdr, 1); CHECK_MEM(c.lladdr, MAC_A, 6);
    uint8_t out[128];
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp6_emit(out, sizeof out, IP6_A, SOL_NODE, &c), n);
    CHECK_MEM(out, p, n);
    CHECK_EQ(out[n], 0xa5);
    p = f_na + 54;
    n = sizeof f_na - 54;
    CHECK_EQ(wire_icmp6_parse(p, n, IP6_B, IP6_A, &c), WIRE_OK);
    CHECK_EQ(c.type, WIRE_ICMP6_NEIGH_ADVERT);
    CHECK_EQ(c.nd_flags, WIRE_NDP_FLAG_SOLICITED | WIRE_NDP_FLAG_OVERRIDE);
    CHECK_MEM(c.target, IP6_B, 16);
    CHECK_EQ(c.has_lladdr, 1); CHECK_MEM(c.lladdr, MAC_B, 6);
    memset(out, 0xa5, sizeof out);
    CHECK_EQ(wire_icmp6_emit(out, sizeof out, IP6_B, IP6_A, &c), n);
    CHECK_MEM(out, p, n);
    CHECK_EQ(wire_icmp6_emit(out, n - 1, IP6_B, IP6_A, &c), 0);
    /* NA without option round trip */
    c.has_lladdr = 0;
    struct wire_icmp6 c2;
    CHECK_EQ(wire_icmp6_emit(out, sizeof out, IP6_B, IP6_A, &c), 24);
    CHECK_EQ(wire_icmp6_parse(out, 24, IP6_B, IP6_A, &c2), WIRE_OK);
    CHECK_EQ(c2.has_lladdr, 0); CHECK_EQ(c2.nd_flags, c.nd_flags);
    /* option errors */
    uint8_t b[64];
    memcpy(b, f_ns + 54, 32);
    b[25] = 0; fix_icmp6(b, 32, IP6_A, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 32, IP6_A, SOL_NODE, &c), WIRE_E_OPT_BAD_LEN);
    b[25] = 2; fix_icmp6(b, 32, IP6_A, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 32, IP6_A, SOL_NODE, &c), WIRE_E_OPT_OVERRUN);
    b[25] = 1; b[32] = 14; fix_icmp6(b, 33, IP6_A, SOL_NODE);     /* one stray byte: option header cut */
    CHECK_EQ(wire_icmp6_parse(b, 33, IP6_A, SOL_NODE, &c), WIRE_E_OPT_OVERRUN);
    /* unknown option skipped, SLLA after it still found */
    memcpy(b, f_ns + 54, 24);
    b[24] = 14; b[25] = 1; memset(b + 26, 0, 6);
    b[32] = 1; b[33] = 1; memcpy(b + 34, MAC_B, 6);
    fix_icmp6(b, 40, IP6_A, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 40, IP6_A, SOL_NODE, &c), WIRE_OK);
    CHECK_EQ(c.has_lladdr, 1); CHECK_MEM(c.lladdr, MAC_B, 6);
    /* DAD (unspecified source) with SLLA is invalid */
    static const uint8_t UNSPEC[16] = {0};
    memcpy(b, f_ns + 54, 32);
    fix_icmp6(b, 32, UNSPEC, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 32, UNSPEC, SOL_NODE, &c), WIRE_E_BAD_ADDR);
    /* multicast target */
    memcpy(b, f_ns + 54, 32);
    b[8] = 0xff; fix_icmp6(b, 32, IP6_A, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 32, IP6_A, SOL_NODE, &c), WIRE_E_BAD_ADDR);
    /* solicited NA sent to multicast */
    memcpy(b, f_na + 54, 32);
    fix_icmp6(b, 32, IP6_B, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 32, IP6_B, SOL_NODE, &c), WIRE_E_BAD_FLAGS);
    /* nonzero code */
    memcpy(b, f_na + 54, 32);
    b[1] = 1; fix_icmp6(b, 32, IP6_B, IP6_A);
    CHECK_EQ(wire_icmp6_parse(b, 32, IP6_B, IP6_A, &c), WIRE_E_UNSUPPORTED);
    /* NS shorter than 24 */
    memcpy(b, f_ns + 54, 20);
    fix_icmp6(b, 20, IP6_A, SOL_NODE);
    CHECK_EQ(wire_icmp6_parse(b, 20, IP6_A, SOL_NODE, &c), WIRE_E_TRUNCATED);
}

/* ---------------- truncation and garbage at every length ---------------- */
static const struct { const uint8_t *p; size_t n; } frames[] = {
    {f_syn, sizeof f_syn}, {f_data, sizeof f_data}, {f_arp, sizeof f_arp}, {f_ping, sizeof f_ping},
    {f_fragneed, sizeof f_fragneed}, {f_ns, sizeof f_ns}, {f_na, sizeof f_na}, {f_echo6, sizeof f_echo6},
    {f_syn6x, sizeof f_syn6x}, {f_frag6, sizeof f_frag6}, {f_ptb, sizeof f_ptb},
};
#define NFRAMES (sizeof frames / sizeof frames[0])

static void test_truncation_every_length(void) {
    for (size_t f = 0; f < NFRAMES; f++) {
        int full = chain(frames[f].p, frames[f].n);
        CHECK(full > 0 || full == WIRE_E_FRAGMENT);
        for (size_t k = 0; k < frames[f].n; k++) {
            uint8_t *d = dup_exact(frames[f].p, k);
            int r = chain(d, k);
            /* ARP is fine once its 28 bytes are there (the rest is padding) */
            if (f == 2 && k >= 14 + WIRE_ARP_LEN) CHECK_EQ(r, 1);
            else CHECK(r < 0);
            all_parsers(d, k);
            if (k > 14) all_parsers(d + 14, k - 14);
            if (k > 34) all_parsers(d + 34, k - 34);
            if (k > 54) all_parsers(d + 54, k - 54);
            free(d);
        }
    }
}

static void test_garbage_every_length(void) {
    uint8_t buf[256];
    for (int round = 0; round < 40; round++)
        for (size_t k = 0; k <= sizeof buf; k++) {
            for (size_t i = 0; i < k; i++) buf[i] = (uint8_t)rnd();
            /* steer some rounds into deeper layers */
            if (round % 4 == 1 && k >= 34) { buf[12] = 0x08; buf[13] = 0x00; buf[14] = 0x45; }
            if (round % 4 == 2 && k >= 54) { buf[12] = 0x86; buf[13] = 0xdd; buf[14] = 0x60; }
            if (round % 4 == 3 && k >= 21) buf[12] = (uint8_t)((5 + rnd() % 11) << 4);
            uint8_t *d = dup_exact(buf, k);
            all_parsers(d, k);
            free(d);
        }
    /* byte-flip mutations of the real frames, with checksums made valid, so parsers go deep */
    for (int iter = 0; iter < 20000; iter++) {
        size_t f = rnd() % NFRAMES;
        size_t n = frames[f].n;
        uint8_t *d = dup_exact(frames[f].p, n);
        int flips = 1 + (int)(rnd() % 3);
        for (int i = 0; i < flips; i++) d[14 + rnd() % (n - 14)] = (uint8_t)rnd();
        all_parsers(d, n);
        all_parsers(d + 14, n - 14);
        free(d);
    }
}

static void test_err_names(void) {
    CHECK(strcmp(wire_err_name(WIRE_OK), "ok") == 0);
    CHECK(strcmp(wire_err_name(WIRE_E_TRUNCATED), "truncated") == 0);
    CHECK(strcmp(wire_err_name(WIRE_E_UNSUPPORTED), "unsupported") == 0);
    CHECK(strcmp(wire_err_name(-WIRE_E_COUNT_), "unknown") == 0);
    CHECK(strcmp(wire_err_name(1), "unknown") == 0);
    for (int e = 0; e > -WIRE_E_COUNT_; e--) CHECK(wire_err_name(e) != NULL && strcmp(wire_err_name(e), "unknown") != 0);
    /* ICMPv6 types we do not handle are reported, after the checksum check */
    uint8_t m[8] = {133, 0, 0, 0, 0, 0, 0, 0};   /* router solicitation */
    struct wire_icmp6 c;
    m[2] = m[3] = 0;
    wire_put16(m + 2, wire_csum_fold(wire_csum_add(wire_pseudo6(IP6_A, IP6_B, 58, 8), m, 8)));
    CHECK_EQ(wire_icmp6_parse(m, 8, IP6_A, IP6_B, &c), WIRE_E_UNSUPPORTED);
    CHECK_EQ(c.type, 133);
}

int main(void) {
    RUN(test_err_names);
    RUN(test_csum_rfc1071_example);
    RUN(test_csum_vs_reference);
    RUN(test_csum_incremental);
    RUN(test_pseudo);
    RUN(test_eth);
    RUN(test_arp);
    RUN(test_ipv4);
    RUN(test_ipv4_fragment_and_options);
    RUN(test_tcp_syn);
    RUN(test_tcp_data_sack);
    RUN(test_tcp_emit_sack_trim);
    RUN(test_tcp_option_rejects);
    RUN(test_tcp_header_rejects);
    RUN(test_icmp4);
    RUN(test_ipv6);
    RUN(test_ipv6_ext);
    RUN(test_icmp6_echo_ptb);
    RUN(test_ndp);
    RUN(test_truncation_every_length);
    RUN(test_garbage_every_length);
    CTEST_END();
}
