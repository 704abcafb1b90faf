/*
 * mtcp_debug.h — debugging and introspection: pool usage for leak checks, and the ss / metrics walk over
 * an engine's connection blocks (native/engine/introspect.c; `mtcp-loop stats`, metrics).
 *
 * A tier above mtcp.h (which it includes); the cffi binding (mtcp_loop/_build.py) reads the part
 * between CDEF-BEGIN and CDEF-END like mtcp.h's.
 */
#ifndef MTCP_DEBUG_H
#define MTCP_DEBUG_H
#include "mtcp.h"
#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */
/* --- leak checks: pool usage --- */
/* out[0] connection blocks in use (incl. listeners and
 * TIME-WAIT), out[1] buffer chunks in use, out[2] out-of-order buffers in use, out[3] events queued. */
void mtcp_engine_pool_usage(mtcp_engine *e, uint64_t out[4]);
/* out[0] RACK transmit-record sets in use, out[1] pool size (mtcp_config.max_rack). */
void mtcp_engine_rack_usage(mtcp_engine *e, uint64_t out[2]);


/* --- introspection (native/engine/introspect.c): ss / metrics without stopping the data path.
 * Called from the engine's own thread between polls (a poll boundary), so each call sees one
 * consistent engine state; a walk over many calls is a rolling snapshot (like /proc/net/tcp). */
#define MTCP_SOCK_LISTENER 0x1   /* a listening socket (info.state = LISTEN) */
#define MTCP_SOCK_DETACHED 0x2   /* released by the application, finishing its close (orphan) */
#define MTCP_SOCK_PENDING 0x4    /* passive open not yet handed to the application (SYN-RECEIVED) */
#define MTCP_SOCK_ACCEPTQ 0x8    /* established, waiting in its listener's accept queue */

struct mtcp_sock_record {
    mtcp_cid cid;              /* the connection id (also of detached blocks: no longer usable) */
    uint32_t flags;            /* MTCP_SOCK_* */
    uint32_t cc;               /* MTCP_CC_* */
    struct mtcp_conn_info info; /* as mtcp_conn_info (listeners: state, mss, local) */
    uint32_t rcv_mss;          /* MSS we advertised */
    uint8_t snd_wscale, rcv_wscale;
    uint8_t retries;           /* consecutive RTO expiries now */
    uint8_t dupacks;
    uint32_t lastrcv_ms;       /* since the last segment received, ms (0xffffffff = never) */
    uint32_t min_rtt_us;       /* lowest RTT sample (0 = none yet) */
    uint32_t sacked;           /* bytes above snd_una covered by SACK blocks */
    uint64_t bytes_acked;      /* data bytes the peer acknowledged */
    uint64_t timer_ms;         /* next timer of the connection from now, ms (0 = none armed) */
    uint32_t backlog;          /* listeners: accept-queue limit */
    uint32_t acceptq;          /* listeners: established connections not yet accepted */
    uint32_t synq;             /* listeners: SYN-RECEIVED children (SYN queue) */
    uint32_t cookies_sent;     /* listeners: SYN cookies sent (SYN queue full or cookies always) */
    uint32_t cookies_ok;       /* listeners: connections opened from a valid cookie */
    uint32_t overflows;        /* listeners: SYNs/ACKs dropped, accept or SYN queue full */
    uint64_t age_us;           /* since the block was allocated (SYN sent / received, listen) */
};

/* Which records mtcp_engine_sockets returns: states is a bit mask of (1 << MTCP_ST_*), 0 = all;
 * sport/dport 0 = any; family 0 = any. */
struct mtcp_sock_filter {
    uint32_t states;
    uint16_t sport, dport;
    uint8_t family;
    uint8_t pad[3];
};

/* Copies up to max records of the connection blocks with index >= *cursor that pass f (NULL =
 * all), in block order (ages and timers relative to now_us, the clock passed to the poll;
 * earlier values than the engine's last poll are taken as that), and advances *cursor past the last block looked at (to the block count
 * when the walk is complete). Looks at no more than max_scan blocks per call (0 = no limit), so
 * one call's cost is bounded; returns the number of records written. */
uint32_t mtcp_engine_sockets(mtcp_engine *e, uint64_t now_us, uint32_t *cursor, const struct mtcp_sock_filter *f,
                             struct mtcp_sock_record *out, uint32_t max, uint32_t max_scan);
/* Gauges for metrics, computed in one pass over the connection blocks (cost ~ block count). */
#define MTCP_SRTT_BUCKETS 12     /* upper bounds: mtcp_srtt_bound_us(i); the last is +Inf */
#define MTCP_DUR_BUCKETS 14      /* upper bounds: mtcp_duration_bound_us(i); the last is +Inf */
struct mtcp_engine_gauges {
    uint64_t states[11];       /* connections per MTCP_ST_* (listeners in [MTCP_ST_LISTEN]) */
    uint64_t orphans;          /* released by the application, still closing */
    uint64_t acceptq;          /* sum over listeners: accepted by TCP, not yet by the application */
    uint64_t synq;             /* sum over listeners: SYN-RECEIVED children */
    uint64_t backlog;          /* sum over listeners: accept-queue limits */
    uint64_t sndbuf_bytes;     /* bytes queued to send (unsent + unacknowledged) */
    uint64_t rcvbuf_bytes;     /* bytes received, not yet read by the application */
    uint64_t srtt_hist[MTCP_SRTT_BUCKETS]; /* synchronized connections with an RTT sample, by srtt */
    uint64_t srtt_sum_us;
};
void mtcp_engine_gauges(mtcp_engine *e, struct mtcp_engine_gauges *out);
uint64_t mtcp_srtt_bound_us(uint32_t i);       /* UINT64_MAX for the last bucket */
/* Durations of connections whose block was released: from the block's allocation (SYN sent or
 * received) to the last segment received from the peer (TIME-WAIT is not counted; never
 * answered: to the release). counts[i] per bucket (not cumulative), *sum_us their sum. */
void mtcp_engine_conn_durations(mtcp_engine *e, uint64_t *counts, uint32_t n, uint64_t *sum_us);
uint64_t mtcp_duration_bound_us(uint32_t i);   /* UINT64_MAX for the last bucket */
/* Connection blocks of the engine (the walk's end). */
uint32_t mtcp_engine_nblocks(mtcp_engine *e);
/* The engine's clock: now_us of the last poll / input / output call. */
uint64_t mtcp_engine_now(mtcp_engine *e);
/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif
