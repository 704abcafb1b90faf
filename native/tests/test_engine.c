/* test_engine.c — the engine through its frame API (no link): hand-built frames in, frames out.
 * SipHash vectors, timer wheel, config validation, ARP/NDP/ping, RST to closed ports,
 * malformed frames counted by reason, SYN cookies, stale cids, pool exhaustion, many conns. */
#include <errno.h>
#include "ctest.h"
#include "engine/engine.h"

static const uint8_t MAC_E[6] = {2, 0, 0, 0, 0, 1}, MAC_P[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t IP_E[4] = {198, 18, 0, 1}, IP_P[4] = {198, 18, 0, 2};
static const uint8_t IP6_E[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t IP6_P[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
static const uint8_t LL6_P[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

static void cfg_eth(struct mtcp_config *c) {
    mtcp_config_default(c);
    c->max_conns = 64;
    c->max_chunks = 256;
    c->max_events = 1024;
    c->seed = 42;
    memcpy(c->mac, MAC_E, 6);
    memcpy(c->ipv4, IP_E, 4);
    c->ipv4_prefix = 24;
    memcpy(c->ipv6, IP6_E, 16);
    c->ipv6_prefix = 64;
}

static mtcp_engine *mk(const struct mtcp_config *c) {
    char err[128];
    mtcp_engine *e = mtcp_engine_new(c, NULL, err, sizeof err);
    if (!e) fprintf(stderr, "engine_new: %s\n", err);
    return e;
}

static uint32_t drain(mtcp_engine *e, uint64_t now);
static uint32_t eth_hdr(uint8_t *b, const uint8_t *dst, const uint8_t *src, uint16_t type);
static uint32_t ip6_hdr(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t next, uint32_t l4len, uint8_t hop);

/* The peer resolves us first, as every real host does (ARP request for IP_E, NS for IP6_E):
 * the engine learns the peer's MAC from them (never from its TCP segments). */
static void prime(mtcp_engine *e) {
    static const uint8_t bc[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t f[256];
    uint32_t o = eth_hdr(f, bc, MAC_P, WIRE_ETHERTYPE_ARP);
    struct wire_arp a;
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REQUEST;
    memcpy(a.sha, MAC_P, 6);
    memcpy(a.spa, IP_P, 4);
    memcpy(a.tpa, IP_E, 4);
    o += (uint32_t)wire_arp_emit(f + o, 28, &a);
    mtcp_engine_input(e, 0, f, o);
    uint8_t sn[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, IP6_E[13], IP6_E[14], IP6_E[15]};
    uint8_t snmac[6] = {0x33, 0x33, 0xff, IP6_E[13], IP6_E[14], IP6_E[15]};
    o = eth_hdr(f, snmac, MAC_P, WIRE_ETHERTYPE_IPV6);
    struct wire_icmp6 ns;
    memset(&ns, 0, sizeof ns);
    ns.type = WIRE_ICMP6_NEIGH_SOLICIT;
    memcpy(ns.target, IP6_E, 16);
    ns.has_lladdr = 1;
    memcpy(ns.lladdr, MAC_P, 6);
    uint32_t il = (uint32_t)wire_icmp6_emit(f + o + 40, 200, IP6_P, sn, &ns);
    ip6_hdr(f + o, IP6_P, sn, WIRE_PROTO_ICMPV6, il, 255);
    mtcp_engine_input(e, 0, f, o + 40 + il);
    drain(e, 0);
}

static mtcp_engine *mkp(const struct mtcp_config *c) {
    mtcp_engine *e = mk(c);
    if (e) prime(e);
    return e;
}

/* ---- frame building ---- */
static uint32_t eth_hdr(uint8_t *b, const uint8_t *dst, const uint8_t *src, uint16_t type) {
    struct wire_eth h;
    memcpy(h.dst, dst, 6);
    memcpy(h.src, src, 6);
    h.ethertype = type;
    return (uint32_t)wire_eth_emit(b, 14, &h);
}

static uint32_t ip4_hdr(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t proto, uint32_t l4len) {
    struct wire_ipv4 h;
    memset(&h, 0, sizeof h);
    h.total_len = (uint16_t)(20 + l4len);
    h.ttl = 64;
    h.proto = proto;
    h.frag = 0x4000;
    memcpy(h.src, src, 4);
    memcpy(h.dst, dst, 4);
    return (uint32_t)wire_ipv4_emit(b, 20, &h);
}

static uint32_t ip6_hdr(uint8_t *b, const uint8_t *src, const uint8_t *dst, uint8_t next, uint32_t l4len, uint8_t hop) {
    struct wire_ipv6 h;
    memset(&h, 0, sizeof h);
    h.payload_len = (uint16_t)l4len;
    h.next = next;
    h.hop_limit = hop;
    memcpy(h.src, src, 16);
    memcpy(h.dst, dst, 16);
    return (uint32_t)wire_ipv6_emit(b, 40, &h);
}

/* Ethernet + IPv4 + TCP frame from the peer to the engine. */
static uint32_t tcp4(uint8_t *b, const struct wire_tcp *t, const uint8_t *pl, uint32_t plen) {
    uint32_t o = eth_hdr(b, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV4);
    uint8_t *seg = b + o + 20;
    uint32_t hl = (uint32_t)wire_tcp_emit(seg, 60, t);
    if (plen) memcpy(seg + hl, pl, plen);
    wire_tcp_csum_fill(seg, hl + plen, wire_pseudo4(IP_P, IP_E, WIRE_PROTO_TCP, hl + plen));
    ip4_hdr(b + o, IP_P, IP_E, WIRE_PROTO_TCP, hl + plen);
    return o + 20 + hl + plen;
}

static uint32_t tcp6(uint8_t *b, const struct wire_tcp *t) {
    uint32_t o = eth_hdr(b, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV6);
    uint8_t *seg = b + o + 40;
    uint32_t hl = (uint32_t)wire_tcp_emit(seg, 60, t);
    wire_tcp_csum_fill(seg, hl, wire_pseudo6(IP6_P, IP6_E, WIRE_PROTO_TCP, hl));
    ip6_hdr(b + o, IP6_P, IP6_E, WIRE_PROTO_TCP, hl, 64);
    return o + 40 + hl;
}

static struct wire_tcp syn_tpl(uint16_t sport, uint16_t dport, uint32_t seq) {
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.flags = WIRE_TCP_SYN;
    t.win = 65535;
    t.has_mss = 1;
    t.mss = 1400;
    t.has_wscale = 1;
    t.wscale = 7;
    t.sack_perm = 1;
    t.has_ts = 1;
    t.tsval = 1000;
    return t;
}

/* ---- output capture ---- */
#define OUTMAX 512
static uint8_t obuf[OUTMAX * 1600];
static uint32_t olens[OUTMAX], ooffs[OUTMAX], on;

static uint32_t drain(mtcp_engine *e, uint64_t now) {
    on = mtcp_engine_output(e, now, obuf, sizeof obuf, olens, OUTMAX);
    uint32_t off = 0;
    for (uint32_t i = 0; i < on; i++) { ooffs[i] = off; off += olens[i]; }
    return on;
}
static const uint8_t *ofr(uint32_t i) { return obuf + ooffs[i]; }

/* TCP segment of output frame i (Ethernet + IPv4/IPv6); 0 if it is not TCP. */
static int out_tcp(uint32_t i, struct wire_tcp *t) {
    const uint8_t *f = ofr(i);
    uint32_t len = olens[i];
    struct wire_eth eth;
    if (wire_eth_parse(f, len, &eth) < 0) return 0;
    if (eth.ethertype == WIRE_ETHERTYPE_IPV4) {
        struct wire_ipv4 ip;
        if (wire_ipv4_parse(f + 14, len - 14, &ip) < 0 || ip.proto != WIRE_PROTO_TCP) return 0;
        if (!wire_tcp_csum_ok(ip.payload, ip.payload_len, wire_pseudo4(ip.src, ip.dst, WIRE_PROTO_TCP, ip.payload_len))) return 0;
        return wire_tcp_parse(ip.payload, ip.payload_len, t) >= 0;
    }
    if (eth.ethertype == WIRE_ETHERTYPE_IPV6) {
        struct wire_ipv6 ip;
        if (wire_ipv6_parse(f + 14, len - 14, &ip) < 0 || ip.next != WIRE_PROTO_TCP) return 0;
        if (!wire_tcp_csum_ok(ip.payload, ip.upper_len, wire_pseudo6(ip.src, ip.dst, WIRE_PROTO_TCP, ip.upper_len))) return 0;
        return wire_tcp_parse(ip.payload, ip.upper_len, t) >= 0;
    }
    return 0;
}

static uint64_t ctr(mtcp_engine *e, int i) {
    uint64_t c[CTR_COUNT];
    mtcp_engine_counters(e, c, CTR_COUNT);
    return c[i];
}

/* ================================================================== tests */

static void test_siphash(void) {
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++) msg[i] = (uint8_t)i;
    /* reference vectors from the SipHash paper / reference implementation (vectors.h) */
    CHECK(eng_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
    CHECK(eng_siphash24(key, msg, 1) == 0x74f839c593dc67fdULL);
    CHECK(eng_siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
    CHECK(eng_siphash24(key, msg, 8) == 0x93f5f5799a932462ULL);
    /* ISN: keyed, 4-tuple dependent, advances with the 4 us clock */
    uint32_t a = eng_isn_make(key, MTCP_AF_INET, IP_E, 1000, IP_P, 80, 0);
    uint32_t b = eng_isn_make(key, MTCP_AF_INET, IP_E, 1001, IP_P, 80, 0);
    uint32_t c = eng_isn_make(key, MTCP_AF_INET, IP_E, 1000, IP_P, 80, 4000);
    CHECK(a != b);
    CHECK_EQ((uint32_t)(c - a), 1000);
    key[0] ^= 1;
    CHECK(eng_isn_make(key, MTCP_AF_INET, IP_E, 1000, IP_P, 80, 0) != a);
}

struct wt { struct wheel_node wn; uint64_t deadline; uint64_t fired_at; int fired; };
static struct wt wts[2000];
static uint64_t wnow;
static struct wheel W;
static void wfire(void *ctx, uint32_t idx) { (void)ctx; wts[idx].fired++; wts[idx].fired_at = wnow; }

static void test_wheel(void) {
    eng_wheel_init(&W, wts, sizeof wts[0], offsetof(struct wt, wn));
    for (int i = 0; i < 2000; i++) { wts[i].wn.next = wts[i].wn.prev = NONE32; }
    wnow = 5000000;
    eng_wheel_start(&W, wnow);
    CHECK_EQ(eng_wheel_next_deadline(&W), -1);
    uint64_t seed = 7;
    for (int i = 0; i < 2000; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t r = seed >> 33;
        uint64_t d;
        switch (i % 4) {
        case 0: d = r % 5000; break;                 /* < 5 ms */
        case 1: d = r % 2000000; break;              /* < 2 s */
        case 2: d = r % 120000000; break;            /* < 2 min (TIME-WAIT) */
        default: d = r % 8000000000ULL; break;       /* up to 2.2 h (keepalive) */
        }
        wts[i].deadline = wnow + d + 1;
        eng_wheel_insert(&W, (uint32_t)i, wts[i].deadline);
    }
    /* remove every 10th */
    for (int i = 0; i < 2000; i += 10) eng_wheel_remove(&W, (uint32_t)i);
    uint64_t end = wnow + 8100000000ULL;
    int early = 0, late = 0, bad_next = 0;
    while (wnow < end) {
        int64_t nd = eng_wheel_next_deadline(&W);
        /* the lower bound must not be later than any pending deadline */
        uint64_t minp = UINT64_MAX;
        if ((wnow / 7) % 50 == 0)
            for (int i = 0; i < 2000; i++)
                if (i % 10 && !wts[i].fired && wts[i].deadline < minp) minp = wts[i].deadline;
        if (minp != UINT64_MAX && nd >= 0 && (uint64_t)nd > minp + WHEEL_TICK_US) bad_next++;
        uint64_t step = (nd > (int64_t)wnow) ? (uint64_t)nd - wnow : 1000;
        if (step > 3000000000ULL) step = 3000000000ULL;
        wnow += step;
        eng_wheel_advance(&W, wnow, wfire, NULL);
    }
    int fired = 0;
    for (int i = 0; i < 2000; i++) {
        if (i % 10 == 0) { CHECK_EQ(wts[i].fired, 0); continue; }
        CHECK_EQ(wts[i].fired, 1);
        fired += wts[i].fired;
        if (wts[i].fired_at < wts[i].deadline) early++;
        if (wts[i].fired_at > wts[i].deadline + WHEEL_TICK_US) late++;
    }
    CHECK_EQ(fired, 1800);
    CHECK_EQ(early, 0);
    CHECK_EQ(late, 0);
    CHECK_EQ(bad_next, 0);
    CHECK_EQ(W.n0 + W.n1, 0);
    CHECK_EQ(eng_wheel_next_deadline(&W), -1);
    /* re-arm from inside the callback path: insert at "now" fires next tick, not in a loop */
    eng_wheel_insert(&W, 1, wnow);
    wts[1].fired = 0;
    wnow += 1000;
    CHECK_EQ(eng_wheel_advance(&W, wnow, wfire, NULL), 1);
}

static void test_config(void) {
    struct mtcp_config c;
    char err[128];
    cfg_eth(&c);
    mtcp_engine *e = mtcp_engine_new(&c, NULL, err, sizeof err);
    CHECK(e != NULL);
    mtcp_engine_free(e);
    struct { const char *field; void (*mod)(struct mtcp_config *); } cases[] = {
        {"max_conns", NULL}, {"chunk_size", NULL}, {"delack_us", NULL}, {"mtu", NULL},
        {"eph_port_lo", NULL}, {"cc", NULL}, {"mac", NULL}, {"ipv4_prefix", NULL},
        {"keepalive_idle_us", NULL}, {"fin_timeout_us", NULL},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_eth(&c);
        switch (i) {
        case 0: c.max_conns = 0; break;
        case 1: c.chunk_size = 3; break;
        case 2: c.delack_us = 500000; break;
        case 3: c.mtu = 100; break;
        case 4: c.eph_port_lo = 5000; c.eph_port_hi = 4000; break;
        case 5: c.cc = 9; break;
        case 6: c.mac[0] = 1; break;
        case 7: c.ipv4_prefix = 33; break;
        case 8: c.keepalive_idle_us = 32768ull * 1000000; break;
        case 9: c.fin_timeout_us = 600000001u; break;
        }
        err[0] = 0;
        e = mtcp_engine_new(&c, NULL, err, sizeof err);
        CHECK(e == NULL);
        CHECK(strstr(err, cases[i].field) == err);
        if (e) mtcp_engine_free(e);
    }
    /* keepalive defaults as Linux: 7200 s idle (representable: 64-bit), 75 s interval, 9 probes;
     * an engine's connections get them */
    mtcp_config_default(&c);
    CHECK_EQ(c.fin_timeout_us, 60000000u);          /* Linux tcp_fin_timeout, separate from 2*MSL */
    CHECK_EQ(c.keepalive_idle_us, 7200000000ull);
    CHECK_EQ(c.keepalive_intvl_us, 75000000ull);
    CHECK_EQ(c.keepalive_cnt, 9);
    cfg_eth(&c);
    e = mtcp_engine_new(&c, NULL, err, sizeof err);
    CHECK(e != NULL);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 80};
    memcpy(ra.ip, IP_P, 4);
    int64_t cid = mtcp_connect(e, 1000000, &ra, NULL);
    CHECK(cid > 0);
    int64_t v = 0;
    CHECK_EQ(mtcp_getopt(e, (mtcp_cid)cid, MTCP_OPT_KEEPIDLE, &v), 0);
    CHECK_EQ(v, 7200000000ll);
    CHECK_EQ(mtcp_setopt(e, (mtcp_cid)cid, MTCP_OPT_KEEPIDLE, 10000000000ll), 0);
    CHECK_EQ(mtcp_getopt(e, (mtcp_cid)cid, MTCP_OPT_KEEPIDLE, &v), 0);
    CHECK_EQ(v, 10000000000ll);
    mtcp_engine_free(e);
    CHECK(mtcp_counter_count() == CTR_COUNT);
    CHECK(strcmp(mtcp_counter_name(CTR_SYNCOOKIES_SENT), "syncookies_sent") == 0);
    CHECK(mtcp_counter_name(CTR_COUNT) == NULL);
    for (uint32_t i = 0; i < CTR_COUNT; i++) CHECK(strcmp(mtcp_counter_name(i), "?") != 0);
}

static void test_arp(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mk(&c);
    uint8_t f[64];
    static const uint8_t bc[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint32_t o = eth_hdr(f, bc, MAC_P, WIRE_ETHERTYPE_ARP);
    struct wire_arp a;
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REQUEST;
    memcpy(a.sha, MAC_P, 6);
    memcpy(a.spa, IP_P, 4);
    memcpy(a.tpa, IP_E, 4);
    o += (uint32_t)wire_arp_emit(f + o, 28, &a);
    mtcp_engine_input(e, 1000, f, o);
    CHECK_EQ(drain(e, 1000), 1);
    struct wire_eth eth;
    struct wire_arp r;
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_MEM(eth.dst, MAC_P, 6);
    CHECK_MEM(eth.src, MAC_E, 6);
    CHECK_EQ(eth.ethertype, WIRE_ETHERTYPE_ARP);
    CHECK(wire_arp_parse(ofr(0) + 14, olens[0] - 14, &r) == 0);
    CHECK_EQ(r.op, WIRE_ARP_REPLY);
    CHECK_MEM(r.sha, MAC_E, 6);
    CHECK_MEM(r.spa, IP_E, 4);
    CHECK_MEM(r.tha, MAC_P, 6);
    CHECK_MEM(r.tpa, IP_P, 4);
    CHECK_EQ(ctr(e, CTR_ARP_REPLIES), 1);
    /* request for someone else: no reply */
    a.tpa[3] = 77;
    o = eth_hdr(f, bc, MAC_P, WIRE_ETHERTYPE_ARP);
    o += (uint32_t)wire_arp_emit(f + o, 28, &a);
    mtcp_engine_input(e, 1000, f, o);
    CHECK_EQ(drain(e, 1000), 0);

    /* resolution: connecting to an unknown on-link host sends an ARP request; the SYN waits
     * and leaves once the reply arrives */
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 80};
    uint8_t other[4] = {198, 18, 0, 9};
    uint8_t omac[6] = {2, 0, 0, 0, 0, 9};
    memcpy(ra.ip, other, 4);
    int64_t cid = mtcp_connect(e, 2000, &ra, NULL);
    CHECK(cid > 0);
    CHECK_EQ(drain(e, 2000), 1);
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_EQ(eth.ethertype, WIRE_ETHERTYPE_ARP);
    CHECK(wire_arp_parse(ofr(0) + 14, olens[0] - 14, &r) == 0);
    CHECK_EQ(r.op, WIRE_ARP_REQUEST);
    CHECK_MEM(r.tpa, other, 4);
    CHECK_EQ(ctr(e, CTR_ARP_REQUESTS), 1);
    /* reply */
    o = eth_hdr(f, MAC_E, omac, WIRE_ETHERTYPE_ARP);
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REPLY;
    memcpy(a.sha, omac, 6);
    memcpy(a.spa, other, 4);
    memcpy(a.tha, MAC_E, 6);
    memcpy(a.tpa, IP_E, 4);
    o += (uint32_t)wire_arp_emit(f + o, 28, &a);
    mtcp_engine_input(e, 3000, f, o);
    CHECK_EQ(drain(e, 3000), 1);
    struct wire_tcp t;
    CHECK(out_tcp(0, &t));
    CHECK_EQ(t.flags, WIRE_TCP_SYN);
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_MEM(eth.dst, omac, 6);
    CHECK_EQ(ctr(e, CTR_NEIGH_RESOLVED), 1);

    /* unanswered resolution: 3 requests, then FAILED and the waiting frame dropped */
    uint8_t ghost[4] = {198, 18, 0, 10};
    memcpy(ra.ip, ghost, 4);
    cid = mtcp_connect(e, 4000, &ra, NULL);
    CHECK(cid > 0);
    uint32_t reqs = 0;
    for (uint64_t now = 4000; now < 1000000ull * (NEIGH_RETRIES + 2); now += 100000) {
        drain(e, now);
        for (uint32_t i = 0; i < on; i++)
            if (wire_eth_parse(ofr(i), olens[i], &eth) == 14 && eth.ethertype == WIRE_ETHERTYPE_ARP) reqs++;
    }
    CHECK_EQ(reqs, NEIGH_RETRIES);
    CHECK_EQ(ctr(e, CTR_NEIGH_FAILED), 1);
    CHECK(ctr(e, CTR_DROP_NEIGH_QUEUE) >= 1);
    /* ... and the connect fails with EHOSTUNREACH (not only after the SYN retries) */
    struct mtcp_event ev[16];
    uint32_t n = mtcp_engine_events(e, ev, 16), unreach = 0;
    for (uint32_t i = 0; i < n; i++)
        if (ev[i].cid == (mtcp_cid)cid && ev[i].type == MTCP_EV_CONNECT_FAILED && ev[i].err == EHOSTUNREACH) unreach++;
    CHECK_EQ(unreach, 1);
    struct mtcp_conn_info ci;
    CHECK_EQ(mtcp_conn_info(e, (mtcp_cid)cid, &ci), 0);
    CHECK_EQ(ci.state, MTCP_ST_CLOSED);
    CHECK_EQ(mtcp_close(e, (mtcp_cid)cid), 0);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1);      /* the first (resolved) connection only */
    mtcp_engine_free(e);
}

static void test_ping(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mkp(&c);
    uint8_t f[256];
    /* v4 */
    uint8_t payload[40];
    for (int i = 0; i < 40; i++) payload[i] = (uint8_t)(i * 7);
    uint32_t o = eth_hdr(f, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV4);
    struct wire_icmp4 m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_ICMP4_ECHO_REQUEST;
    m.id = 0x1234;
    m.seq = 7;
    m.data = payload;
    m.data_len = sizeof payload;
    uint32_t il = (uint32_t)wire_icmp4_emit(f + o + 20, 200, &m);
    ip4_hdr(f + o, IP_P, IP_E, WIRE_PROTO_ICMP, il);
    mtcp_engine_input(e, 1000, f, o + 20 + il);
    CHECK_EQ(drain(e, 1000), 1);
    struct wire_eth eth;
    struct wire_ipv4 ip;
    struct wire_icmp4 r;
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_MEM(eth.dst, MAC_P, 6);
    CHECK(wire_ipv4_parse(ofr(0) + 14, olens[0] - 14, &ip) >= 0);
    CHECK_MEM(ip.src, IP_E, 4);
    CHECK_MEM(ip.dst, IP_P, 4);
    CHECK(wire_icmp4_parse(ip.payload, ip.payload_len, &r) >= 0);
    CHECK_EQ(r.type, WIRE_ICMP4_ECHO_REPLY);
    CHECK_EQ(r.id, 0x1234);
    CHECK_EQ(r.seq, 7);
    CHECK_EQ(r.data_len, sizeof payload);
    CHECK_MEM(r.data, payload, sizeof payload);
    /* v6 */
    o = eth_hdr(f, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV6);
    struct wire_icmp6 m6;
    memset(&m6, 0, sizeof m6);
    m6.type = WIRE_ICMP6_ECHO_REQUEST;
    m6.id = 99;
    m6.seq = 3;
    m6.data = payload;
    m6.data_len = sizeof payload;
    il = (uint32_t)wire_icmp6_emit(f + o + 40, 200, IP6_P, IP6_E, &m6);
    ip6_hdr(f + o, IP6_P, IP6_E, WIRE_PROTO_ICMPV6, il, 64);
    mtcp_engine_input(e, 2000, f, o + 40 + il);
    CHECK_EQ(drain(e, 2000), 1);
    struct wire_ipv6 ip6;
    struct wire_icmp6 r6;
    CHECK(wire_ipv6_parse(ofr(0) + 14, olens[0] - 14, &ip6) >= 0);
    CHECK_MEM(ip6.src, IP6_E, 16);
    CHECK_MEM(ip6.dst, IP6_P, 16);
    CHECK(wire_icmp6_parse(ip6.payload, ip6.upper_len, ip6.src, ip6.dst, &r6) >= 0);
    CHECK_EQ(r6.type, WIRE_ICMP6_ECHO_REPLY);
    CHECK_EQ(r6.id, 99);
    CHECK_EQ(r6.data_len, sizeof payload);
    CHECK_EQ(ctr(e, CTR_ICMP_ECHO_ANSWERED), 2);
    /* echo to an address that is not ours: dropped */
    uint8_t other[4] = {198, 18, 0, 5};
    o = eth_hdr(f, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV4);
    il = (uint32_t)wire_icmp4_emit(f + o + 20, 200, &m);
    ip4_hdr(f + o, IP_P, other, WIRE_PROTO_ICMP, il);
    mtcp_engine_input(e, 3000, f, o + 20 + il);
    CHECK_EQ(drain(e, 3000), 0);
    CHECK_EQ(ctr(e, CTR_DROP_NOT_FOR_US), 1);
    mtcp_engine_free(e);
}

static void test_ndp(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mk(&c);
    uint8_t f[256];
    uint8_t sn[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, IP6_E[13], IP6_E[14], IP6_E[15]};
    uint8_t snmac[6] = {0x33, 0x33, 0xff, IP6_E[13], IP6_E[14], IP6_E[15]};
    uint32_t o = eth_hdr(f, snmac, MAC_P, WIRE_ETHERTYPE_IPV6);
    struct wire_icmp6 ns;
    memset(&ns, 0, sizeof ns);
    ns.type = WIRE_ICMP6_NEIGH_SOLICIT;
    memcpy(ns.target, IP6_E, 16);
    ns.has_lladdr = 1;
    memcpy(ns.lladdr, MAC_P, 6);
    uint32_t il = (uint32_t)wire_icmp6_emit(f + o + 40, 200, LL6_P, sn, &ns);
    ip6_hdr(f + o, LL6_P, sn, WIRE_PROTO_ICMPV6, il, 255);
    mtcp_engine_input(e, 1000, f, o + 40 + il);
    CHECK_EQ(drain(e, 1000), 1);
    struct wire_eth eth;
    struct wire_ipv6 ip6;
    struct wire_icmp6 na;
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_MEM(eth.dst, MAC_P, 6);
    CHECK(wire_ipv6_parse(ofr(0) + 14, olens[0] - 14, &ip6) >= 0);
    CHECK_EQ(ip6.hop_limit, 255);
    CHECK_MEM(ip6.dst, LL6_P, 16);
    CHECK(wire_icmp6_parse(ip6.payload, ip6.upper_len, ip6.src, ip6.dst, &na) >= 0);
    CHECK_EQ(na.type, WIRE_ICMP6_NEIGH_ADVERT);
    CHECK_MEM(na.target, IP6_E, 16);
    CHECK(na.nd_flags & WIRE_NDP_FLAG_SOLICITED);
    CHECK(na.nd_flags & WIRE_NDP_FLAG_OVERRIDE);
    CHECK(na.has_lladdr);
    CHECK_MEM(na.lladdr, MAC_E, 6);
    /* hop limit != 255: dropped (RFC 4861 7.1.1) */
    ip6_hdr(f + o, LL6_P, sn, WIRE_PROTO_ICMPV6, il, 64);
    mtcp_engine_input(e, 1000, f, o + 40 + il);
    CHECK_EQ(drain(e, 1000), 0);

    /* our own resolution: connect over IPv6 -> NS to the solicited-node group; NA resolves it */
    struct mtcp_addr ra = {.family = MTCP_AF_INET6, .port = 443};
    memcpy(ra.ip, IP6_P, 16);
    int64_t cid = mtcp_connect(e, 2000, &ra, NULL);
    CHECK(cid > 0);
    CHECK_EQ(drain(e, 2000), 1);
    CHECK(wire_ipv6_parse(ofr(0) + 14, olens[0] - 14, &ip6) >= 0);
    CHECK(wire_icmp6_parse(ip6.payload, ip6.upper_len, ip6.src, ip6.dst, &na) >= 0);
    CHECK_EQ(na.type, WIRE_ICMP6_NEIGH_SOLICIT);
    CHECK_MEM(na.target, IP6_P, 16);
    CHECK_EQ(ip6.dst[0], 0xff);
    struct wire_icmp6 adv;
    memset(&adv, 0, sizeof adv);
    adv.type = WIRE_ICMP6_NEIGH_ADVERT;
    adv.nd_flags = WIRE_NDP_FLAG_SOLICITED | WIRE_NDP_FLAG_OVERRIDE;
    memcpy(adv.target, IP6_P, 16);
    adv.has_lladdr = 1;
    memcpy(adv.lladdr, MAC_P, 6);
    o = eth_hdr(f, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV6);
    il = (uint32_t)wire_icmp6_emit(f + o + 40, 200, IP6_P, IP6_E, &adv);
    ip6_hdr(f + o, IP6_P, IP6_E, WIRE_PROTO_ICMPV6, il, 255);
    mtcp_engine_input(e, 3000, f, o + 40 + il);
    CHECK_EQ(drain(e, 3000), 1);
    struct wire_tcp t;
    CHECK(out_tcp(0, &t));
    CHECK_EQ(t.flags, WIRE_TCP_SYN);
    CHECK_EQ(t.dport, 443);
    mtcp_engine_free(e);
}

static void test_rst_closed(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mkp(&c);
    uint8_t f[256];
    struct wire_tcp s = syn_tpl(40000, 81, 5555);
    mtcp_engine_input(e, 1000, f, tcp4(f, &s, NULL, 0));
    CHECK_EQ(drain(e, 1000), 1);
    struct wire_tcp t;
    CHECK(out_tcp(0, &t));
    CHECK_EQ(t.flags, WIRE_TCP_RST | WIRE_TCP_ACK);
    CHECK_EQ(t.sport, 81);
    CHECK_EQ(t.dport, 40000);
    CHECK_EQ(t.ack, 5556);
    CHECK_EQ(ctr(e, CTR_DROP_NO_LISTENER), 1);
    /* an ACK to a closed port: RST with seq = its ack */
    s.flags = WIRE_TCP_ACK;
    s.ack = 777;
    mtcp_engine_input(e, 1000, f, tcp4(f, &s, NULL, 0));
    CHECK_EQ(drain(e, 1000), 1);
    CHECK(out_tcp(0, &t));
    CHECK_EQ(t.flags & WIRE_TCP_RST, WIRE_TCP_RST);
    CHECK_EQ(t.seq, 777);
    /* never answer a RST */
    s.flags = WIRE_TCP_RST;
    mtcp_engine_input(e, 1000, f, tcp4(f, &s, NULL, 0));
    CHECK_EQ(drain(e, 1000), 0);
    /* IPv6 too */
    s = syn_tpl(40001, 82, 1);
    mtcp_engine_input(e, 1000, f, tcp6(f, &s));
    CHECK_EQ(drain(e, 1000), 1);
    CHECK(out_tcp(0, &t));
    CHECK_EQ(t.flags, WIRE_TCP_RST | WIRE_TCP_ACK);
    mtcp_engine_free(e);
}

static void test_malformed(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mkp(&c);
    uint8_t f[256], g[256];
    struct wire_tcp s = syn_tpl(40000, 80, 1);
    uint32_t n = tcp4(f, &s, NULL, 0);
    /* truncated at every length: never crashes, counted */
    for (uint32_t l = 0; l < n; l++) mtcp_engine_input(e, 1000, f, l);
    CHECK(ctr(e, CTR_DROP_TRUNCATED) + ctr(e, CTR_DROP_BAD_LEN) + ctr(e, CTR_DROP_BAD_HDRLEN) >= n - 1);
    /* bad TCP checksum */
    memcpy(g, f, n);
    g[n - 1] ^= 0x40;
    mtcp_engine_input(e, 1000, g, n);
    CHECK_EQ(ctr(e, CTR_DROP_BAD_CSUM), 1);
    /* bad IP header checksum */
    memcpy(g, f, n);
    g[14 + 8] ^= 1;        /* ttl */
    mtcp_engine_input(e, 1000, g, n);
    CHECK_EQ(ctr(e, CTR_DROP_BAD_CSUM), 2);
    /* bad IP version */
    memcpy(g, f, n);
    g[14] = (uint8_t)(0x70 | (g[14] & 0xf));
    mtcp_engine_input(e, 1000, g, n);
    CHECK_EQ(ctr(e, CTR_DROP_BAD_VERSION), 1);
    /* fragment */
    {
        uint32_t o = eth_hdr(g, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV4);
        struct wire_ipv4 h;
        memset(&h, 0, sizeof h);
        h.total_len = 20 + 8;
        h.ttl = 64;
        h.proto = WIRE_PROTO_TCP;
        h.frag = 0x2000;
        memcpy(h.src, IP_P, 4);
        memcpy(h.dst, IP_E, 4);
        wire_ipv4_emit(g + o, 20, &h);
        memset(g + o + 20, 0, 8);
        mtcp_engine_input(e, 1000, g, o + 28);
        CHECK_EQ(ctr(e, CTR_DROP_FRAGMENT), 1);
    }
    /* impossible flags SYN+FIN */
    s.flags = WIRE_TCP_SYN | WIRE_TCP_FIN;
    mtcp_engine_input(e, 1000, g, tcp4(g, &s, NULL, 0));
    CHECK_EQ(ctr(e, CTR_DROP_BAD_FLAGS), 1);
    /* TCP option overrun: MSS option claiming 10 bytes at the end of the header */
    s = syn_tpl(40000, 80, 1);
    s.has_wscale = s.sack_perm = s.has_ts = 0;
    n = tcp4(g, &s, NULL, 0);                  /* 24-byte TCP header with MSS at 34+20 */
    g[14 + 20 + 21] = 10;
    {
        uint8_t *seg = g + 34;
        seg[16] = seg[17] = 0;
        wire_tcp_csum_fill(seg, n - 34, wire_pseudo4(IP_P, IP_E, WIRE_PROTO_TCP, n - 34));
    }
    mtcp_engine_input(e, 1000, g, n);
    CHECK_EQ(ctr(e, CTR_DROP_OPT_OVERRUN) + ctr(e, CTR_DROP_OPT_BAD_LEN), 1);
    /* unknown ethertype */
    eth_hdr(g, MAC_E, MAC_P, 0x88b5);
    mtcp_engine_input(e, 1000, g, 60);
    CHECK_EQ(ctr(e, CTR_DROP_UNSUPPORTED), 1);
    /* not our MAC */
    uint8_t om[6] = {2, 9, 9, 9, 9, 9};
    memcpy(g, f, 64);
    memcpy(g, om, 6);
    mtcp_engine_input(e, 1000, g, 64);
    CHECK_EQ(ctr(e, CTR_DROP_NOT_FOR_US), 1);
    /* garbage of every length */
    uint64_t x = 1;
    for (uint32_t l = 0; l < 200; l++) {
        for (uint32_t i = 0; i < l; i++) { x = x * 6364136223846793005ULL + 1; g[i] = (uint8_t)(x >> 56); }
        if (l >= 12) memcpy(g, MAC_E, 6);
        if (l >= 14) { g[12] = l & 1 ? 0x08 : 0x86; g[13] = l & 1 ? 0x00 : 0xdd; }
        mtcp_engine_input(e, 1000, g, l);
    }
    drain(e, 2000);
    CHECK(ctr(e, CTR_FRAMES_IN) >= 200);
    mtcp_engine_free(e);
}

/* Passive handshake from the peer; returns the accepted cid (0 on failure). */
static mtcp_cid handshake(mtcp_engine *e, uint64_t now, uint16_t sport, uint16_t dport, struct wire_tcp *synack_out) {
    uint8_t f[256];
    struct wire_tcp s = syn_tpl(sport, dport, 1000u * sport);
    mtcp_engine_input(e, now, f, tcp4(f, &s, NULL, 0));
    drain(e, now);
    struct wire_tcp sa;
    int found = 0;
    for (uint32_t i = 0; i < on; i++)
        if (out_tcp(i, &sa) && sa.dport == sport && sa.flags == (WIRE_TCP_SYN | WIRE_TCP_ACK)) { found = 1; break; }
    if (!found) return 0;
    if (synack_out) *synack_out = sa;
    struct wire_tcp a;
    memset(&a, 0, sizeof a);
    a.sport = sport;
    a.dport = dport;
    a.seq = s.seq + 1;
    a.ack = sa.seq + 1;
    a.flags = WIRE_TCP_ACK;
    a.win = 1000;
    a.has_ts = sa.has_ts;
    a.tsval = 1001;
    a.tsecr = sa.tsval;
    mtcp_engine_input(e, now, f, tcp4(f, &a, NULL, 0));
    struct mtcp_event ev[8];
    uint32_t n = mtcp_engine_events(e, ev, 8);
    for (uint32_t i = 0; i < n; i++) if (ev[i].type == MTCP_EV_ACCEPT) return ev[i].cid;
    return 0;
}

static void test_syncookies(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.syn_backlog = 4;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 80};
    int64_t l = mtcp_listen(e, &la, 16);
    CHECK(l > 0);
    uint8_t f[256];
    struct wire_tcp sa[10];
    for (int i = 0; i < 10; i++) {
        struct wire_tcp s = syn_tpl((uint16_t)(50000 + i), 80, 1000u * (uint32_t)i);
        mtcp_engine_input(e, 1000, f, tcp4(f, &s, NULL, 0));
    }
    CHECK_EQ(drain(e, 1000), 10);
    for (uint32_t i = 0; i < on; i++) {
        CHECK(out_tcp(i, &sa[i]));
        CHECK_EQ(sa[i].flags, WIRE_TCP_SYN | WIRE_TCP_ACK);
    }
    CHECK_EQ(ctr(e, CTR_PASSIVE_OPENS), 4);
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_SENT), 6);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1 + 4);            /* listener + 4 SYN-RECEIVED; cookies keep no state */
    /* complete the handshake of a cookie SYN-ACK: 10 s later, options carried via timestamps */
    struct wire_tcp *ck = NULL;
    for (int i = 0; i < 10; i++) if (sa[i].dport == 50009) ck = &sa[i];
    CHECK(ck != NULL);
    if (!ck) { mtcp_engine_free(e); return; }
    CHECK(ck->has_ts && ck->has_wscale && ck->sack_perm && ck->has_mss);
    struct wire_tcp a;
    memset(&a, 0, sizeof a);
    a.sport = 50009;
    a.dport = 80;
    a.seq = 9000 + 1;
    a.ack = ck->seq + 1;
    a.flags = WIRE_TCP_ACK | WIRE_TCP_PSH;
    a.win = 512;
    a.has_ts = 1;
    a.tsval = 2000;
    a.tsecr = ck->tsval;
    const uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
    /* a forged cookie first: RST, no connection */
    struct wire_tcp bad = a;
    bad.ack ^= 0x1000;
    mtcp_engine_input(e, 10000000, f, tcp4(f, &bad, hello, 5));
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_FAILED), 1);
    drain(e, 10000000);                /* (the SYN-RECEIVED ones retransmit their SYN-ACKs too) */
    struct wire_tcp t;
    int rst = 0;
    for (uint32_t i = 0; i < on; i++) if (out_tcp(i, &t) && (t.flags & WIRE_TCP_RST) && t.dport == 50009) rst++;
    CHECK_EQ(rst, 1);
    mtcp_engine_input(e, 10000000, f, tcp4(f, &a, hello, 5));
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_ACCEPTED), 1);
    struct mtcp_event ev[16];
    uint32_t n = mtcp_engine_events(e, ev, 16);
    CHECK(n >= 2);
    CHECK_EQ(ev[0].type, MTCP_EV_ACCEPT);
    CHECK_EQ(ev[0].parent, (uint64_t)l);
    mtcp_cid cid = ev[0].cid;
    CHECK_EQ(ev[1].type, MTCP_EV_READABLE);
    CHECK_EQ(ev[1].len, 5);
    struct mtcp_conn_info ci;
    CHECK_EQ(mtcp_conn_info(e, cid, &ci), 0);
    CHECK_EQ(ci.state, MTCP_ST_ESTABLISHED);
    CHECK_EQ(ci.mss, 1360 - 12);       /* largest cookie MSS <= the peer's 1400, minus timestamps */
    CHECK_EQ(ci.flags & 7, 7);         /* sack, timestamps, wscale */
    struct conn *k = eng_conn_get(e, cid);
    CHECK(k && k->tcp.snd_wscale == 7);
    CHECK(k && k->tcp.snd_wnd == 512u << 7);
    uint8_t buf[16];
    CHECK_EQ(mtcp_recv(e, cid, buf, sizeof buf), 5);
    CHECK_MEM(buf, hello, 5);
    CHECK_EQ(ci.remote.port, 50009);
    /* a cookie older than two periods is refused */
    for (int i = 0; i < 10; i++) if (sa[i].dport == 50008) ck = &sa[i];
    a.sport = 50008;
    a.seq = 8000 + 1;
    a.ack = ck->seq + 1;
    a.tsecr = ck->tsval;
    mtcp_engine_input(e, 1000 + 3ull * (1ull << 26), f, tcp4(f, &a, NULL, 0));
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_ACCEPTED), 1);
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_FAILED), 2);
    /* closing the listener resets the SYN-RECEIVED children and frees them */
    drain(e, 1000 + 3ull * (1ull << 26));
    /* a SYN-ACK to a listener: RST <SEQ=SEG.ACK> */
    struct wire_tcp sak = syn_tpl(50100, 80, 5);
    sak.flags = WIRE_TCP_SYN | WIRE_TCP_ACK;
    sak.ack = 4242;
    mtcp_engine_input(e, 1000 + 3ull * (1ull << 26), f, tcp4(f, &sak, NULL, 0));
    CHECK_EQ(drain(e, 1000 + 3ull * (1ull << 26)), 1);
    CHECK(out_tcp(0, &t) && t.flags == WIRE_TCP_RST && t.seq == 4242 && t.dport == 50100);
    CHECK_EQ(mtcp_close(e, (mtcp_cid)l), 0);
    CHECK_EQ(mtcp_close(e, (mtcp_cid)l), -EBADF);
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1);                /* the accepted connection only */
    mtcp_engine_free(e);
}

static void test_stale_and_pool(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.max_conns = 8;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 80};
    memcpy(ra.ip, IP_P, 4);
    int64_t cids[9];
    for (int i = 0; i < 8; i++) { cids[i] = mtcp_connect(e, 1000, &ra, NULL); CHECK(cids[i] > 0); }
    CHECK_EQ(mtcp_connect(e, 1000, &ra, NULL), -ENOMEM);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 8);
    CHECK_EQ(mtcp_abort(e, (mtcp_cid)cids[3]), 0);
    CHECK_EQ(mtcp_abort(e, (mtcp_cid)cids[3]), -EBADF);
    CHECK_EQ(mtcp_send(e, (mtcp_cid)cids[3], (const uint8_t *)"x", 1), -EBADF);
    CHECK_EQ(mtcp_readable(e, (mtcp_cid)cids[3]), -EBADF);
    struct mtcp_conn_info ci;
    CHECK_EQ(mtcp_conn_info(e, (mtcp_cid)cids[3], &ci), -EBADF);
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 7);
    int64_t again = mtcp_connect(e, 2000, &ra, NULL);
    CHECK(again > 0);
    CHECK((uint32_t)again == (uint32_t)cids[3]);     /* same block ... */
    CHECK(again != cids[3]);                         /* ... new generation */
    CHECK_EQ(mtcp_close(e, (mtcp_cid)cids[3]), -EBADF);
    CHECK_EQ(mtcp_close(e, 0), -EBADF);
    CHECK_EQ(mtcp_close(e, ((uint64_t)1 << 32) | 12345), -EBADF);
    /* no events for released cids */
    for (int i = 0; i < 8; i++) if (i != 3) CHECK_EQ(mtcp_close(e, (mtcp_cid)cids[i]), 0);
    struct mtcp_event ev[64];
    uint32_t n = mtcp_engine_events(e, ev, 64);
    for (uint32_t i = 0; i < n; i++) CHECK(ev[i].cid == (mtcp_cid)again);
    /* closing SYN-SENT frees immediately */
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1);
    /* chunk pool exhaustion on send: -> partial send, later recovery after abort */
    mtcp_engine_free(e);
}

static void test_many(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.max_conns = 6000;
    c.max_events = 20000;
    c.syn_backlog = 10000;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 80};
    int64_t l = mtcp_listen(e, &la, 10000);
    CHECK(l > 0);
    int ok = 0;
    const int N = 5000;
    for (int i = 0; i < N; i++) {
        mtcp_cid cid = handshake(e, 1000 + (uint64_t)i, (uint16_t)(10000 + i), 80, NULL);
        if (cid) ok++;
    }
    CHECK_EQ(ok, N);
    /* every 4-tuple found in O(1) */
    int found = 0;
    for (int i = 0; i < N; i++) {
        struct conn *k = eng_conn_lookup(e, MTCP_AF_INET, IP_E, 80, IP_P, (uint16_t)(10000 + i));
        if (k && k->tcp.state == MTCP_ST_ESTABLISHED) found++;
    }
    CHECK_EQ(found, N);
    CHECK(eng_conn_lookup(e, MTCP_AF_INET, IP_E, 80, IP_P, 9999) == NULL);
    /* ss-like listing pages through all of them */
    mtcp_cid page[256], after = 0;
    uint32_t total = 0, got;
    while ((got = mtcp_conn_list(e, after, page, 256)) > 0) { total += got; after = page[got - 1]; }
    CHECK_EQ(total, (uint32_t)N + 1);
    /* worst bucket chain stays short */
    uint32_t maxchain = 0;
    for (uint32_t b = 0; b <= e->hmask; b++) {
        uint32_t len = 0;
        for (uint32_t i = e->htab[b]; i != NONE32; i = e->conns[i].hnext) len++;
        if (len > maxchain) maxchain = len;
    }
    CHECK(maxchain <= 8);
    fprintf(stderr, "    %d conns, longest hash chain %u, sizeof(struct conn) = %zu, sizeof(tcp_conn) = %zu\n",
            N, maxchain, sizeof(struct conn), sizeof(struct tcp_conn));
    CHECK(sizeof(struct conn) + 4 <= 2048);
    mtcp_engine_free(e);
}

