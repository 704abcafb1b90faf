/* test_tcp_flow.c — TCP flow control and timers: zero window and persist, PAWS, delayed ACK, Nagle,
 * PMTU, options, info, TIME-WAIT reuse, D-SACK.
 * Harness and fixtures: tcp_fake.h. */
#include "tcp_fake.h"

/* ====================================================================================== */
/* zero window, persist                                                                   */
/* ====================================================================================== */

static void test_zero_window_persist(void)
{
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    in(f, 20 * MS, tmpl(A, PISS + 1, ISS + 1, 0));   /* peer window closed */
    CHECK_EQ(f->c.snd_wnd, 0);
    tcp_send(&f->env, &f->c, 30 * MS, payload, 1000);
    out(f, 30 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK(f->c.persist);
    uint64_t t1 = f->timer;
    CHECK_EQ(t1, 30 * MS + 200 * MS);                /* persist interval starts at the RTO */
    tcp_timer(&f->env, &f->c, t1);
    struct wire_tcp t = next_seg(f);                 /* zero-window probe: <SEQ=SND.UNA-1>, no data */
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(t.payload_len, 0);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(f->c.snd_max, ISS + 1);                 /* nothing put in flight */
    CHECK_EQ(f->counters[TCP_CTR_PERSIST_PROBES], 1);
    CHECK_EQ(f->timer, t1 + 400 * MS);               /* backed off */
    /* the peer still has no room: ACK without progress, window 0 — not a dupACK */
    in(f, t1 + 10 * MS, tmpl(A, PISS + 1, ISS + 1, 0));
    CHECK_EQ(f->c.dupacks, 0);
    tcp_timer(&f->env, &f->c, t1 + 400 * MS);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS);
    CHECK_EQ(t.payload_len, 0);
    CHECK_EQ(f->timer, t1 + 400 * MS + 800 * MS);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);       /* probing never times out the connection */
    /* window opens: the rest flows */
    in(f, t1 + 3 * SEC, tmpl(A, PISS + 1, ISS + 1, 65535));
    CHECK(!f->c.persist);
    out(f, t1 + 3 * SEC);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 1000);
    CHECK_EQ(f->counters[TCP_CTR_RETRANS_SEGS], 0);
    fake_free(f);
}

static void test_zero_window_probe_answered(void)
{
    /* our window is 0: a probe (data at rcv_nxt) is not accepted but ACKed with window 0 */
    struct fake *f = fake_new();
    f->cfg.window_scaling = 0;
    tcp_setopt(&f->env, &f->c, TCP_OPT_RCVBUF, 1000);
    tcp_open_active(&f->env, &f->c, 0, ISS);
    out(f, 0);
    in(f, 1 * MS, tmpl(S | A, PISS, ISS + 1, 65535));
    out(f, 1 * MS);
    drain(f);
    in(f, 2 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1000));
    out(f, 2 * MS);
    drain(f);
    in(f, 3 * MS, with_data(tmpl(A, PISS + 1001, ISS + 1, 65535), 0, 1));
    CHECK_EQ(f->c.rcv_nxt, PISS + 1001);
    out(f, 3 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1001);
    CHECK_EQ(t.win, 0);
    fake_free(f);
}

/* ====================================================================================== */
/* PAWS, delayed ACK, Nagle                                                               */
/* ====================================================================================== */

static void test_paws(void)
{
    struct fake *f = conn_established_cfg(1, 1, 1);
    struct wire_tcp d = with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 100);
    d.has_ts = 1; d.tsval = 1000; d.tsecr = 10;
    in(f, 20 * MS, d);
    CHECK_EQ(f->c.rcv_nxt, PISS + 101);
    CHECK_EQ(f->c.ts_recent, 1000);
    drain(f);
    /* an old timestamp (wrapped sequence): dropped, ACKed, counted */
    struct wire_tcp old = with_data(tmpl(A, PISS + 101, ISS + 1, 65535), 0, 100);
    old.has_ts = 1; old.tsval = 999; old.tsecr = 10;
    in(f, 30 * MS, old);
    CHECK_EQ(f->c.rcv_nxt, PISS + 101);
    CHECK_EQ(f->counters[TCP_CTR_PAWS_DROPS], 1);
    out(f, 30 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 101);
    CHECK_EQ(t.tsecr, 1000);
    /* an RST is not subject to PAWS */
    struct wire_tcp rst = tmpl(R, PISS + 101, 0, 0);
    rst.has_ts = 1; rst.tsval = 5;
    in(f, 31 * MS, rst);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    fake_free(f);
}

