/*
 * tcp.c — the TCP state machine (RFC 9293) as a pure module: no I/O, no clock, no malloc.
 *
 * Call chains (engine -> tcp, tcp -> engine through struct tcp_env):
 *   engine_input -> tcp_input -> { input_syn_sent | input_synchronized }
 *                     input_synchronized -> paws -> rst_check -> acceptability -> syn_check
 *                                        -> ack_process (-> ack_advance -> rtt_sample / cc_on_ack,
 *                                           sack_update, dupack -> enter_recovery)
 *                                        -> data_process (-> buf_stream_append / buf_ooo_*)
 *                                        -> fin_process
 *                   -> env->event / env->want_output / env->timer
 *   engine poll end -> tcp_output -> output_data -> send_seg -> emit -> env->tx_begin/tx_commit
 *   timer wheel     -> tcp_timer  -> on_rto | on_persist | on_keepalive | delayed ACK | TIME-WAIT end
 *   app             -> tcp_send/tcp_recv/tcp_shutdown/tcp_close/tcp_abort/tcp_setopt
 *
 * Shape follows smoltcp's socket/tcp.rs: transitions are switch arms on the state with the RFC
 * section they implement in a comment. Sequence space: c->snd holds the bytes from snd_una (the
 * first byte of the buffer has sequence data_seq(c) = snd_una, +1 while our SYN is unacked);
 * a queued FIN sits at data_seq + snd.len. snd_nxt is the next sequence to (re)send (pulled back
 * to snd_una on RTO: go-back-N), snd_max the highest ever sent.
 *
 * Events (env->event):
 *   MTCP_EV_CONNECTED        active open reached ESTABLISHED
 *   MTCP_EV_ACCEPT           passive open (SYN-RECEIVED or cookie) reached ESTABLISHED; the
 *                            engine fills `parent` (TCP does not know the listener)
 *   MTCP_EV_CONNECT_FAILED   active open died before ESTABLISHED: ECONNREFUSED (RST in SYN-SENT),
 *                            ETIMEDOUT (SYN retries exhausted)
 *   MTCP_EV_READABLE         in-order data arrived; len = bytes readable now
 *   MTCP_EV_WRITABLE         after a short tcp_send, send space freed
 *   MTCP_EV_PEER_CLOSED      FIN received (after READABLE for its data)
 *   MTCP_EV_ERROR            ECONNRESET (RST), ETIMEDOUT (retries / keepalive)
 *   MTCP_EV_CLOSED           both directions closed normally (TIME-WAIT entered or LAST-ACK done)
 * Timers: all absolute us in c->t_*; env->timer(c, tcp_next_deadline(c)) is called whenever the
 * minimum changes; the engine calls tcp_timer(c, now) once it passed (spurious calls are harmless).
 * Counters: the CTR_* "TCP (tcp module)" section of engine/counters.h. Segment and connection
 * counters (SEGS_OUT, CONN_*) are the engine's (derive them from tx_commit / events).
 */
#include "tcp.h"
#include "../engine/counters.h"
#include <errno.h>
#include <string.h>

#define CNT(env, ctr) do { if ((env)->counters) (env)->counters[(ctr)]++; } while (0)

#define DUPTHRESH 3
#define TS_OPT_LEN 12
#define QUICKACKS 8                 /* segments ACKed immediately after establishment */
#define PAWS_24DAYS_MS (24u * 24u * 3600u * 1000u)
#define RTO_G_US 1000               /* clock granularity G (RFC 6298 2.2) */
#define DEFAULT_MSS4 536            /* RFC 9293 3.7.1 when the peer sends no MSS option */
#define DEFAULT_MSS6 1220

static inline uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint32_t max32(uint32_t a, uint32_t b) { return a > b ? a : b; }
static inline uint64_t min_nz(uint64_t a, uint64_t b) { return !a ? b : !b ? a : (a < b ? a : b); }

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static int syn_unacked(const struct tcp_conn *c)
{
    return c->state == MTCP_ST_SYN_SENT || c->state == MTCP_ST_SYN_RECEIVED;
}
/* sequence number of the first byte in c->snd */
static uint32_t data_seq(const struct tcp_conn *c) { return c->snd_una + (syn_unacked(c) ? 1u : 0u); }
static uint32_t data_end(const struct tcp_conn *c) { return data_seq(c) + c->snd.len; }

static uint32_t eff_mss(const struct tcp_conn *c)
{
    uint32_t m = c->mss;
    if (c->flags & TCPF_TS_OK) m = m > TS_OPT_LEN + 64 ? m - TS_OPT_LEN : 64;
    return m;
}
static uint32_t eff_rcv_mss(const struct tcp_conn *c)
{
    uint32_t m = c->rcv_mss;
    if (c->flags & TCPF_TS_OK) m = m > TS_OPT_LEN + 64 ? m - TS_OPT_LEN : 64;
    return m;
}
static uint32_t ts_now(const struct tcp_conn *c, uint64_t now) { return (uint32_t)(now / 1000) + c->ts_offset; }

static int can_send_data_state(int st)
{
    return st == MTCP_ST_ESTABLISHED || st == MTCP_ST_CLOSE_WAIT || st == MTCP_ST_FIN_WAIT_1 ||
           st == MTCP_ST_CLOSING || st == MTCP_ST_LAST_ACK;
}
static int synchronized_state(int st) { return st >= MTCP_ST_ESTABLISHED; }

uint8_t tcp_wscale_for(uint32_t rcvbuf)
{
    uint8_t s = 0;
    while (s < 14 && (rcvbuf >> s) > 65535u) s++;
    return s;
}

uint64_t tcp_next_deadline(const struct tcp_conn *c)
{
    uint64_t d = 0;
    d = min_nz(d, c->t_rexmit);
    d = min_nz(d, c->t_delack);
    d = min_nz(d, c->t_keepalive);
    d = min_nz(d, c->t_timewait);
    return d;
}

static void sync_timer(const struct tcp_env *env, struct tcp_conn *c)
{
    if (c->closed_done) return;
    uint64_t d = tcp_next_deadline(c);
    if (d != c->armed_us) {
        c->armed_us = d;
        if (env->timer) env->timer(env->ctx, c, d);
    }
}

static void ev(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len)
{
    if (env->event && !(c->flags & TCPF_DETACHED)) env->event(env->ctx, c, type, err, len);
}

static void want_output(const struct tcp_env *env, struct tcp_conn *c)
{
    if (env->want_output) env->want_output(env->ctx, c);
}

static struct buf_ooo *ooo_of(const struct tcp_env *env, struct tcp_conn *c, int alloc)
{
    if (!env->ooo_get) return NULL;
    if (!alloc && c->ooo == 0xffff) return NULL;
    return env->ooo_get(env->ctx, c, alloc);
}
static void ooo_release(const struct tcp_env *env, struct tcp_conn *c)
{
    struct buf_ooo *o = ooo_of(env, c, 0);
    if (o) buf_ooo_clear(env->pool, o);
    if (c->ooo != 0xffff && env->ooo_put) env->ooo_put(env->ctx, c);
    c->ooo = 0xffff;
}

/* Enter CLOSED: stop timers, free send/reassembly memory, tell the engine (once). c must not be
 * used by the caller afterwards. */
static void conn_closed(const struct tcp_env *env, struct tcp_conn *c)
{
    if (c->closed_done) return;
    c->state = MTCP_ST_CLOSED;
    c->t_rexmit = c->t_delack = c->t_keepalive = c->t_timewait = 0;
    c->persist = 0;
    ooo_release(env, c);
    buf_stream_clear(env->pool, &c->snd);
    if (c->flags & TCPF_DETACHED) buf_stream_clear(env->pool, &c->rcv);
    sync_timer(env, c);
    c->closed_done = 1;
    if (env->closed) env->closed(env->ctx, c);
}

/* Abnormal end: event, drop buffered data (like Linux on RST), CLOSED. */
static void conn_fail(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int err)
{
    if (type) ev(env, c, type, err, 0);
    buf_stream_clear(env->pool, &c->rcv);
    conn_closed(env, c);
}

/* Failure of an open/connection: which event depends on how far it got. */
static void conn_die(const struct tcp_env *env, struct tcp_conn *c, int err)
{
    if (c->state == MTCP_ST_SYN_SENT ||
        (c->state == MTCP_ST_SYN_RECEIVED && !(c->flags & TCPF_PASSIVE)))
        conn_fail(env, c, MTCP_EV_CONNECT_FAILED, err);
    else if (c->state == MTCP_ST_SYN_RECEIVED)
        conn_fail(env, c, 0, err);                       /* never accepted: nobody to tell */
    else if (c->state == MTCP_ST_TIME_WAIT)
        conn_closed(env, c);                             /* CLOSED was already reported */
    else
        conn_fail(env, c, MTCP_EV_ERROR, err);
}

static void enter_time_wait(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 9293 3.10.7.4 (FIN bit, TIME-WAIT): start the 2 MSL timer, turn off the others. */
    c->state = MTCP_ST_TIME_WAIT;
    c->t_rexmit = 0;
    c->t_keepalive = 0;
    c->persist = 0;
    c->t_timewait = now + 2ull * env->cfg->msl_us;
    ooo_release(env, c);
    buf_stream_clear(env->pool, &c->snd);
    ev(env, c, MTCP_EV_CLOSED, 0, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* receive window                                                                             */
/* ------------------------------------------------------------------------------------------ */

static uint32_t rcv_wnd_cur(const struct tcp_conn *c)
{
    return seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
}
/* Free space in the receive buffer, capped by what the window field can carry. */
static uint32_t rcv_space(const struct tcp_conn *c)
{
    uint32_t space = c->rcvbuf > c->rcv.len ? c->rcvbuf - c->rcv.len : 0;
    uint32_t maxw = 65535u << c->rcv_wscale;
    return min32(space, maxw);
}
/* The window to advertise now (bytes from rcv_nxt): the free space in the receive buffer, but
 * (RFC 9293 3.8.6.2.2, receiver SWS avoidance) the right edge only moves when it can move by at
 * least min(rcvbuf/2, MSS), and (3.8.6.2.2 / RFC 7323 2.4) it never shrinks. */
static uint32_t rcv_wnd_calc(const struct tcp_conn *c)
{
    uint32_t cur = rcv_wnd_cur(c), space = rcv_space(c);
    if (space <= cur) return cur;
    if (space - cur < min32(c->rcvbuf / 2, eff_rcv_mss(c))) return cur;
    return space;
}

/* ------------------------------------------------------------------------------------------ */
/* segment emission                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* A bare RST (or RST|ACK) from c's ports, touching no connection state. */
static void emit_rst(const struct tcp_env *env, struct tcp_conn *c, uint32_t seq, uint32_t ack, uint8_t flags)
{
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = c->local_port;
    t.dport = c->remote_port;
    t.seq = seq;
    t.ack = (flags & WIRE_TCP_ACK) ? ack : 0;
    t.flags = (uint8_t)(WIRE_TCP_RST | flags);
    uint32_t cap = 0;
    uint8_t *p = env->tx_begin ? env->tx_begin(env->ctx, c, &cap) : NULL;
    if (!p) return;                       /* RSTs are not retried */
    size_t h = wire_tcp_emit(p, cap, &t);
    if (!h) return;
    env->tx_commit(env->ctx, c, (uint32_t)h);
    CNT(env, CTR_RST_OUT);
}

/* Writes one segment: header (with the options due for this state) + len payload bytes from the
 * send buffer at seq. Returns the payload bytes sent (may be less than len if the TX slot is
 * smaller; FIN is then dropped from flags) or -1 when there is no TX room. Updates only the
 * receive side (ACK sent, window advertised); send-side bookkeeping is send_seg's. */
static int emit(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                uint8_t *flagsp)
{
    const struct mtcp_config *cfg = env->cfg;
    uint8_t flags = *flagsp;
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = c->local_port;
    t.dport = c->remote_port;
    t.seq = seq;
    int syn = (flags & WIRE_TCP_SYN) != 0;
    uint32_t wnd = 0;
    if (flags & WIRE_TCP_ACK) {
        t.ack = c->rcv_nxt;
        wnd = rcv_wnd_calc(c);
    }
    if (syn) {
        /* RFC 9293 3.7.1 MSS; RFC 7323 1.3 WS/TS; RFC 2018 2 SACK-permitted. A SYN offers what
         * the config allows; a SYN-ACK answers only what both agreed (flags set on the SYN). */
        int active = !(flags & WIRE_TCP_ACK);
        t.has_mss = 1;
        t.mss = c->rcv_mss;
        if (active ? cfg->window_scaling : (c->flags & TCPF_WS_OK) != 0) {
            t.has_wscale = 1;
            t.wscale = c->rcv_wscale;
        }
        if (active ? cfg->sack : (c->flags & TCPF_SACK_OK) != 0) t.sack_perm = 1;
        if (active ? cfg->timestamps : (c->flags & TCPF_TS_OK) != 0) t.has_ts = 1;
        /* RFC 7323 2.2: the window in a SYN is never scaled */
        t.win = (uint16_t)min32(rcv_space(c), 65535u);
    } else {
        if (c->flags & TCPF_TS_OK) t.has_ts = 1;
        uint32_t field = wnd >> c->rcv_wscale;
        if (field > 65535u) field = 65535u;
        t.win = (uint16_t)field;
        /* RFC 2018 4: SACK blocks in every ACK while out-of-order data is held */
        if ((c->flags & TCPF_SACK_OK) && (flags & WIRE_TCP_ACK) && c->ooo != 0xffff) {
            struct buf_ooo *o = ooo_of(env, c, 0);
            if (o) {
                uint32_t l[WIRE_TCP_MAX_SACK], r[WIRE_TCP_MAX_SACK];
                uint32_t n = buf_ooo_sack(o, l, r, t.has_ts ? 3 : 4);
                for (uint32_t i = 0; i < n; i++) { t.sack[i].left = l[i]; t.sack[i].right = r[i]; }
                t.nsack = (uint8_t)n;
            }
        }
    }
    if (t.has_ts) {
        t.tsval = ts_now(c, now);
        t.tsecr = (flags & WIRE_TCP_ACK) ? c->ts_recent : 0;
    }
    if ((flags & WIRE_TCP_FIN) == 0 && len && seq + len == data_end(c)) flags |= WIRE_TCP_PSH;
    if (flags & WIRE_TCP_FIN) flags |= WIRE_TCP_PSH;
    t.flags = flags;

    uint32_t cap = 0;
    uint8_t *p = env->tx_begin ? env->tx_begin(env->ctx, c, &cap) : NULL;
    if (!p) { want_output(env, c); return -1; }
    uint32_t hlen = (uint32_t)wire_tcp_hdr_len(&t);
    if (cap < hlen) return -1;
    if (len > cap - hlen) {
        len = cap - hlen;
        flags &= (uint8_t)~WIRE_TCP_FIN;
        t.flags = flags;
    }
    size_t h = wire_tcp_emit(p, cap, &t);
    if (!h) return -1;
    if (len) {
        uint32_t off = seq - data_seq(c);
        uint32_t got = buf_stream_peek(env->pool, &c->snd, off, p + h, len);
        len = got;
    }
    env->tx_commit(env->ctx, c, (uint32_t)h + len);
    if (flags & WIRE_TCP_ACK) {
        c->last_ack_sent = c->rcv_nxt;
        if (syn) {
            if (seq_gt(c->rcv_nxt + t.win, c->rcv_adv)) c->rcv_adv = c->rcv_nxt + t.win;
        } else {
            uint32_t edge = c->rcv_nxt + ((uint32_t)t.win << c->rcv_wscale);
            if (seq_gt(edge, c->rcv_adv)) c->rcv_adv = edge;
        }
        c->flags &= (uint16_t)~(TCPF_ACK_NOW | TCPF_DELACK);
        c->t_delack = 0;
    }
    *flagsp = flags;
    return (int)len;
}

/* Emit a segment carrying sequence space [seq, seq+len(+SYN)(+FIN)) and do the send-side
 * bookkeeping: snd_nxt/snd_max, RTT timing (RFC 6298 + Karn), retransmission counters, RTO
 * start (RFC 6298 5.1). Returns payload bytes sent or -1. */
static int send_seg(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                    uint8_t flags)
{
    int n = emit(env, c, now, seq, len, &flags);
    if (n < 0) return n;
    uint32_t seglen = (uint32_t)n + ((flags & WIRE_TCP_SYN) ? 1u : 0u) + ((flags & WIRE_TCP_FIN) ? 1u : 0u);
    if (!seglen) return n;
    uint32_t end = seq + seglen;
    if (seq_lt(seq, c->snd_max)) {
        /* a retransmission; Karn's algorithm: don't time it (RFC 6298 3) */
        CNT(env, (flags & WIRE_TCP_SYN) ? CTR_SYN_RETRANS : CTR_RETRANS_SEGS);
        c->retransmits++;
        if (c->rtt_active && seq_lt(seq, c->rtt_seq)) c->rtt_active = 0;
    } else {
        c->bytes_sent += (uint32_t)n;
        if (!c->rtt_active && !(c->flags & TCPF_TS_OK)) {
            c->rtt_active = 1;
            c->rtt_seq = end;
            c->rtt_start_us = now;
        }
    }
    if (seq_gt(end, c->snd_nxt) && seq_le(seq, c->snd_nxt)) c->snd_nxt = end;
    if (seq_gt(end, c->snd_max)) c->snd_max = end;
    if (flags & WIRE_TCP_FIN) c->flags |= TCPF_FIN_SENT;
    if (!c->t_rexmit || c->persist) { c->persist = 0; c->t_rexmit = now + c->rto_us; }  /* RFC 6298 5.1 */
    return n;
}

static void send_ack(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* a pure ACK carries SND.MAX, not SND.NXT: while retransmitting (go-back-N) snd_nxt lies
     * below what the peer has, and an old sequence number would make the ACK unacceptable to
     * it (and answered with an ACK: an ACK storm) — BSD tcp_output does the same */
    uint8_t f = WIRE_TCP_ACK;
    (void)emit(env, c, now, c->snd_max, 0, &f);
}

/* ------------------------------------------------------------------------------------------ */
/* SACK scoreboard (RFC 6675)                                                                 */
/* ------------------------------------------------------------------------------------------ */

static void sb_recount(struct tcp_conn *c)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < c->sb_n; i++) s += c->sb[i].right - c->sb[i].left;
    c->sacked_bytes = s;
}

/* Drop ranges at or below snd_una. */
static void sb_prune(struct tcp_conn *c)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        struct tcp_sack_range r = c->sb[i];
        if (seq_le(r.right, c->snd_una)) continue;
        if (seq_lt(r.left, c->snd_una)) r.left = c->snd_una;
        c->sb[j++] = r;
    }
    c->sb_n = (uint8_t)j;
    sb_recount(c);
}

/* Merge the peer's SACK blocks (RFC 2018 / RFC 6675 Update()). Returns 1 if new bytes were SACKed. */
static int sb_update(struct tcp_conn *c, const struct wire_tcp *seg)
{
    uint32_t before = c->sacked_bytes;
    for (uint32_t k = 0; k < seg->nsack && k < WIRE_TCP_MAX_SACK; k++) {
        uint32_t l = seg->sack[k].left, r = seg->sack[k].right;
        /* ignore blocks that are not inside (snd_una, snd_max] (RFC 2883 D-SACK included) */
        if (!seq_lt(l, r) || seq_le(r, c->snd_una) || seq_gt(r, c->snd_max)) continue;
        if (seq_lt(l, c->snd_una)) l = c->snd_una;
        /* insert sorted, merging overlaps */
        struct tcp_sack_range tmp[TCP_SB_MAX + 1];
        uint32_t n = 0, placed = 0;
        for (uint32_t i = 0; i < c->sb_n; i++) {
            struct tcp_sack_range x = c->sb[i];
            if (seq_lt(x.right, l)) { tmp[n++] = x; continue; }
            if (seq_gt(x.left, r)) {
                if (!placed) { tmp[n].left = l; tmp[n].right = r; n++; placed = 1; }
                tmp[n++] = x;
                continue;
            }
            /* overlap/adjacent: grow [l, r] */
            if (seq_lt(x.left, l)) l = x.left;
            if (seq_gt(x.right, r)) r = x.right;
        }
        if (!placed) { tmp[n].left = l; tmp[n].right = r; n++; }
        if (n > TCP_SB_MAX) n = TCP_SB_MAX;   /* forget the highest range: conservative */
        memcpy(c->sb, tmp, n * sizeof tmp[0]);
        c->sb_n = (uint8_t)n;
    }
    sb_recount(c);
    return c->sacked_bytes != before;
}

