/*
 * fuzz_engine.c — libFuzzer harness B: frames into an mtcp_engine that has listeners and
 * established connections. Only the public API (include/mtcp.h) is used.
 *
 * Engine A (198.18.0.1, 2001:db8::1, 02:00:00:00:00:01) and its peer engine B (198.18.0.2,
 * 2001:db8::2, ...:02) on one Ethernet segment, frames moved by mtcp_engine_output/
 * mtcp_engine_input. A listens on 80 (v4 + v6), B on 8080. Connections (k = 0..3), set up by a
 * real handshake between the engines:
 *   conn0  B 198.18.0.2:40000   -> A :80   (B sent 200 bytes that A has not read)
 *   conn1  A 198.18.0.1:40001   -> B :8080 (A is the client)
 *   conn2  B [2001:db8::2]:40002 -> A :80   (IPv6)
 *   conn3  B 198.18.0.2:40003   -> A :80   (A sent 3000 bytes that never reached B: unacked)
 * The harness snoops every frame to track, per connection, the next sequence number each side
 * would send (b_nxt, a_nxt).
 *
 * Input = records: ctl(1) len(2, big-endian) bytes(len, cut at the end of the input).
 *   ctl & 0x03  k, the connection the record is about
 *   ctl & 0x04  PATCH: bytes are a TCP segment "from B on conn k": Ethernet + IPv4/IPv6 headers
 *               are built, ports set, seq += b_nxt, ack += a_nxt, checksum filled (unless RAWFIX)
 *   ctl & 0x08  PUMP: afterwards exchange frames between A and B until both are quiet
 *   ctl & 0x10  RAWFIX: raw frame: fix IPv4/TCP/ICMP/ICMPv6 checksums first;
 *               PATCH: keep the segment's checksum field as given (so it is almost always bad)
 *   ctl & 0x20  advance the clock 50 ms first
 *   ctl & 0x40  advance the clock 1 s first
 *   ctl & 0x80  APP: no frame; an action on conn k chosen by bytes[0] % 13: A send, recv,
 *               shutdown, close, abort, setopt/getopt, readable/info, connect, send+recv (also
 *               len 0), close a listener, B opens a burst of connections (SYN cookies), B sends,
 *               lossy exchange between A and B (bitmask bytes[1])
 *   otherwise   a raw Ethernet frame for A
 * After each record A's output is drained (and checked: every frame A emits must parse with
 * native/wire and carry valid checksums), events of both engines are drained. At the end the
 * clock runs ~2 minutes forward in doubling steps (RTO, persist, TIME-WAIT, neighbour timers)
 * and the engines' accounting is checked (pools, connection list, counters).
 *
 * Persistent mode (default): the set-up is deterministic (fixed seeds and clock), so it runs once;
 * both engines are saved (engine/snapshot.h) and restored in place before every input, which is
 * the state a fresh set-up would build: every finding replays the same either way.
 * FUZZ_ENGINE_FRESH=1 builds and frees both engines per input instead (LeakSanitizer then checks
 * each engine's teardown); FUZZ_ENGINE_CHECK=1 runs every input both ways and requires the same
 * counters and connection states (the restore is exact).
 */
#include "mtcp.h"
#include "mtcp_debug.h"
#include "wire/wire.h"
#include "engine/snapshot.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_engine: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

#define MAX_RECORDS 96
#define OUT_CAP (256 * 1024)
#define OUT_FRAMES 256
#define NCONN 4
#define MAX_EXTRA 16

#define E_PATCH 0x04
#define E_PUMP 0x08
#define E_RAWFIX 0x10
#define E_T50MS 0x20
#define E_T1S 0x40
#define E_APP 0x80

