/*
 * steer.c — per-core flow steering: the steering function (C, eBPF for TAP's
 * TUNSETSTEERINGEBPF, classic BPF for AF_PACKET's PACKET_FANOUT_CBPF; see steer.h for the
 * definition all three share), and the steering wrapper link (mtcp_steer_wrap).
 *
 * The wrapper sits between one worker's engine and its queue of a real backend:
 *   - claim_port: an ephemeral port P (eph_lo..eph_hi) is ours only if P % nqueues == queue,
 *     so the engine's RFC 6056 allocator skips ports whose replies would land on another
 *     core (-EAGAIN) — mTCP's RSS-aware active-open port choice, with a steering function
 *     chosen so that it only depends on the local port for active opens.
 *   - RX: after the inner rxsync, every frame is classified with the C steering function.
 *     Frames of flows this queue owns are exposed to the engine without a copy (the wrapper's
 *     RX slots point at the inner ring's buffers; the engine consumes a whole batch per poll,
 *     so the inner slots are released on the next rxsync). TCP frames of another queue's
 *     flows ("misdirected": zero when the kernel steers, non-zero for AF_XDP on a veth whose
 *     queue choice we do not control) are never shown to the engine (it would answer them
 *     with RST): with a hand-off area they are copied to the owner, else dropped; both counted.
 *     Neighbour replies (ARP reply, ICMPv6 NA) are kept AND copied to every other worker:
 *     the kernel answers a worker's ARP request on whatever queue the steering picks (queue
 *     0), while every worker's engine keeps its own neighbour cache.
 *   - TX: pass-through: the wrapper's TX ring shares the inner ring's slot array; txsync
 *     copies the indices across.
 *
 * Hand-off area (shared memory, e.g. an anonymous MAP_SHARED mapping made by the supervisor
 * before it forks the workers): a header and a broadcast log of fixed-size slots. A writer
 * takes a sequence number with an atomic fetch-add, fills slot seq % nslots and publishes it
 * by storing seq + 1 into the slot (release). Every reader keeps its own cursor, copies the
 * slots addressed to it (or to all) and re-checks the slot's sequence after the copy (a
 * lapped slot is counted as lost, not delivered torn). Writers wake the target's eventfd.
 * No locks: a worker killed in the middle of a write loses that one frame.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include "steer.h"
#include "io_util.h"

#define ETH_HLEN_ 14
#define ET_IP4 0x0800
#define ET_IP6 0x86dd
#define ET_ARP 0x0806

static inline uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t steer_tcp(uint32_t fold, uint32_t sport, uint32_t dport, uint32_t nq,
                                 uint16_t lo, uint16_t hi)
{
    if (nq <= 1)
        return 0;
    if (dport >= lo && dport <= hi)
        return dport % nq;
    uint32_t h = (fold ^ sport) * STEER_MUL;
    return (h >> 16) % nq;
}

uint32_t link_steer_frame(const uint8_t *f, uint32_t len, uint32_t nq, uint16_t lo, uint16_t hi, int *kind)
{
    *kind = STEER_OTHER;
    if (len < ETH_HLEN_)
        return 0;
    uint32_t et = rd16(f + 12);
    const uint8_t *n = f + ETH_HLEN_;
    uint32_t nl = len - ETH_HLEN_;
    if (et == ET_ARP) {
        if (nl >= 8 && rd16(n + 6) == 2)
            *kind = STEER_NEIGH;
        return 0;
    }
    if (et == ET_IP4) {
        if (nl < 20 || n[9] != 6 || (rd16(n + 6) & 0x1fff))
            return 0;
        uint32_t ihl = (uint32_t)(n[0] & 0xf) * 4;
        if (nl < ihl + 4)
            return 0;
        *kind = STEER_TCP;
        return steer_tcp(rd32(n + 12), rd16(n + ihl), rd16(n + ihl + 2), nq, lo, hi);
    }
    if (et == ET_IP6) {
        if (nl < 44)
            return 0;
        if (n[6] == 58 && nl >= 41 && n[40] == 136) {     /* ICMPv6 neighbour advertisement */
            *kind = STEER_NEIGH;
            return 0;
        }
        if (n[6] != 6)
            return 0;
        uint32_t fold = rd32(n + 8) ^ rd32(n + 12) ^ rd32(n + 16) ^ rd32(n + 20);
        *kind = STEER_TCP;
        return steer_tcp(fold, rd16(n + 40), rd16(n + 42), nq, lo, hi);
    }
    return 0;
}

uint32_t mtcp_steer_frame(const uint8_t *frame, uint32_t len, uint32_t nqueues, uint16_t eph_lo,
                          uint16_t eph_hi)
{
    int kind;
    return link_steer_frame(frame, len, nqueues, eph_lo, eph_hi, &kind);
}

