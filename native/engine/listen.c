/*
 * listen.c — listeners, SYN queue, accept-queue backlog and SYN cookies (RFC 4987).
 *
 * A listener is a connection block of kind CK_LISTEN hashed by (family, local port) with a
 * specific or wildcard address. A SYN that matches no connection but a listener:
 *   - accept queue (established, ACCEPT not yet taken by mtcp_engine_events) >= backlog: drop;
 *   - SYN queue (SYN-RECEIVED children) < cfg->syn_backlog and cookies not ALWAYS: a child block
 *     in SYN-RECEIVED (tcp_open_passive), hidden from the application until TCP reports ACCEPT;
 *   - otherwise (queue full or no block) with cookies on: a stateless SYN-ACK whose ISN is the
 *     cookie:  seq = cnt(3 bits, 64 s units) | mss index(3) | MAC(26) where MAC = SipHash of the
 *     4-tuple, the client ISN and cnt under the engine's cookie key. When the peer sent
 *     timestamps, our tsval's low 6 bits carry window scale (4 bits, 15 = none), SACK-permitted
 *     and a "cookie options" marker, so the returning ACK's tsecr gives them back (as Linux does);
 *     without timestamps neither wscale nor SACK are offered.
 * An ACK that matches a listener is checked as a cookie (accepted for 2 counter periods,
 * ~2 min); valid -> child block straight to ESTABLISHED (tcp_open_cookie), else RST.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

static const uint16_t cookie_mss[8] = {536, 1220, 1360, 1440, 1460, 4312, 8960, 65495};
#define COOKIE_SHIFT 26            /* counter period: 2^26 us ~ 67 s */

static uint32_t cookie_mac(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport,
                           const uint8_t *rip, uint16_t rport, uint32_t cisn, uint32_t cnt) {
    uint8_t m[44];
    int al = addr_len(family);
    memcpy(m, lip, (size_t)al);
    memcpy(m + al, rip, (size_t)al);
    uint8_t *p = m + 2 * al;
    wire_put16(p, lport); wire_put16(p + 2, rport);
    wire_put32(p + 4, cisn); wire_put32(p + 8, cnt);
    return (uint32_t)eng_siphash24(e->cookie_key, m, (size_t)(2 * al + 12)) & 0x3ffffff;
}

uint8_t eng_wscale(uint32_t rcvbuf) { return tcp_wscale_for(rcvbuf); }

static int zero_addr(const uint8_t *ip, int family) {
    for (int i = 0; i < addr_len(family); i++) if (ip[i]) return 0;
    return 1;
}

int64_t eng_listen_open(struct mtcp_engine *e, const struct mtcp_addr *local, int backlog) {
    if (!local || (local->family != MTCP_AF_INET && local->family != MTCP_AF_INET6)) return -EINVAL;
    int family = local->family;
    const uint8_t *own = family == MTCP_AF_INET ? e->cfg.ipv4 : e->cfg.ipv6;
    if (zero_addr(own, family)) return -EADDRNOTAVAIL;
    if (!zero_addr(local->ip, family) && !eng_is_local(e, family, local->ip)) return -EADDRNOTAVAIL;
    uint16_t port = local->port;
    struct mtcp_link *lk = e->link;
    if (port == 0) {
        uint32_t lo = e->cfg.eph_port_lo, n = (uint32_t)e->cfg.eph_port_hi - lo + 1;
        uint32_t off = (uint32_t)eng_siphash24(e->port_key, &e->eph_next, sizeof e->eph_next);
        int found = 0;
        for (uint32_t i = 0; i < n && !found; i++) {
            uint16_t p = (uint16_t)(lo + (off + i) % n);
            if (eng_listener_count_port(e, family, p) || e->portref[family == MTCP_AF_INET ? 0 : 1][p]) continue;
            if (lk && lk->ops->claim_port && lk->ops->claim_port(lk, family, p, 1) < 0) continue;
            port = p;
            found = 1;
        }
        e->eph_next++;
        if (!found) return -EADDRINUSE;
    } else {
        if (eng_listener_conflict(e, family, local->ip, port)) return -EADDRINUSE;
        if (eng_listener_count_port(e, family, port) == 0 && lk && lk->ops->claim_port) {
            int rc = lk->ops->claim_port(lk, family, port, 1);
            if (rc < 0) return rc == -EAGAIN ? -EADDRNOTAVAIL : rc;
        }
    }
    struct conn *k = eng_conn_alloc(e);
    if (!k) {
        if (eng_listener_count_port(e, family, port) == 0 && lk && lk->ops->release_port)
            lk->ops->release_port(lk, family, port, 1);
        return -ENOMEM;
    }
    k->kind = CK_LISTEN;
    memcpy(k->lip, local->ip, (size_t)addr_len(family));
    tcp_conn_init(&e->env, &k->tcp, family, port, 0, eng_path_mss(e, family));
    k->tcp.state = MTCP_ST_LISTEN;
    k->u.ls.backlog = backlog <= 0 ? 128 : (uint32_t)(backlog > 65535 ? 65535 : backlog);
    k->u.ls.synq = k->u.ls.acceptq = 0;
    k->u.ls.head = NONE32;
    eng_listener_hash(e, k);
    return (int64_t)conn_cid(e, k);
}

