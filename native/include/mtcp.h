/*
 * mtcp.h — the public API of the mtcp_loop native stack: what applications and the Python
 * binding use (engine, configuration, connections, events, counters, links' open functions,
 * impairment, fault injection, steering, capture).
 *
 * Header tiers (like lwIP's): this file; the link contract for backends (native/io/link.h);
 * benchmark entry points (mtcp_bench.h) and debugging / introspection (mtcp_debug.h) apart.
 *
 * cffi reads the part between CDEF-BEGIN and CDEF-END (build script strips the
 * preprocessor lines), so that part sticks to plain C declarations: structs,
 * enums, integer #defines and prototypes.
 *
 * Model (see docs/architecture.md):
 *   link (ring pair)  ->  engine (one per core/loop: wire + tcp + tables)  ->  events  ->  Python
 *   Python calls mtcp_send/recv/close... ; one mtcp_engine_poll() per loop iteration does
 *   RX batch + timers + TX flush.
 *
 * Conventions:
 *   - time is monotonic microseconds, always passed in (now_us); the engine never reads a clock.
 *   - connection ids (cid) are (generation << 32) | index, never 0; a stale cid gives -EBADF.
 *   - functions return >= 0 on success and -errno on failure.
 *   - addresses: struct mtcp_addr, IPv4 in ip[0..3] in network byte order, port in host order.
 */
#ifndef MTCP_H
#define MTCP_H
#include <stdint.h>
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */

typedef struct mtcp_engine mtcp_engine;
typedef struct mtcp_link mtcp_link;
typedef uint64_t mtcp_cid;

#define MTCP_AF_INET 4
#define MTCP_AF_INET6 6

#define MTCP_LINK_ETHERNET 0
#define MTCP_LINK_IP 1

#define MTCP_CC_CUBIC 0
#define MTCP_CC_RENO 1

#define MTCP_SYNCOOKIES_OFF 0
#define MTCP_SYNCOOKIES_ON_OVERFLOW 1
#define MTCP_SYNCOOKIES_ALWAYS 2

struct mtcp_addr {
    uint8_t family;     /* MTCP_AF_INET or MTCP_AF_INET6 */
    uint8_t pad;
    uint16_t port;      /* host byte order */
    uint8_t ip[16];     /* network byte order; IPv4 uses ip[0..3] */
};

/* Engine configuration. mtcp_config_default() fills every field with its default;
 * mtcp_engine_new() validates and reports a bad field by name in err. */
struct mtcp_config {
    /* --- pools (all memory is allocated once, in mtcp_engine_new) --- */
    uint32_t max_conns;        /* connection blocks incl. listeners and TIME-WAIT; default 16384 */
    uint32_t chunk_size;       /* buffer chunk payload bytes; default 2048 */
    uint32_t max_chunks;       /* chunks in the pool shared by all send/recv/reassembly buffers; default 32768 (64 MiB) */
    uint32_t sndbuf;           /* per-connection send buffer limit, bytes; default 262144 */
    uint32_t rcvbuf;           /* per-connection receive buffer (max window), bytes; default 262144 */
    uint32_t max_events;       /* event queue capacity; default 65536 */

    /* --- TCP tunables --- */
    uint32_t initial_rto_us;   /* RFC 6298: 1 s */
    uint32_t min_rto_us;       /* default 200000 */
    uint32_t max_rto_us;       /* default 60000000 (RFC 6298 upper bound) */
    uint32_t max_retries;      /* RTO expiries of data before ETIMEDOUT; default 15 */
    uint32_t syn_retries;      /* SYN retransmissions before ETIMEDOUT; default 6 */
    uint32_t synack_retries;   /* default 5 */
    uint32_t msl_us;           /* TIME-WAIT lasts 2*msl; default 30 s (Linux-like 60 s TIME-WAIT) */
    uint32_t delack_us;        /* delayed ACK timeout, <= 40 ms; default 40000 */
    uint32_t syn_backlog;      /* SYN-RECEIVED entries per listener before SYN cookies; default 1024 */
    uint32_t initial_cwnd;     /* segments; RFC 6928: 10 */
    uint64_t keepalive_idle_us;  /* default 7200 s (64-bit: 7200 s does not fit 32-bit us); 1 s .. 32767 s */
    uint64_t keepalive_intvl_us; /* default 75 s; 1 s .. 32767 s */
    uint32_t keepalive_cnt;      /* default 9 */
    uint32_t challenge_ack_limit; /* RFC 5961 challenge ACKs per second per engine; default 1000 */
    uint8_t cc;                /* MTCP_CC_CUBIC (default) or MTCP_CC_RENO */
    uint8_t sack;              /* offer/accept SACK; default 1 */
    uint8_t timestamps;        /* offer/accept RFC 7323 timestamps; default 1 */
    uint8_t window_scaling;    /* offer/accept window scaling; default 1 */
    uint8_t syncookies;        /* MTCP_SYNCOOKIES_*; default ON_OVERFLOW */
    uint8_t nodelay_default;   /* default 0 (Nagle on) */
    uint8_t pad0[2];
    uint64_t seed;             /* secret for ISNs (RFC 6528), SYN cookies, port choice; 0 = engine picks one */