uint32_t mtcp_steer_flow(int family, const uint8_t *remote_ip, uint16_t remote_port, uint16_t local_port,
                         uint32_t nqueues, uint16_t eph_lo, uint16_t eph_hi)
{
    uint32_t fold = family == MTCP_AF_INET6
        ? rd32(remote_ip) ^ rd32(remote_ip + 4) ^ rd32(remote_ip + 8) ^ rd32(remote_ip + 12)
        : rd32(remote_ip);
    return steer_tcp(fold, remote_port, local_port, nqueues, eph_lo, eph_hi);
}

/* ------------------------------------------------------------------------------------------
 * classic BPF (PACKET_FANOUT_CBPF)
 * ------------------------------------------------------------------------------------------ */
enum { L_V4, L_V6, L_COMMON, L_HASH, L_MAP, L_Q0, L_RET0 };   /* L_RET0 + q: "return slots[q]" */
#define L_NONE (-1)

struct casm {
    struct sock_filter *f;
    int lt[STEER_PROG_MAX], lf[STEER_PROG_MAX], ja[STEER_PROG_MAX];
    int pos[L_RET0 + 256];
    int n, max;
};

static void c_emit(struct casm *a, uint16_t code, uint32_t k, int lt, int lf, int ja)
{
    if (a->n < a->max) {
        a->f[a->n] = (struct sock_filter){ code, 0, 0, k };
        a->lt[a->n] = lt;
        a->lf[a->n] = lf;
        a->ja[a->n] = ja;
    }
    a->n++;
}
#define C_S(a, code, k) c_emit(a, (uint16_t)(code), (uint32_t)(k), L_NONE, L_NONE, L_NONE)
#define C_J(a, code, k, t, f) c_emit(a, (uint16_t)(code), (uint32_t)(k), t, f, L_NONE)
#define C_JA(a, l) c_emit(a, BPF_JMP | BPF_JA, 0, L_NONE, L_NONE, l)
#define C_LABEL(a, l) ((a)->pos[l] = (a)->n)

static inline uint32_t slot_of(const uint32_t *slots, uint32_t q) { return slots ? slots[q] : q; }

