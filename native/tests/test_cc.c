/* test_cc.c — Reno (RFC 5681) and CUBIC (RFC 9438). Expected values are computed here
 * from the RFC formulas (in double precision) and compared with the integer implementation. */
#include "ctest.h"
#include "tcp/cc.h"
#include <math.h>

#define MSS 1000u

/* One round trip of ACKs: the window at the start of the round is acked in pieces of per_ack
 * bytes spread evenly over rtt_us, the sender staying cwnd-limited. Returns the new time. */
static uint64_t round_trip(struct cc_state *s, uint64_t now, uint32_t rtt_us, uint32_t per_ack)
{
    uint32_t w = s->cwnd;
    uint32_t n = (w + per_ack - 1) / per_ack;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t a = i + 1 < n ? per_ack : w - (n - 1) * per_ack;
        tcp_cc_on_ack(s, now + (uint64_t)rtt_us * (i + 1) / n, a, rtt_us, s->cwnd);
    }
    return now + rtt_us;
}

static void test_init(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_CUBIC, 1460, 10);
    CHECK_EQ(s.algo, TCP_CC_CUBIC);
    CHECK_EQ(s.cwnd, 14600);            /* RFC 6928 IW10 */
    CHECK(s.ssthresh >= 0x7fffffffu);
    CHECK_EQ(s.epoch_start_us, 0);
    tcp_cc_init(&s, TCP_CC_RENO, 536, 4);
    CHECK_EQ(s.algo, TCP_CC_RENO);
    CHECK_EQ(s.cwnd, 2144);
    CHECK(strcmp(tcp_cc_name(TCP_CC_CUBIC), "cubic") == 0);
    CHECK(strcmp(tcp_cc_name(TCP_CC_RENO), "reno") == 0);
}

static void test_slow_start(void)
{
    for (int algo = 0; algo < 2; algo++) {
        struct cc_state s;
        tcp_cc_init(&s, algo, MSS, 10);
        uint64_t now = 1000000;
        uint32_t want = 10 * MSS;
        for (int r = 0; r < 8; r++) {           /* doubles per RTT, delayed ACKs (2 MSS each) */
            now = round_trip(&s, now, 50000, 2 * MSS);
            want *= 2;
            CHECK_EQ(s.cwnd, want);
        }
        tcp_cc_init(&s, algo, MSS, 10);
        for (int r = 0; r < 5; r++)             /* and with an ACK per segment */
            now = round_trip(&s, now, 50000, MSS);
        CHECK_EQ(s.cwnd, 320 * MSS);
        /* appropriate byte counting: a stretch ACK for 10 segments grows cwnd by 2 MSS only */
        tcp_cc_init(&s, algo, MSS, 10);
        tcp_cc_on_ack(&s, now, 10 * MSS, 50000, s.cwnd);
        CHECK_EQ(s.cwnd, 12 * MSS);
        /* not cwnd-limited (application-limited sender): no growth */
        tcp_cc_on_ack(&s, now, 2 * MSS, 50000, 3 * MSS);
        CHECK_EQ(s.cwnd, 12 * MSS);
        /* an ACK for nothing changes nothing */
        tcp_cc_on_ack(&s, now, 0, 50000, s.cwnd);
        CHECK_EQ(s.cwnd, 12 * MSS);
    }
}

static void test_reno_avoidance(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_RENO, MSS, 10);
    s.cwnd = 100 * MSS;
    tcp_cc_on_congestion(&s, 0, 100 * MSS);        /* ssthresh = flight/2 */
    CHECK_EQ(s.ssthresh, 50 * MSS);
    CHECK_EQ(s.cwnd, 50 * MSS);
    tcp_cc_on_recovery_exit(&s, 0);
    CHECK_EQ(s.cwnd, 50 * MSS);
    uint64_t now = 0;
    for (uint32_t r = 1; r <= 30; r++) {        /* ~1 MSS per RTT, both ACK patterns */
        now = round_trip(&s, now, 20000, (r & 1) ? MSS : 2 * MSS);
        CHECK_EQ(s.cwnd, (50 + r) * MSS);
    }
    /* slow start stops at ssthresh and hands the rest to congestion avoidance */
    tcp_cc_init(&s, TCP_CC_RENO, MSS, 10);
    s.ssthresh = 11 * MSS;
    s.cwnd = 10 * MSS + MSS / 2;
    tcp_cc_on_ack(&s, now, 2 * MSS, 1000, s.cwnd);
    CHECK_EQ(s.cwnd, 11 * MSS);
    CHECK_EQ(s.bytes_acked, MSS + MSS / 2);
}