    /* --- the interface --- */
    uint32_t link_type;        /* MTCP_LINK_ETHERNET (ARP/NDP) or MTCP_LINK_IP (loopback, no L2) */
    uint32_t mtu;              /* IP MTU; default 1500 (loopback uses 65535) */
    uint8_t mac[6];
    uint8_t own_prefix;        /* 1: every address in ipv4/ipv4_prefix (and ipv6/prefix) is local (loopback) */
    uint8_t pad1;
    uint8_t ipv4[4];           /* 0.0.0.0 = no IPv4 */
    uint8_t ipv4_prefix;
    uint8_t ipv6_prefix;
    uint8_t pad2[2];
    uint8_t ipv4_gw[4];        /* 0.0.0.0 = no gateway (on-link only) */
    uint8_t ipv6[16];          /* :: = no IPv6 */
    uint8_t ipv6_gw[16];
    uint16_t eph_port_lo;      /* ephemeral range, default 32768 */
    uint16_t eph_port_hi;      /* default 60999 */
    uint32_t neigh_timeout_us; /* ARP/NDP cache entry lifetime; default 60 s */
    uint32_t fin_timeout_us;   /* an orphaned (closed by the app) FIN-WAIT-2 gives up after this, like
                                  Linux tcp_fin_timeout; default 60 s; <= 600 s; 0 = 2*msl_us */
    uint32_t max_rack;         /* RACK transmit-record sets (~440 B each), taken by SACK connections
                                  while data is in flight; default max_conns/4 in [16, 4096]; <= 2^20;
                                  0 = none (RFC 6675 DupThresh loss detection only) */
    /* --- reply rate limits (token buckets per engine; what they suppress is counted) --- */
    uint32_t rst_ratelimit;    /* RSTs answering segments that match no connection, per second;
                                  default 10000; 0 = unlimited */
    uint32_t rst_burst;        /* bucket depth; default 1000 (a burst of 1000 is answered in full) */
    uint32_t icmp_ratelimit;   /* ICMP/ICMPv6 echo replies per second; default 1000 (Linux
                                  icmp_msgs_per_sec); 0 = unlimited */
    uint32_t icmp_burst;       /* default 50 (Linux icmp_msgs_burst) */
    uint32_t invalid_ratelimit_ms; /* per connection: at most one ACK answering an invalid segment
                                  (out of window, PAWS, challenge) per this interval; default 500
                                  (Linux tcp_invalid_ratelimit); 0 = no per-connection limit */
    uint32_t solicit_ratelimit; /* ARP requests / neighbour solicitations per second; default 100;
                                  0 = unlimited */
};

/* Events handed to the layer above, in order. */
#define MTCP_EV_ACCEPT 1        /* listener `parent` has a new established connection `cid` */
#define MTCP_EV_CONNECTED 2     /* active open `cid` is established */
#define MTCP_EV_CONNECT_FAILED 3 /* active open failed; err = ECONNREFUSED / ETIMEDOUT / EHOSTUNREACH ... */
#define MTCP_EV_READABLE 4      /* new in-order data; len = bytes now readable */
#define MTCP_EV_WRITABLE 5      /* send space available again after mtcp_send() accepted less than asked */
#define MTCP_EV_PEER_CLOSED 6   /* FIN received; all data before it is readable */
#define MTCP_EV_ERROR 7         /* connection died: err = ECONNRESET, ETIMEDOUT, EPIPE ... */
#define MTCP_EV_CLOSED 8        /* connection reached CLOSED (both sides done); call mtcp_close to release */

