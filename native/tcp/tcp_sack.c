/*
 * tcp_sack.c — the peer's SACK blocks as a scoreboard for loss recovery (RFC 2018, RFC 6675),
 * and RACK-TLP (RFC 8985) deciding what is lost (second half of the file).
 *
 * Call chain:
 *   tcp_in.c input_synchronized -> tcpi_sb_update (merge SEG's blocks) ; ack_advance -> tcpi_sb_prune
 *   tcp_in.c duplicate ACK      -> tcpi_sb_hole_lost (IsLost(HighACK+1): enter recovery early)
 *   tcp_out.c output_data       -> tcpi_sb_pipe (SetPipe) / tcpi_sb_next_lost, tcpi_sb_next_hole
 *                                  (NextSeg rules 1 and 3)
 * The scoreboard is c->sb[0..sb_n): disjoint ranges above snd_una, sorted; cleared on RTO
 * (RFC 2018 8: the receiver may renege).
 */
#include "tcp_int.h"

static void sb_recount(struct tcp_conn *c)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < c->sb_n; i++) s += c->sb[i].right - c->sb[i].left;
    c->sacked_bytes = s;
}

/* Drop ranges at or below snd_una. */
void tcpi_sb_prune(struct tcp_conn *c)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        struct tcp_sack_range r = c->sb[i];
        if (seq_le(r.right, c->snd_una)) continue;
        if (seq_lt(r.left, c->snd_una)) r.left = c->snd_una;
        c->sb[j++] = r;
    }
    c->sb_n = (uint8_t)j;
    sb_recount(c);
}

/* Merge the peer's SACK blocks (RFC 2018 / RFC 6675 Update()). Returns 1 if new bytes were SACKed. */
int tcpi_sb_update(struct tcp_conn *c, const struct wire_tcp *seg)
{
    uint32_t before = c->sacked_bytes;
    for (uint32_t k = 0; k < seg->nsack && k < WIRE_TCP_MAX_SACK; k++) {
        uint32_t l = seg->sack[k].left, r = seg->sack[k].right;
        /* ignore blocks that are not inside (snd_una, snd_max] (RFC 2883 D-SACK included) */
        if (!seq_lt(l, r) || seq_le(r, c->snd_una) || seq_gt(r, c->snd_max)) continue;
        if (seq_lt(l, c->snd_una)) l = c->snd_una;
        /* insert sorted, merging overlaps */
        struct tcp_sack_range tmp[TCP_SB_MAX + 1];
        uint32_t n = 0, placed = 0;
        for (uint32_t i = 0; i < c->sb_n; i++) {
            struct tcp_sack_range x = c->sb[i];
            if (seq_lt(x.right, l)) { tmp[n++] = x; continue; }
            if (seq_gt(x.left, r)) {
                if (!placed) { tmp[n].left = l; tmp[n].right = r; n++; placed = 1; }
                tmp[n++] = x;
                continue;
            }
            /* overlap/adjacent: grow [l, r] */
            if (seq_lt(x.left, l)) l = x.left;
            if (seq_gt(x.right, r)) r = x.right;
        }
        if (!placed) { tmp[n].left = l; tmp[n].right = r; n++; }
        if (n > TCP_SB_MAX) n = TCP_SB_MAX;   /* forget the highest range: conservative */
        memcpy(c->sb, tmp, n * sizeof tmp[0]);
        c->sb_n = (uint8_t)n;
    }
    sb_recount(c);
    return c->sacked_bytes != before;
}

/* RFC 6675 IsLost() for a hole below scoreboard range i: DupThresh discontiguous SACKed ranges
 * above it, or more than (DupThresh-1)*SMSS SACKed bytes above it. */
int tcpi_sb_hole_lost(const struct tcp_conn *c, uint32_t i)
{
    uint32_t above = 0;
    for (uint32_t k = i; k < c->sb_n; k++) above += c->sb[k].right - c->sb[k].left;
    return (c->sb_n - i) >= DUPTHRESH || above > (DUPTHRESH - 1) * eff_mss(c);
}