static void test_pmtu(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &la, 16) > 0);
    struct wire_tcp sa;
    mtcp_cid cid = handshake(e, 1000, 40000, 80, &sa);
    CHECK(cid != 0);
    struct mtcp_conn_info ci;
    mtcp_conn_info(e, cid, &ci);
    CHECK_EQ(ci.mss, 1400 - 12);       /* effective: timestamps take 12 */
    uint8_t big[3000];
    memset(big, 'x', sizeof big);
    CHECK(mtcp_send(e, cid, big, sizeof big) > 0);
    drain(e, 2000);
    /* ICMP frag needed quoting our segment (seq in flight): MSS lowered */
    uint8_t f[256];
    uint32_t o = eth_hdr(f, MAC_E, MAC_P, WIRE_ETHERTYPE_IPV4);
    uint8_t quote[28];
    ip4_hdr(quote, IP_E, IP_P, WIRE_PROTO_TCP, 1000);
    wire_put16(quote + 20, 80);
    wire_put16(quote + 22, 40000);
    wire_put32(quote + 24, sa.seq + 1);
    struct wire_icmp4 m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_ICMP4_DEST_UNREACH;
    m.code = 4;
    m.next_mtu = 1000;
    m.data = quote;
    m.data_len = 28;
    uint32_t il = (uint32_t)wire_icmp4_emit(f + o + 20, 200, &m);
    ip4_hdr(f + o, IP_P, IP_E, WIRE_PROTO_ICMP, il);
    /* out of its sequence space first: ignored */
    wire_put32(quote + 24, sa.seq + 1 + 100000);
    m.data = quote;
    uint8_t g[256];
    memcpy(g, f, o);
    uint32_t il2 = (uint32_t)wire_icmp4_emit(g + o + 20, 200, &m);
    ip4_hdr(g + o, IP_P, IP_E, WIRE_PROTO_ICMP, il2);
    mtcp_engine_input(e, 3000, g, o + 20 + il2);
    CHECK_EQ(ctr(e, CTR_ICMP_PMTU_IGNORED), 1);
    mtcp_engine_input(e, 3000, f, o + 20 + il);
    CHECK_EQ(ctr(e, CTR_ICMP_PMTU), 1);
    mtcp_conn_info(e, cid, &ci);
    CHECK_EQ(ci.mss, 960 - 12);
    mtcp_engine_free(e);
}

static void test_routing(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mk(&c);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 80, .ip = {203, 0, 113, 5}};
    /* off-link without a gateway */
    CHECK_EQ(mtcp_connect(e, 1000, &ra, NULL), -ENETUNREACH);
    struct mtcp_addr r6 = {.family = MTCP_AF_INET6, .port = 80, .ip = {0x20, 0x01, 0x0d, 0xb9}};
    CHECK_EQ(mtcp_connect(e, 1000, &r6, NULL), -ENETUNREACH);
    /* bad arguments */
    struct mtcp_addr z = {.family = MTCP_AF_INET, .port = 80};
    CHECK_EQ(mtcp_connect(e, 1000, &z, NULL), -EINVAL);
    struct mtcp_addr notmine = {.family = MTCP_AF_INET, .port = 0, .ip = {198, 18, 0, 77}};
    CHECK_EQ(mtcp_connect(e, 1000, &ra, &notmine), -EADDRNOTAVAIL);
    CHECK_EQ(mtcp_listen(e, &notmine, 1), -EADDRNOTAVAIL);
    mtcp_engine_free(e);
    /* with a gateway: ARP goes to the gateway, the SYN to the gateway's MAC */
    cfg_eth(&c);
    uint8_t gw[4] = {198, 18, 0, 254}, gwmac[6] = {2, 0, 0, 0, 0, 0xfe};
    memcpy(c.ipv4_gw, gw, 4);
    e = mk(&c);
    int64_t cid = mtcp_connect(e, 1000, &ra, NULL);
    CHECK(cid > 0);
    CHECK_EQ(drain(e, 1000), 1);
    struct wire_arp r;
    CHECK(wire_arp_parse(ofr(0) + 14, olens[0] - 14, &r) == 0);
    CHECK_MEM(r.tpa, gw, 4);
    uint8_t f[64];
    uint32_t o = eth_hdr(f, MAC_E, gwmac, WIRE_ETHERTYPE_ARP);
    struct wire_arp a;
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REPLY;
    memcpy(a.sha, gwmac, 6);
    memcpy(a.spa, gw, 4);
    memcpy(a.tha, MAC_E, 6);
    memcpy(a.tpa, IP_E, 4);
    o += (uint32_t)wire_arp_emit(f + o, 28, &a);
    mtcp_engine_input(e, 2000, f, o);
    CHECK_EQ(drain(e, 2000), 1);
    struct wire_eth eth;
    struct wire_ipv4 ip;
    CHECK(wire_eth_parse(ofr(0), olens[0], &eth) == 14);
    CHECK_MEM(eth.dst, gwmac, 6);
    CHECK(wire_ipv4_parse(ofr(0) + 14, olens[0] - 14, &ip) >= 0);
    CHECK_MEM(ip.dst, ra.ip, 4);
    CHECK_EQ(ip.frag & 0x4000, 0x4000);          /* DF */
    /* connect from an explicit local port; the same 4-tuple twice is refused */
    struct mtcp_addr lp = {.family = MTCP_AF_INET, .port = 5555};
    CHECK(mtcp_connect(e, 3000, &ra, &lp) > 0);
    CHECK_EQ(mtcp_connect(e, 3000, &ra, &lp), -EADDRINUSE);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 5556};
    CHECK(mtcp_listen(e, &la, 4) > 0);
    CHECK_EQ(mtcp_listen(e, &la, 4), -EADDRINUSE);
    /* port 0: the engine picks one */
    struct mtcp_addr l0 = {.family = MTCP_AF_INET, .port = 0};
    int64_t lid = mtcp_listen(e, &l0, 4);
    CHECK(lid > 0);
    struct mtcp_addr got;
    CHECK_EQ(mtcp_getaddrs(e, (mtcp_cid)lid, &got, NULL), 0);
    CHECK(got.port >= c.eph_port_lo && got.port <= c.eph_port_hi);
    mtcp_engine_free(e);
}

static void test_events_overflow(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.max_events = 16;
    c.max_conns = 64;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &la, 64) > 0);
    uint8_t f[256];
    /* 20 handshakes without taking events: 16 ACCEPTs queued, the rest counted as overflow */
    for (int i = 0; i < 20; i++) {
        struct wire_tcp s = syn_tpl((uint16_t)(30000 + i), 80, 7);
        mtcp_engine_input(e, 1000, f, tcp4(f, &s, NULL, 0));
    }
    drain(e, 1000);
    for (uint32_t i = 0; i < on; i++) {
        struct wire_tcp sa, a;
        if (!out_tcp(i, &sa)) continue;
        memset(&a, 0, sizeof a);
        a.sport = sa.dport; a.dport = 80; a.seq = 8; a.ack = sa.seq + 1; a.flags = WIRE_TCP_ACK; a.win = 100;
        a.has_ts = 1; a.tsval = 1001; a.tsecr = sa.tsval;
        mtcp_engine_input(e, 1000, f, tcp4(f, &a, NULL, 0));
    }
    CHECK_EQ(ctr(e, CTR_EVENTS_OVERFLOW), 4);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[3], 16);
    struct mtcp_event ev[32];
    CHECK_EQ(mtcp_engine_events(e, ev, 32), 16);
    /* the 4 connections whose ACCEPT was lost were reset, not leaked */
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1 + 16);
    CHECK_EQ(ctr(e, CTR_RST_OUT), 4);
    mtcp_engine_free(e);
}

