/*
 * engine.c — one engine per core: configuration, pools, the batched data path
 * (RX batch -> TCP -> timers -> one output pass -> TX batch), the tcp_env callbacks, the
 * event queue and the public connection API of mtcp.h.
 *
 *   mtcp_engine_poll(now)
 *     rxsync -> rx_frame (each RX slot) -> eth -> eng_arp_input | ip4_rx | ip6_rx
 *                 ip*_rx -> icmp4/6_input | tcp_rx -> eng_conn_lookup -> tcp_input
 *                                                   | eng_listener_lookup -> eng_listen_input
 *                                                   | RST (tcp_rst_for)
 *     eng_wheel_advance -> tcp_timer; eng_neigh_tick
 *     output_pass: control queue -> TX; conns marked want_output -> tcp_output -> tx_begin/commit
 *     txsync
 *     (IP links: repeat up to LOOP_ROUNDS while frames moved, so a loopback handshake
 *      completes inside one poll)
 *   mtcp_engine_poll_rx(now): rxsync + rx_frame + timers only; the layer above dispatches the
 *     events, then mtcp_engine_poll_tx (output pass + txsync, more rounds on IP links while
 *     frames move) sends replies together with the ACKs
 *
 * Connection lifecycle (engine side):
 *   alloc -> hashed -> [TCP] -> env->closed: unhashed; freed now if the app released the cid
 *   (CF_DETACHED) or never saw it (CF_HIDDEN), else kept (CF_CLOSED) until mtcp_close.
 *   Freeing is deferred to eng_reap (a "zombie" list) so TCP code never sees a reused block.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "engine.h"

#define LOOP_ROUNDS 8
#define TXK_NONE 0
#define TXK_LINK 1
#define TXK_OUTQ 2
#define TXK_NEIGH 3
#define TXK_SCRATCH 4

static void resv_release(struct mtcp_engine *e, struct conn *k);

/* ------------------------------------------------------------------ config */

void mtcp_config_default(struct mtcp_config *c) {
    memset(c, 0, sizeof *c);
    c->max_conns = 16384;
    c->chunk_size = 2048;
    c->max_chunks = 32768;
    c->sndbuf = 262144;
    c->rcvbuf = 262144;
    c->max_events = 65536;
    c->initial_rto_us = 1000000;
    c->min_rto_us = 200000;
    c->max_rto_us = 60000000;
    c->max_retries = 15;
    c->syn_retries = 6;
    c->synack_retries = 5;
    c->msl_us = 30000000;
    c->fin_timeout_us = 60000000;             /* Linux tcp_fin_timeout */
    c->max_rack = c->max_conns / 4 < 16 ? 16 : c->max_conns / 4 > 4096 ? 4096 : c->max_conns / 4;
    c->delack_us = 40000;
    c->syn_backlog = 1024;
    c->initial_cwnd = 10;
    c->keepalive_idle_us = 7200000000ull;     /* Linux tcp_keepalive_time */
    c->keepalive_intvl_us = 75000000;
    c->keepalive_cnt = 9;
    c->challenge_ack_limit = 1000;
    c->cc = MTCP_CC_CUBIC;
    c->sack = 1;
    c->timestamps = 1;
    c->window_scaling = 1;
    c->syncookies = MTCP_SYNCOOKIES_ON_OVERFLOW;
    c->nodelay_default = 0;
    c->seed = 0;
    c->link_type = MTCP_LINK_ETHERNET;
    c->mtu = 1500;
    static const uint8_t mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    memcpy(c->mac, mac, 6);
    c->ipv4_prefix = 24;
    c->ipv6_prefix = 64;
    c->eph_port_lo = 32768;
    c->eph_port_hi = 60999;
    c->neigh_timeout_us = 60000000;
    c->rst_ratelimit = 10000;
    c->rst_burst = 1000;
    c->icmp_ratelimit = 1000;                 /* Linux icmp_msgs_per_sec / icmp_msgs_burst */
    c->icmp_burst = 50;
    c->invalid_ratelimit_ms = 500;            /* Linux tcp_invalid_ratelimit */
    c->solicit_ratelimit = 100;
}

static int bad(char *err, size_t errlen, const char *field, const char *why) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", field, why);
    return -EINVAL;
}

static int zero(const uint8_t *a, int n) {
    for (int i = 0; i < n; i++) if (a[i]) return 0;
    return 1;
}

static int validate(const struct mtcp_config *c, const struct mtcp_link *l, char *err, size_t el) {
    if (c->max_conns < 1 || c->max_conns > (1u << 26)) return bad(err, el, "max_conns", "must be in [1, 2^26]");
    if (c->chunk_size < 256 || c->chunk_size > 65536) return bad(err, el, "chunk_size", "must be in [256, 65536]");
    if (c->max_chunks < 4) return bad(err, el, "max_chunks", "must be >= 4");
    if ((uint64_t)c->max_chunks * c->chunk_size > (1ull << 36)) return bad(err, el, "max_chunks", "pool larger than 64 GiB");
    if (c->sndbuf < 1024 || c->sndbuf > (1u << 30)) return bad(err, el, "sndbuf", "must be in [1024, 2^30]");
    if (c->rcvbuf < 1024 || c->rcvbuf > (1u << 30)) return bad(err, el, "rcvbuf", "must be in [1024, 2^30]");
    if (c->max_events < 16) return bad(err, el, "max_events", "must be >= 16");
    if (c->min_rto_us < 1000) return bad(err, el, "min_rto_us", "must be >= 1000");
    if (c->max_rto_us < c->min_rto_us) return bad(err, el, "max_rto_us", "must be >= min_rto_us");
    if (c->initial_rto_us < c->min_rto_us || c->initial_rto_us > c->max_rto_us)
        return bad(err, el, "initial_rto_us", "must be in [min_rto_us, max_rto_us]");
    if (c->max_retries < 1 || c->max_retries > 255) return bad(err, el, "max_retries", "must be in [1, 255]");
    if (c->syn_retries < 1 || c->syn_retries > 255) return bad(err, el, "syn_retries", "must be in [1, 255]");
    if (c->synack_retries < 1 || c->synack_retries > 255) return bad(err, el, "synack_retries", "must be in [1, 255]");
    if (c->msl_us > 600000000u) return bad(err, el, "msl_us", "must be <= 600 s");
    if (c->fin_timeout_us > 600000000u) return bad(err, el, "fin_timeout_us", "must be <= 600 s");
    if (c->max_rack > (1u << 20)) return bad(err, el, "max_rack", "must be <= 2^20");
    if (c->delack_us > 40000) return bad(err, el, "delack_us", "must be <= 40000 (40 ms)");
    if (c->syn_backlog < 1) return bad(err, el, "syn_backlog", "must be >= 1");
    if (c->initial_cwnd < 1 || c->initial_cwnd > 1000) return bad(err, el, "initial_cwnd", "must be in [1, 1000]");
    if (c->keepalive_idle_us < 1000000 || c->keepalive_idle_us > TCP_KEEPALIVE_MAX_US)
        return bad(err, el, "keepalive_idle_us", "must be in [1 s, 32767 s]");
    if (c->keepalive_intvl_us < 1000000 || c->keepalive_intvl_us > TCP_KEEPALIVE_MAX_US)
        return bad(err, el, "keepalive_intvl_us", "must be in [1 s, 32767 s]");
    if (c->keepalive_cnt < 1 || c->keepalive_cnt > 255) return bad(err, el, "keepalive_cnt", "must be in [1, 255]");
    if (c->cc != MTCP_CC_CUBIC && c->cc != MTCP_CC_RENO) return bad(err, el, "cc", "must be MTCP_CC_CUBIC or MTCP_CC_RENO");
    if (c->sack > 1) return bad(err, el, "sack", "must be 0 or 1");
    if (c->timestamps > 1) return bad(err, el, "timestamps", "must be 0 or 1");
    if (c->window_scaling > 1) return bad(err, el, "window_scaling", "must be 0 or 1");
    if (c->syncookies > MTCP_SYNCOOKIES_ALWAYS) return bad(err, el, "syncookies", "must be 0, 1 or 2");
    if (c->nodelay_default > 1) return bad(err, el, "nodelay_default", "must be 0 or 1");
    if (c->link_type != MTCP_LINK_ETHERNET && c->link_type != MTCP_LINK_IP)
        return bad(err, el, "link_type", "must be MTCP_LINK_ETHERNET or MTCP_LINK_IP");
    if (c->mtu < 576 || c->mtu > 65535) return bad(err, el, "mtu", "must be in [576, 65535]");
    if (!zero(c->ipv6, 16) && c->mtu < 1280) return bad(err, el, "mtu", "IPv6 needs >= 1280");
    if (c->link_type == MTCP_LINK_ETHERNET && ((c->mac[0] & 1) || zero(c->mac, 6)))
        return bad(err, el, "mac", "must be a non-zero unicast address");
    if (c->own_prefix > 1) return bad(err, el, "own_prefix", "must be 0 or 1");
    if (c->ipv4_prefix > 32) return bad(err, el, "ipv4_prefix", "must be <= 32");
    if (c->ipv6_prefix > 128) return bad(err, el, "ipv6_prefix", "must be <= 128");
    if (zero(c->ipv4, 4) && zero(c->ipv6, 16)) return bad(err, el, "ipv4", "no IPv4 and no IPv6 address configured");
    if (c->ipv4[0] >= 224) return bad(err, el, "ipv4", "multicast/reserved address");
    if (c->ipv6[0] == 0xff) return bad(err, el, "ipv6", "multicast address");
    if (c->eph_port_lo < 1 || c->eph_port_hi < c->eph_port_lo)
        return bad(err, el, "eph_port_lo", "need 1 <= eph_port_lo <= eph_port_hi");
    if (c->neigh_timeout_us < 1000000) return bad(err, el, "neigh_timeout_us", "must be >= 1 s");
    if (c->rst_ratelimit && (c->rst_burst < 1 || c->rst_burst > 1000000))
        return bad(err, el, "rst_burst", "must be in [1, 1000000] when rst_ratelimit is set");
    if (c->icmp_ratelimit && (c->icmp_burst < 1 || c->icmp_burst > 1000000))
        return bad(err, el, "icmp_burst", "must be in [1, 1000000] when icmp_ratelimit is set");
    if (c->invalid_ratelimit_ms > 60000) return bad(err, el, "invalid_ratelimit_ms", "must be <= 60000");
    if (l) {
        if (l->link_type != c->link_type) return bad(err, el, "link_type", "differs from the link's type");
        if (!l->ops || !l->ops->rxsync || !l->ops->txsync) return bad(err, el, "link", "missing rxsync/txsync");
    }
    return 0;
}

/* ------------------------------------------------------------------ helpers */

static int in_prefix(const uint8_t *a, const uint8_t *b, int bits) {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0) return 0;
    if (rest) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((a[full] & m) != (b[full] & m)) return 0;
    }
    return 1;
}

int eng_is_local(const struct mtcp_engine *e, int family, const uint8_t *ip) {
    if (family == MTCP_AF_INET) {
        if (zero(e->cfg.ipv4, 4)) return 0;
        if (memcmp(ip, e->cfg.ipv4, 4) == 0) return 1;
        return e->cfg.own_prefix && in_prefix(ip, e->cfg.ipv4, e->cfg.ipv4_prefix);
    }
    if (zero(e->cfg.ipv6, 16)) return 0;
    if (memcmp(ip, e->cfg.ipv6, 16) == 0) return 1;
    return e->cfg.own_prefix && in_prefix(ip, e->cfg.ipv6, e->cfg.ipv6_prefix);
}

uint16_t eng_path_mss(const struct mtcp_engine *e, int family) {
    return (uint16_t)(e->mtu - (family == MTCP_AF_INET ? 40 : 60));
}

static inline void set_now(struct mtcp_engine *e, uint64_t now) {
    if (now > e->now) e->now = now;
    if (!e->wheel.started) eng_wheel_start(&e->wheel, now);
}

int eng_tb_take(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst) {
    return eng_tb_take_above(b, now, rate, burst, 0);
}

int eng_tb_take_above(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst, uint32_t keep) {
    if (!rate) return 1;
    uint64_t cap = (uint64_t)(burst ? burst : 1) * 1000000u;
    if (!b->init) { b->init = 1; b->x = cap; b->last = now; }
    if (now > b->last) {
        uint64_t dt = now - b->last;
        b->x = dt >= cap / rate + 1 ? cap : b->x + dt * rate;
        if (b->x > cap) b->x = cap;
        b->last = now;
    }
    if (b->x < (uint64_t)(keep + 1) * 1000000u) return 0;
    b->x -= 1000000u;
    return 1;
}

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

static void fifo_push(struct mtcp_engine *e, struct fifo *q, uint32_t f) {
    e->frames[f].next = NONE32;
    if (q->tail == NONE32) q->head = f; else e->frames[q->tail].next = f;
    q->tail = f;
    q->n++;
}

static uint32_t fifo_pop(struct mtcp_engine *e, struct fifo *q) {
    uint32_t f = q->head;
    if (f == NONE32) return NONE32;
    q->head = e->frames[f].next;
    if (q->head == NONE32) q->tail = NONE32;
    q->n--;
    return f;
}

void eng_ctrl_push(struct mtcp_engine *e, uint32_t f) { fifo_push(e, &e->ctrlq, f); }

/* Write IP header (+ Ethernet header when dmac != NULL) in front of an l4 payload at
 * buf + l2len + iphl. Returns the frame length. */
static uint32_t write_headers(struct mtcp_engine *e, uint8_t *buf, int family, const uint8_t *src,
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

static inline uint32_t iphl_of(int family) { return family == MTCP_AF_INET ? 20 : 40; }

static void ctrl_flush(struct mtcp_engine *e);

uint32_t eng_ctrl_begin(struct mtcp_engine *e, int family, uint8_t **l4, uint32_t *cap) {
    eng_ctrl_room(e);
    uint32_t f = e->ctrlq.n < CTRLQ_MAX ? eng_frame_get(e) : NONE32;
    if (f == NONE32) { e->counters[CTR_DROP_CTRL_QUEUE]++; return NONE32; }
    e->frames[f].kind = FK_OTHER;
    uint32_t hl = e->l2len + iphl_of(family);
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
    e->frames[f].len = write_headers(e, e->frames[f].buf, family, src, dst, proto, l4len, dmac, hop_limit);
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

/* ------------------------------------------------------------------ events */

static inline uint32_t ev_slot(const struct mtcp_engine *e, uint32_t i) {
    uint32_t x = e->ev_head + i;            /* ev_head < ev_cap, i <= ev_cap: no division */
    return x >= e->ev_cap ? x - e->ev_cap : x;
}

void eng_push_event(struct mtcp_engine *e, struct conn *k, uint32_t type, int32_t err, uint32_t len,
                       mtcp_cid parent) {
    mtcp_cid cid = conn_cid(e, k);
    if (type == MTCP_EV_READABLE && e->ev_n) {
        struct mtcp_event *last = &e->ev[ev_slot(e, e->ev_n - 1)];
        if (last->type == MTCP_EV_READABLE && last->cid == cid) { last->len = len; return; }
    }
    if (e->ev_n >= e->ev_cap) { e->counters[CTR_EVENTS_OVERFLOW]++; return; }
    struct mtcp_event *ev = &e->ev[ev_slot(e, e->ev_n)];
    ev->cid = cid;
    ev->parent = parent;
    ev->type = type;
    ev->err = err;
    ev->len = len;
    ev->pad = 0;
    e->ev_n++;
}

uint32_t mtcp_engine_events(mtcp_engine *e, struct mtcp_event *out, uint32_t max) {
    uint32_t n = 0;
    while (n < max && e->ev_n) {
        struct mtcp_event ev = e->ev[e->ev_head];
        e->ev_head = ev_slot(e, 1);
        e->ev_n--;
        struct conn *k = eng_conn_get(e, ev.cid);
        if (!k) continue;                        /* released or stale: no more events for it */
        if (ev.type == MTCP_EV_ACCEPT && (k->eflags & CF_CHILD)) {
            eng_listen_child_unlink(e, k);           /* leaves the listener's backlog */
            k->eflags &= (uint16_t)~CF_ACCEPTQ;
        }
        out[n++] = ev;
    }
    return n;
}

/* ------------------------------------------------------------------ tcp_env callbacks */

static struct buf_ooo *env_ooo_get(void *ctx, struct tcp_conn *c, int alloc) {
    struct mtcp_engine *e = ctx;
    if (c->ooo != 0xffff) return &e->ooo[c->ooo];
    if (!alloc || e->ooo_free == NONE32) return NULL;
    uint32_t i = e->ooo_free;
    e->ooo_free = e->ooo_next[i];
    tcp_buf_ooo_init(&e->ooo[i]);
    c->ooo = (uint16_t)i;
    e->ooo_used++;
    return &e->ooo[i];
}

static struct tcp_recs *env_rec_get(void *ctx, struct tcp_conn *c) {
    struct mtcp_engine *e = ctx;
    (void)c;
    if (e->rec_free == NONE32) return NULL;
    uint32_t i = e->rec_free;
    e->rec_free = e->rec_next[i];
    e->rec_used++;
    return &e->recs[i];
}

static void env_rec_put(void *ctx, struct tcp_conn *c, struct tcp_recs *r) {
    struct mtcp_engine *e = ctx;
    (void)c;
    uint32_t i = (uint32_t)(r - e->recs);
    e->rec_next[i] = e->rec_free;
    e->rec_free = i;
    e->rec_used--;
}

static void env_ooo_put(void *ctx, struct tcp_conn *c) {
    struct mtcp_engine *e = ctx;
    if (c->ooo == 0xffff) return;
    uint32_t i = c->ooo;
    tcp_buf_ooo_clear(&e->pool, &e->ooo[i]);
    e->ooo_next[i] = e->ooo_free;
    e->ooo_free = i;
    e->ooo_used--;
    c->ooo = 0xffff;
}

static void tx_release(struct mtcp_engine *e) {
    if ((e->tx_kind == TXK_OUTQ || e->tx_kind == TXK_NEIGH) && e->tx_frame != NONE32) eng_frame_put(e, e->tx_frame);
    e->tx_kind = TXK_NONE;
    e->tx_frame = NONE32;
}

static uint8_t *env_tx_begin(void *ctx, struct tcp_conn *c, uint32_t *cap) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    tx_release(e);
    if (e->tx_full) { e->tx_nulled = 1; return NULL; }
    int family = c->family;
    uint32_t hl = e->l2len + iphl_of(family);
    int direct = 1;
    if (e->l2len) {
        /* fast path: the neighbour this connection used last is still valid */
        struct neigh *n = k->ngen && k->nidx < NEIGH_N ? &e->neigh.ent[k->nidx] : NULL;
        if (n && (n->gen != k->ngen || n->state != NS_REACHABLE || e->now >= n->expires)) n = NULL;
        if (!n) {
            uint8_t nh[16];
            /* a passive open not yet established answers a source nothing has verified */
            int weak = (c->flags & TCPF_PASSIVE) && c->state == MTCP_ST_SYN_RECEIVED;
            uint32_t ni = eng_route_nexthop(e, family, k->rip, nh) < 0 ? NONE32
                        : weak ? eng_neigh_resolve_weak(e, family, nh) : eng_neigh_resolve(e, family, nh);
            n = ni == NONE32 ? NULL : &e->neigh.ent[ni];
            if (n && n->state == NS_REACHABLE) { k->nidx = ni; k->ngen = n->gen; }
            else k->ngen = 0;
            if (n && n->state != NS_REACHABLE) e->tx_neigh = ni;
        }
        if (n && n->state == NS_REACHABLE) {
            memcpy(e->tx_dmac, n->mac, 6);
        } else {
            direct = 0;
            uint32_t f = n && n->state == NS_INCOMPLETE ? eng_frame_get(e) : NONE32;
            if (f != NONE32) {
                e->tx_kind = TXK_NEIGH;
                e->tx_frame = f;
                e->tx_buf = e->frames[f].buf;
            } else {
                e->tx_kind = TXK_SCRATCH;       /* unreachable / no buffer: built, then dropped */
                e->tx_buf = e->scratch;
            }
        }
    }
    uint32_t room = e->fsize;
    if (direct) {
        if (e->link) {
            struct link_ring *r = &e->link->tx;
            if (link_ring_space(r) == 0) { e->tx_full = 1; e->tx_nulled = 1; e->counters[CTR_TX_RING_FULL]++; return NULL; }
            e->tx_kind = TXK_LINK;
            e->tx_buf = r->slot[r->head].buf;
            if (e->env.tso_max) {
                /* TSO: the whole slot, bounded by the IP length field */
                room = r->buf_size;
                if (room > hl + 65535 - iphl_of(family)) room = hl + 65535 - iphl_of(family);
            } else if (r->buf_size < room) {
                room = r->buf_size;
            }
        } else {
            uint32_t f = e->outq.n < OUTQ_MAX ? eng_frame_get(e) : NONE32;
            if (f == NONE32) { e->tx_full = 1; e->tx_nulled = 1; return NULL; }
            e->tx_kind = TXK_OUTQ;
            e->tx_frame = f;
            e->tx_buf = e->frames[f].buf;
        }
    }
    *cap = room - hl;
    return e->tx_buf + hl;
}

static void env_tx_commit(void *ctx, struct tcp_conn *c, uint32_t tcp_len) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    if (e->tx_kind == TXK_NONE) return;
    int family = c->family;
    uint8_t *seg = e->tx_buf + e->l2len + iphl_of(family);
    uint32_t ps = family == MTCP_AF_INET ? wire_pseudo4(k->lip, k->rip, WIRE_PROTO_TCP, tcp_len)
                                         : wire_pseudo6(k->lip, k->rip, WIRE_PROTO_TCP, tcp_len);
    /* checksum offload (loopback, TAP with TUN_F_CSUM): leave the folded pseudo-header sum in the
     * field and mark the slot CSUM_PARTIAL (virtio NEEDS_CSUM convention) */
    int partial = e->tx_kind == TXK_LINK && (e->link->features & LINK_FEAT_CSUM_TX);
    if (partial) wire_put16(seg + 16, (uint16_t)~wire_csum_fold(ps));
    else wire_tcp_csum_fill(seg, tcp_len, ps);
    uint32_t len = write_headers(e, e->tx_buf, family, k->lip, k->rip, WIRE_PROTO_TCP, tcp_len,
                                 e->tx_kind == TXK_LINK || e->tx_kind == TXK_OUTQ ? e->tx_dmac : NULL, 64);
    e->counters[CTR_SEGS_OUT]++;
    switch (e->tx_kind) {
    case TXK_LINK: {
        struct link_ring *r = &e->link->tx;
        struct link_slot *s = &r->slot[r->head];
        s->len = len;
        s->flags = partial ? LINK_SLOT_F_CSUM_PARTIAL : 0;
        s->gso_size = 0;
        if (c->tx_gso && partial) {
            /* a TSO super-segment (tcp_out: only when env.tso_max, which requires CSUM_TX) */
            s->flags |= LINK_SLOT_F_GSO;
            s->gso_size = c->tx_gso;
        }
        s->csum_start = (uint16_t)(partial ? e->l2len + iphl_of(family) : 0);
        s->csum_offset = (uint16_t)(partial ? 16 : 0);
        r->head = r->cur = link_ring_next(r, r->head);
        e->counters[CTR_FRAMES_OUT]++;
        break;
    }
    case TXK_OUTQ:
        e->frames[e->tx_frame].len = len;
        fifo_push(e, &e->outq, e->tx_frame);
        e->counters[CTR_FRAMES_OUT]++;
        break;
    case TXK_NEIGH:
        e->frames[e->tx_frame].len = len;
        eng_neigh_enqueue(e, e->tx_neigh, e->tx_frame);
        break;
    default:
        e->counters[CTR_DROP_NEIGH_QUEUE]++;
        break;
    }
    e->tx_kind = TXK_NONE;
    e->tx_frame = NONE32;
}

