/* test_tcp_random.c — TCP under random input: hostile segments into every state with invariants checked
 * after each step, and two endpoints over a seeded lossy/reordering/duplicating network.
 * Harness and fixtures: tcp_fake.h. */
#include "tcp_fake.h"

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
    RUN(test_hostile_input);
    RUN(test_sim_pair_grid);
    CTEST_END();
}