static void test_reno_loss(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_RENO, MSS, 10);
    s.cwnd = 64 * MSS;
    tcp_cc_on_congestion(&s, 0, 40 * MSS);           /* flight, not cwnd, sets ssthresh */
    CHECK_EQ(s.ssthresh, 20 * MSS);
    CHECK_EQ(s.cwnd, 20 * MSS);
    tcp_cc_on_congestion(&s, 0, 3 * MSS);            /* floor 2*SMSS */
    CHECK_EQ(s.ssthresh, 2 * MSS);
    s.cwnd = 64 * MSS;
    tcp_cc_on_rto(&s, 0, 64 * MSS);                  /* RTO: 1 MSS, ssthresh = flight/2 */
    CHECK_EQ(s.cwnd, MSS);
    CHECK_EQ(s.ssthresh, 32 * MSS);
    /* after the RTO: slow start again up to ssthresh, then linear */
    uint64_t now = 0;
    int rounds = 0;
    while (s.cwnd < s.ssthresh && rounds < 20) {
        now = round_trip(&s, now, 10000, MSS);
        rounds++;
    }
    CHECK_EQ(rounds, 5);                         /* 1,2,4,8,16 -> 32 */
    CHECK_EQ(s.cwnd, 32 * MSS);
    now = round_trip(&s, now, 10000, MSS);
    CHECK_EQ(s.cwnd, 33 * MSS);
}

static void test_cubic_loss(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_CUBIC, MSS, 10);
    s.cwnd = 100 * MSS;
    tcp_cc_on_congestion(&s, 5000000, 100 * MSS);    /* beta = 0.7 */
    CHECK_EQ(s.ssthresh, 70 * MSS);
    CHECK_EQ(s.cwnd, 70 * MSS);
    CHECK_EQ(s.w_max, 100 * MSS);
    CHECK_EQ(s.epoch_start_us, 0);
    /* a second loss below the previous W_max: fast convergence, W_max = cwnd (1+beta)/2 */
    s.cwnd = 80 * MSS;
    tcp_cc_on_congestion(&s, 6000000, 80 * MSS);
    CHECK_EQ(s.w_max, 68 * MSS);
    CHECK_EQ(s.ssthresh, 56 * MSS);
    CHECK_EQ(s.cwnd, 56 * MSS);
    /* floor of 2 MSS */
    tcp_cc_on_congestion(&s, 6000000, 2 * MSS);
    CHECK_EQ(s.ssthresh, 2 * MSS);
    /* RTO: 1 MSS; ssthresh by beta_cubic (RFC 9438 4.8); epoch reset */
    s.cwnd = 100 * MSS;
    tcp_cc_on_ack(&s, 7000000, MSS, 10000, s.cwnd);  /* starts an epoch */
    CHECK(s.epoch_start_us != 0);
    tcp_cc_on_rto(&s, 7100000, 100 * MSS);
    CHECK_EQ(s.cwnd, MSS);
    CHECK_EQ(s.ssthresh, 70 * MSS);
    CHECK_EQ(s.epoch_start_us, 0);
    /* the first avoidance stage after an RTO has K = 0 and W_max = cwnd at its start */
    uint64_t now = 8000000;
    while (s.cwnd < s.ssthresh)
        now = round_trip(&s, now, 10000, MSS);
    CHECK_EQ(s.cwnd, 70 * MSS);
    tcp_cc_on_ack(&s, now, MSS, 10000, s.cwnd);
    CHECK_EQ(s.k_ms, 0);
    CHECK_EQ(s.w_max, 70 * MSS);
    CHECK(s.cwnd >= 70 * MSS);
    /* recovery exit */
    s.cwnd = 10 * MSS;
    s.ssthresh = 40 * MSS;
    tcp_cc_on_recovery_exit(&s, now);
    CHECK_EQ(s.cwnd, 40 * MSS);
}

/* RFC 9438 eq. 1/2 in segments and seconds */
static double w_cubic(double t, double k, double wmax) { return 0.4 * (t - k) * (t - k) * (t - k) + wmax; }

/* After a loss at W_max the window follows W_cubic(t): concave up to K, flat at W_max,
 * convex after. The RTT is long enough that the Reno-friendly estimate stays below. */
static void cubic_curve(uint32_t mss, uint32_t wmax_seg)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_CUBIC, mss, 10);
    s.cwnd = wmax_seg * mss;
    tcp_cc_on_congestion(&s, 1000000, s.cwnd);
    const double wmax = wmax_seg, cwnd0 = 0.7 * wmax_seg;
    CHECK_EQ(s.cwnd, (uint32_t)(0.7 * wmax_seg * mss));
    const double K = cbrt((wmax - cwnd0) / 0.4);          /* eq. 2 */
    const uint32_t rtt = 200000;
    uint64_t t0 = 2000000, now = t0;
    double prev = 0, g[64];
    int ng = 0, fails = 0;
    double maxerr = 0;
    for (int r = 0; r < 200; r++) {
        double t = (double)(now - t0) / 1e6;
        double got = (double)s.cwnd / mss, want = w_cubic(t, K, wmax);
        if (r == 1) {
            CHECK(fabs(s.k_ms / 1000.0 - K) < 0.002);         /* K as the RFC gives it */
            if (fabs(s.k_ms / 1000.0 - K) >= 0.002)
                fprintf(stderr, "  K %u ms, formula %.4f s\n", s.k_ms, K);
        }
        if (t >= 0.6 && fabs(got - want) / want > maxerr)
            maxerr = fabs(got - want) / want;
        if (t >= 0.6 && fabs(got - want) > 0.02 * want + 1) {
            if (fails++ < 5)
                fprintf(stderr, "  mss %u wmax %u: t=%.2f cwnd=%.2f seg, W_cubic=%.2f seg\n", mss,
                        wmax_seg, t, got, want);
            CHECK(!"cwnd off the cubic curve");
        }
        /* growth per second, sampled every 5 rounds (1 s) */
        if (r % 5 == 0) {
            if (r)
                g[ng++] = got - prev;
            prev = got;
        }
        if (t > K + 4 || ng == 64)
            break;
        now = round_trip(&s, now, rtt, mss);
    }
    /* concave (slowing) before K, flat around K, convex (accelerating) after */
    int k = (int)K;                                 /* g[i] = growth over [i, i+1] s */
    CHECK(k >= 3 && k + 2 < ng);
    if (k >= 3 && k + 2 < ng) {
        CHECK(g[k - 3] > g[k - 2] && g[k - 2] > g[k - 1]);
        CHECK(g[k] < g[k + 1] && g[k + 1] < g[k + 2]);
        CHECK(g[k - 1] < 0.1 * g[0] + 1 && g[k] < 0.1 * g[0] + 1);   /* plateau near W_max */
    }
    fprintf(stderr, "    mss %u W_max %u seg: K %.3f s (impl %u ms), max |cwnd - W_cubic(t)| / W_cubic = %.2f%%\n",
            mss, wmax_seg, K, s.k_ms, 100 * maxerr);
    CHECK(s.w_est < s.cwnd);        /* this run stayed in the cubic region */
}

static void test_cubic_curve(void)
{
    cubic_curve(MSS, 100);
    cubic_curve(1448, 1000);
    cubic_curve(8960, 300);
}

/* Short RTT: Reno would grow faster than the cubic curve, so CUBIC follows W_est
 * (RFC 9438 4.3): alpha = 3(1-beta)/(1+beta) per RTT until W_est reaches cwnd_prior, then 1. */
static void test_cubic_reno_friendly(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_CUBIC, MSS, 10);
    s.cwnd = 100 * MSS;
    tcp_cc_on_congestion(&s, 1000000, s.cwnd);
    const double K = cbrt(30 / 0.4);
    const uint32_t rtt = 10000;
    uint64_t t0 = 2000000, now = t0;
    double west = 70, alpha = 3 * 0.3 / 1.7;
    for (int r = 0; r < 150; r++) {
        now = round_trip(&s, now, rtt, MSS);
        west += west >= 100 ? 1 : alpha;
        double t = (double)(now - t0) / 1e6;
        double got = (double)s.cwnd / MSS;
        if (w_cubic(t, K, 100) < west - 2 && fabs(got - west) > 2) {
            fprintf(stderr, "  round %d t=%.2f cwnd=%.2f W_est=%.2f W_cubic=%.2f\n", r, t, got, west,
                    w_cubic(t, K, 100));
            CHECK(!"cwnd does not follow W_est");
            break;
        }
    }
    CHECK((double)s.cwnd / MSS > w_cubic((double)(now - t0) / 1e6, K, 100) + 10);
}

static void test_set_mss(void)
{
    struct cc_state s;
    tcp_cc_init(&s, TCP_CC_CUBIC, 1460, 10);
    tcp_cc_set_mss(&s, 1200);
    CHECK_EQ(s.mss, 1200);
    CHECK_EQ(s.cwnd, 14600);
    tcp_cc_on_rto(&s, 0, 14600);
    CHECK_EQ(s.cwnd, 1200);
    CHECK(s.ssthresh >= 2400);
}

int main(void)
{
    RUN(test_init);
    RUN(test_slow_start);
    RUN(test_reno_avoidance);
    RUN(test_reno_loss);
    RUN(test_cubic_loss);
    RUN(test_cubic_curve);
    RUN(test_cubic_reno_friendly);
    RUN(test_set_mss);
    CTEST_END();
}
