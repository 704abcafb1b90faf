/*
 * isn.c — SipHash-2-4 (Aumasson & Bernstein) and RFC 6528 initial sequence numbers.
 *
 *   ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
 *   M   = 4-microsecond clock (now_us / 4, as RFC 793 suggests), F = SipHash-2-4 keyed with the
 *         engine's 128-bit secret (derived from cfg->seed).
 * One SipHash per connection: its low 32 bits are F (the ISN), its high 32 bits the RFC 7323
 * timestamp offset (eng_isn_hash; recomputable statelessly for SYN cookies).
 * SYN cookies (listen.c) and the ephemeral port offset (table.c, RFC 6056 alg. 3) use the same
 * function with their own keys.
 */
#include <string.h>
#include "engine.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2; \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); } while (0)

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint64_t eng_siphash24(const uint8_t key[16], const void *data, size_t len) {
    const uint8_t *in = data;
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t blocks = len / 8;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t m = le64(in + 8 * i);
        v3 ^= m;
        SIPROUND; SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    const uint8_t *t = in + 8 * blocks;
    for (size_t i = 0; i < (len & 7); i++) b |= (uint64_t)t[i] << (8 * i);
    v3 ^= b;
    SIPROUND; SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t eng_isn_hash(const uint8_t key[16], int family, const uint8_t *lip, uint16_t lport,
                  const uint8_t *rip, uint16_t rport) {
    uint8_t m[36];
    int al = addr_len(family);
    memcpy(m, lip, (size_t)al);
    memcpy(m + al, rip, (size_t)al);
    m[2 * al] = (uint8_t)(lport >> 8); m[2 * al + 1] = (uint8_t)lport;
    m[2 * al + 2] = (uint8_t)(rport >> 8); m[2 * al + 3] = (uint8_t)rport;
    return eng_siphash24(key, m, (size_t)(2 * al + 4));
}

uint32_t eng_isn_make(const uint8_t key[16], int family, const uint8_t *lip, uint16_t lport,
                  const uint8_t *rip, uint16_t rport, uint64_t now_us) {
    return (uint32_t)eng_isn_hash(key, family, lip, lport, rip, rport) + (uint32_t)(now_us / 4);
}
