/* test_tcp_retrans.c — TCP loss recovery: RTO, backoff, ETIMEDOUT, Karn, RTT samples, TSO output, fast
 * retransmit / recovery (NewReno, SACK), RACK-TLP.
 * Harness and fixtures: tcp_fake.h. */
#include "tcp_fake.h"

/* ====================================================================================== */
/* retransmission: RTO, backoff, ETIMEDOUT, Karn                                          */
/* ====================================================================================== */

static void test_rto_backoff_and_timeout(void)
{
    struct fake *f = conn_established_nosack();      /* without SACK: no TLP before the RTO */
    f->cfg.max_retries = 3;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    next_seg(f);
    uint64_t t0 = 100 * MS;
    CHECK_EQ(f->timer, t0 + 200 * MS);
    tcp_timer(&f->env, &f->c, t0 + 200 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 100);
    CHECK_EQ(f->timer, t0 + 600 * MS);
    CHECK_EQ(f->counters[TCP_CTR_TIMEOUTS], 1);
    CHECK_EQ(f->counters[TCP_CTR_RETRANS_SEGS], 1);
    CHECK_EQ(f->c.cc.cwnd, f->c.mss);                 /* RFC 5681: 1 SMSS after RTO */
    tcp_timer(&f->env, &f->c, t0 + 600 * MS);
    next_seg(f);
    CHECK_EQ(f->timer, t0 + 1400 * MS);
    tcp_timer(&f->env, &f->c, t0 + 1400 * MS);
    next_seg(f);
    CHECK_EQ(f->timer, t0 + 3000 * MS);
    tcp_timer(&f->env, &f->c, t0 + 3000 * MS);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ERROR);
    CHECK_EQ(e.err, ETIMEDOUT);
    CHECK_EQ(f->closed, 1);
    fake_free(f);
}

static void test_rto_min_and_max(void)
{
    struct fake *f = conn_established_nosack();
    /* RTT 1 ms -> RTO clamps at min_rto */
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    in(f, 101 * MS, tmpl(A, PISS + 1, ISS + 101, 65535));
    CHECK_EQ(f->c.rto_us, 200000);
    /* backoff is capped at max_rto */
    f->cfg.max_rto_us = 500000;
    tcp_send(&f->env, &f->c, 200 * MS, payload, 100);
    out(f, 200 * MS);
    tcp_timer(&f->env, &f->c, f->timer);
    CHECK_EQ(f->c.rto_us, 400000);
    tcp_timer(&f->env, &f->c, f->timer);
    CHECK_EQ(f->c.rto_us, 500000);
    fake_free(f);
}

static void test_karn(void)
{
    struct fake *f = conn_established();
    f->c.srtt_us = 0;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    tcp_timer(&f->env, &f->c, f->timer);             /* retransmitted */
    uint32_t rto = f->c.rto_us;
    CHECK_EQ(rto, 400 * MS);
    in(f, 350 * MS, tmpl(A, PISS + 1, ISS + 101, 65535));
    CHECK_EQ(f->c.srtt_us, 0);                       /* ambiguous ACK: no sample */
    CHECK_EQ(f->c.rto_us, rto);                      /* backed-off RTO kept (RFC 6298 5.7) */
    /* the next, unambiguous, segment is timed */
    tcp_send(&f->env, &f->c, 1200 * MS, payload, 100);
    out(f, 1200 * MS);
    in(f, 1230 * MS, tmpl(A, PISS + 1, ISS + 201, 65535));
    CHECK_EQ(f->c.srtt_us, 30000);
    CHECK_EQ(f->c.rttvar_us, 15000);
    CHECK_EQ(f->c.rto_us, 200000);                   /* 30 + 4*15 = 90 ms -> min 200 ms */
    fake_free(f);
}