static void test_delayed_ack(void)
{
    struct fake *f = conn_established();
    /* one segment: ACK delayed by delack_us */
    in(f, 100 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1460));
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->timer, 140 * MS);
    int calls = f->timer_calls;
    tcp_timer(&f->env, &f->c, 139 * MS);             /* early/spurious call: nothing fires ... */
    out(f, 139 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK_EQ(f->timer, 140 * MS);                    /* ... and the deadline is re-reported */
    CHECK_EQ(f->timer_calls, calls + 1);
    tcp_timer(&f->env, &f->c, 140 * MS);
    out(f, 140 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1461);
    CHECK_EQ(f->counters[TCP_CTR_DELAYED_ACKS], 1);
    CHECK_EQ(f->timer, 0);
    /* two full segments: ACK at once */
    in(f, 200 * MS, with_data(tmpl(A, PISS + 1461, ISS + 1, 65535), 0, 1460));
    out(f, 200 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 201 * MS, with_data(tmpl(A, PISS + 2921, ISS + 1, 65535), 0, 1460));
    out(f, 201 * MS);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 4381);
    CHECK_EQ(f->timer, 0);                           /* delayed-ACK timer cancelled */
    fake_free(f);
}

static void test_quickack_at_start(void)
{
    struct fake *f = conn_established();
    f->c.quickacks = 2;
    for (int i = 0; i < 3; i++) {
        in(f, (100 + (uint64_t)i) * MS, with_data(tmpl(A, PISS + 1 + (uint32_t)i * 10, ISS + 1, 65535), 0, 10));
        out(f, (100 + (uint64_t)i) * MS);
    }
    CHECK_EQ(pending(f), 2);                         /* first two immediately, third delayed */
    fake_free(f);
}

static void test_nagle(void)
{
    struct fake *f = conn_established();
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 1);                         /* nothing in flight: small segment goes */
    next_seg(f);
    tcp_send(&f->env, &f->c, 101 * MS, payload, 100);
    out(f, 101 * MS);
    CHECK_EQ(pending(f), 0);                         /* Nagle: wait for the ACK */
    tcp_send(&f->env, &f->c, 102 * MS, payload, 50);
    out(f, 102 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 120 * MS, tmpl(A, PISS + 1, ISS + 101, 65535));
    out(f, 120 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 101);
    CHECK_EQ(t.payload_len, 150);                    /* coalesced */
    /* no-delay: small segments go at once */
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_NODELAY, 1), 0);
    tcp_send(&f->env, &f->c, 130 * MS, payload, 10);
    out(f, 130 * MS);
    t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 251);
    CHECK_EQ(t.payload_len, 10);
    /* a full segment is never delayed */
    tcp_setopt(&f->env, &f->c, TCP_OPT_NODELAY, 0);
    tcp_send(&f->env, &f->c, 140 * MS, payload, 1500);
    out(f, 140 * MS);
    CHECK_EQ(pending(f), 1);
    t = next_seg(f);
    CHECK_EQ(t.payload_len, 1460);
    fake_free(f);
}

static void test_keepalive(void)
{
    struct fake *f = conn_established();
    tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPIDLE, 10 * SEC);
    tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPINTVL, 1 * SEC);
    tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPCNT, 2);
    tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPALIVE, 1);
    CHECK_EQ(f->timer, 10 * MS + 10 * SEC);
    tcp_timer(&f->env, &f->c, f->timer);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS);                            /* SND.NXT - 1, no data */
    CHECK_EQ(t.payload_len, 0);
    CHECK_EQ(f->counters[TCP_CTR_KEEPALIVE_PROBES], 1);
    /* answered: idle timer restarts */
    in(f, 10 * SEC + 20 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    CHECK_EQ(f->timer, 20 * SEC + 20 * MS);
    tcp_timer(&f->env, &f->c, f->timer);
    next_seg(f);
    tcp_timer(&f->env, &f->c, f->timer);
    next_seg(f);
    tcp_timer(&f->env, &f->c, f->timer);             /* 2 unanswered probes: give up */
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ERROR);
    CHECK_EQ(e.err, ETIMEDOUT);
    fake_free(f);
}

