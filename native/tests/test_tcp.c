/* test_tcp.c — the TCP state machine against a fake tcp_env that captures emitted segments
 * (parsed back with wire_tcp_parse), events, timer arming and closed() calls.
 *
 * Conventions: our ISS = 5000, the peer's ISS = 1000, our port 40000, the peer's 80.
 * Path MSS 1460. Fixtures build each RFC state by driving real segments through tcp_input
 * (conn_syn_sent, conn_established, conn_fin_wait_1, ...). Sections per behaviour below. */
#include "ctest.h"
#include "tcp/tcp.h"
#include <errno.h>

#define MAXSEG 128
#define MAXEV 64
#define LPORT 40000
#define RPORT 80
#define ISS 5000u
#define PISS 1000u
#define SEC 1000000ull
#define MS 1000ull
#define BIGTX 65600

struct event { uint32_t type; int32_t err; uint32_t len; };

struct fake {
    struct tcp_cfg cfg;
    struct buf_pool pool;
    uint64_t counters[TCP_CTR_SLOTS];
    struct buf_ooo ooo;
    int ooo_used;
    uint8_t tx[MAXSEG][2048];
    uint32_t txlen[MAXSEG];
    uint16_t txgso[MAXSEG];      /* c->tx_gso at commit (TSO super-segment cut size) */
    uint8_t *bigtx;              /* TSO tests: MAXSEG buffers of BIGTX bytes instead of tx[] */
    int ntx, rd;                 /* segments written / read by next_seg() */
    uint32_t cap;                /* TX capacity per segment (header + payload) */
    int tx_full;
    struct event ev[MAXEV];
    int nev, evrd;
    uint64_t timer;
    int timer_calls;
    int want;
    int closed;
    struct tcp_recs recs_store;  /* the fake's one RACK record set */
    int recs_used, recs_deny;
    int challenge_budget;        /* < 0: unlimited */
    struct tcp_env env;
    struct tcp_conn c;
};

static struct buf_ooo *f_ooo_get(void *ctx, struct tcp_conn *c, int alloc)
{
    struct fake *f = ctx;
    if (f->ooo_used) return &f->ooo;
    if (!alloc) return NULL;
    tcp_buf_ooo_init(&f->ooo);
    f->ooo_used = 1;
    c->ooo = 0;
    return &f->ooo;
}
static void f_ooo_put(void *ctx, struct tcp_conn *c) { struct fake *f = ctx; f->ooo_used = 0; c->ooo = 0xffff; }
static struct tcp_recs *f_rec_get(void *ctx, struct tcp_conn *c)
{
    struct fake *f = ctx;
    (void)c;
    if (f->recs_used || f->recs_deny) return NULL;
    f->recs_used = 1;
    memset(&f->recs_store, 0xa5, sizeof f->recs_store);
    return &f->recs_store;
}
static void f_rec_put(void *ctx, struct tcp_conn *c, struct tcp_recs *r)
{
    struct fake *f = ctx;
    (void)c;
    CHECK(r == &f->recs_store && f->recs_used);
    f->recs_used = 0;
}
static uint8_t *f_tx_begin(void *ctx, struct tcp_conn *c, uint32_t *cap)
{
    struct fake *f = ctx;
    (void)c;
    if (f->tx_full || f->ntx >= MAXSEG) return NULL;
    if (f->bigtx) {
        memset(f->bigtx + (size_t)f->ntx * BIGTX, 0xa5, BIGTX);
        *cap = f->cap;
        return f->bigtx + (size_t)f->ntx * BIGTX;
    }
    memset(f->tx[f->ntx], 0xa5, sizeof f->tx[0]);
    *cap = f->cap;
    return f->tx[f->ntx];
}
static void f_tx_commit(void *ctx, struct tcp_conn *c, uint32_t len)
{
    struct fake *f = ctx;
    f->txgso[f->ntx] = c->tx_gso;
    f->txlen[f->ntx++] = len;
}
static void f_event(void *ctx, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len)
{
    struct fake *f = ctx;
    (void)c;
    if (f->nev < MAXEV) { f->ev[f->nev].type = type; f->ev[f->nev].err = err; f->ev[f->nev].len = len; f->nev++; }
}
static void f_timer(void *ctx, struct tcp_conn *c, uint64_t d) { struct fake *f = ctx; (void)c; f->timer = d; f->timer_calls++; }
static void f_want(void *ctx, struct tcp_conn *c) { struct fake *f = ctx; (void)c; f->want++; }
static void f_closed(void *ctx, struct tcp_conn *c) { struct fake *f = ctx; (void)c; f->closed++; }
static int f_challenge(void *ctx, uint64_t now)
{
    struct fake *f = ctx;
    (void)now;
    if (f->challenge_budget < 0) return 1;
    if (f->challenge_budget == 0) return 0;
    f->challenge_budget--;
    return 1;
}