/* RFC 6675 SetPipe(): bytes believed in the network. */
static uint32_t rack_pipe(const struct tcp_conn *c);
static int rack_next_lost(const struct tcp_conn *c, uint32_t *seq, uint32_t *len);
uint32_t tcpi_sb_pipe(const struct tcp_conn *c)
{
    if (tcpi_rack_on(c)) return rack_pipe(c);
    uint32_t pipe = 0, s = c->snd_una;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t hl = c->sb[i].left;
        if (seq_lt(s, hl)) {
            if (!tcpi_sb_hole_lost(c, i)) pipe += hl - s;
            if (seq_gt(c->high_rxt, s)) pipe += (seq_lt(c->high_rxt, hl) ? c->high_rxt : hl) - s;
        }
        s = c->sb[i].right;
    }
    if (seq_lt(s, c->snd_max)) pipe += c->snd_max - s;
    return pipe;
}

/* RFC 6675 NextSeg() rule 1: first lost, not yet retransmitted bytes. */
int tcpi_sb_next_lost(const struct tcp_conn *c, uint32_t *seq, uint32_t *len)
{
    if (tcpi_rack_on(c)) return rack_next_lost(c, seq, len);
    uint32_t s = c->snd_una;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t hl = c->sb[i].left;
        uint32_t from = seq_gt(c->high_rxt, s) ? c->high_rxt : s;
        if (seq_lt(from, hl) && tcpi_sb_hole_lost(c, i)) {
            *seq = from;
            *len = min32(hl - from, eff_mss(c));
            return 1;
        }
        s = c->sb[i].right;
    }
    return 0;
}

/* RFC 6675 NextSeg() rule 3: when neither a lost segment (rule 1) nor new data (rule 2) can be
 * sent, the first unSACKed bytes above HighRxt below the highest SACKed byte, lost or not. */
int tcpi_sb_next_hole(const struct tcp_conn *c, uint32_t *seq, uint32_t *len)
{
    uint32_t s = c->snd_una;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t hl = c->sb[i].left;
        uint32_t from = seq_gt(c->high_rxt, s) ? c->high_rxt : s;
        if (seq_lt(from, hl)) {
            *seq = from;
            *len = min32(hl - from, eff_mss(c));
            return 1;
        }
        s = c->sb[i].right;
    }
    return 0;
}

/* ======================================================================================
 * RACK-TLP (RFC 8985) for SACK connections.
 *
 *   tcp_out.c tcpi_send_seg  -> tcpi_rack_sent (record / split the transmitted range, its time)
 *   tcp_in.c  input_synchronized -> tcpi_rack_on_ack (before the scoreboard update: RACK.xmit_ts,
 *             end_seq, rtt, min RTT, reordering seen, DSACK -> reo_wnd_mult) ; ack_advance ->
 *             tcpi_rack_prune ; then tcpi_rack_detect (mark lost; reordering timer t_rack)
 *   tcp_timer.c t_rack -> tcpi_rack_detect ; t_tlp -> tcpi_tlp_fire ; RTO -> tcpi_rack_mark_all_lost
 *   tcpi_sb_pipe / tcpi_sb_next_lost: with records, "lost" means marked by RACK (RFC 6675 stays
 *   the structure of what to send: pipe, NextSeg rule 1, then new data).
 * ====================================================================================== */

int tcpi_rack_on(const struct tcp_conn *c) { return (c->flags & TCPF_SACK_OK) && c->rec_n; }

static inline int ts_after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
/* RACK_sent_after(t1, seq1, t2, seq2) */
static inline int sent_after(uint32_t t1, uint32_t e1, uint32_t t2, uint32_t e2)
{
    return ts_after(t1, t2) || (t1 == t2 && seq_gt(e1, e2));
}
static inline uint32_t rec_start(const struct tcp_conn *c, uint32_t i) { return i ? c->recs->rec[i - 1].end : c->rec_base; }

/* SACKed bytes of [a, b) by the scoreboard. */
static uint32_t sacked_in(const struct tcp_conn *c, uint32_t a, uint32_t b)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < c->sb_n; i++) {
        uint32_t l = c->sb[i].left, r = c->sb[i].right;
        if (seq_le(r, a)) continue;
        if (seq_ge(l, b)) break;
        s += (seq_lt(r, b) ? r : b) - (seq_gt(l, a) ? l : a);
    }
    return s;
}
/* First unSACKed byte range of [a, b): 1 and [*l, *r) or 0. */
static int first_unsacked(const struct tcp_conn *c, uint32_t a, uint32_t b, uint32_t *l, uint32_t *r)
{
    uint32_t s = a;
    for (uint32_t i = 0; i < c->sb_n && seq_lt(s, b); i++) {
        uint32_t sl = c->sb[i].left, sr = c->sb[i].right;
        if (seq_le(sr, s)) continue;
        if (seq_gt(sl, s)) { *l = s; *r = seq_lt(sl, b) ? sl : b; return 1; }
        s = sr;
    }
    if (seq_lt(s, b)) { *l = s; *r = b; return 1; }
    return 0;
}