int link_steer_build_cbpf(struct sock_filter *out, int max, uint32_t nq, uint16_t lo, uint16_t hi,
                     const uint32_t *slots, int32_t net)
{
    static const int next = -2;        /* "fall through": offset 0 */
    if (nq == 0 || nq > 256 || max > STEER_PROG_MAX)
        return -EINVAL;
    struct casm *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->f = out;
    a->max = max;
    for (size_t i = 0; i < sizeof(a->pos) / sizeof(a->pos[0]); i++)
        a->pos[i] = -1;
    const uint32_t NET = (uint32_t)net;
    C_S(a, BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
    C_J(a, BPF_JMP | BPF_JEQ | BPF_K, ET_IP4, L_V4, next);
    C_J(a, BPF_JMP | BPF_JEQ | BPF_K, ET_IP6, L_V6, L_Q0);
    C_LABEL(a, L_V4);
    C_S(a, BPF_LD | BPF_B | BPF_ABS, NET + 9);
    C_J(a, BPF_JMP | BPF_JEQ | BPF_K, 6, next, L_Q0);
    C_S(a, BPF_LD | BPF_H | BPF_ABS, NET + 6);
    C_J(a, BPF_JMP | BPF_JSET | BPF_K, 0x1fff, L_Q0, next);
    C_S(a, BPF_LD | BPF_W | BPF_ABS, NET + 12);
    C_S(a, BPF_ST, 0);
    C_S(a, BPF_LDX | BPF_B | BPF_MSH, NET + 0);
    C_S(a, BPF_LD | BPF_H | BPF_IND, NET + 0);
    C_S(a, BPF_ST, 1);
    C_S(a, BPF_LD | BPF_H | BPF_IND, NET + 2);
    C_JA(a, L_COMMON);
    C_LABEL(a, L_V6);
    C_S(a, BPF_LD | BPF_B | BPF_ABS, NET + 6);
    C_J(a, BPF_JMP | BPF_JEQ | BPF_K, 6, next, L_Q0);
    C_S(a, BPF_LD | BPF_W | BPF_ABS, NET + 8);
    for (uint32_t off = 12; off <= 20; off += 4) {
        C_S(a, BPF_MISC | BPF_TAX, 0);
        C_S(a, BPF_LD | BPF_W | BPF_ABS, NET + off);
        C_S(a, BPF_ALU | BPF_XOR | BPF_X, 0);
    }
    C_S(a, BPF_ST, 0);
    C_S(a, BPF_LD | BPF_H | BPF_ABS, NET + 40);
    C_S(a, BPF_ST, 1);
    C_S(a, BPF_LD | BPF_H | BPF_ABS, NET + 42);
    C_LABEL(a, L_COMMON);
    C_J(a, BPF_JMP | BPF_JGE | BPF_K, lo, next, L_HASH);
    C_J(a, BPF_JMP | BPF_JGT | BPF_K, hi, L_HASH, next);
    C_S(a, BPF_ALU | BPF_MOD | BPF_K, nq);
    C_JA(a, L_MAP);
    C_LABEL(a, L_HASH);
    C_S(a, BPF_LD | BPF_MEM, 0);
    C_S(a, BPF_MISC | BPF_TAX, 0);
    C_S(a, BPF_LD | BPF_MEM, 1);
    C_S(a, BPF_ALU | BPF_XOR | BPF_X, 0);
    C_S(a, BPF_ALU | BPF_MUL | BPF_K, STEER_MUL);
    C_S(a, BPF_ALU | BPF_RSH | BPF_K, 16);
    C_S(a, BPF_ALU | BPF_MOD | BPF_K, nq);
    C_LABEL(a, L_MAP);
    for (uint32_t q = 1; q < nq; q++)
        C_J(a, BPF_JMP | BPF_JEQ | BPF_K, q, L_RET0 + (int)q, next);
    C_LABEL(a, L_Q0);
    C_S(a, BPF_RET | BPF_K, slot_of(slots, 0));
    for (uint32_t q = 1; q < nq; q++) {
        C_LABEL(a, L_RET0 + (int)q);
        C_S(a, BPF_RET | BPF_K, slot_of(slots, q));
    }
    int n = a->n;
    if (n > max) {
        free(a);
        return -E2BIG;
    }
    for (int i = 0; i < n; i++) {
        if (a->ja[i] != L_NONE) {
            out[i].k = (uint32_t)(a->pos[a->ja[i]] - (i + 1));
            continue;
        }
        if (a->lt[i] != L_NONE) {
            int t = a->lt[i] == next ? i + 1 : a->pos[a->lt[i]];
            int f = a->lf[i] == next ? i + 1 : a->pos[a->lf[i]];
            if (t - (i + 1) > 255 || f - (i + 1) > 255 || t < i + 1 || f < i + 1) {
                free(a);
                return -E2BIG;
            }
            out[i].jt = (uint8_t)(t - (i + 1));
            out[i].jf = (uint8_t)(f - (i + 1));
        }
    }
    free(a);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * eBPF socket filter (TUNSETSTEERINGEBPF)
 * ------------------------------------------------------------------------------------------ */
struct easm {
    struct bpf_insn *f;
    int lab[STEER_PROG_MAX];
    int pos[L_RET0 + 256];
    int n, max;
};

static void e_emit(struct easm *a, uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm, int lab)
{
    if (a->n < a->max) {
        a->f[a->n] = (struct bpf_insn){ .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm };
        a->lab[a->n] = lab;
    }
    a->n++;
}
#define E_LDABS(a, sz, k) e_emit(a, BPF_LD | (sz) | BPF_ABS, 0, 0, 0, (int32_t)(k), L_NONE)
#define E_LDIND(a, sz, src, k) e_emit(a, BPF_LD | (sz) | BPF_IND, 0, src, 0, (int32_t)(k), L_NONE)
#define E_MOV64X(a, d, s) e_emit(a, BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0, L_NONE)
#define E_MOV32X(a, d, s) e_emit(a, BPF_ALU | BPF_MOV | BPF_X, d, s, 0, 0, L_NONE)
#define E_MOV64K(a, d, k) e_emit(a, BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, (int32_t)(k), L_NONE)
#define E_ALU32K(a, op, d, k) e_emit(a, BPF_ALU | (op) | BPF_K, d, 0, 0, (int32_t)(k), L_NONE)
#define E_ALU32X(a, op, d, s) e_emit(a, BPF_ALU | (op) | BPF_X, d, s, 0, 0, L_NONE)
#define E_JK(a, op, d, k, l) e_emit(a, BPF_JMP | (op) | BPF_K, d, 0, 0, (int32_t)(k), l)
#define E_JA(a, l) e_emit(a, BPF_JMP | BPF_JA, 0, 0, 0, 0, l)
#define E_EXIT(a) e_emit(a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0, L_NONE)
#define E_LABEL(a, l) ((a)->pos[l] = (a)->n)

int link_steer_build_ebpf(struct bpf_insn *out, int max, uint32_t nq, uint16_t lo, uint16_t hi,
                     const uint32_t *slots, int32_t net)
{
    if (nq == 0 || nq > 256 || max > STEER_PROG_MAX)
        return -EINVAL;
    struct easm *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->f = out;
    a->max = max;
    const int32_t NET = net;
    E_MOV64X(a, BPF_REG_6, BPF_REG_1);
    /* r0 = __sk_buff.protocol (network order in the low 16 bits) -> host order */
    e_emit(a, BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_6, (int16_t)offsetof(struct __sk_buff, protocol), 0, L_NONE);
    e_emit(a, BPF_ALU | BPF_END | BPF_TO_BE, BPF_REG_0, 0, 0, 16, L_NONE);
    E_JK(a, BPF_JEQ, BPF_REG_0, ET_IP4, L_V4);
    E_JK(a, BPF_JEQ, BPF_REG_0, ET_IP6, L_V6);
    E_JA(a, L_Q0);
    E_LABEL(a, L_V4);
    E_LDABS(a, BPF_B, NET + 9);
    E_JK(a, BPF_JNE, BPF_REG_0, 6, L_Q0);
    E_LDABS(a, BPF_H, NET + 6);
    E_JK(a, BPF_JSET, BPF_REG_0, 0x1fff, L_Q0);
    E_LDABS(a, BPF_W, NET + 12);
    E_MOV64X(a, BPF_REG_8, BPF_REG_0);
    E_LDABS(a, BPF_B, NET + 0);
    E_ALU32K(a, BPF_AND, BPF_REG_0, 0xf);
    E_ALU32K(a, BPF_LSH, BPF_REG_0, 2);
    E_MOV64X(a, BPF_REG_7, BPF_REG_0);
    E_LDIND(a, BPF_H, BPF_REG_7, NET + 0);
    E_MOV64X(a, BPF_REG_9, BPF_REG_0);
    E_LDIND(a, BPF_H, BPF_REG_7, NET + 2);
    E_JA(a, L_COMMON);
    E_LABEL(a, L_V6);
    E_LDABS(a, BPF_B, NET + 6);
    E_JK(a, BPF_JNE, BPF_REG_0, 6, L_Q0);
    E_LDABS(a, BPF_W, NET + 8);
    E_MOV64X(a, BPF_REG_8, BPF_REG_0);
    for (int off = 12; off <= 20; off += 4) {
        E_LDABS(a, BPF_W, NET + off);
        E_ALU32X(a, BPF_XOR, BPF_REG_8, BPF_REG_0);
    }
    E_LDABS(a, BPF_H, NET + 40);
    E_MOV64X(a, BPF_REG_9, BPF_REG_0);
    E_LDABS(a, BPF_H, NET + 42);
    E_LABEL(a, L_COMMON);
    E_JK(a, BPF_JLT, BPF_REG_0, lo, L_HASH);
    E_JK(a, BPF_JGT, BPF_REG_0, hi, L_HASH);
    E_ALU32K(a, BPF_MOD, BPF_REG_0, nq);
    E_JA(a, L_MAP);
    E_LABEL(a, L_HASH);
    E_MOV32X(a, BPF_REG_0, BPF_REG_8);
    E_ALU32X(a, BPF_XOR, BPF_REG_0, BPF_REG_9);
    E_ALU32K(a, BPF_MUL, BPF_REG_0, (int32_t)STEER_MUL);
    E_ALU32K(a, BPF_RSH, BPF_REG_0, 16);
    E_ALU32K(a, BPF_MOD, BPF_REG_0, nq);
    E_LABEL(a, L_MAP);
    for (uint32_t q = 1; q < nq; q++)
        E_JK(a, BPF_JEQ, BPF_REG_0, q, L_RET0 + (int)q);
    E_LABEL(a, L_Q0);
    E_MOV64K(a, BPF_REG_0, slot_of(slots, 0));
    E_EXIT(a);
    for (uint32_t q = 1; q < nq; q++) {
        E_LABEL(a, L_RET0 + (int)q);
        E_MOV64K(a, BPF_REG_0, slot_of(slots, q));
        E_EXIT(a);
    }
    int n = a->n;
    if (n > max) {
        free(a);
        return -E2BIG;
    }
    for (int i = 0; i < n; i++)
        if (a->lab[i] != L_NONE)
            out[i].off = (int16_t)(a->pos[a->lab[i]] - (i + 1));
    free(a);
    return n;
}

int link_steer_load_ebpf(const struct bpf_insn *insns, int n, char *log, size_t loglen)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = (uint32_t)n;
    a.license = (uint64_t)(uintptr_t)"GPL";
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = log ? (uint32_t)loglen : 0;
    a.log_level = log ? 1 : 0;
    memcpy(a.prog_name, "mtcp_steer", 11);
    int fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof(a));
    return fd < 0 ? -errno : fd;
}

