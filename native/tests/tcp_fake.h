/* tcp_fake.h — the harness of the test_tcp*.c files: the TCP state machine against a fake tcp_env that
 * captures emitted segments
 * (parsed back with wire_tcp_parse), events, timer arming and closed() calls.
 *
 * Conventions: our ISS = 5000, the peer's ISS = 1000, our port 40000, the peer's 80.
 * Path MSS 1460. Fixtures build each RFC state by driving real segments through tcp_input
 * (conn_syn_sent, conn_established, conn_fin_wait_1, ...). One test file per group of behaviours. */
#ifndef MTCP_TESTS_TCP_FAKE_H
#define MTCP_TESTS_TCP_FAKE_H
#include "ctest.h"
#include "tcp/tcp.h"
#include <errno.h>

/* each test file uses a part of the helpers below */
#pragma GCC diagnostic ignored "-Wunused-function"

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

static void fill_flight(struct fake *f, uint64_t now, uint32_t nseg)
{
    f->c.flags |= TCPF_NODELAY;
    tcp_send(&f->env, &f->c, now, payload, nseg * 1460);
    out(f, now);
    CHECK_EQ(pending(f), (int)nseg);
    drain(f);
}

#endif