static void env_event(void *ctx, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    switch (type) {
    case MTCP_EV_CONNECTED: e->counters[CTR_CONN_ESTABLISHED]++; resv_release(e, k); break;
    case MTCP_EV_CONNECT_FAILED:
        resv_release(e, k);
        e->counters[CTR_CONN_FAILED]++;
        if (err == ETIMEDOUT) e->counters[CTR_CONN_TIMEDOUT]++;
        if (err == ECONNREFUSED) e->counters[CTR_CONN_RESET]++;
        break;
    case MTCP_EV_ERROR:
        if (err == ETIMEDOUT) e->counters[CTR_CONN_TIMEDOUT]++;
        else e->counters[CTR_CONN_RESET]++;
        break;
    default: break;
    }
    if (type == MTCP_EV_ACCEPT) {
        if (!(k->eflags & CF_HIDDEN)) return;
        mtcp_cid parent = 0;
        k->eflags &= (uint16_t)~CF_HIDDEN;
        e->counters[CTR_CONN_ACCEPTED]++;
        if (k->eflags & CF_CHILD) {
            struct conn *l = &e->conns[k->u.ch.parent];
            if (l->kind == CK_LISTEN && l->gen == k->u.ch.parent_gen) {
                l->u.ls.synq--;
                l->u.ls.acceptq++;
                k->eflags |= CF_ACCEPTQ;
                parent = conn_cid(e, l);
            }
        }
        if (k->eflags & CF_DETACHED) return;
        if (e->ev_n >= e->ev_cap) {
            /* the application would never learn this cid: reset it (at the next safe point,
             * not from inside tcp_input) instead of leaking it in the backlog */
            e->counters[CTR_EVENTS_OVERFLOW]++;
            k->eflags |= CF_DETACHED | CF_ABORTQ;
            k->tcp.flags |= TCPF_DETACHED;
            k->anext = e->abort_head;
            e->abort_head = conn_idx(e, k);
            return;
        }
        eng_push_event(e, k, MTCP_EV_ACCEPT, 0, 0, parent);
        return;
    }
    if (k->eflags & (CF_HIDDEN | CF_DETACHED | CF_ZOMBIE)) return;
    eng_push_event(e, k, type, err, len, 0);
}

/* ---- TIME-WAIT FIFO: detached blocks in TIME-WAIT, oldest first, O(1) add/remove/pop ---- */
static void tw_del(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_TWLIST)) return;
    if (k->tw_prev != NONE32) e->conns[k->tw_prev].tw_next = k->tw_next; else e->tw_head = k->tw_next;
    if (k->tw_next != NONE32) e->conns[k->tw_next].tw_prev = k->tw_prev; else e->tw_tail = k->tw_prev;
    k->tw_next = k->tw_prev = NONE32;
    k->eflags &= (uint16_t)~CF_TWLIST;
    e->tw_n--;
}

/* Put k on the FIFO once it is in TIME-WAIT and the app released it (called when its timer
 * changes, which entering TIME-WAIT always does, and when the app closes it). */
static void tw_check(struct mtcp_engine *e, struct conn *k) {
    if ((k->eflags & (CF_TWLIST | CF_ZOMBIE | CF_ABORTQ)) || !(k->eflags & CF_DETACHED) ||
        k->kind != CK_CONN || k->tcp.state != MTCP_ST_TIME_WAIT || k->tcp.closed_done)
        return;
    uint32_t idx = conn_idx(e, k);
    k->eflags |= CF_TWLIST;
    k->tw_next = NONE32;
    k->tw_prev = e->tw_tail;
    if (e->tw_tail == NONE32) e->tw_head = idx; else e->conns[e->tw_tail].tw_next = idx;
    e->tw_tail = idx;
    e->tw_n++;
}

static void env_timer(void *ctx, struct tcp_conn *c, uint64_t deadline) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    uint32_t idx = conn_idx(e, k);
    tw_check(e, k);
    if (deadline == 0 || (k->eflags & CF_ZOMBIE) || k->kind != CK_CONN) { eng_wheel_remove(&e->wheel, idx); return; }
    eng_wheel_insert(&e->wheel, idx, deadline);
}

static void out_add(struct mtcp_engine *e, struct conn *k) {
    uint32_t idx = conn_idx(e, k);
    k->eflags |= CF_OUTPUT;
    k->onext = NONE32;
    k->oprev = e->out_tail;
    if (e->out_tail == NONE32) e->out_head = idx; else e->conns[e->out_tail].onext = idx;
    e->out_tail = idx;
    e->out_n++;
}

static void out_del(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_OUTPUT)) return;
    if (k->oprev != NONE32) e->conns[k->oprev].onext = k->onext; else e->out_head = k->onext;
    if (k->onext != NONE32) e->conns[k->onext].oprev = k->oprev; else e->out_tail = k->oprev;
    k->onext = k->oprev = NONE32;
    k->eflags &= (uint16_t)~CF_OUTPUT;
    e->out_n--;
}

static void env_want_output(void *ctx, struct tcp_conn *c) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    if ((k->eflags & (CF_OUTPUT | CF_ZOMBIE)) || k->kind != CK_CONN) return;
    out_add(e, k);
}

static void make_zombie(struct mtcp_engine *e, struct conn *k) {
    if (k->eflags & CF_ZOMBIE) return;
    k->eflags |= CF_ZOMBIE;
    eng_wheel_remove(&e->wheel, conn_idx(e, k));
    k->hnext = e->reap_head;
    e->reap_head = conn_idx(e, k);
}

static void env_closed(void *ctx, struct tcp_conn *c) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    tw_del(e, k);
    eng_conn_unhash(e, k);
    eng_wheel_remove(&e->wheel, conn_idx(e, k));
    if (k->eflags & (CF_DETACHED | CF_HIDDEN)) make_zombie(e, k);
    else k->eflags |= CF_CLOSED;
}

static int env_challenge_ok(void *ctx, uint64_t now) {
    struct mtcp_engine *e = ctx;
    uint64_t sec = now / 1000000;
    if (sec != e->chal_sec) { e->chal_sec = sec; e->chal_n = 0; }
    if (e->chal_n >= e->cfg.challenge_ack_limit) return 0;
    e->chal_n++;
    return 1;
}

