/*
 * config.c — engine configuration: mtcp_config_default (the defaults every field documents in
 * mtcp.h), the validation mtcp_engine_new runs before it allocates anything (eng_config_validate:
 * field, reason), and the address helpers that read the configured addresses (eng_is_local,
 * eng_path_mss).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "engine.h"

/* ------------------------------------------------------------------ config */

void mtcp_config_default(struct mtcp_config *c) {
    memset(c, 0, sizeof *c);
    c->max_conns = 16384;
    c->chunk_size = 2048;
    c->max_chunks = 32768;
    c->sndbuf = 262144;
    c->rcvbuf = 262144;
    c->max_events = 65536;
    c->initial_rto_us = 1000000;
    c->min_rto_us = 200000;
    c->max_rto_us = 60000000;
    c->max_retries = 15;
    c->syn_retries = 6;
    c->synack_retries = 5;
    c->msl_us = 30000000;
    c->fin_timeout_us = 60000000;             /* Linux tcp_fin_timeout */
    c->max_rack = c->max_conns / 4 < 16 ? 16 : c->max_conns / 4 > 4096 ? 4096 : c->max_conns / 4;
    c->delack_us = 40000;
    c->syn_backlog = 1024;
    c->initial_cwnd = 10;
    c->keepalive_idle_us = 7200000000ull;     /* Linux tcp_keepalive_time */
    c->keepalive_intvl_us = 75000000;
    c->keepalive_cnt = 9;
    c->challenge_ack_limit = 1000;
    c->cc = MTCP_CC_CUBIC;
    c->sack = 1;
    c->timestamps = 1;
    c->window_scaling = 1;
    c->syncookies = MTCP_SYNCOOKIES_ON_OVERFLOW;
    c->nodelay_default = 0;
    c->seed = 0;
    c->link_type = MTCP_LINK_ETHERNET;
    c->mtu = 1500;
    static const uint8_t mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    memcpy(c->mac, mac, 6);
    c->ipv4_prefix = 24;
    c->ipv6_prefix = 64;
    c->eph_port_lo = 32768;
    c->eph_port_hi = 60999;
    c->neigh_timeout_us = 60000000;
    c->rst_ratelimit = 10000;
    c->rst_burst = 1000;
    c->icmp_ratelimit = 1000;                 /* Linux icmp_msgs_per_sec / icmp_msgs_burst */
    c->icmp_burst = 50;
    c->invalid_ratelimit_ms = 500;            /* Linux tcp_invalid_ratelimit */
    c->solicit_ratelimit = 100;
}

int eng_config_error(char *err, size_t errlen, const char *field, const char *why) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", field, why);
    return -EINVAL;
}

int eng_addr_zero(const uint8_t *a, int n) {
    for (int i = 0; i < n; i++) if (a[i]) return 0;
    return 1;
}

