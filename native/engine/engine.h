/*
 * engine.h — internals of the per-core engine (native/engine). Not part of the public API.
 *
 * Call chains:
 *   mtcp_engine_poll -> rxsync -> engine_rx_frame -> eth/arp/ipv4/ipv6 -> icmp_input4/6 | eng_ndp_input
 *                                                     -> tcp_segment_input -> table lookup
 *                                                         -> tcp_input | eng_listen_input (SYN / cookie ACK)
 *                                                         | ctrl RST (tcp_rst_for)
 *                    -> eng_wheel_advance -> tcp_timer ; eng_neigh_tick
 *                    -> output_pass: ctrl queue -> TX, want_output conns -> tcp_output -> tx_begin/tx_commit
 *                    -> txsync
 *   mtcp_engine_input/output: same, with the internal output queue instead of a link.
 *
 * Memory: everything is allocated in mtcp_engine_new (conn blocks, hash buckets, chunk pool,
 * ooo pool, frame buffers, event ring, neighbour table, port refcounts). The per-packet path
 * never mallocs.
 */
#ifndef MTCP_ENGINE_ENGINE_H
#define MTCP_ENGINE_ENGINE_H
#include <stdint.h>
#include <stddef.h>
#include "mtcp.h"
#include "mtcp_bench.h"
#include "mtcp_debug.h"
#include "wire/wire.h"
#include "tcp/tcp.h"
#include "tcp/buf.h"
#include "io/link.h"
#include "counters.h"

#define NONE32 0xffffffffu

/* ---------------- siphash / ISN / cookies (isn.c) ---------------- */
uint64_t eng_siphash24(const uint8_t key[16], const void *data, size_t len);
/* RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M = 4 us clock. */
uint64_t eng_isn_hash(const uint8_t key[16], int family, const uint8_t *lip, uint16_t lport,
                  const uint8_t *rip, uint16_t rport);   /* low 32: F, high 32: ts offset */
uint32_t eng_isn_make(const uint8_t key[16], int family, const uint8_t *lip, uint16_t lport,
                  const uint8_t *rip, uint16_t rport, uint64_t now_us);

/* ---------------- timer wheel (timer.c) ---------------- */
#define WHEEL_BITS 10
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_MASK (WHEEL_SLOTS - 1)
#define WHEEL_TICK_US 1000u
struct wheel_node {
    uint32_t next, prev;
    uint64_t tick;          /* expiry tick; deadline rounded up */
    uint16_t slot;          /* level << 15 | slot */
    uint8_t linked;
    uint8_t pad;
};
struct wheel {
    uint8_t *base;          /* element i's node at base + i*stride + off */
    size_t stride, off;
    uint64_t cur;           /* last processed tick */
    uint32_t n0, n1;        /* entries per level */
    int started;
    uint32_t head[2][WHEEL_SLOTS];
    uint64_t bm[2][WHEEL_SLOTS / 64];
};
void eng_wheel_init(struct wheel *w, void *base, size_t stride, size_t off);
void eng_wheel_start(struct wheel *w, uint64_t now_us);          /* first time seen */
void eng_wheel_insert(struct wheel *w, uint32_t idx, uint64_t deadline_us);
void eng_wheel_remove(struct wheel *w, uint32_t idx);
int eng_wheel_linked(const struct wheel *w, uint32_t idx);
/* Fire every entry due at now_us (fire may insert/remove any entry). Returns number fired. */
uint32_t eng_wheel_advance(struct wheel *w, uint64_t now_us, void (*fire)(void *ctx, uint32_t idx), void *ctx);
/* Lower bound of the next expiry (absolute us; never later than the true one), -1 if empty. */
int64_t eng_wheel_next_deadline(const struct wheel *w);

/* ---------------- connection blocks (table.c) ---------------- */
#define CK_FREE 0
#define CK_CONN 1
#define CK_LISTEN 2

#define CF_HASHED   0x0001
#define CF_OUTPUT   0x0002   /* on the want_output list */
#define CF_DETACHED 0x0004   /* app released the cid */
#define CF_HIDDEN   0x0008   /* passive and not yet established: no events */
#define CF_ZOMBIE   0x0010   /* waiting to be freed (reap list) */
#define CF_PORTREF  0x0020   /* holds a local port reference */
#define CF_ACCEPTQ  0x0040   /* ACCEPT queued, counted in the listener's backlog */
#define CF_CLOSED   0x0080   /* TCP reached CLOSED, app still holds the cid */
#define CF_CHILD    0x0100   /* on its listener's children list */
#define CF_ABORTQ   0x0200   /* on the abort list */
#define CF_TWLIST   0x0400   /* on the TIME-WAIT FIFO (detached, in TIME-WAIT: recyclable) */
#define CF_RESV     0x0800   /* active open to a local address holding a reserved block for the
                              * listener's child (admission, api.c) */

struct conn {
    struct tcp_conn tcp;      /* first member: (struct conn *)tcp_conn_ptr */
    uint32_t gen;             /* cid = gen << 32 | index */
    uint32_t hnext;           /* hash chain / free list / reap list */
    struct wheel_node wn;
    uint32_t onext, oprev;    /* want_output list (doubly linked) */
    uint16_t eflags;          /* CF_* */
    uint8_t kind;             /* CK_* */
    uint8_t pad;
    uint32_t ngen;            /* cached next-hop neighbour: entry nidx while its gen == ngen */
    uint32_t nidx;
    uint32_t anext;           /* abort list (ACCEPT lost to a full event queue) */
    uint32_t tw_next, tw_prev; /* TIME-WAIT FIFO (CF_TWLIST), oldest at e->tw_head */
    union {
        struct { uint32_t parent, parent_gen, cnext, cprev; } ch;        /* passive child */
        struct { uint32_t backlog, synq, acceptq, head;                 /* listener */
                 uint32_t cookies_sent, cookies_ok, overflows, pad; } ls; /* (introspect.c) */
    } u;
    uint8_t lip[16], rip[16]; /* IPv4 in [0..3] */
    uint64_t t_open_us;       /* engine clock at allocation (introspect.c: duration histogram) */
};

/* ---------------- neighbour cache (neigh.c) ---------------- */
#define NEIGH_N 256
#define NEIGH_BUCKETS 512
#define NEIGH_QMAX 64           /* frames waiting per entry */
#define NEIGH_RETRIES 5         /* requests (1 s apart) before FAILED; Linux: 3 */
#define NEIGH_RETRY_US 1000000u
#define NS_FREE 0
#define NS_INCOMPLETE 1
#define NS_REACHABLE 2
#define NS_FAILED 3
struct neigh {
    uint8_t state, family, probes, nq;
    uint8_t mac[6];
    uint8_t weak;              /* INCOMPLETE, created to answer an unverified source (evicted first) */
    uint8_t pad;
    uint32_t gen;              /* bumped when the entry is reused or fails (conns cache index+gen) */
    uint8_t ip[16];
    uint64_t expires;          /* REACHABLE: refresh after; FAILED: forget after */
    uint64_t next_probe;       /* INCOMPLETE: next request */
    uint32_t qhead, qtail;     /* waiting frames (frame pool indices) */
    uint32_t hnext;
};
struct neigh_table {
    struct neigh ent[NEIGH_N];
    uint32_t bucket[NEIGH_BUCKETS];
    uint32_t incomplete;
};

/* ---------------- frame pool (tx.c) ---------------- */
/* Control frames (ARP/NDP, ICMP replies, RSTs, cookie SYN-ACKs) wait here until the output pass;
 * an RX batch flushes them to the link whenever CTRLQ_FLUSH are queued, so a burst of replies is
 * limited by the TX ring and the rate limits, not by this queue. */
#define CTRLQ_MAX 64
#define CTRLQ_FLUSH 32
#define NEIGHQ_MAX 128
#define OUTQ_MAX 256
/* what a control frame carries (counted when it reaches the wire or is dropped) */
#define FK_OTHER 0
#define FK_COOKIE 1             /* SYN-cookie SYN-ACK */
#define FK_RST 2                /* RST answering a segment without a connection */
#define FK_ICMP 3               /* ICMP / ICMPv6 echo reply */
struct frame {
    uint8_t *buf;
    uint32_t len;
    uint32_t next;
    uint8_t kind;               /* FK_* */
};
/* token bucket: rate per second, depth burst; x in token-microseconds */
struct tbucket { uint64_t last, x; uint8_t init; };
int eng_tb_take(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst);
/* the same, but only while more than `keep` tokens remain (they are kept for others) */
int eng_tb_take_above(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst, uint32_t keep);
struct fifo { uint32_t head, tail, n; };