/* Merge one neighbour pair with equal flags (the closest in time; the later time is kept). */
static int rec_compact(struct tcp_conn *c)
{
    int best = -1;
    uint32_t bestd = UINT32_MAX;
    for (uint32_t i = 0; i + 1 < c->rec_n; i++) {
        if (c->recs->fl[i] != c->recs->fl[i + 1]) continue;
        uint32_t d = c->recs->rec[i + 1].ts - c->recs->rec[i].ts;
        if ((int32_t)d < 0) d = (uint32_t)-(int32_t)d;
        if (d < bestd) { bestd = d; best = (int)i; }
    }
    if (best < 0) return 0;
    uint32_t i = (uint32_t)best;
    if (ts_after(c->recs->rec[i].ts, c->recs->rec[i + 1].ts)) c->recs->rec[i + 1].ts = c->recs->rec[i].ts;
    memmove(&c->recs->rec[i], &c->recs->rec[i + 1], (c->rec_n - i - 1) * sizeof c->recs->rec[0]);
    memmove(&c->recs->fl[i], &c->recs->fl[i + 1], (c->rec_n - i - 1) * sizeof c->recs->fl[0]);
    c->rec_n--;
    return 1;
}
static void rec_reserve(struct tcp_conn *c, uint32_t room)
{
    while (c->rec_n + room > TCP_REC_MAX && rec_compact(c)) {}
}
/* Split record i at sequence at (strictly inside): i = [start, at), i+1 = [at, end). */
static int rec_split(struct tcp_conn *c, uint32_t i, uint32_t at)
{
    if (!seq_gt(at, rec_start(c, i)) || !seq_lt(at, c->recs->rec[i].end)) return 0;
    if (c->rec_n >= TCP_REC_MAX) return -1;
    memmove(&c->recs->rec[i + 1], &c->recs->rec[i], (c->rec_n - i) * sizeof c->recs->rec[0]);
    memmove(&c->recs->fl[i + 1], &c->recs->fl[i], (c->rec_n - i) * sizeof c->recs->fl[0]);
    c->rec_n++;
    c->recs->rec[i].end = at;
    return 0;
}
static uint32_t rec_find(const struct tcp_conn *c, uint32_t seq)
{
    for (uint32_t i = 0; i < c->rec_n; i++)
        if (seq_lt(seq, c->recs->rec[i].end)) return i;
    return c->rec_n;
}

/* [seq, end) just went out at now (new data or a retransmission). */
void tcpi_rack_sent(struct tcp_conn *c, uint64_t now, uint32_t seq, uint32_t end)
{
    if (!(c->flags & TCPF_SACK_OK) || !c->recs || !seq_lt(seq, end)) return;
    uint32_t t = (uint32_t)now;
    if (!c->rec_n) c->rec_base = seq;
    uint32_t top = c->rec_n ? c->recs->rec[c->rec_n - 1].end : c->rec_base;
    if (seq_lt(seq, c->rec_base)) seq = c->rec_base;
    /* retransmitted part: [a, b) below top */
    uint32_t a = seq, b = seq_lt(end, top) ? end : top;
    if (seq_lt(a, b)) {
        rec_reserve(c, 2);
        uint32_t i = rec_find(c, a);
        if (i < c->rec_n && rec_split(c, i, a) == 0 && seq_gt(a, rec_start(c, i))) i++;
        uint32_t j = rec_find(c, b - 1);
        if (j < c->rec_n) (void)rec_split(c, j, b);
        for (; i < c->rec_n && seq_le(c->recs->rec[i].end, b) ; i++) {
            c->recs->rec[i].ts = t;
            c->recs->fl[i] = TCP_RECF_RETRANS;
        }
        /* a split that found no room: the record straddling b is updated whole */
        if (i < c->rec_n && seq_lt(rec_start(c, i), b)) {
            c->recs->rec[i].ts = t;
            c->recs->fl[i] = TCP_RECF_RETRANS;
        }
    }
    /* new part: [max(seq, top), end) */
    if (seq_gt(end, top)) {
        uint32_t n = c->rec_n;
        if (n && c->recs->rec[n - 1].ts == t && c->recs->fl[n - 1] == 0) {
            c->recs->rec[n - 1].end = end;
            return;
        }
        rec_reserve(c, 1);
        n = c->rec_n;
        if (n >= TCP_REC_MAX) {           /* no room even after merging: extend the last one */
            c->recs->rec[n - 1].end = end;
            c->recs->rec[n - 1].ts = t;
            return;
        }
        c->recs->rec[n].end = end;
        c->recs->rec[n].ts = t;
        c->recs->fl[n] = 0;
        c->rec_n++;
    }
}

