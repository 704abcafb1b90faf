/*
 * api.c — the public connection API of mtcp.h: listen, connect, send, recv, shutdown, close,
 * abort, options, addresses, connection info and list, counters and pool usage. Every call that
 * may end a connection runs eng_reap before it returns.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

/* ------------------------------------------------------------------ API */

static void api_done(struct mtcp_engine *e) { eng_reap(e); }

int64_t mtcp_listen(mtcp_engine *e, const struct mtcp_addr *local, int backlog) {
    return eng_listen_open(e, local, backlog);
}

int64_t mtcp_connect(mtcp_engine *e, uint64_t now_us, const struct mtcp_addr *remote,
                     const struct mtcp_addr *local) {
    eng_set_now(e, now_us);
    if (!remote || (remote->family != MTCP_AF_INET && remote->family != MTCP_AF_INET6)) return -EINVAL;
    int family = remote->family;
    if (local && local->family != family && !eng_addr_zero(local->ip, 16)) return -EINVAL;
    if (remote->port == 0 || eng_addr_zero(remote->ip, addr_len(family))) return -EINVAL;
    if (family == MTCP_AF_INET ? remote->ip[0] >= 224 : remote->ip[0] == 0xff) return -ENETUNREACH;
    const uint8_t *own = family == MTCP_AF_INET ? e->cfg.ipv4 : e->cfg.ipv6;
    if (eng_addr_zero(own, addr_len(family))) return -EADDRNOTAVAIL;
    uint8_t lip[16] = {0};
    if (local && !eng_addr_zero(local->ip, addr_len(family))) {
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
    if (!eng_blocks_room(e, self ? 2 : 1)) { eng_port_unref(e, family, (uint16_t)port); return -ENOMEM; }
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
        eng_make_zombie(e, k);
    } else if (abort) {
        tcp_abort(&e->env, &k->tcp, e->now);
    } else {
        tcp_close(&e->env, &k->tcp, e->now);
        eng_tw_check(e, k);                 /* released while already in TIME-WAIT */
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
        eng_conn_info(k, out);
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

void eng_conn_info(const struct conn *k, struct mtcp_conn_info *out) {
    struct tcp_conn_stats s;
    tcp_info(&k->tcp, &s);
    out->state = s.state;
    out->mss = s.mss;
    out->srtt_us = s.srtt_us;
    out->rttvar_us = s.rttvar_us;
    out->rto_us = s.rto_us;
    out->cwnd = s.cwnd;
    out->ssthresh = s.ssthresh;
    out->snd_wnd = s.snd_wnd;
    out->rcv_wnd = s.rcv_wnd;
    out->unacked = s.unacked;
    out->sndbuf_used = s.sndbuf_used;
    out->rcvbuf_used = s.rcvbuf_used;
    out->bytes_sent = s.bytes_sent;
    out->bytes_received = s.bytes_received;
    out->retransmits = s.retransmits;
    out->flags = s.flags;
}