static void test_keepalive_default(void)
{
    /* Linux's 7200 s idle time is representable (more than 2^32 us = 71.6 min) */
    struct fake *f = conn_established();
    CHECK_EQ(f->cfg.keepalive_idle_us, 7200ull * SEC);
    struct tcp_conn c2;
    memset(&c2, 0, sizeof c2);
    tcp_conn_init(&f->env, &c2, TCP_AF_INET, 1, 2, 1460);
    CHECK_EQ(c2.ka_idle_us, 7200ull * SEC);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPIDLE, 7200ll * SEC), 0);
    int64_t v = 0;
    CHECK_EQ(tcp_getopt(&f->c, TCP_OPT_KEEPIDLE, &v), 0);
    CHECK_EQ(v, 7200ll * SEC);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPALIVE, 1), 0);
    CHECK_EQ(f->timer, 10 * MS + 7200ull * SEC);     /* first probe after 2 idle hours */
    tcp_timer(&f->env, &f->c, 10 * MS + 7199ull * SEC);
    CHECK_EQ(pending(f), 0);
    tcp_timer(&f->env, &f->c, f->timer);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.payload_len, 0);
    CHECK_EQ(f->counters[TCP_CTR_KEEPALIVE_PROBES], 1);
    /* Linux's bounds: 1..32767 s */
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPIDLE, 32767ll * SEC), 0);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPIDLE, 32768ll * SEC), -EINVAL);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPINTVL, 32768ll * SEC), -EINVAL);
    fake_free(f);
}

static void test_pmtu(void)
{
    struct fake *f = conn_established();
    fill_flight(f, 100 * MS, 2);
    tcp_pmtu(&f->env, &f->c, 110 * MS, 1000);
    CHECK_EQ(f->c.mss, 1000);
    out(f, 110 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 1000);
    fake_free(f);
}

static void test_tx_full_retry(void)
{
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    f->tx_full = 1;
    int w = f->want;
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 0);
    CHECK(f->want > w);                              /* asks to be polled again */
    f->tx_full = 0;
    out(f, 101 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 100);
    fake_free(f);
}


static void test_probe_ack_accepted(void)
{
    /* a keepalive/zero-window probe <SEQ=RCV.NXT-1> is answered with an ACK, and its ACK field
     * is used (not counted as a duplicate ACK) */
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 20 * MS, payload, 100);
    out(f, 20 * MS);
    drain(f);
    in(f, 30 * MS, tmpl(A, PISS, ISS + 101, 4000));
    CHECK_EQ(f->c.snd_una, ISS + 101);
    CHECK_EQ(f->c.snd_wnd, 4000);
    out(f, 30 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 1);
    /* with data outstanding, probes are no duplicate ACKs */
    tcp_send(&f->env, &f->c, 40 * MS, payload, 100);
    out(f, 40 * MS);
    for (int i = 0; i < 4; i++) in(f, 50 * MS, tmpl(A, PISS, ISS + 101, 4000));
    CHECK_EQ(f->c.dupacks, 0);
    CHECK(!(f->c.flags & TCPF_IN_RECOVERY));
    fake_free(f);
}

static void test_old_ack_challenge(void)
{
    /* RFC 5961 5.2: SEG.ACK < SND.UNA - MAX.SND.WND -> challenge ACK, segment dropped */
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 1 - 70000, 65535), 0, 10));
    CHECK_EQ(f->c.rcv_nxt, PISS + 1);
    CHECK_EQ(f->counters[TCP_CTR_CHALLENGE_ACKS], 1);
    out(f, 20 * MS);
    CHECK_EQ(next_seg(f).ack, PISS + 1);
    /* an old ACK within MAX.SND.WND is fine: its data is taken */
    in(f, 21 * MS, with_data(tmpl(A, PISS + 1, ISS + 1 - 100, 65535), 0, 10));
    CHECK_EQ(f->c.rcv_nxt, PISS + 11);
    fake_free(f);
}