static void conn_release(struct mtcp_engine *e, struct conn *k) {
    resv_release(e, k);
    tw_del(e, k);
    eng_wheel_remove(&e->wheel, conn_idx(e, k));
    eng_conn_unhash(e, k);
    eng_listen_child_unlink(e, k);
    tcp_buf_stream_clear(&e->pool, &k->tcp.snd);
    tcp_buf_stream_clear(&e->pool, &k->tcp.rcv);
    env_ooo_put(e, &k->tcp);
    if (k->tcp.recs) env_rec_put(e, &k->tcp, k->tcp.recs);
    k->tcp.recs = NULL;
    k->tcp.rec_n = 0;
    if (k->eflags & CF_PORTREF) eng_port_unref(e, k->tcp.family, k->tcp.local_port);
    e->counters[CTR_CONN_CLOSED]++;
    eng_conn_free(e, k);
}

void eng_reap(struct mtcp_engine *e) {
    while (e->abort_head != NONE32) {
        struct conn *k = &e->conns[e->abort_head];
        e->abort_head = k->anext;
        k->eflags &= (uint16_t)~CF_ABORTQ;
        if (k->kind != CK_CONN || (k->eflags & CF_ZOMBIE)) continue;
        if (k->eflags & CF_CLOSED) make_zombie(e, k);
        else tcp_abort(&e->env, &k->tcp, e->now);      /* -> env_closed -> zombie (detached) */
    }
    while (e->reap_head != NONE32) {
        struct conn *k = &e->conns[e->reap_head];
        e->reap_head = k->hnext;
        k->hnext = NONE32;
        out_del(e, k);
        conn_release(e, k);
    }
}

/* 1 if `need` blocks can be taken beyond the reserved ones, recycling TIME-WAIT blocks for room:
 * like Linux (which never fails an open because of TIME-WAIT state) the oldest TIME-WAIT block
 * goes first. It is detached and silent (no RST, no event); TCP code never holds a pointer to it
 * here (callers are the connect API and a listener's SYN), so it is freed now. */
static int blocks_room(struct mtcp_engine *e, uint32_t need) {
    while (e->nconns - e->conns_used < e->resv + need && e->tw_head != NONE32) {
        struct conn *t = &e->conns[e->tw_head];
        out_del(e, t);
        conn_release(e, t);             /* unlinks it from the FIFO, the hash and the wheel */
        e->counters[CTR_TW_RECYCLED]++;
    }
    return e->nconns - e->conns_used >= e->resv + need;
}

struct conn *eng_conn_alloc_recycle(struct mtcp_engine *e) {
    return blocks_room(e, 1) ? eng_conn_alloc(e) : NULL;
}

static void resv_release(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_RESV)) return;
    k->eflags &= (uint16_t)~CF_RESV;
    e->resv--;
}

struct conn *eng_conn_take_reserved(struct mtcp_engine *e, struct conn *client) {
    if (!(client->eflags & CF_RESV)) return NULL;
    resv_release(e, client);
    return eng_conn_alloc(e);               /* a reserved block is always free */
}

uint32_t eng_conn_setup(struct mtcp_engine *e, struct conn *k, int family, const uint8_t *lip, uint16_t lport,
                    const uint8_t *rip, uint16_t rport) {
    k->kind = CK_CONN;
    memset(k->lip, 0, 16);
    memset(k->rip, 0, 16);
    memcpy(k->lip, lip, (size_t)addr_len(family));
    memcpy(k->rip, rip, (size_t)addr_len(family));
    tcp_conn_init(&e->env, &k->tcp, family, lport, rport, eng_path_mss(e, family));
    k->tcp.ooo = 0xffff;
    /* RFC 7323 5.4: per-connection timestamp offset; a keyed hash of the 4-tuple, so a SYN-cookie
     * SYN-ACK (no state) and the connection created from it later agree on it */
    uint64_t h = eng_isn_hash(e->isn_key, family, lip, lport, rip, rport);
    k->tcp.ts_offset = (uint32_t)(h >> 32);
    return (uint32_t)h;
}

/* ------------------------------------------------------------------ lifecycle */

static void derive_key(uint64_t seed, uint32_t n, uint8_t out[16]) {
    static const uint8_t k0[16] = "mtcp-engine-key";
    uint8_t m[12];
    memcpy(m, &seed, 8);
    memcpy(m + 8, &n, 4);
    uint64_t a = eng_siphash24(k0, m, 12);
    m[11] ^= 0x80;
    uint64_t b = eng_siphash24(k0, m, 12);
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
}

mtcp_engine *mtcp_engine_new(const struct mtcp_config *cfg, mtcp_link *link, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!cfg) { bad(err, errlen, "cfg", "NULL"); return NULL; }
    if (validate(cfg, link, err, errlen) < 0) return NULL;
    mtcp_engine *e = calloc(1, sizeof *e);
    if (!e) { bad(err, errlen, "engine", "out of memory"); return NULL; }
    e->cfg = *cfg;
    e->link = link;
    e->l2len = cfg->link_type == MTCP_LINK_ETHERNET ? WIRE_ETH_HLEN : 0;
    e->mtu = cfg->mtu;
    if (link) {
        if (link->mtu && link->mtu < e->mtu) e->mtu = link->mtu;
        if (link->tx.buf_size && link->tx.buf_size < e->l2len + e->mtu) e->mtu = link->tx.buf_size - e->l2len;
        if (e->mtu < 576) { bad(err, errlen, "mtu", "link slots too small"); free(e); return NULL; }
    }
    uint64_t seed = cfg->seed;
    if (!seed) {
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)e;
        }
        if (!seed) seed = 1;
    }
    derive_key(seed, 1, e->isn_key);
    derive_key(seed, 2, e->cookie_key);
    derive_key(seed, 3, e->port_key);
    e->hash_seed = eng_siphash24(e->port_key, &seed, sizeof seed);

    e->nconns = cfg->max_conns;
    e->out_head = e->out_tail = NONE32;
    e->reap_head = NONE32;
    e->abort_head = NONE32;
    e->tw_head = e->tw_tail = NONE32;
    e->tx_frame = NONE32;
    e->ffree = NONE32;
    e->ctrlq.head = e->ctrlq.tail = NONE32;
    e->outq.head = e->outq.tail = NONE32;
    if (eng_table_init(e) < 0) goto oom;
    if (tcp_buf_pool_init(&e->pool, cfg->chunk_size, cfg->max_chunks) < 0) goto oom;
    uint32_t nooo = cfg->max_conns / 4;
    if (nooo < 16) nooo = 16;
    if (nooo > 8192) nooo = 8192;
    e->nooo = nooo;
    e->ooo = calloc(nooo, sizeof *e->ooo);
    e->ooo_next = malloc(nooo * sizeof *e->ooo_next);
    if (!e->ooo || !e->ooo_next) goto oom;
    for (uint32_t i = 0; i < nooo; i++) e->ooo_next[i] = i + 1 < nooo ? i + 1 : NONE32;
    e->ooo_free = 0;
    e->nrec = cfg->max_rack;
    e->rec_free = NONE32;
    if (e->nrec) {
        e->recs = malloc((size_t)e->nrec * sizeof *e->recs);
        e->rec_next = malloc((size_t)e->nrec * sizeof *e->rec_next);
        if (!e->recs || !e->rec_next) goto oom;
        for (uint32_t i = 0; i < e->nrec; i++) e->rec_next[i] = i + 1 < e->nrec ? i + 1 : NONE32;
        e->rec_free = 0;
    }
    e->ev_cap = cfg->max_events;
    e->ev = calloc(e->ev_cap, sizeof *e->ev);
    if (!e->ev) goto oom;
    e->fsize = e->l2len + e->mtu;
    e->nframes = CTRLQ_MAX + (e->l2len ? NEIGHQ_MAX : 0) + 8 + (link ? 0 : OUTQ_MAX);
    e->frames = calloc(e->nframes, sizeof *e->frames);
    e->fmem = malloc((size_t)e->nframes * e->fsize);
    e->scratch = malloc(e->fsize);
    if (!e->frames || !e->fmem || !e->scratch) goto oom;
    for (uint32_t i = 0; i < e->nframes; i++) {
        e->frames[i].buf = e->fmem + (size_t)i * e->fsize;
        e->frames[i].next = i + 1 < e->nframes ? i + 1 : NONE32;
    }
    e->ffree = 0;
    eng_wheel_init(&e->wheel, e->conns, sizeof(struct conn), offsetof(struct conn, wn));
    eng_neigh_init(e);

    struct tcp_env *env = &e->env;
    env->ctx = e;
    env->cfg = &e->cfg;
    env->pool = &e->pool;
    env->counters = e->counters;
    env->ooo_get = env_ooo_get;
    env->ooo_put = env_ooo_put;
    env->rec_get = env_rec_get;
    env->rec_put = env_rec_put;
    env->tx_begin = env_tx_begin;
    env->tx_commit = env_tx_commit;
    env->event = env_event;
    env->timer = env_timer;
    env->want_output = env_want_output;
    env->closed = env_closed;
    env->challenge_ok = env_challenge_ok;
    /* TSO (TAP with TUN_F_TSO4/6): a TX slot may carry a super-frame that the link cuts at
     * gso_size; it needs partial checksums too. Payload bound: the IP length field (64 KiB) and
     * the slot, less the largest IP (40) and TCP (60) headers. */
    if (link && (link->features & LINK_FEAT_TSO) && (link->features & LINK_FEAT_CSUM_TX) && e->l2len) {
        uint32_t room = link->tx.buf_size > e->l2len + 40 ? link->tx.buf_size - e->l2len - 40 : 0;
        if (room > 65535 - 40) room = 65535 - 40;
        uint32_t max = room > 60 ? room - 60 : 0;
        if (max >= 2 * e->mtu) env->tso_max = max;
    }
    return e;