static void cfg_default(struct tcp_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->sndbuf = 262144;
    cfg->rcvbuf = 262144;
    cfg->initial_rto_us = 1000000;
    cfg->min_rto_us = 200000;
    cfg->max_rto_us = 60000000;
    cfg->max_retries = 15;
    cfg->syn_retries = 6;
    cfg->synack_retries = 5;
    cfg->msl_us = 30000000;
    cfg->delack_us = 40000;
    cfg->initial_cwnd = 10;
    cfg->keepalive_idle_us = 7200000000ull;  /* Linux default, 7200 s */
    cfg->keepalive_intvl_us = 75000000;
    cfg->keepalive_cnt = 9;
    cfg->challenge_ack_limit = 1000;
    cfg->invalid_ratelimit_ms = 500;
    cfg->cc = TCP_CC_RENO;
    cfg->sack = 1;
    cfg->timestamps = 0;
    cfg->window_scaling = 1;
}

static struct fake *fake_new(void)
{
    struct fake *f = calloc(1, sizeof *f);
    cfg_default(&f->cfg);
    CHECK_EQ(tcp_buf_pool_init(&f->pool, 2048, 2048), 0);
    f->cap = 1460 + 60;
    f->challenge_budget = -1;
    f->env.ctx = f;
    f->env.cfg = &f->cfg;
    f->env.pool = &f->pool;
    f->env.counters = f->counters;
    f->env.ooo_get = f_ooo_get;
    f->env.ooo_put = f_ooo_put;
    f->env.rec_get = f_rec_get;
    f->env.rec_put = f_rec_put;
    f->env.tx_begin = f_tx_begin;
    f->env.tx_commit = f_tx_commit;
    f->env.event = f_event;
    f->env.timer = f_timer;
    f->env.want_output = f_want;
    f->env.closed = f_closed;
    f->env.challenge_ok = f_challenge;
    tcp_conn_init(&f->env, &f->c, TCP_AF_INET, LPORT, RPORT, 1460);
    return f;
}
static void fake_free(struct fake *f)
{
    tcp_buf_stream_clear(&f->pool, &f->c.snd);
    tcp_buf_stream_clear(&f->pool, &f->c.rcv);
    if (f->ooo_used) tcp_buf_ooo_clear(&f->pool, &f->ooo);
    CHECK_EQ(f->pool.nfree, f->pool.nchunks);      /* no chunk leaked */
    tcp_buf_pool_fini(&f->pool);
    free(f->bigtx);
    free(f);
}

/* ---- captured output ---- */
static int pending(struct fake *f) { return f->ntx - f->rd; }
/* next emitted segment, parsed (payload points into the capture) */
static struct wire_tcp next_seg(struct fake *f)
{
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    if (f->rd >= f->ntx) { CHECK(!"no segment emitted"); return t; }
    const uint8_t *b = f->bigtx ? f->bigtx + (size_t)f->rd * BIGTX : f->tx[f->rd];
    int r = wire_tcp_parse(b, f->txlen[f->rd], &t);
    CHECK(r >= 0);
    f->rd++;
    return t;
}
static void drain(struct fake *f) { f->rd = f->ntx; }
static int n_events(struct fake *f) { return f->nev - f->evrd; }
static struct event next_ev(struct fake *f)
{
    struct event e = {0, 0, 0};
    if (f->evrd >= f->nev) { CHECK(!"no event"); return e; }
    return f->ev[f->evrd++];
}
static void drain_ev(struct fake *f) { f->evrd = f->nev; }

static void out(struct fake *f, uint64_t now) { tcp_output(&f->env, &f->c, now); }

