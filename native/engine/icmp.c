/*
 * icmp.c — ICMPv4 / ICMPv6: answer echo requests to our addresses, act on "fragmentation
 * needed" (RFC 1191) and "packet too big" (RFC 8201) by lowering the MSS of the connection the
 * quoted segment belongs to (only if the quoted sequence number lies in its unacknowledged
 * space, RFC 5927 4.1), and hand NDP to neigh.c.
 */
#include <string.h>
#include "engine.h"

static void pmtu(struct mtcp_engine *e, int family, const uint8_t *lip, const uint8_t *rip,
                 uint16_t lport, uint16_t rport, uint32_t seq, uint32_t mtu) {
    struct conn *k = eng_conn_lookup(e, family, lip, lport, rip, rport);
    if (!k || k->kind != CK_CONN) { e->counters[CTR_ICMP_PMTU_IGNORED]++; return; }
    struct tcp_conn *c = &k->tcp;
    if (!(seq_ge(seq, c->snd_una) && seq_lt(seq, c->snd_max)) && !(seq == c->snd_una && c->snd_una == c->snd_max)) {
        e->counters[CTR_ICMP_PMTU_IGNORED]++;
        return;
    }
    uint32_t hdr = family == MTCP_AF_INET ? 40 : 60;
    uint32_t min = family == MTCP_AF_INET ? 552 : 1280;
    if (mtu < min) mtu = min;
    if (mtu > e->mtu) mtu = e->mtu;
    uint16_t mss = (uint16_t)(mtu - hdr);
    if (mss >= c->mss) { e->counters[CTR_ICMP_PMTU_IGNORED]++; return; }
    tcp_pmtu(&e->env, c, e->now, mss);
    e->counters[CTR_ICMP_PMTU]++;
}

void eng_icmp4_input(struct mtcp_engine *e, const struct wire_ipv4 *ip) {
    struct wire_icmp4 m;
    e->counters[CTR_ICMP_IN]++;
    int rc = wire_icmp4_parse(ip->payload, ip->payload_len, &m);
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    if (m.type == WIRE_ICMP4_ECHO_REQUEST && m.code == 0) {
        if (!eng_tb_take(&e->tb_icmp, e->now, e->cfg.icmp_ratelimit, e->cfg.icmp_burst)) {
            e->counters[CTR_ICMP_RATELIMITED]++;
            return;
        }
        uint8_t *l4;
        uint32_t cap;
        uint32_t f = eng_ctrl_begin(e, MTCP_AF_INET, &l4, &cap);
        if (f == NONE32) { e->counters[CTR_ICMP_UNSENT]++; return; }
        e->frames[f].kind = FK_ICMP;
        struct wire_icmp4 r = m;
        r.type = WIRE_ICMP4_ECHO_REPLY;
        r.code = 0;
        size_t l = wire_icmp4_emit(l4, cap, &r);
        if (!l) { eng_frame_drop(e, f); e->counters[CTR_DROP_TX_TOO_BIG]++; return; }
        /* to the MAC ARP knows for the source, never to the frame's source MAC */
        eng_ctrl_commit(e, f, MTCP_AF_INET, ip->dst, ip->src, WIRE_PROTO_ICMP, (uint32_t)l, NULL, 64);
        return;
    }
    if (m.type == WIRE_ICMP4_DEST_UNREACH && m.code == 4) {
        const uint8_t *d = m.data;
        if (m.data_len < 28 || (d[0] >> 4) != 4) { e->counters[CTR_DROP_TRUNCATED]++; return; }
        uint32_t ihl = (uint32_t)(d[0] & 0xf) * 4;
        if (ihl < 20 || m.data_len < ihl + 8 || d[9] != WIRE_PROTO_TCP) { e->counters[CTR_ICMP_PMTU_IGNORED]++; return; }
        uint32_t mtu = m.next_mtu;
        if (mtu < 68) { e->counters[CTR_ICMP_PMTU_IGNORED]++; return; }
        pmtu(e, MTCP_AF_INET, d + 12, d + 16, wire_get16(d + ihl), wire_get16(d + ihl + 2),
             wire_get32(d + ihl + 4), mtu);
        return;
    }
    /* other ICMP (replies, unreachables other than frag-needed, ...): counted, ignored */
}

void eng_icmp6_input(struct mtcp_engine *e, const struct wire_ipv6 *ip) {
    struct wire_icmp6 m;
    e->counters[CTR_ICMP_IN]++;
    int rc = wire_icmp6_parse(ip->payload, ip->upper_len, ip->src, ip->dst, &m);
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    switch (m.type) {
    case WIRE_ICMP6_NEIGH_SOLICIT:
    case WIRE_ICMP6_NEIGH_ADVERT:
        eng_ndp_input(e, ip, &m);
        return;
    case WIRE_ICMP6_ECHO_REQUEST: {
        if (!eng_is_local(e, MTCP_AF_INET6, ip->dst)) return;     /* no answers to multicast pings */
        if (!eng_tb_take(&e->tb_icmp, e->now, e->cfg.icmp_ratelimit, e->cfg.icmp_burst)) {
            e->counters[CTR_ICMP_RATELIMITED]++;
            return;
        }
        uint8_t *l4;
        uint32_t cap;
        uint32_t f = eng_ctrl_begin(e, MTCP_AF_INET6, &l4, &cap);
        if (f == NONE32) { e->counters[CTR_ICMP_UNSENT]++; return; }
        e->frames[f].kind = FK_ICMP;
        struct wire_icmp6 r;
        memset(&r, 0, sizeof r);
        r.type = WIRE_ICMP6_ECHO_REPLY;
        r.id = m.id;
        r.seq = m.seq;
        r.data = m.data;
        r.data_len = m.data_len;
        size_t l = wire_icmp6_emit(l4, cap, ip->dst, ip->src, &r);
        if (!l) { eng_frame_drop(e, f); e->counters[CTR_DROP_TX_TOO_BIG]++; return; }
        eng_ctrl_commit(e, f, MTCP_AF_INET6, ip->dst, ip->src, WIRE_PROTO_ICMPV6, (uint32_t)l, NULL, 64);
        return;
    }
    case WIRE_ICMP6_PACKET_TOO_BIG: {
        const uint8_t *d = m.data;
        if (m.data_len < 48 || (d[0] >> 4) != 6) { e->counters[CTR_DROP_TRUNCATED]++; return; }
        if (d[6] != WIRE_PROTO_TCP) { e->counters[CTR_ICMP_PMTU_IGNORED]++; return; }
        pmtu(e, MTCP_AF_INET6, d + 8, d + 24, wire_get16(d + 40), wire_get16(d + 42), wire_get32(d + 44), m.mtu);
        return;
    }
    default:
        return;
    }
}