void eng_listen_child_unlink(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_CHILD)) return;
    struct conn *l = &e->conns[k->u.ch.parent];
    if (l->kind == CK_LISTEN && l->gen == k->u.ch.parent_gen) {
        if (k->u.ch.cprev != NONE32) e->conns[k->u.ch.cprev].u.ch.cnext = k->u.ch.cnext;
        else l->u.ls.head = k->u.ch.cnext;
        if (k->u.ch.cnext != NONE32) e->conns[k->u.ch.cnext].u.ch.cprev = k->u.ch.cprev;
        if (k->eflags & CF_HIDDEN) l->u.ls.synq--;
        if (k->eflags & CF_ACCEPTQ) l->u.ls.acceptq--;
    }
    k->eflags &= (uint16_t)~CF_CHILD;
    k->u.ch.cnext = k->u.ch.cprev = NONE32;
}

void eng_listen_close(struct mtcp_engine *e, struct conn *l) {
    int family = l->tcp.family;
    uint16_t port = l->tcp.local_port;
    eng_listener_unhash(e, l);
    /* reset children not yet handed to the application */
    while (l->u.ls.head != NONE32) {
        struct conn *k = &e->conns[l->u.ls.head];
        eng_listen_child_unlink(e, k);
        k->eflags |= CF_DETACHED;
        k->tcp.flags |= TCPF_DETACHED;
        if (!(k->eflags & (CF_ZOMBIE | CF_CLOSED))) tcp_abort(&e->env, &k->tcp, e->now);
        if ((k->eflags & CF_CLOSED) && !(k->eflags & CF_ZOMBIE)) {
            k->eflags |= CF_ZOMBIE;
            k->hnext = e->reap_head;
            e->reap_head = conn_idx(e, k);
        }
    }
    if (eng_listener_count_port(e, family, port) == 0 && e->link && e->link->ops->release_port)
        e->link->ops->release_port(e->link, family, port, 1);
    eng_conn_free(e, l);
    eng_reap(e);
}

static struct conn *child_new(struct mtcp_engine *e, struct conn *l, int family, const uint8_t *lip,
                              const uint8_t *rip, const struct wire_tcp *seg, uint32_t *f) {
    struct conn *k = NULL;
    if (e->resv && eng_is_local(e, family, rip)) {
        /* our own active open: it reserved this block (admission, api.c) */
        struct conn *cl = eng_conn_lookup(e, family, rip, seg->sport, lip, seg->dport);
        if (cl && cl->kind == CK_CONN) k = eng_conn_take_reserved(e, cl);
    }
    if (!k) k = eng_conn_alloc_recycle(e);
    if (!k) return NULL;
    *f = eng_conn_setup(e, k, family, lip, seg->dport, rip, seg->sport);
    /* inherit the listener's options */
    struct tcp_conn *c = &k->tcp, *lc = &l->tcp;
    c->flags = (uint16_t)((c->flags & ~(TCPF_NODELAY | TCPF_KEEPALIVE)) | (lc->flags & (TCPF_NODELAY | TCPF_KEEPALIVE)));
    c->ka_idle_us = lc->ka_idle_us;
    c->ka_intvl_us = lc->ka_intvl_us;
    c->ka_cnt = lc->ka_cnt;
    c->sndbuf = lc->sndbuf;
    c->rcvbuf = lc->rcvbuf;
    k->eflags |= CF_HIDDEN | CF_CHILD;
    k->u.ch.parent = conn_idx(e, l);
    k->u.ch.parent_gen = l->gen;
    k->u.ch.cprev = NONE32;
    k->u.ch.cnext = l->u.ls.head;
    if (l->u.ls.head != NONE32) e->conns[l->u.ls.head].u.ch.cprev = conn_idx(e, k);
    l->u.ls.head = conn_idx(e, k);
    l->u.ls.synq++;
    eng_conn_hash(e, k);
    /* no MAC is learned from the segment (a spoofed SYN would redirect the peer's traffic):
     * the SYN-ACK waits for ARP/NDP like any reply (neigh.c) */
    return k;
}

static void send_cookie(struct mtcp_engine *e, struct conn *l, int family, const uint8_t *lip,
                        const uint8_t *rip, const struct wire_tcp *syn) {
    uint16_t our = eng_path_mss(e, family);
    uint16_t peer = syn->has_mss ? syn->mss : (family == MTCP_AF_INET ? 536 : 1220);
    uint16_t want = peer < our ? peer : our;
    uint32_t mi = 0;
    for (uint32_t i = 0; i < 8; i++) if (cookie_mss[i] <= want) mi = i;
    uint32_t cnt = (uint32_t)(e->now >> COOKIE_SHIFT);
    uint32_t cookie = ((cnt & 7u) << 29) | (mi << 26) |
                      cookie_mac(e, family, lip, syn->dport, rip, syn->sport, syn->seq, cnt);
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = syn->dport;
    t.dport = syn->sport;
    t.seq = cookie;
    t.ack = syn->seq + 1;
    t.flags = WIRE_TCP_SYN | WIRE_TCP_ACK;
    uint32_t rcvbuf = l->tcp.rcvbuf ? l->tcp.rcvbuf : e->cfg.rcvbuf;
    t.win = (uint16_t)(rcvbuf > 65535 ? 65535 : rcvbuf);
    t.has_mss = 1;
    t.mss = our;
    if (syn->has_ts && e->cfg.timestamps) {
        uint32_t ws = 15, sack = 0;
        if (syn->has_wscale && e->cfg.window_scaling) {
            ws = eng_wscale(rcvbuf);
            t.has_wscale = 1;
            t.wscale = (uint8_t)ws;
            ws = syn->wscale;               /* what we must remember: the peer's shift */
        }
        if (syn->sack_perm && e->cfg.sack) { sack = 1; t.sack_perm = 1; }
        t.has_ts = 1;
        /* our clock as the connection will run it (tcp.c: now_ms + ts_offset), low 6 bits
         * replaced, never ahead of it (so later segments don't look older to PAWS) */
        uint32_t tsnow = (uint32_t)(e->now / 1000) + (uint32_t)(eng_isn_hash(e->isn_key, family, lip, syn->dport, rip, syn->sport) >> 32);
        uint32_t bits = (ws & 0xf) | (sack << 4) | (1u << 5);
        t.tsval = (tsnow & ~0x3fu) | bits;
        if ((int32_t)(t.tsval - tsnow) > 0) t.tsval -= 64;
        t.tsecr = syn->tsval;
    }
    eng_ctrl_tcp(e, family, lip, rip, &t, NULL);       /* SYNCOOKIES_SENT counted on the wire */
    l->u.ls.cookies_sent++;                         /* per listener: cookies issued */
}

/* 1 and the options if ack->ack - 1 is a cookie we issued for this 4-tuple recently. */
static int check_cookie(struct mtcp_engine *e, int family, const uint8_t *lip, const uint8_t *rip,
                        const struct wire_tcp *ack, uint16_t *mss, uint8_t *ws, uint8_t *sack) {
    uint32_t cookie = ack->ack - 1;
    uint32_t cur = (uint32_t)(e->now >> COOKIE_SHIFT);
    uint32_t age = (cur - (cookie >> 29)) & 7u;
    if (age > 1) return 0;
    uint32_t cnt = cur - age;
    if ((cookie & 0x3ffffff) != cookie_mac(e, family, lip, ack->dport, rip, ack->sport, ack->seq - 1, cnt))
        return 0;
    *mss = cookie_mss[(cookie >> 26) & 7];
    *ws = 0xff;
    *sack = 0;
    if (ack->has_ts && (ack->tsecr & (1u << 5))) {
        uint32_t w = ack->tsecr & 0xf;
        if (w != 15) *ws = (uint8_t)(w > 14 ? 14 : w);
        *sack = (ack->tsecr >> 4) & 1;
    }
    return 1;
}

static void rst_reply(struct mtcp_engine *e, int family, const uint8_t *lip, const uint8_t *rip,
                      const struct wire_tcp *seg) {
    struct wire_tcp rst;
    if (tcp_rst_for(seg, &rst)) eng_ctrl_tcp(e, family, lip, rip, &rst, NULL);
}