/* ---- segment templates (from the peer) ---- */
static struct wire_tcp tmpl(uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win)
{
    struct wire_tcp t;
    memset(&t, 0, sizeof t);
    t.sport = RPORT;
    t.dport = LPORT;
    t.seq = seq;
    t.ack = ack;
    t.flags = flags;
    t.win = win;
    return t;
}
static uint8_t payload[65536];
static struct wire_tcp with_data(struct wire_tcp t, uint32_t off, uint32_t len)
{
    t.payload = payload + off;
    t.payload_len = len;
    return t;
}
static void in(struct fake *f, uint64_t now, struct wire_tcp t) { tcp_input(&f->env, &f->c, now, &t); }

#define A WIRE_TCP_ACK
#define S WIRE_TCP_SYN
#define F WIRE_TCP_FIN
#define R WIRE_TCP_RST
#define P WIRE_TCP_PSH

/* ---- fixtures: one per RFC state ---- */
static struct fake *conn_syn_sent_cfg(int ts, int sack, int ws)
{
    struct fake *f = fake_new();
    f->cfg.timestamps = (uint8_t)ts;
    f->cfg.sack = (uint8_t)sack;
    f->cfg.window_scaling = (uint8_t)ws;
    tcp_open_active(&f->env, &f->c, 0, ISS);
    out(f, 0);
    return f;
}
static struct fake *conn_syn_sent(void) { return conn_syn_sent_cfg(0, 1, 1); }

/* ESTABLISHED, active side; the peer's window 65535 << 0 (peer wscale 0), our wscale 3 */
static struct fake *conn_established_cfg(int ts, int sack, int ws)
{
    struct fake *f = conn_syn_sent_cfg(ts, sack, ws);
    struct wire_tcp sa = tmpl(S | A, PISS, ISS + 1, 65535);
    sa.has_mss = 1; sa.mss = 1460;
    if (ws) { sa.has_wscale = 1; sa.wscale = 0; }
    sa.sack_perm = (uint8_t)sack;
    if (ts) { sa.has_ts = 1; sa.tsval = 777; sa.tsecr = 0; }
    in(f, 10 * MS, sa);
    out(f, 10 * MS);
    drain(f);
    drain_ev(f);
    f->c.quickacks = 0;          /* tests of delayed ACK start from steady state */
    return f;
}
static struct fake *conn_established(void) { return conn_established_cfg(0, 1, 1); }
static struct fake *conn_established_nosack(void) { return conn_established_cfg(0, 0, 1); }

static struct fake *conn_fin_wait_1(void)
{
    struct fake *f = conn_established();
    CHECK_EQ(tcp_shutdown(&f->env, &f->c, 20 * MS), 0);
    out(f, 20 * MS);
    struct wire_tcp t = next_seg(f);
    CHECK_EQ(t.flags, A | F | P);
    CHECK_EQ(t.seq, ISS + 1);
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_1);
    return f;
}
static struct fake *conn_fin_wait_2(void)
{
    struct fake *f = conn_fin_wait_1();
    in(f, 30 * MS, tmpl(A, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_FIN_WAIT_2);
    return f;
}
static struct fake *conn_close_wait(void)
{
    struct fake *f = conn_established();
    in(f, 20 * MS, tmpl(A | F, PISS + 1, ISS + 1, 65535));
    CHECK_EQ(f->c.state, TCP_ST_CLOSE_WAIT);
    out(f, 20 * MS);
    drain(f);
    drain_ev(f);
    return f;
}
static struct fake *conn_time_wait(void)
{
    struct fake *f = conn_fin_wait_2();
    in(f, 40 * MS, tmpl(A | F, PISS + 1, ISS + 2, 65535));
    CHECK_EQ(f->c.state, TCP_ST_TIME_WAIT);
    out(f, 40 * MS);
    drain(f);
    drain_ev(f);
    return f;
}

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

static void fill_flight(struct fake *f, uint64_t now, uint32_t nseg)
{
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, now, payload, nseg * 1460);
    out(f, now);
    CHECK_EQ(pending(f), (int)nseg);
    drain(f);
}

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

/* ====================================================================================== */
/* hostile input: random segments into every state, invariants checked after each step    */
/* ====================================================================================== */

static uint64_t frng;
static uint32_t frand(void) { frng ^= frng << 13; frng ^= frng >> 7; frng ^= frng << 17; return (uint32_t)(frng >> 11); }
static uint32_t near(uint32_t base, uint32_t spread) { return base + (frand() % (2 * spread + 1)) - spread; }

static int check_invariants(struct fake *f)
{
    struct tcp_conn *c = &f->c;
    int ok = 1;
    if (c->closed_done) return 1;
    if (c->state > TCP_ST_TIME_WAIT) ok = 0;
    if (c->state >= TCP_ST_ESTABLISHED) {
        if (!seq_le(c->snd_una, c->snd_nxt) || !seq_le(c->snd_nxt, c->snd_max)) ok = 0;
        if (c->snd.len > c->sndbuf) ok = 0;
        if (c->rcv.len > c->rcvbuf + (1u << c->rcv_wscale)) ok = 0;
        if (c->sb_n > TCP_SB_MAX) ok = 0;
        for (uint32_t i = 0; i < c->sb_n; i++) {
            if (!seq_lt(c->sb[i].left, c->sb[i].right)) ok = 0;
            if (seq_lt(c->sb[i].left, c->snd_una) || seq_gt(c->sb[i].right, c->snd_max)) ok = 0;
            if (i && !seq_gt(c->sb[i].left, c->sb[i - 1].right)) ok = 0;
        }
        /* data outstanding -> a timer is armed */
        if (c->snd_max != c->snd_una && !c->t_rexmit) ok = 0;
    }
    if (f->timer != tcp_next_deadline(c)) ok = 0;
    return ok;
}

static void hostile_run(struct fake *(*fixture)(void), const char *name, uint64_t seed)
{
    struct fake *f = fixture();
    frng = seed * 0x2545F4914F6CDD1Dull + 7;
    f->cfg.timestamps = 1;
    uint64_t now = 100 * MS;
    static const uint8_t flagset[] = {A, A, A, A | P, A | F, R, R | A, S, S | A, A | F | P, F, P};
    for (int step = 0; step < 600 && !f->c.closed_done; step++) {
        struct tcp_conn *c = &f->c;
        uint8_t fl = flagset[frand() % sizeof flagset];
        uint32_t seq = frand() % 4 ? near(c->rcv_nxt, 3000) : frand();
        uint32_t ack = frand() % 4 ? near(c->snd_una + (c->snd_max - c->snd_una) / 2, (c->snd_max - c->snd_una) / 2 + 100) : frand();
        uint32_t len = (fl & (R | S)) ? 0 : (frand() % 3 ? frand() % 1500 : 0);
        struct wire_tcp t = with_data(tmpl(fl, seq, ack, (uint16_t)(frand() % 3 ? 65535 : frand())), frand() % 60000, len);
        if (frand() % 2) { t.has_ts = 1; t.tsval = frand() % 4 ? near(c->ts_recent, 5) : frand(); t.tsecr = frand(); }
        if (frand() % 3 == 0) {
            t.nsack = (uint8_t)(1 + frand() % 4);
            for (int k = 0; k < t.nsack; k++) {
                uint32_t l = near(c->snd_una + 3000, 4000);
                t.sack[k].left = l;
                t.sack[k].right = l + frand() % 5000;
            }
        }
        tcp_input(&f->env, c, now, &t);
        switch (frand() % 8) {
        case 0: tcp_send(&f->env, c, now, payload, frand() % 5000); break;
        case 1: { uint8_t buf[3000]; tcp_recv(&f->env, c, now, buf, frand() % sizeof buf); break; }
        case 2: if (frand() % 20 == 0) tcp_shutdown(&f->env, c, now); break;
        default: break;
        }
        if (!c->closed_done) tcp_output(&f->env, c, now);
        now += frand() % 50000;
        if (f->timer && f->timer <= now) tcp_timer(&f->env, c, now);
        while (pending(f)) next_seg(f);          /* everything we emit parses */
        f->ntx = f->rd = 0;
        f->nev = f->evrd = 0;
        if (!check_invariants(f)) {
            fprintf(stderr, "  hostile %s seed=%llu step=%d: invariant broken (st=%d una=%u nxt=%u max=%u rexmit=%llu timer=%llu/%llu)\n",
                    name, (unsigned long long)seed, step, c->state, c->snd_una, c->snd_nxt, c->snd_max,
                    (unsigned long long)c->t_rexmit, (unsigned long long)f->timer, (unsigned long long)tcp_next_deadline(c));
            ctest_failures++;
            break;
        }
        ctest_checks++;
    }
    tcp_close(&f->env, &f->c, now);
    fake_free(f);
}