static const uint8_t MAC_A[6] = {2, 0, 0, 0, 0, 1}, MAC_B[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t IP4_A[4] = {198, 18, 0, 1}, IP4_B[4] = {198, 18, 0, 2};
static const uint8_t IP6_A[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t IP6_B[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};

struct conn_def { int v6; int a_is_client; uint16_t a_port, b_port; };
static const struct conn_def CONNS[NCONN] = {
    {0, 0, 80, 40000}, {0, 1, 40001, 8080}, {1, 0, 80, 40002}, {0, 0, 80, 40003},
};

struct track { uint32_t a_nxt, b_nxt; uint8_t a_seen, b_seen; };

struct fz {
    mtcp_engine *a, *b;
    uint64_t now;
    mtcp_cid acid[NCONN], bcid[NCONN];
    mtcp_cid lis[2];                    /* A's listeners (v4, v6) on port 80 */
    mtcp_cid extra[MAX_EXTRA];          /* A-side connections accepted from fuzzed SYNs */
    unsigned nextra;
    struct track tr[NCONN];
    uint8_t *out;                        /* OUT_CAP */
    uint32_t lens[OUT_FRAMES];
    uint8_t frame[2048];
    uint8_t appbuf[4096];
};

static int verbose;   /* FUZZ_ENGINE_VERBOSE=1: print the setup and each record (set once at init) */
static int fresh;     /* FUZZ_ENGINE_FRESH=1: set up and free both engines per input */
static int check;     /* FUZZ_ENGINE_CHECK=1: every input fresh and restored, results compared */

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    verbose = env_flag("FUZZ_ENGINE_VERBOSE");
    fresh = env_flag("FUZZ_ENGINE_FRESH");
    check = env_flag("FUZZ_ENGINE_CHECK");
    return 0;
}

static void dump_state(struct fz *z, const char *what) {
    fprintf(stderr, "[fuzz_engine] %s t=%llu\n", what, (unsigned long long)z->now);
    for (int k = 0; k < NCONN; k++) {
        struct mtcp_conn_info ia = {0}, ib = {0};
        int ra = z->acid[k] ? mtcp_conn_info(z->a, z->acid[k], &ia) : -1;
        int rb = z->bcid[k] ? mtcp_conn_info(z->b, z->bcid[k], &ib) : -1;
        fprintf(stderr, "  conn%d A cid=%llx st=%d(%u) unacked=%u rcv=%u | B cid=%llx st=%d(%u) | a_nxt=%u%s b_nxt=%u%s\n",
                k, (unsigned long long)z->acid[k], ra, ia.state, ia.unacked, ia.rcvbuf_used,
                (unsigned long long)z->bcid[k], rb, ib.state,
                z->tr[k].a_nxt, z->tr[k].a_seen ? "" : "?", z->tr[k].b_nxt, z->tr[k].b_seen ? "" : "?");
    }
}

/* ---- frame inspection ---- */
static int seq_after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* Parse a frame sent by engine `from_a`; check it is well formed; update sequence tracking. */
static void inspect(struct fz *z, const uint8_t *f, uint32_t n, int from_a) {
    struct wire_eth e;
    int r = wire_eth_parse(f, n, &e);
    REQUIRE(r == WIRE_ETH_HLEN);
    const uint8_t *p = f + WIRE_ETH_HLEN;
    size_t l = n - WIRE_ETH_HLEN;
    const uint8_t *seg = NULL, *src = NULL, *dst = NULL;
    uint32_t slen = 0;
    int v6 = 0;
    if (e.ethertype == WIRE_ETHERTYPE_ARP) {
        struct wire_arp arp;
        REQUIRE(wire_arp_parse(p, l, &arp) == WIRE_OK);
        return;
    } else if (e.ethertype == WIRE_ETHERTYPE_IPV4) {
        struct wire_ipv4 ip;
        REQUIRE(wire_ipv4_parse(p, l, &ip) == WIRE_OK);
        if (ip.proto == WIRE_PROTO_ICMP) {
            struct wire_icmp4 c;
            int rc = wire_icmp4_parse(ip.payload, ip.payload_len, &c);
            REQUIRE(rc == WIRE_OK || rc == WIRE_E_UNSUPPORTED);
            return;
        }
        REQUIRE(ip.proto == WIRE_PROTO_TCP);
        REQUIRE(wire_tcp_csum_ok(ip.payload, ip.payload_len,
                                 wire_pseudo4(ip.src, ip.dst, WIRE_PROTO_TCP, ip.payload_len)));
        seg = ip.payload; slen = ip.payload_len;
        src = p + 12; dst = p + 16;
    } else if (e.ethertype == WIRE_ETHERTYPE_IPV6) {
        struct wire_ipv6 ip;
        REQUIRE(wire_ipv6_parse(p, l, &ip) == WIRE_OK);
        if (ip.next == WIRE_PROTO_ICMPV6) {
            struct wire_icmp6 c;
            int rc = wire_icmp6_parse(ip.payload, ip.upper_len, ip.src, ip.dst, &c);
            REQUIRE(rc == WIRE_OK || rc == WIRE_E_UNSUPPORTED);
            return;
        }
        REQUIRE(ip.next == WIRE_PROTO_TCP);
        REQUIRE(wire_tcp_csum_ok(ip.payload, ip.upper_len,
                                 wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_TCP, ip.upper_len)));
        seg = ip.payload; slen = ip.upper_len;
        src = p + 8; dst = p + 24;
        v6 = 1;
    } else {
        REQUIRE(!"engine emitted an unknown ethertype");
    }
    struct wire_tcp t;
    REQUIRE(wire_tcp_parse(seg, slen, &t) == WIRE_OK);
    const uint8_t *aip = v6 ? IP6_A : IP4_A, *bip = v6 ? IP6_B : IP4_B;
    size_t alen = v6 ? 16 : 4;
    for (int k = 0; k < NCONN; k++) {
        const struct conn_def *c = &CONNS[k];
        if (c->v6 != v6) continue;
        uint16_t sp = from_a ? c->a_port : c->b_port, dp = from_a ? c->b_port : c->a_port;
        if (t.sport != sp || t.dport != dp) continue;
        if (memcmp(src, from_a ? aip : bip, alen) || memcmp(dst, from_a ? bip : aip, alen)) continue;
        uint32_t end = t.seq + t.payload_len + !!(t.flags & WIRE_TCP_SYN) + !!(t.flags & WIRE_TCP_FIN);
        if (t.flags & WIRE_TCP_RST) return;
        uint32_t *nxt = from_a ? &z->tr[k].a_nxt : &z->tr[k].b_nxt;
        uint8_t *seen = from_a ? &z->tr[k].a_seen : &z->tr[k].b_seen;
        if (!*seen || seq_after(end, *nxt)) *nxt = end;
        *seen = 1;
        return;
    }
}

