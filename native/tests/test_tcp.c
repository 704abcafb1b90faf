/* test_tcp.c — the TCP state machine: handshake, data transfer, close (active, passive, simultaneous,
 * half-close, TIME-WAIT), RST acceptance and generation, RFC 5961 challenge ACKs.
 * Harness and fixtures: tcp_fake.h. */
#include "tcp_fake.h"

/* ====================================================================================== */
/* handshake                                                                              */
/* ====================================================================================== */

static void test_handshake_active(void)
{
    struct fake *f = conn_syn_sent_cfg(1, 1, 1);
    CHECK_EQ(f->c.state, TCP_ST_SYN_SENT);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, S);
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(t.ack, 0);
    CHECK_EQ(t.win, 65535);
    CHECK(t.has_mss); CHECK_EQ(t.mss, 1460);
    CHECK(t.has_wscale); CHECK_EQ(t.wscale, 3);     /* 262144 >> 3 fits in 16 bits */
    CHECK(t.sack_perm);
    CHECK(t.has_ts); CHECK_EQ(t.tsval, 0); CHECK_EQ(t.tsecr, 0);
    CHECK_EQ(f->timer, 1 * SEC);                    /* initial RTO armed */

    struct wire_tcp sa = tmpl(S | A, PISS, ISS + 1, 20000);
    sa.has_mss = 1; sa.mss = 1400;
    sa.has_wscale = 1; sa.wscale = 2;
    sa.sack_perm = 1;
    sa.has_ts = 1; sa.tsval = 99; sa.tsecr = 0;
    in(f, 50 * MS, sa);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(n_events(f), 1);
    CHECK_EQ(next_ev(f).type, TCP_EV_CONNECTED);
    CHECK_EQ(f->c.mss, 1400);
    CHECK_EQ(f->c.snd_wnd, 20000);                   /* SYN window is not scaled */
    CHECK_EQ(f->c.snd_wscale, 2);
    CHECK(f->c.flags & TCPF_SACK_OK);
    CHECK(f->c.flags & TCPF_TS_OK);
    CHECK_EQ(f->c.srtt_us, 50000);                   /* RTT sample from the handshake */
    CHECK_EQ(f->c.cc.cwnd, 10 * (1400 - 12));
    CHECK_EQ(f->timer, 0);                           /* nothing outstanding */
    out(f, 50 * MS);
    t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(t.win, 262144 >> 3);
    CHECK(t.has_ts); CHECK_EQ(t.tsval, 50); CHECK_EQ(t.tsecr, 99);
    CHECK(!t.has_mss);
    CHECK_EQ(pending(f), 0);
    fake_free(f);
}

static void test_handshake_active_no_options(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    /* peer without WS/SACK/MSS: defaults (RFC 9293 3.7.1: MSS 536), no scaling either way */
    in(f, 1 * MS, tmpl(S | A, PISS, ISS + 1, 8192));
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(f->c.mss, 536);
    CHECK_EQ(f->c.rcv_wscale, 0);
    CHECK(!(f->c.flags & (TCPF_SACK_OK | TCPF_WS_OK)));
    out(f, 1 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.win, 65535);                          /* unscaled window capped */
    fake_free(f);
}

static void test_handshake_passive(void)
{
    struct fake *f = fake_new();
    f->cfg.timestamps = 1;
    struct wire_tcp syn = tmpl(S, PISS, 0, 64240);
    syn.has_mss = 1; syn.mss = 1400;
    syn.has_wscale = 1; syn.wscale = 7;
    syn.sack_perm = 1;
    syn.has_ts = 1; syn.tsval = 4242;
    tcp_open_passive(&f->env, &f->c, 0, ISS, &syn);
    CHECK_EQ(f->c.state, TCP_ST_SYN_RECEIVED);
    CHECK(f->want > 0);
    out(f, 0);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, S | A);
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(t.mss, 1460);
    CHECK(t.has_wscale); CHECK_EQ(t.wscale, 3);
    CHECK(t.sack_perm);
    CHECK(t.has_ts); CHECK_EQ(t.tsecr, 4242);
    CHECK_EQ(t.win, 65535);
    CHECK_EQ(f->timer, 1 * SEC);

    struct wire_tcp ack = tmpl(A, PISS + 1, ISS + 1, 500);
    ack.has_ts = 1; ack.tsval = 4243; ack.tsecr = t.tsval;
    in(f, 30 * MS, ack);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(n_events(f), 1);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ACCEPT);                /* passive -> ACCEPT (engine fills parent) */
    CHECK_EQ(f->c.snd_wnd, 500u << 7);
    CHECK_EQ(f->c.mss, 1400);
    CHECK_EQ(f->c.ts_recent, 4243);
    CHECK_EQ(f->timer, 0);
    fake_free(f);
}

static void test_handshake_passive_offer_subset(void)
{
    /* SYN without WS/SACK/TS: the SYN-ACK must not carry them (RFC 7323 1.3, RFC 2018 2) */
    struct fake *f = fake_new();
    f->cfg.timestamps = 1;
    struct wire_tcp syn = tmpl(S, PISS, 0, 64240);
    tcp_open_passive(&f->env, &f->c, 0, ISS, &syn);
    out(f, 0);
    struct wire_tcp t = next_seg(f);
    CHECK(!t.has_wscale);
    CHECK(!t.sack_perm);
    CHECK(!t.has_ts);
    CHECK_EQ(f->c.mss, 536);
    fake_free(f);
}

static void test_synack_retransmit_and_dup_syn(void)
{
    struct fake *f = fake_new();
    struct wire_tcp syn = tmpl(S, PISS, 0, 64240);
    tcp_open_passive(&f->env, &f->c, 0, ISS, &syn);
    out(f, 0);
    drain(f);
    /* retransmitted SYN: SYN-ACK again */
    in(f, 100 * MS, syn);
    out(f, 100 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, S | A);
    CHECK_EQ(t.seq, ISS);
    /* RTO: SYN-ACK again, synack_retries then silent death (no event: never accepted) */
    f->cfg.synack_retries = 1;
    tcp_timer(&f->env, &f->c, f->timer);
    t = next_seg(f);
    CHECK_EQ(t.flags, S | A);
    CHECK_EQ(f->counters[TCP_CTR_SYN_RETRANS], 2);
    tcp_timer(&f->env, &f->c, f->timer);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(n_events(f), 0);
    fake_free(f);
}

static void test_syn_received_bad_ack_rst(void)
{
    struct fake *f = fake_new();
    struct wire_tcp syn = tmpl(S, PISS, 0, 64240);
    tcp_open_passive(&f->env, &f->c, 0, ISS, &syn);
    out(f, 0);
    drain(f);
    /* RFC 9293 3.10.7.4: unacceptable ACK in SYN-RECEIVED -> <SEQ=SEG.ACK><CTL=RST> */
    in(f, 1 * MS, tmpl(A, PISS + 1, ISS + 77, 100));
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, R);
    CHECK_EQ(t.seq, ISS + 77);
    CHECK_EQ(f->c.state, TCP_ST_SYN_RECEIVED);
    fake_free(f);
}

static void test_syn_sent_rst(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    /* RST without ACK: ignored (RFC 5961 3.2 / RFC 9293 3.10.7.3) */
    in(f, 1 * MS, tmpl(R, 0, 0, 0));
    CHECK_EQ(f->c.state, TCP_ST_SYN_SENT);
    /* RST with an unacceptable ACK: ignored, and no RST answered to a RST */
    in(f, 1 * MS, tmpl(R | A, 0, ISS + 5, 0));
    CHECK_EQ(f->c.state, TCP_ST_SYN_SENT);
    CHECK_EQ(pending(f), 0);
    /* acceptable: connection refused */
    in(f, 2 * MS, tmpl(R | A, 0, ISS + 1, 0));
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(n_events(f), 1);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_CONNECT_FAILED);
    CHECK_EQ(e.err, ECONNREFUSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(f->timer, 0);
    fake_free(f);
}

static void test_syn_sent_bad_ack(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    /* SEG.ACK =< ISS or > SND.NXT: <SEQ=SEG.ACK><CTL=RST> */
    in(f, 1 * MS, tmpl(S | A, PISS, ISS + 10, 1000));
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, R);
    CHECK_EQ(t.seq, ISS + 10);
    CHECK_EQ(f->c.state, TCP_ST_SYN_SENT);
    CHECK_EQ(f->counters[TCP_CTR_RST_OUT], 1);
    fake_free(f);
}

static void test_syn_retries_timeout(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    f->cfg.syn_retries = 2;
    CHECK_EQ(f->timer, 1 * SEC);
    tcp_timer(&f->env, &f->c, 1 * SEC);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, S);
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(f->timer, 3 * SEC);                     /* backoff: 2 s */
    tcp_timer(&f->env, &f->c, 3 * SEC);
    next_seg(f);
    CHECK_EQ(f->timer, 7 * SEC);
    tcp_timer(&f->env, &f->c, 7 * SEC);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_CONNECT_FAILED);
    CHECK_EQ(e.err, ETIMEDOUT);
    CHECK_EQ(f->closed, 1);
    fake_free(f);
}

/* two endpoints wired back to back */
static void shuttle(struct fake *from, struct fake *to, uint64_t now)
{
    while (pending(from)) {
        struct wire_tcp t = next_seg(from);
        tcp_input(&to->env, &to->c, now, &t);
    }
}

static void test_simultaneous_open(void)
{
    struct fake *a = fake_new(), *b = fake_new();
    b->c.local_port = RPORT; b->c.remote_port = LPORT;
    a->c.remote_port = RPORT; a->c.local_port = LPORT;
    /* hack ports so parsed segments look right to both */
    tcp_open_active(&a->env, &a->c, 0, ISS);
    tcp_open_active(&b->env, &b->c, 0, PISS);
    out(a, 0);
    out(b, 0);
    /* SYNs cross */
    shuttle(a, b, 1 * MS);
    shuttle(b, a, 1 * MS);
    CHECK_EQ(a->c.state, TCP_ST_SYN_RECEIVED);
    CHECK_EQ(b->c.state, TCP_ST_SYN_RECEIVED);
    out(a, 2 * MS);
    out(b, 2 * MS);
    struct wire_tcp t = a->ntx > a->rd ? (struct wire_tcp){0} : (struct wire_tcp){0};
    (void)t;
    CHECK_EQ(pending(a), 1);
    int r = wire_tcp_parse(a->tx[a->rd], a->txlen[a->rd], &t);
    CHECK(r >= 0);
    CHECK_EQ(t.flags, S | A);                        /* SYN-ACK <SEQ=ISS><ACK=RCV.NXT> */
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(t.ack, PISS + 1);
    shuttle(a, b, 3 * MS);
    shuttle(b, a, 3 * MS);
    CHECK_EQ(a->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(b->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(next_ev(a).type, TCP_EV_CONNECTED);
    CHECK_EQ(next_ev(b).type, TCP_EV_CONNECTED);
    CHECK_EQ(a->c.snd_una, ISS + 1);
    CHECK_EQ(a->c.rcv_nxt, PISS + 1);
    fake_free(a);
    fake_free(b);
}

/* ====================================================================================== */
/* data transfer                                                                          */
/* ====================================================================================== */

static void test_send_segments_and_ack(void)
{
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    for (uint32_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7 + 3);
    CHECK_EQ(tcp_send(&f->env, &f->c, 20 * MS, payload, 3000), 3000);
    out(f, 20 * MS);
    CHECK_EQ(pending(f), 3);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1); CHECK_EQ(t.payload_len, 1460); CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_MEM(t.payload, payload, 1460);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1461); CHECK_EQ(t.payload_len, 1460);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 2921); CHECK_EQ(t.payload_len, 80); CHECK_EQ(t.flags, A | P);
    CHECK_MEM(t.payload, payload + 2920, 80);
    CHECK_EQ(f->c.snd_nxt, ISS + 3001);
    CHECK_EQ(f->c.rto_us, 200000);                   /* handshake RTT 10 ms -> min RTO */
    CHECK_EQ(f->c.t_rexmit, 20 * MS + 200 * MS);     /* RTO armed at send time */
    CHECK_EQ(f->c.t_tlp, 20 * MS + 2 * 10 * MS);     /* and the TLP: PTO = 2*SRTT (RFC 8985 7.2) */
    CHECK_EQ(f->timer, f->c.t_tlp);
    /* ACK of the first two segments frees them from the send buffer */
    in(f, 60 * MS, tmpl(A, PISS + 1, ISS + 2921, 65535));
    CHECK_EQ(f->c.snd.len, 80);
    CHECK_EQ(f->c.snd_una, ISS + 2921);
    CHECK_EQ(f->c.srtt_us, 13750);                   /* 7/8 * 10 ms + 1/8 * 40 ms */
    CHECK_EQ(f->c.rttvar_us, 11250);                 /* 3/4 * 5 ms + 1/4 * 30 ms */
    CHECK_EQ(f->c.t_rexmit, 60 * MS + f->c.rto_us);  /* restarted (RFC 6298 5.3) */
    /* one segment (80 B) left in flight: PTO = 2*SRTT + the peer's delayed ACK */
    CHECK_EQ(f->c.t_tlp, 60 * MS + 2 * 13750 + 40 * MS);
    in(f, 70 * MS, tmpl(A, PISS + 1, ISS + 3001, 65535));
    CHECK_EQ(f->c.snd.len, 0);
    CHECK_EQ(f->timer, 0);                           /* all acked: stopped (5.2) */
    fake_free(f);
}

static void test_send_limited_by_peer_window_and_writable(void)
{
    struct fake *f = conn_established();
    f->c.sndbuf = 4000;
    f->c.flags |= TCPF_NODELAY;
    in(f, 15 * MS, tmpl(A, PISS + 1, ISS + 1, 2000));   /* window 2000 */
    CHECK_EQ(tcp_send(&f->env, &f->c, 20 * MS, payload, 5000), 4000);   /* short send */
    out(f, 20 * MS);
    CHECK_EQ(pending(f), 1);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.payload_len, 1460);
    /* 540 bytes of window left: < MSS and < max window/2 -> held (sender SWS, 3.8.6.2.1) */
    CHECK_EQ(n_events(f), 0);
    in(f, 30 * MS, tmpl(A, PISS + 1, ISS + 1461, 2000));
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_WRITABLE);
    CHECK_EQ(e.len, 1460);
    fake_free(f);
}

static void test_receive_in_order(void)
{
    struct fake *f = conn_established();
    f->c.quickacks = 2;
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1000));
    CHECK_EQ(f->c.rcv_nxt, PISS + 1001);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_READABLE);
    CHECK_EQ(e.len, 1000);
    out(f, 20 * MS);                                 /* quick ACK */
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1001);
    CHECK_EQ(t.win, (262144 - 1000) >> 3);           /* window = free space in rcvbuf */
    uint8_t buf[2000];
    CHECK_EQ(tcp_recv(&f->env, &f->c, 21 * MS, buf, sizeof buf), 1000);
    CHECK_MEM(buf, payload, 1000);
    CHECK_EQ(tcp_recv(&f->env, &f->c, 21 * MS, buf, sizeof buf), 0);
    fake_free(f);
}