struct mtcp_event {
    mtcp_cid cid;
    mtcp_cid parent;            /* listener id for ACCEPT, else 0 */
    uint32_t type;              /* MTCP_EV_* */
    int32_t err;                /* positive errno for CONNECT_FAILED / ERROR */
    uint32_t len;               /* READABLE: bytes readable */
    uint32_t pad;
};

/* Socket options for mtcp_setopt / mtcp_getopt. Times in microseconds. */
#define MTCP_OPT_NODELAY 1
#define MTCP_OPT_KEEPALIVE 2
#define MTCP_OPT_KEEPIDLE 3
#define MTCP_OPT_KEEPINTVL 4
#define MTCP_OPT_KEEPCNT 5
#define MTCP_OPT_SNDBUF 6
#define MTCP_OPT_RCVBUF 7
#define MTCP_OPT_LINGER_ZERO 8  /* close() sends RST */

/* Connection states as reported by mtcp_conn_info (RFC 9293 names). */
#define MTCP_ST_CLOSED 0
#define MTCP_ST_LISTEN 1
#define MTCP_ST_SYN_SENT 2
#define MTCP_ST_SYN_RECEIVED 3
#define MTCP_ST_ESTABLISHED 4
#define MTCP_ST_FIN_WAIT_1 5
#define MTCP_ST_FIN_WAIT_2 6
#define MTCP_ST_CLOSE_WAIT 7
#define MTCP_ST_CLOSING 8
#define MTCP_ST_LAST_ACK 9
#define MTCP_ST_TIME_WAIT 10

struct mtcp_conn_info {
    uint32_t state;
    uint32_t mss;             /* effective send MSS */
    uint32_t srtt_us;
    uint32_t rttvar_us;
    uint32_t rto_us;
    uint32_t cwnd;            /* bytes */
    uint32_t ssthresh;
    uint32_t snd_wnd;         /* peer's advertised window, bytes (scaled) */
    uint32_t rcv_wnd;         /* our advertised window, bytes */
    uint32_t unacked;         /* bytes in flight */
    uint32_t sndbuf_used;     /* bytes queued (unsent + unacked) */
    uint32_t rcvbuf_used;     /* bytes readable by the app */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint32_t retransmits;
    uint32_t flags;           /* bit0 sack, bit1 timestamps, bit2 wscale, bit3 nodelay, bit4 keepalive */
    struct mtcp_addr local;
    struct mtcp_addr remote;
};

/* --- engine lifecycle --- */
void mtcp_config_default(struct mtcp_config *cfg);
/* link may be NULL: then only the frame API below moves frames. On error returns NULL and
 * writes a message naming the bad field into err. */
mtcp_engine *mtcp_engine_new(const struct mtcp_config *cfg, mtcp_link *link, char *err, size_t errlen);
void mtcp_engine_free(mtcp_engine *e);   /* does not free the link */

/* One batch: take every received frame from the link (rxsync), run TCP, expire timers, emit
 * everything that can be sent into the TX ring, txsync. Returns the number of queued events. */
int mtcp_engine_poll(mtcp_engine *e, uint64_t now_us);
/* The first half of a poll: the RX batch and expired timers, no output. The layer above
 * dispatches the events, then mtcp_engine_poll_tx sends what its callbacks wrote and closed
 * together with the ACKs (and window updates) of what arrived: a reply carries the ACK of the
 * request, a FIN queued by close() after the last write leaves with that data. Returns the
 * number of queued events. */
int mtcp_engine_poll_rx(mtcp_engine *e, uint64_t now_us);
/* The second half: one output pass + txsync; on IP links further RX/TX rounds while frames
 * move (as mtcp_engine_poll), stopping after an RX that queued events (no output for it yet:
 * call mtcp_engine_poll_tx again after dispatching them). Returns the number of queued events. */
int mtcp_engine_poll_tx(mtcp_engine *e, uint64_t now_us);
/* Absolute time (us) of the engine's (and its link's) next deadline, or -1 if none. */
int64_t mtcp_engine_next_deadline(mtcp_engine *e);
/* Move up to max queued events into ev; returns how many. */
uint32_t mtcp_engine_events(mtcp_engine *e, struct mtcp_event *ev, uint32_t max);
/* Pollable fd of the link (readable when frames wait), or -1. */
int mtcp_engine_fd(mtcp_engine *e);

/* Frame API without a link (tests, fuzzing, benchmarks). */
void mtcp_engine_input(mtcp_engine *e, uint64_t now_us, const uint8_t *frame, uint32_t len);
/* Runs timers and output; copies pending frames back to back into buf, their lengths into lens.
 * Returns the number of frames. */
uint32_t mtcp_engine_output(mtcp_engine *e, uint64_t now_us, uint8_t *buf, uint32_t bufcap,
                            uint32_t *lens, uint32_t maxframes);

/* --- connections --- */
/* Listen on local (ip all-zero = any address of that family; port 0 = pick one). Returns the
 * listener id (a cid) or -EADDRINUSE / -EADDRNOTAVAIL / -EINVAL / -ENOMEM. */
int64_t mtcp_listen(mtcp_engine *e, const struct mtcp_addr *local, int backlog);
/* Active open toward remote, optionally from local (NULL or port 0 = ephemeral). Returns cid or
 * -errno (-EADDRNOTAVAIL, -ENETUNREACH, -EADDRINUSE, -ENOMEM). Completion: CONNECTED or CONNECT_FAILED. */
int64_t mtcp_connect(mtcp_engine *e, uint64_t now_us, const struct mtcp_addr *remote,
                     const struct mtcp_addr *local);
/* Copy up to len bytes into the send buffer; returns bytes accepted (may be < len; then a
 * WRITABLE event follows when space frees) or -EPIPE / -ENOTCONN / -EBADF. */
int64_t mtcp_send(mtcp_engine *e, mtcp_cid cid, const uint8_t *data, uint32_t len);
/* Copy up to cap readable bytes out and consume them (the advertised window reopens).
 * Returns bytes copied; 0 when nothing is readable. */
int64_t mtcp_recv(mtcp_engine *e, mtcp_cid cid, uint8_t *buf, uint32_t cap);
/* Bytes readable now. */
int64_t mtcp_readable(mtcp_engine *e, mtcp_cid cid);
/* Send FIN after all queued data (write side only). */
int mtcp_shutdown(mtcp_engine *e, mtcp_cid cid);
/* Graceful close: queued data then FIN; the cid is released now (no more events for it), the
 * connection finishes its close (and TIME-WAIT) inside the engine. For a listener: stops it
 * and resets connections not yet accepted. Idempotent on a released cid: -EBADF. */
int mtcp_close(mtcp_engine *e, mtcp_cid cid);
/* Send RST, drop buffers, release the cid. */
int mtcp_abort(mtcp_engine *e, mtcp_cid cid);
int mtcp_setopt(mtcp_engine *e, mtcp_cid cid, int opt, int64_t val);
int mtcp_getopt(mtcp_engine *e, mtcp_cid cid, int opt, int64_t *val);
int mtcp_getaddrs(mtcp_engine *e, mtcp_cid cid, struct mtcp_addr *local, struct mtcp_addr *remote);
int mtcp_conn_info(mtcp_engine *e, mtcp_cid cid, struct mtcp_conn_info *out);
/* Iterate live connections for an ss-like view: fills up to max cids starting after `after` (0 = from start). */
uint32_t mtcp_conn_list(mtcp_engine *e, mtcp_cid after, mtcp_cid *out, uint32_t max);

/* --- counters (netstat -s like) --- */
uint32_t mtcp_counter_count(void);
const char *mtcp_counter_name(uint32_t i);
/* Copies min(n, mtcp_counter_count()) counters into out. */
void mtcp_engine_counters(mtcp_engine *e, uint64_t *out, uint32_t n);
/* --- links (ring pairs). Backends live in native/io; see native/io/link.h for the contract. --- */
void mtcp_link_close(mtcp_link *l);
int mtcp_link_fd(mtcp_link *l);
/* Two in-memory Ethernet links joined back to back (single thread, deterministic). */
int mtcp_simlink_pair(uint32_t slots, uint32_t mtu, mtcp_link **a, mtcp_link **b);

/* The process-wide in-process loopback switch (link type IP). Every engine attached to it owns
 * 127.0.0.0/8 and ::1; frames are delivered to the engine that claimed the destination port
 * (listener or ephemeral), to the sender otherwise (which answers RST). Thread-safe: each
 * attachment has an eventfd that becomes readable when frames wait. */
mtcp_link *mtcp_loopback_open(uint32_t slots, char *err, size_t errlen);
/* 1 if some engine in this process listens on port (family MTCP_AF_INET/6), else 0. */
int mtcp_loopback_has_listener(int family, uint16_t port);
/* An isolated loopback (virtual time): the same link, but its ports live in a table of its own
 * and every frame goes back to this attachment; other attachments neither see its ports nor
 * reach it (mtcp_loopback_has_listener does not report them). One engine, one thread: no
 * eventfd wakeups are ever needed (the fd exists and stays quiet). */
mtcp_link *mtcp_loopback_open_isolated(uint32_t slots, char *err, size_t errlen);

/* Impairment wrapper around any link (applies to frames in both directions). Rates are
 * probabilities in [0,1]; delay and jitter in microseconds; rate_bps 0 = unlimited. */
struct mtcp_impair {
    double loss;
    double duplicate;
    double reorder;          /* probability a frame is held back by reorder_gap frames */
    double corrupt;          /* probability of a single bit flip */
    uint32_t delay_us;
    uint32_t jitter_us;
    uint64_t rate_bps;
    uint64_t seed;
};
/* Takes ownership of inner (closing the wrapper closes inner). NULL on bad config. */
mtcp_link *mtcp_impair_wrap(mtcp_link *inner, const struct mtcp_impair *cfg, char *err, size_t errlen);
/* Impairment counters: dropped, duplicated, reordered, corrupted, delayed. */
void mtcp_impair_counters(mtcp_link *l, uint64_t *out5);

/* Parse a user-facing impairment spec such as
 * "loss=0.01,delay=5ms,jitter=1ms,reorder=0.1,duplicate=0.01,corrupt=0.001,rate=100mbit,seed=42"
 * (probabilities as 0..1 or N%; times us/ms/s, default ms; rates bit/kbit/mbit/gbit or
 * bps/kbps/mbps/gbps = bytes/s; "" or "none" = no impairment). Fills *out (zeroing unspecified
 * fields); 0, or -EINVAL with a message naming the bad key in err. */
int mtcp_impair_parse(const char *spec, struct mtcp_impair *out, char *err, size_t errlen);

/* Write every frame the link carries (both directions) to a pcap file. 0 or -errno. */
int mtcp_link_pcap(mtcp_link *l, const char *path);
/* Capture timestamps are the link's now_us plus an offset: mtcp_link_pcap sets realtime minus
 * monotonic; a virtual clock sets a fixed one (e.g. 0) so that captures replay byte for byte.
 * 0, or -EINVAL without an open capture. */
int mtcp_link_pcap_offset(mtcp_link *l, int64_t offset_us);

/* Fault scripting on an impairment wrapper (mtcp_impair_wrap; a zero struct mtcp_impair gives a
 * wrapper that only runs rules). A rule matches TCP segments between endpoint a and endpoint b
 * (a -> b; both ways with MTCP_FAULT_BOTH_WAYS) on one side of the wrapper (dirs: TX = frames
 * the engine sends, RX = frames it receives), while start_us <= now_us < end_us (end_us 0 =
 * no end), with (tcp flags & tcp_mask) == tcp_value, optionally only segments with payload
 * (MTCP_FAULT_DATA). The first `skip` matches pass; then the action applies to at most `count`
 * frames (0 = every match): drop, delay by delay_us (a separate queue, so other traffic is not
 * held behind), corrupt (the checksum is finished, then the last byte's low bit flipped: the
 * receiver drops it as bad-checksum) or duplicate. Rules run before the random impairment, in
 * the order added; a dropped frame stops there. Endpoint: family 0 = any family, all-zero ip =
 * any address, port 0 = any port. */