/* ---- moving frames ---- */
static void handle_events(struct fz *z, mtcp_engine *e, int is_a) {
    struct mtcp_event ev[64];
    uint32_t n;
    int rounds = 0;
    while ((n = mtcp_engine_events(e, ev, 64)) > 0 && rounds++ < 64) {
        REQUIRE(n <= 64);
        for (uint32_t i = 0; i < n; i++) {
            if (ev[i].type != MTCP_EV_ACCEPT && ev[i].type != MTCP_EV_CONNECTED) continue;
            struct mtcp_addr loc, rem;
            if (mtcp_getaddrs(e, ev[i].cid, &loc, &rem) < 0) continue;
            int placed = 0;
            for (int k = 0; k < NCONN; k++) {
                const struct conn_def *c = &CONNS[k];
                uint16_t lp = is_a ? c->a_port : c->b_port, rp = is_a ? c->b_port : c->a_port;
                if (loc.port == lp && rem.port == rp && (loc.family == MTCP_AF_INET6) == c->v6) {
                    mtcp_cid *slot = is_a ? &z->acid[k] : &z->bcid[k];
                    if (*slot == 0) *slot = ev[i].cid;
                    placed = 1;
                }
            }
            if (!placed && is_a && ev[i].type == MTCP_EV_ACCEPT && z->nextra < MAX_EXTRA)
                z->extra[z->nextra++] = ev[i].cid;
        }
    }
}

/* Drain e's output; inspect it; deliver to `to` if non-NULL. Returns frames moved. */
static uint32_t drain(struct fz *z, mtcp_engine *e, mtcp_engine *to, int from_a) {
    uint32_t total = 0;
    for (int rounds = 0; rounds < 16; rounds++) {
        uint32_t n = mtcp_engine_output(e, z->now, z->out, OUT_CAP, z->lens, OUT_FRAMES);
        REQUIRE(n <= OUT_FRAMES);
        if (n == 0) break;
        size_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
            REQUIRE(z->lens[i] <= OUT_CAP - off);
            inspect(z, z->out + off, z->lens[i], from_a);
            if (to) mtcp_engine_input(to, z->now, z->out + off, z->lens[i]);
            off += z->lens[i];
        }
        total += n;
    }
    return total;
}

static void pump(struct fz *z) {
    for (int i = 0; i < 32; i++) {
        uint32_t moved = drain(z, z->a, z->b, 1) + drain(z, z->b, z->a, 0);
        handle_events(z, z->a, 1);
        handle_events(z, z->b, 0);
        if (moved == 0) break;
        z->now += 100;   /* 100 us per round trip */
    }
}

/* Like pump, but frame i of each drain is dropped when bit (i % 8) of mask is set. */
static void pump_lossy(struct fz *z, uint8_t mask) {
    for (int round = 0; round < 16; round++) {
        uint32_t moved = 0;
        for (int dir = 0; dir < 2; dir++) {
            mtcp_engine *from = dir ? z->b : z->a, *to = dir ? z->a : z->b;
            uint32_t n = mtcp_engine_output(from, z->now, z->out, OUT_CAP, z->lens, OUT_FRAMES);
            REQUIRE(n <= OUT_FRAMES);
            size_t off = 0;
            for (uint32_t i = 0; i < n; i++) {
                REQUIRE(z->lens[i] <= OUT_CAP - off);
                inspect(z, z->out + off, z->lens[i], !dir);
                if (!(mask & (1u << (i % 8)))) mtcp_engine_input(to, z->now, z->out + off, z->lens[i]);
                off += z->lens[i];
            }
            moved += n;
        }
        handle_events(z, z->a, 1);
        handle_events(z, z->b, 0);
        if (moved == 0) break;
        z->now += 5000;
    }
}

/* ---- checksum fix-ups for raw frames ---- */
static void fix16(uint8_t *p, size_t n, size_t off, uint32_t pseudo) {
    if (n < off + 2) return;
    p[off] = p[off + 1] = 0;
    wire_put16(p + off, wire_csum_fold(wire_csum_add(pseudo, p, n)));
}

static void fix_raw(uint8_t *f, size_t n) {
    if (n < WIRE_ETH_HLEN) return;
    uint16_t et = wire_get16(f + 12);
    uint8_t *p = f + WIRE_ETH_HLEN;
    size_t l = n - WIRE_ETH_HLEN;
    if (et == WIRE_ETHERTYPE_IPV4 && l >= 20) {
        size_t hl = (size_t)(p[0] & 15) * 4;
        if (hl < 20 || hl > l) return;
        fix16(p, hl, 10, 0);
        size_t tot = wire_get16(p + 2);
        if (tot < hl || tot > l) return;
        uint8_t *u = p + hl;
        size_t ul = tot - hl;
        if (p[9] == WIRE_PROTO_TCP) fix16(u, ul, 16, wire_pseudo4(p + 12, p + 16, WIRE_PROTO_TCP, (uint32_t)ul));
        else if (p[9] == WIRE_PROTO_ICMP) fix16(u, ul, 2, 0);
    } else if (et == WIRE_ETHERTYPE_IPV6) {
        struct wire_ipv6 ip;
        if (wire_ipv6_parse(p, l, &ip) != WIRE_OK) return;
        uint8_t *u = p + (ip.payload - p);
        if (ip.next == WIRE_PROTO_TCP) fix16(u, ip.upper_len, 16, wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_TCP, ip.upper_len));
        else if (ip.next == WIRE_PROTO_ICMPV6) fix16(u, ip.upper_len, 2, wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_ICMPV6, ip.upper_len));
    }
}

