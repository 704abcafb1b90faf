/*
 * table.c — connection block pool, O(1) 4-tuple hash (IPv4 and IPv6), listener table by
 * local port with wildcard addresses, and the ephemeral port allocator.
 *
 * Connection ids: cid = gen << 32 | index. gen starts at 1 and is bumped whenever a block is
 * freed, so a stale cid never matches a reused block (and a cid is never 0).
 *
 * Ports: the engine keeps a reference count per (family, port) for the local ports its
 * connections use. The first reference asks the link (ops->claim_port, if any): -EAGAIN means
 * "this port is not steered to this engine", -EADDRINUSE "another engine holds it"; the last
 * reference releases it. Ephemeral ports follow RFC 6056 algorithm 3 (keyed-hash offset +
 * a moving counter) over [eph_port_lo, eph_port_hi]; a port may be shared by connections to
 * different remote endpoints (the 4-tuple must be unique).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"

static inline int fam_i(int family) { return family == MTCP_AF_INET ? 0 : 1; }

int eng_table_init(struct mtcp_engine *e) {
    e->conns = calloc(e->nconns, sizeof *e->conns);
    uint32_t nb = 1;
    while (nb < e->nconns) nb <<= 1;
    e->htab = malloc((size_t)nb * sizeof *e->htab);
    e->portref[0] = calloc(65536, sizeof(uint16_t));
    e->portref[1] = calloc(65536, sizeof(uint16_t));
    if (!e->conns || !e->htab || !e->portref[0] || !e->portref[1]) return -ENOMEM;
    e->hmask = nb - 1;
    memset(e->htab, 0xff, (size_t)nb * sizeof *e->htab);
    for (int i = 0; i < 256; i++) e->ltab[i] = NONE32;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *k = &e->conns[i];
        k->gen = 1;
        k->kind = CK_FREE;
        k->hnext = i + 1 < e->nconns ? i + 1 : NONE32;
        k->wn.next = k->wn.prev = NONE32;
        k->onext = k->oprev = NONE32;
    }
    e->free_head = 0;
    e->conns_used = 0;
    return 0;
}

void eng_table_fini(struct mtcp_engine *e) {
    free(e->conns);
    free(e->htab);
    free(e->portref[0]);
    free(e->portref[1]);
}

struct conn *eng_conn_alloc(struct mtcp_engine *e) {
    if (e->free_head == NONE32) return NULL;
    struct conn *k = &e->conns[e->free_head];
    e->free_head = k->hnext;
    uint32_t gen = k->gen;
    memset(k, 0, sizeof *k);
    k->gen = gen;
    k->hnext = NONE32;
    k->wn.next = k->wn.prev = NONE32;
    k->onext = k->oprev = NONE32;
    k->kind = CK_CONN;
    k->t_open_us = e->now;
    e->conns_used++;
    return k;
}

void eng_conn_free(struct mtcp_engine *e, struct conn *k) {
    if (k->kind == CK_FREE) return;
    eng_introspect_conn_freed(e, k);
    k->kind = CK_FREE;
    k->eflags = 0;
    k->gen++;
    if (k->gen == 0) k->gen = 1;
    k->hnext = e->free_head;
    e->free_head = conn_idx(e, k);
    e->conns_used--;
}

struct conn *eng_conn_get(struct mtcp_engine *e, mtcp_cid cid) {
    uint32_t idx = (uint32_t)cid, gen = (uint32_t)(cid >> 32);
    if (idx >= e->nconns) return NULL;
    struct conn *k = &e->conns[idx];
    if (k->kind == CK_FREE || k->gen != gen || (k->eflags & CF_DETACHED)) return NULL;
    return k;
}

static uint32_t tuple_hash(const struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport,
                           const uint8_t *rip, uint16_t rport) {
    /* keyed multiplicative mix: cheap per packet, seeded per engine against collision attacks */
    uint64_t h = e->hash_seed ^ ((uint64_t)lport << 16 | rport) ^ ((uint64_t)family << 40);
    uint32_t w;
    if (family == MTCP_AF_INET) {
        memcpy(&w, rip, 4); h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        memcpy(&w, lip, 4); h = (h ^ w) * 0xc2b2ae3d27d4eb4fULL;
    } else {
        for (int i = 0; i < 16; i += 4) { memcpy(&w, rip + i, 4); h = (h ^ w) * 0x9e3779b97f4a7c15ULL; }
        for (int i = 0; i < 16; i += 4) { memcpy(&w, lip + i, 4); h = (h ^ w) * 0xc2b2ae3d27d4eb4fULL; }
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

static inline int addr_eq(const uint8_t *a, const uint8_t *b, int family) {
    if (family == MTCP_AF_INET) {
        uint32_t x, y;
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        return x == y;
    }
    uint64_t x0, x1, y0, y1;
    memcpy(&x0, a, 8); memcpy(&x1, a + 8, 8);
    memcpy(&y0, b, 8); memcpy(&y1, b + 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
}

static inline int tuple_eq(const struct conn *k, int family, const uint8_t *lip, uint16_t lport,
                           const uint8_t *rip, uint16_t rport) {
    return k->tcp.local_port == lport && k->tcp.remote_port == rport && k->tcp.family == family &&
           addr_eq(k->rip, rip, family) && addr_eq(k->lip, lip, family);
}

struct conn *eng_conn_lookup(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport,
                         const uint8_t *rip, uint16_t rport) {
    uint32_t b = tuple_hash(e, family, lip, lport, rip, rport) & e->hmask;
    for (uint32_t i = e->htab[b]; i != NONE32; i = e->conns[i].hnext) {
        struct conn *k = &e->conns[i];
        if (tuple_eq(k, family, lip, lport, rip, rport)) return k;
    }
    return NULL;
}

void eng_conn_hash(struct mtcp_engine *e, struct conn *k) {
    if (k->eflags & CF_HASHED) return;
    uint32_t b = tuple_hash(e, k->tcp.family, k->lip, k->tcp.local_port, k->rip, k->tcp.remote_port) & e->hmask;
    k->hnext = e->htab[b];
    e->htab[b] = conn_idx(e, k);
    k->eflags |= CF_HASHED;
}

void eng_conn_unhash(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_HASHED)) return;
    uint32_t b = tuple_hash(e, k->tcp.family, k->lip, k->tcp.local_port, k->rip, k->tcp.remote_port) & e->hmask;
    uint32_t idx = conn_idx(e, k);
    uint32_t *pp = &e->htab[b];
    while (*pp != NONE32) {
        if (*pp == idx) { *pp = k->hnext; break; }
        pp = &e->conns[*pp].hnext;
    }
    k->hnext = NONE32;
    k->eflags &= (uint16_t)~CF_HASHED;
}

