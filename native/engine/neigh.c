/*
 * neigh.c — routing (on-link / gateway), the ARP (RFC 826) and NDP (RFC 4861) neighbour cache
 * and the bounded queue of frames waiting for resolution.
 *
 * Entries: INCOMPLETE (request sent; up to NEIGH_QMAX frames wait, oldest dropped first;
 * re-requested every second, NEIGH_RETRIES times, then FAILED and the queue is dropped),
 * REACHABLE (usable; after cfg->neigh_timeout_us it is still used while a refresh request
 * goes out, at most once a second), FAILED (frames to it are dropped for a second).
 * The table is fixed-size (NEIGH_N); when full, a FAILED entry is replaced first, then an
 * INCOMPLETE one started for an unverified source ("weak"), then the REACHABLE entry that
 * expires first; an INCOMPLETE entry our own connections wait for is never replaced.
 *
 * Learning (RFC 826 merge / RFC 4861 7.2.3-7.2.5, as Linux): an ARP packet updates the entry of
 * its sender IP if there is one, and creates it only when it is a packet for our address; an NS
 * for our address creates/updates its source's entry, an NA updates an existing one. A TCP
 * segment never teaches a MAC: replies to a SYN, a segment to a closed port or a ping go out
 * only after the source resolved (eng_neigh_resolve_weak: at most NEIGH_N/2 such resolutions at a
 * time, one waiting frame each, half the wait queue at most), so a spoofed frame can neither
 * redirect a known peer's traffic nor draw a reply to an unverified MAC. Requests are limited
 * to cfg.solicit_ratelimit per second; weak resolutions may use half of that budget.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

void eng_neigh_init(struct mtcp_engine *e) {
    memset(&e->neigh, 0, sizeof e->neigh);
    for (int i = 0; i < NEIGH_BUCKETS; i++) e->neigh.bucket[i] = NONE32;
    for (int i = 0; i < NEIGH_N; i++) {
        e->neigh.ent[i].hnext = NONE32;
        e->neigh.ent[i].qhead = e->neigh.ent[i].qtail = NONE32;
    }
}

static int in_prefix(const uint8_t *a, const uint8_t *b, int bits) {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0) return 0;
    if (rest) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((a[full] & m) != (b[full] & m)) return 0;
    }
    return 1;
}

static int zero(const uint8_t *a, int n) {
    for (int i = 0; i < n; i++) if (a[i]) return 0;
    return 1;
}

int eng_route_nexthop(struct mtcp_engine *e, int family, const uint8_t *dst, uint8_t *nh) {
    const struct mtcp_config *c = &e->cfg;
    if (family == MTCP_AF_INET) {
        if (zero(c->ipv4, 4)) return -ENETUNREACH;
        if (e->cfg.link_type == MTCP_LINK_IP || in_prefix(dst, c->ipv4, c->ipv4_prefix)) { memcpy(nh, dst, 4); return 0; }
        if (zero(c->ipv4_gw, 4)) return -ENETUNREACH;
        memcpy(nh, c->ipv4_gw, 4);
        return 0;
    }
    if (zero(c->ipv6, 16)) return -ENETUNREACH;
    if (e->cfg.link_type == MTCP_LINK_IP || (dst[0] == 0xfe && (dst[1] & 0xc0) == 0x80) ||
        in_prefix(dst, c->ipv6, c->ipv6_prefix)) { memcpy(nh, dst, 16); return 0; }
    if (zero(c->ipv6_gw, 16)) return -ENETUNREACH;
    memcpy(nh, c->ipv6_gw, 16);
    return 0;
}

static uint32_t nbucket(const struct mtcp_engine *e, int family, const uint8_t *ip) {
    /* per packet (every tx_begin on Ethernet): a keyed multiplicative hash, not SipHash */
    uint64_t h = e->hash_seed ^ (uint64_t)family;
    for (int i = 0; i < addr_len(family); i += 4) {
        uint32_t w;
        memcpy(&w, ip + i, 4);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    }
    return (uint32_t)(h >> 40) & (NEIGH_BUCKETS - 1);
}

static uint32_t neigh_find(struct mtcp_engine *e, int family, const uint8_t *ip) {
    for (uint32_t i = e->neigh.bucket[nbucket(e, family, ip)]; i != NONE32; i = e->neigh.ent[i].hnext) {
        struct neigh *n = &e->neigh.ent[i];
        if (n->family == family && memcmp(n->ip, ip, (size_t)addr_len(family)) == 0) return i;
    }
    return NONE32;
}

static void neigh_drop_queue(struct mtcp_engine *e, struct neigh *n) {
    uint32_t f = n->qhead;
    while (f != NONE32) {
        uint32_t nx = e->frames[f].next;
        eng_frame_drop(e, f);
        e->counters[CTR_DROP_NEIGH_QUEUE]++;
        f = nx;
    }
    e->neighq_n -= n->nq;
    n->qhead = n->qtail = NONE32;
    n->nq = 0;
}

static void neigh_unlink(struct mtcp_engine *e, uint32_t idx) {
    struct neigh *n = &e->neigh.ent[idx];
    uint32_t *pp = &e->neigh.bucket[nbucket(e, n->family, n->ip)];
    while (*pp != NONE32) {
        if (*pp == idx) { *pp = n->hnext; break; }
        pp = &e->neigh.ent[*pp].hnext;
    }
    if (n->state == NS_INCOMPLETE) e->neigh.incomplete--;
    neigh_drop_queue(e, n);
    n->state = NS_FREE;
    n->gen++;
    n->hnext = NONE32;
}

static uint32_t neigh_new(struct mtcp_engine *e, int family, const uint8_t *ip, int weak) {
    /* victims by preference: free, failed, a weak INCOMPLETE (strong callers only), the
     * REACHABLE entry expiring first (strong callers only) */
    uint32_t failed = NONE32, wk = NONE32, reach = NONE32, victim = NONE32;
    uint64_t of = UINT64_MAX, ow = UINT64_MAX, orr = UINT64_MAX;
    for (uint32_t i = 0; i < NEIGH_N; i++) {
        struct neigh *n = &e->neigh.ent[i];
        if (n->state == NS_FREE) { victim = i; break; }
        if (n->state == NS_FAILED && n->expires < of) { of = n->expires; failed = i; }
        else if (n->state == NS_INCOMPLETE && n->weak && n->next_probe < ow) { ow = n->next_probe; wk = i; }
        else if (n->state == NS_REACHABLE && n->expires < orr) { orr = n->expires; reach = i; }
    }
    if (victim == NONE32) victim = failed;
    if (victim == NONE32 && !weak) victim = wk != NONE32 ? wk : reach;
    if (victim == NONE32) { e->counters[CTR_NEIGH_TABLE_FULL]++; return NONE32; }
    if (e->neigh.ent[victim].state != NS_FREE) neigh_unlink(e, victim);
    struct neigh *n = &e->neigh.ent[victim];
    uint32_t gen = n->gen + 1;
    memset(n, 0, sizeof *n);
    n->gen = gen ? gen : 1;
    n->family = (uint8_t)family;
    memcpy(n->ip, ip, (size_t)addr_len(family));
    n->qhead = n->qtail = NONE32;
    uint32_t b = nbucket(e, family, ip);
    n->hnext = e->neigh.bucket[b];
    e->neigh.bucket[b] = victim;
    return victim;
}

static void solicit(struct mtcp_engine *e, struct neigh *n) {
    /* resolutions for unverified sources (weak) may use half the budget: the rest is kept for our
     * own connections and for peers that talked ARP/NDP to us */
    uint32_t keep = n->weak ? e->cfg.solicit_ratelimit / 2 : 0;
    if (!eng_tb_take_above(&e->tb_solicit, e->now, e->cfg.solicit_ratelimit, e->cfg.solicit_ratelimit, keep)) {
        e->counters[CTR_SOLICIT_RATELIMITED]++;      /* retried at the next probe time */
        return;
    }
    if (n->family == MTCP_AF_INET) {
        eng_ctrl_room(e);
        uint32_t f = eng_frame_get(e);
        if (f == NONE32 || e->ctrlq.n >= CTRLQ_MAX) {
            if (f != NONE32) eng_frame_put(e, f);
            e->counters[CTR_DROP_CTRL_QUEUE]++;
            return;
        }
        uint8_t *p = e->frames[f].buf;
        struct wire_eth eth;
        memcpy(eth.dst, bcast, 6);
        memcpy(eth.src, e->cfg.mac, 6);
        eth.ethertype = WIRE_ETHERTYPE_ARP;
        size_t l = wire_eth_emit(p, e->fsize, &eth);
        struct wire_arp a;
        memset(&a, 0, sizeof a);
        a.op = WIRE_ARP_REQUEST;
        memcpy(a.sha, e->cfg.mac, 6);
        memcpy(a.spa, e->cfg.ipv4, 4);
        memcpy(a.tpa, n->ip, 4);
        l += wire_arp_emit(p + l, e->fsize - l, &a);
        e->frames[f].len = (uint32_t)l;
        e->frames[f].next = NONE32;
        /* push on the control queue */
        eng_ctrl_push(e, f);
        e->counters[CTR_ARP_REQUESTS]++;
    } else {
        uint8_t *l4;
        uint32_t cap;
        uint32_t f = eng_ctrl_begin(e, MTCP_AF_INET6, &l4, &cap);
        if (f == NONE32) return;
        uint8_t dst[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, n->ip[13], n->ip[14], n->ip[15]};
        uint8_t dmac[6] = {0x33, 0x33, 0xff, n->ip[13], n->ip[14], n->ip[15]};
        struct wire_icmp6 m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_ICMP6_NEIGH_SOLICIT;
        memcpy(m.target, n->ip, 16);
        m.has_lladdr = 1;
        memcpy(m.lladdr, e->cfg.mac, 6);
        size_t l = wire_icmp6_emit(l4, cap, e->cfg.ipv6, dst, &m);
        if (!l) { eng_frame_put(e, f); return; }
        eng_ctrl_commit(e, f, MTCP_AF_INET6, e->cfg.ipv6, dst, WIRE_PROTO_ICMPV6, (uint32_t)l, dmac, 255);
        e->counters[CTR_NDP_SOLICITS]++;
    }
}

static uint32_t resolve(struct mtcp_engine *e, int family, const uint8_t *nh, int weak) {
    uint32_t i = neigh_find(e, family, nh);
    if (i != NONE32) {
        struct neigh *n = &e->neigh.ent[i];
        if (!weak) n->weak = 0;                      /* our own traffic waits for it too */
        if (n->state == NS_REACHABLE && e->now >= n->expires && e->now >= n->next_probe) {
            n->next_probe = e->now + NEIGH_RETRY_US;   /* stale: keep using it, refresh */
            solicit(e, n);
        } else if (n->state == NS_FAILED && e->now >= n->expires) {
            n->state = NS_INCOMPLETE;
            n->probes = 1;
            n->next_probe = e->now + NEIGH_RETRY_US;
            e->neigh.incomplete++;
            if (e->neigh_deadline == 0 || n->next_probe < e->neigh_deadline) e->neigh_deadline = n->next_probe;
            solicit(e, n);
        }
        return i;
    }
    if (weak && e->neigh.incomplete >= NEIGH_N / 2) { e->counters[CTR_NEIGH_TABLE_FULL]++; return NONE32; }
    i = neigh_new(e, family, nh, weak);
    if (i == NONE32) return NONE32;
    struct neigh *n = &e->neigh.ent[i];
    n->weak = (uint8_t)weak;
    n->state = NS_INCOMPLETE;
    n->probes = 1;
    n->next_probe = e->now + NEIGH_RETRY_US;
    e->neigh.incomplete++;
    if (e->neigh_deadline == 0 || n->next_probe < e->neigh_deadline) e->neigh_deadline = n->next_probe;
    solicit(e, n);
    return i;
}

uint32_t eng_neigh_resolve(struct mtcp_engine *e, int family, const uint8_t *nh) { return resolve(e, family, nh, 0); }

int eng_neigh_reply_hopeless(struct mtcp_engine *e, int family, const uint8_t *dst) {
    if (!e->l2len) return 0;
    uint8_t nh[16];
    if (eng_route_nexthop(e, family, dst, nh) < 0) return 1;
    uint32_t i = neigh_find(e, family, nh);
    if (i != NONE32) return e->neigh.ent[i].state == NS_FAILED && e->now < e->neigh.ent[i].expires;
    return e->neigh.incomplete >= NEIGH_N / 2;
}
uint32_t eng_neigh_resolve_weak(struct mtcp_engine *e, int family, const uint8_t *nh) { return resolve(e, family, nh, 1); }

void eng_neigh_learn(struct mtcp_engine *e, int family, const uint8_t *ip, const uint8_t *mac, int create) {
    if (mac[0] & 1) return;                       /* multicast/broadcast MAC: ignore */
    uint32_t i = neigh_find(e, family, ip);
    if (i == NONE32) {
        if (!create) return;
        i = neigh_new(e, family, ip, 0);
        if (i == NONE32) return;
    }
    struct neigh *n = &e->neigh.ent[i];
    n->weak = 0;
    if (n->state == NS_INCOMPLETE) {
        e->neigh.incomplete--;
        e->counters[CTR_NEIGH_RESOLVED]++;
    }
    n->state = NS_REACHABLE;
    memcpy(n->mac, mac, 6);
    n->expires = e->now + e->cfg.neigh_timeout_us;
    n->next_probe = 0;
    n->probes = 0;
    /* release the waiting frames onto the control queue (they already hold a buffer) */
    uint32_t f = n->qhead;
    while (f != NONE32) {
        uint32_t nx = e->frames[f].next;
        memcpy(e->frames[f].buf, mac, 6);
        e->frames[f].next = NONE32;
        eng_ctrl_push(e, f);
        f = nx;
    }
    e->neighq_n -= n->nq;
    n->qhead = n->qtail = NONE32;
    n->nq = 0;
}

void eng_neigh_enqueue(struct mtcp_engine *e, uint32_t ni, uint32_t f) {
    struct neigh *n = &e->neigh.ent[ni];
    /* a weak entry keeps its newest frame only, and weak entries fill half the queue at most */
    uint32_t qmax = n->weak ? 1 : NEIGH_QMAX, gmax = n->weak ? NEIGHQ_MAX / 2 : NEIGHQ_MAX;
    if (n->nq >= qmax || e->neighq_n >= gmax) {
        if (n->qhead == NONE32) { eng_frame_drop(e, f); e->counters[CTR_DROP_NEIGH_QUEUE]++; return; }
        uint32_t old = n->qhead;                   /* drop the oldest */
        n->qhead = e->frames[old].next;
        if (n->qhead == NONE32) n->qtail = NONE32;
        eng_frame_drop(e, old);
        n->nq--;
        e->neighq_n--;
        e->counters[CTR_DROP_NEIGH_QUEUE]++;
    }
    e->frames[f].next = NONE32;
    if (n->qtail == NONE32) n->qhead = f; else e->frames[n->qtail].next = f;
    n->qtail = f;
    n->nq++;
    e->neighq_n++;
}

/* Resolution failed: connections still in SYN-SENT whose SYN waits in n's queue fail with
 * EHOSTUNREACH (as Linux reports an unanswered ARP/NDP to connect()). Runs from eng_neigh_tick,
 * outside any TCP call. */
static void neigh_fail_connects(struct mtcp_engine *e, struct neigh *n) {
    for (uint32_t f = n->qhead; f != NONE32; f = e->frames[f].next) {
        const uint8_t *p = e->frames[f].buf + e->l2len;
        uint32_t len = e->frames[f].len;
        const uint8_t *src, *dst, *th;
        int family;
        if (n->family == MTCP_AF_INET) {
            if (len < e->l2len + 40 || p[9] != WIRE_PROTO_TCP) continue;
            family = MTCP_AF_INET; src = p + 12; dst = p + 16; th = p + 20;
        } else {
            if (len < e->l2len + 60 || p[6] != WIRE_PROTO_TCP) continue;
            family = MTCP_AF_INET6; src = p + 8; dst = p + 24; th = p + 40;
        }
        struct conn *k = eng_conn_lookup(e, family, src, wire_get16(th), dst, wire_get16(th + 2));
        if (!k || k->kind != CK_CONN || (k->eflags & CF_ZOMBIE) || k->tcp.state != MTCP_ST_SYN_SENT) continue;
        e->counters[CTR_CONN_FAILED]++;
        if (!(k->eflags & (CF_DETACHED | CF_HIDDEN)))
            eng_push_event(e, k, MTCP_EV_CONNECT_FAILED, EHOSTUNREACH, 0, 0);
        tcp_abort(&e->env, &k->tcp, e->now);      /* SYN-SENT: no RST, no event; -> CLOSED */
    }
}

void eng_neigh_tick(struct mtcp_engine *e) {
    if (!e->neigh.incomplete || e->now < e->neigh_deadline) return;
    uint64_t next = 0;
    for (uint32_t i = 0; i < NEIGH_N; i++) {
        struct neigh *n = &e->neigh.ent[i];
        if (n->state != NS_INCOMPLETE) continue;
        if (n->next_probe <= e->now) {
            if (n->probes >= NEIGH_RETRIES) {
                n->state = NS_FAILED;
                n->gen++;
                n->expires = e->now + NEIGH_RETRY_US;
                e->neigh.incomplete--;
                e->counters[CTR_NEIGH_FAILED]++;
                neigh_fail_connects(e, n);
                neigh_drop_queue(e, n);
                continue;
            }
            n->probes++;
            n->next_probe = e->now + NEIGH_RETRY_US;
            solicit(e, n);
        }
        if (next == 0 || n->next_probe < next) next = n->next_probe;
    }
    e->neigh_deadline = next;
}

/* ---- ARP (RFC 826 "merge" algorithm) ---- */
void eng_arp_input(struct mtcp_engine *e, const uint8_t *p, uint32_t len) {
    struct wire_arp a;
    int rc = wire_arp_parse(p, len, &a);
    e->counters[CTR_ARP_IN]++;
    if (rc < 0) { e->counters[ctr_wire_drop(rc)]++; return; }
    int for_us = eng_is_local(e, MTCP_AF_INET, a.tpa) && !zero(e->cfg.ipv4, 4);
    if (!zero(a.spa, 4)) eng_neigh_learn(e, MTCP_AF_INET, a.spa, a.sha, for_us);
    if (!for_us || a.op != WIRE_ARP_REQUEST) return;
    eng_ctrl_room(e);
    uint32_t f = eng_frame_get(e);
    if (f == NONE32 || e->ctrlq.n >= CTRLQ_MAX) {
        if (f != NONE32) eng_frame_put(e, f);
        e->counters[CTR_DROP_CTRL_QUEUE]++;
        return;
    }
    uint8_t *o = e->frames[f].buf;
    struct wire_eth eth;
    memcpy(eth.dst, a.sha, 6);
    memcpy(eth.src, e->cfg.mac, 6);
    eth.ethertype = WIRE_ETHERTYPE_ARP;
    size_t l = wire_eth_emit(o, e->fsize, &eth);
    struct wire_arp r;
    r.op = WIRE_ARP_REPLY;
    memcpy(r.sha, e->cfg.mac, 6);
    memcpy(r.spa, a.tpa, 4);
    memcpy(r.tha, a.sha, 6);
    memcpy(r.tpa, a.spa, 4);
    l += wire_arp_emit(o + l, e->fsize - l, &r);
    e->frames[f].len = (uint32_t)l;
    e->frames[f].next = NONE32;
    eng_ctrl_push(e, f);
    e->counters[CTR_ARP_REPLIES]++;
}

/* ---- NDP: answer solicitations for our addresses, learn from advertisements ---- */
void eng_ndp_input(struct mtcp_engine *e, const struct wire_ipv6 *ip, const struct wire_icmp6 *m) {
    e->counters[CTR_NDP_IN]++;
    if (ip->hop_limit != 255) { e->counters[CTR_DROP_BAD_ADDR]++; return; }   /* RFC 4861 7.1.1 */
    if (m->type == WIRE_ICMP6_NEIGH_ADVERT) {
        if (m->has_lladdr) eng_neigh_learn(e, MTCP_AF_INET6, m->target, m->lladdr, 0);
        return;
    }
    /* solicitation */
    if (!eng_is_local(e, MTCP_AF_INET6, m->target)) return;
    int dad = zero(ip->src, 16);
    if (!dad && m->has_lladdr) eng_neigh_learn(e, MTCP_AF_INET6, ip->src, m->lladdr, 1);
    uint8_t *l4;
    uint32_t cap;
    uint32_t f = eng_ctrl_begin(e, MTCP_AF_INET6, &l4, &cap);
    if (f == NONE32) return;
    static const uint8_t all_nodes[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const uint8_t *dst = dad ? all_nodes : ip->src;
    uint8_t dmac[6];
    if (dad) { uint8_t mm[6] = {0x33, 0x33, 0, 0, 0, 1}; memcpy(dmac, mm, 6); }
    else if (m->has_lladdr) memcpy(dmac, m->lladdr, 6);
    else if (e->rx_smac) memcpy(dmac, e->rx_smac, 6);
    else memset(dmac, 0, 6);
    struct wire_icmp6 na;
    memset(&na, 0, sizeof na);
    na.type = WIRE_ICMP6_NEIGH_ADVERT;
    na.nd_flags = WIRE_NDP_FLAG_OVERRIDE | (dad ? 0 : WIRE_NDP_FLAG_SOLICITED);
    memcpy(na.target, m->target, 16);
    na.has_lladdr = 1;
    memcpy(na.lladdr, e->cfg.mac, 6);
    size_t l = wire_icmp6_emit(l4, cap, m->target, dst, &na);
    if (!l) { eng_frame_put(e, f); return; }
    eng_ctrl_commit(e, f, MTCP_AF_INET6, m->target, dst, WIRE_PROTO_ICMPV6, (uint32_t)l, dmac, 255);
    e->counters[CTR_NDP_ADVERTS]++;
}
