/* bench_synflood.c — the engine alone under a spoofed SYN flood: 1000-SYN RX batches from random
 * on-link sources and MACs (listener with a 256-entry SYN queue, SYN cookies on overflow, every
 * source unresolved: replies wait for ARP or are counted unsent) over the in-memory link, one
 * core, C only. Prints SYNs per second of engine time (mtcp_engine_poll only; building and
 * injecting the frames is not counted).   make -C native bench-synflood */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "mtcp.h"
#include "wire/wire.h"
#include "io/link.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint32_t syn_frame(uint8_t *b, const uint8_t *smac, const uint8_t *sip, const uint8_t *dmac,
                          const uint8_t *dip, uint16_t sport, uint32_t seq) {
    struct wire_eth eth;
    memcpy(eth.dst, dmac, 6);
    memcpy(eth.src, smac, 6);
    eth.ethertype = WIRE_ETHERTYPE_IPV4;
    wire_eth_emit(b, 14, &eth);
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = sport;
    t.dport = 80;
    t.seq = seq;
    t.flags = WIRE_TCP_SYN;
    t.win = 65535;
    t.has_mss = 1;
    t.mss = 1460;
    uint32_t hl = (uint32_t)wire_tcp_emit(b + 34, 60, &t);
    wire_tcp_csum_fill(b + 34, hl, wire_pseudo4(sip, dip, WIRE_PROTO_TCP, hl));
    struct wire_ipv4 ip;
    memset(&ip, 0, sizeof ip);
    ip.total_len = (uint16_t)(20 + hl);
    ip.ttl = 64;
    ip.proto = WIRE_PROTO_TCP;
    ip.frag = 0x4000;
    memcpy(ip.src, sip, 4);
    memcpy(ip.dst, dip, 4);
    wire_ipv4_emit(b + 14, 20, &ip);
    return 34 + hl;
}

int main(void) {
    static const uint8_t MAC_E[6] = {2, 0, 0, 0, 0, 1}, IP_E[4] = {198, 18, 0, 1};
    struct mtcp_config c;
    mtcp_config_default(&c);
    c.max_conns = 4096;
    c.syn_backlog = 256;
    c.seed = 7;
    memcpy(c.mac, MAC_E, 6);
    memcpy(c.ipv4, IP_E, 4);
    c.ipv4_prefix = 24;
    mtcp_link *la, *lb;
    if (mtcp_simlink_pair(2048, 1500, &la, &lb) < 0) return 1;
    char err[128];
    mtcp_engine *e = mtcp_engine_new(&c, la, err, sizeof err);
    if (!e) { fprintf(stderr, "%s\n", err); return 1; }
    struct mtcp_addr any = {.family = MTCP_AF_INET, .port = 80};
    mtcp_listen(e, &any, 4096);
    static uint8_t pre[1000][128];
    static uint32_t plen[1000];
    uint64_t now = 1000, rnd = 1, n = 0;
    double engine = 0;
    for (int b = 0; b < 1000; b++) {
        for (int i = 0; i < 1000; i++) {
            rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t sip[4] = {198, 18, 0, (uint8_t)(3 + (rnd >> 33) % 250)};
            uint8_t smac[6] = {2, (uint8_t)(rnd >> 40), (uint8_t)(rnd >> 48), 1, 1, 1};
            plen[i] = syn_frame(pre[i], smac, sip, MAC_E, IP_E, (uint16_t)(rnd >> 20), (uint32_t)(rnd >> 8));
        }
        struct link_ring *tx = &lb->tx;
        for (int i = 0; i < 1000; i++) {
            struct link_slot *s = &tx->slot[tx->head];
            memcpy(s->buf, pre[i], plen[i]);
            s->len = plen[i];
            s->flags = 0;
            tx->head = tx->cur = link_ring_next(tx, tx->head);
        }
        link_txsync(lb, now);
        double t0 = now_s();
        mtcp_engine_poll(e, now);
        engine += now_s() - t0;
        n += 1000;
        link_rxsync(lb, now);                      /* the replies (ARP requests): taken and dropped */
        lb->rx.head = lb->rx.cur = lb->rx.tail;
        now += 2000;                               /* 500k SYN/s of virtual time */
    }
    uint64_t ctr[256];
    uint32_t nc = mtcp_counter_count();
    mtcp_engine_counters(e, ctr, nc < 256 ? nc : 256);
    printf("%llu spoofed SYNs in %.3f s of engine time: %.2f M SYN/s, %.3f us per SYN\n",
           (unsigned long long)n, engine, (double)n / engine / 1e6, engine / (double)n * 1e6);
    for (uint32_t i = 0; i < nc && i < 256; i++) {
        const char *name = mtcp_counter_name(i);
        if (ctr[i] && (strstr(name, "syncookies") || strstr(name, "arp_requests") || strstr(name, "passive_opens") ||
                       strstr(name, "drop_ctrl_queue") || strstr(name, "solicit")))
            printf("  %-24s %llu\n", name, (unsigned long long)ctr[i]);
    }
    mtcp_engine_free(e);
    mtcp_link_close(la);
    mtcp_link_close(lb);
    return 0;
}
