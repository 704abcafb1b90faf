/*
 * steer.h — per-core flow steering (io/steer.c), internals shared with the tests.
 *
 * The steering function (one definition, three implementations that must agree):
 *   - C: link_steer_frame() / mtcp_steer_flow(), used by the steering wrapper link and by claim_port;
 *   - eBPF socket filter for TUNSETSTEERINGEBPF (TAP), built by link_steer_build_ebpf();
 *   - classic BPF for PACKET_FANOUT_CBPF (AF_PACKET), built by link_steer_build_cbpf().
 * Both programs take the protocol from skb->protocol and read headers at `net` + offset, where
 * `net` is where the network header is relative to skb->data: 14 on the TAP transmit path
 * (ndo_select_queue sees the frame from its mac header), 0 on the packet-socket receive path
 * (fanout runs after the mac header was pulled). Plain offsets work on non-linear skbs (the
 * kernel's load helper copies across fragments); SKF_NET_OFF-relative loads would not (they
 * need the bytes in the linear area: a GRO'd frame from a bridged NIC could fail them and the
 * program would return 0). `net` = SKF_NET_OFF is accepted too (tests).
 *
 *   frame not IPv4/IPv6 TCP (ARP, ICMP, IPv6 with extension headers, IPv4 fragments) -> queue 0
 *   TCP with our port P = dport in [eph_lo, eph_hi]   -> P % n           (active opens: the
 *                                                        engine asks claim_port for P)
 *   TCP otherwise (listeners)                          -> (mul(fold(saddr) ^ sport) >> 16) % n
 *       fold(saddr): IPv4 the address as a big-endian u32, IPv6 the xor of its four words;
 *       mul(x) = x * 0x9e3779b1 (mod 2^32).
 * The programs return slots[q]: the kernel's member index of logical queue q (TAP queues and
 * fanout members are numbered in attach order and the last one moves into a closed one's place,
 * so after a restart the supervisor passes the permutation).
 */
#ifndef MTCP_IO_STEER_H
#define MTCP_IO_STEER_H
#include <stdint.h>
#include <linux/filter.h>
#include <linux/bpf.h>
#include "link.h"

#define STEER_MUL 0x9e3779b1u
#define STEER_PROG_MAX 512
#define STEER_NET_TAP 14       /* network header offset from skb->data in tun_select_queue */
#define STEER_NET_FANOUT 0     /* ... in packet_rcv_fanout (receive path) */

enum steer_kind { STEER_TCP = 0, STEER_NEIGH = 1, STEER_OTHER = 2 };

/* Logical queue of a frame arriving at the stack, and its kind (TCP / neighbour reply
 * (ARP reply, ICMPv6 neighbour advertisement) / other). */
uint32_t link_steer_frame(const uint8_t *f, uint32_t len, uint32_t nq, uint16_t lo, uint16_t hi, int *kind);

/* Program builders: return the instruction count or -E2BIG. slots NULL = identity. */
int link_steer_build_cbpf(struct sock_filter *out, int max, uint32_t nq, uint16_t lo, uint16_t hi,
                     const uint32_t *slots, int32_t net);
int link_steer_build_ebpf(struct bpf_insn *out, int max, uint32_t nq, uint16_t lo, uint16_t hi,
                     const uint32_t *slots, int32_t net);
/* Load the eBPF program as BPF_PROG_TYPE_SOCKET_FILTER; fd or -errno (log into log if given). */
int link_steer_load_ebpf(const struct bpf_insn *insns, int n, char *log, size_t loglen);

#endif
