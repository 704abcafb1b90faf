/*
 * tcp.h — the TCP state machine (RFC 9293 and friends) as a pure module: no I/O, no clock,
 * no malloc. Time is passed in (monotonic us). The engine (native/engine) owns connection
 * lookup, listeners/SYN queues/SYN cookies, addressing, IP/link headers and the timer wheel;
 * this module owns everything from "a segment for this connection" down to "emit this segment".
 *
 * Call chain (engine -> tcp):
 *   engine_input -> (lookup) -> tcp_input(c, seg)          segment for an existing connection
 *                    listener SYN -> tcp_open_passive(c, syn)  new SYN-RECEIVED connection
 *                    valid cookie ACK -> tcp_open_cookie(c, ack, mss, wscale, sack)
 *   api mtcp_connect  -> tcp_open_active(c)                 SYN-SENT
 *   api mtcp_send/recv/shutdown/close/abort -> tcp_send/tcp_recv/tcp_shutdown/tcp_close/tcp_abort
 *   timer wheel       -> tcp_timer(c)                       when c's deadline passed
 *   end of poll       -> tcp_output(c) for every connection marked "output pending"
 *
 * tcp -> engine goes through struct tcp_env callbacks: segment emission (zero copy into the
 * TX frame), events for the application, timer (re)arming, "output pending" marking.
 */
#ifndef MTCP_TCP_H
#define MTCP_TCP_H
#include <stdint.h>
#include "../wire/wire.h"
#include "buf.h"
#include "cc.h"


/* ---- the module's own vocabulary: the engine maps it to the public MTCP_* names (engine.h holds
 * static asserts that the values agree, so it passes them through unchanged) ---- */

/* Address families (header sizes, default MSS). */
#define TCP_AF_INET 4
#define TCP_AF_INET6 6

/* Connection states (RFC 9293 3.3.2). */
enum tcp_state {
    TCP_ST_CLOSED = 0,
    TCP_ST_LISTEN = 1,
    TCP_ST_SYN_SENT = 2,
    TCP_ST_SYN_RECEIVED = 3,
    TCP_ST_ESTABLISHED = 4,
    TCP_ST_FIN_WAIT_1 = 5,
    TCP_ST_FIN_WAIT_2 = 6,
    TCP_ST_CLOSE_WAIT = 7,
    TCP_ST_CLOSING = 8,
    TCP_ST_LAST_ACK = 9,
    TCP_ST_TIME_WAIT = 10,
};

/* Events for the application (struct tcp_env.event). */
enum tcp_event {
    TCP_EV_ACCEPT = 1,            /* a passive open reached ESTABLISHED */
    TCP_EV_CONNECTED = 2,         /* an active open reached ESTABLISHED */
    TCP_EV_CONNECT_FAILED = 3,    /* an active open failed; err = ECONNREFUSED / ETIMEDOUT ... */
    TCP_EV_READABLE = 4,          /* new in-order data; len = bytes now readable */
    TCP_EV_WRITABLE = 5,          /* send space again after tcp_send accepted less than asked */
    TCP_EV_PEER_CLOSED = 6,       /* FIN received */
    TCP_EV_ERROR = 7,             /* connection died: err = ECONNRESET, ETIMEDOUT, EPIPE ... */
    TCP_EV_CLOSED = 8,            /* connection reached CLOSED */
};

/* Per-connection options (tcp_setopt / tcp_getopt). */
enum tcp_opt {
    TCP_OPT_NODELAY = 1,
    TCP_OPT_KEEPALIVE = 2,
    TCP_OPT_KEEPIDLE = 3,
    TCP_OPT_KEEPINTVL = 4,
    TCP_OPT_KEEPCNT = 5,
    TCP_OPT_SNDBUF = 6,
    TCP_OPT_RCVBUF = 7,
    TCP_OPT_LINGER_ZERO = 8,      /* close sends RST */
};

/* Counters TCP increments: indexes into struct tcp_env.counters (the engine's counter array;
 * the engine places its own counters around these slots). */
enum tcp_counter {
    TCP_CTR_RETRANS_SEGS = 23,
    TCP_CTR_FAST_RETRANS = 24,
    TCP_CTR_TIMEOUTS = 25,
    TCP_CTR_SYN_RETRANS = 26,
    TCP_CTR_OUT_OF_WINDOW = 27,
    TCP_CTR_CHALLENGE_ACKS = 28,
    TCP_CTR_CHALLENGE_ACKS_LIMITED = 29,
    TCP_CTR_PAWS_DROPS = 30,
    TCP_CTR_RST_IN = 31,
    TCP_CTR_RST_OUT = 32,
    TCP_CTR_OOO_SEGS = 33,
    TCP_CTR_OOO_DROPS = 34,
    TCP_CTR_DUP_ACKS = 35,
    TCP_CTR_SACK_RECOVERY = 36,
    TCP_CTR_KEEPALIVE_PROBES = 37,
    TCP_CTR_PERSIST_PROBES = 38,
    TCP_CTR_DELAYED_ACKS = 39,
    TCP_CTR_RCV_PRUNED = 40,
    TCP_CTR_TLP_PROBES = 66,
    TCP_CTR_RACK_LOST = 67,
    TCP_CTR_OOW_ACKS_LIMITED = 68,
    TCP_CTR_RACK_NO_REC = 69,
    TCP_CTR_OOO_PRUNED = 80,
};
/* the counter array must have at least this many entries */
#define TCP_CTR_SLOTS (TCP_CTR_OOO_PRUNED + 1)

/* What TCP reads of the engine's configuration (the engine fills it from struct tcp_cfg,
 * where each field's default and range are documented). */
struct tcp_cfg {
    uint32_t sndbuf;              /* per-connection send buffer limit, bytes */
    uint32_t rcvbuf;              /* per-connection receive buffer (max window), bytes */
    uint32_t initial_rto_us;
    uint32_t min_rto_us;
    uint32_t max_rto_us;
    uint32_t max_retries;         /* RTO expiries of data before ETIMEDOUT */
    uint32_t syn_retries;
    uint32_t synack_retries;
    uint32_t msl_us;              /* TIME-WAIT lasts 2*msl */
    uint32_t delack_us;
    uint32_t initial_cwnd;        /* segments */
    uint64_t keepalive_idle_us;
    uint64_t keepalive_intvl_us;
    uint32_t keepalive_cnt;
    uint32_t challenge_ack_limit; /* per second per engine (RFC 5961 7) */
    uint32_t fin_timeout_us;      /* orphaned FIN-WAIT-2 limit; 0 = 2*msl_us */
    uint32_t invalid_ratelimit_ms; /* at most one ACK answering an invalid segment per interval */
    uint8_t cc;                   /* TCP_CC_CUBIC or TCP_CC_RENO (cc.h) */
    uint8_t sack;
    uint8_t timestamps;
    uint8_t window_scaling;
    uint8_t nodelay_default;
};

/* One connection's figures (tcp_info); the engine adds the addresses. */
struct tcp_conn_stats {
    uint32_t state;               /* TCP_ST_* */
    uint32_t mss;                 /* effective send MSS */
    uint32_t srtt_us;
    uint32_t rttvar_us;
    uint32_t rto_us;
    uint32_t cwnd;                /* bytes */
    uint32_t ssthresh;
    uint32_t snd_wnd;             /* peer's advertised window, bytes (scaled) */
    uint32_t rcv_wnd;             /* our advertised window, bytes */
    uint32_t unacked;             /* bytes in flight */
    uint32_t sndbuf_used;         /* bytes queued (unsent + unacked) */
    uint32_t rcvbuf_used;         /* bytes readable by the app */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint32_t retransmits;
    uint32_t flags;               /* bit0 sack, bit1 timestamps, bit2 wscale, bit3 nodelay, bit4 keepalive */
};

/* Keepalive idle/interval upper bound (Linux MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL: 32767 s). */
#define TCP_KEEPALIVE_MAX_US (32767ull * 1000000ull)

/* tcp_conn.flags */
#define TCPF_SACK_OK      0x0001   /* both sides agreed on SACK */
#define TCPF_TS_OK        0x0002   /* timestamps in use */
#define TCPF_WS_OK        0x0004   /* window scaling in use */
#define TCPF_NODELAY      0x0008
#define TCPF_KEEPALIVE    0x0010
#define TCPF_ACK_NOW      0x0020   /* send an ACK at next output */
#define TCPF_DELACK       0x0040   /* an ACK is being delayed */
#define TCPF_FIN_QUEUED   0x0080   /* app shut down writing: FIN after the send buffer */
#define TCPF_FIN_SENT     0x0100
#define TCPF_RCVD_FIN     0x0200
#define TCPF_IN_RECOVERY  0x0400
#define TCPF_WANT_WRITABLE 0x0800  /* app saw a short send: report WRITABLE when space frees */
#define TCPF_LINGER0      0x1000   /* close sends RST */
#define TCPF_QUICKACK     0x2000   /* quick-ACK mode at start */
#define TCPF_PASSIVE      0x4000   /* opened from a listener */
#define TCPF_DETACHED     0x8000   /* app released the cid (closed); no more events */

/* Peer SACK scoreboard (RFC 6675): ranges above snd_una the peer holds. */
#define TCP_SB_MAX 8
struct tcp_sack_range { uint32_t left, right; };

/* RACK transmit records (see tcp_conn.recs); out of line, from a per-engine pool */
#define TCP_REC_MAX 48
struct tcp_xmit_rec { uint32_t end, ts; };
struct tcp_recs { struct tcp_xmit_rec rec[TCP_REC_MAX]; uint8_t fl[TCP_REC_MAX]; };

struct tcp_conn {
    uint8_t state;                /* TCP_ST_* */
    uint8_t snd_wscale, rcv_wscale;
    uint8_t dupacks;
    uint16_t flags;               /* TCPF_* */
    uint16_t local_port, remote_port;
    uint16_t mss;                 /* send MSS (min of peer's MSS option and our path MSS) */
    uint16_t rcv_mss;             /* MSS we advertised */
    uint8_t family;               /* TCP_AF_INET / 6 (header sizes) */
    uint8_t retries;              /* consecutive RTO expiries */
    uint8_t ka_probes;
    uint8_t sb_n;

    /* send sequence space (RFC 9293 3.3.1) */
    uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2;
    uint32_t recover;             /* NewReno / RFC 6675 recovery point */
    /* receive sequence space */
    uint32_t irs, rcv_nxt, rcv_adv;   /* rcv_adv: right edge of the window we advertised */
    uint32_t rcvbuf, sndbuf;      /* limits, bytes */

    /* timestamps (RFC 7323) */
    uint32_t ts_recent;
    uint32_t ts_recent_age_ms;
    uint32_t ts_offset;           /* per-connection random offset added to our tsval */
    uint32_t last_oow_ack_ms;     /* when the last rate-limited ACK (challenge / out-of-window /
                                   * PAWS / probe answer) was sent, ms clock; 0 = never (see
                                   * TCP_OOW_ACK_INTERVAL_MS in tcp_int.h) */

    /* RTT (RFC 6298) */
    uint32_t srtt_us, rttvar_us, rto_us;
    uint32_t rtt_seq;             /* sequence being timed (no timestamps), 0 flag in rtt_start */
    uint64_t rtt_start_us;

    /* timers: absolute us, 0 = off. The engine arms one wheel entry at their minimum. */
    uint64_t t_rexmit;            /* RTO / SYN / persist (zero-window probe) */
    uint64_t t_delack;
    uint64_t t_keepalive;
    uint64_t t_timewait;          /* also SYN-RECEIVED expiry, FIN-WAIT-2 timeout */
    uint64_t last_rx_us;          /* for keepalive */
    uint64_t ka_idle_us, ka_intvl_us; /* 64-bit: Linux's default idle, 7200 s, exceeds 32-bit us */
    uint8_t ka_cnt;
    uint8_t persist_backoff;
    uint16_t ooo;                 /* index of this connection's buf_ooo in the engine pool, 0xffff = none */

    struct cc_state cc;
    struct tcp_sack_range sb[TCP_SB_MAX];
    uint32_t sacked_bytes;        /* bytes above snd_una covered by the scoreboard */
    uint32_t high_rxt;            /* RFC 6675 HighRxt */

    struct buf_stream snd;        /* bytes from snd_una (unacked then unsent) */
    struct buf_stream rcv;        /* in-order bytes not yet read by the app */

    uint64_t bytes_sent, bytes_received;
    uint32_t retransmits;
    uint32_t pad;

    /* tcp.c internals: the engine need not touch them */
    uint32_t last_ack_sent;       /* RFC 7323 Last.ACK.sent (ack field of our last segment) */
    uint32_t max_snd_wnd;         /* largest window the peer offered (sender SWS, RFC 5961 5.2) */
    uint32_t rec_inflate;         /* NewReno (RFC 6582): cwnd inflation during fast recovery */
    uint32_t ooo_fin;             /* sequence number of a FIN that arrived out of order */
    uint64_t armed_us;            /* deadline last reported through env->timer (0 = none) */
    uint8_t quickacks;            /* segments still ACKed immediately (quick-ACK at start) */
    uint8_t persist;              /* t_rexmit currently runs as the persist timer */
    uint8_t rtt_active;           /* a segment is being timed (rtt_seq/rtt_start_us), RFC 6298 w/o TS */
    uint8_t rexmit_now;           /* fast retransmit of the segment at snd_una due at next output */
    uint8_t ooo_fin_valid;
    uint8_t closed_done;          /* env->closed was called */
    uint8_t dsack;                /* a D-SACK block (RFC 2883) is due in the next ACK */
    uint8_t pad2;
    uint32_t dsack_left, dsack_right;
    /* RFC 7323 4 / RFC 6298 (Karn with timestamps): our TSval when we last retransmitted; while
     * rxt_ts_valid, an ACK whose TSecr predates it yields no RTT sample (stale echo) */
    uint32_t rxt_tsval;
    uint8_t rxt_ts_valid;
    uint8_t pad3;
    /* TSO: set by tcpi_emit for the segment being committed: the size the link cuts its payload
     * at (LINK_SLOT_F_GSO gso_size) when it carries more than one segment, else 0 */
    uint16_t tx_gso;
    /* read cursor into snd, numbered by sequence (base data_seq(c)): O(1) payload reads in
     * tcpi_emit; all-zero = no position; zeroed whenever snd is cleared */
    struct buf_cursor snd_cur;

    /* RACK-TLP (RFC 8985), connections with SACK only (tcp_sack.c). rec[0..rec_n): what was sent
     * in [rec_base, snd_max), contiguous and sorted: rec[i] covers [end of rec[i-1] (rec_base for
     * i = 0), rec[i].end), last (re)transmitted at rec[i].ts (low 32 bits of the us clock), flags
     * rec_fl[i] (TCP_RECF_*). New data sent in one output pass at the same time extends the last
     * record; a retransmission splits records. Bounded: when full, neighbours with the same flags
     * are merged (later time kept: loss is then detected later, never earlier). */
#define TCP_RECF_RETRANS 0x01    /* retransmitted (its RTT is ambiguous) */
#define TCP_RECF_LOST 0x02       /* marked lost, not yet retransmitted */
    struct tcp_recs *recs;        /* out of line, from the engine's pool (env->rec_get) while data
                                   * is in flight; NULL = none (pool empty: RFC 6675 DupThresh only) */
    uint32_t rec_base;
    uint8_t rec_n;
    uint8_t rack_valid;           /* rack_ts/rack_end hold a delivered segment */
    uint8_t rack_reord;           /* RACK.reordering_seen */
    uint8_t rack_mult;            /* RACK.reo_wnd_mult (0 = 1) */
    uint8_t rack_persist;         /* RACK.reo_wnd_persist */
    uint8_t rack_dsack_valid;     /* rack_dsack_round is set */
    uint8_t tlp_active;           /* a TLP episode is open (TLP.end_seq) */
    uint8_t tlp_rxt;              /* the probe was a retransmission */
    uint8_t rto_rec;              /* in recovery after an RTO (slow start goes on meanwhile) */
    uint8_t pad5[3];
    uint32_t rack_ts, rack_end;   /* RACK.xmit_ts / RACK.end_seq */
    uint32_t rack_rtt;            /* RACK.rtt, us */
    uint32_t rack_min_rtt;        /* min RTT, us (0 = none yet) */
    uint32_t rack_fack;           /* highest sequence delivered (reordering detection) */
    uint32_t rack_dsack_round;
    uint32_t tlp_end;             /* TLP.end_seq */
    uint64_t t_rack;              /* RACK reordering timer, absolute us, 0 = off */
    uint64_t t_tlp;               /* tail loss probe timeout (PTO), absolute us, 0 = off */
};