static struct fake *conn_established_ts(void) { return conn_established_cfg(1, 1, 1); }
static struct fake *conn_established_plain(void) { return conn_established_cfg(0, 0, 0); }

static void test_hostile_input(void)
{
    uint64_t seeds = getenv("HOSTILESEEDS") ? strtoull(getenv("HOSTILESEEDS"), NULL, 10) : 12;
    for (uint64_t seed = 1; seed <= seeds; seed++) {
        hostile_run(conn_established, "established", seed);
        hostile_run(conn_established_nosack, "established-nosack", seed);
        hostile_run(conn_established_ts, "established-ts", seed);
        hostile_run(conn_established_plain, "established-no-options", seed);
        hostile_run(conn_syn_sent, "syn-sent", seed);
        hostile_run(conn_fin_wait_1, "fin-wait-1", seed);
        hostile_run(conn_fin_wait_2, "fin-wait-2", seed);
        hostile_run(conn_close_wait, "close-wait", seed);
        hostile_run(conn_time_wait, "time-wait", seed);
    }
}

/* ====================================================================================== */
/* two endpoints over a seeded lossy/reordering/duplicating network: every byte arrives    */
/* intact, in order, exactly once, and both reach CLOSED with no chunk leaked              */
/* ====================================================================================== */

struct netseg { uint8_t b[1600]; uint32_t len; uint64_t at; uint64_t order; int to; };
#define NETQ 512
struct simnet {
    struct netseg q[NETQ];
    int n;
    uint64_t rng;
    uint32_t loss_pm, dup_pm, jitter_us;   /* per mille */
    uint64_t dropped, order;
};
static uint32_t rnd(struct simnet *n)
{
    n->rng ^= n->rng << 13; n->rng ^= n->rng >> 7; n->rng ^= n->rng << 17;
    return (uint32_t)(n->rng >> 11);
}
static void net_take(struct simnet *n, struct fake *from, int to, uint64_t now)
{
    for (int i = 0; i < from->ntx; i++) {
        int copies = 1;
        if (rnd(n) % 1000 < n->loss_pm) { copies = 0; n->dropped++; }
        else if (rnd(n) % 1000 < n->dup_pm) copies = 2;
        for (int k = 0; k < copies && n->n < NETQ; k++) {
            struct netseg *s = &n->q[n->n++];
            memcpy(s->b, from->tx[i], from->txlen[i]);
            s->len = from->txlen[i];
            s->at = now + 5 * MS + (n->jitter_us ? rnd(n) % n->jitter_us : 0);
            s->to = to;
            s->order = n->order++;
        }
    }
    from->ntx = from->rd = 0;
}

struct simapp {
    uint32_t total, sent, rcvd, peer_total;
    int shut, peer_closed, closed_ev, err;
    uint8_t *expect;
    int close_mode;              /* 0: shutdown when all sent; 1: tcp_close once all sent and the peer's FIN came */
    int slow_reader;             /* reads at most 700 bytes, one step in four */
    struct simnet *net;
};

static void app_step(struct fake *f, struct simapp *a, uint64_t now, const uint8_t *src)
{
    for (int i = f->evrd; i < f->nev; i++) {
        if (f->ev[i].type == TCP_EV_PEER_CLOSED) a->peer_closed = 1;
        if (f->ev[i].type == TCP_EV_CLOSED) a->closed_ev = 1;
        if (f->ev[i].type == TCP_EV_ERROR || f->ev[i].type == TCP_EV_CONNECT_FAILED) a->err = f->ev[i].err;
    }
    f->nev = f->evrd = 0;
    uint8_t buf[4096];
    int64_t r;
    if (f->c.flags & TCPF_DETACHED) return;
    int reads = a->slow_reader ? (rnd(a->net) % 4 == 0) : 1000000;
    while (reads-- > 0 && (r = tcp_recv(&f->env, &f->c, now, buf, a->slow_reader ? 700 : sizeof buf)) > 0) {
        if (a->rcvd + (uint32_t)r > a->peer_total) { CHECK(!"too many bytes"); break; }
        if (memcmp(buf, a->expect + a->rcvd, (size_t)r) != 0) CHECK(!"corrupt bytes");
        a->rcvd += (uint32_t)r;
    }
    int st = f->c.state;
    if (a->close_mode == 2 && a->rcvd && a->rcvd * 2 >= a->peer_total) {
        tcp_abort(&f->env, &f->c, now);
        return;
    }
    if (a->close_mode == 1) {
        if (st == TCP_ST_CLOSE_WAIT && a->sent == a->total && a->rcvd == a->peer_total) {
            CHECK_EQ(tcp_close(&f->env, &f->c, now), 0);
            return;
        }
        if (a->sent == a->total) a->shut = 1;          /* wait for the peer's FIN instead */
    }
    if (a->close_mode == 2 && a->peer_total) a->shut = 1;   /* aborts instead */
    if (st == TCP_ST_ESTABLISHED || st == TCP_ST_CLOSE_WAIT) {
        while (a->sent < a->total) {
            uint32_t chunk = 1 + (uint32_t)((a->sent * 2654435761u) % 3000);
            if (chunk > a->total - a->sent) chunk = a->total - a->sent;
            int64_t n = tcp_send(&f->env, &f->c, now, src + a->sent, chunk);
            if (n <= 0) break;
            a->sent += (uint32_t)n;
        }
        if (a->sent == a->total && !a->shut && (a->close_mode == 0 || (a->close_mode == 2 && !a->peer_total))) { CHECK_EQ(tcp_shutdown(&f->env, &f->c, now), 0); a->shut = 1; }
    }
}

static int sim_trace;
static int sim_close_mode_b, sim_slow;
static int run_pair(uint64_t seed, uint32_t loss_pm, uint32_t dup_pm, uint32_t jitter_us, uint32_t na, uint32_t nb,
                    uint32_t rcvbuf, int sack, int ts)
{
    static uint8_t da[300000], db[300000];
    static struct simnet net;
    memset(&net, 0, sizeof net);
    net.rng = seed * 0x9E3779B97F4A7C15ull + 1;
    net.loss_pm = loss_pm; net.dup_pm = dup_pm; net.jitter_us = jitter_us;
    for (uint32_t i = 0; i < na; i++) da[i] = (uint8_t)rnd(&net);
    for (uint32_t i = 0; i < nb; i++) db[i] = (uint8_t)rnd(&net);
    struct fake *fa = fake_new(), *fb = fake_new();
    struct fake *fx[2] = {fa, fb};
    for (int k = 0; k < 2; k++) {
        fx[k]->cfg.msl_us = 30000000;
        fx[k]->cfg.rcvbuf = rcvbuf;
        fx[k]->cfg.sack = (uint8_t)sack;
        fx[k]->cfg.timestamps = (uint8_t)ts;
        fx[k]->cfg.max_retries = 30;
        fx[k]->cfg.syn_retries = 30;
        fx[k]->cfg.max_rto_us = 2000000;
        fx[k]->c.rcvbuf = rcvbuf;
    }
    fb->c.local_port = RPORT; fb->c.remote_port = LPORT;
    struct simapp aa = {na, 0, 0, nb, 0, 0, 0, 0, db, 0, sim_slow & 1, &net};
    struct simapp ab = {nb, 0, 0, na, 0, 0, 0, 0, da, sim_close_mode_b, (sim_slow >> 1) & 1, &net};
    uint64_t now = 0;
    tcp_open_active(&fa->env, &fa->c, 0, 12345);
    int passive_started = 0;
    int steps;
    for (steps = 0; steps < 200000; steps++) {
        app_step(fa, &aa, now, da);
        if (passive_started) app_step(fb, &ab, now, db);
        tcp_output(&fa->env, &fa->c, now);
        if (passive_started) tcp_output(&fb->env, &fb->c, now);
        net_take(&net, fa, 1, now);
        net_take(&net, fb, 0, now);
        int unread = fa->c.rcv.len || fb->c.rcv.len;
        if (fa->closed && fb->closed && !unread) break;
        uint64_t next = 0;
        for (int i = 0; i < net.n; i++) next = (!next || net.q[i].at < next) ? net.q[i].at : next;
        if (fa->timer && !fa->closed) next = (!next || fa->timer < next) ? fa->timer : next;
        if (fb->timer && !fb->closed && passive_started) next = (!next || fb->timer < next) ? fb->timer : next;
        if (!next && unread) next = now + 1 * MS;     /* a slow reader still has data to take */
        if (!next) break;
        if (next > now) now = next;
        /* deliver due segments in arrival-time order */
        for (;;) {
            int best = -1;
            for (int i = 0; i < net.n; i++)
                if (net.q[i].at <= now && (best < 0 || net.q[i].at < net.q[best].at ||
                                           (net.q[i].at == net.q[best].at && net.q[i].order < net.q[best].order))) best = i;
            if (best < 0) break;
            struct netseg sg = net.q[best];
            net.q[best] = net.q[--net.n];
            struct wire_tcp t;
            if (wire_tcp_parse(sg.b, sg.len, &t) < 0) { CHECK(!"unparsable segment"); continue; }
            struct fake *dst = fx[sg.to];
            if (sim_trace)
                fprintf(stderr, "%8.3f %c->%c %c%c%c%c seq=%u ack=%u win=%u len=%u sack=%u ts=%u/%u | st=%d una=%u nxt=%u max=%u rcv_nxt=%u cwnd=%u rto=%u\n",
                        now / 1e6, sg.to ? 'a' : 'b', sg.to ? 'b' : 'a', t.flags & S ? 'S' : '.', t.flags & A ? 'A' : '.',
                        t.flags & F ? 'F' : '.', t.flags & R ? 'R' : '.', t.seq, t.ack, t.win, t.payload_len, t.nsack,
                        t.tsval, t.tsecr, dst->c.state, dst->c.snd_una, dst->c.snd_nxt, dst->c.snd_max, dst->c.rcv_nxt,
                        dst->c.cc.cwnd, dst->c.rto_us);
            if (sg.to == 1 && !passive_started) {
                if (t.flags != S) continue;             /* listener: only a SYN opens */
                tcp_open_passive(&fb->env, &fb->c, now, 777777, &t);
                passive_started = 1;
                continue;
            }
            if (dst->closed) {
                /* like the engine: a segment for no connection is answered by a RST (3.10.7.1) */
                struct wire_tcp rst;
                if (tcp_rst_for(&t, &rst) && net.n < NETQ) {
                    struct netseg *r = &net.q[net.n++];
                    r->len = (uint32_t)wire_tcp_emit(r->b, sizeof r->b, &rst);
                    r->at = now + 5 * MS;
                    r->to = !sg.to;
                    r->order = net.order++;
                }
                continue;
            }
            tcp_input(&dst->env, &dst->c, now, &t);
        }
        if (fa->timer && fa->timer <= now && !fa->closed) tcp_timer(&fa->env, &fa->c, now);
        if (fb->timer && fb->timer <= now && !fb->closed && passive_started) tcp_timer(&fb->env, &fb->c, now);
    }
    int ok = 1;
#define SIMCHECK(x) do { if (!(x)) { ok = 0; fprintf(stderr, "  sim seed=%llu loss=%u dup=%u jit=%u na=%u nb=%u rcvbuf=%u sack=%d ts=%d mode=%d slow=%d: %s (a: st=%d rcvd=%u sent=%u err=%d; b: st=%d rcvd=%u sent=%u err=%d; steps=%d now=%llu)\n", \
    (unsigned long long)seed, loss_pm, dup_pm, jitter_us, na, nb, rcvbuf, sack, ts, sim_close_mode_b, sim_slow, #x, fa->c.state, aa.rcvd, aa.sent, aa.err, fb->c.state, ab.rcvd, ab.sent, ab.err, steps, (unsigned long long)now); } } while (0)
    if (sim_trace) fprintf(stderr, "a: retrans=%llu timeouts=%llu fast=%llu persist=%llu; b: retrans=%llu timeouts=%llu fast=%llu persist=%llu; now=%llu\n",
        (unsigned long long)fa->counters[TCP_CTR_RETRANS_SEGS], (unsigned long long)fa->counters[TCP_CTR_TIMEOUTS],
        (unsigned long long)fa->counters[TCP_CTR_FAST_RETRANS], (unsigned long long)fa->counters[TCP_CTR_PERSIST_PROBES],
        (unsigned long long)fb->counters[TCP_CTR_RETRANS_SEGS], (unsigned long long)fb->counters[TCP_CTR_TIMEOUTS],
        (unsigned long long)fb->counters[TCP_CTR_FAST_RETRANS], (unsigned long long)fb->counters[TCP_CTR_PERSIST_PROBES],
        (unsigned long long)now);
    if (sim_close_mode_b == 2 && na) {
        /* b aborted half way: a is reset — or, if the RST was lost after a had nothing left
         * to send, a waits in FIN-WAIT-2 (as a non-orphaned Linux socket would) */
        SIMCHECK(fb->closed == 1);
        SIMCHECK((aa.err == ECONNRESET && fa->closed == 1) || fa->c.state == TCP_ST_FIN_WAIT_2);
    } else {
    SIMCHECK(fa->closed == 1 && fb->closed == 1);
    SIMCHECK(aa.rcvd == nb);
    SIMCHECK(ab.rcvd == na);
    SIMCHECK(aa.err == 0 && ab.err == 0);
    SIMCHECK(aa.peer_closed && ab.peer_closed);
    if (loss_pm == 0 && dup_pm == 0 && jitter_us == 0) {
        /* a clean network: no retransmission of any kind */
        SIMCHECK(fa->counters[TCP_CTR_RETRANS_SEGS] + fb->counters[TCP_CTR_RETRANS_SEGS] == 0);
        SIMCHECK(fa->counters[TCP_CTR_TIMEOUTS] + fb->counters[TCP_CTR_TIMEOUTS] == 0);
    }
    }
    tcp_close(&fa->env, &fa->c, now);
    tcp_close(&fb->env, &fb->c, now);
    fake_free(fa);
    fake_free(fb);
    ctest_checks++;
    if (!ok) ctest_failures++;
    return ok;
}

static void test_sim_pair_grid(void)
{
    if (getenv("SIMONE")) {
        unsigned long long sd; unsigned l, d, j, na, nb, rb; int sk, ts;
        sim_trace = 1;
        if (getenv("SIMMODE")) sscanf(getenv("SIMMODE"), "%d %d", &sim_close_mode_b, &sim_slow);
        if (sscanf(getenv("SIMONE"), "%llu %u %u %u %u %u %u %d %d", &sd, &l, &d, &j, &na, &nb, &rb, &sk, &ts) == 9)
            run_pair(sd, l, d, j, na, nb, rb, sk, ts);
        return;
    }
    static const uint32_t loss[] = {0, 10, 50, 150};
    static const uint32_t sizes[][2] = {{0, 0}, {1, 0}, {5000, 100}, {100000, 30000}, {250000, 250000}};
    static const uint32_t bufs[] = {262144, 8192, 3000};
    int fails = 0;
    uint64_t seeds = getenv("SIMSEEDS") ? strtoull(getenv("SIMSEEDS"), NULL, 10) : 8;   /* longer soak */
    for (uint64_t seed = 1; seed <= seeds; seed++)
        for (unsigned l = 0; l < sizeof loss / sizeof loss[0]; l++)
            for (unsigned z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
                for (unsigned b = 0; b < sizeof bufs / sizeof bufs[0]; b++) {
                    int sack = (int)((seed + z) & 1), ts = (int)((seed + b) & 1) ;
                    sim_close_mode_b = (int)((seed + l) % 3);
                    sim_slow = (int)((seed + l + z) % 4);
                    if (!run_pair(seed, loss[l], l ? (seed % 3 ? 20 : 100) : 0, l ? (seed % 2 ? 8000 : 40000) : 0, sizes[z][0], sizes[z][1], bufs[b], sack, ts))
                        if (++fails > 10) return;
                }
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
    RUN(test_hostile_input);
    RUN(test_sim_pair_grid);
    CTEST_END();
}
