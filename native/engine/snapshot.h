/*
 * snapshot.h — save an engine's whole state and put it back in place (fuzzing, tests).
 *
 * mtcp_engine_snapshot copies every allocation of an engine without a link (the engine struct,
 * connection blocks, hash buckets, port references, reassembly and RACK pools, the chunk pool,
 * events, frame buffers); mtcp_engine_restore copies them back into the same memory, so every
 * internal pointer stays valid and the engine is exactly as it was when the snapshot was taken.
 * A fuzz harness sets two engines up once and restores them per input instead of building them
 * and handshaking from scratch.
 */
#ifndef MTCP_ENGINE_SNAPSHOT_H
#define MTCP_ENGINE_SNAPSHOT_H
#include <stddef.h>
#include "mtcp.h"

typedef struct mtcp_snapshot mtcp_snapshot;
/* NULL if the engine has a link (its rings are not captured) or on allocation failure. */
mtcp_snapshot *mtcp_engine_snapshot(mtcp_engine *e);
void mtcp_engine_restore(mtcp_snapshot *s);
size_t mtcp_snapshot_bytes(const mtcp_snapshot *s);
void mtcp_snapshot_free(mtcp_snapshot *s);

#endif
