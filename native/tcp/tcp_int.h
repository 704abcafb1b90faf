/*
 * tcp_int.h — internals shared by tcp.c, tcp_in.c, tcp_out.c, tcp_sack.c and tcp_timer.c.
 * Not part of the interface (that is tcp.h): tcpi_* functions are global only so the files can
 * call each other; nothing outside native/tcp uses them.
 */
#ifndef MTCP_TCP_INT_H
#define MTCP_TCP_INT_H
#include "tcp.h"
#include <errno.h>
#include <string.h>
#define CNT(env, ctr) do { if ((env)->counters) (env)->counters[(ctr)]++; } while (0)

#define DUPTHRESH 3
#define TS_OPT_LEN 12
#define QUICKACKS 8                 /* segments ACKed immediately after establishment */
#define PAWS_24DAYS_MS (24u * 24u * 3600u * 1000u)
/* Per-connection limit on ACKs answering invalid segments (RFC 5961 challenge ACKs, ACKs for
 * unacceptable / PAWS-rejected segments and SEQ = RCV.NXT-1 probes, TIME-WAIT included): at most one
 * per interval, as Linux's tcp_invalid_ratelimit (default 500 ms; a constant here). Segments that
 * occupy sequence space (data or FIN) without SYN are exempt, as in Linux's tcp_oow_rate_limited:
 * they are not part of an ACK loop (a retransmitted FIN in TIME-WAIT is always ACKed). Challenge
 * ACKs also draw on the engine-wide budget (env->challenge_ok). */
#define TCP_OOW_ACK_INTERVAL_MS 500u   /* default of cfg->invalid_ratelimit_ms (Linux tcp_invalid_ratelimit) */
struct tcp_conn;
struct tcp_env;
void tcpi_rec_take(const struct tcp_env *env, struct tcp_conn *c);
void tcpi_rec_release(const struct tcp_env *env, struct tcp_conn *c);
#define RTO_G_US 1000               /* clock granularity G (RFC 6298 2.2) */
#define DEFAULT_MSS4 536            /* RFC 9293 3.7.1 when the peer sends no MSS option */
#define DEFAULT_MSS6 1220

static inline uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint32_t max32(uint32_t a, uint32_t b) { return a > b ? a : b; }
static inline uint64_t min_nz(uint64_t a, uint64_t b) { return !a ? b : !b ? a : (a < b ? a : b); }
static inline int syn_unacked(const struct tcp_conn *c)
{
    return c->state == TCP_ST_SYN_SENT || c->state == TCP_ST_SYN_RECEIVED;
}
/* sequence number of the first byte in c->snd */
static inline uint32_t data_seq(const struct tcp_conn *c) { return c->snd_una + (syn_unacked(c) ? 1u : 0u); }
static inline uint32_t data_end(const struct tcp_conn *c) { return data_seq(c) + c->snd.len; }
static inline uint32_t eff_mss(const struct tcp_conn *c)
{
    uint32_t m = c->mss;
    if (c->flags & TCPF_TS_OK) m = m > TS_OPT_LEN + 64 ? m - TS_OPT_LEN : 64;
    return m;
}
static inline uint32_t eff_rcv_mss(const struct tcp_conn *c)
{
    uint32_t m = c->rcv_mss;
    if (c->flags & TCPF_TS_OK) m = m > TS_OPT_LEN + 64 ? m - TS_OPT_LEN : 64;
    return m;
}
/* Lifetime of an orphaned FIN-WAIT-2 (Linux tcp_fin_timeout), separate from TIME-WAIT's 2*MSL */
static inline uint64_t fin_timeout_us(const struct tcp_cfg *cfg)
{
    return cfg->fin_timeout_us ? cfg->fin_timeout_us : 2ull * cfg->msl_us;
}
static inline uint32_t ts_now(const struct tcp_conn *c, uint64_t now) { return (uint32_t)(now / 1000) + c->ts_offset; }
static inline int can_send_data_state(int st)
{
    return st == TCP_ST_ESTABLISHED || st == TCP_ST_CLOSE_WAIT || st == TCP_ST_FIN_WAIT_1 ||
           st == TCP_ST_CLOSING || st == TCP_ST_LAST_ACK;
}
static inline int synchronized_state(int st) { return st >= TCP_ST_ESTABLISHED; }
static inline uint32_t rcv_wnd_cur(const struct tcp_conn *c)
{
    return seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
}
/* Free space in the receive buffer, capped by what the window field can carry. */
static inline uint32_t rcv_space(const struct tcp_conn *c)
{
    uint32_t space = c->rcvbuf > c->rcv.len ? c->rcvbuf - c->rcv.len : 0;
    uint32_t maxw = 65535u << c->rcv_wscale;
    return min32(space, maxw);
}

void tcpi_sync_timer(const struct tcp_env *env, struct tcp_conn *c);
void tcpi_ev(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len);
void tcpi_want_output(const struct tcp_env *env, struct tcp_conn *c);
struct buf_ooo *tcpi_ooo_of(const struct tcp_env *env, struct tcp_conn *c, int alloc);
void tcpi_ooo_release(const struct tcp_env *env, struct tcp_conn *c);
void tcpi_conn_closed(const struct tcp_env *env, struct tcp_conn *c);
void tcpi_conn_fail(const struct tcp_env *env, struct tcp_conn *c, uint32_t type, int err);
void tcpi_conn_die(const struct tcp_env *env, struct tcp_conn *c, int err);
void tcpi_enter_time_wait(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
uint32_t tcpi_rcv_wnd_calc(const struct tcp_conn *c);
void tcpi_emit_rst(const struct tcp_env *env, struct tcp_conn *c, uint32_t seq, uint32_t ack, uint8_t flags);
int tcpi_emit(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                uint8_t *flagsp);
int tcpi_send_seg(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t len,
                    uint8_t flags);
void tcpi_sb_prune(struct tcp_conn *c);
/* RACK-TLP (tcp_sack.c) */
void tcpi_rack_sent(struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t end);
void tcpi_rack_on_ack(struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg);
void tcpi_rack_prune(struct tcp_conn *c);
int tcpi_rack_detect(struct tcp_conn *c, uint64_t now);
void tcpi_rack_mark_all_lost(struct tcp_conn *c);
void tcpi_rack_recovery_exit(struct tcp_conn *c);
int tcpi_rack_on(const struct tcp_conn *c);
int tcpi_seg_dsack(const struct wire_tcp *seg);
void tcpi_tlp_arm(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
void tcpi_enter_recovery(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
void tcpi_tlp_fire(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
int tcpi_sb_update(struct tcp_conn *c, const struct wire_tcp *seg);
int tcpi_sb_hole_lost(const struct tcp_conn *c, uint32_t i);
uint32_t tcpi_sb_pipe(const struct tcp_conn *c);
int tcpi_sb_next_lost(const struct tcp_conn *c, uint32_t *seq, uint32_t *len);
int tcpi_sb_next_hole(const struct tcp_conn *c, uint32_t *seq, uint32_t *len);
uint32_t tcpi_persist_interval(const struct tcp_env *env, const struct tcp_conn *c);
int tcpi_pending_output(const struct tcp_conn *c);
void tcpi_set_peer_mss(struct tcp_conn *c, const struct wire_tcp *syn);
void tcpi_establish(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);

#endif
