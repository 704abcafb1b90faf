/*
 * tcp.c — the TCP state machine (RFC 9293) as a pure module: no I/O, no clock, no malloc.
 * This file: opens, the application calls, connection lifecycle (CLOSED/TIME-WAIT entry, events,
 * timer re-arming) and the receive-window computation. The rest:
 *   tcp_in.c     segment arrival (RFC 9293 3.10.7)
 *   tcp_out.c    segment emission, Nagle/SWS, fast retransmit output
 *   tcp_sack.c   the peer's SACK scoreboard (RFC 6675)
 *   tcp_timer.c  RTO, persist, keepalive, delayed ACK, TIME-WAIT
 *   tcp_int.h    shared internals (tcpi_* functions, inline helpers)
 *
 * Call chains (engine -> tcp, tcp -> engine through struct tcp_env):
 *   engine_input -> tcp_input -> { input_syn_sent | input_synchronized }
 *                     input_synchronized -> paws -> rst_check -> acceptability -> syn_check
 *                                        -> ack_process (-> ack_advance -> rtt_sample / tcp_cc_on_ack,
 *                                           sack_update, dupack -> enter_recovery)
 *                                        -> data_process (-> tcp_buf_stream_append / buf_ooo_*)
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
 *   TCP_EV_CONNECTED        active open reached ESTABLISHED
 *   TCP_EV_ACCEPT           passive open (SYN-RECEIVED or cookie) reached ESTABLISHED; the
 *                            engine fills `parent` (TCP does not know the listener)
 *   TCP_EV_CONNECT_FAILED   active open died before ESTABLISHED: ECONNREFUSED (RST in SYN-SENT),
 *                            ETIMEDOUT (SYN retries exhausted)
 *   TCP_EV_READABLE         in-order data arrived; len = bytes readable now
 *   TCP_EV_WRITABLE         after a short tcp_send, send space freed
 *   TCP_EV_PEER_CLOSED      FIN received (after READABLE for its data)
 *   TCP_EV_ERROR            ECONNRESET (RST), ETIMEDOUT (retries / keepalive)
 *   TCP_EV_CLOSED           both directions closed normally (TIME-WAIT entered or LAST-ACK done)
 * Timers: all absolute us in c->t_*; env->timer(c, tcp_next_deadline(c)) is called whenever the
 * minimum changes; the engine calls tcp_timer(c, now) once it passed (spurious calls are harmless).
 * Counters: enum tcp_counter (tcp.h), slots in the counter array the engine hands over. Segment and connection
 * counters (SEGS_OUT, CONN_*) are the engine's (derive them from tx_commit / events).
 *
 * Implemented: RFC 9293 state diagram (incl. simultaneous open/close, half-close, TIME-WAIT
 * 2*MSL, RST generation/acceptance), RFC 5961 (RST/SYN/ACK checks, challenge ACKs with the
 * engine's budget), RFC 6298 RTO (Karn, backoff, min/max, give-up), RFC 7323 (WS, TS RTTM,
 * PAWS), RFC 2018 SACK (blocks from the reassembly queue, peer's blocks into an RFC 6675
 * scoreboard: pipe, NextSeg rules 1-3), RFC 6582 NewReno without SACK, RFC 3042 limited
 * transmit, RFC 5681/cc.h congestion control, delayed ACK (every 2nd full segment, delack_us,
 * quick ACKs at the start, immediate for out-of-order/gap fill), Nagle (RFC 896) + no-delay,
 * receiver and sender SWS avoidance (+ override via the persist timer), persist with Linux-style
 * <SND.UNA-1> zero-window probes, keepalive (RFC 1122 4.2.3.6; 64-bit times, default 7200 s),
 * PMTU lowering (tcp_pmtu). D-SACK (RFC 2883) blocks are sent for duplicate data (the sender
 * side ignores them). RTT from TSecr only when the echo is not older than our last
 * retransmission (rxt_tsval). TSO output (env->tso_max): new data as super-segments of full-MSS
 * multiples, cut by the link at c->tx_gso; retransmissions per MSS.
 * RFC 6191 TIME-WAIT reuse: tcp_timewait_reuse, which the engine calls for a SYN to a listener's
 * port hitting a TIME-WAIT connection; any other SYN reaching tcp_input in TIME-WAIT gets a
 * challenge ACK.
 * RACK-TLP (RFC 8985, tcp_sack.c) for SACK connections: per-range transmit records, losses (also
 * of retransmissions) marked by time with a reordering window adapted by DSACK, the reordering
 * timer t_rack, tail loss probes (t_tlp); the first RTO keeps the scoreboard and resends only
 * unSACKed bytes. NewReno (dupACKs) without SACK. An orphaned FIN-WAIT-2 ends after
 * cfg->fin_timeout_us (Linux tcp_fin_timeout). The send buffer is read through a cursor (snd_cur).
 * Not done: urgent data (URG is ignored), RFC 6675 rescue retransmission (rule 4), PRR (RFC 6937),
 * spurious-recovery undo (F-RTO / Eifel / DSACK undo), ECN, TCP-AO/MD5.
 */
#include "tcp_int.h"

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
    d = min_nz(d, c->t_rack);
    d = min_nz(d, c->t_tlp);
    return d;
}

void tcpi_sync_timer(const struct tcp_env *env, struct tcp_conn *c)
{
    if (c->closed_done) return;
    uint64_t d = tcp_next_deadline(c);
    if (d != c->armed_us) {
        c->armed_us = d;
        if (env->timer) env->timer(env->ctx, c, d);
    }
}

void tcpi_ev(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len)
{
    if (env->event && !(c->flags & TCPF_DETACHED)) env->event(env->ctx, c, type, err, len);
}

void tcpi_want_output(const struct tcp_env *env, struct tcp_conn *c)
{
    if (env->want_output) env->want_output(env->ctx, c);
}

struct buf_ooo *tcpi_ooo_of(const struct tcp_env *env, struct tcp_conn *c, int alloc)
{
    if (!env->ooo_get) return NULL;
    if (!alloc && c->ooo == 0xffff) return NULL;
    return env->ooo_get(env->ctx, c, alloc);
}

/* RACK transmit records: take from the engine's pool (none -> counted, RFC 6675 DupThresh for
 * this flight) / give back */
void tcpi_rec_take(const struct tcp_env *env, struct tcp_conn *c)
{
    c->recs = env->rec_get ? env->rec_get(env->ctx, c) : NULL;
    c->rec_n = 0;
    if (!c->recs) CNT(env, TCP_CTR_RACK_NO_REC);
}

void tcpi_rec_release(const struct tcp_env *env, struct tcp_conn *c)
{
    struct tcp_recs *r = c->recs;
    c->recs = NULL;
    c->rec_n = 0;
    if (r && env->rec_put) env->rec_put(env->ctx, c, r);
}

void tcpi_ooo_release(const struct tcp_env *env, struct tcp_conn *c)
{
    struct buf_ooo *o = tcpi_ooo_of(env, c, 0);
    if (o) tcp_buf_ooo_clear(env->pool, o);
    if (c->ooo != 0xffff && env->ooo_put) env->ooo_put(env->ctx, c);
    c->ooo = 0xffff;
}

/* Enter CLOSED: stop timers, free send/reassembly memory, tell the engine (once). c must not be
 * used by the caller afterwards. */
void tcpi_conn_closed(const struct tcp_env *env, struct tcp_conn *c)
{
    if (c->closed_done) return;
    c->state = TCP_ST_CLOSED;
    c->t_rexmit = c->t_delack = c->t_keepalive = c->t_timewait = 0;
    c->t_rack = c->t_tlp = 0;
    c->rec_n = 0;
    tcpi_rec_release(env, c);
    c->persist = 0;
    tcpi_ooo_release(env, c);
    tcp_buf_stream_clear(env->pool, &c->snd);
    memset(&c->snd_cur, 0, sizeof c->snd_cur);
    if (c->flags & TCPF_DETACHED) tcp_buf_stream_clear(env->pool, &c->rcv);
    tcpi_sync_timer(env, c);
    c->closed_done = 1;
    if (env->closed) env->closed(env->ctx, c);
}

/* Abnormal end: event, drop buffered data (like Linux on RST), CLOSED. */
void tcpi_conn_fail(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int err)
{
    if (type) tcpi_ev(env, c, type, err, 0);
    tcp_buf_stream_clear(env->pool, &c->rcv);
    tcpi_conn_closed(env, c);
}

/* Failure of an open/connection: which event depends on how far it got. */
void tcpi_conn_die(const struct tcp_env *env, struct tcp_conn *c, int err)
{
    if (c->state == TCP_ST_SYN_SENT ||
        (c->state == TCP_ST_SYN_RECEIVED && !(c->flags & TCPF_PASSIVE)))
        tcpi_conn_fail(env, c, TCP_EV_CONNECT_FAILED, err);
    else if (c->state == TCP_ST_SYN_RECEIVED)
        tcpi_conn_fail(env, c, 0, err);                       /* never accepted: nobody to tell */
    else if (c->state == TCP_ST_TIME_WAIT)
        tcpi_conn_closed(env, c);                             /* CLOSED was already reported */
    else
        tcpi_conn_fail(env, c, TCP_EV_ERROR, err);
}

void tcpi_enter_time_wait(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 9293 3.10.7.4 (FIN bit, TIME-WAIT): start the 2 MSL timer, turn off the others. */
    c->state = TCP_ST_TIME_WAIT;
    c->t_rexmit = 0;
    c->t_keepalive = 0;
    c->t_rack = c->t_tlp = 0;
    c->rec_n = 0;
    tcpi_rec_release(env, c);
    c->persist = 0;
    c->t_timewait = now + 2ull * env->cfg->msl_us;
    tcpi_ooo_release(env, c);
    tcp_buf_stream_clear(env->pool, &c->snd);
    memset(&c->snd_cur, 0, sizeof c->snd_cur);
    tcpi_ev(env, c, TCP_EV_CLOSED, 0, 0);
}

/* The window to advertise now (bytes from rcv_nxt): the free space in the receive buffer, but
 * (RFC 9293 3.8.6.2.2, receiver SWS avoidance) the right edge only moves when it can move by at
 * least min(rcvbuf/2, MSS), and (3.8.6.2.2 / RFC 7323 2.4) it never shrinks. */
uint32_t tcpi_rcv_wnd_calc(const struct tcp_conn *c)
{
    uint32_t cur = rcv_wnd_cur(c), space = rcv_space(c);
    if (space <= cur) return cur;
    if (space - cur < min32(c->rcvbuf / 2, eff_rcv_mss(c))) return cur;
    return space;
}

void tcp_conn_init(const struct tcp_env *env, struct tcp_conn *c, int family, uint16_t local_port,
                   uint16_t remote_port, uint16_t path_mss)
{
    const struct tcp_cfg *cfg = env->cfg;
    memset(c, 0, sizeof *c);
    c->state = TCP_ST_CLOSED;
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
    tcp_buf_stream_init(&c->snd);
    tcp_buf_stream_init(&c->rcv);
    c->cc.mss = path_mss;
}

void tcpi_set_peer_mss(struct tcp_conn *c, const struct wire_tcp *syn)
{
    uint32_t peer = syn->has_mss ? syn->mss : (c->family == TCP_AF_INET6 ? DEFAULT_MSS6 : DEFAULT_MSS4);
    if (peer < 88) peer = 88;
    c->mss = (uint16_t)min32(c->rcv_mss, peer);
}

/* Common part of reaching ESTABLISHED. */
void tcpi_establish(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->state = TCP_ST_ESTABLISHED;
    c->retries = 0;
    c->quickacks = QUICKACKS;
    c->flags |= TCPF_QUICKACK;
    c->recover = c->snd_una;
    tcp_cc_init(&c->cc, env->cfg->cc, eff_mss(c), env->cfg->initial_cwnd);
    c->last_rx_us = now;
    if (c->flags & TCPF_KEEPALIVE) c->t_keepalive = now + c->ka_idle_us;
    /* RFC 9293 3.10.4: a CLOSE issued before establishment takes effect now */
    if (c->flags & TCPF_FIN_QUEUED) c->state = TCP_ST_FIN_WAIT_1;
}

void tcp_open_active(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss)
{
    /* RFC 9293 3.10.1 OPEN call, CLOSED state (active): SYN-SENT */
    c->state = TCP_ST_SYN_SENT;
    c->iss = iss;
    c->snd_una = c->snd_nxt = c->snd_max = iss;
    c->recover = iss;
    c->rcv_wscale = env->cfg->window_scaling ? tcp_wscale_for(c->rcvbuf) : 0;
    c->rto_us = env->cfg->initial_rto_us;
    c->retries = 0;
    tcpi_want_output(env, c);
    (void)now;
}

static void passive_common(const struct tcp_env *env, struct tcp_conn *c, uint32_t iss, const struct wire_tcp *syn)
{
    const struct tcp_cfg *cfg = env->cfg;
    c->flags |= TCPF_PASSIVE;
    c->iss = iss;
    c->snd_una = c->snd_nxt = c->snd_max = iss;
    c->recover = iss;
    c->irs = syn->seq;
    c->rcv_nxt = syn->seq + 1;
    c->rcv_adv = c->rcv_nxt;
    tcpi_set_peer_mss(c, syn);
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
    c->state = TCP_ST_SYN_RECEIVED;
    c->ts_recent_age_ms = (uint32_t)(now / 1000);
    c->rto_us = env->cfg->initial_rto_us;
    tcpi_want_output(env, c);
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
    tcpi_establish(env, c, now);
    c->snd_wnd = (uint32_t)ack->win << c->snd_wscale;
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = ack->seq;
    c->snd_wl2 = ack->ack;
    tcpi_ev(env, c, TCP_EV_ACCEPT, 0, 0);
    /* the ACK may carry data (and FIN): run it through the normal path */
    if (ack->payload_len || (ack->flags & WIRE_TCP_FIN)) tcp_input(env, c, now, ack);
    tcpi_sync_timer(env, c);
}

int64_t tcp_send(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const uint8_t *data, uint32_t len)
{
    (void)now;
    switch (c->state) {
    case TCP_ST_SYN_SENT:
    case TCP_ST_SYN_RECEIVED:
    case TCP_ST_ESTABLISHED:
    case TCP_ST_CLOSE_WAIT:
        /* RFC 9293 3.10.2 SEND: queue (also before establishment) */
        if (c->flags & TCPF_FIN_QUEUED) return -EPIPE;
        break;
    case TCP_ST_CLOSED:
    case TCP_ST_LISTEN:
        return c->closed_done ? -EPIPE : -ENOTCONN;
    default:
        return -EPIPE;                   /* "connection closing" */
    }
    uint32_t room = c->sndbuf > c->snd.len ? c->sndbuf - c->snd.len : 0;
    /* the pool's reserve is for received data (buf_pool_reserve): two ends whose pools fill with
     * their own unsent data would otherwise drop each other's in-order segments for ever */
    const struct buf_pool *p = env->pool;
    uint32_t rsv = buf_pool_reserve(p);
    uint64_t pool_room = buf_stream_tail_room(p, &c->snd) +
                         (p->nfree > rsv ? (uint64_t)(p->nfree - rsv) * p->chunk_size : 0);
    if (pool_room < room) room = (uint32_t)pool_room;
    uint32_t n = min32(room, len);
    if (n) n = tcp_buf_stream_append(env->pool, &c->snd, data, n);
    if (n < len) c->flags |= TCPF_WANT_WRITABLE;
    if (n && can_send_data_state(c->state)) tcpi_want_output(env, c);
    return n;
}

int64_t tcp_recv(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint8_t *out, uint32_t cap)
{
    (void)now;
    uint32_t n = tcp_buf_stream_peek(env->pool, &c->rcv, 0, out, min32(cap, c->rcv.len));
    if (!n) return 0;
    tcp_buf_stream_consume(env->pool, &c->rcv, n);
    /* window update (RFC 9293 3.8.6.2.2, RFC 1122 4.2.3.3): tell the peer when the window grew by
     * min(rcvbuf/2, 2*MSS) since the last advertisement */
    if (!c->closed_done && synchronized_state(c->state) && !(c->flags & TCPF_RCVD_FIN)) {
        uint32_t cur = rcv_wnd_cur(c), space = rcv_space(c);
        if (space > cur && space - cur >= min32(c->rcvbuf / 2, 2 * eff_rcv_mss(c))) {
            c->flags |= TCPF_ACK_NOW;
            tcpi_want_output(env, c);
        }
    }
    return n;
}

static int close_write(const struct tcp_env *env, struct tcp_conn *c)
{
    /* RFC 9293 3.10.4 CLOSE call */
    switch (c->state) {
    case TCP_ST_SYN_SENT:
    case TCP_ST_SYN_RECEIVED:
        c->flags |= TCPF_FIN_QUEUED;     /* "queue for processing after entering ESTABLISHED" */
        return 0;
    case TCP_ST_ESTABLISHED:
        c->flags |= TCPF_FIN_QUEUED;
        c->state = TCP_ST_FIN_WAIT_1;   /* "form a FIN segment ... enter FIN-WAIT-1" */
        break;
    case TCP_ST_CLOSE_WAIT:
        c->flags |= TCPF_FIN_QUEUED;
        c->state = TCP_ST_LAST_ACK;     /* "send a FIN segment, enter LAST-ACK" */
        break;
    default:
        return (c->flags & TCPF_FIN_QUEUED) ? 0 : -ENOTCONN;   /* already closing */
    }
    tcpi_want_output(env, c);
    return 0;
}

int tcp_shutdown(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    (void)now;
    if (c->state == TCP_ST_CLOSED || c->state == TCP_ST_LISTEN) return -ENOTCONN;
    int r = close_write(env, c);
    tcpi_sync_timer(env, c);
    return r;
}

int tcp_close(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->flags |= TCPF_DETACHED;
    if (c->state == TCP_ST_CLOSED || c->closed_done) {
        /* already CLOSED (env->closed was called): just release the buffers */
        tcp_buf_stream_clear(env->pool, &c->rcv);
        tcp_buf_stream_clear(env->pool, &c->snd);
        memset(&c->snd_cur, 0, sizeof c->snd_cur);
        tcpi_ooo_release(env, c);
        if (!c->closed_done) tcpi_conn_closed(env, c);
        return 0;
    }
    if (c->state == TCP_ST_LISTEN || c->state == TCP_ST_SYN_SENT) {
        tcpi_conn_closed(env, c);             /* "delete the TCB, enter CLOSED" */
        return 0;
    }
    /* RFC 1122 4.2.2.13 / RFC 2525 2.17: closing with unread data resets; so does SO_LINGER 0 */
    if ((c->rcv.len && c->state != TCP_ST_TIME_WAIT) || (c->flags & TCPF_LINGER0)) {
        tcp_abort(env, c, now);
        return 0;
    }
    tcp_buf_stream_clear(env->pool, &c->rcv);
    int r = close_write(env, c);
    if (c->state == TCP_ST_FIN_WAIT_2 && !c->t_timewait) c->t_timewait = now + fin_timeout_us(env->cfg);
    tcpi_sync_timer(env, c);
    return r < 0 ? 0 : r;
}

void tcp_abort(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    (void)now;
    c->flags |= TCPF_DETACHED;
    if (c->closed_done) {
        tcp_buf_stream_clear(env->pool, &c->rcv);
        return;
    }
    switch (c->state) {
    case TCP_ST_SYN_RECEIVED:
    case TCP_ST_ESTABLISHED:
    case TCP_ST_FIN_WAIT_1:
    case TCP_ST_FIN_WAIT_2:
    case TCP_ST_CLOSE_WAIT:
        /* RFC 9293 3.10.5 ABORT: "send a reset segment <SEQ=SND.NXT><CTL=RST>" */
        tcpi_emit_rst(env, c, c->snd_max, c->rcv_nxt, WIRE_TCP_ACK);
        break;
    default:
        break;
    }
    tcp_buf_stream_clear(env->pool, &c->rcv);
    tcpi_conn_closed(env, c);
}

int tcp_setopt(const struct tcp_env *env, struct tcp_conn *c, int opt, int64_t val)
{
    switch (opt) {
    case TCP_OPT_NODELAY:
        if (val) c->flags |= TCPF_NODELAY; else c->flags &= (uint16_t)~TCPF_NODELAY;
        if (val && synchronized_state(c->state)) tcpi_want_output(env, c);
        return 0;
    case TCP_OPT_KEEPALIVE:
        if (val) {
            c->flags |= TCPF_KEEPALIVE;
            if (synchronized_state(c->state) && c->state != TCP_ST_TIME_WAIT && !c->t_keepalive)
                c->t_keepalive = c->last_rx_us + c->ka_idle_us;
        } else {
            c->flags &= (uint16_t)~TCPF_KEEPALIVE;
            c->t_keepalive = 0;
        }
        break;
    case TCP_OPT_KEEPIDLE:
        if (val <= 0 || val > (int64_t)TCP_KEEPALIVE_MAX_US) return -EINVAL;   /* Linux: 1..32767 s */
        c->ka_idle_us = (uint64_t)val;
        if (c->t_keepalive && !c->ka_probes) c->t_keepalive = c->last_rx_us + c->ka_idle_us;
        break;
    case TCP_OPT_KEEPINTVL:
        if (val <= 0 || val > (int64_t)TCP_KEEPALIVE_MAX_US) return -EINVAL;
        c->ka_intvl_us = (uint64_t)val;
        break;
    case TCP_OPT_KEEPCNT:
        if (val <= 0 || val > 255) return -EINVAL;
        c->ka_cnt = (uint8_t)val;
        break;
    case TCP_OPT_SNDBUF:
        if (val <= 0 || val > 0x7fffffffLL) return -EINVAL;
        c->sndbuf = (uint32_t)val;
        break;
    case TCP_OPT_RCVBUF: {
        if (val <= 0 || val > 0x3fffffffLL) return -EINVAL;
        uint32_t v = (uint32_t)val;
        /* after the handshake the scale is fixed: the window cannot exceed 65535 << rcv_wscale */
        if (c->state != TCP_ST_CLOSED && c->state != TCP_ST_SYN_SENT && v > (65535u << c->rcv_wscale))
            v = 65535u << c->rcv_wscale;
        c->rcvbuf = v;
        if (c->state == TCP_ST_SYN_SENT && env->cfg->window_scaling && c->snd_max == c->iss)
            c->rcv_wscale = tcp_wscale_for(v);
        if (synchronized_state(c->state)) tcpi_want_output(env, c);
        break;
    }
    case TCP_OPT_LINGER_ZERO:
        if (val) c->flags |= TCPF_LINGER0; else c->flags &= (uint16_t)~TCPF_LINGER0;
        return 0;
    default:
        return -ENOPROTOOPT;
    }
    tcpi_sync_timer(env, c);
    return 0;
}

int tcp_getopt(const struct tcp_conn *c, int opt, int64_t *val)
{
    switch (opt) {
    case TCP_OPT_NODELAY: *val = (c->flags & TCPF_NODELAY) != 0; return 0;
    case TCP_OPT_KEEPALIVE: *val = (c->flags & TCPF_KEEPALIVE) != 0; return 0;
    case TCP_OPT_KEEPIDLE: *val = c->ka_idle_us; return 0;
    case TCP_OPT_KEEPINTVL: *val = c->ka_intvl_us; return 0;
    case TCP_OPT_KEEPCNT: *val = c->ka_cnt; return 0;
    case TCP_OPT_SNDBUF: *val = c->sndbuf; return 0;
    case TCP_OPT_RCVBUF: *val = c->rcvbuf; return 0;
    case TCP_OPT_LINGER_ZERO: *val = (c->flags & TCPF_LINGER0) != 0; return 0;
    default: return -ENOPROTOOPT;
    }
}

void tcp_info(const struct tcp_conn *c, struct tcp_conn_stats *out)
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
        tcp_cc_set_mss(&c->cc, eff_mss(c));
        if (c->snd_max != c->snd_una) {
            c->snd_nxt = c->snd_una;
            c->rtt_active = 0;
            tcpi_want_output(env, c);
        }
    }
    (void)now;
    tcpi_sync_timer(env, c);
}

int tcp_timewait_reuse(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *syn)
{
    (void)now;
    if (c->closed_done || c->state != TCP_ST_TIME_WAIT) return 0;
    if ((syn->flags & (WIRE_TCP_SYN | WIRE_TCP_ACK | WIRE_TCP_RST)) != WIRE_TCP_SYN) return 0;
    int newer;
    if ((c->flags & TCPF_TS_OK) && syn->has_ts)
        newer = (int32_t)(syn->tsval - c->ts_recent) > 0;       /* RFC 6191 2 */
    else
        newer = seq_gt(syn->seq, c->rcv_nxt);                   /* RFC 1122 4.2.2.13 */
    if (!newer) return 0;
    tcpi_conn_closed(env, c);
    return 1;
}