static void test_rtt_timestamps(void)
{
    struct fake *f = conn_established_cfg(1, 1, 1);
    f->c.srtt_us = 0;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.tsval, 100);
    CHECK_EQ(t.tsecr, 777);
    tcp_timer(&f->env, &f->c, f->timer);             /* retransmission: ts still gives a sample */
    t = next_seg(f);
    CHECK_EQ(t.tsval, 300);
    struct wire_tcp a = tmpl(A, PISS + 1, ISS + 101, 65535);
    a.has_ts = 1; a.tsval = 800; a.tsecr = 300;
    in(f, 325 * MS, a);
    CHECK_EQ(f->c.srtt_us, 25000);
    CHECK_EQ(f->c.ts_recent, 800);
    fake_free(f);
}

static void test_rtt_stale_echo_after_rto(void)
{
    /* RFC 7323 4 / RFC 6298 with timestamps: after an RTO retransmission, an ACK that advances
     * snd_una but echoes a TSval older than the retransmission (the peer's TS.Recent from the
     * original flight) must not be sampled — it would count the whole backoff as RTT. */
    struct fake *f = conn_established_cfg(1, 0, 1);  /* no SACK: no TLP, two RTOs in a row */
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    drain(f);
    struct wire_tcp a = tmpl(A, PISS + 1, ISS + 101, 65535);
    a.has_ts = 1; a.tsval = 800; a.tsecr = 100;
    in(f, 120 * MS, a);                              /* srtt 20 ms */
    uint32_t srtt = f->c.srtt_us;
    CHECK(srtt > 0 && srtt < 30000);
    /* two segments at 1 s; the first is lost; RTO fires twice (backoff) */
    tcp_send(&f->env, &f->c, 1000 * MS, payload, 2 * 1448);
    out(f, 1000 * MS);
    CHECK_EQ(pending(f), 2);
    drain(f);
    tcp_timer(&f->env, &f->c, f->timer);             /* 1.2 s: retransmit */
    uint64_t t1 = f->timer;
    tcp_timer(&f->env, &f->c, t1);                   /* 1.6 s: again, RTO 800 ms */
    CHECK_EQ(f->c.retries, 2);
    uint32_t rto = f->c.rto_us;
    drain(f);
    /* 3 s: an ACK for the first segment whose echo is the original flight's (tsval 1000) */
    a = tmpl(A, PISS + 1, ISS + 101 + 1448, 65535);
    a.has_ts = 1; a.tsval = 900; a.tsecr = 1000;
    in(f, 3000 * MS, a);
    CHECK_EQ(f->c.snd_una, ISS + 101 + 1448);
    CHECK_EQ(f->c.srtt_us, srtt);                    /* no 2 s sample */
    CHECK_EQ(f->c.rto_us, rto);                      /* backed-off RTO kept (RFC 6298 5.7) */
    /* an ACK echoing the latest retransmission's TSval is a valid sample again */
    uint32_t last_rxt = f->c.rxt_tsval;
    a = tmpl(A, PISS + 1, ISS + 101 + 2 * 1448, 65535);
    a.has_ts = 1; a.tsval = 901; a.tsecr = last_rxt;
    in(f, (uint64_t)(last_rxt - f->c.ts_offset) * MS + 30 * MS, a);
    CHECK(f->c.srtt_us < 100000);
    CHECK(f->c.rto_us < rto);
    fake_free(f);
}