static void test_syncookies_v6_always(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.syncookies = MTCP_SYNCOOKIES_ALWAYS;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET6, .port = 443};
    int64_t l = mtcp_listen(e, &la, 4);
    CHECK(l > 0);
    uint8_t f[256];
    /* no timestamps: the cookie cannot carry wscale/SACK, so neither is offered */
    struct wire_tcp s = syn_tpl(41000, 443, 123456);
    s.has_ts = 0;
    s.mss = 1440;
    mtcp_engine_input(e, 5000, f, tcp6(f, &s));
    CHECK_EQ(drain(e, 5000), 1);
    struct wire_tcp sa;
    CHECK(out_tcp(0, &sa));
    CHECK_EQ(sa.flags, WIRE_TCP_SYN | WIRE_TCP_ACK);
    CHECK(!sa.has_ts && !sa.has_wscale && !sa.sack_perm);
    CHECK_EQ(sa.ack, 123457);
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_SENT), 1);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1);
    struct wire_tcp a;
    memset(&a, 0, sizeof a);
    a.sport = 41000; a.dport = 443; a.seq = 123457; a.ack = sa.seq + 1; a.flags = WIRE_TCP_ACK; a.win = 1000;
    mtcp_engine_input(e, 6000, f, tcp6(f, &a));
    struct mtcp_event ev[4];
    uint32_t n = mtcp_engine_events(e, ev, 4);
    CHECK(n >= 1 && ev[0].type == MTCP_EV_ACCEPT && ev[0].parent == (uint64_t)l);
    struct mtcp_conn_info ci;
    CHECK_EQ(mtcp_conn_info(e, ev[0].cid, &ci), 0);
    CHECK_EQ(ci.mss, 1440);
    CHECK_EQ(ci.flags & 7, 0);
    CHECK_EQ(ci.remote.family, MTCP_AF_INET6);
    CHECK_MEM(ci.remote.ip, IP6_P, 16);
    mtcp_engine_free(e);
}

static void test_chunk_exhaustion(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.max_chunks = 16;          /* 32 KiB for every buffer of the engine */
    c.chunk_size = 2048;
    mtcp_engine *e = mkp(&c);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &la, 16) > 0);
    mtcp_cid a = handshake(e, 1000, 40000, 80, NULL);
    mtcp_cid b = handshake(e, 1000, 40001, 80, NULL);
    CHECK(a && b);
    static uint8_t big[100000];
    memset(big, 7, sizeof big);
    int64_t k1 = mtcp_send(e, a, big, sizeof big);
    CHECK(k1 > 0 && k1 <= 16 * 2048);
    int64_t k2 = mtcp_send(e, b, big, sizeof big);
    CHECK(k2 >= 0 && k1 + k2 <= 16 * 2048);
    uint64_t pu[4];
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[1], 16 - 1);    /* send buffers leave the reserve (16/16 chunks) to received data */
    /* aborting frees the chunks; the other connection can use them */
    CHECK_EQ(mtcp_abort(e, a), 0);
    mtcp_engine_pool_usage(e, pu);
    CHECK(pu[1] < 16);
    int64_t k3 = mtcp_send(e, b, big, sizeof big);
    CHECK(k3 > 0);
    CHECK_EQ(mtcp_abort(e, b), 0);
    mtcp_engine_pool_usage(e, pu);
    CHECK_EQ(pu[0], 1);
    CHECK_EQ(pu[1], 0);
    CHECK_EQ(pu[2], 0);
    mtcp_engine_free(e);
}

/* ---- TIME-WAIT: recycling when the pool is empty, RFC 6191 reuse by a newer SYN ---- */
static mtcp_engine *twA, *twB;
static uint64_t tw_now;
static int tw_ts = 1;

static void tw_poll(void) {
    mtcp_engine_poll(twA, tw_now);
    mtcp_engine_poll(twB, tw_now);
    tw_now += 1000;
}

/* One short connection A -> B:8080 (10 bytes A->B); closer 0: A closes first (A keeps TIME-WAIT),
 * 1: B closes first. lport != 0 binds A's port. Returns 0 and the virtual connect time in *us,
 * or -1 when it did not complete within 5 virtual seconds. */
static int tw_one(int closer, uint16_t lport, uint64_t *us) {
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 8080}, la = {.family = MTCP_AF_INET, .port = lport};
    memcpy(ra.ip, IP_P, 4);
    uint64_t t0 = tw_now;
    int64_t c = mtcp_connect(twA, tw_now, &ra, lport ? &la : NULL);
    if (c < 0) { fprintf(stderr, "    connect: %lld\n", (long long)c); return -1; }
    mtcp_cid a = (mtcp_cid)c, b = 0;
    int connected = 0, got = 0, a_rel = 0, b_rel = 0, sent = 0;
    struct mtcp_event ev[16];
    for (int it = 0; it < 5000; it++) {
        tw_poll();
        uint32_t n = mtcp_engine_events(twA, ev, 16);
        for (uint32_t i = 0; i < n; i++) {
            if (ev[i].cid != a) continue;
            if (ev[i].type == MTCP_EV_CONNECTED) { connected = 1; *us = tw_now - t0; }
            if (ev[i].type == MTCP_EV_CONNECT_FAILED || ev[i].type == MTCP_EV_ERROR) return -1;
            if (ev[i].type == MTCP_EV_PEER_CLOSED && !a_rel) { mtcp_close(twA, a); a_rel = 1; }
        }
        n = mtcp_engine_events(twB, ev, 16);
        for (uint32_t i = 0; i < n; i++) {
            if (ev[i].type == MTCP_EV_ACCEPT) b = ev[i].cid;
            else if (ev[i].cid == b && ev[i].type == MTCP_EV_PEER_CLOSED && !b_rel) { mtcp_close(twB, b); b_rel = 1; }
        }
        if (connected && !sent) { if (mtcp_send(twA, a, (const uint8_t *)"0123456789", 10) != 10) return -1; sent = 1; }
        if (b && !b_rel) {
            uint8_t buf[16];
            int64_t r = mtcp_recv(twB, b, buf, sizeof buf);
            if (r > 0) got += (int)r;
            if (got == 10 && closer == 1) { mtcp_close(twB, b); b_rel = 1; }
        }
        if (got == 10 && closer == 0 && !a_rel) { mtcp_close(twA, a); a_rel = 1; }
        if (a_rel && b_rel) {
            for (int k = 0; k < 5; k++) tw_poll();      /* last ACK / FIN exchange */
            return 0;
        }
    }
    return -1;
}

static void tw_setup(uint32_t max_a, uint32_t max_b) {
    mtcp_link *la = NULL, *lb = NULL;
    CHECK_EQ(mtcp_simlink_pair(256, 1500, &la, &lb), 0);
    struct mtcp_config ca, cb;
    cfg_eth(&ca);
    ca.max_conns = max_a;
    ca.timestamps = (uint8_t)tw_ts;
    cb = ca;
    cb.max_conns = max_b;
    memcpy(cb.mac, MAC_P, 6);
    memcpy(cb.ipv4, IP_P, 4);
    memcpy(cb.ipv6, IP6_P, 16);
    cb.seed = 43;
    char err[128];
    twA = mtcp_engine_new(&ca, la, err, sizeof err);
    twB = mtcp_engine_new(&cb, lb, err, sizeof err);
    CHECK(twA && twB);
    struct mtcp_addr l = {.family = MTCP_AF_INET, .port = 8080};
    CHECK(mtcp_listen(twB, &l, 64) > 0);
    tw_now = 1000000;
}

static void tw_teardown(void) {
    mtcp_link *la = twA->link, *lb = twB->link;
    mtcp_engine_free(twA);
    mtcp_engine_free(twB);
    mtcp_link_close(la);
    mtcp_link_close(lb);
}

static void test_timewait_recycle(void) {
    uint64_t us, pu[4];
    /* active closer (the client) keeps TIME-WAIT: 40 connections through an 8-block pool, all
     * inside one 60 s TIME-WAIT period */
    tw_setup(8, 64);
    int fails = 0;
    for (int i = 0; i < 40; i++) fails += tw_one(0, 0, &us) != 0;
    CHECK_EQ(fails, 0);
    CHECK(ctr(twA, CTR_TW_RECYCLED) >= 40 - 8);
    mtcp_engine_pool_usage(twA, pu);
    CHECK(pu[0] <= 8);
    CHECK(tw_now < 1000000 + 60000000ull);
    tw_teardown();
    /* passive opens: the server closes first and keeps TIME-WAIT (8 blocks incl. the listener) */
    tw_setup(64, 8);
    fails = 0;
    for (int i = 0; i < 40; i++) fails += tw_one(1, 0, &us) != 0;
    CHECK_EQ(fails, 0);
    CHECK(ctr(twB, CTR_TW_RECYCLED) >= 40 - 8);
    CHECK_EQ(ctr(twB, CTR_DROP_NO_MEM), 0);
    CHECK(tw_now < 1000000 + 60000000ull);
    tw_teardown();
    /* the counter has a name for Python */
    CHECK(strcmp(mtcp_counter_name(CTR_TW_RECYCLED), "tw_recycled") == 0);
}

static void test_timewait_reuse(void) {
    /* The client reuses its port against our server, which closed first and so holds the old
     * 4-tuple in TIME-WAIT: a newer SYN (RFC 6191: later timestamp) starts the new connection at
     * once, as on Linux, instead of a challenge ACK, RST and a SYN retransmission 1 s later. */
    uint64_t us = 0;
    tw_setup(64, 64);
    CHECK_EQ(tw_one(1, 40000, &us), 0);
    uint64_t chal = ctr(twB, CTR_CHALLENGE_ACKS);
    for (int i = 0; i < 5; i++) {
        us = 0;
        CHECK_EQ(tw_one(1, 40000, &us), 0);
        CHECK(us > 0 && us < 100000);
    }
    CHECK_EQ(ctr(twB, CTR_CHALLENGE_ACKS), chal);
    CHECK_EQ(ctr(twB, CTR_CONN_ACCEPTED), 6);
    tw_teardown();
    /* without timestamps: SEG.SEQ above the old RCV.NXT (RFC 6528 ISNs grow with the clock) */
    tw_ts = 0;
    tw_setup(64, 64);
    CHECK_EQ(tw_one(1, 40001, &us), 0);
    for (int i = 0; i < 3; i++) {
        us = 0;
        CHECK_EQ(tw_one(1, 40001, &us), 0);
        CHECK(us > 0 && us < 100000);
    }
    CHECK_EQ(ctr(twB, CTR_CHALLENGE_ACKS), 0);
    tw_teardown();
    tw_ts = 1;
}

/* ---- TSO: a link with LINK_FEAT_TSO gets super-frames (LINK_SLOT_F_GSO, gso_size = MSS) ---- */
static void test_tso_link(void) {
    mtcp_link *la = NULL, *lb = NULL;
    /* 9000-byte sim slots: the engine MTU stays 1500 (config), the slots hold 6-MSS super-frames
     * (the sim link hands them over as they are, like GRO; the receiver takes them whole) */
    CHECK_EQ(mtcp_simlink_pair(256, 9000, &la, &lb), 0);
    la->features |= LINK_FEAT_TSO | LINK_FEAT_CSUM_TX;
    struct mtcp_config ca, cb;
    cfg_eth(&ca);
    ca.max_chunks = 4096;
    cb = ca;
    memcpy(cb.mac, MAC_P, 6);
    memcpy(cb.ipv4, IP_P, 4);
    memcpy(cb.ipv6, IP6_P, 16);
    cb.seed = 43;
    char err[128];
    mtcp_engine *A = mtcp_engine_new(&ca, la, err, sizeof err), *B = mtcp_engine_new(&cb, lb, err, sizeof err);
    CHECK(A && B);
    if (!A || !B) return;
    CHECK(A->env.tso_max >= 8000 && A->env.tso_max < 9000);
    CHECK_EQ(B->env.tso_max, 0);
    struct mtcp_addr l = {.family = MTCP_AF_INET, .port = 8080}, ra = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(ra.ip, IP_P, 4);
    CHECK(mtcp_listen(B, &l, 16) > 0);
    uint64_t now = 1000000;
    int64_t c = mtcp_connect(A, now, &ra, NULL);
    CHECK(c > 0);
    mtcp_cid b = 0;
    static uint8_t data[1 << 20], rb[65536];
    for (uint32_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 31 + (i >> 11));
    uint64_t sent = 0, got = 0;
    int bad = 0, gso_frames = 0, big_plain = 0, badsize = 0;
    uint64_t segs0 = 0;
    struct mtcp_event ev[16];
    for (int it = 0; it < 20000 && got < sizeof data; it++) {
        if (b && sent < sizeof data) {
            if (!segs0) segs0 = ctr(A, CTR_SEGS_OUT);
            int64_t k = mtcp_send(A, (mtcp_cid)c, data + sent, (uint32_t)(sizeof data - sent));
            if (k > 0) sent += (uint64_t)k;
        }
        uint64_t fo = ctr(A, CTR_FRAMES_OUT);
        mtcp_engine_poll(A, now);
        /* what A's txsync put on the wire: the next frames of B's RX ring (B took all before) */
        fo = ctr(A, CTR_FRAMES_OUT) - fo;
        for (uint32_t j = 0; j < fo; j++) {
            struct link_slot *s = &lb->rx.slot[(lb->rx.tail + j) & lb->rx.mask];
            if (s->len <= 1514) continue;
            if (!(s->flags & LINK_SLOT_F_GSO)) big_plain++;
            else { gso_frames++; if (s->gso_size != 1448 || !(s->flags & LINK_SLOT_F_CSUM_PARTIAL)) badsize++; }
        }
        mtcp_engine_poll(B, now);
        uint32_t n = mtcp_engine_events(B, ev, 16);
        for (uint32_t i = 0; i < n; i++) if (ev[i].type == MTCP_EV_ACCEPT) b = ev[i].cid;
        mtcp_engine_events(A, ev, 16);
        if (b) {
            int64_t k;
            while ((k = mtcp_recv(B, b, rb, sizeof rb)) > 0) {
                if (memcmp(rb, data + got, (size_t)k)) bad++;
                got += (uint64_t)k;
            }
        }
        now += 100;
    }
    CHECK_EQ(got, sizeof data);
    CHECK_EQ(bad, 0);
    CHECK(gso_frames > 50);
    CHECK_EQ(big_plain, 0);
    CHECK_EQ(badsize, 0);
    CHECK_EQ(ctr(A, CTR_RETRANS_SEGS), 0);
    /* about 1 MiB / 8688 super-segments instead of 1 MiB / 1448 segments */
    uint64_t segs = ctr(A, CTR_SEGS_OUT) - segs0;
    fprintf(stderr, "    1 MiB in %llu segments (%d super-frames)\n", (unsigned long long)segs, gso_frames);
    if (got != sizeof data)
        for (uint32_t i = 0; i < CTR_COUNT; i++)
            if (ctr(B, (int)i) || ctr(A, (int)i)) fprintf(stderr, "      %-24s A %llu B %llu\n", mtcp_counter_name(i), (unsigned long long)ctr(A, (int)i), (unsigned long long)ctr(B, (int)i));
    CHECK(segs < (sizeof data / 1448) / 3);
    mtcp_engine_free(A);
    mtcp_engine_free(B);
    mtcp_link_close(la);
    mtcp_link_close(lb);
}

/* mtcp_engine_poll_rx takes the RX batch and queues events without output; the output of the
 * following mtcp_engine_poll_tx sends the reply written in between with the ACK of the request and
 * the FIN of a close() after it: one segment, no separate ACK. */
static void test_poll_rx_piggyback(void) {
    tw_setup(16, 16);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(ra.ip, IP_P, 4);
    int64_t c = mtcp_connect(twA, tw_now, &ra, NULL);
    CHECK(c > 0);
    mtcp_cid a = (mtcp_cid)c, b = 0;
    struct mtcp_event ev[16];
    int connected = 0;
    for (int it = 0; it < 20 && !(connected && b); it++) {
        tw_poll();
        uint32_t n = mtcp_engine_events(twA, ev, 16);
        for (uint32_t i = 0; i < n; i++)
            if (ev[i].cid == a && ev[i].type == MTCP_EV_CONNECTED) connected = 1;
        n = mtcp_engine_events(twB, ev, 16);
        for (uint32_t i = 0; i < n; i++)
            if (ev[i].type == MTCP_EV_ACCEPT) b = ev[i].cid;
    }
    CHECK(connected && b);
    CHECK_EQ(mtcp_send(twA, a, (const uint8_t *)"request!!!", 10), 10);
    mtcp_engine_poll(twA, tw_now);                     /* the request leaves A */
    uint64_t out0 = ctr(twB, CTR_SEGS_OUT);
    int n = mtcp_engine_poll_rx(twB, tw_now);
    CHECK(n >= 1);
    CHECK_EQ(mtcp_engine_events(twB, ev, 16), 1u);
    CHECK(ev[0].cid == b && ev[0].type == MTCP_EV_READABLE && ev[0].len == 10);
    CHECK_EQ(ctr(twB, CTR_SEGS_OUT), out0);            /* nothing sent by the RX half */
    uint8_t buf[16];
    CHECK_EQ(mtcp_recv(twB, b, buf, sizeof buf), 10);
    CHECK_EQ(mtcp_send(twB, b, (const uint8_t *)"reply!!!!!", 10), 10);
    CHECK_EQ(mtcp_close(twB, b), 0);
    mtcp_engine_poll_tx(twB, tw_now);
    CHECK_EQ(ctr(twB, CTR_SEGS_OUT), out0 + 1);        /* data + ACK + FIN in one segment */
    uint64_t in0 = ctr(twA, CTR_SEGS_IN);
    mtcp_engine_poll(twA, tw_now);
    CHECK_EQ(ctr(twA, CTR_SEGS_IN), in0 + 1);
    n = (int)mtcp_engine_events(twA, ev, 16);
    int readable = 0, peer_closed = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].cid == a && ev[i].type == MTCP_EV_READABLE) readable = 1;
        if (ev[i].cid == a && ev[i].type == MTCP_EV_PEER_CLOSED) peer_closed = 1;
    }
    CHECK(readable && peer_closed);
    CHECK_EQ(mtcp_recv(twA, a, buf, sizeof buf), 10);
    CHECK(memcmp(buf, "reply!!!!!", 10) == 0);
    mtcp_close(twA, a);
    for (int k = 0; k < 5; k++) tw_poll();
    tw_teardown();
}

int main(void) {
    RUN(test_siphash);
    RUN(test_wheel);
    RUN(test_config);
    RUN(test_arp);
    RUN(test_ping);
    RUN(test_ndp);
    RUN(test_rst_closed);
    RUN(test_malformed);
    RUN(test_syncookies);
    RUN(test_stale_and_pool);
    RUN(test_many);
    RUN(test_pmtu);
    RUN(test_routing);
    RUN(test_events_overflow);
    RUN(test_syncookies_v6_always);
    RUN(test_chunk_exhaustion);
    RUN(test_timewait_recycle);
    RUN(test_timewait_reuse);
    RUN(test_tso_link);
    RUN(test_poll_rx_piggyback);
    CTEST_END();
}