oom:
    bad(err, errlen, "max_conns/max_chunks/max_events", "out of memory allocating pools");
    mtcp_engine_free(e);
    return NULL;
}

void mtcp_engine_free(mtcp_engine *e) {
    if (!e) return;
    if (e->link && e->conns) {
        const struct link_ops *ops = e->link->ops;
        for (uint32_t i = 0; i < e->nconns; i++) {
            struct conn *k = &e->conns[i];
            if (k->kind == CK_LISTEN && ops->release_port && eng_listener_count_port(e, k->tcp.family, k->tcp.local_port) == 1)
                ops->release_port(e->link, k->tcp.family, k->tcp.local_port, 1);
            if (k->kind == CK_LISTEN) eng_listener_unhash(e, k);
        }
        for (int f = 0; f < 2 && e->portref[f]; f++)
            for (uint32_t p = 0; p < 65536; p++)
                if (e->portref[f][p] && ops->release_port)
                    ops->release_port(e->link, f ? MTCP_AF_INET6 : MTCP_AF_INET, (uint16_t)p, 0);
    }
    eng_table_fini(e);
    if (e->pool.mem) tcp_buf_pool_fini(&e->pool);
    free(e->ooo);
    free(e->ooo_next);
    free(e->recs);
    free(e->rec_next);
    free(e->ev);
    free(e->frames);
    free(e->fmem);
    free(e->scratch);
    free(e);
}

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
    if (ip.src[0] >= 224 || zero(ip.src, 4)) { e->counters[CTR_DROP_BAD_ADDR]++; return; }
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
    if (ip.src[0] == 0xff || zero(ip.src, 16)) { e->counters[CTR_DROP_BAD_ADDR]++; return; }
    if (ip.next == WIRE_PROTO_TCP) tcp_rx(e, MTCP_AF_INET6, ip.src, ip.dst, ip.payload, ip.upper_len);
    else e->counters[CTR_DROP_UNSUPPORTED]++;
}

static void rx_frame(struct mtcp_engine *e, const uint8_t *p, uint32_t len, uint16_t flags) {
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

/* ------------------------------------------------------------------ output */

static void fire(void *ctx, uint32_t idx) {
    struct mtcp_engine *e = ctx;
    struct conn *k = &e->conns[idx];
    if (k->kind != CK_CONN || (k->eflags & CF_ZOMBIE)) return;
    tcp_timer(&e->env, &k->tcp, e->now);
}

static void run_timers(struct mtcp_engine *e) {
    eng_wheel_advance(&e->wheel, e->now, fire, e);
    eng_neigh_tick(e);
    eng_reap(e);
}

/* Control frames -> TX ring / output queue. Returns frames moved; sets tx_full when it stopped
 * for lack of room. */
static uint32_t ctrl_out(struct mtcp_engine *e) {
    uint32_t moved = 0;
    while (e->ctrlq.n) {
        uint32_t f = e->ctrlq.head;
        if (e->link) {
            struct link_ring *r = &e->link->tx;
            if (link_ring_space(r) == 0) { e->tx_full = 1; e->counters[CTR_TX_RING_FULL]++; break; }
            fifo_pop(e, &e->ctrlq);
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
            fifo_pop(e, &e->ctrlq);
            frame_sent(e, f);
            fifo_push(e, &e->outq, f);
        }
        moved++;
    }
    return moved;
}

/* Send the queued control frames now, not at the output pass: in the middle of an RX batch (a
 * SYN flood's replies) and whenever a control frame finds the queue full (a timer tick's burst of
 * ARP requests). No TX slot is held by a connection at these points. */
static void ctrl_flush(struct mtcp_engine *e) {
    uint8_t full = e->tx_full;
    e->counters[CTR_CTRL_FLUSHES]++;
    e->tx_full = 0;
    ctrl_out(e);
    if (e->ctrlq.n && e->link) {
        link_txsync(e->link, e->now);      /* TX ring full: hand it to the device, once */
        e->tx_full = 0;
        ctrl_out(e);
    }
    e->tx_full = full;
}

void eng_ctrl_room(struct mtcp_engine *e) {
    if (e->ctrlq.n >= CTRLQ_MAX) ctrl_flush(e);
}

/* Returns frames moved into the TX ring / output queue. */
static uint32_t output_pass(struct mtcp_engine *e) {
    uint32_t moved = 0;
    e->tx_full = 0;
    /* control frames first */
    moved += ctrl_out(e);
    /* connections that want output: exactly those listed now (conns marked again during the
     * pass are appended behind them and wait for the next pass) */
    for (uint32_t todo = e->out_n; todo && e->out_head != NONE32 && !e->tx_full; todo--) {
        struct conn *k = &e->conns[e->out_head];
        out_del(e, k);
        if (k->kind != CK_CONN || (k->eflags & CF_ZOMBIE)) continue;
        uint64_t before = e->counters[CTR_FRAMES_OUT];
        e->tx_nulled = 0;
        tcp_output(&e->env, &k->tcp, e->now);
        tx_release(e);
        moved += (uint32_t)(e->counters[CTR_FRAMES_OUT] - before);
        if (e->tx_nulled && !(k->eflags & (CF_ZOMBIE | CF_OUTPUT))) {
            /* TX full: keep it first in line for the next pass */
            out_add(e, k);
            if (e->out_head != conn_idx(e, k)) {
                out_del(e, k);
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
static void wake_starved(struct mtcp_engine *e) {
    if ((!e->starved_n && !e->starved_overflow) || e->pool.nfree <= buf_pool_reserve(&e->pool)) return;
    if (e->starved_overflow) {
        for (uint32_t i = 0; i < e->nconns; i++) {
            struct conn *k = &e->conns[i];
            if (starved_can_send(k)) {
                k->tcp.flags &= (uint16_t)~TCPF_WANT_WRITABLE;
                env_event(e, &k->tcp, MTCP_EV_WRITABLE, 0, 0);
            }
        }
    } else {
        for (uint32_t i = 0; i < e->starved_n; i++) {
            struct conn *k = eng_conn_get(e, e->starved[i]);
            if (k && starved_can_send(k)) {
                k->tcp.flags &= (uint16_t)~TCPF_WANT_WRITABLE;
                env_event(e, &k->tcp, MTCP_EV_WRITABLE, 0, 0);
            }
        }
    }
    e->starved_n = 0;
    e->starved_overflow = 0;
}

/* One RX batch from the link: every received frame through TCP. Returns frames taken. */
static uint32_t rx_batch(struct mtcp_engine *e, struct mtcp_link *l) {
    link_rxsync(l, e->now);
    struct link_ring *rx = &l->rx;
    uint32_t n = 0;
    while (rx->head != rx->tail) {
        struct link_slot *s = &rx->slot[rx->head];
        rx_frame(e, s->buf, s->len, s->flags);
        rx->head = link_ring_next(rx, rx->head);
        n++;
        if ((n & 63) == 0) eng_reap(e);
        if (e->ctrlq.n >= CTRLQ_FLUSH) ctrl_flush(e);   /* control replies never wait for a slot */
    }
    rx->cur = rx->head;
    eng_reap(e);
    return n;
}

int mtcp_engine_poll_rx(mtcp_engine *e, uint64_t now_us) {
    set_now(e, now_us);
    if (e->link) rx_batch(e, e->link);
    run_timers(e);
    return (int)e->ev_n;
}

int mtcp_engine_poll_tx(mtcp_engine *e, uint64_t now_us) {
    set_now(e, now_us);
    struct mtcp_link *l = e->link;
    uint32_t ev0 = e->ev_n;
    uint32_t sent = output_pass(e);
    if (l) {
        link_txsync(l, e->now);
        /* IP links (loopback): frames to ourselves come back at once; take them as poll does,
         * but stop before the output pass once they made events: the layer above dispatches
         * them first, so the replies of its callbacks carry these frames' ACKs (both ends of a
         * connection on one engine) */
        for (int round = 1; round < LOOP_ROUNDS && l->link_type == MTCP_LINK_IP && sent; round++) {
            uint32_t n = rx_batch(e, l);
            if (e->ev_n != ev0) break;
            sent = output_pass(e);
            link_txsync(l, e->now);
            if (n == 0 && sent == 0) break;
        }
    }
    wake_starved(e);
    return (int)e->ev_n;
}

int mtcp_engine_poll(mtcp_engine *e, uint64_t now_us) {
    set_now(e, now_us);
    struct mtcp_link *l = e->link;
    if (!l) {
        run_timers(e);
        output_pass(e);
        wake_starved(e);
        return (int)e->ev_n;
    }
    for (int round = 0; round < LOOP_ROUNDS; round++) {
        uint32_t n = rx_batch(e, l);
        if (round == 0) run_timers(e);
        uint32_t sent = output_pass(e);
        link_txsync(l, e->now);
        if (l->link_type != MTCP_LINK_IP || (n == 0 && sent == 0)) break;
    }
    wake_starved(e);
    return (int)e->ev_n;
}

int64_t mtcp_engine_next_deadline(mtcp_engine *e) {
    if (e->out_head != NONE32 || e->ctrlq.n || e->outq.n) return (int64_t)e->now;
    int64_t d = eng_wheel_next_deadline(&e->wheel);
    if (e->neigh.incomplete && e->neigh_deadline && (d < 0 || (int64_t)e->neigh_deadline < d))
        d = (int64_t)e->neigh_deadline;
    if (e->link && e->link->ops->next_deadline) {
        int64_t ld = e->link->ops->next_deadline(e->link);
        if (ld >= 0 && (d < 0 || ld < d)) d = ld;
    }
    return d;
}

int mtcp_engine_fd(mtcp_engine *e) {
    if (!e->link || !e->link->ops->fd) return -1;
    return e->link->ops->fd(e->link);
}

void mtcp_engine_input(mtcp_engine *e, uint64_t now_us, const uint8_t *frame, uint32_t len) {
    set_now(e, now_us);
    if (!frame) return;
    rx_frame(e, frame, len, 0);
    eng_reap(e);
    if (e->ctrlq.n >= CTRLQ_FLUSH) { e->tx_full = 0; ctrl_out(e); e->tx_full = 0; }
}

uint32_t mtcp_engine_output(mtcp_engine *e, uint64_t now_us, uint8_t *buf, uint32_t bufcap,
                            uint32_t *lens, uint32_t maxframes) {
    set_now(e, now_us);
    run_timers(e);
    uint32_t n = 0, off = 0;
    for (int round = 0; round < 64; round++) {
        output_pass(e);
        while (e->outq.n && n < maxframes) {
            uint32_t f = e->outq.head;
            uint32_t fl = e->frames[f].len;
            if (fl > bufcap) {                       /* can never fit: drop */
                fifo_pop(e, &e->outq);
                eng_frame_put(e, f);
                e->counters[CTR_DROP_TX_TOO_BIG]++;
                continue;
            }
            if (off + fl > bufcap) break;
            fifo_pop(e, &e->outq);
            memcpy(buf + off, e->frames[f].buf, fl);
            lens[n++] = fl;
            off += fl;
            eng_frame_put(e, f);
        }
        if (e->outq.n || n >= maxframes) break;
        if (e->out_head == NONE32 && e->ctrlq.n == 0) break;
    }
    wake_starved(e);
    return n;
}

/* ------------------------------------------------------------------ API */

static void api_done(struct mtcp_engine *e) { eng_reap(e); }

int64_t mtcp_listen(mtcp_engine *e, const struct mtcp_addr *local, int backlog) {
    return eng_listen_open(e, local, backlog);
}

int64_t mtcp_connect(mtcp_engine *e, uint64_t now_us, const struct mtcp_addr *remote,
                     const struct mtcp_addr *local) {
    set_now(e, now_us);
    if (!remote || (remote->family != MTCP_AF_INET && remote->family != MTCP_AF_INET6)) return -EINVAL;
    int family = remote->family;
    if (local && local->family != family && !zero(local->ip, 16)) return -EINVAL;
    if (remote->port == 0 || zero(remote->ip, addr_len(family))) return -EINVAL;
    if (family == MTCP_AF_INET ? remote->ip[0] >= 224 : remote->ip[0] == 0xff) return -ENETUNREACH;
    const uint8_t *own = family == MTCP_AF_INET ? e->cfg.ipv4 : e->cfg.ipv6;
    if (zero(own, addr_len(family))) return -EADDRNOTAVAIL;
    uint8_t lip[16] = {0};
    if (local && !zero(local->ip, addr_len(family))) {
        if (!eng_is_local(e, family, local->ip)) return -EADDRNOTAVAIL;
        memcpy(lip, local->ip, (size_t)addr_len(family));
    } else {
        memcpy(lip, own, (size_t)addr_len(family));
    }
    uint8_t nh[16];
    if (eng_route_nexthop(e, family, remote->ip, nh) < 0) return -ENETUNREACH;
    int port;
    if (local && local->port) {
        if (eng_conn_lookup(e, family, lip, local->port, remote->ip, remote->port)) return -EADDRINUSE;
        if (eng_listener_count_port(e, family, local->port)) return -EADDRINUSE;
        port = eng_port_ref(e, family, local->port);
        if (port < 0) return port == -EAGAIN ? -EADDRNOTAVAIL : port;
        port = local->port;
    } else {
        port = eng_port_ephemeral(e, family, lip, remote->ip, remote->port);
        if (port < 0) return port;
    }
    /* to ourselves: the listener's child needs a block too; reserve it now (admission) */
    int self = eng_is_local(e, family, remote->ip);
    if (!blocks_room(e, self ? 2 : 1)) { eng_port_unref(e, family, (uint16_t)port); return -ENOMEM; }
    struct conn *k = eng_conn_alloc(e);
    if (!k) { eng_port_unref(e, family, (uint16_t)port); return -ENOMEM; }
    uint32_t iss = eng_conn_setup(e, k, family, lip, (uint16_t)port, remote->ip, remote->port) + (uint32_t)(e->now / 4);
    k->eflags |= CF_PORTREF;
    if (self) { k->eflags |= CF_RESV; e->resv++; }
    eng_conn_hash(e, k);
    e->counters[CTR_ACTIVE_OPENS]++;
    mtcp_cid cid = conn_cid(e, k);
    tcp_open_active(&e->env, &k->tcp, e->now, iss);
    api_done(e);
    return (int64_t)cid;
}

static struct conn *get_conn(struct mtcp_engine *e, mtcp_cid cid, int *err) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) { *err = -EBADF; return NULL; }
    if (k->kind != CK_CONN) { *err = -ENOTCONN; return NULL; }
    return k;
}

int64_t mtcp_send(mtcp_engine *e, mtcp_cid cid, const uint8_t *data, uint32_t len) {
    int err;
    struct conn *k = get_conn(e, cid, &err);
    if (!k) return err;
    int64_t rc = tcp_send(&e->env, &k->tcp, e->now, data, len);
    /* short for lack of pool chunks while the connection's own sndbuf has room: remember it, so
     * WRITABLE follows when chunks free up (tcp only reports WRITABLE on ACKs of its own data) */
    if (rc >= 0 && (uint64_t)rc < len && (k->tcp.flags & TCPF_WANT_WRITABLE) &&
        k->tcp.snd.len < k->tcp.sndbuf) {
        if (e->starved_n < STARVED_MAX) e->starved[e->starved_n++] = cid;
        else e->starved_overflow = 1;
    }
    api_done(e);
    return rc;
}

int64_t mtcp_recv(mtcp_engine *e, mtcp_cid cid, uint8_t *buf, uint32_t cap) {
    int err;
    struct conn *k = get_conn(e, cid, &err);
    if (!k) return err;
    int64_t rc = tcp_recv(&e->env, &k->tcp, e->now, buf, cap);
    api_done(e);
    return rc;
}

int64_t mtcp_readable(mtcp_engine *e, mtcp_cid cid) {
    int err;
    struct conn *k = get_conn(e, cid, &err);
    if (!k) return err;
    return k->tcp.rcv.len;
}

int mtcp_shutdown(mtcp_engine *e, mtcp_cid cid) {
    int err;
    struct conn *k = get_conn(e, cid, &err);
    if (!k) return err;
    int rc = tcp_shutdown(&e->env, &k->tcp, e->now);
    api_done(e);
    return rc;
}

static int release(struct mtcp_engine *e, mtcp_cid cid, int abort) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) return -EBADF;
    if (k->kind == CK_LISTEN) { eng_listen_close(e, k); return 0; }
    k->eflags |= CF_DETACHED;
    k->tcp.flags |= TCPF_DETACHED;
    if (k->eflags & CF_CLOSED) {
        tcp_close(&e->env, &k->tcp, e->now);       /* releases buffers only */
        make_zombie(e, k);
    } else if (abort) {
        tcp_abort(&e->env, &k->tcp, e->now);
    } else {
        tcp_close(&e->env, &k->tcp, e->now);
        tw_check(e, k);                 /* released while already in TIME-WAIT */
    }
    api_done(e);
    return 0;
}

int mtcp_close(mtcp_engine *e, mtcp_cid cid) { return release(e, cid, 0); }
int mtcp_abort(mtcp_engine *e, mtcp_cid cid) { return release(e, cid, 1); }

int mtcp_setopt(mtcp_engine *e, mtcp_cid cid, int opt, int64_t val) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) return -EBADF;
    int rc = tcp_setopt(&e->env, &k->tcp, opt, val);
    api_done(e);
    return rc;
}

