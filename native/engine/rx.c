/*
 * rx.c — input demux: one RX batch from the link, each frame to the layer it belongs to.
 *
 *   eng_rx_batch -> eng_rx_frame (each RX slot) -> eth -> eng_arp_input | ip4_rx | ip6_rx
 *     ip*_rx -> icmp4/6_input | tcp_rx -> eng_conn_lookup -> tcp_input
 *                                      | eng_listener_lookup -> eng_listen_input
 *                                      | RST (tcp_rst_for)
 * Malformed frames are counted (counters.h) and dropped.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

/* ------------------------------------------------------------------ RX */

static void tcp_rx(struct mtcp_engine *e, int family, const uint8_t *src, const uint8_t *dst,
                   const uint8_t *seg, uint32_t len) {
    if (!(e->rx_flags & (LINK_SLOT_F_CSUM_VALID | LINK_SLOT_F_CSUM_PARTIAL))) {
        uint32_t ps = family == MTCP_AF_INET ? wire_pseudo4(src, dst, WIRE_PROTO_TCP, len)
                                             : wire_pseudo6(src, dst, WIRE_PROTO_TCP, len);
        if (!wire_tcp_csum_ok(seg, len, ps)) { e->counters[CTR_DROP_BAD_CSUM]++; return; }
    }
    struct wire_tcp t;
    int rc = wire_tcp_parse(seg, len, &t);
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    e->counters[CTR_SEGS_IN]++;
    struct conn *k = eng_conn_lookup(e, family, dst, t.dport, src, t.sport);
    struct conn *l = NULL;
    if (k) {
        /* RFC 6191 / RFC 1122 4.2.2.13: a clearly newer SYN for a TIME-WAIT connection of a
         * listener's port starts a new incarnation (as Linux does) instead of a challenge ACK */
        if (k->tcp.state == MTCP_ST_TIME_WAIT && (t.flags & (WIRE_TCP_SYN | WIRE_TCP_ACK | WIRE_TCP_RST)) == WIRE_TCP_SYN &&
            (l = eng_listener_lookup(e, family, dst, t.dport)) != NULL &&
            tcp_timewait_reuse(&e->env, &k->tcp, e->now, &t)) {
            eng_listen_input(e, l, family, dst, src, &t);
            return;
        }
        tcp_input(&e->env, &k->tcp, e->now, &t);
        return;
    }
    l = eng_listener_lookup(e, family, dst, t.dport);
    if (l) { eng_listen_input(e, l, family, dst, src, &t); return; }
    e->counters[CTR_DROP_NO_LISTENER]++;
    struct wire_tcp rst;
    if (tcp_rst_for(&t, &rst)) eng_ctrl_tcp(e, family, dst, src, &rst, NULL);
}

static void ip4_rx(struct mtcp_engine *e, const uint8_t *p, uint32_t len) {
    struct wire_ipv4 ip;
    int rc = wire_ipv4_parse(p, len, &ip);
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    if (!eng_is_local(e, MTCP_AF_INET, ip.dst)) { e->counters[CTR_DROP_NOT_FOR_US]++; return; }
    if (ip.src[0] >= 224 || eng_addr_zero(ip.src, 4)) { e->counters[CTR_DROP_BAD_ADDR]++; return; }
    switch (ip.proto) {
    case WIRE_PROTO_TCP: tcp_rx(e, MTCP_AF_INET, ip.src, ip.dst, ip.payload, ip.payload_len); break;
    case WIRE_PROTO_ICMP: eng_icmp4_input(e, &ip); break;
    default: e->counters[CTR_DROP_UNSUPPORTED]++; break;
    }
}

static void ip6_rx(struct mtcp_engine *e, const uint8_t *p, uint32_t len) {
    struct wire_ipv6 ip;
    int rc = wire_ipv6_parse(p, len, &ip);
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    int local = eng_is_local(e, MTCP_AF_INET6, ip.dst);
    if (ip.next == WIRE_PROTO_ICMPV6) {
        if (!local && !(ip.dst[0] == 0xff && ip.dst[1] == 0x02)) { e->counters[CTR_DROP_NOT_FOR_US]++; return; }
        eng_icmp6_input(e, &ip);
        return;
    }
    if (!local) { e->counters[CTR_DROP_NOT_FOR_US]++; return; }
    if (ip.src[0] == 0xff || eng_addr_zero(ip.src, 16)) { e->counters[CTR_DROP_BAD_ADDR]++; return; }
    if (ip.next == WIRE_PROTO_TCP) tcp_rx(e, MTCP_AF_INET6, ip.src, ip.dst, ip.payload, ip.upper_len);
    else e->counters[CTR_DROP_UNSUPPORTED]++;
}

void eng_rx_frame(struct mtcp_engine *e, const uint8_t *p, uint32_t len, uint16_t flags) {
    e->counters[CTR_FRAMES_IN]++;
    e->rx_flags = flags;
    e->rx_smac = NULL;
    if (e->l2len) {
        struct wire_eth eth;
        int rc = wire_eth_parse(p, len, &eth);
        if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
        int ours = memcmp(eth.dst, e->cfg.mac, 6) == 0 ||
                   (eth.dst[0] == 0xff && eth.dst[1] == 0xff && eth.dst[2] == 0xff && eth.dst[3] == 0xff &&
                    eth.dst[4] == 0xff && eth.dst[5] == 0xff) ||
                   (eth.dst[0] == 0x33 && eth.dst[1] == 0x33);
        if (!ours) { e->counters[CTR_DROP_NOT_FOR_US]++; return; }
        e->rx_smac = p + 6;
        p += WIRE_ETH_HLEN;
        len -= WIRE_ETH_HLEN;
        switch (eth.ethertype) {
        case WIRE_ETHERTYPE_ARP: eng_arp_input(e, p, len); break;
        case WIRE_ETHERTYPE_IPV4: ip4_rx(e, p, len); break;
        case WIRE_ETHERTYPE_IPV6: ip6_rx(e, p, len); break;
        default: e->counters[CTR_DROP_UNSUPPORTED]++; break;
        }
    } else {
        if (len < 1) { e->counters[CTR_DROP_TRUNCATED]++; return; }
        switch (p[0] >> 4) {
        case 4: ip4_rx(e, p, len); break;
        case 6: ip6_rx(e, p, len); break;
        default: e->counters[CTR_DROP_BAD_VERSION]++; break;
        }
    }
    e->rx_smac = NULL;
    e->rx_flags = 0;
}

/* One RX batch from the link: every received frame through TCP. Returns frames taken. */
uint32_t eng_rx_batch(struct mtcp_engine *e, struct mtcp_link *l) {
    link_rxsync(l, e->now);
    struct link_ring *rx = &l->rx;
    uint32_t n = 0;
    while (rx->head != rx->tail) {
        struct link_slot *s = &rx->slot[rx->head];
        eng_rx_frame(e, s->buf, s->len, s->flags);
        rx->head = link_ring_next(rx, rx->head);
        n++;
        if ((n & 63) == 0) eng_reap(e);
        if (e->ctrlq.n >= CTRLQ_FLUSH) eng_ctrl_flush(e);   /* control replies never wait for a slot */
    }
    rx->cur = rx->head;
    eng_reap(e);
    return n;
}