void tcpi_rack_prune(struct tcp_conn *c)
{
    uint32_t k = 0;
    while (k < c->rec_n && seq_le(c->recs->rec[k].end, c->snd_una)) k++;
    if (k) {
        memmove(&c->recs->rec[0], &c->recs->rec[k], (c->rec_n - k) * sizeof c->recs->rec[0]);
        memmove(&c->recs->fl[0], &c->recs->fl[k], (c->rec_n - k) * sizeof c->recs->fl[0]);
        c->rec_n = (uint8_t)(c->rec_n - k);
    }
    if (c->rec_n && seq_lt(c->rec_base, c->snd_una)) c->rec_base = c->snd_una;
    if (c->rack_dsack_valid && seq_ge(c->snd_una, c->rack_dsack_round)) c->rack_dsack_valid = 0;
}

int tcpi_seg_dsack(const struct wire_tcp *seg)
{
    if (!seg->nsack) return 0;
    if (seq_le(seg->sack[0].right, seg->ack)) return 1;
    return seg->nsack > 1 && seq_ge(seg->sack[0].left, seg->sack[1].left) &&
           seq_le(seg->sack[0].right, seg->sack[1].right);
}

/* RFC 8985 6.2 step 2 (RACK_update) for one newly delivered piece of record i ending at dend */
static void rack_deliver(struct tcp_conn *c, uint32_t i, uint32_t dend, uint32_t t, uint32_t fack0)
{
    uint32_t rtt = t - c->recs->rec[i].ts;
    int rx = (c->recs->fl[i] & TCP_RECF_RETRANS) != 0;
    if (rx && (!c->rack_min_rtt || rtt < c->rack_min_rtt)) return;     /* may be the original's ACK */
    if (!rx && (!c->rack_min_rtt || rtt < c->rack_min_rtt)) c->rack_min_rtt = rtt ? rtt : 1;
    c->rack_rtt = rtt;
    if (!c->rack_valid || sent_after(c->recs->rec[i].ts, dend, c->rack_ts, c->rack_end)) {
        c->rack_ts = c->recs->rec[i].ts;
        c->rack_end = dend;
        c->rack_valid = 1;
    }
    /* step 3: a never retransmitted segment delivered below the highest delivered one */
    if (!rx && seq_lt(dend, fack0)) c->rack_reord = 1;
    if (seq_gt(dend, c->rack_fack)) c->rack_fack = dend;
}

/* Newly delivered [a, b): for every record piece not SACKed before. */
static void rack_deliver_range(struct tcp_conn *c, uint32_t a, uint32_t b, uint32_t t, uint32_t fack0)
{
    for (uint32_t i = rec_find(c, a); i < c->rec_n; i++) {
        uint32_t s = rec_start(c, i), e = c->recs->rec[i].end;
        if (seq_ge(s, b)) break;
        uint32_t l = seq_gt(s, a) ? s : a, r = seq_lt(e, b) ? e : b;
        if (seq_lt(l, r) && sacked_in(c, l, r) < r - l) rack_deliver(c, i, r, t, fack0);
    }
}