static void test_cookie_open(void)
{
    struct fake *f = fake_new();
    f->cfg.timestamps = 1;
    struct wire_tcp ack = with_data(tmpl(A | P, PISS + 1, ISS + 1, 1000), 0, 50);
    ack.has_ts = 1; ack.tsval = 321; ack.tsecr = 5;
    tcp_open_cookie(&f->env, &f->c, 10 * MS, ISS, &ack, 1400, 7, 1);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(f->c.mss, 1400);
    CHECK_EQ(f->c.snd_wscale, 7);
    CHECK_EQ(f->c.rcv_wscale, tcp_wscale_for(262144));
    CHECK_EQ(f->c.snd_wnd, 1000u << 7);
    CHECK(f->c.flags & TCPF_SACK_OK);
    CHECK(f->c.flags & TCPF_TS_OK);
    CHECK_EQ(f->c.ts_recent, 321);
    CHECK_EQ(f->c.snd_una, ISS + 1);
    CHECK_EQ(f->c.rcv_nxt, PISS + 51);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ACCEPT);
    e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_READABLE);
    CHECK_EQ(e.len, 50);
    /* no wscale in the cookie: none either way */
    struct fake *g = fake_new();
    struct wire_tcp ack2 = tmpl(A, PISS + 1, ISS + 1, 1000);
    tcp_open_cookie(&g->env, &g->c, 10 * MS, ISS, &ack2, 536, 0xff, 0);
    CHECK_EQ(g->c.snd_wscale, 0);
    CHECK_EQ(g->c.rcv_wscale, 0);
    CHECK(!(g->c.flags & (TCPF_WS_OK | TCPF_SACK_OK | TCPF_TS_OK)));
    CHECK_EQ(g->c.snd_wnd, 1000);
    fake_free(f);
    fake_free(g);
}

static void test_limited_transmit(void)
{
    /* RFC 3042: each of the first two duplicate ACKs sends one new segment */
    struct fake *f = conn_established_nosack();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 14 * 1460);
    out(f, 100 * MS);
    CHECK_EQ(pending(f), 10);                        /* initial window */
    drain(f);
    in(f, 150 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    out(f, 150 * MS);
    CHECK_EQ(pending(f), 1);
    CHECK_EQ(next_seg(f).seq, ISS + 1 + 10 * 1460);
    in(f, 151 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));
    out(f, 151 * MS);
    CHECK_EQ(pending(f), 1);
    CHECK_EQ(next_seg(f).seq, ISS + 1 + 11 * 1460);
    in(f, 152 * MS, tmpl(A, PISS + 1, ISS + 1, 65535));   /* third: fast retransmit */
    out(f, 152 * MS);
    CHECK_EQ(next_seg(f).seq, ISS + 1);
    CHECK_EQ(f->c.recover, ISS + 1 + 12 * 1460);
    fake_free(f);
}

static void test_persist_gives_up_on_silent_peer(void)
{
    struct fake *f = conn_established();
    f->cfg.max_retries = 2;
    in(f, 20 * MS, tmpl(A, PISS + 1, ISS + 1, 0));
    tcp_send(&f->env, &f->c, 30 * MS, payload, 100);
    out(f, 30 * MS);
    tcp_timer(&f->env, &f->c, f->timer);
    tcp_timer(&f->env, &f->c, f->timer);
    CHECK_EQ(pending(f), 2);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    tcp_timer(&f->env, &f->c, f->timer);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ERROR);
    CHECK_EQ(e.err, ETIMEDOUT);
    /* but a peer that answers (window still 0) is probed forever */
    struct fake *g = conn_established();
    g->cfg.max_retries = 2;
    in(g, 20 * MS, tmpl(A, PISS + 1, ISS + 1, 0));
    tcp_send(&g->env, &g->c, 30 * MS, payload, 100);
    out(g, 30 * MS);
    for (int i = 0; i < 10; i++) {
        uint64_t t = g->timer;
        tcp_timer(&g->env, &g->c, t);
        in(g, t + 1 * MS, tmpl(A, PISS + 1, ISS + 1, 0));
    }
    CHECK_EQ(g->c.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(g->counters[TCP_CTR_PERSIST_PROBES], 10);
    fake_free(f);
    fake_free(g);
}

