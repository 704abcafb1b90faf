/*
 * wire.h — parse and emit Ethernet, ARP, IPv4, IPv6 (+NDP), ICMPv4/v6 and TCP.
 * Pure: no I/O, no clock, no malloc. Every parser bounds-checks and returns a negative
 * WIRE_E_* reason on bad input (the engine counts drops by reason); never reads out of bounds.
 *
 * "Repr" structs hold fields in HOST byte order, except addresses, which stay as byte arrays
 * in network order (ip4[4], ip6[16], mac[6]). Emitters write every field of the header
 * (tests fill buffers with 0xa5 first) and return the number of bytes written, or 0 if cap
 * is too small.
 */
#ifndef MTCP_WIRE_H
#define MTCP_WIRE_H
#include <stdint.h>
#include <stddef.h>

/* ---- drop reasons (negative return values) ---- */
enum wire_err {
    WIRE_OK = 0,
    WIRE_E_TRUNCATED = -1,      /* shorter than the header / than a length field says */
    WIRE_E_BAD_VERSION = -2,
    WIRE_E_BAD_HDRLEN = -3,     /* IHL < 5, TCP data offset < 5 or beyond the segment */
    WIRE_E_BAD_LEN = -4,        /* total/payload length inconsistent */
    WIRE_E_BAD_CSUM = -5,
    WIRE_E_FRAGMENT = -6,       /* IPv4 fragment (MF or offset != 0), IPv6 fragment header */
    WIRE_E_OPT_OVERRUN = -7,    /* TCP option length runs past the header */
    WIRE_E_OPT_BAD_LEN = -8,    /* zero/one-length option, wrong length for a known kind */
    WIRE_E_BAD_FLAGS = -9,      /* impossible TCP flags: SYN+FIN, SYN+RST, no flag at all, ... */
    WIRE_E_BAD_ADDR = -10,      /* broadcast/multicast source, port 0, ... */
    WIRE_E_UNSUPPORTED = -11,   /* unknown ethertype / protocol / ICMP type we don't handle */
    WIRE_E_COUNT_ = 12          /* number of reasons incl. OK, for counter arrays */
};
const char *wire_err_name(int err);

/* ---- checksums (RFC 1071, incremental RFC 1624) ---- */
/* Add len bytes at data to a 32-bit accumulator (big-endian 16-bit words; odd length padded). */
uint32_t wire_csum_add(uint32_t sum, const void *data, size_t len);
/* Fold to 16 bits and complement: the value to store in a header (network order as uint16 host value). */
uint16_t wire_csum_fold(uint32_t sum);
/* Pseudo-header sums. len = transport length (header + payload). */
uint32_t wire_pseudo4(const uint8_t src[4], const uint8_t dst[4], uint8_t proto, uint32_t len);
uint32_t wire_pseudo6(const uint8_t src[16], const uint8_t dst[16], uint8_t next, uint32_t len);
/* RFC 1624 eqn. 3: new checksum after a 16-bit field changed from old_val to new_val. */
uint16_t wire_csum_update16(uint16_t csum, uint16_t old_val, uint16_t new_val);

/* ---- Ethernet II ---- */
#define WIRE_ETH_HLEN 14
#define WIRE_ETHERTYPE_IPV4 0x0800
#define WIRE_ETHERTYPE_ARP 0x0806
#define WIRE_ETHERTYPE_IPV6 0x86DD
struct wire_eth {
    uint8_t dst[6];
    uint8_t src[6];
    uint16_t ethertype;
};
int wire_eth_parse(const uint8_t *buf, size_t len, struct wire_eth *out);   /* returns WIRE_ETH_HLEN or <0 */
size_t wire_eth_emit(uint8_t *buf, size_t cap, const struct wire_eth *eth);

/* ---- ARP (Ethernet/IPv4 only) ---- */
#define WIRE_ARP_LEN 28
#define WIRE_ARP_REQUEST 1
#define WIRE_ARP_REPLY 2
struct wire_arp {
    uint16_t op;
    uint8_t sha[6];
    uint8_t spa[4];
    uint8_t tha[6];
    uint8_t tpa[4];
};
int wire_arp_parse(const uint8_t *buf, size_t len, struct wire_arp *out);   /* 0 or <0 */
size_t wire_arp_emit(uint8_t *buf, size_t cap, const struct wire_arp *arp);