static void test_window_closes_and_reopens(void)
{
    struct fake *f = fake_new();
    f->cfg.window_scaling = 0;
    tcp_setopt(&f->env, &f->c, TCP_OPT_RCVBUF, 4000);
    tcp_open_active(&f->env, &f->c, 0, ISS);
    out(f, 0);
    drain(f);
    in(f, 1 * MS, tmpl(S | A, PISS, ISS + 1, 65535));
    out(f, 1 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.win, 4000);
    /* the app does not read: 4000 bytes fill the buffer, the window closes */
    in(f, 2 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1460));
    in(f, 2 * MS, with_data(tmpl(A, PISS + 1461, ISS + 1, 65535), 1460, 1460));
    in(f, 2 * MS, with_data(tmpl(A, PISS + 2921, ISS + 1, 65535), 2920, 1080));
    out(f, 2 * MS);
    while (pending(f) > 1) next_seg(f);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 4001);
    CHECK_EQ(t.win, 0);
    /* more data beyond the window: not accepted, ACK with window 0 */
    in(f, 3 * MS, with_data(tmpl(A, PISS + 4001, ISS + 1, 65535), 4000, 100));
    CHECK_EQ(f->c.rcv_nxt, PISS + 4001);
    CHECK_EQ(f->c.rcv.len, 4000);
    out(f, 3 * MS);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 4001);
    CHECK_EQ(t.win, 0);
    /* reading a little (< MSS) does not reopen (receiver SWS avoidance, RFC 9293 3.8.6.2.2) */
    uint8_t buf[4000];
    CHECK_EQ(tcp_recv(&f->env, &f->c, 4 * MS, buf, 100), 100);
    out(f, 4 * MS);
    CHECK_EQ(pending(f), 0);
    /* reading the rest sends a window update */
    CHECK_EQ(tcp_recv(&f->env, &f->c, 5 * MS, buf, sizeof buf), 3900);
    out(f, 5 * MS);
    t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 4001);
    CHECK_EQ(t.win, 4000);
    fake_free(f);
}

/* ====================================================================================== */
/* close: active, passive, simultaneous, half-close, TIME-WAIT                            */
/* ====================================================================================== */

static void test_active_close_time_wait(void)
{
    struct fake *f = conn_fin_wait_1();
    in(f, 30 * MS, tmpl(A, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    CHECK_EQ(f->timer, 0);
    in(f, 40 * MS, tmpl(A | F, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    CHECK_EQ(next_ev(f).type, TCP_EV_PEER_CLOSED);
    CHECK_EQ(next_ev(f).type, TCP_EV_CLOSED);
    out(f, 40 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.seq, ISS + 2);
    CHECK_EQ(t.ack, PISS + 2);
    CHECK_EQ(f->timer, 40 * MS + 60 * SEC);          /* 2 MSL */
    CHECK_EQ(f->closed, 0);
    tcp_timer(&f->env, &f->c, 40 * MS + 60 * SEC - 1);
    CHECK_EQ(f->closed, 0);
    tcp_timer(&f->env, &f->c, 40 * MS + 60 * SEC);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    fake_free(f);
}

static void test_time_wait_refin(void)
{
    struct fake *f = conn_time_wait();
    /* a retransmitted FIN: ACK it and restart 2 MSL (RFC 9293 3.10.7.4) */
    in(f, 10 * SEC, tmpl(A | F, PISS + 1, ISS + 2, 65535));
    out(f, 10 * SEC);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 2);
    CHECK_EQ(f->timer, 10 * SEC + 60 * SEC);
    CHECK_EQ(n_events(f), 0);
    fake_free(f);
}

static void test_passive_close(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A | F, PISS + 1, ISS + 1, 65535), 0, 10));
    CHECK_EQ(f->c.state, TCP_ST_CLOSE_WAIT);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_READABLE); CHECK_EQ(e.len, 10);
    e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_PEER_CLOSED);
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 12);                      /* data + FIN acknowledged at once */
    /* we can still send (half-open from the peer's view) */
    CHECK_EQ(tcp_send(&f->env, &f->c, 21 * MS, payload, 5), 5);
    uint8_t buf[16];
    CHECK_EQ(tcp_recv(&f->env, &f->c, 21 * MS, buf, sizeof buf), 10);
    CHECK_EQ(tcp_close(&f->env, &f->c, 22 * MS), 0);
    CHECK_EQ(f->c.state, TCP_ST_LAST_ACK);
    out(f, 22 * MS);
    t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);                    /* data and FIN together */
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 5);
    in(f, 30 * MS, tmpl(A, PISS + 12, ISS + 7, 65535));
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(n_events(f), 0);                        /* detached by close: no more events */
    fake_free(f);
}

static void test_last_ack_event_when_shutdown(void)
{
    struct fake *f = conn_close_wait();
    CHECK_EQ(tcp_shutdown(&f->env, &f->c, 22 * MS), 0);
    CHECK_EQ(f->c.state, TCP_ST_LAST_ACK);
    out(f, 22 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);
    CHECK_EQ(t.seq, ISS + 1);
    in(f, 30 * MS, tmpl(A, PISS + 2, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(next_ev(f).type, TCP_EV_CLOSED);
    CHECK_EQ(f->closed, 1);
    fake_free(f);
}

static void test_simultaneous_close(void)
{
    struct fake *f = conn_fin_wait_1();
    /* the peer's FIN crosses ours: it does not ack our FIN -> CLOSING */
    in(f, 30 * MS, tmpl(A | F, PISS + 1, ISS + 1, 65535));
    CHECK_EQ(f->c.state, TCP_ST_CLOSING);
    out(f, 30 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 2);
    CHECK_EQ(t.seq, ISS + 2);
    /* its ACK of our FIN -> TIME-WAIT */
    in(f, 40 * MS, tmpl(A, PISS + 2, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    CHECK_EQ(f->timer, 40 * MS + 60 * SEC);
    fake_free(f);
}

static void test_fin_with_ack_of_fin(void)
{
    /* FIN-WAIT-1: FIN that also acks our FIN -> TIME-WAIT directly */
    struct fake *f = conn_fin_wait_1();
    in(f, 30 * MS, tmpl(A | F, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    fake_free(f);
}

static void test_half_close(void)
{
    struct fake *f = conn_fin_wait_2();
    /* write side shut: the peer keeps sending, we keep reading */
    in(f, 50 * MS, with_data(tmpl(A, PISS + 1, ISS + 2, 65535), 0, 500));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_READABLE);
    CHECK_EQ(e.len, 500);
    CHECK_EQ(tcp_send(&f->env, &f->c, 50 * MS, payload, 10), -EPIPE);
    f->c.quickacks = 1;
    in(f, 60 * MS, with_data(tmpl(A, PISS + 501, ISS + 2, 65535), 500, 500));
    out(f, 60 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1001);
    CHECK_EQ(t.seq, ISS + 2);
    CHECK_EQ(f->c.rcv.len, 1000);
    fake_free(f);
}

static void test_fin_wait_1_data_then_fin(void)
{
    /* close with queued data: data first, FIN on the last segment; the FIN is retransmitted */
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 20 * MS, payload, 100);
    tcp_shutdown(&f->env, &f->c, 20 * MS);
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);
    CHECK_EQ(t.payload_len, 100);
    in(f, 30 * MS, tmpl(A, PISS + 1, ISS + 101, 65535));  /* acks the data only */
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_1);
    tcp_timer(&f->env, &f->c, f->timer);
    t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);
    CHECK_EQ(t.seq, ISS + 101);
    CHECK_EQ(t.payload_len, 0);
    in(f, 40 * MS, tmpl(A, PISS + 1, ISS + 102, 65535));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    fake_free(f);
}

/* ====================================================================================== */
/* RST acceptance and generation, RFC 5961 challenge ACKs                                 */
/* ====================================================================================== */

static void test_rst_exact_resets(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, tmpl(R, PISS + 1, 0, 0));
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ERROR);
    CHECK_EQ(e.err, ECONNRESET);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(f->counters[TCP_CTR_RST_IN], 1);
    CHECK_EQ(pending(f), 0);
    fake_free(f);
}