#define MTCP_FAULT_DROP 1
#define MTCP_FAULT_DELAY 2
#define MTCP_FAULT_CORRUPT 3
#define MTCP_FAULT_DUPLICATE 4
#define MTCP_FAULT_DIR_TX 1
#define MTCP_FAULT_DIR_RX 2
#define MTCP_FAULT_BOTH_WAYS 1
#define MTCP_FAULT_DATA 2
#define MTCP_FAULT_MAX_RULES 64
struct mtcp_fault {
    uint32_t action;          /* MTCP_FAULT_DROP / DELAY / CORRUPT / DUPLICATE */
    uint32_t dirs;            /* MTCP_FAULT_DIR_TX | MTCP_FAULT_DIR_RX */
    uint32_t flags;           /* MTCP_FAULT_BOTH_WAYS | MTCP_FAULT_DATA */
    uint8_t tcp_mask;         /* TCP flag bits compared (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10) */
    uint8_t tcp_value;
    uint16_t pad;
    struct mtcp_addr a, b;
    uint64_t start_us, end_us;
    uint32_t skip;
    uint32_t count;
    uint32_t delay_us;        /* MTCP_FAULT_DELAY: <= 60 s */
    uint32_t pad2;
};
/* Add a rule: its id (>= 0), -EINVAL (bad rule), -ENOSPC (MTCP_FAULT_MAX_RULES), -ENOMEM, or
 * -EOPNOTSUPP when l is not an impairment wrapper. */
int mtcp_fault_add(mtcp_link *l, const struct mtcp_fault *f);
/* Remove one rule (0 or -ENOENT) / all rules. Frames already delayed stay queued. */
int mtcp_fault_remove(mtcp_link *l, int id);
void mtcp_fault_clear(mtcp_link *l);
/* Per rule: out[0] frames matched (window, direction, endpoints, flags), out[1] frames acted on.
 * 0 or -ENOENT. */
int mtcp_fault_stats(mtcp_link *l, int id, uint64_t *out2);

/* --- real ring-pair backends (native/io). Each returns NULL with a message in err on failure. --- */
#define MTCP_LINK_NO_OFFLOAD 0x1   /* open flag: no TSO/GRO/checksum offload (plain MTU frames, full checksums) */

/* Multi-queue TAP with virtio-net headers. ifname NULL/"" = a new tapN; an existing device
 * (e.g. made by the testbed) is attached to. Every open attaches one more queue of the device
 * (the kernel numbers queues in attach order); nqueues > 1 requires a multi-queue device. */
mtcp_link *mtcp_tap_open(const char *ifname, uint32_t queue, uint32_t nqueues, uint32_t flags,
                         char *err, size_t errlen);

/* AF_PACKET TPACKET_V2 (RX + TX ring, one mmap) bound to an existing interface (a veth end, a
 * NIC). nqueues > 1: the sockets of queues 0..nqueues-1 share a PACKET_FANOUT_HASH group. */
mtcp_link *mtcp_packet_open(const char *ifname, uint32_t queue, uint32_t nqueues, uint32_t flags,
                            char *err, size_t errlen);

/* AF_XDP socket on (interface, queue) with its own UMEM; loads and attaches (shared per
 * interface within the process) a minimal XDP program redirecting the queue's frames to it.
 * Copy mode unless flags has MTCP_XDP_ZEROCOPY (falls back to copy when unsupported). */
#define MTCP_XDP_ZEROCOPY 0x10
#define MTCP_XDP_SKB_MODE 0x20     /* attach the program in generic (SKB) mode */
mtcp_link *mtcp_xdp_open(const char *ifname, uint32_t queue, uint32_t flags, char *err, size_t errlen);

/* netmap port (e.g. "eth0", "netmap:eth0", "vale0:1") through /dev/netmap, hardware ring pair
 * `queue`. Untested against a kernel (no netmap module here); ring logic tested on a mock. */
mtcp_link *mtcp_netmap_open(const char *ifname, uint32_t queue, uint32_t flags, char *err, size_t errlen);

/* --- per-core flow steering (native/io/steer.c; steering function defined in io/steer.h) ---
 * Not TCP (ARP, ICMP, ...) -> queue 0; TCP whose local port is in [eph_lo, eph_hi] -> port % n
 * (active opens: the wrapper's claim_port only accepts ports steered to its queue); other TCP
 * (listeners) -> a hash of the remote address and port. */
#define MTCP_PACKET_FANOUT_CBPF 0x40  /* mtcp_packet_open flag: join the fanout group in CBPF mode */
#define MTCP_STEER_INSTALL 0x1        /* mtcp_steer_wrap: install the kernel program (tap/packet) */
#define MTCP_STEER_HANDOFF 0x2        /* hand misdirected TCP frames to their owner via shm (else drop) */
struct mtcp_steer_cfg {
    uint32_t queue;            /* this worker's logical queue */
    uint32_t nqueues;
    uint16_t eph_lo, eph_hi;   /* the engine's ephemeral range (mtcp_config eph_port_lo/hi) */
    uint32_t flags;            /* MTCP_STEER_* */
    const uint32_t *slots;     /* kernel member index of each logical queue; NULL = identity */
    void *shm;                 /* hand-off area shared by all workers (NULL = none) */
    size_t shm_len;
    const int32_t *evfds;      /* nqueues eventfds woken on hand-off (NULL = none) */
};
/* Logical queue of a frame arriving at the stack / of a TCP flow (remote = peer). */
uint32_t mtcp_steer_frame(const uint8_t *frame, uint32_t len, uint32_t nqueues, uint16_t eph_lo,
                          uint16_t eph_hi);
