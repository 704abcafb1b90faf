/*
 * tx.c — the output side of one engine: the frame pool (eng_frame_get/put/drop), the control
 * queue (RSTs, SYN-cookie SYN-ACKs, ICMP, ARP/NDP frames built by eng_ctrl_begin/commit/tcp, sent
 * before any connection's data) and the output pass.
 *
 *   eng_output_pass: eng_ctrl_out (control queue -> TX ring or output queue) ->
 *     each connection marked want_output -> tcp_output -> tcp_env tx_begin/tx_commit (tcp_env.c)
 *   eng_wake_starved: WRITABLE for connections that were short of pool chunks
 */
#include <errno.h>
#include <string.h>
#include "engine.h"


uint32_t eng_frame_get(struct mtcp_engine *e) {
    uint32_t f = e->ffree;
    if (f == NONE32) return NONE32;
    e->ffree = e->frames[f].next;
    e->frames[f].next = NONE32;
    e->frames[f].len = 0;
    e->frames[f].kind = FK_OTHER;
    return f;
}

void eng_frame_put(struct mtcp_engine *e, uint32_t f) {
    e->frames[f].next = e->ffree;
    e->ffree = f;
}

void eng_frame_drop(struct mtcp_engine *e, uint32_t f) {
    switch (e->frames[f].kind) {
    case FK_COOKIE: e->counters[CTR_SYNCOOKIES_UNSENT]++; break;
    case FK_RST: e->counters[CTR_RST_UNSENT]++; break;
    case FK_ICMP: e->counters[CTR_ICMP_UNSENT]++; break;
    default: break;
    }
    eng_frame_put(e, f);
}

/* a control frame reached the wire (TX ring or output queue) */
static void frame_sent(struct mtcp_engine *e, uint32_t f) {
    switch (e->frames[f].kind) {
    case FK_COOKIE: e->counters[CTR_SYNCOOKIES_SENT]++; e->counters[CTR_SEGS_OUT]++; break;
    case FK_RST: e->counters[CTR_RST_OUT]++; e->counters[CTR_SEGS_OUT]++; break;
    case FK_ICMP: e->counters[CTR_ICMP_ECHO_ANSWERED]++; break;
    default: break;
    }
    e->counters[CTR_FRAMES_OUT]++;
}

void eng_ctrl_push(struct mtcp_engine *e, uint32_t f) { eng_fifo_push(e, &e->ctrlq, f); }

/* Write IP header (+ Ethernet header when dmac != NULL) in front of an l4 payload at
 * buf + l2len + iphl. Returns the frame length. */
uint32_t eng_write_headers(struct mtcp_engine *e, uint8_t *buf, int family, const uint8_t *src,
                              const uint8_t *dst, uint8_t proto, uint32_t l4len, const uint8_t *dmac,
                              uint8_t hop) {
    uint8_t *ip = buf + e->l2len;
    uint32_t iphl;
    if (family == MTCP_AF_INET) {
        struct wire_ipv4 h;
        memset(&h, 0, sizeof h);
        h.total_len = (uint16_t)(20 + l4len);
        h.id = e->ip_id++;
        h.frag = 0x4000;
        h.ttl = hop;
        h.proto = proto;
        memcpy(h.src, src, 4);
        memcpy(h.dst, dst, 4);
        wire_ipv4_emit(ip, 20, &h);
        iphl = 20;
    } else {
        struct wire_ipv6 h;
        memset(&h, 0, sizeof h);
        h.payload_len = (uint16_t)l4len;
        h.next = proto;
        h.hop_limit = hop;
        memcpy(h.src, src, 16);
        memcpy(h.dst, dst, 16);
        wire_ipv6_emit(ip, 40, &h);
        iphl = 40;
    }
    if (e->l2len) {
        struct wire_eth eth;
        if (dmac) memcpy(eth.dst, dmac, 6); else memset(eth.dst, 0, 6);
        memcpy(eth.src, e->cfg.mac, 6);
        eth.ethertype = family == MTCP_AF_INET ? WIRE_ETHERTYPE_IPV4 : WIRE_ETHERTYPE_IPV6;
        wire_eth_emit(buf, WIRE_ETH_HLEN, &eth);
    }
    return e->l2len + iphl + l4len;
}