/* What the engine gives TCP. */
struct tcp_env {
    void *ctx;                            /* the engine */
    const struct tcp_cfg *cfg;
    struct buf_pool *pool;
    uint64_t *counters;                   /* indexed by enum tcp_counter (>= TCP_CTR_SLOTS entries) */
    /* Per-connection out-of-order buffer: get (allocating if alloc) or release. NULL = none/full. */
    struct buf_ooo *(*ooo_get)(void *ctx, struct tcp_conn *c, int alloc);
    void (*ooo_put)(void *ctx, struct tcp_conn *c);
    /* RACK transmit records (struct tcp_recs): taken when data goes in flight on a SACK connection,
     * returned when everything is acknowledged or the connection closes. rec_get returns NULL when
     * the pool is empty (or rec_get is NULL): that connection uses RFC 6675 DupThresh until its
     * next flight. */
    struct tcp_recs *(*rec_get)(void *ctx, struct tcp_conn *c);
    void (*rec_put)(void *ctx, struct tcp_conn *c, struct tcp_recs *r);
    /* Reserve room for one segment to c's peer. Returns where the TCP header goes and its capacity
     * (header + payload, already limited by the path MTU) in *cap; NULL when the TX ring is full
     * (TCP leaves the connection "output pending" and tries again next poll). */
    uint8_t *(*tx_begin)(void *ctx, struct tcp_conn *c, uint32_t *cap);
    /* Finish the segment written at tx_begin's pointer (tcp_len = header + payload): the engine
     * fills the checksum, IP and link headers and queues the frame. */
    void (*tx_commit)(void *ctx, struct tcp_conn *c, uint32_t tcp_len);
    /* Application event (TCP_EV_*). The engine drops events for detached connections. */
    void (*event)(void *ctx, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len);
    /* c's earliest timer changed: (re)arm to deadline (0 = none). */
    void (*timer)(void *ctx, struct tcp_conn *c, uint64_t deadline_us);
    /* Mark c for tcp_output at the end of the current poll (batching: one output pass per poll). */
    void (*want_output)(void *ctx, struct tcp_conn *c);
    /* c reached CLOSED (or TIME-WAIT ended): the engine unhashes it and frees it if detached. */
    void (*closed)(void *ctx, struct tcp_conn *c);
    /* RFC 5961 7: may a challenge ACK be sent now? The engine keeps the per-second budget
     * (cfg->challenge_ack_limit). NULL = always allowed. */
    int (*challenge_ok)(void *ctx, uint64_t now_us);
    /* TSO (link with LINK_FEAT_TSO): largest payload of one super-segment, 0 = no TSO. New data
     * then goes out in full-MSS multiples up to this (one TX slot, cut by the link at c->tx_gso);
     * tx_begin must offer the capacity for it. Retransmissions stay one MSS each. */
    uint32_t tso_max;
};

/* Initialise a fresh block (all zero -> defaults from cfg). */
void tcp_conn_init(const struct tcp_env *env, struct tcp_conn *c, int family, uint16_t local_port,
                   uint16_t remote_port, uint16_t path_mss);

/* Active open: state SYN-SENT, SYN queued for output. iss chosen by the engine (RFC 6528). */
void tcp_open_active(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss);
/* Passive open from a SYN that matched a listener: state SYN-RECEIVED, SYN-ACK queued. */
void tcp_open_passive(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss,
                      const struct wire_tcp *syn);