/* ------------------------------------------------------------------------------------------
 * installing the kernel side
 * ------------------------------------------------------------------------------------------ */
struct steer_link;
static const struct link_ops steer_ops;

static struct mtcp_link *steer_inner(struct mtcp_link *l);

int mtcp_steer_install(mtcp_link *l, uint32_t nqueues, uint16_t eph_lo, uint16_t eph_hi,
                       const uint32_t *slots, char *err, size_t errlen)
{
    char msg[256];
    l = steer_inner(l);
    if (nqueues == 0 || nqueues > 256 || eph_lo > eph_hi) {
        io_errf(err, errlen, "steer: need 1 <= nqueues <= 256 and eph_lo <= eph_hi");
        return -EINVAL;
    }
    int fd = l->ops->fd ? l->ops->fd(l) : -1;
    if (strcmp(l->ops->name, "tap") == 0) {
        struct bpf_insn *p = calloc(STEER_PROG_MAX, sizeof(*p));
        char *log = calloc(1, 4096);
        if (!p || !log) {
            free(p);
            free(log);
            io_errf(err, errlen, "steer: out of memory");
            return -ENOMEM;
        }
        int n = link_steer_build_ebpf(p, STEER_PROG_MAX, nqueues, eph_lo, eph_hi, slots, STEER_NET_TAP);
        int pfd = n < 0 ? n : link_steer_load_ebpf(p, n, log, 4096);
        if (pfd < 0) {
            snprintf(msg, sizeof(msg), "steer: loading the TAP steering program: %s%s %.120s",
                     strerror(-pfd), pfd == -EPERM ? " (needs CAP_BPF/CAP_SYS_ADMIN)" : "", log);
            free(p);
            free(log);
            io_errf(err, errlen, msg);
            return pfd;
        }
        free(p);
        free(log);
        int rc = ioctl(fd, TUNSETSTEERINGEBPF, &pfd) < 0 ? -errno : 0;
        close(pfd);
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "steer: TUNSETSTEERINGEBPF: %s", strerror(-rc));
            io_errf(err, errlen, msg);
        }
        return rc;
    }
    if (strcmp(l->ops->name, "packet") == 0) {
        struct sock_filter f[STEER_PROG_MAX];
        int n = link_steer_build_cbpf(f, STEER_PROG_MAX, nqueues, eph_lo, eph_hi, slots, STEER_NET_FANOUT);
        if (n < 0) {
            io_errf(err, errlen, "steer: fanout program too large");
            return n;
        }
        struct sock_fprog prog = { .len = (unsigned short)n, .filter = f };
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &prog, sizeof(prog)) < 0) {
            int e = errno;
            snprintf(msg, sizeof(msg), "steer: PACKET_FANOUT_DATA: %s%s", strerror(e),
                     e == EINVAL ? " (was the link opened with MTCP_PACKET_FANOUT_CBPF and nqueues > 1?)" : "");
            io_errf(err, errlen, msg);
            return -e;
        }
        return 0;
    }
    snprintf(msg, sizeof(msg), "steer: backend %s has no kernel steering (use the hand-off area)",
             l->ops->name);
    io_errf(err, errlen, msg);
    return -EOPNOTSUPP;
}

/* ------------------------------------------------------------------------------------------
 * hand-off area
 * ------------------------------------------------------------------------------------------ */
#define SHM_MAGIC 0x6d747372u        /* "mtsr" */
#define SHM_DATA 2048u
#define TO_ALL 0xffffu

struct shm_hdr {
    uint32_t magic, nslots;
    uint32_t slot_bytes, pad;
    uint64_t seq;                    /* next sequence number (atomic) */
    uint64_t pad2[5];
};
struct shm_slot {
    uint64_t seq;                    /* sequence + 1 once published, 0 while being written */
    uint32_t len;
    uint16_t src, dst;
    uint16_t flags, gso_size, csum_start, csum_offset;
    uint8_t data[SHM_DATA];
};

size_t mtcp_steer_shm_size(uint32_t nslots)
{
    return sizeof(struct shm_hdr) + (size_t)nslots * sizeof(struct shm_slot);
}

int mtcp_steer_shm_init(void *mem, size_t len, uint32_t nslots)
{
    if (!mem || nslots == 0 || len < mtcp_steer_shm_size(nslots))
        return -EINVAL;
    memset(mem, 0, mtcp_steer_shm_size(nslots));
    struct shm_hdr *h = mem;
    h->nslots = nslots;
    h->slot_bytes = (uint32_t)sizeof(struct shm_slot);
    __atomic_store_n(&h->magic, SHM_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * the wrapper link
 * ------------------------------------------------------------------------------------------ */
#define INJ_SLOTS 64u
enum { S_RX, S_MISDIRECTED, S_HANDOFF_OUT, S_HANDOFF_IN, S_NEIGH_OUT, S_NEIGH_IN, S_LOST, S_PORTS_SKIPPED,
       S_NCTR };
static const char *const steer_ctr_names[S_NCTR] = {
    "rx_frames", "misdirected", "handoff_out", "handoff_in", "neigh_shared_out", "neigh_shared_in",
    "handoff_lost", "ports_skipped",
};

struct steer_link {
    struct mtcp_link l;
    struct mtcp_link *in;
    uint32_t queue, nq;
    uint16_t lo, hi;
    uint32_t flags;
    struct shm_hdr *shm;
    struct shm_slot *slots;
    uint64_t rd;                     /* hand-off read cursor */
    int evfd[256];
    int nev;
    int epfd;
    uint64_t wake;                   /* bitmap of queues to wake (first 64) */
    uint8_t *inj;                    /* INJ_SLOTS x SHM_DATA */
    uint64_t ctr[S_NCTR];
    uint64_t last_now;
    int more;                        /* hand-off entries left for the next poll (INJ_SLOTS cap) */
    int debug;                       /* MTCP_STEER_DEBUG=N: print the first N misdirected frames */
};

static struct mtcp_link *steer_inner(struct mtcp_link *l)
{
    return l->ops == &steer_ops ? ((struct steer_link *)l)->in : l;
}

static void shm_post(struct steer_link *s, const struct link_slot *f, uint16_t dst)
{
    if (f->len > SHM_DATA) {
        s->ctr[S_LOST]++;
        return;
    }
    uint64_t q = __atomic_fetch_add(&s->shm->seq, 1, __ATOMIC_ACQ_REL);
    struct shm_slot *sl = &s->slots[q % s->shm->nslots];
    __atomic_store_n(&sl->seq, 0, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    sl->len = f->len;
    sl->src = (uint16_t)s->queue;
    sl->dst = dst;
    sl->flags = f->flags & (LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_CSUM_VALID);
    sl->gso_size = 0;
    sl->csum_start = f->csum_start;
    sl->csum_offset = f->csum_offset;
    memcpy(sl->data, f->buf, f->len);
    __atomic_store_n(&sl->seq, q + 1, __ATOMIC_RELEASE);
    if (dst == TO_ALL)
        s->wake |= ~0ull;
    else if (dst < 64)
        s->wake |= 1ull << dst;
}

static void shm_wake(struct steer_link *s)
{
    if (!s->wake)
        return;
    uint64_t one = 1;
    for (int i = 0; i < s->nev && i < 64; i++)
        if ((s->wake >> i) & 1 && (uint32_t)i != s->queue && s->evfd[i] >= 0)
            if (write(s->evfd[i], &one, sizeof(one)) < 0) { /* full or closed: the reader polls anyway */ }
    s->wake = 0;
}

/* Move frames addressed to us from the hand-off log into the RX ring at *t. */
static void shm_take(struct steer_link *s, uint32_t *t)
{
    struct link_ring *r = &s->l.rx;
    uint32_t nslots = s->shm->nslots, ninj = 0;
    uint64_t end = __atomic_load_n(&s->shm->seq, __ATOMIC_ACQUIRE);
    if (end - s->rd > nslots) {              /* lapped: the oldest entries are gone */
        s->ctr[S_LOST] += end - s->rd - nslots;
        s->rd = end - nslots;
    }
    s->more = 0;
    while (s->rd < end) {
        if (ninj == INJ_SLOTS || link_ring_next(r, *t) == r->head) {
            s->more = 1;                     /* poll again soon: the eventfd was already read */
            break;
        }
        struct shm_slot *sl = &s->slots[s->rd % nslots];
        uint64_t sq = __atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE);
        if (sq != s->rd + 1) {
            /* Being written: the writer took its sequence number (so `end` covers it) but has
             * not published yet; the slot still shows 0 or the sequence of an older lap. Take it
             * next time, unless so much has been written since that the writer must have died. */
            if (sq < s->rd + 1 && end - s->rd < nslots / 2)
                break;
            s->ctr[S_LOST]++;                /* overwritten, or a writer died mid-write */
            s->rd++;
            continue;
        }
        uint16_t dst = sl->dst, src = sl->src;
        uint32_t len = sl->len;
        if (src != s->queue && (dst == TO_ALL || dst == s->queue) && len <= SHM_DATA) {
            uint8_t *b = s->inj + (size_t)ninj * SHM_DATA;
            memcpy(b, sl->data, len);
            struct link_slot f = { .buf = b, .len = len, .flags = sl->flags, .gso_size = 0,
                                   .csum_start = sl->csum_start, .csum_offset = sl->csum_offset };
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE) != s->rd + 1) {
                s->ctr[S_LOST]++;
            } else {
                r->slot[*t] = f;
                *t = link_ring_next(r, *t);
                ninj++;
                s->ctr[dst == TO_ALL ? S_NEIGH_IN : S_HANDOFF_IN]++;
            }
        }
        s->rd++;
    }
}

static void tx_pull(struct steer_link *s)
{
    s->l.tx.tail = s->in->tx.tail;
    s->l.tx.head = s->in->tx.head;
    s->l.tx.cur = s->in->tx.cur;
}

static int steer_rxsync(struct mtcp_link *l, uint64_t now)
{
    struct steer_link *s = (struct steer_link *)l;
    struct link_ring *r = &l->rx, *ir = &s->in->rx;
    if (r->head != r->tail)
        return 0;                            /* the engine still has frames of the last batch */
    if (s->evfd[s->queue] >= 0 && s->nev) {
        uint64_t v;
        if (read(s->evfd[s->queue], &v, sizeof(v)) < 0) { /* nothing pending */ }
    }
    s->last_now = now;
    ir->head = ir->cur = ir->tail;           /* everything shown last time was consumed */
    int rc = s->in->ops->rxsync(s->in, now);
    tx_pull(s);
    uint32_t t = r->tail;
    for (uint32_t i = ir->head; i != ir->tail; i = link_ring_next(ir, i)) {
        struct link_slot *f = &ir->slot[i];
        int kind;
        uint32_t q = link_steer_frame(f->buf, f->len, s->nq, s->lo, s->hi, &kind);
        s->ctr[S_RX]++;
        if (kind == STEER_TCP && q != s->queue) {
            s->ctr[S_MISDIRECTED]++;
            if (s->debug > 0) {
                s->debug--;
                fprintf(stderr, "steer: queue %u/%u got a frame for queue %u (len %u):", s->queue, s->nq, q, f->len);
                for (uint32_t b = 0; b < f->len && b < 58; b++)
                    fprintf(stderr, "%s%02x", b == 14 || b == 34 ? " | " : " ", f->buf[b]);
                fprintf(stderr, "\n");
            }
            if (s->shm && (s->flags & MTCP_STEER_HANDOFF)) {
                shm_post(s, f, (uint16_t)q);
                s->ctr[S_HANDOFF_OUT]++;
            }
            continue;
        }
        if (kind == STEER_NEIGH && s->shm && s->nq > 1) {
            shm_post(s, f, TO_ALL);
            s->ctr[S_NEIGH_OUT]++;
        }
        if (link_ring_next(r, t) == r->head)
            break;                           /* cannot happen: the ring holds a whole batch */
        r->slot[t] = *f;
        t = link_ring_next(r, t);
    }
    if (s->shm)
        shm_take(s, &t);
    if (l->pcap)
        for (uint32_t i = r->tail; i != t; i = link_ring_next(r, i))
            link_pcap_frame(l, r->slot[i].buf, r->slot[i].len, now);
    r->tail = t;
    shm_wake(s);
    return rc;
}