uint32_t eng_ctrl_begin(struct mtcp_engine *e, int family, uint8_t **l4, uint32_t *cap) {
    eng_ctrl_room(e);
    uint32_t f = e->ctrlq.n < CTRLQ_MAX ? eng_frame_get(e) : NONE32;
    if (f == NONE32) { e->counters[CTR_DROP_CTRL_QUEUE]++; return NONE32; }
    e->frames[f].kind = FK_OTHER;
    uint32_t hl = e->l2len + eng_iphl_of(family);
    *l4 = e->frames[f].buf + hl;
    *cap = e->fsize - hl;
    return f;
}

void eng_ctrl_commit(struct mtcp_engine *e, uint32_t f, int family, const uint8_t *src, const uint8_t *dst,
                 uint8_t proto, uint32_t l4len, const uint8_t *dmac, uint8_t hop_limit) {
    uint32_t ni = NONE32;
    uint8_t mac[6];
    if (e->l2len && !dmac) {
        uint8_t nh[16];
        if (eng_route_nexthop(e, family, dst, nh) < 0 || (ni = eng_neigh_resolve_weak(e, family, nh)) == NONE32 ||
            e->neigh.ent[ni].state == NS_FAILED) {
            eng_frame_drop(e, f);
            e->counters[CTR_DROP_NEIGH_QUEUE]++;
            return;
        }
        if (e->neigh.ent[ni].state == NS_REACHABLE) { memcpy(mac, e->neigh.ent[ni].mac, 6); dmac = mac; ni = NONE32; }
    }
    e->frames[f].len = eng_write_headers(e, e->frames[f].buf, family, src, dst, proto, l4len, dmac, hop_limit);
    if (ni != NONE32) eng_neigh_enqueue(e, ni, f);
    else eng_ctrl_push(e, f);
}

void eng_ctrl_tcp(struct mtcp_engine *e, int family, const uint8_t *src, const uint8_t *dst,
              const struct wire_tcp *t, const uint8_t *dmac) {
    uint8_t kind = (t->flags & WIRE_TCP_RST) ? FK_RST : FK_COOKIE;
    if (kind == FK_RST && !eng_tb_take(&e->tb_rst, e->now, e->cfg.rst_ratelimit, e->cfg.rst_burst)) {
        e->counters[CTR_RST_RATELIMITED]++;
        return;
    }
    uint8_t *l4;
    uint32_t cap;
    uint32_t f = eng_ctrl_begin(e, family, &l4, &cap);
    if (f == NONE32) {
        e->counters[kind == FK_RST ? CTR_RST_UNSENT : CTR_SYNCOOKIES_UNSENT]++;
        return;
    }
    e->frames[f].kind = kind;
    size_t hl = wire_tcp_emit(l4, cap, t);
    if (!hl) { eng_frame_drop(e, f); return; }
    uint32_t ps = family == MTCP_AF_INET ? wire_pseudo4(src, dst, WIRE_PROTO_TCP, (uint32_t)hl)
                                         : wire_pseudo6(src, dst, WIRE_PROTO_TCP, (uint32_t)hl);
    wire_tcp_csum_fill(l4, hl, ps);
    eng_ctrl_commit(e, f, family, src, dst, WIRE_PROTO_TCP, (uint32_t)hl, dmac, 64);
}


/* Control frames -> TX ring / output queue. Returns frames moved; sets tx_full when it stopped
 * for lack of room. */
uint32_t eng_ctrl_out(struct mtcp_engine *e) {
    uint32_t moved = 0;
    while (e->ctrlq.n) {
        uint32_t f = e->ctrlq.head;
        if (e->link) {
            struct link_ring *r = &e->link->tx;
            if (link_ring_space(r) == 0) { e->tx_full = 1; e->counters[CTR_TX_RING_FULL]++; break; }
            eng_fifo_pop(e, &e->ctrlq);
            if (e->frames[f].len > r->buf_size) { e->counters[CTR_DROP_TX_TOO_BIG]++; eng_frame_drop(e, f); continue; }
            struct link_slot *s = &r->slot[r->head];
            memcpy(s->buf, e->frames[f].buf, e->frames[f].len);
            s->len = e->frames[f].len;
            s->flags = 0;
            s->gso_size = 0;
            s->csum_start = s->csum_offset = 0;
            r->head = r->cur = link_ring_next(r, r->head);
            frame_sent(e, f);
            eng_frame_put(e, f);
        } else {
            if (e->outq.n >= OUTQ_MAX) { e->tx_full = 1; break; }
            eng_fifo_pop(e, &e->ctrlq);
            frame_sent(e, f);
            eng_fifo_push(e, &e->outq, f);
        }
        moved++;
    }
    return moved;
}

