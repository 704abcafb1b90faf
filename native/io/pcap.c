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
    /* live capture (mtcp_link_pcap_start): filter and bounds; zero = none */
    struct mtcp_pcap_opts opts;
    uint64_t bytes;        /* written, file header included */
    uint64_t seen;         /* frames offered to the writer */
    int done;              /* a bound was reached: nothing more is written */
    uint32_t link_type;
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
    return mtcp_link_pcap_start(l, path, NULL);
}

int mtcp_link_pcap_start(mtcp_link *l, const char *path, const struct mtcp_pcap_opts *opts)
{
    if (!l)
        return -EINVAL;
    if (opts && opts->family && opts->family != MTCP_AF_INET && opts->family != MTCP_AF_INET6)
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
    if (opts)
        w->opts = *opts;
    w->bytes = sizeof(h);
    w->link_type = l->link_type;
    l->pcap = w;
    return 0;
}

/* Ethernet (optionally one 802.1Q tag) or raw IP: does the frame match the host/port filter? */
static int pcap_match(const struct pcap_writer *w, const uint8_t *f, uint32_t len)
{
    uint32_t off = 0;
    unsigned et;
    if (w->link_type == MTCP_LINK_IP) {
        if (len < 1)
            return 0;
        et = (f[0] >> 4) == 6 ? 0x86dd : (f[0] >> 4) == 4 ? 0x0800 : 0;
    } else {
        if (len < 14)
            return 0;
        et = (unsigned)f[12] << 8 | f[13];
        off = 14;
        if (et == 0x8100 && len >= 18) {
            et = (unsigned)f[16] << 8 | f[17];
            off = 18;
        }
    }
    const uint8_t *src, *dst;
    uint32_t alen, l4;
    unsigned proto;
    if (et == 0x0800) {
        if (len < off + 20)
            return 0;
        const uint8_t *ip = f + off;
        alen = 4;
        src = ip + 12;
        dst = ip + 16;
        proto = ip[9];
        l4 = off + (uint32_t)(ip[0] & 15) * 4;
        if ((((unsigned)ip[6] << 8 | ip[7]) & 0x1fff) != 0)
            proto = 0;                              /* a later fragment carries no ports */
    } else if (et == 0x86dd) {
        if (len < off + 40)
            return 0;
        const uint8_t *ip = f + off;
        alen = 16;
        src = ip + 8;
        dst = ip + 24;
        proto = ip[6];                              /* extension headers: no port match */
        l4 = off + 40;
    } else {
        return 0;                                   /* ARP and others carry no IP/port */
    }
    if (w->opts.family) {
        if ((w->opts.family == MTCP_AF_INET) != (alen == 4))
            return 0;
        if (memcmp(src, w->opts.host, alen) != 0 && memcmp(dst, w->opts.host, alen) != 0)
            return 0;
    }
    if (w->opts.port) {
        if ((proto != 6 && proto != 17) || len < l4 + 4)
            return 0;
        unsigned sp = (unsigned)f[l4] << 8 | f[l4 + 1], dp = (unsigned)f[l4 + 2] << 8 | f[l4 + 3];
        if (sp != w->opts.port && dp != w->opts.port)
            return 0;
    }
    return 1;
}

void link_pcap_frame(struct mtcp_link *l, const uint8_t *frame, uint32_t len, uint64_t now_us)
{
    struct pcap_writer *w = l->pcap;
    if (!w || w->failed || w->done)
        return;
    w->seen++;
    if ((w->opts.family || w->opts.port) && !pcap_match(w, frame, len))
        return;
    uint32_t incl0 = len < PCAP_SNAPLEN ? len : PCAP_SNAPLEN;
    if ((w->opts.max_frames && w->frames >= w->opts.max_frames) ||
        (w->opts.max_bytes && w->bytes + sizeof(struct pcap_rec_hdr) + incl0 > w->opts.max_bytes)) {
        w->done = 1;
        fflush(w->f);
        return;
    }
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
    w->bytes += sizeof(r) + incl;
    if (w->opts.max_frames && w->frames >= w->opts.max_frames)
        w->done = 1;
}

/* A slot as the wire would carry it: a partial checksum (LINK_SLOT_F_CSUM_PARTIAL, filled in
 * later by the kernel/NIC) is finished in a copy, so the capture shows no bad checksums. */
void link_pcap_slot(struct mtcp_link *l, const struct link_slot *s, uint64_t now_us)
{
    struct pcap_writer *w = l->pcap;
    if (!w || w->failed || w->done)
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

int mtcp_link_pcap_status(mtcp_link *l, uint64_t out[5])
{
    struct pcap_writer *w = l ? l->pcap : NULL;
    if (!w)
        return -ENOENT;
    if (fflush(w->f) != 0)
        w->failed = 1;
    out[0] = w->frames;
    out[1] = w->bytes;
    out[2] = w->seen;
    out[3] = (uint64_t)(w->done || w->failed);
    out[4] = (uint64_t)w->failed;
    return 0;
}