/* RFC 6675 IsLost() for a hole below scoreboard range i: DupThresh discontiguous SACKed ranges
 * above it, or more than (DupThresh-1)*SMSS SACKed bytes above it. */
static int sb_hole_lost(const struct tcp_conn *c, uint32_t i)
{
    uint32_t above = 0;
    for (uint32_t k = i; k < c->sb_n; k++) above += c->sb[k].right - c->sb[k].left;
    return (c->sb_n - i) >= DUPTHRESH || above > (DUPTHRESH - 1) * eff_mss(c);
}

/* RFC 6675 SetPipe(): bytes believed in the network. */
static uint32_t sb_pipe(const struct tcp_conn *c)
{
    uint32_t pipe = 0, s = c->snd_una;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t hl = c->sb[i].left;
        if (seq_lt(s, hl)) {
            if (!sb_hole_lost(c, i)) pipe += hl - s;
            if (seq_gt(c->high_rxt, s)) pipe += (seq_lt(c->high_rxt, hl) ? c->high_rxt : hl) - s;
        }
        s = c->sb[i].right;
    }
    if (seq_lt(s, c->snd_max)) pipe += c->snd_max - s;
    return pipe;
}

/* RFC 6675 NextSeg() rule 1: first lost, not yet retransmitted bytes. */
static int sb_next_lost(const struct tcp_conn *c, uint32_t *seq, uint32_t *len)
{
    uint32_t s = c->snd_una;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t hl = c->sb[i].left;
        uint32_t from = seq_gt(c->high_rxt, s) ? c->high_rxt : s;
        if (seq_lt(from, hl) && sb_hole_lost(c, i)) {
            *seq = from;
            *len = min32(hl - from, eff_mss(c));
            return 1;
        }
        s = c->sb[i].right;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static uint32_t persist_interval(const struct tcp_env *env, const struct tcp_conn *c)
{
    uint64_t iv = (uint64_t)max32(c->rto_us, env->cfg->min_rto_us) << min32(c->persist_backoff, 16);
    if (iv > env->cfg->max_rto_us) iv = env->cfg->max_rto_us;
    return (uint32_t)iv;
}

static void output_data(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    int sent = 0;
    int sack_rec = (c->flags & TCPF_IN_RECOVERY) && (c->flags & TCPF_SACK_OK);

    /* Fast retransmit (RFC 5681 3.2 step 2 / RFC 6582 3.2 / RFC 6675 5 step 4.3): the segment at
     * snd_una goes out now, regardless of the window. */
    if (c->rexmit_now) {
        uint32_t len = min32(c->snd_max - c->snd_una, eff_mss(c));
        uint32_t de = data_end(c);
        if (seq_gt(c->snd_una + len, de)) len = de - c->snd_una;   /* only a FIN left */
        if (c->sb_n && seq_lt(c->sb[0].left, c->snd_una + len)) len = c->sb[0].left - c->snd_una;
        uint8_t f = WIRE_TCP_ACK;
        if ((c->flags & TCPF_FIN_SENT) && c->snd_una + len == de) f |= WIRE_TCP_FIN;
        int n = send_seg(env, c, now, c->snd_una, len, f);
        if (n < 0) return;
        c->rexmit_now = 0;
        if (seq_lt(c->high_rxt, c->snd_una + (uint32_t)n)) c->high_rxt = c->snd_una + (uint32_t)n;
        sent = 1;
    }

    for (;;) {
        uint32_t ds = data_seq(c), de = ds + c->snd.len;
        if (seq_lt(c->snd_nxt, ds)) c->snd_nxt = ds;
        uint32_t mss = eff_mss(c);

        if (sack_rec) {
            uint32_t pipe = sb_pipe(c);
            if (pipe + mss > c->cc.cwnd) break;          /* RFC 6675 5 step (C): cwnd - pipe >= 1 SMSS */
            uint32_t s, l;
            if (sb_next_lost(c, &s, &l)) {
                int n = send_seg(env, c, now, s, l, WIRE_TCP_ACK);
                if (n <= 0) break;
                c->high_rxt = s + (uint32_t)n;
                sent = 1;
                continue;
            }
        }

        uint32_t cwnd = c->cc.cwnd + ((c->flags & TCPF_IN_RECOVERY) && !sack_rec ? c->rec_inflate : 0);
        /* RFC 3042 limited transmit: the first two duplicate ACKs each let one new segment out */
        if (!(c->flags & TCPF_IN_RECOVERY) && c->dupacks && c->dupacks < DUPTHRESH) cwnd += c->dupacks * mss;
        uint32_t usable;
        if (sack_rec) {
            uint32_t pipe = sb_pipe(c);
            usable = c->cc.cwnd > pipe ? c->cc.cwnd - pipe : 0;
            uint32_t wend = c->snd_una + c->snd_wnd;
            usable = min32(usable, seq_gt(wend, c->snd_nxt) ? wend - c->snd_nxt : 0);
        } else {
            uint32_t wend = c->snd_una + min32(c->snd_wnd, cwnd);
            usable = seq_gt(wend, c->snd_nxt) ? wend - c->snd_nxt : 0;
        }
        uint32_t avail = seq_lt(c->snd_nxt, de) ? de - c->snd_nxt : 0;
        uint32_t len = min32(min32(avail, usable), mss);
        int fin = (c->flags & TCPF_FIN_QUEUED) &&
                  (c->state == MTCP_ST_FIN_WAIT_1 || c->state == MTCP_ST_CLOSING || c->state == MTCP_ST_LAST_ACK) &&
                  seq_le(c->snd_nxt, de) && len == avail;
        if (len == 0 && !fin) break;
        /* Nagle (RFC 896, RFC 9293 3.7.4) and sender SWS avoidance (RFC 9293 3.8.6.2.1) for new data */
        if (len < mss && !fin && seq_ge(c->snd_nxt, c->snd_max)) {
            int empties = (len == avail);
            int idle = (c->snd_max == c->snd_una);
            int ok = empties && (idle || (c->flags & TCPF_NODELAY));
            if (!ok && c->max_snd_wnd && len >= c->max_snd_wnd / 2) ok = 1;
            if (!ok) break;
        }
        uint8_t f = WIRE_TCP_ACK | (fin ? WIRE_TCP_FIN : 0);
        int n = send_seg(env, c, now, c->snd_nxt, len, f);
        if (n < 0) return;
        sent = 1;
        if (fin && (uint32_t)n == len) break;
        if (n == 0 && !fin) break;
    }

    if (!sent && (c->flags & TCPF_ACK_NOW)) send_ack(env, c, now);

    /* Persist timer (RFC 9293 3.8.6.1): data waits, the peer's window is zero (or too small for
     * SWS) and nothing is in flight to elicit an ACK. */
    if (!c->t_rexmit && c->snd_max == c->snd_una && seq_lt(c->snd_nxt, data_end(c))) {
        c->persist = 1;
        c->t_rexmit = now + persist_interval(env, c);
    }
}

static int pending_output(const struct tcp_conn *c)
{
    if (c->flags & TCPF_ACK_NOW || c->rexmit_now) return 1;
    if (!can_send_data_state(c->state)) return 0;
    if (seq_lt(c->snd_nxt, data_end(c))) return 1;
    return (c->flags & TCPF_FIN_QUEUED) && seq_le(c->snd_nxt, data_end(c));
}

void tcp_output(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    if (c->closed_done) return;
    switch (c->state) {
    case MTCP_ST_CLOSED:
    case MTCP_ST_LISTEN:
        break;
    case MTCP_ST_SYN_SENT:
        /* RFC 9293 3.10.1 OPEN: send <SEQ=ISS><CTL=SYN> */
        if (c->snd_nxt == c->iss) (void)send_seg(env, c, now, c->iss, 0, WIRE_TCP_SYN);
        break;
    case MTCP_ST_SYN_RECEIVED:
        /* RFC 9293 3.10.7.2 / 3.10.7.3: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> */
        if (c->snd_nxt == c->iss) (void)send_seg(env, c, now, c->iss, 0, WIRE_TCP_SYN | WIRE_TCP_ACK);
        else if (c->flags & TCPF_ACK_NOW) send_ack(env, c, now);
        break;
    case MTCP_ST_TIME_WAIT:
    case MTCP_ST_FIN_WAIT_2:
        if (c->flags & TCPF_ACK_NOW) send_ack(env, c, now);
        break;
    default:
        output_data(env, c, now);
        break;
    }
    sync_timer(env, c);
}

/* ------------------------------------------------------------------------------------------ */
/* open                                                                                       */
/* ------------------------------------------------------------------------------------------ */

void tcp_conn_init(const struct tcp_env *env, struct tcp_conn *c, int family, uint16_t local_port,
                   uint16_t remote_port, uint16_t path_mss)
{
    const struct mtcp_config *cfg = env->cfg;
    memset(c, 0, sizeof *c);
    c->state = MTCP_ST_CLOSED;
    c->family = (uint8_t)family;
    c->local_port = local_port;
    c->remote_port = remote_port;
    c->rcv_mss = path_mss;
    c->mss = path_mss;
    c->rcvbuf = cfg->rcvbuf;
    c->sndbuf = cfg->sndbuf;
    c->rto_us = cfg->initial_rto_us;
    c->ooo = 0xffff;
    c->ka_idle_us = cfg->keepalive_idle_us;
    c->ka_intvl_us = cfg->keepalive_intvl_us;
    c->ka_cnt = (uint8_t)min32(cfg->keepalive_cnt, 255);
    if (cfg->nodelay_default) c->flags |= TCPF_NODELAY;
    buf_stream_init(&c->snd);
    buf_stream_init(&c->rcv);
    c->cc.mss = path_mss;
}

static void set_peer_mss(struct tcp_conn *c, const struct wire_tcp *syn)
{
    uint32_t peer = syn->has_mss ? syn->mss : (c->family == MTCP_AF_INET6 ? DEFAULT_MSS6 : DEFAULT_MSS4);
    if (peer < 88) peer = 88;
    c->mss = (uint16_t)min32(c->rcv_mss, peer);
}

/* Common part of reaching ESTABLISHED. */
static void establish(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->state = MTCP_ST_ESTABLISHED;
    c->retries = 0;
    c->quickacks = QUICKACKS;
    c->flags |= TCPF_QUICKACK;
    c->recover = c->snd_una;
    cc_init(&c->cc, env->cfg->cc, eff_mss(c), env->cfg->initial_cwnd);
    c->last_rx_us = now;
    if (c->flags & TCPF_KEEPALIVE) c->t_keepalive = now + c->ka_idle_us;
    /* RFC 9293 3.10.4: a CLOSE issued before establishment takes effect now */
    if (c->flags & TCPF_FIN_QUEUED) c->state = MTCP_ST_FIN_WAIT_1;
}

void tcp_open_active(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss)
{
    /* RFC 9293 3.10.1 OPEN call, CLOSED state (active): SYN-SENT */
    c->state = MTCP_ST_SYN_SENT;
    c->iss = iss;
    c->snd_una = c->snd_nxt = c->snd_max = iss;
    c->recover = iss;
    c->rcv_wscale = env->cfg->window_scaling ? tcp_wscale_for(c->rcvbuf) : 0;
    c->rto_us = env->cfg->initial_rto_us;
    c->retries = 0;
    want_output(env, c);
    (void)now;
}

static void passive_common(const struct tcp_env *env, struct tcp_conn *c, uint32_t iss, const struct wire_tcp *syn)
{
    const struct mtcp_config *cfg = env->cfg;
    c->flags |= TCPF_PASSIVE;
    c->iss = iss;
    c->snd_una = c->snd_nxt = c->snd_max = iss;
    c->recover = iss;
    c->irs = syn->seq;
    c->rcv_nxt = syn->seq + 1;
    c->rcv_adv = c->rcv_nxt;
    set_peer_mss(c, syn);
    if (cfg->window_scaling && syn->has_wscale) {
        c->flags |= TCPF_WS_OK;
        c->snd_wscale = syn->wscale;
        c->rcv_wscale = tcp_wscale_for(c->rcvbuf);
    }
    if (cfg->sack && syn->sack_perm) c->flags |= TCPF_SACK_OK;
    if (cfg->timestamps && syn->has_ts) {
        c->flags |= TCPF_TS_OK;
        c->ts_recent = syn->tsval;
    }
    c->snd_wnd = syn->win;               /* RFC 7323 2.2: not scaled in a SYN */
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = syn->seq;
    c->snd_wl2 = iss;
}

void tcp_open_passive(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss,
                      const struct wire_tcp *syn)
{
    /* RFC 9293 3.10.7.2 LISTEN, SYN bit: RCV.NXT = SEG.SEQ+1, IRS = SEG.SEQ, send SYN,ACK,
     * SND.NXT = ISS+1, SND.UNA = ISS, state SYN-RECEIVED. */
    passive_common(env, c, iss, syn);
    c->state = MTCP_ST_SYN_RECEIVED;
    c->ts_recent_age_ms = (uint32_t)(now / 1000);
    c->rto_us = env->cfg->initial_rto_us;
    want_output(env, c);
}

void tcp_open_cookie(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss,
                     const struct wire_tcp *ack, uint16_t mss, uint8_t wscale, uint8_t sack_ok)
{
    /* RFC 4987 3.6: the ACK completing a cookie handshake creates the connection ESTABLISHED. */
    struct wire_tcp syn;
    memset(&syn, 0, sizeof syn);
    syn.seq = ack->seq - 1;
    syn.has_mss = 1;
    syn.mss = mss;
    syn.has_wscale = wscale != 0xff;
    syn.wscale = wscale == 0xff ? 0 : wscale;
    syn.sack_perm = sack_ok;
    syn.has_ts = ack->has_ts;
    syn.tsval = ack->tsval;
    syn.win = 0;
    passive_common(env, c, iss, &syn);
    c->snd_una = c->snd_nxt = c->snd_max = iss + 1;
    c->ts_recent_age_ms = (uint32_t)(now / 1000);
    c->last_ack_sent = c->rcv_nxt;
    c->rcv_adv = c->rcv_nxt + min32(rcv_space(c), 65535u << c->rcv_wscale);
    establish(env, c, now);
    c->snd_wnd = (uint32_t)ack->win << c->snd_wscale;
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = ack->seq;
    c->snd_wl2 = ack->ack;
    ev(env, c, MTCP_EV_ACCEPT, 0, 0);
    /* the ACK may carry data (and FIN): run it through the normal path */
    if (ack->payload_len || (ack->flags & WIRE_TCP_FIN)) tcp_input(env, c, now, ack);
    sync_timer(env, c);
}

/* ------------------------------------------------------------------------------------------ */
/* input                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void challenge_ack(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 5961 7: rate limited by the engine's budget */
    if (env->challenge_ok && !env->challenge_ok(env->ctx, now)) {
        CNT(env, CTR_CHALLENGE_ACKS_LIMITED);
        return;
    }
    CNT(env, CTR_CHALLENGE_ACKS);
    c->flags |= TCPF_ACK_NOW;
    want_output(env, c);
}

static void rtt_sample(const struct tcp_env *env, struct tcp_conn *c, uint32_t r)
{
    /* RFC 6298 2.2 / 2.3 */
    if (r == 0) r = 1;
    if (c->srtt_us == 0) {
        c->srtt_us = r;
        c->rttvar_us = r / 2;
    } else {
        uint32_t delta = c->srtt_us > r ? c->srtt_us - r : r - c->srtt_us;
        c->rttvar_us = (uint32_t)(((uint64_t)3 * c->rttvar_us + delta) / 4);
        c->srtt_us = (uint32_t)(((uint64_t)7 * c->srtt_us + r) / 8);
    }
    uint64_t rto = (uint64_t)c->srtt_us + max32(RTO_G_US, 4 * c->rttvar_us);
    if (rto < env->cfg->min_rto_us) rto = env->cfg->min_rto_us;     /* 2.4 */
    if (rto > env->cfg->max_rto_us) rto = env->cfg->max_rto_us;     /* 2.5 */
    c->rto_us = (uint32_t)rto;
}

static void exit_recovery(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->flags &= (uint16_t)~TCPF_IN_RECOVERY;
    c->rec_inflate = 0;
    c->dupacks = 0;
    cc_on_recovery_exit(&c->cc, now);
    (void)env;
}

static void enter_recovery(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 6582 3.2 step 2 / RFC 6675 5 step 4: RecoveryPoint = HighData, ssthresh/cwnd through
     * cc, retransmit the first unacked segment. */
    uint32_t flight = c->snd_max - c->snd_una;
    c->recover = c->snd_max;
    c->flags |= TCPF_IN_RECOVERY;
    cc_on_congestion(&c->cc, now, flight);
    c->rec_inflate = (c->flags & TCPF_SACK_OK) ? 0 : DUPTHRESH * eff_mss(c);
    c->high_rxt = c->snd_una;
    c->rexmit_now = 1;
    CNT(env, CTR_FAST_RETRANS);
    if (c->flags & TCPF_SACK_OK) CNT(env, CTR_SACK_RECOVERY);
    want_output(env, c);
}

/* New data acknowledged: SND.UNA < SEG.ACK =< SND.NXT (RFC 9293 3.10.7.4 fifth check). Returns 1
 * if our FIN is now acknowledged. */
static int ack_advance(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    uint32_t ack = seg->ack;
    uint32_t acked = ack - c->snd_una;
    uint32_t flight = c->snd_max - c->snd_una;
    uint32_t data_acked = min32(acked, c->snd.len);
    int fin_acked = (c->flags & TCPF_FIN_SENT) && acked > data_acked;
    buf_stream_consume(env->pool, &c->snd, data_acked);
    c->snd_una = ack;
    if (seq_lt(c->snd_nxt, ack)) c->snd_nxt = ack;
    if (seq_lt(c->high_rxt, ack)) c->high_rxt = ack;

    /* RTT (RFC 7323 4.1 with timestamps: only ACKs that advance the left edge; RFC 6298 otherwise) */
    uint32_t rtt = 0;
    if ((c->flags & TCPF_TS_OK) && seg->has_ts && seg->tsecr) {
        uint32_t ms = ts_now(c, now) - seg->tsecr;
        if (ms < 3600u * 1000u) rtt = ms * 1000u + 1;
    } else if (c->rtt_active && seq_ge(ack, c->rtt_seq)) {
        rtt = (uint32_t)(now - c->rtt_start_us) + 1;
        c->rtt_active = 0;
    }
    if (rtt) rtt_sample(env, c, rtt - 1);
    c->retries = 0;

    if (c->flags & TCPF_IN_RECOVERY) {
        if (seq_ge(ack, c->recover)) {
            /* RFC 6582 3.2 step 3 (full ACK) / RFC 6675 5 step 4: leave recovery */
            exit_recovery(env, c, now);
        } else if (!(c->flags & TCPF_SACK_OK)) {
            /* RFC 6582 3.2 step 3 (partial ACK): retransmit the next unacked segment, deflate
             * by the amount acked, add back one SMSS, reset the RTO timer */
            c->rexmit_now = 1;
            c->rec_inflate = c->rec_inflate > data_acked ? c->rec_inflate - data_acked : 0;
            c->rec_inflate += eff_mss(c);
            c->t_rexmit = 0;
        }
    } else {
        c->dupacks = 0;
        cc_on_ack(&c->cc, now, data_acked, rtt ? rtt - 1 : 0, flight);
    }

    /* RFC 6298 5.2 / 5.3 */
    c->persist = 0;
    c->persist_backoff = 0;
    c->t_rexmit = (c->snd_una == c->snd_max) ? 0 : now + c->rto_us;

    if (c->sb_n) sb_prune(c);

    if ((c->flags & TCPF_WANT_WRITABLE) && c->snd.len < c->sndbuf && data_acked) {
        c->flags &= (uint16_t)~TCPF_WANT_WRITABLE;
        ev(env, c, MTCP_EV_WRITABLE, 0, c->sndbuf - c->snd.len);
    }
    return fin_acked;
}

/* RFC 9293 3.10.7.3: SEGMENT ARRIVES in SYN-SENT. */
static void input_syn_sent(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    const struct mtcp_config *cfg = env->cfg;
    int ack_ok = 0;
    /* first: check the ACK bit */
    if (seg->flags & WIRE_TCP_ACK) {
        if (seq_le(seg->ack, c->iss) || seq_gt(seg->ack, c->snd_max)) {
            /* "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset <SEQ=SEG.ACK><CTL=RST>" */
            if (!(seg->flags & WIRE_TCP_RST)) emit_rst(env, c, seg->ack, 0, 0);
            return;
        }
        ack_ok = 1;
    }
    /* second: the RST bit. RFC 5961 3.2: only with an acceptable ACK. */
    if (seg->flags & WIRE_TCP_RST) {
        if (ack_ok) {
            CNT(env, CTR_RST_IN);
            conn_fail(env, c, MTCP_EV_CONNECT_FAILED, ECONNREFUSED);   /* "connection reset" */
        }
        return;
    }
    /* fourth: the SYN bit */
    if (!(seg->flags & WIRE_TCP_SYN)) return;
    c->irs = seg->seq;
    c->rcv_nxt = seg->seq + 1;
    c->rcv_adv = c->rcv_nxt + min32(rcv_space(c), 65535u);   /* what our SYN offered (unscaled) */
    set_peer_mss(c, seg);
    if (cfg->window_scaling && seg->has_wscale) {
        c->flags |= TCPF_WS_OK;
        c->snd_wscale = seg->wscale;
    } else {
        c->snd_wscale = 0;
        c->rcv_wscale = 0;               /* RFC 7323 2.2: both sides or neither */
    }
    if (cfg->sack && seg->sack_perm) c->flags |= TCPF_SACK_OK;
    if (cfg->timestamps && seg->has_ts) {
        c->flags |= TCPF_TS_OK;
        c->ts_recent = seg->tsval;
        c->ts_recent_age_ms = (uint32_t)(now / 1000);
    }
    c->snd_wnd = seg->win;               /* not scaled in a SYN */
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = seg->seq;
    c->snd_wl2 = seg->ack;
    if (ack_ok) {
        /* "If SND.UNA > ISS (our SYN has been ACKed), change the connection state to ESTABLISHED,
         * form an ACK segment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and send it." */
        if ((c->flags & TCPF_TS_OK) && seg->has_ts && seg->tsecr)
            rtt_sample(env, c, (ts_now(c, now) - seg->tsecr) * 1000u);
        else if (c->rtt_active && c->retries == 0)
            rtt_sample(env, c, (uint32_t)(now - c->rtt_start_us));
        else if (c->retries)
            c->rto_us = max32(env->cfg->initial_rto_us, env->cfg->min_rto_us);  /* RFC 6298 5.7 */
        c->rtt_active = 0;
        c->snd_una = seg->ack;
        if (seq_lt(c->snd_nxt, c->snd_una)) c->snd_nxt = c->snd_una;
        c->t_rexmit = 0;
        establish(env, c, now);
        c->flags |= TCPF_ACK_NOW;
        ev(env, c, MTCP_EV_CONNECTED, 0, 0);
        want_output(env, c);
    } else {
        /* simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment
         * <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it" */
        c->state = MTCP_ST_SYN_RECEIVED;
        c->snd_nxt = c->iss;
        c->t_rexmit = 0;
        want_output(env, c);
    }
}

/* RFC 9293 3.10.7.4 sixth/seventh check: segment text. seq/data/len already trimmed to the window.
 * Returns 1 if new in-order data became readable. */
static int data_process(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq,
                        const uint8_t *data, uint32_t len, int *fin)
{
    int readable = 0;
    if (!len) {
        if (*fin && seq != c->rcv_nxt) {          /* a bare FIN beyond a gap: remember it */
            c->ooo_fin = seq;
            c->ooo_fin_valid = 1;
            *fin = 0;
            c->flags |= TCPF_ACK_NOW;
        }
        return 0;
    }
    if (seq == c->rcv_nxt) {
        uint32_t n = buf_stream_append(env->pool, &c->rcv, data, len);
        if (n < len) { CNT(env, CTR_RCV_PRUNED); *fin = 0; c->flags |= TCPF_ACK_NOW; }
        c->rcv_nxt += n;
        c->bytes_received += n;
        readable = n > 0;
        struct buf_ooo *o = ooo_of(env, c, 0);
        if (o) {
            uint32_t pulled = buf_ooo_pull(env->pool, o, c->rcv_nxt, &c->rcv);
            if (pulled) *fin = 0;                  /* data beyond a FIN: bogus, ignore the FIN */
            c->rcv_nxt += pulled;
            c->bytes_received += pulled;
            /* RFC 5681 4.2: ACK immediately a segment that fills (part of) a gap */
            c->flags |= TCPF_ACK_NOW;
            if (buf_ooo_bytes(o) == 0) ooo_release(env, c);
        }
        if (c->ooo_fin_valid && c->ooo_fin == c->rcv_nxt) { *fin = 1; c->ooo_fin_valid = 0; }
        if (!(c->flags & TCPF_ACK_NOW)) {
            /* delayed ACK (RFC 9293 3.8.6.3, RFC 5681 4.2, RFC 1122 4.2.3.2): at least every second
             * full-sized segment, at most delack_us; quick ACKs at the start */
            if (c->quickacks) {
                c->quickacks--;
                c->flags |= TCPF_ACK_NOW;
            } else if (c->rcv_nxt - c->last_ack_sent >= 2 * eff_rcv_mss(c)) {
                c->flags |= TCPF_ACK_NOW;
            } else if (!c->t_delack) {
                c->t_delack = now + env->cfg->delack_us;
                c->flags |= TCPF_DELACK;
            }
        }
    } else {
        /* out of order (RFC 9293 3.10.7.4 seventh; RFC 5681 4.2: immediate duplicate ACK) */
        struct buf_ooo *o = ooo_of(env, c, 1);
        int r = o ? buf_ooo_insert(env->pool, o, c->rcv_nxt, seq, data, len) : -ENOBUFS;
        if (r < 0) CNT(env, CTR_OOO_DROPS);
        else CNT(env, CTR_OOO_SEGS);
        if (*fin && r >= 0 && (uint32_t)r == len) { c->ooo_fin = seq + len; c->ooo_fin_valid = 1; }
        if (o && buf_ooo_bytes(o) == 0) ooo_release(env, c);
        *fin = 0;
        c->flags |= TCPF_ACK_NOW;
    }
    return readable;
}

