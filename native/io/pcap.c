/*
 * pcap.c — optional capture of every frame a link carries (classic pcap, microsecond
 * timestamps). Ethernet links are written as LINKTYPE_ETHERNET (1), IP links (the loopback
 * switch) as LINKTYPE_RAW (101). Timestamps: the engine's monotonic now_us plus the
 * realtime-minus-monotonic offset taken when the capture was opened (mtcp_link_pcap_offset
 * replaces it: a virtual clock uses a fixed offset so captures replay byte for byte).
 *
 * The writer belongs to one link and is called from that link's owner thread only (from its
 * rxsync for received frames and txsync for transmitted ones). stdio buffering: no syscall
 * and no malloc per frame.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "link.h"
#include "io_util.h"

struct pcap_writer {
    FILE *f;
    uint8_t *scratch;      /* PCAP_SNAPLEN bytes: a copy whose partial checksum gets finished */
    int64_t offset_us;     /* realtime - monotonic */
    uint64_t frames;
    int failed;
};

#define PCAP_SNAPLEN 262144u

struct pcap_file_hdr {
    uint32_t magic;
    uint16_t vmaj, vmin;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
};

struct pcap_rec_hdr {
    uint32_t ts_sec, ts_usec, incl_len, orig_len;
};

static int64_t ts_us(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void link_pcap_close(struct mtcp_link *l)
{
    if (l && l->pcap) {
        fclose(l->pcap->f);
        free(l->pcap->scratch);
        free(l->pcap);
        l->pcap = NULL;
    }
}

int mtcp_link_pcap(mtcp_link *l, const char *path)
{
    if (!l)
        return -EINVAL;
    link_pcap_close(l);
    if (!path || !*path)
        return 0;                       /* NULL/"" stops capturing */
    struct pcap_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->scratch = malloc(PCAP_SNAPLEN);
    w->f = w->scratch ? fopen(path, "wb") : NULL;
    if (!w->f) {
        int e = w->scratch ? errno : ENOMEM;
        free(w->scratch);
        free(w);
        return -e;
    }
    setvbuf(w->f, NULL, _IOFBF, 1 << 16);
    struct pcap_file_hdr h = {
        .magic = 0xa1b2c3d4u, .vmaj = 2, .vmin = 4, .thiszone = 0, .sigfigs = 0,
        .snaplen = PCAP_SNAPLEN,
        .linktype = l->link_type == MTCP_LINK_IP ? 101u : 1u,
    };
    if (fwrite(&h, sizeof(h), 1, w->f) != 1 || fflush(w->f) != 0) {
        int e = errno ? errno : EIO;
        fclose(w->f);
        free(w->scratch);
        free(w);
        return -e;
    }
    w->offset_us = ts_us(CLOCK_REALTIME) - ts_us(CLOCK_MONOTONIC);
    l->pcap = w;
    return 0;
}

void link_pcap_frame(struct mtcp_link *l, const uint8_t *frame, uint32_t len, uint64_t now_us)
{
    struct pcap_writer *w = l->pcap;
    if (!w || w->failed)
        return;
    int64_t t = (int64_t)now_us + w->offset_us;
    if (t < 0)
        t = 0;
    uint32_t incl = len < PCAP_SNAPLEN ? len : PCAP_SNAPLEN;
    struct pcap_rec_hdr r = {
        .ts_sec = (uint32_t)(t / 1000000), .ts_usec = (uint32_t)(t % 1000000),
        .incl_len = incl, .orig_len = len,
    };
    if (fwrite(&r, sizeof(r), 1, w->f) != 1 || fwrite(frame, 1, incl, w->f) != incl)
        w->failed = 1;
    w->frames++;
}

/* A slot as the wire would carry it: a partial checksum (LINK_SLOT_F_CSUM_PARTIAL, filled in
 * later by the kernel/NIC) is finished in a copy, so the capture shows no bad checksums. */
void link_pcap_slot(struct mtcp_link *l, const struct link_slot *s, uint64_t now_us)
{
    struct pcap_writer *w = l->pcap;
    if (!w || w->failed)
        return;
    if ((s->flags & LINK_SLOT_F_CSUM_PARTIAL) && s->len <= PCAP_SNAPLEN) {
        memcpy(w->scratch, s->buf, s->len);
        if (io_csum_finalize(w->scratch, io_ip_end(s->buf, s->len, l->link_type), s->csum_start,
                             s->csum_offset) == 0) {
            link_pcap_frame(l, w->scratch, s->len, now_us);
            return;
        }
    }
    link_pcap_frame(l, s->buf, s->len, now_us);
}

int mtcp_link_pcap_offset(mtcp_link *l, int64_t offset_us)
{
    if (!l || !l->pcap)
        return -EINVAL;
    l->pcap->offset_us = offset_us;
    return 0;
}

/* Flush buffered capture records (tests, and before reading a live capture). */
void link_pcap_flush(struct mtcp_link *l)
{
    if (l && l->pcap)
        fflush(l->pcap->f);
}
