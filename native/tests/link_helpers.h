/* link_helpers.h — shared helpers of the test_link*.c files (the ring contract driven by hand). */
#ifndef MTCP_TESTS_LINK_HELPERS_H
#define MTCP_TESTS_LINK_HELPERS_H
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <math.h>
#include "ctest.h"
#include "io/link.h"
#include "mtcp_bench.h"
#include "mtcp_debug.h"
#include "io/io_util.h"
#include <sched.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>

/* each test file uses a part of the helpers below */
#pragma GCC diagnostic ignored "-Wunused-function"

static int eth_intact(const struct link_slot *s);

/* the namespace tests' addresses (198.18.0.0/15) */
#pragma GCC diagnostic ignored "-Wunused-variable"
static const uint8_t ME_MAC[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t ME_IP[4] = {198, 18, 0, 2}, PEER_IP[4] = {198, 18, 0, 1};

static uint16_t csum16(uint32_t sum, const uint8_t *p, size_t n)
{
    while (n >= 2) { sum += (uint32_t)(p[0] << 8 | p[1]); p += 2; n -= 2; }
    if (n) sum += (uint32_t)p[0] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

struct tcp_match { uint16_t dport; uint8_t flags; uint32_t seq, ack; int csum_ok, partial, gso, maxlen; uint32_t bytes; };

/* checks inside forked children: count into a local `fails`, exit status carries the verdict */
#define TCHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK (child) failed: %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

/* Is the TCP/ICMP checksum of this received IPv4 frame right (finishing a partial one)? */
static int rx_l4_csum_ok(struct link_slot *s)
{
    uint8_t *ip = s->buf + 14;
    uint32_t ihl = (uint32_t)(ip[0] & 15) * 4, tot = (uint32_t)(ip[2] << 8 | ip[3]);
    uint8_t *l4 = ip + ihl;
    uint32_t l4len = tot - ihl;
    if (s->flags & LINK_SLOT_F_CSUM_PARTIAL) {
        uint32_t field = (uint32_t)s->csum_start + s->csum_offset;
        uint16_t c = (uint16_t)~csum16(0, s->buf + s->csum_start, s->len - s->csum_start);
        s->buf[field] = (uint8_t)(c >> 8); s->buf[field + 1] = (uint8_t)c;
    }
    uint32_t sum = 0;
    if (ip[9] == 6) {
        uint8_t ph[12];
        memcpy(ph, ip + 12, 8); ph[8] = 0; ph[9] = 6; ph[10] = (uint8_t)(l4len >> 8); ph[11] = (uint8_t)l4len;
        sum = csum16(0, ph, 12);
    }
    return csum16(sum, l4, l4len) == 0xffff;
}

/* ---- helpers ---- */

/* Put one frame at the TX head. Returns 0 or -1 when no slot is free. */
static int tx_put(struct mtcp_link *l, const uint8_t *frame, uint32_t len, uint16_t flags)
{
    struct link_ring *t = &l->tx;
    if (link_ring_space(t) == 0)
        return -1;
    struct link_slot *s = &t->slot[t->head];
    memcpy(s->buf, frame, len);
    s->len = len;
    s->flags = flags;
    s->gso_size = 0;
    t->head = t->cur = link_ring_next(t, t->head);
    return 0;
}

/* Take every received frame; calls fn on each. Returns the count. */
static uint32_t rx_take(struct mtcp_link *l, void (*fn)(const struct link_slot *, void *), void *arg)
{
    struct link_ring *r = &l->rx;
    uint32_t n = 0;
    while (r->head != r->tail) {
        if (fn) fn(&r->slot[r->head], arg);
        r->head = r->cur = link_ring_next(r, r->head);
        n++;
    }
    return n;
}

static void eth_frame(uint8_t *f, uint32_t len, uint32_t seq)
{
    memset(f, 0, len);
    memset(f, 0xff, 6);                         /* dst */
    f[6] = 0x02; f[11] = 1;                     /* src */
    f[12] = 0x88; f[13] = 0xb5;                 /* local experimental ethertype */
    /* every byte of seq moves the pattern, so a bit flip anywhere never yields another valid frame */
    uint8_t mix = (uint8_t)(seq + (seq >> 8) * 3 + (seq >> 16) * 5 + (seq >> 24) * 11);
    for (uint32_t i = 14; i < len; i++) f[i] = (uint8_t)(i * 7 + mix);
    f[14] = (uint8_t)(seq >> 24); f[15] = (uint8_t)(seq >> 16);
    f[16] = (uint8_t)(seq >> 8); f[17] = (uint8_t)seq;
}
static uint32_t frame_seq(const uint8_t *f) { return (uint32_t)f[14] << 24 | f[15] << 16 | f[16] << 8 | f[17]; }

/* IPv4 or IPv6 + 20-byte TCP header to dport, payload carries seq. Returns length. */
static uint32_t ip_tcp_frame(uint8_t *f, int v6, uint16_t sport, uint16_t dport, uint32_t seq)
{
    uint32_t ipl = v6 ? 40 : 20, len = ipl + 20 + 8;
    memset(f, 0, len);
    if (v6) {
        f[0] = 0x60; f[4] = 0; f[5] = 28; f[6] = 6; f[7] = 64;
        f[23] = 1; f[39] = 1;                      /* ::1 -> ::1 */
    } else {
        f[0] = 0x45; f[2] = 0; f[3] = (uint8_t)len; f[6] = 0x40; f[8] = 64; f[9] = 6;
        f[12] = 127; f[15] = 1; f[16] = 127; f[19] = 1;
    }
    uint8_t *t = f + ipl;
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    t[12] = 0x50; t[13] = 0x10;
    uint8_t *p = t + 20;
    p[0] = (uint8_t)(seq >> 24); p[1] = (uint8_t)(seq >> 16); p[2] = (uint8_t)(seq >> 8); p[3] = (uint8_t)seq;
    return len;
}
static uint32_t ip_seq(const struct link_slot *s)
{
    uint32_t ipl = (s->buf[0] >> 4) == 6 ? 40 : 20;
    const uint8_t *p = s->buf + ipl + 20;
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static int ns_if_up(const char *ifname, const uint8_t ip[4], int prefix)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, ip, 4);
    int rc = ioctl(s, SIOCSIFADDR, &ifr);
    sin->sin_addr.s_addr = htonl(~0u << (32 - prefix));
    rc |= ioctl(s, SIOCSIFNETMASK, &ifr);
    rc |= ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    rc |= ioctl(s, SIOCSIFFLAGS, &ifr);
    close(s);
    return rc;
}

/* Ethernet + IPv4 + TCP frame; csum_partial: leave the pseudo-header sum in the field. */
static uint32_t tcp4_frame(uint8_t *f, const uint8_t dmac[6], uint16_t sport, uint16_t dport, uint32_t seq,
                           uint32_t ack, uint8_t flags, const uint8_t *data, uint32_t dlen, int csum_partial)
{
    memcpy(f, dmac, 6); memcpy(f + 6, ME_MAC, 6); f[12] = 0x08; f[13] = 0;
    uint8_t *ip = f + 14, *t = ip + 20;
    uint32_t tl = 20 + dlen;
    memset(ip, 0, 20);
    ip[0] = 0x45; ip[2] = (uint8_t)((20 + tl) >> 8); ip[3] = (uint8_t)(20 + tl); ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
    memcpy(ip + 12, ME_IP, 4); memcpy(ip + 16, PEER_IP, 4);
    uint16_t c = (uint16_t)~csum16(0, ip, 20); ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
    memset(t, 0, 20);
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport; t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    for (int k = 0; k < 4; k++) { t[4 + k] = (uint8_t)(seq >> (24 - 8 * k)); t[8 + k] = (uint8_t)(ack >> (24 - 8 * k)); }
    t[12] = 0x50; t[13] = flags; t[14] = 0xff; t[15] = 0xff;
    if (dlen) memcpy(t + 20, data, dlen);
    uint8_t ph[12];
    memcpy(ph, ME_IP, 4); memcpy(ph + 4, PEER_IP, 4); ph[8] = 0; ph[9] = 6; ph[10] = (uint8_t)(tl >> 8); ph[11] = (uint8_t)tl;
    uint16_t psum = csum16(0, ph, 12);
    if (csum_partial) { t[16] = (uint8_t)(psum >> 8); t[17] = (uint8_t)psum; }
    else { c = (uint16_t)~csum16(psum, t, tl); t[16] = (uint8_t)(c >> 8); t[17] = (uint8_t)c; }
    return 14 + 20 + tl;
}

static int wait_frame(mtcp_link *l, int (*match)(struct link_slot *, void *), void *arg, int ms)
{
    struct pollfd pfd = { .fd = mtcp_link_fd(l), .events = POLLIN };
    for (int k = 0; k < ms / 10; k++) {
        link_rxsync(l, 0);
        struct link_ring *r = &l->rx;
        while (r->head != r->tail) {
            struct link_slot *s = &r->slot[r->head];
            int m = match(s, arg);
            r->head = r->cur = link_ring_next(r, r->head);
            if (m) return 1;
        }
        poll(&pfd, 1, 10);
    }
    return 0;
}

static int match_arp_reply(struct link_slot *s, void *arg)
{
    uint8_t *mac = arg;
    if (s->len < 42 || s->buf[12] != 0x08 || s->buf[13] != 0x06 || s->buf[21] != 2) return 0;
    memcpy(mac, s->buf + 22, 6);
    return memcmp(s->buf + 28, PEER_IP, 4) == 0;
}

static int match_tcp(struct link_slot *s, void *arg)
{
    struct tcp_match *m = arg;
    if (s->len < 54 || s->buf[12] != 0x08 || s->buf[13] != 0 || s->buf[23] != 6) return 0;
    uint8_t *t = s->buf + 34;
    if ((t[2] << 8 | t[3]) != m->dport) return 0;
    m->flags = t[13];
    m->seq = (uint32_t)t[4] << 24 | t[5] << 16 | t[6] << 8 | t[7];
    m->ack = (uint32_t)t[8] << 24 | t[9] << 16 | t[10] << 8 | t[11];
    m->partial |= !!(s->flags & LINK_SLOT_F_CSUM_PARTIAL);
    m->gso |= !!(s->flags & LINK_SLOT_F_GSO);
    if ((int)s->len > m->maxlen) m->maxlen = (int)s->len;
    m->csum_ok = rx_l4_csum_ok(s);
    uint32_t tot = (uint32_t)(s->buf[16] << 8 | s->buf[17]);
    m->bytes += tot - 20 - (uint32_t)(t[12] >> 4) * 4;
    return 1;
}

/* ---- AF_PACKET: a TAP device's fd on one side, a packet socket bound to the device on the
 * other (frames written to the tap fd are "received" by the interface, and frames sent on the
 * interface come out of the tap fd). Child process, new network namespace. ---- */
static void write_file(const char *path, const char *val)
{
    FILE *f = fopen(path, "w");
    if (f) { fputs(val, f); fclose(f); }
}

static int count_eth_seq(mtcp_link *l, uint32_t *next, uint32_t *bad, int ms)
{
    struct pollfd pfd = { .fd = mtcp_link_fd(l), .events = POLLIN };
    int total = 0;
    for (int k = 0; k < ms; k++) {
        int n = link_rxsync(l, 0);
        struct link_ring *r = &l->rx;
        while (r->head != r->tail) {
            struct link_slot *s = &r->slot[r->head];
            if (s->len >= 18 && s->buf[12] == 0x88 && s->buf[13] == 0xb5) {
                if (frame_seq(s->buf) != *next || !eth_intact(s)) (*bad)++;
                *next = frame_seq(s->buf) + 1;
                total++;
            }
            r->head = r->cur = link_ring_next(r, r->head);
        }
        if (n <= 0) poll(&pfd, 1, 1);
        else k = 0;
    }
    return total;
}

/* Does this frame equal the reference frame for its own sequence number? */
static int eth_intact(const struct link_slot *s)
{
    uint8_t ref[2048];
    if (s->len < 20 || s->len > sizeof(ref))
        return 0;
    eth_frame(ref, s->len, frame_seq(s->buf));
    return memcmp(ref, s->buf, s->len) == 0;
}

#endif
