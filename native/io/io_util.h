/*
 * io_util.h — small helpers private to native/io: power-of-two rounding, a seeded PRNG
 * (splitmix64 to seed xoshiro256**), and an RFC 1071 checksum used to finalize partial
 * checksums (the io layer does not depend on native/wire).
 */
#ifndef MTCP_IO_UTIL_H
#define MTCP_IO_UTIL_H
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "link.h"

static inline uint32_t io_pow2_roundup(uint32_t v)
{
    if (v < 2)
        return 2;
    v--;
    v |= v >> 1; v |= v >> 2; v |= v >> 4; v |= v >> 8; v |= v >> 16;
    return v + 1;
}

/* ---- PRNG: xoshiro256** seeded by splitmix64 ---- */
struct io_rng { uint64_t s[4]; };

static inline uint64_t io_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void io_rng_seed(struct io_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = io_splitmix64(&x);
}

static inline uint64_t io_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t io_rng_next(struct io_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = io_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = io_rotl(s[3], 45);
    return result;
}

/* uniform double in [0, 1) */
static inline double io_rng_double(struct io_rng *r) { return (double)(io_rng_next(r) >> 11) * 0x1.0p-53; }

/* uniform in [0, n) (n > 0), Lemire's multiply-shift (tiny bias irrelevant here) */
static inline uint64_t io_rng_below(struct io_rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)io_rng_next(r) * n) >> 64);
}

/* ---- checksums ---- */
static inline uint32_t io_csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
    uint64_t s = sum;
    while (len >= 2) { s += (uint32_t)(p[0] << 8 | p[1]); p += 2; len -= 2; }
    if (len) s += (uint32_t)p[0] << 8;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}

/* Finish a partial checksum (virtio NEEDS_CSUM semantics: the field already holds the pseudo
 * header sum; checksum [csum_start, len) and store the complement). Returns 0 or -1. */
static inline int io_csum_finalize(uint8_t *frame, uint32_t len, uint16_t csum_start, uint16_t csum_offset)
{
    uint32_t field = (uint32_t)csum_start + csum_offset;
    if (csum_start >= len || field + 2 > len)
        return -1;
    uint32_t s = io_csum_add(0, frame + csum_start, len - csum_start);
    uint16_t c = (uint16_t)~s;
    frame[field] = (uint8_t)(c >> 8);
    frame[field + 1] = (uint8_t)c;
    return 0;
}

/* End of the IP packet inside a frame (link padding excluded), or len if it cannot tell.
 * link_type MTCP_LINK_ETHERNET: after the Ethernet header (and VLAN tags); MTCP_LINK_IP: at 0. */
static inline uint32_t io_ip_end(const uint8_t *f, uint32_t len, uint32_t link_type)
{
    uint32_t off = 0;
    if (link_type == MTCP_LINK_ETHERNET) {
        off = 12;
        for (;;) {
            if (off + 2 > len)
                return len;
            uint16_t et = (uint16_t)(f[off] << 8 | f[off + 1]);
            off += 2;
            if (et == 0x8100 || et == 0x88a8) { off += 2; continue; }
            if (et != 0x0800 && et != 0x86dd)
                return len;
            break;
        }
    }
    if (off + 20 > len)
        return len;
    uint8_t v = f[off] >> 4;
    uint32_t end;
    if (v == 4 && off + 20 <= len)
        end = off + ((uint32_t)f[off + 2] << 8 | f[off + 3]);
    else if (v == 6 && off + 40 <= len)
        end = off + 40 + ((uint32_t)f[off + 4] << 8 | f[off + 5]);
    else
        return len;
    return end > off && end < len ? end : len;   /* 0 (e.g. BIG TCP) or too long: the frame end */
}

static inline void io_errf(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        size_t n = strlen(msg);
        if (n >= errlen) n = errlen - 1;
        memcpy(err, msg, n);
        err[n] = 0;
    }
}

#endif