int eng_config_validate(const struct mtcp_config *c, const struct mtcp_link *l, char *err, size_t el) {
    if (c->max_conns < 1 || c->max_conns > (1u << 26)) return eng_config_error(err, el, "max_conns", "must be in [1, 2^26]");
    if (c->chunk_size < 256 || c->chunk_size > 65536) return eng_config_error(err, el, "chunk_size", "must be in [256, 65536]");
    if (c->max_chunks < 4) return eng_config_error(err, el, "max_chunks", "must be >= 4");
    if ((uint64_t)c->max_chunks * c->chunk_size > (1ull << 36)) return eng_config_error(err, el, "max_chunks", "pool larger than 64 GiB");
    if (c->sndbuf < 1024 || c->sndbuf > (1u << 30)) return eng_config_error(err, el, "sndbuf", "must be in [1024, 2^30]");
    if (c->rcvbuf < 1024 || c->rcvbuf > (1u << 30)) return eng_config_error(err, el, "rcvbuf", "must be in [1024, 2^30]");
    if (c->max_events < 16) return eng_config_error(err, el, "max_events", "must be >= 16");
    if (c->min_rto_us < 1000) return eng_config_error(err, el, "min_rto_us", "must be >= 1000");
    if (c->max_rto_us < c->min_rto_us) return eng_config_error(err, el, "max_rto_us", "must be >= min_rto_us");
    if (c->initial_rto_us < c->min_rto_us || c->initial_rto_us > c->max_rto_us)
        return eng_config_error(err, el, "initial_rto_us", "must be in [min_rto_us, max_rto_us]");
    if (c->max_retries < 1 || c->max_retries > 255) return eng_config_error(err, el, "max_retries", "must be in [1, 255]");
    if (c->syn_retries < 1 || c->syn_retries > 255) return eng_config_error(err, el, "syn_retries", "must be in [1, 255]");
    if (c->synack_retries < 1 || c->synack_retries > 255) return eng_config_error(err, el, "synack_retries", "must be in [1, 255]");
    if (c->msl_us > 600000000u) return eng_config_error(err, el, "msl_us", "must be <= 600 s");
    if (c->fin_timeout_us > 600000000u) return eng_config_error(err, el, "fin_timeout_us", "must be <= 600 s");
    if (c->max_rack > (1u << 20)) return eng_config_error(err, el, "max_rack", "must be <= 2^20");
    if (c->delack_us > 40000) return eng_config_error(err, el, "delack_us", "must be <= 40000 (40 ms)");
    if (c->syn_backlog < 1) return eng_config_error(err, el, "syn_backlog", "must be >= 1");
    if (c->initial_cwnd < 1 || c->initial_cwnd > 1000) return eng_config_error(err, el, "initial_cwnd", "must be in [1, 1000]");
    if (c->keepalive_idle_us < 1000000 || c->keepalive_idle_us > TCP_KEEPALIVE_MAX_US)
        return eng_config_error(err, el, "keepalive_idle_us", "must be in [1 s, 32767 s]");
    if (c->keepalive_intvl_us < 1000000 || c->keepalive_intvl_us > TCP_KEEPALIVE_MAX_US)
        return eng_config_error(err, el, "keepalive_intvl_us", "must be in [1 s, 32767 s]");
    if (c->keepalive_cnt < 1 || c->keepalive_cnt > 255) return eng_config_error(err, el, "keepalive_cnt", "must be in [1, 255]");
    if (c->cc != MTCP_CC_CUBIC && c->cc != MTCP_CC_RENO) return eng_config_error(err, el, "cc", "must be MTCP_CC_CUBIC or MTCP_CC_RENO");
    if (c->sack > 1) return eng_config_error(err, el, "sack", "must be 0 or 1");
    if (c->timestamps > 1) return eng_config_error(err, el, "timestamps", "must be 0 or 1");
    if (c->window_scaling > 1) return eng_config_error(err, el, "window_scaling", "must be 0 or 1");
    if (c->syncookies > MTCP_SYNCOOKIES_ALWAYS) return eng_config_error(err, el, "syncookies", "must be 0, 1 or 2");
    if (c->nodelay_default > 1) return eng_config_error(err, el, "nodelay_default", "must be 0 or 1");
    if (c->link_type != MTCP_LINK_ETHERNET && c->link_type != MTCP_LINK_IP)
        return eng_config_error(err, el, "link_type", "must be MTCP_LINK_ETHERNET or MTCP_LINK_IP");
    if (c->mtu < 576 || c->mtu > 65535) return eng_config_error(err, el, "mtu", "must be in [576, 65535]");
    if (!eng_addr_zero(c->ipv6, 16) && c->mtu < 1280) return eng_config_error(err, el, "mtu", "IPv6 needs >= 1280");
    if (c->link_type == MTCP_LINK_ETHERNET && ((c->mac[0] & 1) || eng_addr_zero(c->mac, 6)))
        return eng_config_error(err, el, "mac", "must be a non-eng_addr_zero unicast address");
    if (c->own_prefix > 1) return eng_config_error(err, el, "own_prefix", "must be 0 or 1");
    if (c->ipv4_prefix > 32) return eng_config_error(err, el, "ipv4_prefix", "must be <= 32");
    if (c->ipv6_prefix > 128) return eng_config_error(err, el, "ipv6_prefix", "must be <= 128");
    if (eng_addr_zero(c->ipv4, 4) && eng_addr_zero(c->ipv6, 16)) return eng_config_error(err, el, "ipv4", "no IPv4 and no IPv6 address configured");
    if (c->ipv4[0] >= 224) return eng_config_error(err, el, "ipv4", "multicast/reserved address");
    if (c->ipv6[0] == 0xff) return eng_config_error(err, el, "ipv6", "multicast address");
    if (c->eph_port_lo < 1 || c->eph_port_hi < c->eph_port_lo)
        return eng_config_error(err, el, "eph_port_lo", "need 1 <= eph_port_lo <= eph_port_hi");
    if (c->neigh_timeout_us < 1000000) return eng_config_error(err, el, "neigh_timeout_us", "must be >= 1 s");
    if (c->rst_ratelimit && (c->rst_burst < 1 || c->rst_burst > 1000000))
        return eng_config_error(err, el, "rst_burst", "must be in [1, 1000000] when rst_ratelimit is set");
    if (c->icmp_ratelimit && (c->icmp_burst < 1 || c->icmp_burst > 1000000))
        return eng_config_error(err, el, "icmp_burst", "must be in [1, 1000000] when icmp_ratelimit is set");
    if (c->invalid_ratelimit_ms > 60000) return eng_config_error(err, el, "invalid_ratelimit_ms", "must be <= 60000");
    if (l) {
        if (l->link_type != c->link_type) return eng_config_error(err, el, "link_type", "differs from the link's type");
        if (!l->ops || !l->ops->rxsync || !l->ops->txsync) return eng_config_error(err, el, "link", "missing rxsync/txsync");
    }
    return 0;
}