static int steer_txsync(struct mtcp_link *l, uint64_t now)
{
    struct steer_link *s = (struct steer_link *)l;
    if (l->pcap)
        for (uint32_t i = s->in->tx.head; i != l->tx.head; i = link_ring_next(&l->tx, i))
            link_pcap_frame(l, l->tx.slot[i].buf, l->tx.slot[i].len, now);
    s->in->tx.head = l->tx.head;
    s->in->tx.cur = l->tx.cur;
    int rc = s->in->ops->txsync(s->in, now);
    tx_pull(s);
    return rc;
}

static int steer_fd(struct mtcp_link *l)
{
    struct steer_link *s = (struct steer_link *)l;
    if (s->epfd >= 0)
        return s->epfd;
    return s->in->ops->fd ? s->in->ops->fd(s->in) : -1;
}

static int64_t steer_next_deadline(struct mtcp_link *l)
{
    struct steer_link *s = (struct steer_link *)l;
    if (s->more)
        return (int64_t)s->last_now;
    return link_next_deadline(s->in);
}

static int steer_claim(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    struct steer_link *s = (struct steer_link *)l;
    if (!listener && s->nq > 1 && port >= s->lo && port <= s->hi && port % s->nq != s->queue) {
        s->ctr[S_PORTS_SKIPPED]++;
        return -EAGAIN;
    }
    return s->in->ops->claim_port ? s->in->ops->claim_port(s->in, family, port, listener) : 0;
}

static void steer_release(struct mtcp_link *l, int family, uint16_t port, int listener)
{
    struct steer_link *s = (struct steer_link *)l;
    if (s->in->ops->release_port)
        s->in->ops->release_port(s->in, family, port, listener);
}

static void steer_destroy(struct mtcp_link *l)
{
    struct steer_link *s = (struct steer_link *)l;
    if (s->epfd >= 0)
        close(s->epfd);
    mtcp_link_close(s->in);
    free(s->l.rx.slot);
    free(s->inj);
    free(s);
}

