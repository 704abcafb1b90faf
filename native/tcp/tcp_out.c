/*
 * tcp_out.c — segment emission.
 *
 * Call chain:
 *   engine (end of poll, for connections marked by env->want_output) -> tcp_output
 *     -> SYN / SYN-ACK / pure ACK by state, or output_data:
 *          fast retransmit of snd_una (rexmit_now) -> RFC 6675 NextSeg retransmissions
 *          (rule 1 tcpi_sb_next_lost, rule 3 tcpi_sb_next_hole; by pipe) -> new data within min(cwnd (+NewReno inflation,
 *          +RFC 3042 limited transmit), peer window), Nagle + sender SWS -> FIN -> ACK if due
 *          -> persist timer when data waits on a closed window
 *     -> tcpi_send_seg (snd_nxt/snd_max, RTT timing + Karn, RTO start) -> tcpi_emit (header +
 *        options: MSS/WS/SACK-perm/TS on SYNs, TS, SACK blocks from tcp_buf_ooo_sack, window
 *        advertisement) -> env->tx_begin / wire_tcp_emit / tcp_buf_stream_peek_cur (c->snd_cur) / env->tx_commit
 *   tcpi_emit_rst: bare RST replies (no connection state touched).
 */
#include "tcp_int.h"

/* A bare RST (or RST|ACK) from c's ports, touching no connection state. */
void tcpi_emit_rst(const struct tcp_env *env, struct tcp_conn *c, uint32_t seq, uint32_t ack, uint8_t flags)
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
    CNT(env, TCP_CTR_RST_OUT);
}

/* Writes one segment: header (with the options due for this state) + len payload bytes from the
 * send buffer at seq. Returns the payload bytes sent (may be less than len if the TX slot is
 * smaller; FIN is then dropped from flags) or -1 when there is no TX room. Updates only the
 * receive side (ACK sent, window advertised); send-side bookkeeping is send_seg's. */