int mtcp_getopt(mtcp_engine *e, mtcp_cid cid, int opt, int64_t *val) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) return -EBADF;
    if (!val) return -EINVAL;
    return tcp_getopt(&k->tcp, opt, val);
}

static void fill_addr(struct mtcp_addr *a, int family, const uint8_t *ip, uint16_t port) {
    memset(a, 0, sizeof *a);
    a->family = (uint8_t)family;
    a->port = port;
    memcpy(a->ip, ip, (size_t)addr_len(family));
}

int mtcp_getaddrs(mtcp_engine *e, mtcp_cid cid, struct mtcp_addr *local, struct mtcp_addr *remote) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) return -EBADF;
    if (local) fill_addr(local, k->tcp.family, k->lip, k->tcp.local_port);
    if (remote) fill_addr(remote, k->tcp.family, k->rip, k->kind == CK_LISTEN ? 0 : k->tcp.remote_port);
    return 0;
}

int mtcp_conn_info(mtcp_engine *e, mtcp_cid cid, struct mtcp_conn_info *out) {
    struct conn *k = eng_conn_get(e, cid);
    if (!k) return -EBADF;
    memset(out, 0, sizeof *out);
    if (k->kind == CK_LISTEN) {
        out->state = MTCP_ST_LISTEN;
        out->mss = k->tcp.mss;
    } else {
        tcp_info(&k->tcp, out);
        if (k->eflags & CF_CLOSED) out->state = MTCP_ST_CLOSED;
    }
    fill_addr(&out->local, k->tcp.family, k->lip, k->tcp.local_port);
    fill_addr(&out->remote, k->tcp.family, k->rip, k->kind == CK_LISTEN ? 0 : k->tcp.remote_port);
    return 0;
}

uint32_t mtcp_conn_list(mtcp_engine *e, mtcp_cid after, mtcp_cid *out, uint32_t max) {
    uint32_t n = 0;
    uint32_t start = after ? (uint32_t)after + 1 : 0;
    for (uint32_t i = start; i < e->nconns && n < max; i++) {
        struct conn *k = &e->conns[i];
        if (k->kind == CK_FREE || (k->eflags & (CF_DETACHED | CF_HIDDEN))) continue;
        out[n++] = conn_cid(e, k);
    }
    return n;
}

void mtcp_engine_counters(mtcp_engine *e, uint64_t *out, uint32_t n) {
    if (n > CTR_COUNT) n = CTR_COUNT;
    memcpy(out, e->counters, (size_t)n * sizeof *out);
}

void mtcp_engine_pool_usage(mtcp_engine *e, uint64_t out[4]) {
    out[0] = e->conns_used;
    out[1] = e->pool.nchunks - e->pool.nfree;
    out[2] = e->ooo_used;
    out[3] = e->ev_n;
}

void mtcp_engine_rack_usage(mtcp_engine *e, uint64_t out[2]) {
    out[0] = e->rec_used;
    out[1] = e->nrec;
}
