/*
 * cc.c — congestion control: Reno (RFC 5681) and CUBIC (RFC 9438). Pure: time passed in.
 * Windows are bytes; integer arithmetic only (no floating point on the per-ACK path).
 *
 * Shared by both:
 *   - slow start (cwnd < ssthresh) with appropriate byte counting (RFC 3465, L = 2*SMSS):
 *     cwnd += min(acked, 2*SMSS), never past ssthresh in one step; the rest of that ACK
 *     goes to congestion avoidance.
 *   - cwnd only grows while the sender is cwnd-limited (RFC 7661 spirit, Linux
 *     tcp_is_cwnd_limited): bytes in flight before the ACK >= cwnd/2 (inflight 0 = unknown,
 *     treated as limited), so an application-limited or rwnd-limited flow does not inflate cwnd.
 *   - on RTO: cwnd = 1 SMSS (loss window), ssthresh = max(flight * beta, 2*SMSS) with beta = 1/2
 *     (Reno, RFC 5681 eq. 4) or 0.7 (CUBIC, RFC 9438 4.8).
 *   - tcp_cc_on_congestion (fast retransmit / start of recovery): ssthresh = max(flight * beta,
 *     2*SMSS), cwnd = ssthresh (RFC 6675 style: TCP sends by pipe during recovery; a NewReno
 *     implementation that wants RFC 6582's +3*SMSS inflation adds it itself).
 *   - tcp_cc_on_recovery_exit: cwnd = ssthresh.
 *
 * Reno congestion avoidance (RFC 5681 3.1, byte counting): bytes_acked accumulates; each time
 * it reaches cwnd, cwnd += SMSS (about 1 SMSS per RTT).
 *
 * CUBIC (RFC 9438), C = 0.4 segments/s^3, beta = 0.7, fast convergence on:
 *   W_cubic(t) = C*(t-K)^3 + W_max, K = cbrt((W_max - cwnd_epoch)/C)      (eq. 1, 2)
 *   at the first ACK of a congestion-avoidance stage the epoch starts (t = 0, cwnd_epoch = cwnd,
 *   W_est = cwnd); if cwnd_epoch >= W_max then K = 0 and the origin is cwnd_epoch.
 *   per ACK: target = W_cubic(t + RTT) clamped to [cwnd, 1.5*cwnd]; cwnd += (target - cwnd) *
 *   acked / cwnd (4.2); W_est += alpha * acked / cwnd with alpha = 3(1-beta)/(1+beta) = 9/17,
 *   1 once W_est >= cwnd_prior (4.3); if W_cubic(t) < W_est then cwnd = W_est (Reno-friendly).
 *   on congestion: W_max = cwnd, or cwnd*(1+beta)/2 if cwnd < previous W_max (fast convergence,
 *   4.7); cwnd_prior = cwnd; epoch reset. After an RTO the next stage uses K = 0 and W_max = cwnd
 *   at the start of that stage (4.8).
 * Time is kept in ms inside the curve (RTT is the minimum RTT sample seen); field use:
 *   w_max = W_max, w_last_max = cwnd_prior, origin = W_cubic's plateau (W_max or cwnd_epoch),
 *   k_ms = K, cwnd_cnt = W_est's byte accumulator, bytes_acked = remainder of the cwnd increase.
 */
#include "cc.h"

#define CC_INF 0x7fffffffu        /* "arbitrarily high" initial ssthresh; also the cwnd cap */
#define CUBIC_BETA_NUM 7          /* beta_cubic = 7/10 */
#define CUBIC_BETA_DEN 10
#define CUBIC_ALPHA_NUM 9         /* 3(1-beta)/(1+beta) = 0.9/1.7 = 9/17 */
#define CUBIC_ALPHA_DEN 17
#define CUBIC_D_MAX (1u << 21)    /* |t - K| cap in ms (~35 min): keeps d^3 within 2^63 */

static inline uint32_t max32(uint32_t a, uint32_t b) { return a > b ? a : b; }
static inline uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

const char *tcp_cc_name(int algo)
{
    switch (algo) {
    case TCP_CC_CUBIC: return "cubic";
    case TCP_CC_RENO: return "reno";
    default: return "unknown";
    }
}

void tcp_cc_init(struct cc_state *s, int algo, uint32_t mss, uint32_t initial_cwnd_segments)
{
    if (mss == 0)
        mss = 536;
    if (initial_cwnd_segments == 0)
        initial_cwnd_segments = 1;
    s->algo = (uint8_t)(algo == TCP_CC_RENO ? TCP_CC_RENO : TCP_CC_CUBIC);
    s->mss = mss;
    uint64_t w = (uint64_t)initial_cwnd_segments * mss;
    s->cwnd = w > CC_INF ? CC_INF : (uint32_t)w;
    s->ssthresh = CC_INF;
    s->bytes_acked = 0;
    s->epoch_start_us = 0;
    s->w_max = 0;
    s->w_last_max = 0;
    s->k_ms = 0;
    s->w_est = 0;
    s->origin = 0;
    s->min_rtt_us = 0;
    s->cwnd_cnt = 0;
}

void tcp_cc_set_mss(struct cc_state *s, uint32_t mss)
{
    if (mss == 0)
        return;
    s->mss = mss;
    if (s->cwnd < mss)
        s->cwnd = mss;
    if (s->ssthresh < 2 * mss)
        s->ssthresh = 2 * mss;
}

/* Largest y with y^3 <= x. */
static uint32_t icbrt64(uint64_t x)
{
    uint32_t lo = 0, hi = 2642246;     /* 2642245^3 < 2^64 <= 2642246^3 */
    while (lo + 1 < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((uint64_t)mid * mid * mid <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* C * d^3 segments in bytes, d in ms: 0.4 * (d/1000)^3 * mss = 4 * d^3 * mss / 1e10. */
static uint64_t cubic_delta(uint32_t d_ms, uint32_t mss)
{
    if (d_ms > CUBIC_D_MAX)
        d_ms = CUBIC_D_MAX;
    uint64_t d3 = (uint64_t)d_ms * d_ms * d_ms;            /* <= 2^63 */
    /* split to stay within 64 bits: (d3 / 1e6) * 4 * mss / 1e4 + the remainder's share */
    uint64_t hi = d3 / 1000000u, lo = d3 % 1000000u;
    return (hi * 4u * mss) / 10000u + (lo * 4u * mss) / 10000000000ull;
}

/* W_cubic(t) in bytes for t ms after the epoch start. */
static uint64_t cubic_w(const struct cc_state *s, uint64_t t_ms)
{
    if (t_ms >= s->k_ms) {
        uint64_t d = t_ms - s->k_ms;
        return (uint64_t)s->origin + cubic_delta(d > CUBIC_D_MAX ? CUBIC_D_MAX : (uint32_t)d, s->mss);
    }
    uint64_t dec = cubic_delta(s->k_ms - (uint32_t)t_ms, s->mss);
    return dec >= s->origin ? 0 : s->origin - dec;
}

static void cubic_epoch_start(struct cc_state *s, uint64_t now_us)
{
    s->epoch_start_us = now_us ? now_us : 1;
    s->bytes_acked = 0;
    s->cwnd_cnt = 0;
    s->w_est = s->cwnd;
    if (s->cwnd < s->w_max) {
        /* K = cbrt((W_max - cwnd)/(C * mss)) s = cbrt((W_max - cwnd) * 2.5e9 / mss) ms */
        uint64_t diff = s->w_max - s->cwnd;                /* < 2^31 */
        s->k_ms = icbrt64(diff * 2500000000ull / s->mss);
        s->origin = s->w_max;
    } else {
        s->k_ms = 0;
        s->origin = s->cwnd;
        s->w_max = s->cwnd;     /* RFC 9438 4.8: W_max = cwnd at the start of this stage */
    }
}

static void cubic_avoid(struct cc_state *s, uint64_t now_us, uint32_t acked)
{
    if (s->epoch_start_us == 0)
        cubic_epoch_start(s, now_us);
    uint64_t t_us = now_us > s->epoch_start_us ? now_us - s->epoch_start_us : 0;
    uint64_t t_ms = t_us / 1000;
    uint64_t tr_ms = (t_us + s->min_rtt_us) / 1000;

    /* 4.2: target = W_cubic(t + RTT), within [cwnd, 1.5 cwnd] */
    uint64_t target = cubic_w(s, tr_ms);
    uint64_t lo = s->cwnd, hi = (uint64_t)s->cwnd + s->cwnd / 2;
    if (target < lo)
        target = lo;
    if (target > hi)
        target = hi;
    uint64_t num = (target - s->cwnd) * acked + s->bytes_acked;
    uint64_t cw = s->cwnd + num / s->cwnd;
    s->bytes_acked = (uint32_t)(num % s->cwnd);

    /* 4.3: Reno-friendly estimate. W_est grows alpha MSS per cwnd bytes acked. */
    uint64_t thresh = s->w_est >= s->w_last_max ? s->cwnd
                                                  : (uint64_t)s->cwnd * CUBIC_ALPHA_DEN / CUBIC_ALPHA_NUM;
    uint64_t cnt = (uint64_t)s->cwnd_cnt + acked;
    if (cnt >= thresh) {
        uint64_t steps = cnt / thresh;
        cnt -= steps * thresh;
        uint64_t we = s->w_est + steps * s->mss;
        s->w_est = we > CC_INF ? CC_INF : (uint32_t)we;
    }
    s->cwnd_cnt = (uint32_t)cnt;
    if (cw < s->w_est && cubic_w(s, t_ms) < s->w_est)
        cw = s->w_est;
    s->cwnd = cw > CC_INF ? CC_INF : (uint32_t)cw;
}

static void reno_avoid(struct cc_state *s, uint32_t acked)
{
    uint64_t cnt = (uint64_t)s->bytes_acked + acked;
    if (cnt >= s->cwnd) {
        cnt -= s->cwnd;
        if (cnt >= s->cwnd)      /* a huge stretch ACK: at most one more step, drop the rest */
            cnt = 0;
        s->cwnd = min32(CC_INF, s->cwnd + s->mss);
    }
    s->bytes_acked = (uint32_t)cnt;
}

void tcp_cc_on_ack(struct cc_state *s, uint64_t now_us, uint32_t acked, uint32_t rtt_us, uint32_t inflight)
{
    if (rtt_us && (s->min_rtt_us == 0 || rtt_us < s->min_rtt_us))
        s->min_rtt_us = rtt_us;
    if (acked == 0)
        return;
    if (inflight && (uint64_t)inflight * 2 < s->cwnd)
        return;                                   /* not cwnd-limited: no growth */
    if (s->cwnd < s->ssthresh) {
        /* slow start, RFC 3465 with L = 2*SMSS */
        uint32_t inc = min32(acked, 2 * s->mss);
        uint32_t room = s->ssthresh - s->cwnd;
        if (inc < room) {
            s->cwnd += inc;
            return;
        }
        s->cwnd = s->ssthresh;
        acked -= min32(acked, room);
        if (acked == 0)
            return;
    }
    if (s->algo == TCP_CC_RENO)
        reno_avoid(s, acked);
    else
        cubic_avoid(s, now_us, acked);
}

/* Multiplicative decrease: returns the new ssthresh. */
static uint32_t decrease(struct cc_state *s, uint32_t inflight)
{
    uint32_t flight = inflight ? inflight : s->cwnd;
    uint64_t t;
    if (s->algo == TCP_CC_RENO) {
        t = flight / 2;
    } else {
        t = (uint64_t)flight * CUBIC_BETA_NUM / CUBIC_BETA_DEN;
        /* 4.7 fast convergence; w_last_max keeps cwnd_prior for the Reno-friendly alpha */
        if (s->cwnd < s->w_max)
            s->w_max = (uint32_t)((uint64_t)s->cwnd * (CUBIC_BETA_DEN + CUBIC_BETA_NUM) / (2 * CUBIC_BETA_DEN));
        else
            s->w_max = s->cwnd;
        s->w_last_max = s->cwnd;
        s->epoch_start_us = 0;
    }
    s->bytes_acked = 0;
    s->cwnd_cnt = 0;
    return (uint32_t)(t > 2 * (uint64_t)s->mss ? t : 2 * (uint64_t)s->mss);
}

void tcp_cc_on_congestion(struct cc_state *s, uint64_t now_us, uint32_t inflight)
{
    (void)now_us;
    s->ssthresh = decrease(s, inflight);
    s->cwnd = s->ssthresh;
}

void tcp_cc_on_rto(struct cc_state *s, uint64_t now_us, uint32_t inflight)
{
    (void)now_us;
    s->ssthresh = decrease(s, inflight);
    if (s->algo != TCP_CC_RENO)
        s->w_max = 0;            /* 4.8: next stage has K = 0, W_max = cwnd at its start */
    s->cwnd = s->mss;
}

void tcp_cc_on_recovery_exit(struct cc_state *s, uint64_t now_us)
{
    (void)now_us;
    s->cwnd = max32(s->ssthresh, s->mss);
    s->bytes_acked = 0;
}