uint32_t mtcp_steer_flow(int family, const uint8_t *remote_ip, uint16_t remote_port, uint16_t local_port,
                         uint32_t nqueues, uint16_t eph_lo, uint16_t eph_hi);
/* Install the steering program on the device of a tap link (TUNSETSTEERINGEBPF, eBPF) or on
 * the fanout group of a packet link (PACKET_FANOUT_DATA, cBPF). 0 or -errno. */
int mtcp_steer_install(mtcp_link *l, uint32_t nqueues, uint16_t eph_lo, uint16_t eph_hi,
                       const uint32_t *slots, char *err, size_t errlen);
size_t mtcp_steer_shm_size(uint32_t nslots);
int mtcp_steer_shm_init(void *mem, size_t len, uint32_t nslots);
/* Wrap a worker's link: claim_port steering, misdirected-frame filter/hand-off, neighbour
 * replies shared with the other workers. Takes ownership of inner. NULL + message on error. */
mtcp_link *mtcp_steer_wrap(mtcp_link *inner, const struct mtcp_steer_cfg *cfg, char *err, size_t errlen);
/* rx_frames, misdirected, handoff_out, handoff_in, neigh_shared_out, neigh_shared_in,
 * handoff_lost, ports_skipped */
#define MTCP_STEER_NCOUNTERS 8
/* AF_XDP with worker processes (io/xdp.c): attach the redirect program + XSKMAP of ifname in
 * the supervisor before forking; workers' mtcp_xdp_open then share that map. 0 or -errno. */
int mtcp_xdp_share(const char *ifname, uint32_t flags, char *err, size_t errlen);
void mtcp_steer_counters(mtcp_link *l, uint64_t *out, uint32_t n);
const char *mtcp_steer_counter_name(uint32_t i);

/* Frame counters of any link, in this order: rx_frames, tx_frames, rx_dropped (ring full,
 * kernel drops), tx_dropped, rx_errors, tx_errors, tx_kicks_refused (TX kicks/writes the device
 * refused; the frames wait for the next txsync). Wrappers (impair, steer) report their inner
 * link's. Copies min(n, MTCP_LINK_NSTATS). mtcp_link_kind: "sim", "loopback", "tap", "packet",
 * "xdp", "netmap", "impair", ... */
#define MTCP_LINK_NSTATS 7
void mtcp_link_stats(mtcp_link *l, uint64_t *out, uint32_t n);
const char *mtcp_link_stat_name(uint32_t i);
const char *mtcp_link_kind(mtcp_link *l);

/* Live capture (native/io/pcap.c): like mtcp_link_pcap, started and stopped at run time from
 * the link owner's thread, with a host/port filter and bounds. Frames of both directions whose
 * IPv4/IPv6 source or destination is host (family 0 = any) and whose TCP/UDP source or
 * destination port is port (0 = any) are written; the capture stops writing (done) after
 * max_frames frames or max_bytes bytes of records (0 = unlimited). */
struct mtcp_pcap_opts {
    uint8_t family;            /* MTCP_AF_INET / MTCP_AF_INET6, 0 = any host */
    uint8_t pad;
    uint16_t port;             /* 0 = any port */
    uint8_t host[16];          /* network byte order */
    uint64_t max_frames;
    uint64_t max_bytes;
};
int mtcp_link_pcap_start(mtcp_link *l, const char *path, const struct mtcp_pcap_opts *opts);
/* out[0] frames written, out[1] bytes written (file size), out[2] frames seen (before the
 * filter), out[3] 1 once a bound was reached or a write failed, out[4] 1 if a write failed.
 * Returns -ENOENT when no capture runs. Flushes the file. */
int mtcp_link_pcap_status(mtcp_link *l, uint64_t out[5]);

/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif
