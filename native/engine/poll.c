/*
 * poll.c — the batched data path of one engine and its frame API.
 *
 *   mtcp_engine_poll(now)
 *     eng_rx_batch (rx.c) -> timers (eng_wheel_advance -> tcp_timer; eng_neigh_tick)
 *     -> eng_output_pass (tx.c) -> txsync
 *     (IP links: repeat up to LOOP_ROUNDS while frames moved, so a loopback handshake
 *      completes inside one poll)
 *   mtcp_engine_poll_rx(now): rxsync + RX + timers only; the layer above dispatches the
 *     events, then mtcp_engine_poll_tx (output pass + txsync, more rounds on IP links while
 *     frames move) sends replies together with the ACKs
 *   mtcp_engine_input/output: the same without a link (frames in and out through the caller)
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

#define LOOP_ROUNDS 8

/* ------------------------------------------------------------------ output */

static void fire(void *ctx, uint32_t idx) {
    struct mtcp_engine *e = ctx;
    struct conn *k = &e->conns[idx];
    if (k->kind != CK_CONN || (k->eflags & CF_ZOMBIE)) return;
    tcp_timer(&e->env, &k->tcp, e->now);
}

static void run_timers(struct mtcp_engine *e) {
    eng_wheel_advance(&e->wheel, e->now, fire, e);
    eng_neigh_tick(e);
    eng_reap(e);
}


int mtcp_engine_poll_rx(mtcp_engine *e, uint64_t now_us) {
    eng_set_now(e, now_us);
    if (e->link) eng_rx_batch(e, e->link);
    run_timers(e);
    return (int)e->ev_n;
}

int mtcp_engine_poll_tx(mtcp_engine *e, uint64_t now_us) {
    eng_set_now(e, now_us);
    struct mtcp_link *l = e->link;
    uint32_t ev0 = e->ev_n;
    uint32_t sent = eng_output_pass(e);
    if (l) {
        link_txsync(l, e->now);
        /* IP links (loopback): frames to ourselves come back at once; take them as poll does,
         * but stop before the output pass once they made events: the layer above dispatches
         * them first, so the replies of its callbacks carry these frames' ACKs (both ends of a
         * connection on one engine) */
        for (int round = 1; round < LOOP_ROUNDS && l->link_type == MTCP_LINK_IP && sent; round++) {
            uint32_t n = eng_rx_batch(e, l);
            if (e->ev_n != ev0) break;
            sent = eng_output_pass(e);
            link_txsync(l, e->now);
            if (n == 0 && sent == 0) break;
        }
    }
    eng_wake_starved(e);
    return (int)e->ev_n;
}

int mtcp_engine_poll(mtcp_engine *e, uint64_t now_us) {
    eng_set_now(e, now_us);
    struct mtcp_link *l = e->link;
    if (!l) {
        run_timers(e);
        eng_output_pass(e);
        eng_wake_starved(e);
        return (int)e->ev_n;
    }
    for (int round = 0; round < LOOP_ROUNDS; round++) {
        uint32_t n = eng_rx_batch(e, l);
        if (round == 0) run_timers(e);
        uint32_t sent = eng_output_pass(e);
        link_txsync(l, e->now);
        if (l->link_type != MTCP_LINK_IP || (n == 0 && sent == 0)) break;
    }
    eng_wake_starved(e);
    return (int)e->ev_n;
}

int64_t mtcp_engine_next_deadline(mtcp_engine *e) {
    if (e->out_head != NONE32 || e->ctrlq.n || e->outq.n) return (int64_t)e->now;
    int64_t d = eng_wheel_next_deadline(&e->wheel);
    if (e->neigh.incomplete && e->neigh_deadline && (d < 0 || (int64_t)e->neigh_deadline < d))
        d = (int64_t)e->neigh_deadline;
    if (e->link && e->link->ops->next_deadline) {
        int64_t ld = e->link->ops->next_deadline(e->link);
        if (ld >= 0 && (d < 0 || ld < d)) d = ld;
    }
    return d;
}

int mtcp_engine_fd(mtcp_engine *e) {
    if (!e->link || !e->link->ops->fd) return -1;
    return e->link->ops->fd(e->link);
}

void mtcp_engine_input(mtcp_engine *e, uint64_t now_us, const uint8_t *frame, uint32_t len) {
    eng_set_now(e, now_us);
    if (!frame) return;
    eng_rx_frame(e, frame, len, 0);
    eng_reap(e);
    if (e->ctrlq.n >= CTRLQ_FLUSH) { e->tx_full = 0; eng_ctrl_out(e); e->tx_full = 0; }
}

uint32_t mtcp_engine_output(mtcp_engine *e, uint64_t now_us, uint8_t *buf, uint32_t bufcap,
                            uint32_t *lens, uint32_t maxframes) {
    eng_set_now(e, now_us);
    run_timers(e);
    uint32_t n = 0, off = 0;
    for (int round = 0; round < 64; round++) {
        eng_output_pass(e);
        while (e->outq.n && n < maxframes) {
            uint32_t f = e->outq.head;
            uint32_t fl = e->frames[f].len;
            if (fl > bufcap) {                       /* can never fit: drop */
                eng_fifo_pop(e, &e->outq);
                eng_frame_put(e, f);
                e->counters[CTR_DROP_TX_TOO_BIG]++;
                continue;
            }
            if (off + fl > bufcap) break;
            eng_fifo_pop(e, &e->outq);
            memcpy(buf + off, e->frames[f].buf, fl);
            lens[n++] = fl;
            off += fl;
            eng_frame_put(e, f);
        }
        if (e->outq.n || n >= maxframes) break;
        if (e->out_head == NONE32 && e->ctrlq.n == 0) break;
    }
    eng_wake_starved(e);
    return n;
}