/* ------------------------------------------------------------------ helpers */

static int in_prefix(const uint8_t *a, const uint8_t *b, int bits) {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0) return 0;
    if (rest) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((a[full] & m) != (b[full] & m)) return 0;
    }
    return 1;
}

int eng_is_local(const struct mtcp_engine *e, int family, const uint8_t *ip) {
    if (family == MTCP_AF_INET) {
        if (eng_addr_zero(e->cfg.ipv4, 4)) return 0;
        if (memcmp(ip, e->cfg.ipv4, 4) == 0) return 1;
        return e->cfg.own_prefix && in_prefix(ip, e->cfg.ipv4, e->cfg.ipv4_prefix);
    }
    if (eng_addr_zero(e->cfg.ipv6, 16)) return 0;
    if (memcmp(ip, e->cfg.ipv6, 16) == 0) return 1;
    return e->cfg.own_prefix && in_prefix(ip, e->cfg.ipv6, e->cfg.ipv6_prefix);
}

uint16_t eng_path_mss(const struct mtcp_engine *e, int family) {
    return (uint16_t)(e->mtu - (family == MTCP_AF_INET ? 40 : 60));
}

void eng_tcp_cfg(struct tcp_cfg *t, const struct mtcp_config *c) {
    memset(t, 0, sizeof *t);
    t->sndbuf = c->sndbuf;
    t->rcvbuf = c->rcvbuf;
    t->initial_rto_us = c->initial_rto_us;
    t->min_rto_us = c->min_rto_us;
    t->max_rto_us = c->max_rto_us;
    t->max_retries = c->max_retries;
    t->syn_retries = c->syn_retries;
    t->synack_retries = c->synack_retries;
    t->msl_us = c->msl_us;
    t->delack_us = c->delack_us;
    t->initial_cwnd = c->initial_cwnd;
    t->keepalive_idle_us = c->keepalive_idle_us;
    t->keepalive_intvl_us = c->keepalive_intvl_us;
    t->keepalive_cnt = c->keepalive_cnt;
    t->challenge_ack_limit = c->challenge_ack_limit;
    t->fin_timeout_us = c->fin_timeout_us;
    t->invalid_ratelimit_ms = c->invalid_ratelimit_ms;
    t->cc = c->cc;
    t->sack = c->sack;
    t->timestamps = c->timestamps;
    t->window_scaling = c->window_scaling;
    t->nodelay_default = c->nodelay_default;
}