int tcpi_emit(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                uint8_t *flagsp)
{
    const struct tcp_cfg *cfg = env->cfg;
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
        wnd = tcpi_rcv_wnd_calc(c);
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
        /* RFC 2883 4: a D-SACK block (duplicate data received) goes first, once */
        uint32_t maxb = t.has_ts ? 3 : 4;
        if ((c->flags & TCPF_SACK_OK) && (flags & WIRE_TCP_ACK) && c->dsack) {
            t.sack[0].left = c->dsack_left;
            t.sack[0].right = c->dsack_right;
            t.nsack = 1;
            c->dsack = 0;
        }
        /* RFC 2018 4: SACK blocks in every ACK while out-of-order data is held */
        if ((c->flags & TCPF_SACK_OK) && (flags & WIRE_TCP_ACK) && c->ooo != 0xffff) {
            struct buf_ooo *o = tcpi_ooo_of(env, c, 0);
            if (o) {
                uint32_t l[WIRE_TCP_MAX_SACK], r[WIRE_TCP_MAX_SACK];
                uint32_t n = tcp_buf_ooo_sack(o, l, r, maxb - t.nsack);
                for (uint32_t i = 0; i < n; i++) {
                    t.sack[t.nsack + i].left = l[i];
                    t.sack[t.nsack + i].right = r[i];
                }
                t.nsack = (uint8_t)(t.nsack + n);
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
    if (!p) { tcpi_want_output(env, c); return -1; }
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
        /* the cursor makes reads at increasing offsets O(1) (a plain peek walks the chunk chain
         * from snd_una: ~flight/chunk_size links per segment) */
        uint32_t ds = data_seq(c);
        uint32_t got = tcp_buf_stream_peek_cur(env->pool, &c->snd, ds, seq - ds, p + h, len, &c->snd_cur);
        len = got;
    }
    /* TSO super-segment: every segment the link cuts carries this header (options included), so
     * each one's payload is what fits the path MSS next to it */
    uint32_t gso = c->mss + 20u > h ? c->mss + 20u - (uint32_t)h : 0;
    c->tx_gso = (uint16_t)(env->tso_max && !syn && gso && len > gso ? gso : 0);
    env->tx_commit(env->ctx, c, (uint32_t)h + len);
    c->tx_gso = 0;
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
int tcpi_send_seg(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                    uint8_t flags)
{
    int n = tcpi_emit(env, c, now, seq, len, &flags);
    if (n < 0) return n;
    uint32_t seglen = (uint32_t)n + ((flags & WIRE_TCP_SYN) ? 1u : 0u) + ((flags & WIRE_TCP_FIN) ? 1u : 0u);
    if (!seglen) return n;
    uint32_t end = seq + seglen;
    if (seq_lt(seq, c->snd_max)) {
        /* a retransmission; Karn's algorithm: don't time it (RFC 6298 3) */
        CNT(env, (flags & WIRE_TCP_SYN) ? TCP_CTR_SYN_RETRANS : TCP_CTR_RETRANS_SEGS);
        c->retransmits++;
        if (c->rtt_active && seq_lt(seq, c->rtt_seq)) c->rtt_active = 0;
        /* TSecr-based samples must not predate this (Karn's rule with timestamps; also for a
         * SYN, before timestamps are agreed) */
        c->rxt_tsval = ts_now(c, now);
        c->rxt_ts_valid = 1;
        /* RACK recovery retransmitting the first unacknowledged segment (again): the RTO restarts
         * from it, as Linux does (tcp_xmit_retransmit_queue); otherwise an RTO measured from the
         * last cumulative ACK fires while RACK is still repairing a lost retransmission */
        if (seq == c->snd_una && (c->flags & TCPF_IN_RECOVERY) && tcpi_rack_on(c) && c->t_rexmit && !c->persist)
            c->t_rexmit = now + c->rto_us;
    } else {
        c->bytes_sent += (uint32_t)n;
        if (!c->rtt_active && !(c->flags & TCPF_TS_OK)) {
            c->rtt_active = 1;
            c->rtt_seq = end;
            c->rtt_start_us = now;
        }
    }
    int new_data = seq_gt(end, c->snd_max);
    if (!(flags & WIRE_TCP_SYN) && (c->flags & TCPF_SACK_OK) && !c->recs && seq_lt(seq, end))
        tcpi_rec_take(env, c);                                          /* RACK records, lazily */
    if (!(flags & WIRE_TCP_SYN)) tcpi_rack_sent(c, now, seq, end);     /* RACK: per-range send times */
    if (seq_gt(end, c->snd_nxt) && seq_le(seq, c->snd_nxt)) c->snd_nxt = end;
    if (seq_gt(end, c->snd_max)) c->snd_max = end;
    if (flags & WIRE_TCP_FIN) c->flags |= TCPF_FIN_SENT;
    if (!c->t_rexmit || c->persist) { c->persist = 0; c->t_rexmit = now + c->rto_us; }  /* RFC 6298 5.1 */
    if (new_data && !(flags & WIRE_TCP_SYN)) tcpi_tlp_arm(env, c, now);      /* RFC 8985 7.2 */
    return n;
}

static void send_ack(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    /* a pure ACK carries SND.MAX, not SND.NXT: while retransmitting (go-back-N) snd_nxt lies
     * below what the peer has, and an old sequence number would make the ACK unacceptable to
     * it (and answered with an ACK: an ACK storm) — BSD tcp_output does the same */
    uint8_t f = WIRE_TCP_ACK;
    (void)tcpi_emit(env, c, now, c->snd_max, 0, &f);
}

uint32_t tcpi_persist_interval(const struct tcp_env *env, const struct tcp_conn *c)
{
    uint64_t iv = (uint64_t)max32(c->rto_us, env->cfg->min_rto_us) << min32(c->persist_backoff, 16);
    if (iv > env->cfg->max_rto_us) iv = env->cfg->max_rto_us;
    return (uint32_t)iv;
}

/* Retransmit [s, s+l) (a range from the scoreboard/RACK may end on our FIN's sequence number:
 * the FIN goes with the data before it). Returns payload bytes sent, -1 without TX room, -2 when
 * nothing (not even a FIN) could be sent. */
static int send_rxt(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t s, uint32_t l)
{
    uint32_t de = data_end(c);
    uint8_t f = WIRE_TCP_ACK;
    if (seq_gt(s + l, de)) {
        l = seq_lt(s, de) ? de - s : 0;
        if (c->flags & TCPF_FIN_SENT) f |= WIRE_TCP_FIN;
    }
    if (!l && !(f & WIRE_TCP_FIN)) return -2;
    int n = tcpi_send_seg(env, c, now, s, l, f);
    if (n == 0 && !(f & WIRE_TCP_FIN)) return -2;
    if (n >= 0 && seq_lt(c->high_rxt, s + (uint32_t)n)) c->high_rxt = s + (uint32_t)n;
    return n;
}

static void output_data(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    int sent = 0;
    int sack_rec = (c->flags & TCPF_IN_RECOVERY) && (c->flags & TCPF_SACK_OK);

    /* RACK (RFC 8985): the first retransmission of a recovery is the first range marked lost
     * (after an RTO: snd_una's), sent regardless of cwnd like RFC 6675's */
    if (c->rexmit_now && tcpi_rack_on(c) && (c->flags & TCPF_IN_RECOVERY)) {
        uint32_t s, l;
        if (tcpi_sb_next_lost(c, &s, &l)) {
            int n = send_rxt(env, c, now, s, l);
            if (n == -1) return;
            if (n >= 0) sent = 1;
        }
        c->rexmit_now = 0;
    }

    /* Fast retransmit (RFC 5681 3.2 step 2 / RFC 6582 3.2 / RFC 6675 5 step 4.3): the segment at
     * snd_una goes out now, regardless of the window. */
    if (c->rexmit_now) {
        uint32_t len = min32(c->snd_max - c->snd_una, eff_mss(c));
        uint32_t de = data_end(c);
        if (seq_gt(c->snd_una + len, de)) len = de - c->snd_una;   /* only a FIN left */
        if (c->sb_n && seq_lt(c->sb[0].left, c->snd_una + len)) len = c->sb[0].left - c->snd_una;
        uint8_t f = WIRE_TCP_ACK;
        if ((c->flags & TCPF_FIN_SENT) && c->snd_una + len == de) f |= WIRE_TCP_FIN;
        int n = tcpi_send_seg(env, c, now, c->snd_una, len, f);
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
            uint32_t pipe = tcpi_sb_pipe(c);
            if (pipe + mss > c->cc.cwnd) break;          /* RFC 6675 5 step (C): cwnd - pipe >= 1 SMSS */
            uint32_t s, l;
            int rule = tcpi_sb_next_lost(c, &s, &l) ? 1 : 0;
            if (!rule) {
                /* rule 2 (new data) possible? else rule 3 */
                uint32_t wend = c->snd_una + c->snd_wnd;
                int can_new = seq_lt(c->snd_nxt, de) && seq_lt(c->snd_nxt, wend);
                /* (with RACK no rule 3: holes not marked lost are not retransmitted; the
                 * reordering timer and TLP take care of them) */
                if (!can_new && !tcpi_rack_on(c) && tcpi_sb_next_hole(c, &s, &l)) rule = 3;
            }
            if (rule) {
                int n = send_rxt(env, c, now, s, l);
                if (n < 0) break;
                sent = 1;
                continue;
            }
        }

        uint32_t cwnd = c->cc.cwnd + ((c->flags & TCPF_IN_RECOVERY) && !sack_rec ? c->rec_inflate : 0);
        /* RFC 3042 limited transmit: the first two duplicate ACKs each let one new segment out */
        if (!(c->flags & TCPF_IN_RECOVERY) && c->dupacks && c->dupacks < DUPTHRESH) cwnd += c->dupacks * mss;
        uint32_t usable;
        if (sack_rec) {
            uint32_t pipe = tcpi_sb_pipe(c);
            usable = c->cc.cwnd > pipe ? c->cc.cwnd - pipe : 0;
            uint32_t wend = c->snd_una + c->snd_wnd;
            usable = min32(usable, seq_gt(wend, c->snd_nxt) ? wend - c->snd_nxt : 0);
        } else {
            uint32_t wend = c->snd_una + min32(c->snd_wnd, cwnd);
            usable = seq_gt(wend, c->snd_nxt) ? wend - c->snd_nxt : 0;
        }
        uint32_t avail = seq_lt(c->snd_nxt, de) ? de - c->snd_nxt : 0;
        /* TSO: new data (not go-back-N retransmissions, not during recovery) as one super-segment
         * of full-MSS multiples within the window; a sub-MSS tail goes as its own segment (Nagle) */
        uint32_t maxlen = mss;
        if (env->tso_max && seq_ge(c->snd_nxt, c->snd_max) && !(c->flags & TCPF_IN_RECOVERY) &&
            env->tso_max / mss > 1)
            maxlen = (env->tso_max / mss) * mss;
        uint32_t len = min32(min32(avail, usable), maxlen);
        if (len > mss) len -= len % mss;
        int fin = (c->flags & TCPF_FIN_QUEUED) &&
                  (c->state == TCP_ST_FIN_WAIT_1 || c->state == TCP_ST_CLOSING || c->state == TCP_ST_LAST_ACK) &&
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
        int n = tcpi_send_seg(env, c, now, c->snd_nxt, len, f);
        if (n < 0) return;
        sent = 1;
        if (fin && (uint32_t)n == len) break;
        if (n == 0 && !fin) break;
    }

    if (!sent && (c->flags & TCPF_ACK_NOW)) send_ack(env, c, now);

    /* RFC 6298 5.1: data outstanding -> the retransmission timer runs (also when nothing could be
     * sent in this pass, e.g. the window closed on data already in flight) */
    if (!c->t_rexmit && c->snd_max != c->snd_una) c->t_rexmit = now + c->rto_us;
    /* Persist timer (RFC 9293 3.8.6.1): data waits, the peer's window is zero (or too small for
     * SWS) and nothing is in flight to elicit an ACK. */
    if (!c->t_rexmit && c->snd_max == c->snd_una && seq_lt(c->snd_nxt, data_end(c))) {
        c->persist = 1;
        c->t_rexmit = now + tcpi_persist_interval(env, c);
    }
}

int tcpi_pending_output(const struct tcp_conn *c)
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
    case TCP_ST_CLOSED:
    case TCP_ST_LISTEN:
        break;
    case TCP_ST_SYN_SENT:
        /* RFC 9293 3.10.1 OPEN: send <SEQ=ISS><CTL=SYN> */
        if (c->snd_nxt == c->iss) (void)tcpi_send_seg(env, c, now, c->iss, 0, WIRE_TCP_SYN);
        break;
    case TCP_ST_SYN_RECEIVED:
        /* RFC 9293 3.10.7.2 / 3.10.7.3: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> */
        if (c->snd_nxt == c->iss) (void)tcpi_send_seg(env, c, now, c->iss, 0, WIRE_TCP_SYN | WIRE_TCP_ACK);
        else if (c->flags & TCPF_ACK_NOW) send_ack(env, c, now);
        break;
    case TCP_ST_TIME_WAIT:
    case TCP_ST_FIN_WAIT_2:
        if (c->flags & TCPF_ACK_NOW) send_ack(env, c, now);
        break;
    default:
        output_data(env, c, now);
        break;
    }
    tcpi_sync_timer(env, c);
}