static void test_rtt_stale_echo_syn(void)
{
    /* the SYN-ACK echoes our first SYN's TSval although the SYN was retransmitted: no sample
     * (it would be the SYN backoff, 1 s, not the RTT); RFC 6298 5.7 RTO instead */
    struct fake *f = fake_new();
    f->cfg.timestamps = 1;
    tcp_open_active(&f->env, &f->c, 100 * MS, ISS);
    out(f, 100 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK(t.flags & S);
    uint32_t first = t.tsval;
    tcp_timer(&f->env, &f->c, f->timer);             /* 1.1 s: SYN again */
    t = next_seg(f);
    CHECK(t.flags & S);
    CHECK(t.tsval != first);
    struct wire_tcp sa = tmpl(S | A, PISS, ISS + 1, 65535);
    sa.has_mss = 1; sa.mss = 1460;
    sa.has_ts = 1; sa.tsval = 5000; sa.tsecr = first;
    in(f, 1120 * MS, sa);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(f->c.srtt_us, 0);
    CHECK_EQ(f->c.rto_us, 1000000);
    fake_free(f);
}

/* ---- TSO: super-segments of full MSS multiples for new data, retransmissions per MSS ---- */
static struct fake *conn_tso(uint32_t wnd)
{
    struct fake *f = conn_established_cfg(1, 1, 1);
    f->bigtx = malloc((size_t)MAXSEG * BIGTX);
    f->cap = 65535 - 20;                             /* engine: min(slot - L2/IP, 64 KiB - IP) */
    f->env.tso_max = 65535 - 20 - 60;
    f->c.cc.cwnd = 1u << 20;
    f->c.snd_wnd = wnd;
    f->c.max_snd_wnd = wnd;
    f->c.flags |= TCPF_NODELAY;
    return f;
}

static void test_tso_output(void)
{
    static uint8_t big[200000];
    for (uint32_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7 + 3);
    struct fake *f = conn_tso(1u << 20);
    CHECK_EQ(f->c.mss, 1460);                        /* 1448 payload next to timestamps */
    CHECK_EQ(tcp_send(&f->env, &f->c, 100 * MS, big, sizeof big), (int64_t)sizeof big);
    out(f, 100 * MS);
    /* 45 x 1448 = 65160 per super-segment (64 KiB - headers), then 3 full MSS, then the tail */
    static const uint32_t want[] = {65160, 65160, 65160, 4344, 176};
    CHECK_EQ(pending(f), 5);
    uint32_t seq = ISS + 1;
    for (int i = 0; i < 5 && pending(f); i++) {
        uint16_t gso = f->txgso[f->rd];
        struct wire_tcp t = next_seg(f);
        CHECK_EQ(t.payload_len, want[i]);
        CHECK_EQ(t.seq, seq);
        CHECK(t.has_ts);
        CHECK_EQ(gso, want[i] > 1448 ? 1448 : 0);   /* cut at the MSS next to this header */
        CHECK_EQ(t.flags & (A | P | F), i == 4 ? (A | P) : A);
        CHECK(memcmp(t.payload, big + (seq - ISS - 1), t.payload_len) == 0);
        seq += t.payload_len;
    }
    CHECK_EQ(f->c.snd_max, ISS + 1 + (uint32_t)sizeof big);
    /* RTO: retransmissions are one MSS each, never super-segments */
    tcp_timer(&f->env, &f->c, f->c.t_rexmit);
    CHECK(pending(f) >= 1);
    while (pending(f)) {
        uint16_t gso = f->txgso[f->rd];
        struct wire_tcp t = next_seg(f);
        CHECK(t.payload_len <= 1448);
        CHECK_EQ(gso, 0);
    }
    /* an ACK of the first MSS lets go-back-N go on, still per MSS */
    struct wire_tcp a = tmpl(A, PISS + 1, ISS + 1 + 1448, 65535);
    a.has_ts = 1; a.tsval = 900; a.tsecr = f->c.rxt_tsval;
    in(f, 1400 * MS, a);
    f->c.snd_wnd = 1u << 20;
    out(f, 1400 * MS);
    CHECK(pending(f) >= 1);
    while (pending(f)) {
        uint16_t gso = f->txgso[f->rd];
        struct wire_tcp t = next_seg(f);
        CHECK(t.payload_len <= 1448);
        CHECK_EQ(gso, 0);
    }
    fake_free(f);

    /* the peer's window limits a super-segment (full MSS multiples inside it) */
    f = conn_tso(10000);
    tcp_send(&f->env, &f->c, 100 * MS, big, 50000);
    out(f, 100 * MS);
    uint16_t gso = f->txgso[f->rd];
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.payload_len, 6 * 1448);
    CHECK_EQ(gso, 1448);
    fake_free(f);

    /* FIN rides on a super-segment that ends the data (the link puts it on the last piece) */
    f = conn_tso(1u << 20);
    tcp_send(&f->env, &f->c, 100 * MS, big, 3 * 1448);
    tcp_shutdown(&f->env, &f->c, 100 * MS);
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 1);
    gso = f->txgso[f->rd];
    t = next_seg(f);
    CHECK_EQ(t.payload_len, 3 * 1448);
    CHECK_EQ(gso, 1448);
    CHECK(t.flags & F);
    fake_free(f);

    /* a TX slot of one MTU (neighbour queue / scratch frame): one MSS, no GSO */
    f = conn_tso(1u << 20);
    f->cap = 1480;
    tcp_send(&f->env, &f->c, 100 * MS, big, 10000);
    out(f, 100 * MS);
    CHECK(pending(f) >= 1);
    gso = f->txgso[f->rd];
    t = next_seg(f);
    CHECK_EQ(t.payload_len, 1448);
    CHECK_EQ(gso, 0);
    fake_free(f);

    /* without TSO: MSS-sized segments, never a gso size */
    f = conn_established_cfg(1, 1, 1);
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, big, 5000);
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 4);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(f->txgso[f->rd], 0);
        t = next_seg(f);
        CHECK(t.payload_len <= 1448);
    }
    fake_free(f);
}