/* An ACK arrived (call before tcpi_sb_update and ack_advance). */
void tcpi_rack_on_ack(struct tcp_conn *c, uint64_t now, const struct wire_tcp *seg)
{
    if (!tcpi_rack_on(c)) return;
    uint32_t t = (uint32_t)now, fack0 = c->rack_valid ? c->rack_fack : c->snd_una;
    if (!c->rack_valid) c->rack_fack = c->snd_una;
    if (seq_gt(seg->ack, c->snd_una) && seq_le(seg->ack, c->snd_max))
        rack_deliver_range(c, c->snd_una, seg->ack, t, fack0);
    int dsack = tcpi_seg_dsack(seg);
    for (uint32_t k = dsack ? 1 : 0; k < seg->nsack && k < WIRE_TCP_MAX_SACK; k++) {
        uint32_t l = seg->sack[k].left, r = seg->sack[k].right;
        if (!seq_lt(l, r) || seq_le(r, seg->ack) || seq_gt(r, c->snd_max)) continue;
        if (seq_lt(l, seg->ack)) l = seg->ack;
        rack_deliver_range(c, l, r, t, fack0);
    }
    /* RFC 8985 6.2 step 4: DSACK widens the reordering window, once per round trip */
    if (dsack) {
        if (c->rack_dsack_valid && seq_ge(c->snd_una, c->rack_dsack_round)) c->rack_dsack_valid = 0;
        if (!c->rack_dsack_valid) {
            if (c->rack_mult < 1) c->rack_mult = 1;
            if (c->rack_mult < 64) c->rack_mult++;
            c->rack_dsack_valid = 1;
            c->rack_dsack_round = c->snd_max;
            c->rack_persist = 16;
        }
        c->rack_reord = 1;
    }
}

void tcpi_rack_recovery_exit(struct tcp_conn *c)
{
    if (c->rack_persist && --c->rack_persist == 0) c->rack_mult = 1;
}

static uint32_t rack_reo_wnd(const struct tcp_conn *c)
{
    if (!c->rack_reord) {
        if (c->flags & TCPF_IN_RECOVERY) return 0;
        if (c->sacked_bytes >= DUPTHRESH * eff_mss(c)) return 0;
    }
    uint32_t mult = c->rack_mult ? c->rack_mult : 1;
    uint32_t base = c->rack_min_rtt ? c->rack_min_rtt : c->srtt_us;
    uint64_t w = (uint64_t)mult * base / 4;
    if (c->srtt_us && w > c->srtt_us) w = c->srtt_us;
    return (uint32_t)w;
}

/* RFC 8985 6.2 step 5 (RACK_detect_loss): mark lost what was sent before the most recently
 * delivered segment and is older than RACK.rtt + reo_wnd; arm the reordering timer for the rest.
 * Returns how many records were newly marked lost. */
int tcpi_rack_detect(struct tcp_conn *c, uint64_t now)
{
    c->t_rack = 0;
    if (!tcpi_rack_on(c) || !c->rack_valid) return 0;
    uint32_t t = (uint32_t)now, reo = rack_reo_wnd(c);
    int64_t timeout = 0;
    int marked = 0;
    rec_reserve(c, 8);
    for (uint32_t i = 0; i < c->rec_n; i++) {
        if (c->recs->fl[i] & TCP_RECF_LOST) continue;
        uint32_t s = rec_start(c, i), e = c->recs->rec[i].end;
        if (seq_lt(s, c->snd_una)) s = c->snd_una;
        if (!seq_lt(s, e)) continue;
        uint32_t ts = c->recs->rec[i].ts;
        uint32_t l, r;
        if (!first_unsacked(c, s, e, &l, &r)) continue;
        if (!sent_after(c->rack_ts, c->rack_end, ts, r)) continue;
        int64_t remaining = (int64_t)(int32_t)(ts - t) + (int64_t)c->rack_rtt + reo;
        if (remaining <= 0) {
            /* same transmission time: only the part below RACK.end_seq was sent "before" */
            if (ts == c->rack_ts && seq_gt(e, c->rack_end) && seq_gt(c->rack_end, s)) {
                if (rec_split(c, i, c->rack_end) < 0) continue;
            }
            c->recs->fl[i] |= TCP_RECF_LOST;
            marked++;
        } else if (remaining > timeout) {
            timeout = remaining;
        }
    }
    if (timeout) {
        c->t_rack = now + (uint64_t)timeout;
        c->t_tlp = 0;                 /* the reordering timer takes the probe's place */
    }
    return marked;
}

void tcpi_rack_mark_all_lost(struct tcp_conn *c)
{
    for (uint32_t i = 0; i < c->rec_n; i++) c->recs->fl[i] |= TCP_RECF_LOST;
    c->t_rack = 0;
}