/* ---- IPv4 ---- */
#define WIRE_IPV4_HLEN 20
#define WIRE_PROTO_ICMP 1
#define WIRE_PROTO_TCP 6
#define WIRE_PROTO_UDP 17
#define WIRE_PROTO_ICMPV6 58
struct wire_ipv4 {
    uint8_t hdr_len;        /* bytes, incl. options (parse); emit always writes 20 */
    uint8_t tos;
    uint16_t total_len;     /* header + payload */
    uint16_t id;
    uint16_t frag;          /* flags (DF=0x4000, MF=0x2000) | offset */
    uint8_t ttl;
    uint8_t proto;
    uint8_t src[4];
    uint8_t dst[4];
    /* parse output only: */
    const uint8_t *payload;
    uint32_t payload_len;   /* total_len - hdr_len (link padding excluded) */
};
/* Checks version, IHL, total length vs len, header checksum; rejects fragments with
 * WIRE_E_FRAGMENT (after filling *out, so the caller can count them). Options are skipped. */
int wire_ipv4_parse(const uint8_t *buf, size_t len, struct wire_ipv4 *out);
/* Writes a 20-byte header with the checksum computed; ip->hdr_len ignored, DF as given. */
size_t wire_ipv4_emit(uint8_t *buf, size_t cap, const struct wire_ipv4 *ip);

/* ---- IPv6 (fixed header; extension headers: hop-by-hop/dest/routing skipped, fragment rejected) ---- */
#define WIRE_IPV6_HLEN 40
struct wire_ipv6 {
    uint8_t tclass;
    uint32_t flow;          /* 20 bits */
    uint16_t payload_len;   /* as in the header (emit) */
    uint8_t next;           /* parse: the upper-layer protocol after skipping extension headers */
    uint8_t hop_limit;
    uint8_t src[16];
    uint8_t dst[16];
    /* parse output only: */
    const uint8_t *payload; /* upper-layer header */
    uint32_t upper_len;     /* bytes of upper layer (payload_len minus extension headers) */
};
int wire_ipv6_parse(const uint8_t *buf, size_t len, struct wire_ipv6 *out);
size_t wire_ipv6_emit(uint8_t *buf, size_t cap, const struct wire_ipv6 *ip);

/* ---- ICMPv4 ---- */
#define WIRE_ICMP4_ECHO_REPLY 0
#define WIRE_ICMP4_DEST_UNREACH 3     /* code 4 = fragmentation needed (RFC 1191) */
#define WIRE_ICMP4_ECHO_REQUEST 8
struct wire_icmp4 {
    uint8_t type, code;
    uint16_t id, seq;       /* echo */
    uint16_t next_mtu;      /* dest unreach code 4 */
    const uint8_t *data;    /* echo: payload after the 8-byte header; unreach: the quoted IP header+ */
    uint32_t data_len;
};
/* Verifies the ICMP checksum over len bytes. */
int wire_icmp4_parse(const uint8_t *buf, size_t len, struct wire_icmp4 *out);
/* Writes the 8-byte header + data (copied from icmp->data) with checksum. */
size_t wire_icmp4_emit(uint8_t *buf, size_t cap, const struct wire_icmp4 *icmp);

