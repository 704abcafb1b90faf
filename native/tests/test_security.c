/* test_security.c — the engine as an attacker sees it: reply bursts (SYN flood with a legit
 * client, SYN burst to a closed port), reply rate limits and their accounting, neighbour-cache
 * spoofing and reflection to unverified MACs, old ACKs that must not touch RACK/TLP or the
 * window, and connection admission under pool exhaustion. Each test prints its figure. */
#include <errno.h>
#include "ctest.h"
#include "engine/engine.h"

static const uint8_t MAC_E[6] = {2, 0, 0, 0, 0, 1}, MAC_P[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t MAC_X[6] = {2, 0xba, 0xd0, 0, 0, 0x66};      /* the attacker's fake MAC */
static const uint8_t IP_E[4] = {198, 18, 0, 1}, IP_P[4] = {198, 18, 0, 2};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void cfg_eth(struct mtcp_config *c) {
    mtcp_config_default(c);
    c->max_conns = 256;
    c->max_chunks = 1024;
    c->max_events = 4096;
    c->seed = 7;
    memcpy(c->mac, MAC_E, 6);
    memcpy(c->ipv4, IP_E, 4);
    c->ipv4_prefix = 24;
}

static mtcp_engine *mk(const struct mtcp_config *c, mtcp_link *l) {
    char err[128];
    mtcp_engine *e = mtcp_engine_new(c, l, err, sizeof err);
    if (!e) fprintf(stderr, "engine_new: %s\n", err);
    return e;
}

static uint64_t ctr(mtcp_engine *e, int i) {
    uint64_t c[CTR_COUNT];
    mtcp_engine_counters(e, c, CTR_COUNT);
    return c[i];
}

/* ---- frames ---- */
static uint32_t eth_hdr(uint8_t *b, const uint8_t *dst, const uint8_t *src, uint16_t type) {
    struct wire_eth h;
    memcpy(h.dst, dst, 6);
    memcpy(h.src, src, 6);
    h.ethertype = type;
    return (uint32_t)wire_eth_emit(b, 14, &h);
}

static uint32_t arp_req(uint8_t *f, const uint8_t *smac, const uint8_t *sip, const uint8_t *tip) {
    uint32_t o = eth_hdr(f, BCAST, smac, WIRE_ETHERTYPE_ARP);
    struct wire_arp a;
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REQUEST;
    memcpy(a.sha, smac, 6);
    memcpy(a.spa, sip, 4);
    memcpy(a.tpa, tip, 4);
    return o + (uint32_t)wire_arp_emit(f + o, 28, &a);
}

static uint32_t arp_reply(uint8_t *f, const uint8_t *smac, const uint8_t *sip) {
    uint32_t o = eth_hdr(f, MAC_E, smac, WIRE_ETHERTYPE_ARP);
    struct wire_arp a;
    memset(&a, 0, sizeof a);
    a.op = WIRE_ARP_REPLY;
    memcpy(a.sha, smac, 6);
    memcpy(a.spa, sip, 4);
    memcpy(a.tha, MAC_E, 6);
    memcpy(a.tpa, IP_E, 4);
    return o + (uint32_t)wire_arp_emit(f + o, 28, &a);
}

/* Ethernet + IPv4 + TCP from (smac, sip) to the engine */
static uint32_t tcp4(uint8_t *b, const uint8_t *smac, const uint8_t *sip, const struct wire_tcp *t,
                     const uint8_t *pl, uint32_t plen) {
    uint32_t o = eth_hdr(b, MAC_E, smac, WIRE_ETHERTYPE_IPV4);
    uint8_t *seg = b + o + 20;
    uint32_t hl = (uint32_t)wire_tcp_emit(seg, 60, t);
    if (plen) memcpy(seg + hl, pl, plen);
    wire_tcp_csum_fill(seg, hl + plen, wire_pseudo4(sip, IP_E, WIRE_PROTO_TCP, hl + plen));
    struct wire_ipv4 h;
    memset(&h, 0, sizeof h);
    h.total_len = (uint16_t)(20 + hl + plen);
    h.ttl = 64;
    h.proto = WIRE_PROTO_TCP;
    h.frag = 0x4000;
    memcpy(h.src, sip, 4);
    memcpy(h.dst, IP_E, 4);
    wire_ipv4_emit(b + o, 20, &h);
    return o + 20 + hl + plen;
}

static struct wire_tcp seg_tpl(uint16_t sport, uint16_t dport, uint32_t seq, uint8_t flags) {
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.flags = flags;
    t.win = 65535;
    if (flags & WIRE_TCP_SYN) {
        t.has_mss = 1;
        t.mss = 1460;
        t.has_wscale = 1;
        t.wscale = 7;
        t.sack_perm = 1;
        t.has_ts = 1;
        t.tsval = 1000;
    }
    return t;
}

/* what the engine sent: Ethernet dst, and for TCP the segment */
struct sent {
    uint8_t dmac[6];
    uint16_t ethertype;
    int is_tcp;
    struct wire_tcp t;
    uint8_t ipdst[4];
};

static int parse_out(const uint8_t *f, uint32_t len, struct sent *s) {
    struct wire_eth eth;
    memset(s, 0, sizeof *s);
    if (wire_eth_parse(f, len, &eth) != 14) return -1;
    memcpy(s->dmac, eth.dst, 6);
    s->ethertype = eth.ethertype;
    if (eth.ethertype != WIRE_ETHERTYPE_IPV4) return 0;
    struct wire_ipv4 ip;
    if (wire_ipv4_parse(f + 14, len - 14, &ip) < 0) return -1;
    memcpy(s->ipdst, ip.dst, 4);
    if (ip.proto == WIRE_PROTO_TCP && wire_tcp_parse(ip.payload, ip.payload_len, &s->t) >= 0) s->is_tcp = 1;
    return 0;
}

/* ---- the attacker's end of a sim link ---- */
static void inject(mtcp_link *lb, const uint8_t *f, uint32_t len) {
    struct link_ring *r = &lb->tx;
    struct link_slot *s = &r->slot[r->head];
    memcpy(s->buf, f, len);
    s->len = len;
    s->flags = 0;
    s->gso_size = 0;
    s->csum_start = s->csum_offset = 0;
    r->head = r->cur = link_ring_next(r, r->head);
}

#define MAXSEEN 8192
static struct sent seen[MAXSEEN];
static uint32_t nseen;

/* take every frame the engine sent */
static void collect(mtcp_link *lb, uint64_t now) {
    link_rxsync(lb, now);
    struct link_ring *r = &lb->rx;
    while (r->head != r->tail) {
        struct link_slot *s = &r->slot[r->head];
        if (nseen < MAXSEEN && parse_out(s->buf, s->len, &seen[nseen]) == 0) nseen++;
        r->head = link_ring_next(r, r->head);
    }
    r->cur = r->head;
}

/* ------------------------------------------------------------------ tests */

/* 1,000 SYNs to a closed port in one RX batch (2 ms): every RST goes out up to the rate limit,
 * and sent + rate-limited + unsent accounts for all of them (the control queue holds 64). */
static void burst_closed(uint32_t rate, uint32_t burst, uint32_t *sent_out, uint32_t *limited) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.rst_ratelimit = rate;
    c.rst_burst = burst;
    mtcp_link *la, *lb;
    CHECK_EQ(mtcp_simlink_pair(2048, 1500, &la, &lb), 0);
    mtcp_engine *e = mk(&c, la);
    uint8_t f[128];
    inject(lb, f, arp_req(f, MAC_P, IP_P, IP_E));
    link_txsync(lb, 1000);
    mtcp_engine_poll(e, 1000);
    nseen = 0;
    collect(lb, 1000);
    CHECK_EQ(nseen, 1);                            /* the ARP reply */
    for (uint32_t i = 0; i < 1000; i++) {
        struct wire_tcp t = seg_tpl((uint16_t)(10000 + i), 9, 5000 + i, WIRE_TCP_SYN);
        inject(lb, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
    }
    link_txsync(lb, 2000);
    mtcp_engine_poll(e, 3000);
    nseen = 0;
    collect(lb, 3000);
    uint32_t rsts = 0, bad = 0;
    for (uint32_t i = 0; i < nseen; i++) {
        if (seen[i].is_tcp && (seen[i].t.flags & WIRE_TCP_RST)) rsts++;
        if (memcmp(seen[i].dmac, MAC_P, 6)) bad++;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(rsts, ctr(e, CTR_RST_OUT));
    CHECK_EQ(ctr(e, CTR_RST_OUT) + ctr(e, CTR_RST_RATELIMITED) + ctr(e, CTR_RST_UNSENT), 1000);
    CHECK_EQ(ctr(e, CTR_DROP_CTRL_QUEUE), 0);
    CHECK(ctr(e, CTR_CTRL_FLUSHES) > 0);
    *sent_out = rsts;
    *limited = (uint32_t)ctr(e, CTR_RST_RATELIMITED);
    mtcp_engine_free(e);
    mtcp_link_close(la);
    mtcp_link_close(lb);
}

static void test_closed_port_burst(void) {
    uint32_t sent, lim;
    burst_closed(10000, 1000, &sent, &lim);        /* the defaults */
    fprintf(stderr, "    1000 SYNs to a closed port in 2 ms, default limit: %u RSTs, %u rate-limited\n", sent, lim);
    CHECK_EQ(sent, 1000);
    burst_closed(1000, 100, &sent, &lim);          /* 1000/s, burst 100 */
    fprintf(stderr, "    ... rst_ratelimit 1000/s burst 100: %u RSTs, %u rate-limited\n", sent, lim);
    CHECK(sent >= 100 && sent <= 103);
    CHECK_EQ(sent + lim, 1000);
    burst_closed(0, 0, &sent, &lim);               /* unlimited */
    CHECK_EQ(sent, 1000);
}

/* A spoofed SYN flood (random on-link sources, random MACs) with a legit client in the middle of
 * every batch: each legit SYN is answered in the same poll, to the MAC ARP taught us; nothing
 * goes to an unverified MAC; cookie SYN-ACKs are counted when they reach the wire. */
static void test_syn_flood_legit(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.syn_backlog = 64;
    mtcp_link *la, *lb;
    CHECK_EQ(mtcp_simlink_pair(2048, 1500, &la, &lb), 0);
    mtcp_engine *e = mk(&c, la);
    struct mtcp_addr any = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &any, 4096) >= 0);
    uint8_t f[128];
    inject(lb, f, arp_req(f, MAC_P, IP_P, IP_E));
    link_txsync(lb, 1000);
    mtcp_engine_poll(e, 1000);
    collect(lb, 1000);
    uint64_t now = 2000, rnd = 12345;
    uint32_t legit = 0, legit_ok = 0, to_bad_mac = 0, arp_reqs = 0, cookies_seen = 0, batches = 50;
    for (uint32_t b = 0; b < batches; b++) {
        for (uint32_t i = 0; i < 1000; i++) {
            if (i == 500) {
                struct wire_tcp t = seg_tpl((uint16_t)(20000 + b), 80, 777 + b, WIRE_TCP_SYN);
                inject(lb, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
                legit++;
                continue;
            }
            rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t sip[4] = {198, 18, 0, (uint8_t)(3 + (rnd >> 33) % 250)};
            uint8_t smac[6] = {2, (uint8_t)(rnd >> 40), (uint8_t)(rnd >> 48), (uint8_t)(rnd >> 56), 1, 1};
            struct wire_tcp t = seg_tpl((uint16_t)(rnd >> 20), 80, (uint32_t)(rnd >> 8), WIRE_TCP_SYN);
            inject(lb, f, tcp4(f, smac, sip, &t, NULL, 0));
        }
        link_txsync(lb, now);
        mtcp_engine_poll(e, now);
        nseen = 0;
        collect(lb, now);
        for (uint32_t i = 0; i < nseen; i++) {
            struct sent *s = &seen[i];
            if (s->ethertype == WIRE_ETHERTYPE_ARP) { arp_reqs++; continue; }
            if (memcmp(s->dmac, MAC_P, 6)) { to_bad_mac++; continue; }
            if (s->is_tcp && (s->t.flags & (WIRE_TCP_SYN | WIRE_TCP_ACK)) == (WIRE_TCP_SYN | WIRE_TCP_ACK) &&
                s->t.dport == 20000 + b && s->t.ack == 777 + b + 1) legit_ok++;
            if (s->is_tcp && (s->t.flags & WIRE_TCP_SYN)) cookies_seen++;
        }
        now += 2000;                    /* 1000 SYNs per 2 ms: 500k SYN/s */
    }
    fprintf(stderr, "    %u spoofed SYNs at 500k/s: legit SYN-ACKs %u/%u in the same poll, frames to unverified MACs %u, "
            "ARP requests %u, cookies on the wire %llu, unsent %llu\n", batches * 999, legit_ok, legit, to_bad_mac,
            arp_reqs, (unsigned long long)ctr(e, CTR_SYNCOOKIES_SENT), (unsigned long long)ctr(e, CTR_SYNCOOKIES_UNSENT));
    CHECK_EQ(legit_ok, legit);
    CHECK_EQ(to_bad_mac, 0);
    /* our own connect to a host nobody resolved yet still gets its ARP request out: the flood's
     * (weak) resolutions may use only half the request budget */
    struct mtcp_addr far = {.family = MTCP_AF_INET, .port = 9999};
    static const uint8_t IP_FAR[4] = {198, 18, 0, 253};
    memcpy(far.ip, IP_FAR, 4);
    CHECK(mtcp_connect(e, now, &far, NULL) > 0);
    mtcp_engine_poll(e, now);
    mtcp_engine_poll(e, now);          /* the request queued during the output pass goes out next */
    nseen = 0;
    collect(lb, now);
    uint32_t req_far = 0;
    for (uint32_t i = 0; i < nseen; i++) if (seen[i].ethertype == WIRE_ETHERTYPE_ARP) req_far++;
    CHECK_EQ(req_far, 1);
    CHECK_EQ(ctr(e, CTR_DROP_CTRL_QUEUE), 0);
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_SENT), cookies_seen);
    /* ARP requests for the flood: half the bucket (50) plus 100/s for 0.1 s */
    CHECK(arp_reqs <= 61);
    CHECK_EQ(arp_reqs + req_far, ctr(e, CTR_ARP_REQUESTS));
    mtcp_engine_free(e);
    mtcp_link_close(la);
    mtcp_link_close(lb);
}