/* Build Ethernet + IP around a TCP segment from B on conn k; returns the frame length. */
static uint32_t build_patched(struct fz *z, int k, const uint8_t *seg, size_t slen, int keep_csum) {
    const struct conn_def *c = &CONNS[k];
    size_t iph = c->v6 ? WIRE_IPV6_HLEN : WIRE_IPV4_HLEN;
    size_t max = sizeof z->frame - WIRE_ETH_HLEN - iph;
    if (slen > max) slen = max;
    struct wire_eth e;
    memcpy(e.dst, MAC_A, 6);
    memcpy(e.src, MAC_B, 6);
    e.ethertype = c->v6 ? WIRE_ETHERTYPE_IPV6 : WIRE_ETHERTYPE_IPV4;
    uint8_t *f = z->frame;
    wire_eth_emit(f, sizeof z->frame, &e);
    uint8_t *t = f + WIRE_ETH_HLEN + iph;
    memcpy(t, seg, slen);
    if (slen >= 4) { wire_put16(t, c->b_port); wire_put16(t + 2, c->a_port); }
    if (slen >= 8) wire_put32(t + 4, wire_get32(t + 4) + z->tr[k].b_nxt);
    if (slen >= 12) wire_put32(t + 8, wire_get32(t + 8) + z->tr[k].a_nxt);
    uint32_t pseudo;
    if (c->v6) {
        struct wire_ipv6 ip = {0};
        ip.payload_len = (uint16_t)slen;
        ip.next = WIRE_PROTO_TCP;
        ip.hop_limit = 64;
        memcpy(ip.src, IP6_B, 16);
        memcpy(ip.dst, IP6_A, 16);
        wire_ipv6_emit(f + WIRE_ETH_HLEN, iph, &ip);
        pseudo = wire_pseudo6(IP6_B, IP6_A, WIRE_PROTO_TCP, (uint32_t)slen);
    } else {
        struct wire_ipv4 ip = {0};
        ip.total_len = (uint16_t)(iph + slen);
        ip.frag = 0x4000;
        ip.ttl = 64;
        ip.proto = WIRE_PROTO_TCP;
        memcpy(ip.src, IP4_B, 4);
        memcpy(ip.dst, IP4_A, 4);
        wire_ipv4_emit(f + WIRE_ETH_HLEN, iph, &ip);
        pseudo = wire_pseudo4(IP4_B, IP4_A, WIRE_PROTO_TCP, (uint32_t)slen);
    }
    if (!keep_csum && slen >= 18) wire_tcp_csum_fill(t, slen, pseudo);
    /* an in-order segment that A will accept moves B's next sequence number on */
    struct wire_tcp p;
    if (wire_tcp_parse(t, slen, &p) == WIRE_OK && wire_tcp_csum_ok(t, slen, pseudo) &&
        !(p.flags & WIRE_TCP_RST) && p.seq == z->tr[k].b_nxt)
        z->tr[k].b_nxt = p.seq + p.payload_len + !!(p.flags & WIRE_TCP_SYN) + !!(p.flags & WIRE_TCP_FIN);
    return (uint32_t)(WIRE_ETH_HLEN + iph + slen);
}

/* ---- application calls ---- */
static void app(struct fz *z, int k, const uint8_t *b, size_t n) {
    mtcp_cid cid = z->acid[k];
    if (k == 3 && n >= 2 && (b[1] & 1) && z->nextra) cid = z->extra[b[1] % z->nextra];
    int64_t v;
    struct mtcp_conn_info info;
    unsigned op = n ? b[0] % 13 : 8;
    uint32_t amount = n >= 3 ? (uint32_t)b[2] * 64 + 1 : 1000;
    if (amount > sizeof z->appbuf) amount = sizeof z->appbuf;
    switch (op) {
    case 0: (void)mtcp_send(z->a, cid, z->appbuf, amount); break;
    case 1: (void)mtcp_recv(z->a, cid, z->appbuf, amount); break;
    case 2: (void)mtcp_shutdown(z->a, cid); break;
    case 3: if (mtcp_close(z->a, cid) == 0) { if (cid == z->acid[k]) z->acid[k] = 0; } break;
    case 4: if (mtcp_abort(z->a, cid) == 0) { if (cid == z->acid[k]) z->acid[k] = 0; } break;
    case 5: (void)mtcp_setopt(z->a, cid, 1 + (n >= 2 ? b[1] % 8 : 0), n >= 3 ? b[2] : 1);
            (void)mtcp_getopt(z->a, cid, 1 + (n >= 2 ? b[1] % 8 : 0), &v); break;
    case 6: (void)mtcp_readable(z->a, cid); (void)mtcp_conn_info(z->a, cid, &info); break;
    case 7: {   /* a new active open from A toward B (B listens on 8080) or C */
        struct mtcp_addr rem = {0};
        rem.family = MTCP_AF_INET;
        rem.port = n >= 2 && (b[1] & 1) ? 8080 : 9;
        memcpy(rem.ip, n >= 2 && (b[1] & 2) ? (const uint8_t[4]){198, 18, 0, 3} : IP4_B, 4);
        int64_t c = mtcp_connect(z->a, z->now, &rem, NULL);
        if (c > 0 && z->nextra < MAX_EXTRA) z->extra[z->nextra++] = (mtcp_cid)c;
        break;
    }
    case 9: {   /* close one of A's listeners (resets children not yet accepted) */
        int f = n >= 2 ? b[1] & 1 : 0;
        if (z->lis[f] && mtcp_close(z->a, z->lis[f]) == 0) z->lis[f] = 0;
        break;
    }
    case 10: {  /* B opens a burst of connections to A:80: SYN queue overflow, SYN cookies, backlog */
        unsigned cnt = 1 + (n >= 2 ? b[1] % 24 : 8);
        struct mtcp_addr rem = {0};
        rem.family = n >= 3 && (b[2] & 1) ? MTCP_AF_INET6 : MTCP_AF_INET;
        memcpy(rem.ip, rem.family == MTCP_AF_INET6 ? IP6_A : IP4_A, rem.family == MTCP_AF_INET6 ? 16 : 4);
        rem.port = 80;
        for (unsigned i = 0; i < cnt; i++) (void)mtcp_connect(z->b, z->now, &rem, NULL);
        break;
    }
    case 11:    /* B sends on conn k (real data toward A, or toward A's client side for conn1) */
        if (z->bcid[k]) (void)mtcp_send(z->b, z->bcid[k], z->appbuf, amount);
        break;
    case 12:    /* exchange frames between A and B, losing some (bitmask b[1]) */
        pump_lossy(z, n >= 2 ? b[1] : 0x55);
        break;
    default: (void)mtcp_send(z->a, cid, z->appbuf, amount);
             while (mtcp_recv(z->a, cid, z->appbuf, sizeof z->appbuf) > 0) {}
             break;
    }
}

