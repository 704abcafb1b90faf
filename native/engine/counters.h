/*
 * counters.h — per-engine counters (netstat -s like), indexed by enum mtcp_counter.
 * The engine owns the array (uint64_t counters[CTR_COUNT]) and hands it to TCP in
 * struct tcp_env.counters. Add new counters ONLY AT THE END (before CTR_COUNT) and add
 * their name in counters.c: Python reads them by name through mtcp_counter_name().
 *
 * Who increments what:
 *   engine: frames, segments in/out, drops by reason, ICMP/ARP/NDP, listener/cookie counters,
 *           connection opens/accepts, events overflow.
 *   tcp:    retransmits, fast retransmits, timeouts, challenge ACKs, PAWS, out of window,
 *           resets in/out on connections, keepalive/persist probes, delayed ACKs, ...
 */
#ifndef MTCP_ENGINE_COUNTERS_H
#define MTCP_ENGINE_COUNTERS_H
#include <stdint.h>

enum mtcp_counter {
    /* frames / segments (engine) */
    CTR_FRAMES_IN,
    CTR_FRAMES_OUT,
    CTR_SEGS_IN,              /* TCP segments accepted by checksum + parse */
    CTR_SEGS_OUT,             /* TCP segments emitted (incl. RST/SYN-ACK cookies) */
    /* drops by wire-layer reason: CTR_DROP_WIRE_BASE + (-WIRE_E_x) - 1 */
    CTR_DROP_TRUNCATED,       /* WIRE_E_TRUNCATED */
    CTR_DROP_BAD_VERSION,     /* WIRE_E_BAD_VERSION */
    CTR_DROP_BAD_HDRLEN,      /* WIRE_E_BAD_HDRLEN */
    CTR_DROP_BAD_LEN,         /* WIRE_E_BAD_LEN */
    CTR_DROP_BAD_CSUM,        /* WIRE_E_BAD_CSUM (IP, ICMP and TCP checksums) */
    CTR_DROP_FRAGMENT,        /* WIRE_E_FRAGMENT */
    CTR_DROP_OPT_OVERRUN,     /* WIRE_E_OPT_OVERRUN */
    CTR_DROP_OPT_BAD_LEN,     /* WIRE_E_OPT_BAD_LEN */
    CTR_DROP_BAD_FLAGS,       /* WIRE_E_BAD_FLAGS */
    CTR_DROP_BAD_ADDR,        /* WIRE_E_BAD_ADDR */
    CTR_DROP_UNSUPPORTED,     /* WIRE_E_UNSUPPORTED (ethertype / protocol / ICMP type) */
    /* other engine drops */
    CTR_DROP_NOT_FOR_US,      /* L2 or IP destination not ours */
    CTR_DROP_NO_LISTENER,     /* segment to a closed port (RST answered unless it was a RST) */
    CTR_DROP_LISTEN_OVERFLOW, /* SYN dropped: accept queue full (or SYN queue full, cookies off) */
    CTR_DROP_NO_MEM,          /* no connection block / frame buffer */
    CTR_DROP_CTRL_QUEUE,      /* control frame (ARP/ICMP/RST) dropped: queue full */
    CTR_DROP_NEIGH_QUEUE,     /* frame waiting for ARP/NDP dropped (queue full or resolution failed) */
    CTR_DROP_BAD_COOKIE,      /* ACK to a listener that is not a valid SYN cookie */
    CTR_DROP_TX_TOO_BIG,      /* frame larger than the link's slot */
    /* TCP (tcp module): the same slots as enum tcp_counter in tcp/tcp.h (static asserts in engine.h) */
    CTR_RETRANS_SEGS,
    CTR_FAST_RETRANS,
    CTR_TIMEOUTS,             /* RTO expiries */
    CTR_SYN_RETRANS,
    CTR_OUT_OF_WINDOW,
    CTR_CHALLENGE_ACKS,
    CTR_CHALLENGE_ACKS_LIMITED,
    CTR_PAWS_DROPS,
    CTR_RST_IN,
    CTR_RST_OUT,
    CTR_OOO_SEGS,             /* segments queued out of order */
    CTR_OOO_DROPS,            /* out-of-order data dropped (no buffer) */
    CTR_DUP_ACKS,
    CTR_SACK_RECOVERY,
    CTR_KEEPALIVE_PROBES,
    CTR_PERSIST_PROBES,
    CTR_DELAYED_ACKS,
    CTR_RCV_PRUNED,           /* data dropped: receive buffer full / no chunks */
    /* connections */
    CTR_ACTIVE_OPENS,         /* mtcp_connect */
    CTR_PASSIVE_OPENS,        /* SYN-RECEIVED created by a listener */
    CTR_CONN_ACCEPTED,        /* reached ESTABLISHED from a listener (ACCEPT event) */
    CTR_CONN_ESTABLISHED,     /* active opens that reached ESTABLISHED */
    CTR_CONN_FAILED,          /* active opens that failed */
    CTR_CONN_RESET,           /* connections reset (RST in or abort) */
    CTR_CONN_TIMEDOUT,
    CTR_CONN_CLOSED,          /* connection blocks freed */
    /* SYN cookies (RFC 4987) */
    CTR_SYNCOOKIES_SENT,
    CTR_SYNCOOKIES_ACCEPTED,
    CTR_SYNCOOKIES_FAILED,
    /* ICMP */
    CTR_ICMP_IN,
    CTR_ICMP_ECHO_ANSWERED,
    CTR_ICMP_PMTU,            /* frag-needed / packet-too-big applied to a connection */
    CTR_ICMP_PMTU_IGNORED,    /* ... that matched no connection or was out of its sequence space */
    /* ARP / NDP */
    CTR_ARP_IN,
    CTR_ARP_REPLIES,          /* answered requests for our address */
    CTR_ARP_REQUESTS,         /* requests we sent */
    CTR_NDP_IN,
    CTR_NDP_ADVERTS,          /* NAs we sent */
    CTR_NDP_SOLICITS,         /* NSs we sent */
    CTR_NEIGH_RESOLVED,
    CTR_NEIGH_FAILED,
    /* events */
    CTR_EVENTS_OVERFLOW,
    /* connection pool, loss recovery, ACK rate limits (appended: indexes stay stable) */
    CTR_TW_RECYCLED,          /* TIME-WAIT blocks recycled because the connection pool was empty */
    CTR_TLP_PROBES,           /* tail loss probes sent (RFC 8985 7) */
    CTR_RACK_LOST,            /* sent ranges RACK marked lost (RFC 8985 6.2) */
    CTR_OOW_ACKS_LIMITED,     /* challenge / out-of-window / PAWS / probe ACKs not sent: per-connection
                               * limit (one per TCP_OOW_ACK_INTERVAL_MS, as Linux tcp_invalid_ratelimit) */
    CTR_RACK_NO_REC,          /* SACK segments sent without RACK records (pool empty: RFC 6675 DupThresh) */
    /* replies: what went out is counted above (SYNCOOKIES_SENT, RST_OUT, ICMP_ECHO_ANSWERED when
     * the frame reaches the wire); what was suppressed, by reason: */
    CTR_SYNCOOKIES_UNSENT,    /* cookie SYN-ACKs not sent: destination never resolved / queue full */
    CTR_RST_RATELIMITED,      /* RSTs to segments without a connection not sent: rst_ratelimit */
    CTR_RST_UNSENT,           /* ... not sent: destination never resolved / queue full */
    CTR_ICMP_RATELIMITED,     /* echo replies not sent: icmp_ratelimit */
    CTR_ICMP_UNSENT,          /* ... not sent: destination never resolved / queue full */
    CTR_SOLICIT_RATELIMITED,  /* ARP requests / NSs not sent: solicit_ratelimit */
    CTR_NEIGH_TABLE_FULL,     /* resolution not started: no evictable neighbour entry */
    CTR_CTRL_FLUSHES,         /* control queue flushed to the link in the middle of an RX batch */
    CTR_ADMISSION_REFUSED,    /* valid SYN-cookie ACK refused with a RST: no connection block free */
    CTR_TX_RING_FULL,         /* output stopped: the link's TX ring had no free slot (resumed at the next poll) */
    CTR_OOO_PRUNED,           /* out-of-order queues dropped to store in-order data (chunk pool empty) */
    CTR_COUNT
};

#define CTR_DROP_WIRE_BASE CTR_DROP_TRUNCATED
/* wire error (negative WIRE_E_*) -> counter index */
static inline int ctr_wire_drop(int wire_err) { return CTR_DROP_WIRE_BASE + (-wire_err) - 1; }

const char *eng_ctr_name(unsigned i);

#endif