/* ---------------- the engine ---------------- */
struct mtcp_engine {
    struct mtcp_config cfg;
    struct tcp_cfg tcp_cfg;        /* what tcp reads of cfg (eng_tcp_cfg) */
    struct mtcp_link *link;
    struct tcp_env env;
    uint64_t now;
    uint64_t counters[CTR_COUNT];
    uint8_t isn_key[16], cookie_key[16], port_key[16];
    /* RFC 6056 alg. 3 offset cache: last destination */
    uint8_t eph_rip[16];
    uint16_t eph_rport;
    uint8_t eph_family;
    uint32_t eph_off;
    uint64_t hash_seed;

    /* connection blocks */
    struct conn *conns;
    uint32_t nconns, free_head, conns_used;
    uint32_t *htab;            /* 4-tuple hash buckets */
    uint32_t hmask;
    uint32_t ltab[256];        /* listeners by port */
    uint16_t *portref[2];      /* [v4, v6][port]: references held by this engine */
#define PORT_LOG_MAX 64
    uint32_t port_log[PORT_LOG_MAX]; /* family << 16 | port of first references (snapshot.c) */
    uint32_t port_log_n;       /* PORT_LOG_MAX + 1: overflowed */
    uint32_t eph_next;

    /* out-of-order buffers */
    struct buf_ooo *ooo;
    uint32_t *ooo_next;
    uint32_t nooo, ooo_free, ooo_used;
    struct tcp_recs *recs;     /* RACK transmit records (cfg.max_rack), free list as the ooo pool */
    uint32_t *rec_next;
    uint32_t nrec, rec_free, rec_used;

    struct buf_pool pool;

    /* events */
    struct mtcp_event *ev;
    uint32_t ev_cap, ev_head, ev_n;

    /* lists */
    uint32_t out_head, out_tail, out_n;   /* want_output */
    uint32_t reap_head;
    uint32_t abort_head;           /* conns to reset at the next safe point */
    uint32_t tw_head, tw_tail, tw_n; /* detached TIME-WAIT blocks, oldest first (recycled when the pool is empty) */
    uint32_t resv;                 /* free blocks reserved for the children of local active opens (CF_RESV) */
    /* connections whose mtcp_send was cut short by an empty chunk pool (not by their sndbuf):
     * they get WRITABLE as soon as chunks are free again (else, with nothing in flight, no ACK
     * would ever wake them). Bounded; on overflow every connection is checked once. */
#define STARVED_MAX 256
    mtcp_cid starved[STARVED_MAX];
    uint32_t starved_n;
    uint8_t starved_overflow;

    struct wheel wheel;

    /* frames: control queue, neighbour wait queues, frame-API output queue */
    struct frame *frames;
    uint8_t *fmem;
    uint32_t nframes, ffree, fsize;
    struct fifo ctrlq, outq;
    uint32_t neighq_n;

    struct neigh_table neigh;
    uint64_t neigh_deadline;

    /* TX in progress (between tx_begin and tx_commit) */
    int tx_kind;               /* 0 none, 1 link slot, 2 outq frame, 3 neighbour queue, 4 scratch */
    uint32_t tx_frame;
    uint8_t *tx_buf;
    uint32_t tx_neigh;
    uint8_t tx_dmac[6];
    uint8_t tx_full;
    uint8_t tx_nulled;         /* tx_begin returned NULL during the current tcp_output */
    uint8_t *scratch;

    uint32_t l2len;            /* 14 (Ethernet) or 0 */
    uint32_t mtu;              /* effective IP MTU */
    uint16_t ip_id;
    uint16_t mss4, mss6;       /* path MSS from the MTU */
    uint64_t chal_sec;         /* RFC 5961 challenge ACK budget: current second ... */
    uint32_t chal_n;           /* ... and ACKs allowed in it so far */
    struct tbucket tb_rst, tb_icmp, tb_solicit;   /* reply rate limits (cfg rst/icmp/solicit_ratelimit) */

    /* RX context */
    const uint8_t *rx_smac;    /* source MAC of the frame being processed (NULL on IP links) */
    uint16_t rx_flags;         /* LINK_SLOT_F_* of the frame being processed */

    /* introspect.c: durations of released connections (MTCP_DUR_BUCKETS buckets) */
    uint64_t dur_hist[MTCP_DUR_BUCKETS];
    uint64_t dur_sum_us;
};

static inline struct conn *conn_of(struct tcp_conn *c) { return (struct conn *)c; }
static inline uint32_t conn_idx(const struct mtcp_engine *e, const struct conn *k) { return (uint32_t)(k - e->conns); }
static inline mtcp_cid conn_cid(const struct mtcp_engine *e, const struct conn *k) {
    return ((uint64_t)k->gen << 32) | conn_idx(e, k);
}
static inline int addr_len(int family) { return family == MTCP_AF_INET ? 4 : 16; }

/* introspect.c: a connection block is being released (duration histogram) */
void eng_introspect_conn_freed(struct mtcp_engine *e, const struct conn *k);

/* table.c */
int eng_table_init(struct mtcp_engine *e);
void eng_table_fini(struct mtcp_engine *e);
struct conn *eng_conn_alloc(struct mtcp_engine *e);
/* eng_conn_alloc, and when the pool is empty recycle the oldest TIME-WAIT block (tcp_env.c; Linux
 * never fails an open for TIME-WAIT state). NULL only when no block is free or recyclable. */
struct conn *eng_conn_alloc_recycle(struct mtcp_engine *e);
/* Admission (api.c, tcp_env.c): an active open to one of our own addresses takes two blocks, its own and
 * one reserved for the listener's child, so that a client is told "connected" only for a
 * connection the server can hold (else -ENOMEM at once). The child takes the reserved block
 * (eng_conn_take_reserved, via the client's block); CONNECTED/CONNECT_FAILED or freeing the client
 * returns an unused reservation. Other allocations leave e->resv blocks free. */
struct conn *eng_conn_take_reserved(struct mtcp_engine *e, struct conn *client);
void eng_conn_free(struct mtcp_engine *e, struct conn *k);
struct conn *eng_conn_get(struct mtcp_engine *e, mtcp_cid cid);   /* live, not detached, else NULL */
struct conn *eng_conn_lookup(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport,
                         const uint8_t *rip, uint16_t rport);
void eng_conn_hash(struct mtcp_engine *e, struct conn *k);
void eng_conn_unhash(struct mtcp_engine *e, struct conn *k);
struct conn *eng_listener_lookup(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport);
int eng_listener_conflict(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport);
void eng_listener_hash(struct mtcp_engine *e, struct conn *k);
void eng_listener_unhash(struct mtcp_engine *e, struct conn *k);
int eng_listener_count_port(struct mtcp_engine *e, int family, uint16_t port);
/* Port references: claim through the link when the first reference appears. */
int eng_port_ref(struct mtcp_engine *e, int family, uint16_t port);
void eng_port_unref(struct mtcp_engine *e, int family, uint16_t port);
int eng_port_ephemeral(struct mtcp_engine *e, int family, const uint8_t *lip, const uint8_t *rip, uint16_t rport);

/* neigh.c */
void eng_neigh_init(struct mtcp_engine *e);
/* Next hop for dst: 0 ok (nh filled), -ENETUNREACH. */
int eng_route_nexthop(struct mtcp_engine *e, int family, const uint8_t *dst, uint8_t *nh);
/* Entry for nh (created INCOMPLETE + request sent if missing); NONE32 if the table is full. */
uint32_t eng_neigh_resolve(struct mtcp_engine *e, int family, const uint8_t *nh);
/* The same for a reply to a source nothing has verified yet (a SYN, a segment to a closed port,
 * a ping): never evicts a REACHABLE or another INCOMPLETE entry, and at most NEIGH_N/2 such
 * entries are being resolved at once (a flood of spoofed sources cannot empty the cache). */
uint32_t eng_neigh_resolve_weak(struct mtcp_engine *e, int family, const uint8_t *nh);
/* 1 if a reply to dst could not even wait for resolution now (no route, a FAILED neighbour, or
 * no room for another weak resolution): the caller skips building it (a flood's cookies cost a
 * lookup, not two SipHashes and a frame). */
int eng_neigh_reply_hopeless(struct mtcp_engine *e, int family, const uint8_t *dst);
void eng_neigh_learn(struct mtcp_engine *e, int family, const uint8_t *ip, const uint8_t *mac, int create);
void eng_neigh_enqueue(struct mtcp_engine *e, uint32_t ni, uint32_t frame);
void eng_neigh_tick(struct mtcp_engine *e);
void eng_arp_input(struct mtcp_engine *e, const uint8_t *p, uint32_t len);
void eng_ndp_input(struct mtcp_engine *e, const struct wire_ipv6 *ip, const struct wire_icmp6 *icmp);

/* icmp.c */
void eng_icmp4_input(struct mtcp_engine *e, const struct wire_ipv4 *ip);
void eng_icmp6_input(struct mtcp_engine *e, const struct wire_ipv6 *ip);

/* listen.c */
int64_t eng_listen_open(struct mtcp_engine *e, const struct mtcp_addr *local, int backlog);
void eng_listen_close(struct mtcp_engine *e, struct conn *l);
/* A segment that matched no connection but a listener. */
void eng_listen_input(struct mtcp_engine *e, struct conn *l, int family, const uint8_t *lip,
                  const uint8_t *rip, const struct wire_tcp *seg);
void eng_listen_child_unlink(struct mtcp_engine *e, struct conn *k);
uint8_t eng_wscale(uint32_t rcvbuf);

/* helpers of config.c, tx.c, events.c and tcp_env.c shared by the files above */
int eng_is_local(const struct mtcp_engine *e, int family, const uint8_t *ip);
uint32_t eng_frame_get(struct mtcp_engine *e);
void eng_frame_put(struct mtcp_engine *e, uint32_t f);
/* a control frame that will never be sent: count it by kind (FK_*) and free it */
void eng_frame_drop(struct mtcp_engine *e, uint32_t f);
/* Build an IP packet (+L2) in a fresh control frame: returns the frame index and a pointer to
 * the transport header (cap bytes available), NONE32 if no buffer. dmac NULL = resolve (weakly:
 * replies go to a MAC learned by ARP/NDP only, never to a frame's source MAC). */
uint32_t eng_ctrl_begin(struct mtcp_engine *e, int family, uint8_t **l4, uint32_t *cap);
void eng_ctrl_commit(struct mtcp_engine *e, uint32_t f, int family, const uint8_t *src, const uint8_t *dst,
                 uint8_t proto, uint32_t l4len, const uint8_t *dmac, uint8_t hop_limit);
void eng_ctrl_tcp(struct mtcp_engine *e, int family, const uint8_t *src, const uint8_t *dst,
              const struct wire_tcp *t, const uint8_t *dmac);
void eng_ctrl_push(struct mtcp_engine *e, uint32_t f);
/* control queue full: send what it holds now (to the TX ring / output queue) */
void eng_ctrl_room(struct mtcp_engine *e);
void eng_reap(struct mtcp_engine *e);
void eng_push_event(struct mtcp_engine *e, struct conn *k, uint32_t type, int32_t err, uint32_t len,
                       mtcp_cid parent);
uint16_t eng_path_mss(const struct mtcp_engine *e, int family);
/* Initialises k (addresses, tcp_conn_init, timestamp offset); returns F for its ISN
 * (iss = F + now/4, RFC 6528). */
uint32_t eng_conn_setup(struct mtcp_engine *e, struct conn *k, int family, const uint8_t *lip, uint16_t lport,
                    const uint8_t *rip, uint16_t rport);

/* tcp (tcp/tcp.h) speaks its own names; the engine passes its states, events, options, address
 * families, congestion control and counter slots through unchanged, so the values must agree. */
#define ENG_SAME(a, b) _Static_assert((long)(a) == (long)(b), #a " == " #b)
ENG_SAME(MTCP_ST_CLOSED, TCP_ST_CLOSED);
ENG_SAME(MTCP_ST_LISTEN, TCP_ST_LISTEN);
ENG_SAME(MTCP_ST_SYN_SENT, TCP_ST_SYN_SENT);
ENG_SAME(MTCP_ST_SYN_RECEIVED, TCP_ST_SYN_RECEIVED);
ENG_SAME(MTCP_ST_ESTABLISHED, TCP_ST_ESTABLISHED);
ENG_SAME(MTCP_ST_FIN_WAIT_1, TCP_ST_FIN_WAIT_1);
ENG_SAME(MTCP_ST_FIN_WAIT_2, TCP_ST_FIN_WAIT_2);
ENG_SAME(MTCP_ST_CLOSE_WAIT, TCP_ST_CLOSE_WAIT);
ENG_SAME(MTCP_ST_CLOSING, TCP_ST_CLOSING);
ENG_SAME(MTCP_ST_LAST_ACK, TCP_ST_LAST_ACK);
ENG_SAME(MTCP_ST_TIME_WAIT, TCP_ST_TIME_WAIT);
ENG_SAME(MTCP_EV_ACCEPT, TCP_EV_ACCEPT);
ENG_SAME(MTCP_EV_CONNECTED, TCP_EV_CONNECTED);
ENG_SAME(MTCP_EV_CONNECT_FAILED, TCP_EV_CONNECT_FAILED);
ENG_SAME(MTCP_EV_READABLE, TCP_EV_READABLE);
ENG_SAME(MTCP_EV_WRITABLE, TCP_EV_WRITABLE);
ENG_SAME(MTCP_EV_PEER_CLOSED, TCP_EV_PEER_CLOSED);
ENG_SAME(MTCP_EV_ERROR, TCP_EV_ERROR);
ENG_SAME(MTCP_EV_CLOSED, TCP_EV_CLOSED);
ENG_SAME(MTCP_OPT_NODELAY, TCP_OPT_NODELAY);
ENG_SAME(MTCP_OPT_KEEPALIVE, TCP_OPT_KEEPALIVE);
ENG_SAME(MTCP_OPT_KEEPIDLE, TCP_OPT_KEEPIDLE);
ENG_SAME(MTCP_OPT_KEEPINTVL, TCP_OPT_KEEPINTVL);
ENG_SAME(MTCP_OPT_KEEPCNT, TCP_OPT_KEEPCNT);
ENG_SAME(MTCP_OPT_SNDBUF, TCP_OPT_SNDBUF);
ENG_SAME(MTCP_OPT_RCVBUF, TCP_OPT_RCVBUF);
ENG_SAME(MTCP_OPT_LINGER_ZERO, TCP_OPT_LINGER_ZERO);
ENG_SAME(MTCP_AF_INET, TCP_AF_INET);
ENG_SAME(MTCP_AF_INET6, TCP_AF_INET6);
ENG_SAME(MTCP_CC_CUBIC, TCP_CC_CUBIC);
ENG_SAME(MTCP_CC_RENO, TCP_CC_RENO);
ENG_SAME(CTR_RETRANS_SEGS, TCP_CTR_RETRANS_SEGS);
ENG_SAME(CTR_FAST_RETRANS, TCP_CTR_FAST_RETRANS);
ENG_SAME(CTR_TIMEOUTS, TCP_CTR_TIMEOUTS);
ENG_SAME(CTR_SYN_RETRANS, TCP_CTR_SYN_RETRANS);
ENG_SAME(CTR_OUT_OF_WINDOW, TCP_CTR_OUT_OF_WINDOW);
ENG_SAME(CTR_CHALLENGE_ACKS, TCP_CTR_CHALLENGE_ACKS);
ENG_SAME(CTR_CHALLENGE_ACKS_LIMITED, TCP_CTR_CHALLENGE_ACKS_LIMITED);
ENG_SAME(CTR_PAWS_DROPS, TCP_CTR_PAWS_DROPS);
ENG_SAME(CTR_RST_IN, TCP_CTR_RST_IN);
ENG_SAME(CTR_RST_OUT, TCP_CTR_RST_OUT);
ENG_SAME(CTR_OOO_SEGS, TCP_CTR_OOO_SEGS);
ENG_SAME(CTR_OOO_DROPS, TCP_CTR_OOO_DROPS);
ENG_SAME(CTR_DUP_ACKS, TCP_CTR_DUP_ACKS);
ENG_SAME(CTR_SACK_RECOVERY, TCP_CTR_SACK_RECOVERY);
ENG_SAME(CTR_KEEPALIVE_PROBES, TCP_CTR_KEEPALIVE_PROBES);
ENG_SAME(CTR_PERSIST_PROBES, TCP_CTR_PERSIST_PROBES);
ENG_SAME(CTR_DELAYED_ACKS, TCP_CTR_DELAYED_ACKS);
ENG_SAME(CTR_RCV_PRUNED, TCP_CTR_RCV_PRUNED);
ENG_SAME(CTR_TLP_PROBES, TCP_CTR_TLP_PROBES);
ENG_SAME(CTR_RACK_LOST, TCP_CTR_RACK_LOST);
ENG_SAME(CTR_OOW_ACKS_LIMITED, TCP_CTR_OOW_ACKS_LIMITED);
ENG_SAME(CTR_RACK_NO_REC, TCP_CTR_RACK_NO_REC);
ENG_SAME(CTR_OOO_PRUNED, TCP_CTR_OOO_PRUNED);
ENG_SAME(CTR_COUNT >= TCP_CTR_SLOTS, 1);
#undef ENG_SAME

/* config.c: the fields of cfg tcp reads */
void eng_tcp_cfg(struct tcp_cfg *t, const struct mtcp_config *c);
/* api.c: tcp_info plus the engine's view (listener, released) and addresses */
void eng_conn_info(const struct conn *k, struct mtcp_conn_info *out);

/* config.c */
int eng_config_validate(const struct mtcp_config *c, const struct mtcp_link *l, char *err, size_t el);
/* "field: why" into err; returns -EINVAL */
int eng_config_error(char *err, size_t errlen, const char *field, const char *why);
int eng_addr_zero(const uint8_t *a, int n);
/* tx.c */
/* IP header (+ Ethernet header when dmac != NULL) in front of an l4 payload at
 * buf + l2len + iphl; returns the frame length */
uint32_t eng_write_headers(struct mtcp_engine *e, uint8_t *buf, int family, const uint8_t *src,
                           const uint8_t *dst, uint8_t proto, uint32_t l4len, const uint8_t *dmac,
                           uint8_t hop);
uint32_t eng_ctrl_out(struct mtcp_engine *e);
void eng_ctrl_flush(struct mtcp_engine *e);
uint32_t eng_output_pass(struct mtcp_engine *e);
void eng_wake_starved(struct mtcp_engine *e);
/* tcp_env.c */
void eng_env_init(struct mtcp_engine *e);
void eng_env_event(void *ctx, struct tcp_conn *c, uint32_t type, int32_t err, uint32_t len);
void eng_tx_release(struct mtcp_engine *e);
void eng_out_add(struct mtcp_engine *e, struct conn *k);
void eng_out_del(struct mtcp_engine *e, struct conn *k);
void eng_tw_check(struct mtcp_engine *e, struct conn *k);
void eng_make_zombie(struct mtcp_engine *e, struct conn *k);
int eng_blocks_room(struct mtcp_engine *e, uint32_t need);
void eng_resv_release(struct mtcp_engine *e, struct conn *k);
/* rx.c */
void eng_rx_frame(struct mtcp_engine *e, const uint8_t *p, uint32_t len, uint16_t flags);
uint32_t eng_rx_batch(struct mtcp_engine *e, struct mtcp_link *l);

/* Helpers shared by engine.c, rx.c, tx.c, tcp_env.c, poll.c and api.c */
static inline void eng_set_now(struct mtcp_engine *e, uint64_t now) {
    if (now > e->now) e->now = now;
    if (!e->wheel.started) eng_wheel_start(&e->wheel, now);
}
static inline uint32_t eng_iphl_of(int family) { return family == MTCP_AF_INET ? 20 : 40; }
static inline void eng_fifo_push(struct mtcp_engine *e, struct fifo *q, uint32_t f) {
    e->frames[f].next = NONE32;
    if (q->tail == NONE32) q->head = f; else e->frames[q->tail].next = f;
    q->tail = f;
    q->n++;
}
static inline uint32_t eng_fifo_pop(struct mtcp_engine *e, struct fifo *q) {
    uint32_t f = q->head;
    if (f == NONE32) return NONE32;
    q->head = e->frames[f].next;
    if (q->head == NONE32) q->tail = NONE32;
    q->n--;
    return f;
}

#endif
