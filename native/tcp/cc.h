/*
 * cc.h — congestion control behind a small interface: CUBIC (RFC 9438, default) and
 * Reno (RFC 5681). Pure: time passed in (us). Windows in bytes.
 *
 * TCP calls:
 *   tcp_cc_init         at connection establishment (cwnd = initial_cwnd * mss, RFC 6928)
 *   tcp_cc_on_ack       for every ACK that advances snd_una outside recovery (acked bytes, an RTT sample
 *                   in us or 0 if none, bytes in flight before the ACK)
 *   tcp_cc_on_congestion when loss recovery starts (fast retransmit): sets ssthresh, cwnd
 *   tcp_cc_on_rto       on a retransmission timeout: ssthresh = max(flight/2, 2*mss), cwnd = 1 mss
 *   tcp_cc_on_recovery_exit when recovery ends (cwnd = ssthresh for Reno/NewReno)
 */
#ifndef MTCP_TCP_CC_H
#define MTCP_TCP_CC_H

/* Congestion control algorithms (struct tcp_cfg.cc, struct tcp_cc.algo). */
#define TCP_CC_CUBIC 0
#define TCP_CC_RENO 1
#include <stdint.h>

struct cc_state {
    uint8_t algo;             /* TCP_CC_CUBIC / TCP_CC_RENO */
    uint32_t mss;
    uint32_t cwnd;
    uint32_t ssthresh;
    uint32_t bytes_acked;     /* Reno congestion avoidance accumulator (RFC 3465 style) */
    /* CUBIC (RFC 9438) */
    uint64_t epoch_start_us;  /* 0 = no epoch */
    uint32_t w_max;           /* bytes */
    uint32_t w_last_max;
    uint32_t k_ms;            /* K in milliseconds */
    uint32_t w_est;           /* Reno-friendly estimate, bytes */
    uint32_t origin;          /* bytes */
    uint32_t min_rtt_us;
    uint32_t cwnd_cnt;
};

void tcp_cc_init(struct cc_state *s, int algo, uint32_t mss, uint32_t initial_cwnd_segments);
void tcp_cc_on_ack(struct cc_state *s, uint64_t now_us, uint32_t acked, uint32_t rtt_us, uint32_t inflight);
void tcp_cc_on_congestion(struct cc_state *s, uint64_t now_us, uint32_t inflight);
void tcp_cc_on_rto(struct cc_state *s, uint64_t now_us, uint32_t inflight);
void tcp_cc_on_recovery_exit(struct cc_state *s, uint64_t now_us);
void tcp_cc_set_mss(struct cc_state *s, uint32_t mss);   /* PMTU change */
const char *tcp_cc_name(int algo);

#endif