/* ====================================================================================== */
/* fast retransmit / recovery                                                             */
/* ====================================================================================== */

static void test_fast_retransmit_newreno(void)
{
    struct fake *f = conn_established_nosack();
    fill_flight(f, 100 * MS, 10);                    /* ISS+1 .. ISS+14601 */
    /* segment 1 lost: dupACKs */
    for (int i = 0; i < 2; i++) in(f, 150 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    out(f, 150 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 150 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    CHECK(f->c.flags & TCPF_IN_RECOVERY);
    CHECK_EQ(f->c.recover, ISS + 14601);
    CHECK_EQ(f->c.cc.ssthresh, 7300);                /* flight/2 */
    out(f, 150 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 1460);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->counters[TCP_CTR_FAST_RETRANS], 1);
    /* partial ACK (segments 1..3; 4 lost too): retransmit 4 at once (RFC 6582 3.2 step 3) */
    in(f, 200 * MS, tmpl(A, PISS + 1, ISS + 1 + 3 * 1460, 65535));
    CHECK(f->c.flags & TCPF_IN_RECOVERY);
    out(f, 200 * MS);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1 + 3 * 1460);
    /* full ACK: recovery ends, cwnd = ssthresh */
    in(f, 250 * MS, tmpl(A, PISS + 1, ISS + 14601, 65535));
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(f->c.cc.cwnd, 7300);
    fake_free(f);
}

static struct wire_tcp sack_ack(uint32_t ack, uint32_t l, uint32_t r)
{
    struct wire_tcp t = tmpl(A, PISS + 1, ack, 65535);
    t.nsack = 1;
    t.sack[0].left = l;
    t.sack[0].right = r;
    return t;
}

static void test_fast_retransmit_sack(void)
{
    struct fake *f = conn_established();
    fill_flight(f, 100 * MS, 10);
    uint32_t b = ISS + 1;
    /* segments 1 and 3 lost; the receiver SACKs 2, then 2 + 4.. */
    in(f, 150 * MS, sack_ack(b, b + 1460, b + 2920));
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    in(f, 150 * MS, sack_ack(b, b + 3 * 1460, b + 4 * 1460));
    CHECK_EQ(f->c.sb_n, 2);
    in(f, 150 * MS, sack_ack(b, b + 3 * 1460, b + 5 * 1460));
    CHECK(f->c.flags & TCPF_IN_RECOVERY);           /* 3 dupACKs */
    CHECK_EQ(f->counters[TCP_CTR_SACK_RECOVERY], 1);
    CHECK_EQ(f->c.sacked_bytes, 3 * 1460);
    out(f, 150 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, b);                              /* first hole */
    CHECK_EQ(t.payload_len, 1460);
    /* pipe = 10 segs - 3 sacked - lost(seg1: 3 segs sacked above -> lost) + rexmit:
     * ssthresh = 7300 (5 segs); more SACKs let the second hole (seg 3) go */
    in(f, 160 * MS, sack_ack(b, b + 3 * 1460, b + 8 * 1460));
    out(f, 160 * MS);
    int found = 0;
    while (pending(f)) {
        t = next_seg(f);
        if (t.seq == b + 2 * 1460) found = 1;
        CHECK(t.seq != b);                           /* not retransmitted twice */
        CHECK(!(seq_ge(t.seq, b + 3 * 1460) && seq_lt(t.seq, b + 8 * 1460)));   /* never SACKed data */
    }
    CHECK(found);
    /* cumulative ACK past recover ends recovery */
    in(f, 200 * MS, tmpl(A, PISS + 1, b + 10 * 1460, 65535));
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(f->c.sb_n, 0);
    fake_free(f);
}

/* The send-buffer read cursor (c->snd_cur, tcp_buf_stream_peek_cur) gives exactly the bytes at each
 * sequence number: new data in order, after ACKs consume chunks, and for reads that go backwards
 * (go-back-N after an RTO, a SACK retransmission in the middle). Non-periodic content, so a read
 * at a wrong offset cannot match by accident. */
static uint8_t cur_pat[200000];
static void check_seg_bytes(struct wire_tcp t, uint32_t base)
{
    uint32_t off = t.seq - base;
    CHECK(off + t.payload_len <= sizeof cur_pat);
    CHECK(memcmp(t.payload, cur_pat + off, t.payload_len) == 0);
}
static void test_snd_cursor_bytes(void)
{
    for (uint32_t i = 0; i < sizeof cur_pat; i++) cur_pat[i] = (uint8_t)((i * 2654435761u) >> 13);
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    uint32_t b = ISS + 1;
    CHECK_EQ(tcp_send(&f->env, &f->c, 100 * MS, cur_pat, 150000), 150000);
    f->c.cc.cwnd = 100 * 1460;
    out(f, 100 * MS);
    int n = pending(f);
    CHECK(n >= 40);
    uint32_t expect = b;
    while (pending(f)) {
        struct wire_tcp t = next_seg(f);
        CHECK_EQ(t.seq, expect);
        check_seg_bytes(t, b);
        expect += t.payload_len;
    }
    CHECK(f->c.snd_cur.chunk1 != 0);
    /* partial ACK (chunks consumed), then a retransmission far below the cursor (SACK hole) */
    in(f, 150 * MS, sack_ack(b + 10 * 1460, b + 12 * 1460, b + 20 * 1460));
    in(f, 150 * MS, sack_ack(b + 10 * 1460, b + 12 * 1460, b + 21 * 1460));
    in(f, 150 * MS, sack_ack(b + 10 * 1460, b + 12 * 1460, b + 22 * 1460));
    CHECK(f->c.flags & TCPF_IN_RECOVERY);
    out(f, 150 * MS);
    CHECK(pending(f) >= 1);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, b + 10 * 1460);
    check_seg_bytes(t, b);
    while (pending(f)) check_seg_bytes(next_seg(f), b);
    /* RTO: go-back-N from snd_una, reads restart below the cursor */
    tcp_timer(&f->env, &f->c, f->c.t_rexmit);
    CHECK(pending(f) >= 1);
    t = next_seg(f);
    CHECK_EQ(t.seq, b + 10 * 1460);
    check_seg_bytes(t, b);
    /* ACK everything sent so far: the rest of the buffer goes out, still byte-exact */
    uint32_t top = f->c.snd_max;
    in(f, 400 * MS, tmpl(A, PISS + 1, top, 65535));
    f->c.cc.cwnd = 200 * 1460;
    for (int round = 0; round < 20 && f->c.snd_una != b + 150000; round++) {
        out(f, 400 * MS + (uint64_t)round * MS);
        while (pending(f)) check_seg_bytes(next_seg(f), b);
        in(f, 400 * MS + (uint64_t)round * MS, tmpl(A, PISS + 1, f->c.snd_max, 65535));
    }
    CHECK_EQ(f->c.snd_una, b + 150000);
    CHECK_EQ(f->c.snd.len, 0);
    fake_free(f);
}

/* ---- RACK-TLP (RFC 8985) ---- */
static struct wire_tcp sack_ack2(uint32_t ack, uint32_t l, uint32_t r) { return sack_ack(ack, l, r); }