/* RFC 9293 3.10.7.4: SEGMENT ARRIVES in a synchronized state (and SYN-RECEIVED). */
static void input_synchronized(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    const uint8_t fl = seg->flags;
    uint32_t seq = seg->seq;
    const uint8_t *data = seg->payload;
    uint32_t len = seg->payload_len;
    int fin = (fl & WIRE_TCP_FIN) != 0;
    int syn = (fl & WIRE_TCP_SYN) != 0;
    uint32_t wnd = rcv_wnd_cur(c);

    /* RFC 7323 5.3 R1: PAWS, before the sequence-number check (not for RSTs) */
    if ((c->flags & TCPF_TS_OK) && seg->has_ts && !(fl & WIRE_TCP_RST) && (int32_t)(seg->tsval - c->ts_recent) < 0) {
        if ((uint32_t)(now / 1000) - c->ts_recent_age_ms > PAWS_24DAYS_MS) {
            c->ts_recent = seg->tsval;    /* 5.5: ts_recent too old to be trusted */
        } else {
            CNT(env, CTR_PAWS_DROPS);
            c->flags |= TCPF_ACK_NOW;
            want_output(env, c);
            return;
        }
    }

    /* second: the RST bit (RFC 5961 3.2: exact match resets, in-window gets a challenge ACK) */
    if (fl & WIRE_TCP_RST) {
        int inwin = seq_ge(seq, c->rcv_nxt) && seq_lt(seq, c->rcv_nxt + max32(wnd, 1));
        if (seq == c->rcv_nxt) {
            CNT(env, CTR_RST_IN);
            switch (c->state) {
            case MTCP_ST_SYN_RECEIVED:
                /* passive: back to LISTEN = drop it (the engine owns the listener); active
                 * (simultaneous open): "connection refused" */
                conn_die(env, c, ECONNREFUSED);
                break;
            case MTCP_ST_ESTABLISHED:
            case MTCP_ST_FIN_WAIT_1:
            case MTCP_ST_FIN_WAIT_2:
            case MTCP_ST_CLOSE_WAIT:
                /* "any outstanding RECEIVEs and SEND should receive reset responses" */
                conn_die(env, c, ECONNRESET);
                break;
            case MTCP_ST_CLOSING:
            case MTCP_ST_LAST_ACK:
            case MTCP_ST_TIME_WAIT:
            default:
                /* "enter the CLOSED state, delete the TCB, and return" */
                if (c->state == MTCP_ST_TIME_WAIT) conn_closed(env, c);
                else conn_die(env, c, ECONNRESET);
                break;
            }
        } else if (inwin) {
            challenge_ack(env, c, now);
        } else {
            CNT(env, CTR_OUT_OF_WINDOW);
        }
        return;
    }

    /* SYN-RECEIVED: a retransmitted SYN means our SYN-ACK was lost (RFC 9293 3.10.7.4 + Linux) */
    if (syn && c->state == MTCP_ST_SYN_RECEIVED && seq == c->irs && !(fl & WIRE_TCP_ACK)) {
        c->snd_nxt = c->iss;
        want_output(env, c);
        return;
    }

    /* simultaneous open (RFC 9293 3.5 figure 7, line 5): in SYN-RECEIVED the peer's SYN,ACK
     * repeats the SYN we already have; take it as the ACK of ours (and ACK it) */
    if (syn && c->state == MTCP_ST_SYN_RECEIVED && seq == c->irs && (fl & WIRE_TCP_ACK) &&
        !(c->flags & TCPF_PASSIVE)) {
        syn = 0;
        seq++;
        c->flags |= TCPF_ACK_NOW;
    }

    /* first: sequence number acceptability (RFC 9293 3.10.7.4, the four cases) */
    uint32_t seglen = len + (uint32_t)syn + (uint32_t)fin;
    int ok;
    if (seglen == 0)
        ok = wnd == 0 ? seq == c->rcv_nxt : (seq_ge(seq, c->rcv_nxt) && seq_lt(seq, c->rcv_nxt + wnd));
    else if (wnd == 0)
        ok = 0;
    else
        ok = (seq_ge(seq, c->rcv_nxt) && seq_lt(seq, c->rcv_nxt + wnd)) ||
             (seq_ge(seq + seglen - 1, c->rcv_nxt) && seq_lt(seq + seglen - 1, c->rcv_nxt + wnd));
    int probe = 0;
    if (!ok && seglen == 0 && seq == c->rcv_nxt - 1) {
        /* a keepalive / zero-window probe <SEQ=RCV.NXT-1> (ours and Linux's): answered with an
         * ACK as any unacceptable segment, but its ACK and window are used — they are as hard to
         * forge as an in-window segment, and dropping them would cause spurious RTOs */
        ok = 1;
        probe = 1;
        seq = c->rcv_nxt;
        c->flags |= TCPF_ACK_NOW;
    }
    if (!ok && wnd == 0 && seq == c->rcv_nxt) {
        /* "special allowance should be made to accept valid ACKs, URGs, and RSTs" on a zero window
         * (a zero-window probe): process the ACK, drop the text, answer with our window */
        ok = 1;
        len = 0;
        fin = 0;
        c->flags |= TCPF_ACK_NOW;
    }
    if (!ok) {
        /* "If an incoming segment is not acceptable, an acknowledgment should be sent in reply" */
        if (!syn) CNT(env, CTR_OUT_OF_WINDOW);
        /* TIME-WAIT: "The only thing that can arrive in this state is a retransmission of the
         * remote FIN. Acknowledge it, and restart the 2 MSL timeout." */
        if (fin && c->state == MTCP_ST_TIME_WAIT && seq + len + 1 == c->rcv_nxt)
            c->t_timewait = now + 2ull * env->cfg->msl_us;
        if (syn && synchronized_state(c->state)) { challenge_ack(env, c, now); return; }
        c->flags |= TCPF_ACK_NOW;
        want_output(env, c);
        return;
    }

    /* RFC 7323 4.3 (2): update TS.Recent */
    if ((c->flags & TCPF_TS_OK) && seg->has_ts && seq_le(seq, c->last_ack_sent) &&
        (int32_t)(seg->tsval - c->ts_recent) >= 0) {
        c->ts_recent = seg->tsval;
        c->ts_recent_age_ms = (uint32_t)(now / 1000);
    }

    /* fourth: the SYN bit in a synchronized state: RFC 5961 4.2 challenge ACK, drop */
    if (syn) {
        challenge_ack(env, c, now);
        return;
    }

    /* trim to the window: before rcv_nxt (duplicate) and beyond the right edge */
    if (seq_lt(seq, c->rcv_nxt)) {
        uint32_t skip = c->rcv_nxt - seq;
        if (skip > len) {
            /* entirely old, FIN included: a duplicate, ACK it at once */
            c->flags |= TCPF_ACK_NOW;
            fin = 0;
            len = 0;
        } else {
            if (len && skip == len && !fin) c->flags |= TCPF_ACK_NOW;
            data += skip;
            len -= skip;
        }
        seq = c->rcv_nxt;
    }
    uint32_t right = c->rcv_nxt + wnd;
    if (len && seq_gt(seq + len, right)) {
        len = seq_lt(seq, right) ? right - seq : 0;
        fin = 0;
        c->flags |= TCPF_ACK_NOW;
    }
    if (fin && (c->flags & TCPF_RCVD_FIN)) {
        /* a retransmitted FIN: ACK it (RFC 9293 3.10.7.4 eighth, TIME-WAIT restarts 2 MSL) */
        fin = 0;
        c->flags |= TCPF_ACK_NOW;
        if (c->state == MTCP_ST_TIME_WAIT) c->t_timewait = now + 2ull * env->cfg->msl_us;
    }

    /* fifth: the ACK field */
    if (!(fl & WIRE_TCP_ACK)) return;    /* "if the ACK bit is off, drop the segment and return" */

    c->last_rx_us = now;
    c->ka_probes = 0;
    if ((c->flags & TCPF_KEEPALIVE) && c->t_keepalive) c->t_keepalive = now + c->ka_idle_us;
    if (c->persist) c->retries = 0;                 /* the peer answers our window probes */

    uint32_t ack = seg->ack;
    if (c->state == MTCP_ST_SYN_RECEIVED) {
        /* "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and continue
         * processing; otherwise form a reset segment <SEQ=SEG.ACK><CTL=RST> and send it." */
        if (!(seq_lt(c->snd_una, ack) && seq_le(ack, c->snd_max))) {
            emit_rst(env, c, ack, 0, 0);
            return;
        }
        c->snd_una = c->iss + 1;          /* the SYN is acknowledged */
        if ((c->flags & TCPF_TS_OK) && seg->has_ts && seg->tsecr)
            rtt_sample(env, c, (ts_now(c, now) - seg->tsecr) * 1000u);
        else if (c->rtt_active && c->retries == 0)
            rtt_sample(env, c, (uint32_t)(now - c->rtt_start_us));
        c->rtt_active = 0;
        establish(env, c, now);
        c->t_rexmit = 0;
        c->snd_wnd = (uint32_t)seg->win << c->snd_wscale;
        c->max_snd_wnd = max32(c->max_snd_wnd, c->snd_wnd);
        c->snd_wl1 = seq;
        c->snd_wl2 = ack;
        ev(env, c, (c->flags & TCPF_PASSIVE) ? MTCP_EV_ACCEPT : MTCP_EV_CONNECTED, 0, 0);
    }

    /* RFC 5961 5.2: acceptable ACKs are (SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT */
    if (seq_gt(ack, c->snd_max) || seq_lt(ack, c->snd_una - max32(c->max_snd_wnd, 1))) {
        challenge_ack(env, c, now);
        return;
    }

    int fin_acked = 0;
    uint32_t old_wnd = c->snd_wnd;
    uint32_t new_wnd = (uint32_t)seg->win << c->snd_wscale;
    int sack_new = 0;
    if ((c->flags & TCPF_SACK_OK) && seg->nsack) sack_new = sb_update(c, seg);
    if (seq_gt(ack, c->snd_una)) {
        fin_acked = ack_advance(env, c, now, seg);
    } else if (ack == c->snd_una && c->snd_max != c->snd_una && len == 0 && !fin && !probe &&
               seg->payload_len == 0 && new_wnd == old_wnd && !c->persist && old_wnd != 0) {
        /* duplicate ACK (RFC 5681 2 definition; RFC 6675 counts those carrying new SACK info) */
        CNT(env, CTR_DUP_ACKS);
        if (c->dupacks < 255) c->dupacks++;
        if (c->flags & TCPF_IN_RECOVERY) {
            if (!(c->flags & TCPF_SACK_OK)) c->rec_inflate += eff_mss(c);   /* RFC 6582 3.2 step 4 */
            want_output(env, c);
        } else if (seq_ge(c->snd_una, c->recover)) {
            /* RFC 6582 3.2 step 2 (not for dupACKs below recover, e.g. after an RTO); RFC 6675
             * 5 step 4: DupThresh dupACKs or IsLost(HighACK + 1) */
            int lost = (c->flags & TCPF_SACK_OK) && c->sb_n && sb_hole_lost(c, 0);
            if (c->dupacks >= DUPTHRESH || lost) enter_recovery(env, c, now);
        }
    }
    (void)sack_new;

    /* window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)) */
    uint32_t wseq = probe ? c->rcv_nxt : seg->seq;     /* a probe's window is current */
    if (seq_lt(c->snd_wl1, wseq) || (c->snd_wl1 == wseq && seq_le(c->snd_wl2, ack))) {
        c->snd_wnd = new_wnd;
        c->snd_wl1 = wseq;
        c->snd_wl2 = ack;
        if (new_wnd > c->max_snd_wnd) c->max_snd_wnd = new_wnd;
        if (new_wnd > old_wnd) {
            if (c->persist && new_wnd) {
                c->persist = 0;
                c->persist_backoff = 0;
                c->t_rexmit = (c->snd_una == c->snd_max) ? 0 : now + c->rto_us;
            }
            want_output(env, c);
        }
    }

    /* state-specific ACK processing (RFC 9293 3.10.7.4 fifth check) */
    switch (c->state) {
    case MTCP_ST_FIN_WAIT_1:
        /* "if the FIN segment is now acknowledged, then enter FIN-WAIT-2" */
        if (fin_acked) {
            c->state = MTCP_ST_FIN_WAIT_2;
            c->t_rexmit = 0;
            if (c->flags & TCPF_DETACHED) c->t_timewait = now + 2ull * env->cfg->msl_us;  /* orphan timeout */
        }
        break;
    case MTCP_ST_CLOSING:
        /* "if the ACK acknowledges our FIN, then enter the TIME-WAIT state" */
        if (fin_acked) enter_time_wait(env, c, now);
        break;
    case MTCP_ST_LAST_ACK:
        /* "if our FIN is now acknowledged, delete the TCB, enter the CLOSED state" */
        if (fin_acked) {
            ev(env, c, MTCP_EV_CLOSED, 0, 0);
            conn_closed(env, c);
            return;
        }
        break;
    default:
        break;
    }

    /* new data for an application that closed (released) the connection: nobody will read
     * it — reset, as Linux does (tcp_rcv_state_process, RCV_SHUTDOWN) */
    if ((c->flags & TCPF_DETACHED) && len && (c->state == MTCP_ST_FIN_WAIT_1 || c->state == MTCP_ST_FIN_WAIT_2)) {
        emit_rst(env, c, c->snd_max, seq + len, WIRE_TCP_ACK);
        conn_die(env, c, ECONNRESET);
        return;
    }

    /* sixth/seventh: segment text (ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2 only) */
    int readable = 0;
    if (c->state == MTCP_ST_ESTABLISHED || c->state == MTCP_ST_FIN_WAIT_1 || c->state == MTCP_ST_FIN_WAIT_2)
        readable = data_process(env, c, now, seq, data, len, &fin);
    else if (len)
        c->flags |= TCPF_ACK_NOW;        /* text after the peer's FIN: just ACK */

    if (readable) ev(env, c, MTCP_EV_READABLE, 0, c->rcv.len);

    /* eighth: the FIN bit */
    if (fin && !(c->flags & TCPF_RCVD_FIN) && synchronized_state(c->state)) {
        c->rcv_nxt++;
        c->flags |= TCPF_RCVD_FIN | TCPF_ACK_NOW;
        c->ooo_fin_valid = 0;
        ev(env, c, MTCP_EV_PEER_CLOSED, 0, c->rcv.len);
        switch (c->state) {
        case MTCP_ST_SYN_RECEIVED:
        case MTCP_ST_ESTABLISHED:
            c->state = MTCP_ST_CLOSE_WAIT;                  /* "Enter the CLOSE-WAIT state" */
            break;
        case MTCP_ST_FIN_WAIT_1:
            /* "If our FIN has been ACKed ... enter TIME-WAIT ... otherwise, enter the CLOSING state"
             * (the ACK was processed above: FIN-WAIT-2 then) */
            c->state = MTCP_ST_CLOSING;
            break;
        case MTCP_ST_FIN_WAIT_2:
            c->t_timewait = 0;
            enter_time_wait(env, c, now);                    /* "Enter the TIME-WAIT state" */
            break;
        default:
            break;
        }
    }

    if (pending_output(c)) want_output(env, c);
}

void tcp_input(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    if (c->closed_done) return;
    switch (c->state) {
    case MTCP_ST_CLOSED: {
        /* RFC 9293 3.10.7.1: CLOSED — answer with a reset unless it is one */
        struct wire_tcp rst;
        if (tcp_rst_for(seg, &rst)) emit_rst(env, c, rst.seq, rst.ack, rst.flags & WIRE_TCP_ACK);
        return;
    }
    case MTCP_ST_LISTEN:
        return;                          /* the engine owns listeners */
    case MTCP_ST_SYN_SENT:
        input_syn_sent(env, c, now, seg);
        break;
    default:
        input_synchronized(env, c, now, seg);
        break;
    }
    sync_timer(env, c);
}

int tcp_rst_for(const struct wire_tcp *seg, struct wire_tcp *rst)
{
    if (seg->flags & WIRE_TCP_RST) return 0;     /* "An incoming segment containing a RST is discarded" */
    memset(rst, 0, sizeof *rst);
    rst->sport = seg->dport;
    rst->dport = seg->sport;
    if (seg->flags & WIRE_TCP_ACK) {
        /* "<SEQ=SEG.ACK><CTL=RST>" */
        rst->seq = seg->ack;
        rst->flags = WIRE_TCP_RST;
    } else {
        /* "<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>" (SYN and FIN count in SEG.LEN) */
        rst->seq = 0;
        rst->ack = seg->seq + seg->payload_len + ((seg->flags & WIRE_TCP_SYN) ? 1u : 0u) +
                   ((seg->flags & WIRE_TCP_FIN) ? 1u : 0u);
        rst->flags = WIRE_TCP_RST | WIRE_TCP_ACK;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* timers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void on_rto(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    const struct mtcp_config *cfg = env->cfg;
    c->t_rexmit = 0;
    if (c->persist) {
        /* RFC 9293 3.8.6.1: zero-window probe; keep probing as long as the peer answers, back
         * off exponentially. Like Linux (tcp_xmit_probe_skb) the probe is an out-of-window
         * segment <SEQ=SND.UNA-1> without data: every TCP must answer it with an ACK carrying its
         * current window, and no probe byte ends up in flight (nothing to retransmit or
         * mistake for a duplicate ACK when the window reopens). */
        c->persist = 0;
        /* a peer that stopped answering probes altogether is given up on like an RTO (Linux
         * tcp_probe_timer); one that answers with a zero window is probed forever */
        if (c->retries >= env->cfg->max_retries) {
            conn_die(env, c, ETIMEDOUT);
            return;
        }
        c->retries++;
        CNT(env, CTR_PERSIST_PROBES);
        uint32_t ds = data_seq(c);
        if (c->snd.len && c->snd_wnd == 0) {
            uint8_t f = WIRE_TCP_ACK;
            (void)emit(env, c, now, c->snd_una - 1, 0, &f);
        } else if (seq_lt(c->snd_nxt, ds + c->snd.len)) {
            /* small window held back by SWS avoidance: the override timeout (3.8.6.2.1) */
            uint32_t l = min32(min32(c->snd_wnd, eff_mss(c)), ds + c->snd.len - c->snd_nxt);
            if (l && send_seg(env, c, now, c->snd_nxt, l, WIRE_TCP_ACK) > 0) return;   /* RTO runs now */
        }
        if (c->persist_backoff < 16) c->persist_backoff++;
        c->persist = 1;
        c->t_rexmit = now + persist_interval(env, c);
        return;
    }
    if (c->snd_una == c->snd_max && !syn_unacked(c)) return;   /* nothing outstanding */

    uint32_t limit = c->state == MTCP_ST_SYN_SENT ? cfg->syn_retries
                   : c->state == MTCP_ST_SYN_RECEIVED ? cfg->synack_retries : cfg->max_retries;
    if (c->retries >= limit) {
        /* RFC 9293 3.8.3 R2: give up */
        conn_die(env, c, ETIMEDOUT);
        return;
    }
    c->retries++;
    CNT(env, CTR_TIMEOUTS);
    /* RFC 6298 5.5: back off; 5.6: restart with the new RTO (done by send_seg) */
    uint64_t rto = (uint64_t)c->rto_us * 2;
    c->rto_us = (uint32_t)(rto > cfg->max_rto_us ? cfg->max_rto_us : rto);
    c->rtt_active = 0;                                   /* Karn */
    if (synchronized_state(c->state)) {
        /* RFC 5681 3.1 eq. 4 via cc; RFC 6582 / RFC 6675 5.1: leave recovery, forget SACK info */
        cc_on_rto(&c->cc, now, c->snd_max - c->snd_una);
        c->flags &= (uint16_t)~TCPF_IN_RECOVERY;
        c->rec_inflate = 0;
        c->dupacks = 0;
        c->recover = c->snd_max;
        c->sb_n = 0;
        c->sacked_bytes = 0;
        c->rexmit_now = 0;
        c->high_rxt = c->snd_una;
        c->snd_nxt = c->snd_una;                         /* go-back-N */
    } else {
        c->snd_nxt = c->iss;                             /* resend SYN / SYN-ACK */
    }
    tcp_output(env, c, now);
}

static void on_keepalive(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->t_keepalive = 0;
    if (!(c->flags & TCPF_KEEPALIVE) || !synchronized_state(c->state) || c->state == MTCP_ST_TIME_WAIT) return;
    if (c->snd_max != c->snd_una) {                      /* the RTO watches this connection */
        c->t_keepalive = now + c->ka_idle_us;
        return;
    }
    if (c->ka_probes >= c->ka_cnt) {
        emit_rst(env, c, c->snd_max, c->rcv_nxt, WIRE_TCP_ACK);
        conn_die(env, c, ETIMEDOUT);
        return;
    }
    /* RFC 9293 3.8.4 / RFC 1122 4.2.3.6: <SEQ=SND.NXT-1> with no data */
    uint8_t f = WIRE_TCP_ACK;
    (void)emit(env, c, now, c->snd_una - 1, 0, &f);
    CNT(env, CTR_KEEPALIVE_PROBES);
    c->ka_probes++;
    c->t_keepalive = now + c->ka_intvl_us;
}

void tcp_timer(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    if (c->closed_done) return;
    if (c->t_timewait && c->t_timewait <= now) {
        /* TIME-WAIT 2 MSL over (RFC 9293 3.10.8), or an orphaned FIN-WAIT-2 gave up */
        c->t_timewait = 0;
        if (c->state == MTCP_ST_TIME_WAIT || c->state == MTCP_ST_FIN_WAIT_2) {
            conn_closed(env, c);
            return;
        }
    }
    if (c->t_delack && c->t_delack <= now) {
        c->t_delack = 0;
        c->flags &= (uint16_t)~TCPF_DELACK;
        c->flags |= TCPF_ACK_NOW;
        CNT(env, CTR_DELAYED_ACKS);
        want_output(env, c);
    }
    if (c->t_rexmit && c->t_rexmit <= now) {
        on_rto(env, c, now);
        if (c->closed_done) return;
    }
    if (c->t_keepalive && c->t_keepalive <= now) {
        on_keepalive(env, c, now);
        if (c->closed_done) return;
    }
    sync_timer(env, c);
}

/* ------------------------------------------------------------------------------------------ */
/* application calls                                                                          */
/* ------------------------------------------------------------------------------------------ */

int64_t tcp_send(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const uint8_t *data, uint32_t len)
{
    (void)now;
    switch (c->state) {
    case MTCP_ST_SYN_SENT:
    case MTCP_ST_SYN_RECEIVED:
    case MTCP_ST_ESTABLISHED:
    case MTCP_ST_CLOSE_WAIT:
        /* RFC 9293 3.10.2 SEND: queue (also before establishment) */
        if (c->flags & TCPF_FIN_QUEUED) return -EPIPE;
        break;
    case MTCP_ST_CLOSED:
    case MTCP_ST_LISTEN:
        return c->closed_done ? -EPIPE : -ENOTCONN;
    default:
        return -EPIPE;                   /* "connection closing" */
    }
    uint32_t room = c->sndbuf > c->snd.len ? c->sndbuf - c->snd.len : 0;
    uint32_t n = min32(room, len);
    if (n) n = buf_stream_append(env->pool, &c->snd, data, n);
    if (n < len) c->flags |= TCPF_WANT_WRITABLE;
    if (n && can_send_data_state(c->state)) want_output(env, c);
    return n;
}

int64_t tcp_recv(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint8_t *out, uint32_t cap)
{
    (void)now;
    uint32_t n = buf_stream_peek(env->pool, &c->rcv, 0, out, min32(cap, c->rcv.len));
    if (!n) return 0;
    buf_stream_consume(env->pool, &c->rcv, n);
    /* window update (RFC 9293 3.8.6.2.2, RFC 1122 4.2.3.3): tell the peer when the window grew by
     * min(rcvbuf/2, 2*MSS) since the last advertisement */
    if (!c->closed_done && synchronized_state(c->state) && !(c->flags & TCPF_RCVD_FIN)) {
        uint32_t cur = rcv_wnd_cur(c), space = rcv_space(c);
        if (space > cur && space - cur >= min32(c->rcvbuf / 2, 2 * eff_rcv_mss(c))) {
            c->flags |= TCPF_ACK_NOW;
            want_output(env, c);
        }
    }
    return n;
}

static int close_write(const struct tcp_env *env, struct tcp_conn *c)
{
    /* RFC 9293 3.10.4 CLOSE call */
    switch (c->state) {
    case MTCP_ST_SYN_SENT:
    case MTCP_ST_SYN_RECEIVED:
        c->flags |= TCPF_FIN_QUEUED;     /* "queue for processing after entering ESTABLISHED" */
        return 0;
    case MTCP_ST_ESTABLISHED:
        c->flags |= TCPF_FIN_QUEUED;
        c->state = MTCP_ST_FIN_WAIT_1;   /* "form a FIN segment ... enter FIN-WAIT-1" */
        break;
    case MTCP_ST_CLOSE_WAIT:
        c->flags |= TCPF_FIN_QUEUED;
        c->state = MTCP_ST_LAST_ACK;     /* "send a FIN segment, enter LAST-ACK" */
        break;
    default:
        return (c->flags & TCPF_FIN_QUEUED) ? 0 : -ENOTCONN;   /* already closing */
    }
    want_output(env, c);
    return 0;
}

int tcp_shutdown(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    (void)now;
    if (c->state == MTCP_ST_CLOSED || c->state == MTCP_ST_LISTEN) return -ENOTCONN;
    int r = close_write(env, c);
    sync_timer(env, c);
    return r;
}

int tcp_close(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->flags |= TCPF_DETACHED;
    if (c->state == MTCP_ST_CLOSED || c->closed_done) {
        /* already CLOSED (env->closed was called): just release the buffers */
        buf_stream_clear(env->pool, &c->rcv);
        buf_stream_clear(env->pool, &c->snd);
        ooo_release(env, c);
        if (!c->closed_done) conn_closed(env, c);
        return 0;
    }
    if (c->state == MTCP_ST_LISTEN || c->state == MTCP_ST_SYN_SENT) {
        conn_closed(env, c);             /* "delete the TCB, enter CLOSED" */
        return 0;
    }
    /* RFC 1122 4.2.2.13 / RFC 2525 2.17: closing with unread data resets; so does SO_LINGER 0 */
    if ((c->rcv.len && c->state != MTCP_ST_TIME_WAIT) || (c->flags & TCPF_LINGER0)) {
        tcp_abort(env, c, now);
        return 0;
    }
    buf_stream_clear(env->pool, &c->rcv);
    int r = close_write(env, c);
    if (c->state == MTCP_ST_FIN_WAIT_2 && !c->t_timewait) c->t_timewait = now + 2ull * env->cfg->msl_us;
    sync_timer(env, c);
    return r < 0 ? 0 : r;
}

void tcp_abort(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    (void)now;
    c->flags |= TCPF_DETACHED;
    if (c->closed_done) {
        buf_stream_clear(env->pool, &c->rcv);
        return;
    }
    switch (c->state) {
    case MTCP_ST_SYN_RECEIVED:
    case MTCP_ST_ESTABLISHED:
    case MTCP_ST_FIN_WAIT_1:
    case MTCP_ST_FIN_WAIT_2:
    case MTCP_ST_CLOSE_WAIT:
        /* RFC 9293 3.10.5 ABORT: "send a reset segment <SEQ=SND.NXT><CTL=RST>" */
        emit_rst(env, c, c->snd_max, c->rcv_nxt, WIRE_TCP_ACK);
        break;
    default:
        break;
    }
    buf_stream_clear(env->pool, &c->rcv);
    conn_closed(env, c);
}

int tcp_setopt(const struct tcp_env *env, struct tcp_conn *c, int opt, int64_t val)
{
    switch (opt) {
    case MTCP_OPT_NODELAY:
        if (val) c->flags |= TCPF_NODELAY; else c->flags &= (uint16_t)~TCPF_NODELAY;
        if (val && synchronized_state(c->state)) want_output(env, c);
        return 0;
    case MTCP_OPT_KEEPALIVE:
        if (val) {
            c->flags |= TCPF_KEEPALIVE;
            if (synchronized_state(c->state) && c->state != MTCP_ST_TIME_WAIT && !c->t_keepalive)
                c->t_keepalive = c->last_rx_us + c->ka_idle_us;
        } else {
            c->flags &= (uint16_t)~TCPF_KEEPALIVE;
            c->t_keepalive = 0;
        }
        break;
    case MTCP_OPT_KEEPIDLE:
        if (val <= 0 || val > 0xffffffffLL) return -EINVAL;
        c->ka_idle_us = (uint32_t)val;
        if (c->t_keepalive && !c->ka_probes) c->t_keepalive = c->last_rx_us + c->ka_idle_us;
        break;
    case MTCP_OPT_KEEPINTVL:
        if (val <= 0 || val > 0xffffffffLL) return -EINVAL;
        c->ka_intvl_us = (uint32_t)val;
        break;
    case MTCP_OPT_KEEPCNT:
        if (val <= 0 || val > 255) return -EINVAL;
        c->ka_cnt = (uint8_t)val;
        break;
    case MTCP_OPT_SNDBUF:
        if (val <= 0 || val > 0x7fffffffLL) return -EINVAL;
        c->sndbuf = (uint32_t)val;
        break;
    case MTCP_OPT_RCVBUF: {
        if (val <= 0 || val > 0x3fffffffLL) return -EINVAL;
        uint32_t v = (uint32_t)val;
        /* after the handshake the scale is fixed: the window cannot exceed 65535 << rcv_wscale */
        if (c->state != MTCP_ST_CLOSED && c->state != MTCP_ST_SYN_SENT && v > (65535u << c->rcv_wscale))
            v = 65535u << c->rcv_wscale;
        c->rcvbuf = v;
        if (c->state == MTCP_ST_SYN_SENT && env->cfg->window_scaling && c->snd_max == c->iss)
            c->rcv_wscale = tcp_wscale_for(v);
        if (synchronized_state(c->state)) want_output(env, c);
        break;
    }
    case MTCP_OPT_LINGER_ZERO:
        if (val) c->flags |= TCPF_LINGER0; else c->flags &= (uint16_t)~TCPF_LINGER0;
        return 0;
    default:
        return -ENOPROTOOPT;
    }
    sync_timer(env, c);
    return 0;
}

int tcp_getopt(const struct tcp_conn *c, int opt, int64_t *val)
{
    switch (opt) {
    case MTCP_OPT_NODELAY: *val = (c->flags & TCPF_NODELAY) != 0; return 0;
    case MTCP_OPT_KEEPALIVE: *val = (c->flags & TCPF_KEEPALIVE) != 0; return 0;
    case MTCP_OPT_KEEPIDLE: *val = c->ka_idle_us; return 0;
    case MTCP_OPT_KEEPINTVL: *val = c->ka_intvl_us; return 0;
    case MTCP_OPT_KEEPCNT: *val = c->ka_cnt; return 0;
    case MTCP_OPT_SNDBUF: *val = c->sndbuf; return 0;
    case MTCP_OPT_RCVBUF: *val = c->rcvbuf; return 0;
    case MTCP_OPT_LINGER_ZERO: *val = (c->flags & TCPF_LINGER0) != 0; return 0;
    default: return -ENOPROTOOPT;
    }
}

void tcp_info(const struct tcp_conn *c, struct mtcp_conn_info *out)
{
    out->state = c->state;
    out->mss = eff_mss(c);
    out->srtt_us = c->srtt_us;
    out->rttvar_us = c->rttvar_us;
    out->rto_us = c->rto_us;
    out->cwnd = c->cc.cwnd;
    out->ssthresh = c->cc.ssthresh;
    out->snd_wnd = c->snd_wnd;
    out->rcv_wnd = rcv_wnd_cur(c);
    out->unacked = c->snd_max - c->snd_una;
    out->sndbuf_used = c->snd.len;
    out->rcvbuf_used = c->rcv.len;
    out->bytes_sent = c->bytes_sent;
    out->bytes_received = c->bytes_received;
    out->retransmits = c->retransmits;
    out->flags = ((c->flags & TCPF_SACK_OK) ? 1u : 0u) | ((c->flags & TCPF_TS_OK) ? 2u : 0u) |
                 ((c->flags & TCPF_WS_OK) ? 4u : 0u) | ((c->flags & TCPF_NODELAY) ? 8u : 0u) |
                 ((c->flags & TCPF_KEEPALIVE) ? 16u : 0u);
}

void tcp_pmtu(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint16_t mss)
{
    /* RFC 1191 / RFC 8201: lower the MSS, resend what is in flight in smaller segments (no
     * congestion response: the loss was not congestion) */
    if (mss < 88 || mss >= c->mss) return;
    c->mss = mss;
    if (c->rcv_mss > mss) c->rcv_mss = mss;
    if (synchronized_state(c->state)) {
        cc_set_mss(&c->cc, eff_mss(c));
        if (c->snd_max != c->snd_una) {
            c->snd_nxt = c->snd_una;
            c->rtt_active = 0;
            want_output(env, c);
        }
    }
    (void)now;
    sync_timer(env, c);
}