/* Passive open from a valid SYN-cookie ACK: straight to ESTABLISHED with the options the
 * cookie carried (mss; wscale 0xff = none; sack 0/1; peer tsval in ack->tsval if any). */
void tcp_open_cookie(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint32_t iss,
                     const struct wire_tcp *ack, uint16_t mss, uint8_t wscale, uint8_t sack_ok);

/* A segment for this connection (checksum already verified, payload pointer valid). */
void tcp_input(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg);
/* Emit whatever is due: SYN/SYN-ACK, data within min(cwnd, snd_wnd), retransmissions, FIN,
 * pure ACKs, window updates, probes. */
void tcp_output(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
/* The connection's deadline passed: handle every expired timer. */
void tcp_timer(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
/* Earliest armed timer or 0. */
uint64_t tcp_next_deadline(const struct tcp_conn *c);

/* Application calls (return >= 0 or -errno). */
int64_t tcp_send(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const uint8_t *data, uint32_t len);
int64_t tcp_recv(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint8_t *out, uint32_t cap);
int tcp_shutdown(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
int tcp_close(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);
void tcp_abort(const struct tcp_env *env, struct tcp_conn *c, uint64_t now);   /* RST, -> CLOSED */
int tcp_setopt(const struct tcp_env *env, struct tcp_conn *c, int opt, int64_t val);
int tcp_getopt(const struct tcp_conn *c, int opt, int64_t *val);
void tcp_info(const struct tcp_conn *c, struct tcp_conn_stats *out);   /* addresses filled by engine */

/* Path MTU lowered (ICMP frag-needed / packet-too-big): new MSS for this connection. */
void tcp_pmtu(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, uint16_t mss);

/* RFC 9293 3.10.7.1: the RST to answer a segment that matched no connection (unless it is an RST).
 * Fills rst (ports swapped); returns 0 if no RST must be sent. */
int tcp_rst_for(const struct wire_tcp *seg, struct wire_tcp *rst);

/* Window scale we advertise for a receive buffer of rcvbuf bytes (RFC 7323 2.3): the engine
 * uses it in SYN-ACKs it builds for SYN cookies, so tcp_open_cookie agrees with them. */
uint8_t tcp_wscale_for(uint32_t rcvbuf);

/* RFC 6191 / RFC 1122 4.2.2.13: a SYN (no ACK) for a connection in TIME-WAIT may start a new
 * incarnation if it is clearly newer (timestamps in use: SEG.TSval > TS.Recent; otherwise
 * SEG.SEQ > RCV.NXT). Returns 1 after closing the TIME-WAIT connection (env->closed called):
 * the engine then hands the SYN to the listener as a fresh one. Returns 0 (nothing changed)
 * otherwise: pass the segment to tcp_input as usual (it answers with a challenge ACK). */
int tcp_timewait_reuse(const struct tcp_env *env, struct tcp_conn *c, uint64_t now, const struct wire_tcp *syn);

/*
 * Event / lifecycle contract (see tcp.c header for details):
 *  - active open established: TCP_EV_CONNECTED. Passive (listener or cookie) established:
 *    TCP_EV_ACCEPT with parent unknown to TCP — the engine fills `parent`.
 *  - READABLE(len = bytes readable now) before PEER_CLOSED for the same segment.
 *  - CONNECT_FAILED(err) for active opens that die before ESTABLISHED (ECONNREFUSED, ETIMEDOUT);
 *    ERROR(err) for established ones (ECONNRESET, ETIMEDOUT); CLOSED when both directions
 *    finished normally (entering TIME-WAIT, or CLOSED from LAST-ACK/CLOSING paths).
 *    A passive connection that dies before ESTABLISHED emits nothing.
 *  - env->closed is called exactly once per connection, when it enters CLOSED (after TIME-WAIT,
 *    after a reset/timeout/abort, or on close of a not-yet-established connection). TCP does not
 *    touch c after it. If c is not DETACHED then, the block stays until the app calls tcp_close
 *    (which then only releases buffers and sets DETACHED): the engine frees it after that.
 *  - env->timer is called whenever tcp_next_deadline(c) changes (deduplicated via c->armed_us).
 */

#endif