/* ---- ICMPv6 incl. NDP (RFC 4861) ---- */
#define WIRE_ICMP6_PACKET_TOO_BIG 2
#define WIRE_ICMP6_ECHO_REQUEST 128
#define WIRE_ICMP6_ECHO_REPLY 129
#define WIRE_ICMP6_NEIGH_SOLICIT 135
#define WIRE_ICMP6_NEIGH_ADVERT 136
#define WIRE_NDP_FLAG_ROUTER 0x80000000u
#define WIRE_NDP_FLAG_SOLICITED 0x40000000u
#define WIRE_NDP_FLAG_OVERRIDE 0x20000000u
struct wire_icmp6 {
    uint8_t type, code;
    uint16_t id, seq;         /* echo */
    uint32_t mtu;             /* packet too big */
    uint32_t nd_flags;        /* NA: R/S/O bits as above */
    uint8_t target[16];       /* NS/NA target address */
    uint8_t has_lladdr;       /* NS: source link-layer option; NA: target link-layer option */
    uint8_t lladdr[6];
    const uint8_t *data;      /* echo payload / too-big quoted packet */
    uint32_t data_len;
};
/* Verifies the checksum with the IPv6 pseudo-header (src/dst from the IP header); NDP options
 * are bounds-checked (zero-length option = WIRE_E_OPT_BAD_LEN). */
int wire_icmp6_parse(const uint8_t *buf, size_t len, const uint8_t src[16], const uint8_t dst[16],
                     struct wire_icmp6 *out);
size_t wire_icmp6_emit(uint8_t *buf, size_t cap, const uint8_t src[16], const uint8_t dst[16],
                       const struct wire_icmp6 *icmp);

/* ---- TCP ---- */
#define WIRE_TCP_HLEN 20
#define WIRE_TCP_MAX_HLEN 60
#define WIRE_TCP_FIN 0x01
#define WIRE_TCP_SYN 0x02
#define WIRE_TCP_RST 0x04
#define WIRE_TCP_PSH 0x08
#define WIRE_TCP_ACK 0x10
#define WIRE_TCP_URG 0x20
#define WIRE_TCP_ECE 0x40
#define WIRE_TCP_CWR 0x80
#define WIRE_TCP_MAX_SACK 4
struct wire_sack_block { uint32_t left, right; };
struct wire_tcp {
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t hdr_len;          /* parse: data offset in bytes; emit: computed */
    uint8_t flags;            /* WIRE_TCP_* */
    uint16_t win;             /* raw (unscaled) window field */
    uint16_t csum;            /* parse: as received */
    uint16_t urg;
    /* options */
    uint8_t has_mss, has_wscale, sack_perm, has_ts;
    uint16_t mss;
    uint8_t wscale;           /* parse: clamped to 14 (RFC 7323 2.3) */
    uint8_t nsack;
    uint32_t tsval, tsecr;
    struct wire_sack_block sack[WIRE_TCP_MAX_SACK];
    /* payload (parse: points into the segment) */
    const uint8_t *payload;
    uint32_t payload_len;
};
/* Parses header + options of a segment of len bytes (the IP layer's upper-layer length).
 * Does NOT verify the checksum (see wire_tcp_csum_ok). Rejects impossible flag combinations
 * (SYN+FIN, SYN+RST, FIN/RST/... with none of SYN/ACK/RST, no flags) with WIRE_E_BAD_FLAGS,
 * option overruns, zero-length options and wrong lengths for MSS/WS/SACKOK/SACK/TS. Unknown
 * options are skipped by their length. */
int wire_tcp_parse(const uint8_t *seg, size_t len, struct wire_tcp *out);
/* Emits header + options (MSS, WS, SACK-permitted, TS, SACK blocks as set; NOP-padded to a
 * 4-byte boundary; SACK blocks trimmed to what fits in 40 option bytes) with csum field 0.
 * Returns the header length written (hdr_len field set accordingly), 0 if cap too small.
 * Payload is NOT copied: the caller places it right after the header. */
size_t wire_tcp_emit(uint8_t *buf, size_t cap, const struct wire_tcp *tcp);
/* Header length wire_tcp_emit would produce for these options. */
size_t wire_tcp_hdr_len(const struct wire_tcp *tcp);
/* Checksum helpers: verify / fill the checksum of a whole segment (header+payload, len bytes)
 * given a pseudo-header sum from wire_pseudo4/6. */
int wire_tcp_csum_ok(const uint8_t *seg, size_t len, uint32_t pseudo);
void wire_tcp_csum_fill(uint8_t *seg, size_t len, uint32_t pseudo);

/* ---- small helpers ---- */
static inline uint16_t wire_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t wire_get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wire_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wire_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

#endif
