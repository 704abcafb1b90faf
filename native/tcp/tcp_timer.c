/*
 * tcp_timer.c — timers. All are absolute microsecond deadlines in the connection (t_rexmit,
 * t_delack, t_keepalive, t_timewait); the engine's wheel holds one entry per connection at
 * their minimum (tcp_next_deadline, re-armed through env->timer by tcpi_sync_timer).
 *
 * Call chain:
 *   engine timer wheel -> tcp_timer
 *     -> TIME-WAIT / orphan FIN-WAIT-2 end -> tcpi_conn_closed -> env->closed
 *     -> delayed ACK -> ACK_NOW -> env->want_output
 *     -> on_rto: persist probe (RFC 9293 3.8.6.1) | SYN/SYN-ACK/data retransmission with
 *        backoff (RFC 6298 5.5-5.7), tcp_cc_on_rto, go-back-N, give up -> ETIMEDOUT
 *     -> on_keepalive (RFC 1122 4.2.3.6) -> probe | give up -> RST + ETIMEDOUT
 *     -> t_rack: RACK reordering timer -> tcpi_rack_detect (tcp_sack.c) -> recovery + output
 *     -> t_tlp: tail loss probe -> tcpi_tlp_fire (tcp_sack.c)
 * With RACK (SACK connections) the first RTO keeps the scoreboard, marks everything lost and
 * resends by NextSeg from cwnd = 1 SMSS (rto_rec: slow start during that recovery); a second
 * RTO in a row falls back to go-back-N with the scoreboard cleared.
 */
#include "tcp_int.h"

static void on_rto(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    const struct tcp_cfg *cfg = env->cfg;
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
            tcpi_conn_die(env, c, ETIMEDOUT);
            return;
        }
        c->retries++;
        CNT(env, TCP_CTR_PERSIST_PROBES);
        uint32_t ds = data_seq(c);
        if (c->snd.len && c->snd_wnd == 0) {
            uint8_t f = WIRE_TCP_ACK;
            (void)tcpi_emit(env, c, now, c->snd_una - 1, 0, &f);
        } else if (seq_lt(c->snd_nxt, ds + c->snd.len)) {
            /* small window held back by SWS avoidance: the override timeout (3.8.6.2.1) */
            uint32_t l = min32(min32(c->snd_wnd, eff_mss(c)), ds + c->snd.len - c->snd_nxt);
            if (l && tcpi_send_seg(env, c, now, c->snd_nxt, l, WIRE_TCP_ACK) > 0) return;   /* RTO runs now */
        }
        if (c->persist_backoff < 16) c->persist_backoff++;
        c->persist = 1;
        c->t_rexmit = now + tcpi_persist_interval(env, c);
        return;
    }
    if (c->snd_una == c->snd_max && !syn_unacked(c)) return;   /* nothing outstanding */

    uint32_t limit = c->state == TCP_ST_SYN_SENT ? cfg->syn_retries
                   : c->state == TCP_ST_SYN_RECEIVED ? cfg->synack_retries : cfg->max_retries;
    if (c->retries >= limit) {
        /* RFC 9293 3.8.3 R2: give up */
        tcpi_conn_die(env, c, ETIMEDOUT);
        return;
    }
    c->retries++;
    CNT(env, TCP_CTR_TIMEOUTS);
    /* RFC 6298 5.5: back off; 5.6: restart with the new RTO (done by send_seg) */
    uint64_t rto = (uint64_t)c->rto_us * 2;
    c->rto_us = (uint32_t)(rto > cfg->max_rto_us ? cfg->max_rto_us : rto);
    c->rtt_active = 0;                                   /* Karn */
    c->t_tlp = 0;
    c->tlp_active = 0;
    if (synchronized_state(c->state) && tcpi_rack_on(c) && c->retries == 1) {
        /* RFC 8985 6.3: the first RTO marks everything outstanding lost; the SACK scoreboard is
         * kept, so only unSACKed bytes go again (by NextSeg, from cwnd = 1 SMSS in slow start:
         * rto_rec), not go-back-N over what the peer holds. A second RTO in a row falls back to
         * the RFC 6675 5.1 behaviour below (in case the receiver reneged). */
        tcp_cc_on_rto(&c->cc, now, c->snd_max - c->snd_una);
        tcpi_rack_mark_all_lost(c);
        c->flags |= TCPF_IN_RECOVERY;
        c->rto_rec = 1;
        c->rec_inflate = 0;
        c->dupacks = 0;
        c->recover = c->snd_max;
        c->high_rxt = c->snd_una;
        c->rexmit_now = 1;
    } else if (synchronized_state(c->state)) {
        /* RFC 5681 3.1 eq. 4 via cc; RFC 6582 / RFC 6675 5.1: leave recovery, forget SACK info */
        tcp_cc_on_rto(&c->cc, now, c->snd_max - c->snd_una);
        c->flags &= (uint16_t)~TCPF_IN_RECOVERY;
        c->rec_inflate = 0;
        c->dupacks = 0;
        c->recover = c->snd_max;
        c->sb_n = 0;
        c->sacked_bytes = 0;
        c->rto_rec = 0;
        c->high_rxt = c->snd_una;
        c->snd_nxt = c->snd_una;                         /* go-back-N */
        /* the first segment goes out even if the peer's window shrank to zero meanwhile (it then
         * works as a window probe; Linux tcp_retransmit_timer does the same) */
        c->rexmit_now = 1;
    } else {
        c->snd_nxt = c->iss;                             /* resend SYN / SYN-ACK */
    }
    tcp_output(env, c, now);
}