static void steer_stats(struct mtcp_link *l, struct link_stats *o)
{
    struct mtcp_link *in = ((struct steer_link *)l)->in;
    if (in->ops->stats)
        in->ops->stats(in, o);
}

static const struct link_ops steer_ops = {
    .name = "steer",
    .stats = steer_stats,
    .rxsync = steer_rxsync,
    .txsync = steer_txsync,
    .fd = steer_fd,
    .next_deadline = steer_next_deadline,
    .claim_port = steer_claim,
    .release_port = steer_release,
    .destroy = steer_destroy,
};

mtcp_link *mtcp_steer_wrap(mtcp_link *inner, const struct mtcp_steer_cfg *cfg, char *err, size_t errlen)
{
    char msg[256];
    if (!inner || !cfg || cfg->nqueues == 0 || cfg->nqueues > 256 || cfg->queue >= cfg->nqueues ||
        cfg->eph_lo > cfg->eph_hi || cfg->eph_lo == 0) {
        io_errf(err, errlen, "steer: need inner link, queue < nqueues <= 256, 1 <= eph_lo <= eph_hi");
        return NULL;
    }
    if (cfg->shm) {
        struct shm_hdr *h = cfg->shm;
        if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SHM_MAGIC || h->nslots == 0 ||
            cfg->shm_len < mtcp_steer_shm_size(h->nslots)) {
            io_errf(err, errlen, "steer: hand-off area not initialised (mtcp_steer_shm_init) or too small");
            return NULL;
        }
    }
    if (cfg->flags & MTCP_STEER_INSTALL) {
        int rc = mtcp_steer_install(inner, cfg->nqueues, cfg->eph_lo, cfg->eph_hi, cfg->slots, err, errlen);
        if (rc < 0)
            return NULL;
    }
    struct steer_link *s = calloc(1, sizeof(*s));
    uint32_t n = io_pow2_roundup(inner->rx.num_slots + INJ_SLOTS + 1);
    if (!s || !(s->l.rx.slot = calloc(n, sizeof(struct link_slot))) ||
        (cfg->shm && !(s->inj = malloc((size_t)INJ_SLOTS * SHM_DATA)))) {
        if (s)
            free(s->l.rx.slot);
        free(s);
        io_errf(err, errlen, "steer: out of memory");
        return NULL;
    }
    s->in = inner;
    s->queue = cfg->queue;
    s->nq = cfg->nqueues;
    s->lo = cfg->eph_lo;
    s->hi = cfg->eph_hi;
    s->flags = cfg->flags;
    s->epfd = -1;
    const char *dbg = getenv("MTCP_STEER_DEBUG");
    s->debug = dbg ? atoi(dbg) : 0;
    for (int i = 0; i < 256; i++)
        s->evfd[i] = -1;
    if (cfg->shm) {
        s->shm = cfg->shm;
        s->slots = (struct shm_slot *)((uint8_t *)cfg->shm + sizeof(struct shm_hdr));
        s->rd = __atomic_load_n(&s->shm->seq, __ATOMIC_ACQUIRE);
    }
    if (cfg->evfds) {
        s->nev = (int)cfg->nqueues;
        for (uint32_t i = 0; i < cfg->nqueues; i++)
            s->evfd[i] = cfg->evfds[i];
        int ifd = inner->ops->fd ? inner->ops->fd(inner) : -1;
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN };
        if (s->epfd < 0 || (ifd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, ifd, &ev) < 0) ||
            (s->evfd[s->queue] >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd[s->queue], &ev) < 0)) {
            snprintf(msg, sizeof(msg), "steer: epoll: %s", strerror(errno));
            if (s->epfd >= 0)
                close(s->epfd);
            free(s->l.rx.slot);
            free(s->inj);
            free(s);
            io_errf(err, errlen, msg);
            return NULL;
        }
    }
    s->l.ops = &steer_ops;
    s->l.rx.num_slots = n;
    s->l.rx.mask = n - 1;
    s->l.rx.buf_size = inner->rx.buf_size > SHM_DATA ? inner->rx.buf_size : SHM_DATA;
    s->l.tx = inner->tx;                     /* shares the inner TX slot array */
    s->l.link_type = inner->link_type;
    s->l.mtu = inner->mtu;
    s->l.features = inner->features;
    return &s->l;
}

void mtcp_steer_counters(mtcp_link *l, uint64_t *out, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = l && l->ops == &steer_ops && i < S_NCTR ? ((struct steer_link *)l)->ctr[i] : 0;
}

const char *mtcp_steer_counter_name(uint32_t i)
{
    return i < S_NCTR ? steer_ctr_names[i] : NULL;
}