/* ---- setup ---- */
static mtcp_engine *make_engine(const uint8_t mac[6], const uint8_t ip4[4], const uint8_t ip6[16], uint64_t seed) {
    struct mtcp_config cfg;
    mtcp_config_default(&cfg);
    cfg.max_conns = 64;
    cfg.chunk_size = 512;
    cfg.max_chunks = 256;
    cfg.sndbuf = 8192;
    cfg.rcvbuf = 8192;
    cfg.max_events = 256;
    cfg.syn_backlog = 4;          /* a few fuzzed SYNs reach the SYN-cookie path */
    cfg.msl_us = 1000000;         /* TIME-WAIT within the final clock run */
    cfg.keepalive_idle_us = 5000000;
    cfg.keepalive_intvl_us = 1000000;
    cfg.seed = seed;
    cfg.link_type = MTCP_LINK_ETHERNET;
    cfg.mtu = 1500;
    memcpy(cfg.mac, mac, 6);
    memcpy(cfg.ipv4, ip4, 4);
    cfg.ipv4_prefix = 24;
    memcpy(cfg.ipv6, ip6, 16);
    cfg.ipv6_prefix = 64;
    char err[256];
    mtcp_engine *e = mtcp_engine_new(&cfg, NULL, err, sizeof err);
    if (!e) {
        fprintf(stderr, "fuzz_engine: mtcp_engine_new: %s\n", err);
        abort();
    }
    return e;
}

static mtcp_cid listen_on(mtcp_engine *e, int family, uint16_t port) {
    struct mtcp_addr a = {0};
    a.family = (uint8_t)family;
    a.port = port;
    int64_t id = mtcp_listen(e, &a, 16);
    return id > 0 ? (mtcp_cid)id : 0;
}

static void connect_conn(struct fz *z, int k) {
    const struct conn_def *c = &CONNS[k];
    struct mtcp_addr rem = {0}, loc = {0};
    rem.family = loc.family = c->v6 ? MTCP_AF_INET6 : MTCP_AF_INET;
    size_t al = c->v6 ? 16 : 4;
    mtcp_engine *from = c->a_is_client ? z->a : z->b;
    memcpy(rem.ip, c->a_is_client ? (c->v6 ? IP6_B : IP4_B) : (c->v6 ? IP6_A : IP4_A), al);
    memcpy(loc.ip, c->a_is_client ? (c->v6 ? IP6_A : IP4_A) : (c->v6 ? IP6_B : IP4_B), al);
    rem.port = c->a_is_client ? c->b_port : c->a_port;
    loc.port = c->a_is_client ? c->a_port : c->b_port;
    int64_t cid = mtcp_connect(from, z->now, &rem, &loc);
    if (cid > 0) {
        if (c->a_is_client) z->acid[k] = (mtcp_cid)cid;
        else z->bcid[k] = (mtcp_cid)cid;
    }
}