void eng_listen_input(struct mtcp_engine *e, struct conn *l, int family, const uint8_t *lip,
                  const uint8_t *rip, const struct wire_tcp *seg) {
    if (seg->flags & WIRE_TCP_RST) return;                  /* RFC 9293 3.10.7.2: ignore */
    if ((seg->flags & (WIRE_TCP_SYN | WIRE_TCP_ACK)) == (WIRE_TCP_SYN | WIRE_TCP_ACK)) {
        rst_reply(e, family, lip, rip, seg);                  /* "any acknowledgment is bad" */
        return;
    }
    if ((seg->flags & (WIRE_TCP_SYN | WIRE_TCP_ACK)) == WIRE_TCP_SYN) {
        if (l->u.ls.acceptq >= l->u.ls.backlog) { e->counters[CTR_DROP_LISTEN_OVERFLOW]++; l->u.ls.overflows++; return; }
        int mode = e->cfg.syncookies;
        int cookie = mode == MTCP_SYNCOOKIES_ALWAYS ||
                     (mode == MTCP_SYNCOOKIES_ON_OVERFLOW && l->u.ls.synq >= e->cfg.syn_backlog);
        if (!cookie && l->u.ls.synq >= e->cfg.syn_backlog) { e->counters[CTR_DROP_LISTEN_OVERFLOW]++; l->u.ls.overflows++; return; }
        uint32_t f = 0;
        struct conn *k = cookie ? NULL : child_new(e, l, family, lip, rip, seg, &f);
        if (!k && !cookie && eng_is_local(e, family, rip)) {
            /* no block for a connection from one of our own addresses (another engine of this
             * host, or a local open without a reservation): refuse it at once — a cookie would
             * tell the client "connected" for a connection no block can hold */
            e->counters[CTR_DROP_NO_MEM]++;
            e->counters[CTR_ADMISSION_REFUSED]++;
            rst_reply(e, family, lip, rip, seg);
            return;
        }
        if (!k) {
            if (mode == MTCP_SYNCOOKIES_OFF) { e->counters[CTR_DROP_NO_MEM]++; return; }
            if (eng_neigh_reply_hopeless(e, family, rip)) {
                e->counters[CTR_SYNCOOKIES_UNSENT]++;
                e->counters[CTR_NEIGH_TABLE_FULL]++;
                return;
            }
            send_cookie(e, l, family, lip, rip, seg);
            return;
        }
        uint32_t iss = f + (uint32_t)(e->now / 4);
        e->counters[CTR_PASSIVE_OPENS]++;
        tcp_open_passive(&e->env, &k->tcp, e->now, iss, seg);
        return;
    }
    if ((seg->flags & (WIRE_TCP_SYN | WIRE_TCP_ACK)) == WIRE_TCP_ACK) {
        uint16_t mss;
        uint8_t ws, sack;
        if (e->cfg.syncookies == MTCP_SYNCOOKIES_OFF ||
            !check_cookie(e, family, lip, rip, seg, &mss, &ws, &sack)) {
            if (e->cfg.syncookies != MTCP_SYNCOOKIES_OFF) e->counters[CTR_SYNCOOKIES_FAILED]++;
            e->counters[CTR_DROP_BAD_COOKIE]++;
            rst_reply(e, family, lip, rip, seg);
            return;
        }
        if (l->u.ls.acceptq >= l->u.ls.backlog) { e->counters[CTR_DROP_LISTEN_OVERFLOW]++; l->u.ls.overflows++; return; }
        uint16_t our = eng_path_mss(e, family);
        if (mss > our) mss = our;
        uint32_t f;
        struct conn *k = child_new(e, l, family, lip, rip, seg, &f);
        if (!k) {
            /* the peer believes it is connected: refuse at once with a RST instead of leaving
             * it to retransmit into a connection that does not exist */
            e->counters[CTR_DROP_NO_MEM]++;
            e->counters[CTR_ADMISSION_REFUSED]++;
            rst_reply(e, family, lip, rip, seg);
            return;
        }
        e->counters[CTR_SYNCOOKIES_ACCEPTED]++;
        l->u.ls.cookies_ok++;
        e->counters[CTR_PASSIVE_OPENS]++;
        tcp_open_cookie(&e->env, &k->tcp, e->now, seg->ack - 1, seg, mss, ws, sack);
        return;
    }
}