static void test_window_scaling_applied(void)
{
    /* RFC 7323 2.3: non-SYN windows are shifted by the peer's scale; ours by our scale */
    struct fake *f = conn_syn_sent();
    drain(f);
    struct wire_tcp sa = tmpl(S | A, PISS, ISS + 1, 1000);
    sa.has_wscale = 1; sa.wscale = 4;
    in(f, 1 * MS, sa);
    CHECK_EQ(f->c.snd_wnd, 1000);                    /* SYN-ACK window unscaled */
    in(f, 2 * MS, tmpl(A, PISS + 1, ISS + 1, 1000));
    CHECK_EQ(f->c.snd_wnd, 16000);
    f->c.quickacks = 1;
    in(f, 3 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 1000), 0, 808));
    out(f, 3 * MS);
    while (pending(f) > 1) next_seg(f);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.win, (262144 - 808) >> 3);
    fake_free(f);
}

static void test_send_before_established(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    CHECK_EQ(tcp_send(&f->env, &f->c, 1 * MS, payload, 100), 100);   /* queued (RFC 9293 3.10.2) */
    out(f, 1 * MS);
    CHECK_EQ(pending(f), 0);
    in(f, 5 * MS, tmpl(S | A, PISS, ISS + 1, 65535));
    out(f, 5 * MS);
    CHECK_EQ(pending(f), 1);                         /* the ACK rides on the data */
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.ack, PISS + 1);
    CHECK_EQ(t.payload_len, 100);
    CHECK_EQ(t.flags, A | P);
    fake_free(f);
}

static void test_shutdown_before_established(void)
{
    struct fake *f = conn_syn_sent();
    drain(f);
    CHECK_EQ(tcp_shutdown(&f->env, &f->c, 1 * MS), 0);
    CHECK_EQ(f->c.state, TCP_ST_SYN_SENT);          /* FIN waits for ESTABLISHED (3.10.4) */
    in(f, 5 * MS, tmpl(S | A, PISS, ISS + 1, 65535));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_1);
    CHECK_EQ(next_ev(f).type, TCP_EV_CONNECTED);
    out(f, 5 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.ack, PISS + 1);
    fake_free(f);
}

static void test_time_wait_syn_and_rst(void)
{
    struct fake *f = conn_time_wait();
    in(f, 1 * SEC, tmpl(S, PISS + 100000, 0, 1000));   /* new SYN: challenge ACK (RFC 5961 4.2) */
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    out(f, 1 * SEC);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A);
    CHECK_EQ(t.ack, PISS + 2);
    in(f, 2 * SEC, tmpl(R, PISS + 2, 0, 0));          /* exact RST: CLOSED, no event */
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(n_events(f), 0);
    fake_free(f);
}

static void test_rst_in_last_ack(void)
{
    struct fake *f = conn_close_wait();
    tcp_shutdown(&f->env, &f->c, 30 * MS);
    out(f, 30 * MS);
    drain(f);
    in(f, 40 * MS, tmpl(R, PISS + 2, 0, 0));
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    struct event e = next_ev(f);
    CHECK_EQ(e.type, TCP_EV_ERROR);
    CHECK_EQ(e.err, ECONNRESET);
    fake_free(f);
}