/* RACK marks a segment lost once RACK.rtt + reo_wnd passed since it was sent (not by counting
 * duplicate ACKs), through the reordering timer; then a lost retransmission is detected from a
 * later-sent segment being SACKed, without an RTO. */
/* RACK records out of line: taken when data goes in flight, returned when all is ACKed or on
 * close; without a record set (pool empty) the connection falls back to RFC 6675 DupThresh */
static void test_rack_records_pool(void)
{
    fprintf(stderr, "    sizeof(struct tcp_conn) = %zu, sizeof(struct tcp_recs) = %zu\n",
            sizeof(struct tcp_conn), sizeof(struct tcp_recs));
    struct fake *f = conn_established();
    CHECK(f->c.recs == NULL);
    CHECK_EQ(f->recs_used, 0);
    fill_flight(f, 100 * MS, 4);
    CHECK(f->c.recs == &f->recs_store);
    CHECK(f->c.rec_n > 0);
    uint32_t b = ISS + 1;
    in(f, 130 * MS, tmpl(A, PISS + 1, b + 2 * 1460, 65535));
    CHECK(f->c.recs != NULL);                        /* half acked: kept */
    in(f, 140 * MS, tmpl(A, PISS + 1, b + 4 * 1460, 65535));
    CHECK(f->c.recs == NULL);                        /* all acked: returned */
    CHECK_EQ(f->recs_used, 0);
    CHECK_EQ(f->c.rec_n, 0);
    /* close with data in flight: returned */
    fill_flight(f, 200 * MS, 2);
    CHECK_EQ(f->recs_used, 1);
    tcp_abort(&f->env, &f->c, 210 * MS);
    CHECK_EQ(f->recs_used, 0);
    CHECK(f->c.recs == NULL);
    CHECK_EQ(f->counters[TCP_CTR_RACK_NO_REC], 0);
    fake_free(f);

    /* pool empty: counted, no records, loss found by DupThresh (3 segments SACKed above a hole) */
    f = conn_established();
    f->recs_deny = 1;
    fill_flight(f, 100 * MS, 10);
    CHECK(f->c.recs == NULL);
    CHECK_EQ(f->c.rec_n, 0);
    CHECK_EQ(f->counters[TCP_CTR_RACK_NO_REC], 10);    /* per segment sent without records */
    in(f, 130 * MS, sack_ack(b, b + 1460, b + 2 * 1460));
    in(f, 131 * MS, sack_ack(b, b + 1460, b + 3 * 1460));
    out(f, 131 * MS);
    CHECK_EQ(pending(f), 0);                         /* RACK would wait for its timer; nothing */
    CHECK_EQ(f->c.t_rack, 0);
    in(f, 132 * MS, sack_ack(b, b + 1460, b + 4 * 1460));
    out(f, 132 * MS);
    CHECK(f->c.flags & TCPF_IN_RECOVERY);
    CHECK(pending(f) >= 1);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, b);
    CHECK_EQ(f->counters[TCP_CTR_RACK_LOST], 0);
    fake_free(f);
}

