/*
 * tcp_env.c — the callbacks the engine gives the pure TCP layer (struct tcp_env, tcp/tcp.h):
 * out-of-order and RACK record blocks, TX slots (tx_begin/tx_commit: link slot, output queue,
 * neighbour queue or scratch), events, timers, want_output, closed and the challenge-ACK limit;
 * and the connection blocks' life around them: the want-output list, the TIME-WAIT FIFO, zombies,
 * eng_reap, TIME-WAIT recycling and the reserved block of a connecting client.
 *
 *   tcp_* -> env->event -> eng_push_event (events.c)
 *   tcp_* -> env->closed -> zombie -> eng_reap -> conn release (hash, wheel, buffers, port)
 *
 * Connection lifecycle (engine side):
 *   alloc -> hashed -> [TCP] -> env->closed: unhashed; freed now if the app released the cid
 *   (CF_DETACHED) or never saw it (CF_HIDDEN), else kept (CF_CLOSED) until mtcp_close.
 *   Freeing is deferred to eng_reap (a "zombie" list) so TCP code never sees a reused block.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

#define TXK_NONE 0
#define TXK_LINK 1
#define TXK_OUTQ 2
#define TXK_NEIGH 3
#define TXK_SCRATCH 4

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

void eng_tx_release(struct mtcp_engine *e) {
    if ((e->tx_kind == TXK_OUTQ || e->tx_kind == TXK_NEIGH) && e->tx_frame != NONE32) eng_frame_put(e, e->tx_frame);
    e->tx_kind = TXK_NONE;
    e->tx_frame = NONE32;
}

static uint8_t *env_tx_begin(void *ctx, struct tcp_conn *c, uint32_t *cap) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    eng_tx_release(e);
    if (e->tx_full) { e->tx_nulled = 1; return NULL; }
    int family = c->family;
    uint32_t hl = e->l2len + eng_iphl_of(family);
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
                if (room > hl + 65535 - eng_iphl_of(family)) room = hl + 65535 - eng_iphl_of(family);
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
    uint8_t *seg = e->tx_buf + e->l2len + eng_iphl_of(family);
    uint32_t ps = family == MTCP_AF_INET ? wire_pseudo4(k->lip, k->rip, WIRE_PROTO_TCP, tcp_len)
                                         : wire_pseudo6(k->lip, k->rip, WIRE_PROTO_TCP, tcp_len);
    /* checksum offload (loopback, TAP with TUN_F_CSUM): leave the folded pseudo-header sum in the
     * field and mark the slot CSUM_PARTIAL (virtio NEEDS_CSUM convention) */
    int partial = e->tx_kind == TXK_LINK && (e->link->features & LINK_FEAT_CSUM_TX);
    if (partial) wire_put16(seg + 16, (uint16_t)~wire_csum_fold(ps));
    else wire_tcp_csum_fill(seg, tcp_len, ps);
    uint32_t len = eng_write_headers(e, e->tx_buf, family, k->lip, k->rip, WIRE_PROTO_TCP, tcp_len,
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
        s->csum_start = (uint16_t)(partial ? e->l2len + eng_iphl_of(family) : 0);
        s->csum_offset = (uint16_t)(partial ? 16 : 0);
        r->head = r->cur = link_ring_next(r, r->head);
        e->counters[CTR_FRAMES_OUT]++;
        break;
    }
    case TXK_OUTQ:
        e->frames[e->tx_frame].len = len;
        eng_fifo_push(e, &e->outq, e->tx_frame);
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

void eng_env_event(void *ctx, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len) {
    struct mtcp_engine *e = ctx;
    struct conn *k = conn_of(c);
    switch (type) {
    case MTCP_EV_CONNECTED: e->counters[CTR_CONN_ESTABLISHED]++; eng_resv_release(e, k); break;
    case MTCP_EV_CONNECT_FAILED:
        eng_resv_release(e, k);
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
void eng_tw_check(struct mtcp_engine *e, struct conn *k) {
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
    eng_tw_check(e, k);
    if (deadline == 0 || (k->eflags & CF_ZOMBIE) || k->kind != CK_CONN) { eng_wheel_remove(&e->wheel, idx); return; }
    eng_wheel_insert(&e->wheel, idx, deadline);
}

void eng_out_add(struct mtcp_engine *e, struct conn *k) {
    uint32_t idx = conn_idx(e, k);
    k->eflags |= CF_OUTPUT;
    k->onext = NONE32;
    k->oprev = e->out_tail;
    if (e->out_tail == NONE32) e->out_head = idx; else e->conns[e->out_tail].onext = idx;
    e->out_tail = idx;
    e->out_n++;
}

void eng_out_del(struct mtcp_engine *e, struct conn *k) {
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
    eng_out_add(e, k);
}

void eng_make_zombie(struct mtcp_engine *e, struct conn *k) {
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
    if (k->eflags & (CF_DETACHED | CF_HIDDEN)) eng_make_zombie(e, k);
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
    eng_resv_release(e, k);
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
        if (k->eflags & CF_CLOSED) eng_make_zombie(e, k);
        else tcp_abort(&e->env, &k->tcp, e->now);      /* -> env_closed -> zombie (detached) */
    }
    while (e->reap_head != NONE32) {
        struct conn *k = &e->conns[e->reap_head];
        e->reap_head = k->hnext;
        k->hnext = NONE32;
        eng_out_del(e, k);
        conn_release(e, k);
    }
}

/* 1 if `need` blocks can be taken beyond the reserved ones, recycling TIME-WAIT blocks for room:
 * like Linux (which never fails an open because of TIME-WAIT state) the oldest TIME-WAIT block
 * goes first. It is detached and silent (no RST, no event); TCP code never holds a pointer to it
 * here (callers are the connect API and a listener's SYN), so it is freed now. */
int eng_blocks_room(struct mtcp_engine *e, uint32_t need) {
    while (e->nconns - e->conns_used < e->resv + need && e->tw_head != NONE32) {
        struct conn *t = &e->conns[e->tw_head];
        eng_out_del(e, t);
        conn_release(e, t);             /* unlinks it from the FIFO, the hash and the wheel */
        e->counters[CTR_TW_RECYCLED]++;
    }
    return e->nconns - e->conns_used >= e->resv + need;
}

struct conn *eng_conn_alloc_recycle(struct mtcp_engine *e) {
    return eng_blocks_room(e, 1) ? eng_conn_alloc(e) : NULL;
}

void eng_resv_release(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_RESV)) return;
    k->eflags &= (uint16_t)~CF_RESV;
    e->resv--;
}

struct conn *eng_conn_take_reserved(struct mtcp_engine *e, struct conn *client) {
    if (!(client->eflags & CF_RESV)) return NULL;
    eng_resv_release(e, client);
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


/* Wire the callbacks above into the engine's tcp_env (mtcp_engine_new). */
void eng_env_init(struct mtcp_engine *e) {
    struct tcp_env *env = &e->env;
    env->ctx = e;
    eng_tcp_cfg(&e->tcp_cfg, &e->cfg);
    env->cfg = &e->tcp_cfg;
    env->pool = &e->pool;
    env->counters = e->counters;
    env->ooo_get = env_ooo_get;
    env->ooo_put = env_ooo_put;
    env->rec_get = env_rec_get;
    env->rec_put = env_rec_put;
    env->tx_begin = env_tx_begin;
    env->tx_commit = env_tx_commit;
    env->event = eng_env_event;
    env->timer = env_timer;
    env->want_output = env_want_output;
    env->closed = env_closed;
    env->challenge_ok = env_challenge_ok;
}