/* Frame API helpers */
#define OUTMAX 256
static uint8_t obuf[OUTMAX * 1600];
static uint32_t olens[OUTMAX];
static uint32_t drain(mtcp_engine *e, uint64_t now) {
    uint32_t n = mtcp_engine_output(e, now, obuf, sizeof obuf, olens, OUTMAX), off = 0;
    nseen = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (parse_out(obuf + off, olens[i], &seen[nseen]) == 0) nseen++;
        off += olens[i];
    }
    return n;
}

/* A SYN with a known peer's IP and a fake MAC changes nothing (the SYN-ACK still goes to the MAC
 * ARP taught us); a SYN or ping from an unknown source draws an ARP request, never a reply to the
 * frame's source MAC. */
static void test_neigh_spoof(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mk(&c, NULL);
    struct mtcp_addr any = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &any, 16) >= 0);
    uint8_t f[256];
    mtcp_engine_input(e, 1000, f, arp_req(f, MAC_P, IP_P, IP_E));
    CHECK_EQ(drain(e, 1000), 1);
    /* spoofed SYN: IP_P, MAC_X */
    struct wire_tcp t = seg_tpl(4000, 80, 100, WIRE_TCP_SYN);
    mtcp_engine_input(e, 2000, f, tcp4(f, MAC_X, IP_P, &t, NULL, 0));
    drain(e, 2000);
    uint32_t synack_p = 0, to_x = 0;
    for (uint32_t i = 0; i < nseen; i++) {
        if (!memcmp(seen[i].dmac, MAC_X, 6)) to_x++;
        if (seen[i].is_tcp && !memcmp(seen[i].dmac, MAC_P, 6)) synack_p++;
    }
    CHECK_EQ(to_x, 0);
    CHECK_EQ(synack_p, 1);
    /* the entry for IP_P still holds MAC_P */
    int found = 0;
    for (uint32_t i = 0; i < NEIGH_N; i++) {
        struct neigh *n = &e->neigh.ent[i];
        if (n->state == NS_REACHABLE && !memcmp(n->ip, IP_P, 4)) { found = 1; CHECK_MEM(n->mac, MAC_P, 6); }
    }
    CHECK(found);
    /* unknown source 198.18.0.77 with MAC_X: an ARP request, no SYN-ACK, no RST, no echo reply */
    static const uint8_t IP_U[4] = {198, 18, 0, 77};
    t = seg_tpl(4001, 80, 200, WIRE_TCP_SYN);
    mtcp_engine_input(e, 3000, f, tcp4(f, MAC_X, IP_U, &t, NULL, 0));
    t = seg_tpl(4002, 81, 300, WIRE_TCP_SYN);                    /* closed port */
    mtcp_engine_input(e, 3000, f, tcp4(f, MAC_X, IP_U, &t, NULL, 0));
    drain(e, 3000);
    to_x = 0;
    uint32_t arps = 0;
    for (uint32_t i = 0; i < nseen; i++) {
        if (!memcmp(seen[i].dmac, MAC_X, 6)) to_x++;
        if (seen[i].ethertype == WIRE_ETHERTYPE_ARP && !memcmp(seen[i].dmac, BCAST, 6)) arps++;
    }
    CHECK_EQ(to_x, 0);
    CHECK_EQ(arps, 1);
    CHECK_EQ(nseen, 1);
    /* nobody answers: after the retries the waiting replies are dropped and counted */
    uint32_t total_x = 0;
    for (uint64_t now = 4000; now < 8000000; now += 100000) {
        drain(e, now);
        for (uint32_t i = 0; i < nseen; i++) if (!memcmp(seen[i].dmac, MAC_X, 6)) total_x++;
    }
    CHECK_EQ(total_x, 0);
    /* one frame waits per weak entry: the newest (the RST) is kept, the SYN-ACK is dropped at once */
    CHECK_EQ(ctr(e, CTR_RST_UNSENT), 1);
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_UNSENT) + ctr(e, CTR_RST_UNSENT), 1);
    /* the neighbour answers: the waiting reply goes to the MAC it gave */
    t = seg_tpl(4003, 81, 400, WIRE_TCP_SYN);
    mtcp_engine_input(e, 9000000, f, tcp4(f, MAC_X, IP_U, &t, NULL, 0));
    drain(e, 9000000);
    static const uint8_t MAC_U[6] = {2, 0, 0, 0, 0, 0x77};
    mtcp_engine_input(e, 9001000, f, arp_reply(f, MAC_U, IP_U));
    drain(e, 9001000);
    uint32_t to_u = 0;
    for (uint32_t i = 0; i < nseen; i++)
        if (!memcmp(seen[i].dmac, MAC_U, 6) && seen[i].is_tcp && (seen[i].t.flags & WIRE_TCP_RST)) to_u++;
    CHECK_EQ(to_u, 1);
    mtcp_engine_free(e);
}

/* Old ACKs (SND.UNA - MAX.SND.WND =< SEG.ACK < SND.UNA, in-window sequence number: what a blind
 * injector can hit) change no window, RACK or TLP state. */
static void test_old_ack_no_state(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    mtcp_engine *e = mk(&c, NULL);
    struct mtcp_addr any = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &any, 16) >= 0);
    uint8_t f[2048];
    mtcp_engine_input(e, 1000, f, arp_req(f, MAC_P, IP_P, IP_E));
    drain(e, 1000);
    struct wire_tcp t = seg_tpl(5000, 80, 1000, WIRE_TCP_SYN);
    mtcp_engine_input(e, 2000, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
    drain(e, 2000);
    CHECK_EQ(nseen, 1);
    uint32_t iss = seen[0].t.seq;
    t = seg_tpl(5000, 80, 1001, WIRE_TCP_ACK);
    t.ack = iss + 1;
    t.win = 4096;                 /* x 128 */
    t.has_ts = 1;
    t.tsval = 1010;
    t.tsecr = seen[0].t.tsval;
    mtcp_engine_input(e, 12000, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
    struct mtcp_event ev[8];
    uint32_t n = mtcp_engine_events(e, ev, 8);
    CHECK_EQ(n, 1);
    mtcp_cid cid = ev[0].cid;
    static uint8_t data[20000];
    CHECK_EQ(mtcp_send(e, cid, data, sizeof data), (int64_t)sizeof data);
    drain(e, 13000);
    CHECK(nseen >= 10);
    /* the peer ACKs the first 5000 bytes: snd_una = iss + 5001 */
    t.ack = iss + 1 + 5000;
    t.tsval = 1020;
    mtcp_engine_input(e, 23000, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
    drain(e, 23000);
    struct conn *k = eng_conn_get(e, cid);
    CHECK(k != NULL);
    struct tcp_conn before = k->tcp;
    struct mtcp_conn_info i0, i1;
    mtcp_conn_info(e, cid, &i0);
    /* blind segments: in-window sequence, old ACKs, a zero / tiny window, SACK blocks */
    for (uint32_t j = 0; j < 200; j++) {
        struct wire_tcp x = seg_tpl(5000, 80, 1001 + j * 7, WIRE_TCP_ACK);
        x.ack = iss + 1 + 5000 - 1 - j * 13;
        x.win = (uint16_t)(j & 1);
        x.has_ts = 1;
        x.tsval = 1030 + j;
        x.nsack = 1;
        x.sack[0].left = iss + 1 + 6000;
        x.sack[0].right = iss + 1 + 9000;
        mtcp_engine_input(e, 24000 + j, f, tcp4(f, MAC_P, IP_P, &x, NULL, 0));
    }
    mtcp_conn_info(e, cid, &i1);
    CHECK_EQ(i1.snd_wnd, i0.snd_wnd);
    CHECK_EQ(k->tcp.snd_wnd, before.snd_wnd);
    CHECK_EQ(k->tcp.t_tlp, before.t_tlp);
    CHECK_EQ(k->tcp.tlp_active, before.tlp_active);
    CHECK_EQ(k->tcp.rack_ts, before.rack_ts);
    CHECK_EQ(k->tcp.rack_end, before.rack_end);
    CHECK_EQ(k->tcp.sb_n, before.sb_n);
    CHECK_EQ(k->tcp.t_rack, before.t_rack);
    CHECK_EQ(k->tcp.dupacks, before.dupacks);
    CHECK_EQ(ctr(e, CTR_TLP_PROBES), 0);
    fprintf(stderr, "    200 old-ACK segments: window %u -> %u, TLP/RACK state unchanged\n", i0.snd_wnd, i1.snd_wnd);
    mtcp_engine_free(e);
}

/* Admission. Remote SYNs when no block is free get cookies; the returning cookie ACK is refused
 * with a RST at once (not left "connected" to nothing). */
static void test_admission_remote(void) {
    struct mtcp_config c;
    cfg_eth(&c);
    c.max_conns = 4;
    mtcp_engine *e = mk(&c, NULL);
    struct mtcp_addr any = {.family = MTCP_AF_INET, .port = 80};
    CHECK(mtcp_listen(e, &any, 16) >= 0);
    uint8_t f[256];
    mtcp_engine_input(e, 1000, f, arp_req(f, MAC_P, IP_P, IP_E));
    drain(e, 1000);
    for (uint16_t i = 0; i < 4; i++) {
        struct wire_tcp t = seg_tpl((uint16_t)(6000 + i), 80, 1000u * i, WIRE_TCP_SYN);
        mtcp_engine_input(e, 2000, f, tcp4(f, MAC_P, IP_P, &t, NULL, 0));
    }
    drain(e, 2000);
    CHECK_EQ(nseen, 4);                          /* 3 children + 1 cookie SYN-ACK */
    CHECK_EQ(ctr(e, CTR_SYNCOOKIES_SENT), 1);
    uint32_t cookie = 0;
    for (uint32_t i = 0; i < nseen; i++) if (seen[i].t.dport == 6003) cookie = seen[i].t.seq;
    struct wire_tcp a = seg_tpl(6003, 80, 3001, WIRE_TCP_ACK);
    a.ack = cookie + 1;
    mtcp_engine_input(e, 3000, f, tcp4(f, MAC_P, IP_P, &a, NULL, 0));
    drain(e, 3000);
    CHECK_EQ(nseen, 1);
    CHECK(nseen == 1 && seen[0].is_tcp && (seen[0].t.flags & WIRE_TCP_RST) && seen[0].t.seq == cookie + 1);
    CHECK_EQ(ctr(e, CTR_ADMISSION_REFUSED), 1);
    mtcp_engine_free(e);
}

/* Connections to ourselves through an 8-block pool (listener + 7): a client takes two blocks
 * (its own and the reserved child), so 3 connect and are accepted and the others fail with
 * -ENOMEM at once — none is "connected" without being accepted. Blocks freed by close() serve
 * the next connect at once. */
static uint8_t pbuf[64 * 70000];
static uint32_t plens[64];
static void pump(mtcp_engine *e, uint64_t *now, int *connected, int *accepted, int *failed, mtcp_cid *acc) {
    for (int round = 0; round < 50; round++) {
        uint32_t n = mtcp_engine_output(e, *now, pbuf, sizeof pbuf, plens, 64), off = 0;
        for (uint32_t i = 0; i < n; i++) { mtcp_engine_input(e, *now, pbuf + off, plens[i]); off += plens[i]; }
        struct mtcp_event ev[64];
        uint32_t k = mtcp_engine_events(e, ev, 64);
        for (uint32_t i = 0; i < k; i++) {
            if (ev[i].type == MTCP_EV_CONNECTED) (*connected)++;
            if (ev[i].type == MTCP_EV_ACCEPT) { if (acc) acc[*accepted] = ev[i].cid; (*accepted)++; }
            if (ev[i].type == MTCP_EV_CONNECT_FAILED || ev[i].type == MTCP_EV_ERROR) (*failed)++;
        }
        *now += 1000;
        if (!n && !k) break;
    }
}

static void test_admission_self(void) {
    struct mtcp_config c;
    mtcp_config_default(&c);
    c.link_type = MTCP_LINK_IP;
    c.mtu = 65535;
    c.max_conns = 8;
    c.max_chunks = 256;
    c.seed = 3;
    static const uint8_t lo[4] = {127, 0, 0, 1};
    memcpy(c.ipv4, lo, 4);
    c.ipv4_prefix = 8;
    c.own_prefix = 1;
    mtcp_engine *e = mk(&c, NULL);
    struct mtcp_addr srv = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(srv.ip, lo, 4);
    CHECK(mtcp_listen(e, &srv, 128) >= 0);
    uint64_t now = 1000;
    /* 20 concurrent connects */
    mtcp_cid cl[20], acc[20];
    int ok = 0, enomem = 0;
    for (int i = 0; i < 20; i++) {
        int64_t r = mtcp_connect(e, now, &srv, NULL);
        if (r >= 0) cl[ok++] = (mtcp_cid)r;
        else if (r == -ENOMEM) enomem++;
    }
    int connected = 0, accepted = 0, failed = 0;
    pump(e, &now, &connected, &accepted, &failed, acc);
    fprintf(stderr, "    max_conns=8, 20 concurrent connects to ourselves: %d connected, %d accepted, %d ENOMEM at once, %d failed later\n",
            connected, accepted, enomem, failed);
    CHECK_EQ(ok, 3);
    CHECK_EQ(enomem, 17);
    CHECK_EQ(connected, 3);
    CHECK_EQ(accepted, 3);
    CHECK_EQ(failed, 0);
    CHECK_EQ(e->resv, 0);
    /* close everything (clients first: they keep TIME-WAIT), then connect again at once */
    for (int i = 0; i < ok; i++) mtcp_close(e, cl[i]);
    for (int i = 0; i < accepted; i++) mtcp_close(e, acc[i]);
    int c2 = 0, a2 = 0, f2 = 0;
    pump(e, &now, &c2, &a2, &f2, NULL);
    uint64_t t0 = now;
    int64_t r = mtcp_connect(e, now, &srv, NULL);
    CHECK(r >= 0);
    c2 = a2 = f2 = 0;
    pump(e, &now, &c2, &a2, &f2, NULL);
    CHECK_EQ(c2, 1);
    CHECK_EQ(a2, 1);
    fprintf(stderr, "    after close: next connect accepted after %llu us (TIME-WAIT recycled %llu)\n",
            (unsigned long long)(now - t0), (unsigned long long)ctr(e, CTR_TW_RECYCLED));
    /* sequential: three pairs held open, the fourth connect fails at once */
    mtcp_engine_free(e);
    e = mk(&c, NULL);
    CHECK(mtcp_listen(e, &srv, 128) >= 0);
    connected = accepted = failed = 0;
    int seq_enomem = 0;
    for (int i = 0; i < 5; i++) {
        int64_t x = mtcp_connect(e, now, &srv, NULL);
        if (x == -ENOMEM) { seq_enomem++; continue; }
        pump(e, &now, &connected, &accepted, &failed, NULL);
    }
    CHECK_EQ(connected, 3);
    CHECK_EQ(accepted, 3);
    CHECK_EQ(seq_enomem, 2);
    mtcp_engine_free(e);
}

int main(void) {
    RUN(test_closed_port_burst);
    RUN(test_syn_flood_legit);
    RUN(test_neigh_spoof);
    RUN(test_old_ack_no_state);
    RUN(test_admission_remote);
    RUN(test_admission_self);
    CTEST_END();
}