/* Send the queued control frames now, not at the output pass: in the middle of an RX batch (a
 * SYN flood's replies) and whenever a control frame finds the queue full (a timer tick's burst of
 * ARP requests). No TX slot is held by a connection at these points. */
void eng_ctrl_flush(struct mtcp_engine *e) {
    uint8_t full = e->tx_full;
    e->counters[CTR_CTRL_FLUSHES]++;
    e->tx_full = 0;
    eng_ctrl_out(e);
    if (e->ctrlq.n && e->link) {
        link_txsync(e->link, e->now);      /* TX ring full: hand it to the device, once */
        e->tx_full = 0;
        eng_ctrl_out(e);
    }
    e->tx_full = full;
}

void eng_ctrl_room(struct mtcp_engine *e) {
    if (e->ctrlq.n >= CTRLQ_MAX) eng_ctrl_flush(e);
}

/* Returns frames moved into the TX ring / output queue. */
uint32_t eng_output_pass(struct mtcp_engine *e) {
    uint32_t moved = 0;
    e->tx_full = 0;
    /* control frames first */
    moved += eng_ctrl_out(e);
    /* connections that want output: exactly those listed now (conns marked again during the
     * pass are appended behind them and wait for the next pass) */
    for (uint32_t todo = e->out_n; todo && e->out_head != NONE32 && !e->tx_full; todo--) {
        struct conn *k = &e->conns[e->out_head];
        eng_out_del(e, k);
        if (k->kind != CK_CONN || (k->eflags & CF_ZOMBIE)) continue;
        uint64_t before = e->counters[CTR_FRAMES_OUT];
        e->tx_nulled = 0;
        tcp_output(&e->env, &k->tcp, e->now);
        eng_tx_release(e);
        moved += (uint32_t)(e->counters[CTR_FRAMES_OUT] - before);
        if (e->tx_nulled && !(k->eflags & (CF_ZOMBIE | CF_OUTPUT))) {
            /* TX full: keep it first in line for the next pass */
            eng_out_add(e, k);
            if (e->out_head != conn_idx(e, k)) {
                eng_out_del(e, k);
                uint32_t idx = conn_idx(e, k);
                k->eflags |= CF_OUTPUT;
                k->oprev = NONE32;
                k->onext = e->out_head;
                e->conns[e->out_head].oprev = idx;
                e->out_head = idx;
                e->out_n++;
            }
        }
    }
    eng_reap(e);
    return moved;
}

/* A starved connection that can still take data (tcp_send's accepting states, no FIN queued). */
static int starved_can_send(const struct conn *k) {
    const struct tcp_conn *c = &k->tcp;
    if (k->kind != CK_CONN || (k->eflags & (CF_DETACHED | CF_HIDDEN | CF_ZOMBIE))) return 0;
    if (!(c->flags & TCPF_WANT_WRITABLE) || (c->flags & TCPF_FIN_QUEUED) || c->snd.len >= c->sndbuf) return 0;
    return c->state == MTCP_ST_SYN_SENT || c->state == MTCP_ST_SYN_RECEIVED ||
           c->state == MTCP_ST_ESTABLISHED || c->state == MTCP_ST_CLOSE_WAIT;
}

/* Give WRITABLE to connections starved by the chunk pool once chunks are free again. */
void eng_wake_starved(struct mtcp_engine *e) {
    if ((!e->starved_n && !e->starved_overflow) || e->pool.nfree <= buf_pool_reserve(&e->pool)) return;
    if (e->starved_overflow) {
        for (uint32_t i = 0; i < e->nconns; i++) {
            struct conn *k = &e->conns[i];
            if (starved_can_send(k)) {
                k->tcp.flags &= (uint16_t)~TCPF_WANT_WRITABLE;
                eng_env_event(e, &k->tcp, MTCP_EV_WRITABLE, 0, 0);
            }
        }
    } else {
        for (uint32_t i = 0; i < e->starved_n; i++) {
            struct conn *k = eng_conn_get(e, e->starved[i]);
            if (k && starved_can_send(k)) {
                k->tcp.flags &= (uint16_t)~TCPF_WANT_WRITABLE;
                eng_env_event(e, &k->tcp, MTCP_EV_WRITABLE, 0, 0);
            }
        }
    }
    e->starved_n = 0;
    e->starved_overflow = 0;
}