static void test_rst_in_window_challenge(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, tmpl(R, PISS + 100, 0, 0));       /* in window, not exact */
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);                            /* challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT> */
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 1);
    /* out of window: silently dropped */
    in(f, 21 * MS, tmpl(R, PISS + 1 + 300000, 0, 0));
    out(f, 21 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(n_events(f), 0);
    fake_free(f);
}

static void test_syn_in_established_challenge(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, tmpl(S, PISS + 50, 0, 1000));
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 1);
    /* rate limit: engine budget exhausted -> no ACK (after the per-connection interval) */
    f->challenge_budget = 0;
    in(f, 600 * MS, tmpl(S, PISS + 50, 0, 1000));
    out(f, 600 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS_LIMITED], 1);
    CHECK_EQ(f->counters[TCP_CTR_OOW_ACKS_LIMITED], 0);
    fake_free(f);
}

/* Per-connection limit (Linux tcp_invalid_ratelimit): one ACK answering an invalid segment per
 * TCP_OOW_ACK_INTERVAL_MS (500 ms), for challenge ACKs, unacceptable segments, SEQ = RCV.NXT-1
 * probes and TIME-WAIT; data segments are exempt; the engine budget is not touched when limited. */
static void test_oow_ack_per_conn_limit(void)
{
    struct fake *f = conn_established();
    /* unacceptable pure ACK (far out of window): ACKed */
    in(f, 20 * MS, tmpl(A, PISS + 1 + 400000, ISS + 1, 65535));
    out(f, 20 * MS);
    CHECK_EQ(pending(f), 1);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    /* second invalid segment 499 ms later: no ACK (challenge: SYN, and out of window) */
    in(f, 519 * MS, tmpl(A, PISS + 1 + 400000, ISS + 1, 65535));
    in(f, 519 * MS, tmpl(S, PISS + 50, 0, 1000));
    in(f, 519 * MS, tmpl(A, PISS, ISS + 1, 65535));          /* probe <SEQ=RCV.NXT-1> */
    out(f, 519 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->counters[TCP_CTR_OOW_ACKS_LIMITED], 3);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 0);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS_LIMITED], 0);
    /* out-of-window data is exempt (not part of an ACK loop) */
    in(f, 519 * MS, with_data(tmpl(A, PISS + 1 + 400000, ISS + 1, 65535), 0, 100));
    out(f, 519 * MS);
    CHECK_EQ(pending(f), 1);
    drain(f);
    /* 500 ms after the first: ACKed again; a probe right after is not */
    in(f, 520 * MS, tmpl(S, PISS + 50, 0, 1000));
    out(f, 520 * MS);
    CHECK_EQ(pending(f), 1);
    t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 1);
    in(f, 521 * MS, tmpl(A, PISS, ISS + 1, 65535));
    out(f, 521 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 1020 * MS, tmpl(A, PISS, ISS + 1, 65535));
    out(f, 1020 * MS);
    CHECK_EQ(pending(f), 1);
    CHECK_EQ(f->counters[TCP_CTR_OOW_ACKS_LIMITED], 4);
    fake_free(f);

    /* TIME-WAIT: an old ACK is answered at most once per 500 ms; a retransmitted FIN always */
    f = conn_time_wait();
    in(f, 100 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));       /* SEQ = RCV.NXT-1 */
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 1);
    t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 2);
    in(f, 200 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    in(f, 300 * MS, tmpl(A, PISS + 1 + 400000, ISS + 2, 65535));
    out(f, 300 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 350 * MS, tmpl(A | F, PISS + 1, ISS + 2, 65535));   /* retransmitted FIN */
    out(f, 350 * MS);
    CHECK_EQ(pending(f), 1);
    drain(f);
    in(f, 600 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    out(f, 600 * MS);
    CHECK_EQ(pending(f), 1);
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    fake_free(f);
}

static void test_ack_beyond_snd_nxt_challenge(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 5000, 65535), 0, 100));
    CHECK_EQ(f->c.snd_una, ISS + 1);
    CHECK_EQ(f->c.rcv_nxt, PISS + 1);                /* data dropped too (RFC 5961 5.2) */
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 1);
    fake_free(f);
}

static void test_out_of_window_data_acked(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1 + 400000, ISS + 1, 65535), 0, 100));
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_OUT_OF_WINDOW], 1);
    /* an old duplicate: ACKed at once too */
    in(f, 21 * MS, with_data(tmpl(A, PISS - 99, ISS + 1, 65535), 0, 100));
    out(f, 21 * MS);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1);
    fake_free(f);
}

static void test_abort_sends_rst(void)
{
    struct fake *f = conn_established();
    tcp_send(&f->env, &f->c, 20 * MS, payload, 100);
    out(f, 20 * MS);
    drain(f);
    tcp_abort(&f->env, &f->c, 21 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, R | A);
    CHECK_EQ(t.seq, ISS + 101);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(f->timer, 0);
    fake_free(f);
}

static void test_close_with_unread_data_resets(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 10));
    drain(f);
    CHECK_EQ(tcp_close(&f->env, &f->c, 21 * MS), 0);
    out(f, 21 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK(t.flags & R);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    fake_free(f);
}

static void test_rst_for(void)
{
    struct wire_tcp rst;
    struct wire_tcp s = tmpl(S, 777, 0, 100);
    CHECK_EQ(tcp_rst_for(&s, &rst), 1);
    CHECK_EQ(rst.flags, R | A);
    CHECK_EQ(rst.seq, 0);
    CHECK_EQ(rst.ack, 778);
    CHECK_EQ(rst.sport, LPORT);
    CHECK_EQ(rst.dport, RPORT);
    s = with_data(tmpl(A | F, 777, 4444, 100), 0, 10);
    CHECK_EQ(tcp_rst_for(&s, &rst), 1);
    CHECK_EQ(rst.flags, R);
    CHECK_EQ(rst.seq, 4444);
    s = tmpl(R, 1, 0, 0);
    CHECK_EQ(tcp_rst_for(&s, &rst), 0);
}

int main(void)
{
    RUN(test_handshake_active);
    RUN(test_handshake_active_no_options);
    RUN(test_handshake_passive);
    RUN(test_handshake_passive_offer_subset);
    RUN(test_synack_retransmit_and_dup_syn);
    RUN(test_syn_received_bad_ack_rst);
    RUN(test_syn_sent_rst);
    RUN(test_syn_sent_bad_ack);
    RUN(test_syn_retries_timeout);
    RUN(test_simultaneous_open);
    RUN(test_send_segments_and_ack);
    RUN(test_send_limited_by_peer_window_and_writable);
    RUN(test_receive_in_order);
    RUN(test_window_closes_and_reopens);
    RUN(test_active_close_time_wait);
    RUN(test_time_wait_refin);
    RUN(test_passive_close);
    RUN(test_last_ack_event_when_shutdown);
    RUN(test_simultaneous_close);
    RUN(test_fin_with_ack_of_fin);
    RUN(test_half_close);
    RUN(test_fin_wait_1_data_then_fin);
    RUN(test_rst_exact_resets);
    RUN(test_rst_in_window_challenge);
    RUN(test_syn_in_established_challenge);
    RUN(test_oow_ack_per_conn_limit);
    RUN(test_ack_beyond_snd_nxt_challenge);
    RUN(test_out_of_window_data_acked);
    RUN(test_abort_sends_rst);
    RUN(test_close_with_unread_data_resets);
    RUN(test_rst_for);
    CTEST_END();
}
