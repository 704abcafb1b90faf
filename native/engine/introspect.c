/*
 * introspect.c — read-only views of an engine for operators (`mtcp-loop ss`, metrics).
 *
 * mtcp_engine_sockets walks the connection blocks in index order and copies fixed-size records
 * into a caller-provided array. It runs on the engine's thread between two polls (the caller
 * is the loop, at a poll boundary), touches no list, timer or buffer, allocates nothing, and its
 * cost per call is bounded by max_scan blocks: a caller walking 100k blocks spreads the walk
 * over several loop iterations and the data path keeps running in between. The records of one
 * call are one consistent state; a walk over several calls is a rolling snapshot, as reading
 * /proc/net/tcp page by page is for the kernel.
 */
#include <string.h>
#include "engine.h"

static void rec_addr(struct mtcp_addr *a, int family, const uint8_t *ip, uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->family = (uint8_t)family;
    a->port = port;
    memcpy(a->ip, ip, (size_t)addr_len(family));
}

static void fill_record(const struct mtcp_engine *e, uint64_t now, const struct conn *k, struct mtcp_sock_record *r)
{
    const struct tcp_conn *c = &k->tcp;
    memset(r, 0, sizeof *r);
    r->cid = conn_cid(e, k);
    r->cc = c->cc.algo;
    r->age_us = now > k->t_open_us ? now - k->t_open_us : 0;
    if (k->kind == CK_LISTEN) {
        r->flags = MTCP_SOCK_LISTENER;
        r->info.state = MTCP_ST_LISTEN;
        r->info.mss = c->mss;
        r->backlog = k->u.ls.backlog;
        r->acceptq = k->u.ls.acceptq;
        r->synq = k->u.ls.synq;
        r->cookies_sent = k->u.ls.cookies_sent;
        r->cookies_ok = k->u.ls.cookies_ok;
        r->overflows = k->u.ls.overflows;
        rec_addr(&r->info.local, c->family, k->lip, c->local_port);
        rec_addr(&r->info.remote, c->family, k->rip, 0);
        r->lastrcv_ms = 0xffffffffu;
        return;
    }
    eng_conn_info(k, &r->info);
    if (k->eflags & CF_CLOSED) r->info.state = MTCP_ST_CLOSED;
    rec_addr(&r->info.local, c->family, k->lip, c->local_port);
    rec_addr(&r->info.remote, c->family, k->rip, c->remote_port);
    if (k->eflags & CF_DETACHED) r->flags |= MTCP_SOCK_DETACHED;
    if (k->eflags & CF_HIDDEN) r->flags |= MTCP_SOCK_PENDING;
    if (k->eflags & CF_ACCEPTQ) r->flags |= MTCP_SOCK_ACCEPTQ;
    r->rcv_mss = c->rcv_mss;
    r->snd_wscale = c->snd_wscale;
    r->rcv_wscale = c->rcv_wscale;
    r->retries = c->retries;
    r->dupacks = c->dupacks;
    if (c->last_rx_us && now >= c->last_rx_us) {
        uint64_t ms = (now - c->last_rx_us) / 1000;
        r->lastrcv_ms = ms >= 0xffffffffu ? 0xfffffffeu : (uint32_t)ms;
    } else {
        r->lastrcv_ms = 0xffffffffu;
    }
    r->min_rtt_us = c->rack_min_rtt ? c->rack_min_rtt : c->cc.min_rtt_us;
    r->sacked = c->sacked_bytes;
    uint64_t inflight = r->info.unacked;
    r->bytes_acked = c->bytes_sent > inflight ? c->bytes_sent - inflight : 0;
    if (c->armed_us && c->armed_us != UINT64_MAX) r->timer_ms = c->armed_us > now ? (c->armed_us - now + 999) / 1000 : 0;
}

static int passes(const struct conn *k, const struct mtcp_sock_record *r, const struct mtcp_sock_filter *f)
{
    (void)k;
    if (!f) return 1;
    if (f->states && !(f->states & (1u << (r->info.state & 31)))) return 0;
    if (f->family && f->family != r->info.local.family) return 0;
    if (f->sport && f->sport != r->info.local.port) return 0;
    if (f->dport && f->dport != r->info.remote.port) return 0;
    return 1;
}

uint32_t mtcp_engine_sockets(mtcp_engine *e, uint64_t now_us, uint32_t *cursor, const struct mtcp_sock_filter *f,
                             struct mtcp_sock_record *out, uint32_t max, uint32_t max_scan)
{
    if (!e || !cursor || !out) return 0;
    uint64_t now = now_us > e->now ? now_us : e->now;
    uint32_t i = *cursor, n = 0, scanned = 0;
    while (i < e->nconns && n < max && (max_scan == 0 || scanned < max_scan)) {
        const struct conn *k = &e->conns[i++];
        scanned++;
        if (k->kind == CK_FREE || (k->eflags & CF_ZOMBIE)) continue;
        /* cheap pre-filter on ports before the full copy (ss --sport on 100k blocks) */
        if (f && f->sport && k->tcp.local_port != f->sport) continue;
        if (f && f->dport && (k->kind == CK_LISTEN || k->tcp.remote_port != f->dport)) continue;
        fill_record(e, now, k, &out[n]);
        if (passes(k, &out[n], f)) n++;
    }
    *cursor = i;
    return n;
}

uint32_t mtcp_engine_nblocks(mtcp_engine *e)
{
    return e ? e->nconns : 0;
}

uint64_t mtcp_engine_now(mtcp_engine *e)
{
    return e ? e->now : 0;
}

/* ---- metrics: gauges in one pass, duration histogram kept at release ---- */
static const uint64_t srtt_bounds_us[MTCP_SRTT_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
};
static const uint64_t dur_bounds_us[MTCP_DUR_BUCKETS - 1] = {
    1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 30000000, 60000000,
    300000000, 3600000000ull,
};

uint64_t mtcp_srtt_bound_us(uint32_t i)
{
    return i < MTCP_SRTT_BUCKETS - 1 ? srtt_bounds_us[i] : UINT64_MAX;
}

uint64_t mtcp_duration_bound_us(uint32_t i)
{
    return i < MTCP_DUR_BUCKETS - 1 ? dur_bounds_us[i] : UINT64_MAX;
}

static uint32_t bucket_of(const uint64_t *bounds, uint32_t nb, uint64_t v)
{
    uint32_t i = 0;
    while (i < nb && v > bounds[i]) i++;
    return i;
}

void eng_introspect_conn_freed(struct mtcp_engine *e, const struct conn *k)
{
    if (k->kind != CK_CONN) return;
    uint64_t end = k->tcp.last_rx_us && k->tcp.last_rx_us >= k->t_open_us ? k->tcp.last_rx_us : e->now;
    uint64_t d = end >= k->t_open_us ? end - k->t_open_us : 0;
    e->dur_hist[bucket_of(dur_bounds_us, MTCP_DUR_BUCKETS - 1, d)]++;
    e->dur_sum_us += d;
}

void mtcp_engine_conn_durations(mtcp_engine *e, uint64_t *counts, uint32_t n, uint64_t *sum_us)
{
    if (n > MTCP_DUR_BUCKETS) n = MTCP_DUR_BUCKETS;
    memcpy(counts, e->dur_hist, (size_t)n * sizeof *counts);
    if (sum_us) *sum_us = e->dur_sum_us;
}

void mtcp_engine_gauges(mtcp_engine *e, struct mtcp_engine_gauges *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < e->nconns; i++) {
        const struct conn *k = &e->conns[i];
        if (k->kind == CK_FREE || (k->eflags & CF_ZOMBIE)) continue;
        if (k->kind == CK_LISTEN) {
            out->states[MTCP_ST_LISTEN]++;
            out->acceptq += k->u.ls.acceptq;
            out->synq += k->u.ls.synq;
            out->backlog += k->u.ls.backlog;
            continue;
        }
        const struct tcp_conn *c = &k->tcp;
        unsigned st = (k->eflags & CF_CLOSED) ? MTCP_ST_CLOSED : c->state;
        if (st <= MTCP_ST_TIME_WAIT) out->states[st]++;
        if (k->eflags & CF_DETACHED) out->orphans++;
        out->sndbuf_bytes += c->snd.len;
        out->rcvbuf_bytes += c->rcv.len;
        if (c->srtt_us && st >= MTCP_ST_ESTABLISHED && st != MTCP_ST_TIME_WAIT) {
            out->srtt_hist[bucket_of(srtt_bounds_us, MTCP_SRTT_BUCKETS - 1, c->srtt_us)]++;
            out->srtt_sum_us += c->srtt_us;
        }
    }
}
