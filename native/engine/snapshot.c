/*
 * snapshot.c — save / restore an engine in place (snapshot.h). Not on any packet path.
 *
 * Restoring is a copy of every allocation, minus what cannot matter: the bytes of chunks and
 * frame buffers that were free when the snapshot was taken (a free chunk or frame is always
 * written before it is read), and the port-reference tables are saved as their non-zero entries
 * (restored with a clear and a few stores).
 */
#include <stdlib.h>
#include <string.h>
#include "engine.h"
#include "snapshot.h"

#define SNAP_REGIONS 16

struct snap_region { void *p; size_t len; size_t off; };

struct port_ent { uint16_t port, ref; uint8_t fam; };

struct mtcp_snapshot {
    mtcp_engine *e;
    struct snap_region r[SNAP_REGIONS];
    uint32_t n;
    size_t total;
    uint8_t *data;
    uint32_t *used_recs;        /* RACK record sets in use at the snapshot; copies in rdata */
    uint32_t nrecs;
    struct tcp_recs *rdata;
    uint32_t *used_chunks;      /* chunks in use at the snapshot; their bytes follow in cdata */
    uint32_t nused;
    uint8_t *cdata;
    struct port_ent *ports;     /* non-zero port references */
    uint32_t nports;
};

static void add(struct mtcp_snapshot *s, void *p, size_t len) {
    if (!p || !len || s->n >= SNAP_REGIONS) return;
    s->r[s->n].p = p;
    s->r[s->n].len = len;
    s->r[s->n].off = s->total;
    s->total += len;
    s->n++;
}

mtcp_snapshot *mtcp_engine_snapshot(mtcp_engine *e) {
    if (!e || e->link) return NULL;
    struct mtcp_snapshot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->e = e;
    e->port_log_n = 0;                  /* log the ports referenced from now on */
    add(s, e, sizeof *e);
    add(s, e->conns, (size_t)e->nconns * sizeof *e->conns);
    add(s, e->htab, ((size_t)e->hmask + 1) * sizeof *e->htab);
    add(s, e->ooo, (size_t)e->nooo * sizeof *e->ooo);
    add(s, e->ooo_next, (size_t)e->nooo * sizeof *e->ooo_next);
    add(s, e->rec_next, (size_t)e->nrec * sizeof *e->rec_next);
    add(s, e->pool.next, (size_t)e->pool.nchunks * sizeof *e->pool.next);
    add(s, e->ev, (size_t)e->ev_cap * sizeof *e->ev);
    add(s, e->frames, (size_t)e->nframes * sizeof *e->frames);
    /* frame buffers: only if some frame is queued */
    uint32_t nfree = 0;
    for (uint32_t f = e->ffree; f != NONE32 && nfree <= e->nframes; f = e->frames[f].next) nfree++;
    if (nfree != e->nframes) add(s, e->fmem, (size_t)e->nframes * e->fsize);
    /* chunks: the ones in use */
    uint8_t *isfree = calloc(e->pool.nchunks, 1);
    s->used_chunks = malloc(((size_t)e->pool.nchunks + 1) * sizeof *s->used_chunks);
    if (!isfree || !s->used_chunks) goto fail;
    for (uint32_t c = e->pool.free_head, k = 0; c != BUF_NONE && k < e->pool.nchunks; c = e->pool.next[c], k++) isfree[c] = 1;
    for (uint32_t c = 0; c < e->pool.nchunks; c++) if (!isfree[c]) s->used_chunks[s->nused++] = c;
    free(isfree);
    isfree = NULL;
    s->cdata = malloc((size_t)s->nused * e->pool.chunk_size + 1);
    if (!s->cdata) goto fail;
    for (uint32_t i = 0; i < s->nused; i++)
        memcpy(s->cdata + (size_t)i * e->pool.chunk_size, e->pool.mem + (size_t)s->used_chunks[i] * e->pool.chunk_size,
               e->pool.chunk_size);
    /* RACK record sets: the ones in use */
    if (e->nrec) {
        uint8_t *rfree = calloc(e->nrec, 1);
        s->used_recs = malloc((size_t)e->nrec * sizeof *s->used_recs);
        s->rdata = malloc(((size_t)e->rec_used + 1) * sizeof *s->rdata);
        if (!rfree || !s->used_recs || !s->rdata) { free(rfree); goto fail; }
        for (uint32_t r = e->rec_free, k = 0; r != NONE32 && k < e->nrec; r = e->rec_next[r], k++) rfree[r] = 1;
        for (uint32_t r = 0; r < e->nrec && s->nrecs <= e->rec_used; r++)
            if (!rfree[r]) { s->rdata[s->nrecs] = e->recs[r]; s->used_recs[s->nrecs++] = r; }
        free(rfree);
    }
    /* port references */
    for (int f = 0; f < 2; f++)
        for (uint32_t p = 0; p < 65536; p++) if (e->portref[f][p]) s->nports++;
    s->ports = malloc(((size_t)s->nports + 1) * sizeof *s->ports);
    if (!s->ports) goto fail;
    s->nports = 0;
    for (int f = 0; f < 2; f++)
        for (uint32_t p = 0; p < 65536; p++)
            if (e->portref[f][p]) s->ports[s->nports++] = (struct port_ent){(uint16_t)p, e->portref[f][p], (uint8_t)f};
    s->data = malloc(s->total);
    if (!s->data) goto fail;
    for (uint32_t i = 0; i < s->n; i++) memcpy(s->data + s->r[i].off, s->r[i].p, s->r[i].len);
    return s;
fail:
    free(isfree);
    mtcp_snapshot_free(s);
    return NULL;
}

void mtcp_engine_restore(mtcp_snapshot *s) {
    mtcp_engine *e = s->e;
    uint32_t logged = e->port_log_n;          /* read before the engine struct is put back */
    uint32_t log[PORT_LOG_MAX];
    memcpy(log, e->port_log, sizeof log);
    for (uint32_t i = 0; i < s->n; i++) memcpy(s->r[i].p, s->data + s->r[i].off, s->r[i].len);
    for (uint32_t i = 0; i < s->nrecs; i++) e->recs[s->used_recs[i]] = s->rdata[i];
    for (uint32_t i = 0; i < s->nused; i++)
        memcpy(e->pool.mem + (size_t)s->used_chunks[i] * e->pool.chunk_size, s->cdata + (size_t)i * e->pool.chunk_size,
               e->pool.chunk_size);
    /* port references taken since the snapshot (eng_port_ref logs them; cleared here, the snapshot's
     * own entries are put back below), or everything if the log overflowed */
    if (logged <= PORT_LOG_MAX) {
        for (uint32_t i = 0; i < logged; i++) e->portref[log[i] >> 16][log[i] & 0xffff] = 0;
    } else {
        memset(e->portref[0], 0, 65536 * sizeof(uint16_t));
        memset(e->portref[1], 0, 65536 * sizeof(uint16_t));
    }
    for (uint32_t i = 0; i < s->nports; i++) e->portref[s->ports[i].fam][s->ports[i].port] = s->ports[i].ref;
}

size_t mtcp_snapshot_bytes(const mtcp_snapshot *s) { return s ? s->total : 0; }

void mtcp_snapshot_free(mtcp_snapshot *s) {
    if (!s) return;
    free(s->data);
    free(s->used_chunks);
    free(s->used_recs);
    free(s->rdata);
    free(s->cdata);
    free(s->ports);
    free(s);
}
