/*
 * bench.c — raw frame-rate micro-benchmark over any pair of links (mtcp_bench_link), the
 * ceiling the TCP figures can be held against. Same code path as the engine: fill the TX
 * ring, one txsync per batch, one rxsync per batch, release every RX slot.
 *
 * Frames: Ethernet links get broadcast frames of a local experimental ethertype (0x88b5),
 * IP links (loopback) an IPv4/TCP segment to 127.0.0.1:9 (unowned: comes back to the sender).
 * Single thread; when neither side made progress it waits up to 1 ms on the RX fd.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include "link.h"
#include "mtcp_bench.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t bench_frame(uint8_t *f, uint32_t len, uint32_t link_type)
{
    memset(f, 0, len);
    if (link_type == MTCP_LINK_IP) {
        if (len < 40) len = 40;
        f[0] = 0x45; f[2] = (uint8_t)(len >> 8); f[3] = (uint8_t)len; f[8] = 64; f[9] = 6;
        f[12] = 127; f[15] = 1; f[16] = 127; f[19] = 1;
        f[20] = 0x30; f[21] = 0x39; f[22] = 0; f[23] = 9; f[32] = 0x50; f[33] = 0x10;
        return len;
    }
    if (len < 60) len = 60;
    memset(f, 0xff, 6);
    f[6] = 0x02; f[11] = 0x42;
    f[12] = 0x88; f[13] = 0xb5;
    return len;
}

int mtcp_bench_link(mtcp_link *tx, mtcp_link *rx, double seconds, uint32_t frame_len,
                    double *tx_fps, double *rx_fps)
{
    if (!tx || seconds <= 0 || frame_len == 0)
        return -EINVAL;
    if (frame_len > tx->tx.buf_size || frame_len > 65535)
        return -EMSGSIZE;
    uint8_t frame[65536];
    uint32_t len = bench_frame(frame, frame_len, tx->link_type);
    uint64_t sent = 0, got = 0;
    struct pollfd pfd = { .fd = rx ? mtcp_link_fd(rx) : -1, .events = POLLIN };
    double t0 = mono_s(), t = t0, end = t0 + seconds;
    uint64_t now_us = (uint64_t)(t0 * 1e6);
    int rc = 0;
    while (t < end) {
        struct link_ring *tr = &tx->tx;
        uint32_t batch = 0;
        while (link_ring_space(tr) > 0 && batch < 256) {
            struct link_slot *s = &tr->slot[tr->head];
            memcpy(s->buf, frame, len);
            s->len = len;
            s->flags = 0;
            s->gso_size = 0;
            tr->head = tr->cur = link_ring_next(tr, tr->head);
            batch++;
        }
        int k = link_txsync(tx, now_us);
        if (k < 0) { rc = k; break; }
        sent += batch;
        uint32_t n = 0;
        if (rx) {
            k = link_rxsync(rx, now_us);
            if (k < 0) { rc = k; break; }
            struct link_ring *rr = &rx->rx;
            n = (rr->tail - rr->head) & rr->mask;
            rr->head = rr->cur = rr->tail;
            got += n;
        }
        if (!batch && !n && pfd.fd >= 0)
            poll(&pfd, 1, 1);
        t = mono_s();
        now_us = (uint64_t)(t * 1e6);
    }
    double el = t - t0;
    /* frames still in flight that arrive within 50 ms are not counted: rates are over `el` */
    if (rx) {
        double stop = mono_s() + 0.05;
        while (mono_s() < stop) {
            link_txsync(tx, now_us);
            link_rxsync(rx, now_us);
            rx->rx.head = rx->rx.cur = rx->rx.tail;
        }
    }
    if (tx_fps) *tx_fps = el > 0 ? (double)sent / el : 0;
    if (rx_fps) *rx_fps = el > 0 ? (double)got / el : 0;
    return rc;
}