static void test_rack_reo_wnd_and_lost_retransmit(void)
{
    struct fake *f = conn_established();             /* SACK, srtt 10 ms from the handshake */
    fill_flight(f, 100 * MS, 10);                    /* one transmission time: 100 ms */
    uint32_t b = ISS + 1;
    /* 130 ms: segment 2 SACKed. RACK.rtt = min RTT = 30 ms; reo_wnd = min_RTT/4 = 7.5 ms (no
     * reordering seen, fewer than DupThresh segments SACKed): segment 1 is not lost before
     * 100 + 30 + 7.5 ms */
    in(f, 130 * MS, sack_ack(b, b + 1460, b + 2920));
    out(f, 130 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(f->c.rack_rtt, 30000);
    CHECK_EQ(f->c.rack_min_rtt, 30000);
    CHECK_EQ(f->c.t_rack, 137500);
    tcp_timer(&f->env, &f->c, 137499);
    CHECK_EQ(pending(f), 0);
    tcp_timer(&f->env, &f->c, 137500);               /* the reordering timer: lost now */
    CHECK(f->c.flags & TCPF_IN_RECOVERY);
    CHECK_EQ(f->counters[TCP_CTR_RACK_LOST], 1);
    CHECK_EQ(f->counters[TCP_CTR_TIMEOUTS], 0);
    CHECK_EQ(pending(f), 1);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, b);
    CHECK_EQ(t.payload_len, 1460);
    /* 150 ms: segments 4..10 SACKed: segment 3 (sent at 100 ms, below RACK.end_seq, reo_wnd 0
     * in recovery) is lost at once; segment 1's retransmission (137.5 ms) is not judged yet */
    in(f, 150 * MS, sack_ack2(b, b + 3 * 1460, b + 10 * 1460));
    out(f, 150 * MS);
    CHECK_EQ(pending(f), 1);
    t = next_seg(f);
    CHECK_EQ(t.seq, b + 2 * 1460);
    /* 185 ms: segment 3's retransmission (sent at 150 ms, after segment 1's) is SACKed: segment
     * 1's retransmission is lost — detected by RACK, retransmitted again, no RTO */
    in(f, 185 * MS, sack_ack2(b, b + 1460, b + 10 * 1460));
    out(f, 185 * MS);
    CHECK_EQ(pending(f), 1);
    t = next_seg(f);
    CHECK_EQ(t.seq, b);
    CHECK_EQ(t.payload_len, 1460);
    CHECK_EQ(f->counters[TCP_CTR_TIMEOUTS], 0);
    CHECK_EQ(f->c.retransmits, 3);
    /* the cumulative ACK ends recovery */
    in(f, 200 * MS, tmpl(A, PISS + 1, b + 10 * 1460, 65535));
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(f->c.rec_n, 0);
    fake_free(f);
}

/* With reordering seen, a SACK above a hole does not trigger recovery before reo_wnd. */
static void test_rack_reordering_no_spurious(void)
{
    struct fake *f = conn_established();
    fill_flight(f, 100 * MS, 10);
    uint32_t b = ISS + 1;
    f->c.rack_reord = 1;
    /* segments 2..5 SACKed at 130 ms: RFC 6675 would start recovery (3 SACKed segments);
     * RACK waits for RACK.rtt + reo_wnd (30 + 7.5 ms) */
    in(f, 130 * MS, sack_ack(b, b + 1460, b + 5 * 1460));
    out(f, 130 * MS);
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(pending(f), 0);
    /* the late segment 1 arrives: cumulative ACK, nothing was retransmitted */
    in(f, 133 * MS, sack_ack(b + 1460, b + 1460, b + 5 * 1460));
    out(f, 133 * MS);
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    CHECK_EQ(f->c.retransmits, 0);
    CHECK_EQ(f->c.t_rack, 0);
    fake_free(f);
}

/* TLP (RFC 8985 7): PTO = 2*SRTT after the last transmission; the probe is new data when there is
 * some, else the highest segment; an ACK of a retransmitted probe without DSACK reduces cwnd. */
static void test_tlp(void)
{
    struct fake *f = conn_established();             /* srtt 10 ms */
    f->c.flags |= TCPF_NODELAY;
    uint32_t b = ISS + 1;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 12 * 1460);
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 10);                        /* IW10 */
    drain(f);
    CHECK_EQ(f->c.t_tlp, 120 * MS);
    CHECK_EQ(f->timer, 120 * MS);
    tcp_timer(&f->env, &f->c, 120 * MS);
    CHECK_EQ(pending(f), 1);                         /* new data, beyond cwnd */
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, b + 10 * 1460);
    CHECK_EQ(t.payload_len, 1460);
    CHECK_EQ(f->counters[TCP_CTR_TLP_PROBES], 1);
    CHECK_EQ(f->c.t_rexmit, 120 * MS + 200 * MS);    /* RTO restarted after the probe */
    CHECK(f->c.tlp_active);
    CHECK_EQ(f->c.t_tlp, 0);                         /* one probe per episode */
    fake_free(f);

    f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 3 * 1460);
    out(f, 100 * MS);
    drain(f);
    CHECK_EQ(f->c.t_tlp, 120 * MS);
    tcp_timer(&f->env, &f->c, 120 * MS);
    CHECK_EQ(pending(f), 1);                         /* no new data: the last segment again */
    t = next_seg(f);
    CHECK_EQ(t.seq, b + 2 * 1460);
    CHECK_EQ(t.payload_len, 1460);
    CHECK_EQ(f->c.tlp_end, b + 3 * 1460);
    CHECK(f->c.tlp_rxt);
    CHECK_EQ(f->counters[TCP_CTR_TIMEOUTS], 0);
    /* everything ACKed, no DSACK: the probe repaired a loss -> congestion response */
    in(f, 130 * MS, tmpl(A, PISS + 1, b + 3 * 1460, 65535));
    CHECK(!f->c.tlp_active);
    CHECK_EQ(f->c.cc.ssthresh, 2920);                /* Reno: max(flight/2, 2*SMSS) */
    CHECK_EQ(f->c.cc.cwnd, 2920);
    fake_free(f);

    /* one segment in flight: PTO also covers the peer's delayed ACK */
    f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 500);
    out(f, 100 * MS);
    CHECK_EQ(f->c.t_tlp, 100 * MS + 20 * MS + 40 * MS);
    fake_free(f);
}

static void test_sack_blocks_sent_for_ooo(void)
{
    struct fake *f = conn_established();
    /* segment 2 arrives before segment 1 */
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1 + 1000, ISS + 1, 65535), 1000, 1000));
    CHECK_EQ(f->c.rcv_nxt, PISS + 1);
    CHECK_EQ(n_events(f), 0);
    out(f, 20 * MS);                                 /* immediate duplicate ACK with SACK */
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(t.nsack, 1);
    CHECK_EQ(t.sack[0].left, PISS + 1001);
    CHECK_EQ(t.sack[0].right, PISS + 2001);
    CHECK_EQ(f->counters[TCP_CTR_OOO_SEGS], 1);
    /* the gap is filled: both delivered, ACK at once, no SACK left */
    in(f, 21 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1000));
    CHECK_EQ(f->c.rcv_nxt, PISS + 2001);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_READABLE);
    CHECK_EQ(e.len, 2000);
    out(f, 21 * MS);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 2001);
    CHECK_EQ(t.nsack, 0);
    uint8_t buf[2000];
    CHECK_EQ(tcp_recv(&f->env, &f->c, 22 * MS, buf, sizeof buf), 2000);
    CHECK_MEM(buf, payload, 2000);
    fake_free(f);
}

static void test_ooo_fin(void)
{
    struct fake *f = conn_established();
    /* data+FIN beyond a gap, then the gap: FIN processed when it becomes in order */
    in(f, 20 * MS, with_data(tmpl(A | F, PISS + 101, ISS + 1, 65535), 100, 100));
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    in(f, 21 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 100));
    CHECK_EQ(f->c.rcv_nxt, PISS + 202);
    CHECK_EQ(f->c.state, TCP_ST_CLOSE_WAIT);
    CHECK_EQ(next_ev(f).type, TCP_EV_READABLE);
    CHECK_EQ(next_ev(f).type, TCP_EV_PEER_CLOSED);
    fake_free(f);
}

int main(void)
{
    RUN(test_rto_backoff_and_timeout);
    RUN(test_rto_min_and_max);
    RUN(test_karn);
    RUN(test_rtt_timestamps);
    RUN(test_rtt_stale_echo_after_rto);
    RUN(test_rtt_stale_echo_syn);
    RUN(test_tso_output);
    RUN(test_fast_retransmit_newreno);
    RUN(test_fast_retransmit_sack);
    RUN(test_snd_cursor_bytes);
    RUN(test_rack_records_pool);
    RUN(test_rack_reo_wnd_and_lost_retransmit);
    RUN(test_rack_reordering_no_spurious);
    RUN(test_tlp);
    RUN(test_sack_blocks_sent_for_ooo);
    RUN(test_ooo_fin);
    CTEST_END();
}