/* RACK pipe: unSACKed bytes of records not marked lost. */
static uint32_t rack_pipe(const struct tcp_conn *c)
{
    uint32_t pipe = 0;
    for (uint32_t i = 0; i < c->rec_n; i++) {
        if (c->recs->fl[i] & TCP_RECF_LOST) continue;
        uint32_t s = rec_start(c, i), e = c->recs->rec[i].end;
        if (seq_lt(s, c->snd_una)) s = c->snd_una;
        if (!seq_lt(s, e)) continue;
        pipe += (e - s) - sacked_in(c, s, e);
    }
    uint32_t top = c->rec_n ? c->recs->rec[c->rec_n - 1].end : c->snd_una;
    if (seq_lt(top, c->snd_max)) pipe += c->snd_max - top;
    return pipe;
}

static int rack_next_lost(const struct tcp_conn *c, uint32_t *seq, uint32_t *len)
{
    for (uint32_t i = 0; i < c->rec_n; i++) {
        if (!(c->recs->fl[i] & TCP_RECF_LOST)) continue;
        uint32_t s = rec_start(c, i), e = c->recs->rec[i].end, l, r;
        if (seq_lt(s, c->snd_una)) s = c->snd_una;
        if (!seq_lt(s, e)) continue;
        if (!first_unsacked(c, s, e, &l, &r)) continue;
        *seq = l;
        *len = min32(r - l, eff_mss(c));
        return 1;
    }
    return 0;
}

/* ---- TLP (RFC 8985 7) ---- */
static int tlp_ok(const struct tcp_conn *c)
{
    return (c->flags & TCPF_SACK_OK) && can_send_data_state(c->state) && c->snd_una != c->snd_max &&
           !(c->flags & TCPF_IN_RECOVERY) && c->srtt_us && !c->persist;
}

/* 7.2: after new data went out or an ACK advanced snd_una: PTO = 2*SRTT (+ the peer's delayed
 * ACK when one segment is in flight), not after the RTO */
void tcpi_tlp_arm(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->t_tlp = 0;
    if (c->tlp_active || !tlp_ok(c)) return;
    uint64_t pto = 2ull * c->srtt_us;
    if (c->snd_max - c->snd_una <= eff_mss(c)) pto += env->cfg->delack_us ? env->cfg->delack_us : 40000;
    if (pto < 2000) pto = 2000;
    uint64_t t = now + pto;
    if (c->t_rexmit && t >= c->t_rexmit) return;
    c->t_tlp = t;
}

/* 7.3: PTO expired: send one new segment if allowed, else retransmit the highest one. */
void tcpi_tlp_fire(const struct tcp_env *env, struct tcp_conn *c, uint64_t now)
{
    c->t_tlp = 0;
    if (c->tlp_active || !tlp_ok(c)) return;
    uint32_t mss = eff_mss(c), de = data_end(c);
    uint32_t wend = c->snd_una + c->snd_wnd;
    c->tlp_active = 1;
    int n = -1;
    if (c->snd_nxt == c->snd_max && seq_lt(c->snd_nxt, de) && seq_lt(c->snd_nxt, wend)) {
        uint32_t len = min32(min32(mss, de - c->snd_nxt), wend - c->snd_nxt);
        n = tcpi_send_seg(env, c, now, c->snd_nxt, len, WIRE_TCP_ACK);
        c->tlp_rxt = 0;
    }
    if (n <= 0) {
        int finb = (c->flags & TCPF_FIN_SENT) && c->snd_max == de + 1;
        uint32_t dtop = finb ? de : c->snd_max;
        uint32_t s = seq_gt(dtop, c->snd_una) && dtop - c->snd_una > mss ? dtop - mss : c->snd_una;
        if (seq_gt(s, dtop)) s = dtop;
        n = tcpi_send_seg(env, c, now, s, dtop - s, (uint8_t)(WIRE_TCP_ACK | (finb ? WIRE_TCP_FIN : 0)));
        c->tlp_rxt = 1;
    }
    if (n < 0) {                      /* no TX room: try again at the next output */
        c->tlp_active = 0;
        c->t_tlp = now + 1000;
        return;
    }
    c->tlp_end = c->snd_max;
    CNT(env, TCP_CTR_TLP_PROBES);
    c->t_rexmit = now + c->rto_us;    /* 7.3: the RTO restarts after the probe */
}
