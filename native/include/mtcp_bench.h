/*
 * mtcp_bench.h — benchmark entry points: the engine alone in C (native/engine/bench.c, `mtcp-loop bench engine`)
 * and raw frame rate through a ring pair (native/io/bench.c, `mtcp-loop bench rings`). Not part
 * of the API an application uses.
 *
 * A tier above mtcp.h (which it includes); the cffi binding (mtcp_loop/_build.py) reads the part
 * between CDEF-BEGIN and CDEF-END like mtcp.h's.
 */
#ifndef MTCP_BENCH_H
#define MTCP_BENCH_H
#include "mtcp.h"
#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */
/* --- engine benchmark (native/engine/bench.c): two engines in one thread, no Python in the loop.
 * mode 0: short connections (handshake, 64 B each way, close), param = concurrent clients;
 * mode 1: one bulk flow, param = write size in bytes. Modes 0/1 join the engines with
 * mtcp_simlink_pair and drive them with mtcp_engine_poll (RX + TX in one call, events after);
 * modes 2/3 are the same workloads over the frame API (mtcp_engine_output -> mtcp_engine_input),
 * where each engine's output runs after its events were dispatched, so replies carry the ACKs.
 * mode | 4 (sim link only): the link offers checksum offload (like veth/loopback).
 * Runs `seconds` after a 0.2 s warm-up. Returns 0 or -errno. --- */
struct mtcp_bench_result {
    double conns_per_sec;
    double gbps;
    uint64_t conns;
    uint64_t bytes;
    double seconds;
    uint64_t retransmits;
    uint64_t errors;          /* failed/reset connections or refused writes seen by the bench */
    double cpu_seconds;       /* CPU time this thread used while measuring (the machine may be shared) */
    uint64_t link_drops;      /* frames the in-memory link dropped (ring full): should be 0 */
    uint64_t segments;        /* TCP segments sent by both engines while measuring */
    uint64_t verified;        /* bytes compared byte for byte with what was sent (bulk: during the
                                 warm-up; short: every echo, always) */
};
int mtcp_bench_engine(int mode, double seconds, uint32_t param, struct mtcp_bench_result *out);


/* Raw frame rate through the ring contract (the engine's code path): fills tx's TX ring with
 * frame_len-byte frames, txsync per batch, rxsync rx (may be NULL) per batch, for `seconds`.
 * Frames/s out through tx and in through rx. 0 or -errno. (`mtcp-loop bench rings`) */
int mtcp_bench_link(mtcp_link *tx, mtcp_link *rx, double seconds, uint32_t frame_len,
                    double *tx_fps, double *rx_fps);
/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif
