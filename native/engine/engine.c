/*
 * engine.c — one engine per core: lifecycle (mtcp_engine_new: validation, pools, tables, keys,
 * tcp_env; mtcp_engine_free) and the token buckets the rate limits use. The engine's other
 * concerns live beside it:
 *   config.c   defaults, validation, address helpers      events.c   the event ring
 *   rx.c       RX demux (eth -> ARP | IPv4/6 -> ICMP | TCP)  tx.c       frames, control queue, output pass
 *   tcp_env.c  the callbacks given to tcp, block lifecycle  poll.c     poll/poll_rx/poll_tx, timers, frame API
 *   api.c      the public connection API of mtcp.h
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "engine.h"

int eng_tb_take(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst) {
    return eng_tb_take_above(b, now, rate, burst, 0);
}

int eng_tb_take_above(struct tbucket *b, uint64_t now, uint32_t rate, uint32_t burst, uint32_t keep) {
    if (!rate) return 1;
    uint64_t cap = (uint64_t)(burst ? burst : 1) * 1000000u;
    if (!b->init) { b->init = 1; b->x = cap; b->last = now; }
    if (now > b->last) {
        uint64_t dt = now - b->last;
        b->x = dt >= cap / rate + 1 ? cap : b->x + dt * rate;
        if (b->x > cap) b->x = cap;
        b->last = now;
    }
    if (b->x < (uint64_t)(keep + 1) * 1000000u) return 0;
    b->x -= 1000000u;
    return 1;
}

/* ------------------------------------------------------------------ lifecycle */

static void derive_key(uint64_t seed, uint32_t n, uint8_t out[16]) {
    static const uint8_t k0[16] = "mtcp-engine-key";
    uint8_t m[12];
    memcpy(m, &seed, 8);
    memcpy(m + 8, &n, 4);
    uint64_t a = eng_siphash24(k0, m, 12);
    m[11] ^= 0x80;
    uint64_t b = eng_siphash24(k0, m, 12);
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
}

mtcp_engine *mtcp_engine_new(const struct mtcp_config *cfg, mtcp_link *link, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!cfg) { eng_config_error(err, errlen, "cfg", "NULL"); return NULL; }
    if (eng_config_validate(cfg, link, err, errlen) < 0) return NULL;
    mtcp_engine *e = calloc(1, sizeof *e);
    if (!e) { eng_config_error(err, errlen, "engine", "out of memory"); return NULL; }
    e->cfg = *cfg;
    e->link = link;
    e->l2len = cfg->link_type == MTCP_LINK_ETHERNET ? WIRE_ETH_HLEN : 0;
    e->mtu = cfg->mtu;
    if (link) {
        if (link->mtu && link->mtu < e->mtu) e->mtu = link->mtu;
        if (link->tx.buf_size && link->tx.buf_size < e->l2len + e->mtu) e->mtu = link->tx.buf_size - e->l2len;
        if (e->mtu < 576) { eng_config_error(err, errlen, "mtu", "link slots too small"); free(e); return NULL; }
    }
    uint64_t seed = cfg->seed;
    if (!seed) {
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)e;
        }
        if (!seed) seed = 1;
    }
    derive_key(seed, 1, e->isn_key);
    derive_key(seed, 2, e->cookie_key);
    derive_key(seed, 3, e->port_key);
    e->hash_seed = eng_siphash24(e->port_key, &seed, sizeof seed);

    e->nconns = cfg->max_conns;
    e->out_head = e->out_tail = NONE32;
    e->reap_head = NONE32;
    e->abort_head = NONE32;
    e->tw_head = e->tw_tail = NONE32;
    e->tx_frame = NONE32;
    e->ffree = NONE32;
    e->ctrlq.head = e->ctrlq.tail = NONE32;
    e->outq.head = e->outq.tail = NONE32;
    if (eng_table_init(e) < 0) goto oom;
    if (tcp_buf_pool_init(&e->pool, cfg->chunk_size, cfg->max_chunks) < 0) goto oom;
    uint32_t nooo = cfg->max_conns / 4;
    if (nooo < 16) nooo = 16;
    if (nooo > 8192) nooo = 8192;
    e->nooo = nooo;
    e->ooo = calloc(nooo, sizeof *e->ooo);
    e->ooo_next = malloc(nooo * sizeof *e->ooo_next);
    if (!e->ooo || !e->ooo_next) goto oom;
    for (uint32_t i = 0; i < nooo; i++) e->ooo_next[i] = i + 1 < nooo ? i + 1 : NONE32;
    e->ooo_free = 0;
    e->nrec = cfg->max_rack;
    e->rec_free = NONE32;
    if (e->nrec) {
        e->recs = malloc((size_t)e->nrec * sizeof *e->recs);
        e->rec_next = malloc((size_t)e->nrec * sizeof *e->rec_next);
        if (!e->recs || !e->rec_next) goto oom;
        for (uint32_t i = 0; i < e->nrec; i++) e->rec_next[i] = i + 1 < e->nrec ? i + 1 : NONE32;
        e->rec_free = 0;
    }
    e->ev_cap = cfg->max_events;
    e->ev = calloc(e->ev_cap, sizeof *e->ev);
    if (!e->ev) goto oom;
    e->fsize = e->l2len + e->mtu;
    e->nframes = CTRLQ_MAX + (e->l2len ? NEIGHQ_MAX : 0) + 8 + (link ? 0 : OUTQ_MAX);
    e->frames = calloc(e->nframes, sizeof *e->frames);
    e->fmem = malloc((size_t)e->nframes * e->fsize);
    e->scratch = malloc(e->fsize);
    if (!e->frames || !e->fmem || !e->scratch) goto oom;
    for (uint32_t i = 0; i < e->nframes; i++) {
        e->frames[i].buf = e->fmem + (size_t)i * e->fsize;
        e->frames[i].next = i + 1 < e->nframes ? i + 1 : NONE32;
    }
    e->ffree = 0;
    eng_wheel_init(&e->wheel, e->conns, sizeof(struct conn), offsetof(struct conn, wn));
    eng_neigh_init(e);

    eng_env_init(e);
    struct tcp_env *env = &e->env;
    /* TSO (TAP with TUN_F_TSO4/6): a TX slot may carry a super-frame that the link cuts at
     * gso_size; it needs partial checksums too. Payload bound: the IP length field (64 KiB) and
     * the slot, less the largest IP (40) and TCP (60) headers. */
    if (link && (link->features & LINK_FEAT_TSO) && (link->features & LINK_FEAT_CSUM_TX) && e->l2len) {
        uint32_t room = link->tx.buf_size > e->l2len + 40 ? link->tx.buf_size - e->l2len - 40 : 0;
        if (room > 65535 - 40) room = 65535 - 40;
        uint32_t max = room > 60 ? room - 60 : 0;
        if (max >= 2 * e->mtu) env->tso_max = max;
    }
    return e;
oom:
    eng_config_error(err, errlen, "max_conns/max_chunks/max_events", "out of memory allocating pools");
    mtcp_engine_free(e);
    return NULL;
}

void mtcp_engine_free(mtcp_engine *e) {
    if (!e) return;
    if (e->link && e->conns) {
        const struct link_ops *ops = e->link->ops;
        for (uint32_t i = 0; i < e->nconns; i++) {
            struct conn *k = &e->conns[i];
            if (k->kind == CK_LISTEN && ops->release_port && eng_listener_count_port(e, k->tcp.family, k->tcp.local_port) == 1)
                ops->release_port(e->link, k->tcp.family, k->tcp.local_port, 1);
            if (k->kind == CK_LISTEN) eng_listener_unhash(e, k);
        }
        for (int f = 0; f < 2 && e->portref[f]; f++)
            for (uint32_t p = 0; p < 65536; p++)
                if (e->portref[f][p] && ops->release_port)
                    ops->release_port(e->link, f ? MTCP_AF_INET6 : MTCP_AF_INET, (uint16_t)p, 0);
    }
    eng_table_fini(e);
    if (e->pool.mem) tcp_buf_pool_fini(&e->pool);
    free(e->ooo);
    free(e->ooo_next);
    free(e->recs);
    free(e->rec_next);
    free(e->ev);
    free(e->frames);
    free(e->fmem);
    free(e->scratch);
    free(e);
}
