/*
 * tcp_sack.c — the peer's SACK blocks as a scoreboard for loss recovery (RFC 2018, RFC 6675).
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
uint32_t tcpi_sb_pipe(const struct tcp_conn *c)
{
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