static void setup(struct fz *z) {
    z->now = 1000000;
    z->a = make_engine(MAC_A, IP4_A, IP6_A, 0x1111);
    z->b = make_engine(MAC_B, IP4_B, IP6_B, 0x2222);
    z->lis[0] = listen_on(z->a, MTCP_AF_INET, 80);
    z->lis[1] = listen_on(z->a, MTCP_AF_INET6, 80);
    listen_on(z->b, MTCP_AF_INET, 8080);
    for (int k = 0; k < NCONN; k++) connect_conn(z, k);
    pump(z);
    /* conn0: B -> A data that A leaves unread */
    if (z->bcid[0]) { memset(z->appbuf, 'b', 200); (void)mtcp_send(z->b, z->bcid[0], z->appbuf, 200); }
    pump(z);
    /* conn3: A sends 3000 bytes that are lost on the way (unacked at A) */
    if (z->acid[3]) { memset(z->appbuf, 'a', 3000); (void)mtcp_send(z->a, z->acid[3], z->appbuf, 3000); }
    drain(z, z->a, NULL, 1);
    handle_events(z, z->a, 1);
    if (verbose) dump_state(z, "after setup");
}

/* what an input left behind, to compare the persistent and the fresh runs */
struct outcome { uint64_t ctr_a[256], ctr_b[256]; uint32_t st[NCONN]; };

static void finish(struct fz *z, struct outcome *o) {
    if (verbose) dump_state(z, "before teardown");
    /* run the clock forward: RTO backoff, persist, keepalive, TIME-WAIT, neighbour expiry (a step
     * in which neither engine has anything due moves nothing: skipped) */
    for (int s = 0; s < 11; s++) {
        z->now += 100000ull << s;
        int64_t da = mtcp_engine_next_deadline(z->a), db = mtcp_engine_next_deadline(z->b);
        if ((da >= 0 && (uint64_t)da <= z->now) || (db >= 0 && (uint64_t)db <= z->now)) pump(z);
    }
    uint64_t ctr[256];
    uint32_t nc = mtcp_counter_count();
    REQUIRE(nc > 0);
    for (uint32_t i = 0; i < nc; i++) REQUIRE(mtcp_counter_name(i) != NULL);
    mtcp_engine_counters(z->a, ctr, nc < 256 ? nc : 256);
    mtcp_cid list[64];
    uint32_t nl = mtcp_conn_list(z->a, 0, list, 64);
    REQUIRE(nl <= 64);
    for (uint32_t i = 0; i < nl; i++) {
        struct mtcp_conn_info info;
        (void)mtcp_conn_info(z->a, list[i], &info);
    }
    /* introspection (ss / metrics) over whatever state the input left: every record in range */
    struct mtcp_sock_record rec[16];
    for (int k = 0; k < 2; k++) {
        mtcp_engine *e = k ? z->b : z->a;
        uint32_t cursor = 0, nb = mtcp_engine_nblocks(e);
        while (cursor < nb) {
            uint32_t before = cursor, nr = mtcp_engine_sockets(e, z->now, &cursor, NULL, rec, 16, 7);
            REQUIRE(nr <= 16 && cursor > before);
            for (uint32_t i = 0; i < nr; i++)
                REQUIRE(rec[i].info.state <= MTCP_ST_TIME_WAIT && (rec[i].info.local.family == MTCP_AF_INET ||
                                                                   rec[i].info.local.family == MTCP_AF_INET6));
        }
        struct mtcp_engine_gauges g;
        mtcp_engine_gauges(e, &g);
        uint64_t dur[MTCP_DUR_BUCKETS], dsum;
        mtcp_engine_conn_durations(e, dur, MTCP_DUR_BUCKETS, &dsum);
    }
    (void)mtcp_engine_next_deadline(z->a);
    uint64_t pu[4];
    mtcp_engine_pool_usage(z->a, pu);
    REQUIRE(pu[0] <= 64 && pu[1] <= 256);
    if (o) {
        memset(o, 0, sizeof *o);
        mtcp_engine_counters(z->a, o->ctr_a, nc < 256 ? nc : 256);
        mtcp_engine_counters(z->b, o->ctr_b, nc < 256 ? nc : 256);
        for (int k = 0; k < NCONN; k++) {
            struct mtcp_conn_info info = {0};
            o->st[k] = z->acid[k] && mtcp_conn_info(z->a, z->acid[k], &info) == 0 ? info.state + 1 : 0;
        }
    }
}

