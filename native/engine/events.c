/*
 * events.c — the engine's event ring: eng_push_event appends (connection events from tcp_env.c,
 * accepts from listen.c), mtcp_engine_events hands them to the layer above in batches.
 */
#include <errno.h>
#include <string.h>
#include "engine.h"

/* ------------------------------------------------------------------ events */

static inline uint32_t ev_slot(const struct mtcp_engine *e, uint32_t i) {
    uint32_t x = e->ev_head + i;            /* ev_head < ev_cap, i <= ev_cap: no division */
    return x >= e->ev_cap ? x - e->ev_cap : x;
}

void eng_push_event(struct mtcp_engine *e, struct conn *k, uint32_t type, int32_t err, uint32_t len,
                       mtcp_cid parent) {
    mtcp_cid cid = conn_cid(e, k);
    if (type == MTCP_EV_READABLE && e->ev_n) {
        struct mtcp_event *last = &e->ev[ev_slot(e, e->ev_n - 1)];
        if (last->type == MTCP_EV_READABLE && last->cid == cid) { last->len = len; return; }
    }
    if (e->ev_n >= e->ev_cap) { e->counters[CTR_EVENTS_OVERFLOW]++; return; }
    struct mtcp_event *ev = &e->ev[ev_slot(e, e->ev_n)];
    ev->cid = cid;
    ev->parent = parent;
    ev->type = type;
    ev->err = err;
    ev->len = len;
    ev->pad = 0;
    e->ev_n++;
}

uint32_t mtcp_engine_events(mtcp_engine *e, struct mtcp_event *out, uint32_t max) {
    uint32_t n = 0;
    while (n < max && e->ev_n) {
        struct mtcp_event ev = e->ev[e->ev_head];
        e->ev_head = ev_slot(e, 1);
        e->ev_n--;
        struct conn *k = eng_conn_get(e, ev.cid);
        if (!k) continue;                        /* released or stale: no more events for it */
        if (ev.type == MTCP_EV_ACCEPT && (k->eflags & CF_CHILD)) {
            eng_listen_child_unlink(e, k);           /* leaves the listener's backlog */
            k->eflags &= (uint16_t)~CF_ACCEPTQ;
        }
        out[n++] = ev;
    }
    return n;
}
