/*
 * tcp_in.c — segment arrival (RFC 9293 3.10.7 "SEGMENT ARRIVES").
 *
 * Call chain:
 *   engine_input -> (lookup) -> tcp_input
 *     -> input_syn_sent                       (3.10.7.3: ACK check, RST, SYN; simultaneous open)
 *     -> input_synchronized                   (3.10.7.4, in the RFC's order:)
 *          PAWS (RFC 7323 5.3) -> RST (RFC 5961 3.2) -> sequence acceptability (+ probes,
 *          zero-window allowance) -> TS.Recent -> SYN (RFC 5961 4.2) -> trim -> ACK:
 *            SYN-RECEIVED -> ESTABLISHED; RFC 5961 5.2 range; tcpi_sb_update (tcp_sack.c);
 *            ack_advance (-> rtt_sample, tcp_cc_on_ack, NewReno partial ACK) | duplicate ACK
 *            (-> enter_recovery); window update; FIN-WAIT-1/CLOSING/LAST-ACK transitions
 *          -> data_process (in order -> c->rcv (+ tcp_buf_ooo_pull); out of order -> tcp_buf_ooo_insert;
 *             delayed-ACK decision) -> FIN
 *   -> env->event / env->want_output; tcpi_sync_timer -> env->timer
 * tcp_rst_for: the RST answering a segment that matched no connection (3.10.7.1).
 */
#include "tcp_int.h"

/* TCP_OOW_ACK_INTERVAL_MS: 1 = an invalid-segment ACK may not be sent now (counted), 0 = it may
 * (and the connection's interval starts now) */
static int oow_ack_limited(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    uint32_t ms = (uint32_t)(now / 1000);
    if (ms == 0) ms = 1;                          /* 0 means "never" */
    uint32_t interval = env->cfg->invalid_ratelimit_ms;
    if (interval && c->last_oow_ack_ms && (uint32_t)(ms - c->last_oow_ack_ms) < interval) {
        CNT(env, TCP_CTR_OOW_ACKS_LIMITED);
        return 1;
    }
    c->last_oow_ack_ms = ms;
    return 0;
}

/* answer an invalid segment with an immediate ACK, subject to the per-connection limit unless the
 * segment occupies sequence space without SYN (seqlen_nosyn) */
static void oow_ack(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, int seqlen_nosyn)
{
    if (!seqlen_nosyn && oow_ack_limited(env, c, now)) return;
    c->flags |= TCPF_ACK_NOW;
    tcpi_want_output(env, c);
}