static void run_records(struct fz *z, const uint8_t *data, size_t size);

/* persistent mode: the engines after setup(), saved once */
static struct fz *pz;
static struct fz pz0;
static mtcp_snapshot *snap_a, *snap_b;

static void run_fresh(const uint8_t *data, size_t size, struct outcome *o) {
    struct fz *z = calloc(1, sizeof *z);
    z->out = malloc(OUT_CAP);
    setup(z);
    run_records(z, data, size);
    finish(z, o);
    mtcp_engine_free(z->a);
    mtcp_engine_free(z->b);
    free(z->out);
    free(z);
}

static void run_restored(const uint8_t *data, size_t size, struct outcome *o) {
    if (!pz) {
        pz = calloc(1, sizeof *pz);
        pz->out = malloc(OUT_CAP);
        setup(pz);
        snap_a = mtcp_engine_snapshot(pz->a);
        snap_b = mtcp_engine_snapshot(pz->b);
        REQUIRE(snap_a && snap_b);
        pz0 = *pz;
    } else {
        mtcp_engine_restore(snap_a);
        mtcp_engine_restore(snap_b);
        uint8_t *out = pz->out;
        *pz = pz0;
        pz->out = out;
    }
    run_records(pz, data, size);
    finish(pz, o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (check) {
        static struct outcome a, b;
        run_fresh(data, size, &a);
        run_restored(data, size, &b);
        REQUIRE(memcmp(a.st, b.st, sizeof a.st) == 0);
        REQUIRE(memcmp(a.ctr_a, b.ctr_a, sizeof a.ctr_a) == 0);
        REQUIRE(memcmp(a.ctr_b, b.ctr_b, sizeof a.ctr_b) == 0);
    } else if (fresh) {
        run_fresh(data, size, NULL);
    } else {
        run_restored(data, size, NULL);
    }
    return 0;
}

static void run_records(struct fz *z, const uint8_t *data, size_t size) {
    size_t i = 0;
    for (int r = 0; r < MAX_RECORDS && i < size; r++) {
        uint8_t ctl = data[i++];
        size_t len = 0;
        if (size - i >= 2) { len = wire_get16(data + i); i += 2; } else { i = size; }
        if (len > size - i) len = size - i;
        const uint8_t *b = data + i;
        i += len;
        int k = ctl & 3;
        if (ctl & E_T50MS) z->now += 50000;
        if (ctl & E_T1S) z->now += 1000000;
        if (ctl & E_APP) {
            app(z, k, b, len);
        } else if (ctl & E_PATCH) {
            uint32_t fl = build_patched(z, k, b, len, ctl & E_RAWFIX);
            uint8_t *f = malloc(fl);
            memcpy(f, z->frame, fl);
            mtcp_engine_input(z->a, z->now, f, fl);
            free(f);
        } else if (len > 0) {
            /* exact-size heap copy: an engine read past the frame end is an ASan finding */
            uint8_t *f = malloc(len);
            memcpy(f, b, len);
            if (ctl & E_RAWFIX) fix_raw(f, len);
            mtcp_engine_input(z->a, z->now, f, (uint32_t)len);
            free(f);
        }
        if (ctl & E_PUMP) pump(z);
        else drain(z, z->a, NULL, 1);
        if (verbose) {
            fprintf(stderr, "[fuzz_engine] record %d ctl=0x%02x k=%d len=%zu\n", r, ctl, k, len);
            dump_state(z, "after record");
        }
        handle_events(z, z->a, 1);
        handle_events(z, z->b, 0);
    }
}