/* ---- listeners ---- */
static inline uint32_t lbucket(int family, uint16_t port) { return (uint32_t)(port ^ (port >> 8) ^ family) & 255; }

static int addr_zero(const uint8_t *ip, int family) {
    for (int i = 0; i < addr_len(family); i++) if (ip[i]) return 0;
    return 1;
}

struct conn *eng_listener_lookup(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport) {
    struct conn *wild = NULL;
    for (uint32_t i = e->ltab[lbucket(family, lport)]; i != NONE32; i = e->conns[i].hnext) {
        struct conn *k = &e->conns[i];
        if (k->tcp.local_port != lport || k->tcp.family != family) continue;
        if (memcmp(k->lip, lip, (size_t)addr_len(family)) == 0) return k;
        if (addr_zero(k->lip, family)) wild = k;
    }
    return wild;
}

int eng_listener_conflict(struct mtcp_engine *e, int family, const uint8_t *lip, uint16_t lport) {
    int z = addr_zero(lip, family);
    for (uint32_t i = e->ltab[lbucket(family, lport)]; i != NONE32; i = e->conns[i].hnext) {
        struct conn *k = &e->conns[i];
        if (k->tcp.local_port != lport || k->tcp.family != family) continue;
        if (z || addr_zero(k->lip, family) || memcmp(k->lip, lip, (size_t)addr_len(family)) == 0) return 1;
    }
    return 0;
}

int eng_listener_count_port(struct mtcp_engine *e, int family, uint16_t port) {
    int n = 0;
    for (uint32_t i = e->ltab[lbucket(family, port)]; i != NONE32; i = e->conns[i].hnext) {
        struct conn *k = &e->conns[i];
        if (k->tcp.local_port == port && k->tcp.family == family) n++;
    }
    return n;
}

void eng_listener_hash(struct mtcp_engine *e, struct conn *k) {
    uint32_t b = lbucket(k->tcp.family, k->tcp.local_port);
    k->hnext = e->ltab[b];
    e->ltab[b] = conn_idx(e, k);
    k->eflags |= CF_HASHED;
}

void eng_listener_unhash(struct mtcp_engine *e, struct conn *k) {
    if (!(k->eflags & CF_HASHED)) return;
    uint32_t *pp = &e->ltab[lbucket(k->tcp.family, k->tcp.local_port)];
    uint32_t idx = conn_idx(e, k);
    while (*pp != NONE32) {
        if (*pp == idx) { *pp = k->hnext; break; }
        pp = &e->conns[*pp].hnext;
    }
    k->hnext = NONE32;
    k->eflags &= (uint16_t)~CF_HASHED;
}

/* ---- ports ---- */
int eng_port_ref(struct mtcp_engine *e, int family, uint16_t port) {
    uint16_t *r = &e->portref[fam_i(family)][port];
    if (*r == 0xffff) return -EADDRINUSE;
    if (*r == 0 && e->link && e->link->ops->claim_port) {
        int rc = e->link->ops->claim_port(e->link, family, port, 0);
        if (rc < 0) return rc;
    }
    if (*r == 0) {
        /* the ports that went from 0 references to 1 since the last snapshot restore
         * (engine/snapshot.c clears just these instead of both 128 KiB tables) */
        if (e->port_log_n < PORT_LOG_MAX) e->port_log[e->port_log_n] = (uint32_t)fam_i(family) << 16 | port;
        if (e->port_log_n <= PORT_LOG_MAX) e->port_log_n++;
    }
    (*r)++;
    return 0;
}

void eng_port_unref(struct mtcp_engine *e, int family, uint16_t port) {
    uint16_t *r = &e->portref[fam_i(family)][port];
    if (*r == 0) return;
    if (--(*r) == 0 && e->link && e->link->ops->release_port)
        e->link->ops->release_port(e->link, family, port, 0);
}

/* Pick a local port for (lip, ?, rip, rport) and take a reference on it. Returns the port or
 * -EADDRNOTAVAIL when the range is exhausted. */
int eng_port_ephemeral(struct mtcp_engine *e, int family, const uint8_t *lip, const uint8_t *rip, uint16_t rport) {
    uint32_t lo = e->cfg.eph_port_lo, hi = e->cfg.eph_port_hi;
    uint32_t n = hi - lo + 1;
    int al = addr_len(family);
    uint32_t off;
    if (e->eph_family == family && e->eph_rport == rport && memcmp(e->eph_rip, rip, (size_t)al) == 0 &&
        memcmp(e->eph_rip + al, lip, (size_t)al) == 0) {
        off = e->eph_off;                       /* same destination as last time */
    } else {
        uint8_t m[34];
        memcpy(m, lip, (size_t)al);
        memcpy(m + al, rip, (size_t)al);
        m[2 * al] = (uint8_t)(rport >> 8); m[2 * al + 1] = (uint8_t)rport;
        off = (uint32_t)eng_siphash24(e->port_key, m, (size_t)(2 * al + 2));
        if (al == 4) {                           /* cache (v4 only: rip + lip fit in 16 bytes) */
            memcpy(e->eph_rip, rip, 4);
            memcpy(e->eph_rip + 4, lip, 4);
            e->eph_family = (uint8_t)family;
            e->eph_rport = rport;
            e->eph_off = off;
        } else {
            e->eph_family = 0;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint16_t port = (uint16_t)(lo + (off + e->eph_next + i) % n);
        if (eng_conn_lookup(e, family, lip, port, rip, rport)) continue;
        if (eng_listener_count_port(e, family, port)) continue;
        int rc = eng_port_ref(e, family, port);
        if (rc < 0) continue;          /* -EAGAIN: not steered to us; -EADDRINUSE: taken */
        e->eph_next += i + 1;
        return port;
    }
    return -EADDRNOTAVAIL;
}