static void on_keepalive(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->t_keepalive = 0;
    if (!(c->flags & TCPF_KEEPALIVE) || !synchronized_state(c->state) || c->state == TCP_ST_TIME_WAIT) return;
    if (c->snd_max != c->snd_una) {                      /* the RTO watches this connection */
        c->t_keepalive = now + c->ka_idle_us;
        return;
    }
    if (c->ka_probes >= c->ka_cnt) {
        tcpi_emit_rst(env, c, c->snd_max, c->rcv_nxt, WIRE_TCP_ACK);
        tcpi_conn_die(env, c, ETIMEDOUT);
        return;
    }
    /* RFC 9293 3.8.4 / RFC 1122 4.2.3.6: <SEQ=SND.NXT-1> with no data */
    uint8_t f = WIRE_TCP_ACK;
    (void)tcpi_emit(env, c, now, c->snd_una - 1, 0, &f);
    CNT(env, TCP_CTR_KEEPALIVE_PROBES);
    c->ka_probes++;
    c->t_keepalive = now + c->ka_intvl_us;
}

void tcp_timer(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    if (c->closed_done) return;
    /* the engine's wheel entry was consumed to get here: report the next deadline even if it
     * did not change (an early or spurious call must not lose the timer) */
    c->armed_us = UINT64_MAX;
    if (c->t_timewait && c->t_timewait <= now) {
        /* TIME-WAIT 2 MSL over (RFC 9293 3.10.8), or an orphaned FIN-WAIT-2 gave up */
        c->t_timewait = 0;
        if (c->state == TCP_ST_TIME_WAIT || c->state == TCP_ST_FIN_WAIT_2) {
            tcpi_conn_closed(env, c);
            return;
        }
    }
    if (c->t_delack && c->t_delack <= now) {
        c->t_delack = 0;
        c->flags &= (uint16_t)~TCPF_DELACK;
        c->flags |= TCPF_ACK_NOW;
        CNT(env, TCP_CTR_DELAYED_ACKS);
        tcpi_want_output(env, c);
    }
    if (c->t_rexmit && c->t_rexmit <= now) {
        on_rto(env, c, now);
        if (c->closed_done) return;
    }
    if (c->t_keepalive && c->t_keepalive <= now) {
        on_keepalive(env, c, now);
        if (c->closed_done) return;
    }
    if (c->t_rack && c->t_rack <= now) {
        /* RFC 8985 6.3: the reordering window of a segment passed */
        int lost = tcpi_rack_detect(c, now);
        if (lost) {
            if (env->counters) env->counters[TCP_CTR_RACK_LOST] += (uint64_t)lost;
            if (!(c->flags & TCPF_IN_RECOVERY)) tcpi_enter_recovery(env, c, now);
            tcp_output(env, c, now);
            if (c->closed_done) return;
        }
    }
    if (c->t_tlp && c->t_tlp <= now) {
        tcpi_tlp_fire(env, c, now);
        if (c->closed_done) return;
    }
    tcpi_sync_timer(env, c);
}