static void challenge_ack(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 5961 7: rate limited per connection (as Linux) and by the engine's budget */
    if (oow_ack_limited(env, c, now)) return;
    if (env->challenge_ok && !env->challenge_ok(env->ctx, now)) {
        CNT(env, TCP_CTR_CHALLENGE_ACKS_LIMITED);
        return;
    }
    CNT(env, TCP_CTR_CHALLENGE_ACKS);
    c->flags |= TCPF_ACK_NOW;
    tcpi_want_output(env, c);
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

/* The segment's TSecr may be used for an RTT sample (RFC 7323 4.1): timestamps in use, an echo,
 * and not older than our last retransmission (a stale echo — the peer's TS.Recent from a segment
 * sent before an RTO and its backoff, or the echo of the first of several SYNs — would count the
 * whole backoff as RTT: srtt inflated to seconds, the RTO pinned at max_rto_us). Karn's rule for
 * timestamps, as Linux does for ACKs of retransmitted data whose echo predates the retransmission. */
static int ts_sample_ok(struct tcp_conn *c, const struct wire_tcp *seg)
{
    if (!(c->flags & TCPF_TS_OK) || !seg->has_ts || !seg->tsecr) return 0;
    if (c->rxt_ts_valid) {
        if ((int32_t)(seg->tsecr - c->rxt_tsval) < 0) return 0;
        c->rxt_ts_valid = 0;                /* echoes only grow (PAWS): fresh from now on */
    }
    return 1;
}

static void exit_recovery(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->flags &= (uint16_t)~TCPF_IN_RECOVERY;
    c->rec_inflate = 0;
    c->dupacks = 0;
    /* after an RTO, slow start went on during the recovery: cwnd stays where it got */
    if (!c->rto_rec) tcp_cc_on_recovery_exit(&c->cc, now);
    c->rto_rec = 0;
    tcpi_rack_recovery_exit(c);
    (void)env;
}

void tcpi_enter_recovery(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* RFC 6582 3.2 step 2 / RFC 6675 5 step 4: RecoveryPoint = HighData, ssthresh/cwnd through
     * cc, retransmit the first unacked segment. */
    uint32_t flight = c->snd_max - c->snd_una;
    c->recover = c->snd_max;
    c->flags |= TCPF_IN_RECOVERY;
    tcp_cc_on_congestion(&c->cc, now, flight);
    c->rec_inflate = (c->flags & TCPF_SACK_OK) ? 0 : DUPTHRESH * eff_mss(c);
    c->high_rxt = c->snd_una;
    c->tlp_active = 0;
    c->t_tlp = 0;
    c->rexmit_now = 1;      /* with RACK: the first range it marked lost, else snd_una's segment */
    CNT(env, TCP_CTR_FAST_RETRANS);
    if (c->flags & TCPF_SACK_OK) CNT(env, TCP_CTR_SACK_RECOVERY);
    tcpi_want_output(env, c);
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
    tcp_buf_stream_consume(env->pool, &c->snd, data_acked);
    c->snd_una = ack;
    if (seq_lt(c->snd_nxt, ack)) c->snd_nxt = ack;
    if (seq_lt(c->high_rxt, ack)) c->high_rxt = ack;

    /* RTT (RFC 7323 4.1 with timestamps: only ACKs that advance the left edge, and no stale echo
     * (ts_sample_ok); RFC 6298 otherwise) */
    uint32_t rtt = 0;
    if ((c->flags & TCPF_TS_OK) && seg->has_ts && seg->tsecr) {
        if (ts_sample_ok(c, seg)) {
            uint32_t ms = ts_now(c, now) - seg->tsecr;
            if (ms < 3600u * 1000u) rtt = ms * 1000u + 1;
        }
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
        } else if (c->rto_rec) {
            tcp_cc_on_ack(&c->cc, now, data_acked, rtt ? rtt - 1 : 0, flight);   /* slow start after RTO */
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
        tcp_cc_on_ack(&c->cc, now, data_acked, rtt ? rtt - 1 : 0, flight);
    }

    /* RFC 6298 5.2 / 5.3 */
    c->persist = 0;
    c->persist_backoff = 0;
    c->t_rexmit = (c->snd_una == c->snd_max) ? 0 : now + c->rto_us;

    if (c->sb_n) tcpi_sb_prune(c);
    if (c->rec_n) tcpi_rack_prune(c);
    if (c->recs && !c->rec_n) tcpi_rec_release(env, c);   /* all acked: records back to the pool */
    /* RFC 8985 7.4: the TLP episode ends when its probe is acknowledged; a retransmitted probe
     * acknowledged without a DSACK repaired a real loss: congestion response */
    if (c->tlp_active && seq_ge(ack, c->tlp_end)) {
        c->tlp_active = 0;
        if (c->tlp_rxt && !tcpi_seg_dsack(seg) && !(c->flags & TCPF_IN_RECOVERY))
            tcp_cc_on_congestion(&c->cc, now, flight);
    }
    tcpi_tlp_arm(env, c, now);

    if ((c->flags & TCPF_WANT_WRITABLE) && c->snd.len < c->sndbuf && data_acked) {
        c->flags &= (uint16_t)~TCPF_WANT_WRITABLE;
        tcpi_ev(env, c, TCP_EV_WRITABLE, 0, c->sndbuf - c->snd.len);
    }
    return fin_acked;
}

/* RFC 9293 3.10.7.3: SEGMENT ARRIVES in SYN-SENT. */
static void input_syn_sent(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    const struct tcp_cfg *cfg = env->cfg;
    int ack_ok = 0;
    /* first: check the ACK bit */
    if (seg->flags & WIRE_TCP_ACK) {
        if (seq_le(seg->ack, c->iss) || seq_gt(seg->ack, c->snd_max)) {
            /* "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset <SEQ=SEG.ACK><CTL=RST>" */
            if (!(seg->flags & WIRE_TCP_RST)) tcpi_emit_rst(env, c, seg->ack, 0, 0);
            return;
        }
        ack_ok = 1;
    }
    /* second: the RST bit. RFC 5961 3.2: only with an acceptable ACK. */
    if (seg->flags & WIRE_TCP_RST) {
        if (ack_ok) {
            CNT(env, TCP_CTR_RST_IN);
            tcpi_conn_fail(env, c, TCP_EV_CONNECT_FAILED, ECONNREFUSED);   /* "connection reset" */
        }
        return;
    }
    /* fourth: the SYN bit */
    if (!(seg->flags & WIRE_TCP_SYN)) return;
    c->irs = seg->seq;
    c->rcv_nxt = seg->seq + 1;
    c->rcv_adv = c->rcv_nxt + min32(rcv_space(c), 65535u);   /* what our SYN offered (unscaled) */
    tcpi_set_peer_mss(c, seg);
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
        if (ts_sample_ok(c, seg))
            rtt_sample(env, c, (ts_now(c, now) - seg->tsecr) * 1000u);
        else if (c->rtt_active && c->retries == 0)
            rtt_sample(env, c, (uint32_t)(now - c->rtt_start_us));
        else if (c->retries)
            c->rto_us = max32(env->cfg->initial_rto_us, env->cfg->min_rto_us);  /* RFC 6298 5.7 */
        c->rtt_active = 0;
        c->snd_una = seg->ack;
        if (seq_lt(c->snd_nxt, c->snd_una)) c->snd_nxt = c->snd_una;
        c->t_rexmit = 0;
        tcpi_establish(env, c, now);
        c->flags |= TCPF_ACK_NOW;
        tcpi_ev(env, c, TCP_EV_CONNECTED, 0, 0);
        tcpi_want_output(env, c);
    } else {
        /* simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment
         * <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it" */
        c->state = TCP_ST_SYN_RECEIVED;
        c->snd_nxt = c->iss;
        c->t_rexmit = 0;
        tcpi_want_output(env, c);
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
        uint32_t n = tcp_buf_stream_append(env->pool, &c->rcv, data, len);
        if (n < len) {
            /* the chunk pool is empty: data that fills the hole goes before the data queued beyond
             * it (Linux tcp_prune_ofo_queue). Otherwise two ends whose pools are held by unacked
             * and out-of-order data refuse each other's retransmissions forever. The peer resends
             * what is dropped (reneging on SACKed data is allowed, RFC 2018 8). */
            struct buf_ooo *po = tcpi_ooo_of(env, c, 0);
            if (po && tcp_buf_ooo_bytes(po)) {
                CNT(env, TCP_CTR_OOO_PRUNED);
                tcpi_ooo_release(env, c);
                c->ooo_fin_valid = 0;
                n += tcp_buf_stream_append(env->pool, &c->rcv, data + n, len - n);
            }
        }
        if (n < len) { CNT(env, TCP_CTR_RCV_PRUNED); *fin = 0; c->flags |= TCPF_ACK_NOW; }
        c->rcv_nxt += n;
        c->bytes_received += n;
        readable = n > 0;
        struct buf_ooo *o = tcpi_ooo_of(env, c, 0);
        if (o) {
            uint32_t pulled = tcp_buf_ooo_pull(env->pool, o, c->rcv_nxt, &c->rcv);
            if (pulled) *fin = 0;                  /* data beyond a FIN: bogus, ignore the FIN */
            c->rcv_nxt += pulled;
            c->bytes_received += pulled;
            /* RFC 5681 4.2: ACK immediately a segment that fills (part of) a gap */
            c->flags |= TCPF_ACK_NOW;
            if (tcp_buf_ooo_bytes(o) == 0) tcpi_ooo_release(env, c);
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
        struct buf_ooo *o = tcpi_ooo_of(env, c, 1);
        int r = o ? tcp_buf_ooo_insert(env->pool, o, c->rcv_nxt, seq, data, len) : -ENOBUFS;
        if (r < 0) CNT(env, TCP_CTR_OOO_DROPS);
        else CNT(env, TCP_CTR_OOO_SEGS);
        if (*fin && r >= 0 && (uint32_t)r == len) { c->ooo_fin = seq + len; c->ooo_fin_valid = 1; }
        if (o && tcp_buf_ooo_bytes(o) == 0) tcpi_ooo_release(env, c);
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
            CNT(env, TCP_CTR_PAWS_DROPS);
            oow_ack(env, c, now, (len || fin) && !syn);
            return;
        }
    }

    /* second: the RST bit (RFC 5961 3.2: exact match resets, in-window gets a challenge ACK) */
    if (fl & WIRE_TCP_RST) {
        int inwin = seq_ge(seq, c->rcv_nxt) && seq_lt(seq, c->rcv_nxt + max32(wnd, 1));
        if (seq == c->rcv_nxt) {
            CNT(env, TCP_CTR_RST_IN);
            switch (c->state) {
            case TCP_ST_SYN_RECEIVED:
                /* passive: back to LISTEN = drop it (the engine owns the listener); active
                 * (simultaneous open): "connection refused" */
                tcpi_conn_die(env, c, ECONNREFUSED);
                break;
            case TCP_ST_ESTABLISHED:
            case TCP_ST_FIN_WAIT_1:
            case TCP_ST_FIN_WAIT_2:
            case TCP_ST_CLOSE_WAIT:
                /* "any outstanding RECEIVEs and SEND should receive reset responses" */
                tcpi_conn_die(env, c, ECONNRESET);
                break;
            case TCP_ST_CLOSING:
            case TCP_ST_LAST_ACK:
            case TCP_ST_TIME_WAIT:
            default:
                /* "enter the CLOSED state, delete the TCB, and return" */
                if (c->state == TCP_ST_TIME_WAIT) tcpi_conn_closed(env, c);
                else tcpi_conn_die(env, c, ECONNRESET);
                break;
            }
        } else if (inwin) {
            challenge_ack(env, c, now);
        } else {
            CNT(env, TCP_CTR_OUT_OF_WINDOW);
        }
        return;
    }

    /* SYN-RECEIVED: a retransmitted SYN means our SYN-ACK was lost (RFC 9293 3.10.7.4 + Linux) */
    if (syn && c->state == TCP_ST_SYN_RECEIVED && seq == c->irs && !(fl & WIRE_TCP_ACK)) {
        c->snd_nxt = c->iss;
        tcpi_want_output(env, c);
        return;
    }

    /* simultaneous open (RFC 9293 3.5 figure 7, line 5): in SYN-RECEIVED the peer's SYN,ACK
     * repeats the SYN we already have; take it as the ACK of ours (and ACK it) */
    if (syn && c->state == TCP_ST_SYN_RECEIVED && seq == c->irs && (fl & WIRE_TCP_ACK) &&
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
        if (!oow_ack_limited(env, c, now)) c->flags |= TCPF_ACK_NOW;
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
        if (!syn) CNT(env, TCP_CTR_OUT_OF_WINDOW);
        /* TIME-WAIT: "The only thing that can arrive in this state is a retransmission of the
         * remote FIN. Acknowledge it, and restart the 2 MSL timeout." */
        if (fin && c->state == TCP_ST_TIME_WAIT && seq + len + 1 == c->rcv_nxt)
            c->t_timewait = now + 2ull * env->cfg->msl_us;
        /* RFC 2883: an old duplicate (all below RCV.NXT) is reported in a D-SACK block */
        if (len && (c->flags & TCPF_SACK_OK) && seq_le(seq + len, c->rcv_nxt) &&
            seq_lt(c->rcv_nxt - seq, 0x40000000u)) {
            c->dsack = 1;
            c->dsack_left = seq;
            c->dsack_right = seq + len;
        }
        if (syn && synchronized_state(c->state)) { challenge_ack(env, c, now); return; }
        oow_ack(env, c, now, seglen && !syn);
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
        if (len && (c->flags & TCPF_SACK_OK)) {
            /* RFC 2883: report the duplicate bytes in a D-SACK block */
            c->dsack = 1;
            c->dsack_left = seq;
            c->dsack_right = seq + min32(skip, len);
        }
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
        if (c->state == TCP_ST_TIME_WAIT) c->t_timewait = now + 2ull * env->cfg->msl_us;
    }

    /* fifth: the ACK field */
    if (!(fl & WIRE_TCP_ACK)) return;    /* "if the ACK bit is off, drop the segment and return" */

    c->last_rx_us = now;
    c->ka_probes = 0;
    if ((c->flags & TCPF_KEEPALIVE) && c->t_keepalive) c->t_keepalive = now + c->ka_idle_us;
    if (c->persist) c->retries = 0;                 /* the peer answers our window probes */

    uint32_t ack = seg->ack;
    if (c->state == TCP_ST_SYN_RECEIVED) {
        /* "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and continue
         * processing; otherwise form a reset segment <SEQ=SEG.ACK><CTL=RST> and send it." */
        if (!(seq_lt(c->snd_una, ack) && seq_le(ack, c->snd_max))) {
            tcpi_emit_rst(env, c, ack, 0, 0);
            return;
        }
        c->snd_una = c->iss + 1;          /* the SYN is acknowledged */
        if (ts_sample_ok(c, seg))
            rtt_sample(env, c, (ts_now(c, now) - seg->tsecr) * 1000u);
        else if (c->rtt_active && c->retries == 0)
            rtt_sample(env, c, (uint32_t)(now - c->rtt_start_us));
        else if (c->retries)
            c->rto_us = max32(env->cfg->initial_rto_us, env->cfg->min_rto_us);  /* RFC 6298 5.7 */
        c->rtt_active = 0;
        tcpi_establish(env, c, now);
        c->t_rexmit = 0;
        c->snd_wnd = (uint32_t)seg->win << c->snd_wscale;
        c->max_snd_wnd = max32(c->max_snd_wnd, c->snd_wnd);
        c->snd_wl1 = seq;
        c->snd_wl2 = ack;
        tcpi_ev(env, c, (c->flags & TCPF_PASSIVE) ? TCP_EV_ACCEPT : TCP_EV_CONNECTED, 0, 0);
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
    /* an old ACK (SND.UNA - MAX.SND.WND =< SEG.ACK < SND.UNA: acceptable, RFC 5961 5.2, but
     * anyone guessing the window can send one) changes no RACK/SACK/TLP state and no window
     * (RFC 9293 3.10.7.4: the window is updated only if SND.UNA =< SEG.ACK); its text is
     * processed (Linux tcp_ack "old_ack") */
    int old_ack = seq_lt(ack, c->snd_una);
    if ((c->flags & TCPF_SACK_OK) && !old_ack) tcpi_rack_on_ack(c, now, seg);  /* before the scoreboard changes */
    if ((c->flags & TCPF_SACK_OK) && seg->nsack && !old_ack) sack_new = tcpi_sb_update(c, seg);
    if (seq_gt(ack, c->snd_una)) {
        fin_acked = ack_advance(env, c, now, seg);
    } else if (ack == c->snd_una && c->snd_max != c->snd_una && len == 0 && !fin && !probe &&
               seg->payload_len == 0 && new_wnd == old_wnd && !c->persist && old_wnd != 0) {
        /* duplicate ACK (RFC 5681 2 definition; RFC 6675 counts those carrying new SACK info) */
        CNT(env, TCP_CTR_DUP_ACKS);
        if (c->dupacks < 255) c->dupacks++;
        if (c->flags & TCPF_IN_RECOVERY) {
            if (!(c->flags & TCPF_SACK_OK)) c->rec_inflate += eff_mss(c);   /* RFC 6582 3.2 step 4 */
            tcpi_want_output(env, c);
        } else if (seq_ge(c->snd_una, c->recover) && !tcpi_rack_on(c)) {
            /* RFC 6582 3.2 step 2 (not for dupACKs below recover, e.g. after an RTO); RFC 6675
             * 5 step 4: DupThresh dupACKs or IsLost(HighACK + 1) */
            int lost = (c->flags & TCPF_SACK_OK) && c->sb_n && tcpi_sb_hole_lost(c, 0);
            if (c->dupacks >= DUPTHRESH || lost) tcpi_enter_recovery(env, c, now);
        }
    }
    (void)sack_new;
    /* RFC 8985: RACK marks losses (also of retransmissions) and starts recovery */
    /* (without SACK blocks outside recovery nothing above snd_una was sent before what was just
     * delivered: new data goes out in sequence order; skip the scan on the common path) */
    if (!old_ack && tcpi_rack_on(c) && can_send_data_state(c->state) && (c->sb_n || (c->flags & TCPF_IN_RECOVERY))) {
        int lost = tcpi_rack_detect(c, now);
        if (lost) {
            if (env->counters) env->counters[TCP_CTR_RACK_LOST] += (uint64_t)lost;
            if (!(c->flags & TCPF_IN_RECOVERY)) tcpi_enter_recovery(env, c, now);
            tcpi_want_output(env, c);
        }
    }

    /* window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)) */
    uint32_t wseq = probe ? c->rcv_nxt : seg->seq;     /* a probe's window is current */
    if (!old_ack && (seq_lt(c->snd_wl1, wseq) || (c->snd_wl1 == wseq && seq_le(c->snd_wl2, ack)))) {
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
            tcpi_want_output(env, c);
        }
    }

    /* state-specific ACK processing (RFC 9293 3.10.7.4 fifth check) */
    switch (c->state) {
    case TCP_ST_FIN_WAIT_1:
        /* "if the FIN segment is now acknowledged, then enter FIN-WAIT-2" */
        if (fin_acked) {
            c->state = TCP_ST_FIN_WAIT_2;
            c->t_rexmit = 0;
            if (c->flags & TCPF_DETACHED) c->t_timewait = now + fin_timeout_us(env->cfg);  /* orphan timeout */
        }
        break;
    case TCP_ST_CLOSING:
        /* "if the ACK acknowledges our FIN, then enter the TIME-WAIT state" */
        if (fin_acked) tcpi_enter_time_wait(env, c, now);
        break;
    case TCP_ST_LAST_ACK:
        /* "if our FIN is now acknowledged, delete the TCB, enter the CLOSED state" */
        if (fin_acked) {
            tcpi_ev(env, c, TCP_EV_CLOSED, 0, 0);
            tcpi_conn_closed(env, c);
            return;
        }
        break;
    default:
        break;
    }

    /* new data for an application that closed (released) the connection: nobody will read
     * it — reset, as Linux does (tcp_rcv_state_process, RCV_SHUTDOWN) */
    if ((c->flags & TCPF_DETACHED) && len && (c->state == TCP_ST_FIN_WAIT_1 || c->state == TCP_ST_FIN_WAIT_2)) {
        tcpi_emit_rst(env, c, c->snd_max, seq + len, WIRE_TCP_ACK);
        tcpi_conn_die(env, c, ECONNRESET);
        return;
    }

    /* sixth/seventh: segment text (ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2 only) */
    int readable = 0;
    if (c->state == TCP_ST_ESTABLISHED || c->state == TCP_ST_FIN_WAIT_1 || c->state == TCP_ST_FIN_WAIT_2)
        readable = data_process(env, c, now, seq, data, len, &fin);
    else if (len)
        c->flags |= TCPF_ACK_NOW;        /* text after the peer's FIN: just ACK */

    if (readable) tcpi_ev(env, c, TCP_EV_READABLE, 0, c->rcv.len);

    /* eighth: the FIN bit */
    if (fin && !(c->flags & TCPF_RCVD_FIN) && synchronized_state(c->state)) {
        c->rcv_nxt++;
        c->flags |= TCPF_RCVD_FIN | TCPF_ACK_NOW;
        c->ooo_fin_valid = 0;
        tcpi_ev(env, c, TCP_EV_PEER_CLOSED, 0, c->rcv.len);
        switch (c->state) {
        case TCP_ST_SYN_RECEIVED:
        case TCP_ST_ESTABLISHED:
            c->state = TCP_ST_CLOSE_WAIT;                  /* "Enter the CLOSE-WAIT state" */
            break;
        case TCP_ST_FIN_WAIT_1:
            /* "If our FIN has been ACKed ... enter TIME-WAIT ... otherwise, enter the CLOSING state"
             * (the ACK was processed above: FIN-WAIT-2 then) */
            c->state = TCP_ST_CLOSING;
            break;
        case TCP_ST_FIN_WAIT_2:
            c->t_timewait = 0;
            tcpi_enter_time_wait(env, c, now);                    /* "Enter the TIME-WAIT state" */
            break;
        default:
            break;
        }
    }

    if (tcpi_pending_output(c)) tcpi_want_output(env, c);
}

void tcp_input(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    if (c->closed_done) return;
    switch (c->state) {
    case TCP_ST_CLOSED: {
        /* RFC 9293 3.10.7.1: CLOSED — answer with a reset unless it is one */
        struct wire_tcp rst;
        if (tcp_rst_for(seg, &rst)) tcpi_emit_rst(env, c, rst.seq, rst.ack, rst.flags & WIRE_TCP_ACK);
        return;
    }
    case TCP_ST_LISTEN:
        return;                          /* the engine owns listeners */
    case TCP_ST_SYN_SENT:
        input_syn_sent(env, c, now, seg);
        break;
    default:
        input_synchronized(env, c, now, seg);
        break;
    }
    tcpi_sync_timer(env, c);
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