static void test_fin_wait_2_orphan_timeout(void)
{
    struct fake *f = conn_fin_wait_2();
    f->cfg.fin_timeout_us = 10 * SEC;                /* Linux tcp_fin_timeout; MSL stays 30 s */
    CHECK_EQ(f->timer, 0);                           /* shut down, not closed: waits for the peer */
    CHECK_EQ(tcp_close(&f->env, &f->c, 50 * MS), 0);
    CHECK_EQ(f->timer, 50 * MS + 10 * SEC);          /* orphaned: gives up after fin_timeout, not 2 MSL */
    tcp_timer(&f->env, &f->c, 50 * MS + 10 * SEC - 1);
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    tcp_timer(&f->env, &f->c, 50 * MS + 10 * SEC);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    fake_free(f);

    /* closed in FIN-WAIT-1, then the FIN is ACKed: the orphan timer starts on entering FIN-WAIT-2 */
    f = conn_established();
    f->cfg.fin_timeout_us = 5 * SEC;
    CHECK_EQ(tcp_close(&f->env, &f->c, 20 * MS), 0);
    out(f, 20 * MS);
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_1);
    in(f, 30 * MS, tmpl(A, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    CHECK_EQ(f->c.t_timewait, 30 * MS + 5 * SEC);
    /* the peer's FIN in time: TIME-WAIT for 2 MSL as usual */
    in(f, 1 * SEC, tmpl(A | F, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    CHECK_EQ(f->c.t_timewait, 1 * SEC + 60 * SEC);
    fake_free(f);

    /* 0 keeps the old rule (2 MSL) */
    f = conn_fin_wait_2();
    f->cfg.fin_timeout_us = 0;
    CHECK_EQ(tcp_close(&f->env, &f->c, 50 * MS), 0);
    CHECK_EQ(f->timer, 50 * MS + 60 * SEC);
    fake_free(f);
}

static void test_closed_answers_rst(void)
{
    /* RFC 9293 3.10.7.1: a CLOSED block answers with a reset */
    struct fake *f = fake_new();
    in(f, 1 * MS, with_data(tmpl(A, 777, 4242, 100), 0, 10));
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, R);
    CHECK_EQ(t.seq, 4242);
    in(f, 1 * MS, tmpl(R, 777, 0, 0));               /* never answer a RST */
    CHECK_EQ(pending(f), 0);
    fake_free(f);
}

static void test_info(void)
{
    struct fake *f = conn_established_cfg(1, 1, 1);
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 20 * MS, payload, 3000);
    out(f, 20 * MS);
    in(f, 21 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 10));
    struct tcp_conn_stats ci;
    memset(&ci, 0, sizeof ci);
    tcp_info(&f->c, &ci);
    CHECK_EQ(ci.state, TCP_ST_ESTABLISHED);
    CHECK_EQ(ci.mss, 1460 - 12);
    CHECK_EQ(ci.unacked, 3000);
    CHECK_EQ(ci.sndbuf_used, 3000);
    CHECK_EQ(ci.rcvbuf_used, 10);
    CHECK_EQ(ci.bytes_sent, 3000);
    CHECK_EQ(ci.bytes_received, 10);
    CHECK_EQ(ci.snd_wnd, 65535);
    CHECK_EQ(ci.cwnd, 10 * 1448);
    CHECK_EQ(ci.flags, 1 | 2 | 4 | 8);
    int64_t v = -1;
    CHECK_EQ(tcp_getopt(&f->c, TCP_OPT_NODELAY, &v), 0);
    CHECK_EQ(v, 1);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, 999, 1), -ENOPROTOOPT);
    CHECK_EQ(tcp_setopt(&f->env, &f->c, TCP_OPT_KEEPCNT, 0), -EINVAL);
    fake_free(f);
}

static void test_rto_with_closed_window(void)
{
    /* the peer's window closes on data already in flight: the RTO still retransmits the first
     * segment (it doubles as a window probe) and the timer keeps running */
    struct fake *f = conn_established();
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, 100 * MS, payload, 100);
    out(f, 100 * MS);
    drain(f);
    in(f, 110 * MS, tmpl(A, PISS + 1, ISS + 1, 0));
    CHECK_EQ(f->c.snd_wnd, 0);
    CHECK_EQ(f->c.t_rexmit, 300 * MS);
    tcp_timer(&f->env, &f->c, 300 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(t.payload_len, 100);
    CHECK_EQ(f->timer, 300 * MS + 400 * MS);
    tcp_timer(&f->env, &f->c, 700 * MS);
    CHECK_EQ(next_seg(f).seq, ISS + 1);
    CHECK(f->timer > 700 * MS);
    fake_free(f);
}

static void test_timewait_reuse(void)
{
    /* no timestamps: a SYN above RCV.NXT may reuse the 4-tuple (RFC 1122 4.2.2.13) */
    struct fake *f = conn_time_wait();
    struct wire_tcp syn = tmpl(S, PISS + 1, 0, 1000);          /* not newer: RCV.NXT = PISS+2 */
    CHECK_EQ(tcp_timewait_reuse(&f->env, &f->c, 1 * SEC, &syn), 0);
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    syn.seq = PISS + 100000;
    CHECK_EQ(tcp_timewait_reuse(&f->env, &f->c, 1 * SEC, &syn), 1);
    CHECK_EQ(f->c.state, TCP_ST_CLOSED);
    CHECK_EQ(f->closed, 1);
    CHECK_EQ(f->timer, 0);
    CHECK_EQ(n_events(f), 0);
    fake_free(f);
    /* with timestamps: decided by TSval (RFC 6191), whatever the sequence number */
    f = conn_established_cfg(1, 1, 1);
    tcp_shutdown(&f->env, &f->c, 20 * MS);
    out(f, 20 * MS);
    struct wire_tcp fa = tmpl(A | F, PISS + 1, ISS + 2, 65535);
    fa.has_ts = 1; fa.tsval = 900; fa.tsecr = 20;
    in(f, 30 * MS, fa);
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    struct wire_tcp s2 = tmpl(S, PISS - 5000, 0, 1000);
    s2.has_ts = 1; s2.tsval = 900;
    CHECK_EQ(tcp_timewait_reuse(&f->env, &f->c, 1 * SEC, &s2), 0);
    s2.tsval = 901;
    CHECK_EQ(tcp_timewait_reuse(&f->env, &f->c, 1 * SEC, &s2), 1);
    CHECK_EQ(f->closed, 1);
    fake_free(f);
    /* only in TIME-WAIT, only for a bare SYN */
    f = conn_established();
    syn = tmpl(S, PISS + 100000, 0, 1000);
    CHECK_EQ(tcp_timewait_reuse(&f->env, &f->c, 1 * SEC, &syn), 0);
    CHECK_EQ(f->c.state, TCP_ST_ESTABLISHED);
    fake_free(f);
}

static void test_dsack(void)
{
    /* RFC 2883: duplicate data is reported in a D-SACK block, first, once */
    struct fake *f = conn_established();
    in(f, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1000));
    out(f, 20 * MS);
    drain(f);
    in(f, 30 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 1000));   /* all duplicate */
    out(f, 30 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1001);
    CHECK_EQ(t.nsack, 1);
    CHECK_EQ(t.sack[0].left, PISS + 1);
    CHECK_EQ(t.sack[0].right, PISS + 1001);
    /* partial duplicate + out-of-order data held: D-SACK first, then the SACK block */
    in(f, 40 * MS, with_data(tmpl(A, PISS + 3001, ISS + 1, 65535), 0, 500));
    out(f, 40 * MS);
    drain(f);
    in(f, 50 * MS, with_data(tmpl(A, PISS + 501, ISS + 1, 65535), 0, 1000));  /* 500 old, 500 new */
    out(f, 50 * MS);
    t = next_seg(f);
    CHECK_EQ(t.ack, PISS + 1501);
    CHECK_EQ(t.nsack, 2);
    CHECK_EQ(t.sack[0].left, PISS + 501);
    CHECK_EQ(t.sack[0].right, PISS + 1001);
    CHECK_EQ(t.sack[1].left, PISS + 3001);
    CHECK_EQ(t.sack[1].right, PISS + 3501);
    /* reported once */
    in(f, 60 * MS, tmpl(A, PISS + 1501, ISS + 1, 65535));
    f->c.flags |= TCPF_ACK_NOW;
    out(f, 60 * MS);
    t = next_seg(f);
    CHECK_EQ(t.nsack, 1);
    CHECK_EQ(t.sack[0].left, PISS + 3001);
    /* without SACK: never */
    struct fake *g = conn_established_nosack();
    in(g, 20 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 100));
    in(g, 30 * MS, with_data(tmpl(A, PISS + 1, ISS + 1, 65535), 0, 100));
    out(g, 30 * MS);
    while (pending(g)) CHECK_EQ(next_seg(g).nsack, 0);
    fake_free(f);
    fake_free(g);
}

int main(void)
{
    RUN(test_zero_window_persist);
    RUN(test_zero_window_probe_answered);
    RUN(test_paws);
    RUN(test_delayed_ack);
    RUN(test_quickack_at_start);
    RUN(test_nagle);
    RUN(test_keepalive);
    RUN(test_keepalive_default);
    RUN(test_pmtu);
    RUN(test_tx_full_retry);
    RUN(test_probe_ack_accepted);
    RUN(test_old_ack_challenge);
    RUN(test_cookie_open);
    RUN(test_limited_transmit);
    RUN(test_persist_gives_up_on_silent_peer);
    RUN(test_window_scaling_applied);
    RUN(test_send_before_established);
    RUN(test_shutdown_before_established);
    RUN(test_time_wait_syn_and_rst);
    RUN(test_rst_in_last_ack);
    RUN(test_fin_wait_2_orphan_timeout);
    RUN(test_closed_answers_rst);
    RUN(test_info);
    RUN(test_rto_with_closed_window);
    RUN(test_timewait_reuse);
    RUN(test_dsack);
    CTEST_END();
}
