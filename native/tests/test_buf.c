/* test_buf.c — chunk pool, buf_stream and buf_ooo: unit tests plus a randomized test
 * against a reference model (flat byte array + "held" map relative to rcv_nxt). */
#include "ctest.h"
#include "tcp/buf.h"
#include <errno.h>

/* ---------- helpers ---------- */

/* Chunks a stream holds; checks the chain length matches head_off/len. */
static uint32_t stream_chunks(const struct buf_pool *p, const struct buf_stream *s)
{
    if (s->len == 0) {
        CHECK(s->head == BUF_NONE && s->tail == BUF_NONE);
        return 0;
    }
    CHECK(s->head_off < p->chunk_size);
    uint32_t n = 1, c = s->head;
    while (c != s->tail) {
        c = p->next[c];
        n++;
        if (n > p->nchunks) {
            CHECK(!"chain loops");
            return 0;
        }
    }
    uint32_t want = (uint32_t)(((uint64_t)s->head_off + s->len + p->chunk_size - 1) / p->chunk_size);
    CHECK_EQ(n, want);
    return n;
}

static uint32_t ooo_chunks(const struct buf_pool *p, const struct buf_ooo *o)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < o->n; i++) {
        CHECK_EQ(o->r[i].len, o->r[i].data.len);
        n += stream_chunks(p, &o->r[i].data);
    }
    for (uint32_t i = o->n; i < BUF_OOO_MAX; i++)
        CHECK(o->r[i].data.head == BUF_NONE);
    return n;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static uint32_t rndn(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

static void fill(uint8_t *b, uint32_t n, uint8_t start)
{
    for (uint32_t i = 0; i < n; i++)
        b[i] = (uint8_t)(start + i);
}

/* ---------- pool ---------- */

static void test_pool(void)
{
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, 0, 4), -EINVAL);
    CHECK_EQ(tcp_buf_pool_init(&p, 64, 0), -EINVAL);
    CHECK_EQ(tcp_buf_pool_init(&p, 64, 4), 0);
    CHECK_EQ(p.nfree, 4);
    uint32_t c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = tcp_buf_chunk_get(&p);
        CHECK(c[i] < 4);
    }
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            CHECK(c[i] != c[j]);
    CHECK_EQ(p.nfree, 0);
    CHECK_EQ(tcp_buf_chunk_get(&p), BUF_NONE);
    tcp_buf_chunk_put(&p, c[2]);
    CHECK_EQ(p.nfree, 1);
    CHECK_EQ(tcp_buf_chunk_get(&p), c[2]);
    for (int i = 0; i < 4; i++)
        tcp_buf_chunk_put(&p, c[i]);
    CHECK_EQ(p.nfree, 4);
    tcp_buf_pool_fini(&p);
    CHECK(p.mem == NULL);
}

/* ---------- stream ---------- */

static void test_stream_basic(void)
{
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, 16, 8), 0);
    struct buf_stream s;
    tcp_buf_stream_init(&s);
    CHECK_EQ(s.len, 0);
    CHECK(s.head == BUF_NONE);

    uint8_t in[200], out[200];
    fill(in, sizeof in, 1);
    CHECK_EQ(tcp_buf_stream_append(&p, &s, in, 0), 0);
    CHECK(s.head == BUF_NONE);                 /* empty append takes no chunk */
    CHECK_EQ(tcp_buf_stream_append(&p, &s, in, 5), 5);
    CHECK_EQ(tcp_buf_stream_append(&p, &s, in + 5, 30), 30);
    CHECK_EQ(s.len, 35);
    CHECK_EQ(stream_chunks(&p, &s), 3);
    CHECK_EQ(p.nfree, 5);

    memset(out, 0, sizeof out);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 0, out, 100), 35);
    CHECK_MEM(out, in, 35);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 17, out, 3), 3);
    CHECK_MEM(out, in + 17, 3);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 35, out, 3), 0);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 30, out, 10), 5);
    CHECK_MEM(out, in + 30, 5);

    const uint8_t *ptr;
    CHECK_EQ(tcp_buf_stream_map(&p, &s, 3, &ptr), 13);
    CHECK_MEM(ptr, in + 3, 13);
    CHECK_EQ(tcp_buf_stream_map(&p, &s, 32, &ptr), 3);
    CHECK_MEM(ptr, in + 32, 3);
    CHECK_EQ(tcp_buf_stream_map(&p, &s, 35, &ptr), 0);

    tcp_buf_stream_consume(&p, &s, 16);            /* exactly one chunk */
    CHECK_EQ(s.len, 19);
    CHECK_EQ(s.head_off, 0);
    CHECK_EQ(p.nfree, 6);
    tcp_buf_stream_consume(&p, &s, 3);
    CHECK_EQ(s.head_off, 3);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 0, out, 100), 16);
    CHECK_MEM(out, in + 19, 16);
    tcp_buf_stream_consume(&p, &s, 16);            /* all: the stream gives back every chunk */
    CHECK_EQ(s.len, 0);
    CHECK(s.head == BUF_NONE && s.tail == BUF_NONE);
    CHECK_EQ(s.head_off, 0);
    CHECK_EQ(p.nfree, 8);

    /* append stops when the pool runs dry */
    CHECK_EQ(tcp_buf_stream_append(&p, &s, in, 200), 128);
    CHECK_EQ(p.nfree, 0);
    CHECK_EQ(tcp_buf_stream_append(&p, &s, in, 1), 0);
    CHECK_EQ(tcp_buf_stream_peek(&p, &s, 0, out, 200), 128);
    CHECK_MEM(out, in, 128);
    struct buf_stream t;
    tcp_buf_stream_init(&t);
    CHECK_EQ(tcp_buf_stream_append(&p, &t, in, 1), 0);   /* empty stream, dry pool */
    CHECK(t.head == BUF_NONE);
    tcp_buf_stream_clear(&p, &s);
    CHECK_EQ(p.nfree, 8);
    CHECK_EQ(s.len, 0);
    tcp_buf_pool_fini(&p);
}

/* A long FIFO run with random append/consume sizes against a flat array. */
static void test_stream_random(void)
{
    static const uint32_t sizes[] = {1, 3, 16, 100, 2048};
    rng_state = 0x1234567;
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct buf_pool p;
        uint32_t cs = sizes[k];
        CHECK_EQ(tcp_buf_pool_init(&p, cs, 4096 / cs + 3), 0);
        static uint8_t ref[1 << 16], tmp[5000], in[5000];
        uint32_t rlen = 0;
        struct buf_stream s;
        tcp_buf_stream_init(&s);
        for (int op = 0; op < 3000; op++) {
            if (rndn(2)) {
                uint32_t n = rndn(3000);
                for (uint32_t i = 0; i < n; i++)
                    in[i] = (uint8_t)rnd();
                uint32_t got = tcp_buf_stream_append(&p, &s, in, n);
                CHECK(got <= n);
                if (got < n)
                    CHECK(p.nfree == 0);
                if (rlen + got > sizeof ref)
                    break;
                memcpy(ref + rlen, in, got);
                rlen += got;
            } else {
                uint32_t n = rndn((rlen < sizeof tmp ? rlen : (uint32_t)sizeof tmp) + 1), off = rndn(rlen + 1);
                uint32_t want = off + n <= rlen ? n : rlen - off;
                CHECK_EQ(tcp_buf_stream_peek(&p, &s, off, tmp, n), want);
                CHECK_MEM(tmp, ref + off, want);
                n = rndn(rlen + 1);
                tcp_buf_stream_consume(&p, &s, n);
                memmove(ref, ref + n, rlen - n);
                rlen -= n;
            }
            CHECK_EQ(s.len, rlen);
            CHECK_EQ(stream_chunks(&p, &s) + p.nfree, p.nchunks);
        }
        tcp_buf_stream_clear(&p, &s);
        CHECK_EQ(p.nfree, p.nchunks);
        tcp_buf_pool_fini(&p);
    }
}

/* Cursor reads (TCP output pattern: base = snd_una moves with consume, reads mostly at
 * increasing offsets) against a flat array, sequence numbers wrapping through 2^32. */
static void test_stream_cursor(void)
{
    static const uint32_t sizes[] = {1, 7, 64, 100, 2048};
    rng_state = 0xfeedbeef;
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct buf_pool p;
        uint32_t cs = sizes[k];
        CHECK_EQ(tcp_buf_pool_init(&p, cs, 20000 / cs + 8), 0);
        static uint8_t ref[1 << 16], tmp[5000], in[5000];
        uint32_t rlen = 0, base = 0u - 3000u - cs * 3, rd = 0;
        struct buf_stream s;
        struct buf_cursor cur;
        memset(&cur, 0, sizeof cur);               /* all-zero = no position */
        tcp_buf_stream_init(&s);
        for (int op = 0; op < 20000; op++) {
            uint32_t what = rndn(10);
            if (what < 2) {                        /* app writes */
                uint32_t n = rndn(3000);
                for (uint32_t i = 0; i < n; i++)
                    in[i] = (uint8_t)rnd();
                uint32_t got = tcp_buf_stream_append(&p, &s, in, n);
                if (rlen + got > sizeof ref)
                    break;
                memcpy(ref + rlen, in, got);
                rlen += got;
            } else if (what < 4) {                 /* ACK: consume from the front */
                uint32_t n = rndn(rlen + 1);
                tcp_buf_stream_consume(&p, &s, n);
                memmove(ref, ref + n, rlen - n);
                rlen -= n;
                base += n;
                rd = rd > n ? rd - n : 0;
            } else {                               /* output: next segment, sometimes a rewind */
                if (rndn(8) == 0)
                    rd = rndn(rlen + 1);
                if (rndn(50) == 0)
                    memset(&cur, 0, sizeof cur);
                uint32_t n = 1 + rndn(1500);
                uint32_t want = rd < rlen ? (n < rlen - rd ? n : rlen - rd) : 0;
                CHECK_EQ(tcp_buf_stream_peek_cur(&p, &s, base, rd, tmp, n, &cur), want);
                if (want)
                    CHECK_MEM(tmp, ref + rd, want);
                rd += want;
            }
            if (ctest_failures) {
                fprintf(stderr, "  cs %u op %d\n", cs, op);
                break;
            }
        }
        tcp_buf_stream_clear(&p, &s);
        CHECK_EQ(p.nfree, p.nchunks);
        tcp_buf_pool_fini(&p);
    }
}

/* ---------- ooo unit tests ---------- */

static uint8_t pat(uint32_t seq) { return (uint8_t)(seq * 7 + (seq >> 8)); }
static void patfill(uint8_t *b, uint32_t seq, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        b[i] = pat(seq + i);
}

static void test_ooo_basic(void)
{
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, 64, 64), 0);
    static struct buf_ooo o;
    tcp_buf_ooo_init(&o);
    uint8_t d[1000], out[1000];
    uint32_t L[8], R[8];
    const uint32_t nxt = 1000;

    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 4), 0);
    patfill(d, 1100, 100);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1100, d, 100), 100);   /* [1100,1200) */
    patfill(d, 1300, 50);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1300, d, 50), 50);     /* [1300,1350) */
    patfill(d, 1010, 20);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1010, d, 20), 20);     /* [1010,1030) */
    CHECK_EQ(o.n, 3);
    CHECK_EQ(o.r[0].seq, 1010);
    CHECK_EQ(o.r[1].seq, 1100);
    CHECK_EQ(o.r[2].seq, 1300);
    CHECK_EQ(tcp_buf_ooo_bytes(&o), 170);
    /* most recent first, then the others by sequence */
    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 4), 3);
    CHECK_EQ(L[0], 1010); CHECK_EQ(R[0], 1030);
    CHECK_EQ(L[1], 1100); CHECK_EQ(R[1], 1200);
    CHECK_EQ(L[2], 1300); CHECK_EQ(R[2], 1350);
    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 2), 2);

    /* adjacent at the end merges; the grown range goes first in SACK */
    patfill(d, 1200, 10);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1200, d, 10), 10);
    CHECK_EQ(o.n, 3);
    CHECK_EQ(o.r[1].len, 110);
    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 4), 3);
    CHECK_EQ(L[0], 1100); CHECK_EQ(R[0], 1210);
    CHECK_EQ(L[1], 1010);
    CHECK_EQ(L[2], 1300);

    /* adjacent at the front (prepend) */
    patfill(d, 1280, 20);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1280, d, 20), 20);
    CHECK_EQ(o.n, 3);
    CHECK_EQ(o.r[2].seq, 1280);
    CHECK_EQ(o.r[2].len, 70);
    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 1), 1);
    CHECK_EQ(L[0], 1280); CHECK_EQ(R[0], 1350);

    /* overlap: first copy wins. New data differs from what is held. */
    memset(d, 0xee, sizeof d);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1150, d, 200), 70);
    /* [1150,1350) covers held [1150,1210) and [1280,1350): 70 new bytes [1210,1280) */
    CHECK_EQ(o.n, 2);
    CHECK_EQ(o.r[1].seq, 1100);
    CHECK_EQ(o.r[1].len, 250);
    CHECK_EQ(tcp_buf_stream_peek(&p, &o.r[1].data, 0, out, 250), 250);
    for (uint32_t i = 0; i < 250; i++) {
        uint32_t seq = 1100 + i;
        uint8_t want = (seq >= 1210 && seq < 1280) ? 0xee : pat(seq);
        if (out[i] != want) {
            CHECK_EQ(out[i], want);
            break;
        }
    }
    /* pure duplicate: nothing new, but its range is reported first */
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 1015, d, 5), 0);
    CHECK_EQ(tcp_buf_ooo_sack(&o, L, R, 4), 2);
    CHECK_EQ(L[0], 1010);

    /* nothing pulls while the hole at rcv_nxt is open */
    struct buf_stream rcv;
    tcp_buf_stream_init(&rcv);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, nxt, &rcv), 0);
    /* fill [1000,1010) in order (as TCP would), then pull */
    patfill(d, 1000, 10);
    CHECK_EQ(tcp_buf_stream_append(&p, &rcv, d, 10), 10);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, 1010, &rcv), 20);
    CHECK_EQ(rcv.len, 30);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, 1030, &rcv), 0);
    /* data before rcv_nxt is trimmed; overlapping the held range merges it */
    patfill(d, 1020, 80);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, 1030, 1020, d, 80), 70);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, 1030, &rcv), 320);
    CHECK_EQ(o.n, 0);
    CHECK_EQ(rcv.len, 350);
    CHECK_EQ(tcp_buf_stream_peek(&p, &rcv, 0, out, 350), 350);
    for (uint32_t i = 0; i < 350; i++) {
        uint32_t seq = 1000 + i;
        uint8_t want = (seq >= 1210 && seq < 1280) ? 0xee : pat(seq);
        if (out[i] != want) {
            CHECK_EQ(out[i], want);
            break;
        }
    }
    CHECK_EQ(ooo_chunks(&p, &o) + stream_chunks(&p, &rcv) + p.nfree, p.nchunks);
    tcp_buf_stream_clear(&p, &rcv);
    tcp_buf_ooo_clear(&p, &o);
    CHECK_EQ(p.nfree, p.nchunks);
    tcp_buf_pool_fini(&p);
}

static void test_ooo_limits(void)
{
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, 32, 40), 0);
    static struct buf_ooo o;
    tcp_buf_ooo_init(&o);
    uint8_t d[256];
    fill(d, sizeof d, 0);
    /* BUF_OOO_MAX ranges, then one more that is not adjacent is refused */
    for (uint32_t i = 0; i < BUF_OOO_MAX; i++)
        CHECK_EQ(tcp_buf_ooo_insert(&p, &o, 0, 10 + 20 * i, d, 5), 5);
    CHECK_EQ(o.n, BUF_OOO_MAX);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, 0, 5000, d, 5), -ENOBUFS);
    CHECK_EQ(o.n, BUF_OOO_MAX);
    /* a segment bridging two ranges still works (it merges) and frees a slot */
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, 0, 15, d, 15), 15);
    CHECK_EQ(o.n, BUF_OOO_MAX - 1);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, 0, 5000, d, 5), 5);
    /* range limit in the middle of a segment spanning gaps: stores what it can */
    tcp_buf_ooo_clear(&p, &o);
    CHECK_EQ(p.nfree, 40);

    /* pool exhaustion: 40 chunks of 32 = 1280 bytes; rcv holds 1 byte (so a later pull is misaligned) */
    struct buf_stream rcv;
    tcp_buf_stream_init(&rcv);
    CHECK_EQ(tcp_buf_stream_append(&p, &rcv, d, 1), 1);
    int r = tcp_buf_ooo_insert(&p, &o, 0, 100, d, 256);
    CHECK_EQ(r, 256);
    uint32_t stored = 256;
    for (uint32_t seq = 400; seq < 4000; seq += 300) {
        r = tcp_buf_ooo_insert(&p, &o, 0, seq, d, 256);
        if (r < 0) {
            CHECK_EQ(r, -ENOBUFS);
            break;
        }
        stored += (uint32_t)r;
    }
    CHECK_EQ(r, -ENOBUFS);
    CHECK(p.nfree <= 1);
    CHECK(tcp_buf_ooo_bytes(&o) >= stored);
    CHECK_EQ(ooo_chunks(&p, &o) + stream_chunks(&p, &rcv) + p.nfree, p.nchunks);
    /* prepend with a dry pool stores the suffix next to the range */
    uint32_t before = o.r[0].len;
    r = tcp_buf_ooo_insert(&p, &o, 0, 1, d, 99);
    CHECK_EQ(r, -ENOBUFS);
    CHECK(o.r[0].seq + o.r[0].len == 356);
    CHECK(o.r[0].len >= before);
    CHECK_EQ(ooo_chunks(&p, &o) + stream_chunks(&p, &rcv) + p.nfree, p.nchunks);
    /* pull needs no chunk even with a dry pool and a misaligned destination */
    uint32_t seq0 = o.r[0].seq, len0 = o.r[0].len;
    CHECK_EQ(p.nfree, 0);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, seq0, &rcv), len0);
    CHECK_EQ(rcv.len, 1 + len0);
    CHECK_EQ(ooo_chunks(&p, &o) + stream_chunks(&p, &rcv) + p.nfree, p.nchunks);
    tcp_buf_stream_clear(&p, &rcv);
    tcp_buf_ooo_clear(&p, &o);
    CHECK_EQ(p.nfree, p.nchunks);
    tcp_buf_pool_fini(&p);
}

/* Sequence numbers wrapping through 2^32, with a chunk size that does not divide 2^32. */
static void test_ooo_wrap(void)
{
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, 100, 64), 0);
    static struct buf_ooo o;
    tcp_buf_ooo_init(&o);
    uint8_t d[600], out[1200];
    const uint32_t nxt = 0xffffff00u;
    patfill(d, 0x10, 200);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 0x10, d, 200), 200);          /* after the wrap */
    patfill(d, 0xffffff80u, 0x80);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 0xffffff80u, d, 0x80), 0x80); /* before the wrap */
    CHECK_EQ(o.n, 2);
    CHECK_EQ(o.r[0].seq, 0xffffff80u);                                 /* sorted modulo 2^32 */
    CHECK_EQ(o.r[1].seq, 0x10);
    patfill(d, 0xfffffff0u, 0x40);
    CHECK_EQ(tcp_buf_ooo_insert(&p, &o, nxt, 0xfffffff0u, d, 0x40), 0x10);  /* bridges the two */
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.r[0].len, 0x80 + 0x10 + 200);
    struct buf_stream rcv;
    tcp_buf_stream_init(&rcv);
    patfill(d, nxt, 0x80);
    CHECK_EQ(tcp_buf_stream_append(&p, &rcv, d, 0x80), 0x80);
    CHECK_EQ(tcp_buf_ooo_pull(&p, &o, 0xffffff80u, &rcv), 0x80 + 0x10 + 200);
    CHECK_EQ(tcp_buf_stream_peek(&p, &rcv, 0, out, sizeof out), 0x100 + 0x10 + 200);
    uint8_t want[1200];
    patfill(want, nxt, 0x100 + 0x10 + 200);
    CHECK_MEM(out, want, 0x100 + 0x10 + 200);
    tcp_buf_stream_clear(&p, &rcv);
    CHECK_EQ(p.nfree, p.nchunks);
    tcp_buf_pool_fini(&p);
}

/* ---------- randomized test against a reference model ---------- */

#define W 3000          /* window the model covers, relative to rcv_nxt */

struct model {
    uint8_t data[W], held[W];
    uint8_t *exp;       /* in-order bytes the application has not read */
    uint32_t exp_len, exp_cap;
};

static void model_shift(struct model *m, uint32_t k)
{
    if (k >= W) {
        memset(m->held, 0, W);
        return;
    }
    memmove(m->data, m->data + k, W - k);
    memmove(m->held, m->held + k, W - k);
    memset(m->held + W - k, 0, k);
}

static void model_push(struct model *m, const uint8_t *b, uint32_t n)
{
    if (n == 0)
        return;
    if (m->exp_len + n > m->exp_cap) {
        m->exp_cap = (m->exp_len + n) * 2;
        m->exp = realloc(m->exp, m->exp_cap);
    }
    memcpy(m->exp + m->exp_len, b, n);
    m->exp_len += n;
}

static int check_state(struct buf_pool *p, struct buf_ooo *o, struct buf_stream *rcv, uint32_t rcv_nxt,
                       uint8_t *ih, uint8_t *id)
{
    int bad = ctest_failures;
    memset(ih, 0, W);
    CHECK(o->n <= BUF_OOO_MAX);
    uint32_t prev_end = 0;
    for (uint32_t i = 0; i < o->n; i++) {
        uint32_t rs = o->r[i].seq - rcv_nxt, len = o->r[i].len;
        CHECK(len > 0);
        CHECK(rs + len <= W);
        if (i)
            CHECK(rs > prev_end);     /* sorted, disjoint, not adjacent (merged) */
        prev_end = rs + len;
        if (rs + len > W || len == 0)
            continue;
        CHECK_EQ(tcp_buf_stream_peek(p, &o->r[i].data, 0, id + rs, len), len);
        memset(ih + rs, 1, len);
    }
    CHECK_EQ(ooo_chunks(p, o) + stream_chunks(p, rcv) + p->nfree, p->nchunks);
    return ctest_failures == bad;
}

static void random_round(uint64_t seed, int ops)
{
    static const uint32_t sizes[] = {1, 3, 7, 64, 100, 512, 2048};
    rng_state = seed;
    uint32_t cs = sizes[rndn(sizeof sizes / sizeof sizes[0])];
    uint32_t full = (W + cs - 1) / cs + 2;
    uint32_t nchunks = 1 + rndn(2 * full + BUF_OOO_MAX * 2);    /* often too few */
    struct buf_pool p;
    CHECK_EQ(tcp_buf_pool_init(&p, cs, nchunks), 0);
    static struct buf_ooo o;
    tcp_buf_ooo_init(&o);
    struct buf_stream rcv;
    tcp_buf_stream_init(&rcv);
    static struct model m;
    memset(&m, 0, sizeof m);
    uint32_t rcv_nxt = rndn(2) ? (uint32_t)(0u - rndn(20000)) : (uint32_t)rnd();
    static uint8_t seg[W + 200], ih[W], id[W], tmp[W * 4];
    int start_failures = ctest_failures;

    for (int op = 0; op < ops && ctest_failures == start_failures; op++) {
        uint32_t what = rndn(100);
        if (what < 60) {                               /* out-of-order segment */
            int32_t s = (int32_t)rndn(W) - (rndn(8) == 0 ? 150 : 0);
            uint32_t maxlen = (uint32_t)(W - (s > 0 ? s : 0));
            uint32_t len = 1 + rndn(rndn(4) == 0 ? maxlen : (maxlen < 400 ? maxlen : 400));
            if (s + (int32_t)len > W)
                len = (uint32_t)(W - s);
            for (uint32_t i = 0; i < len; i++)
                seg[i] = (uint8_t)rnd();
            uint32_t seq = rcv_nxt + (uint32_t)s;
            int r = tcp_buf_ooo_insert(&p, &o, rcv_nxt, seq, seg, len);
            CHECK(r >= 0 || r == -ENOBUFS);
            if (!check_state(&p, &o, &rcv, rcv_nxt, ih, id))
                break;
            uint32_t newly = 0, first_rel = UINT32_MAX;
            for (uint32_t x = 0; x < W; x++) {
                int in_seg = (int32_t)x >= s && (int32_t)x < s + (int32_t)len;
                if (m.held[x]) {
                    CHECK(ih[x]);             /* nothing held is ever lost... */
                    CHECK_EQ(id[x], m.data[x]); /* ...nor overwritten (first copy wins) */
                    if (in_seg && first_rel == UINT32_MAX)
                        first_rel = x;
                } else if (ih[x]) {
                    CHECK(in_seg);            /* only the new segment adds bytes */
                    if (in_seg)
                        CHECK_EQ(id[x], seg[(int32_t)x - s]);
                    m.held[x] = 1;
                    m.data[x] = id[x];
                    newly++;
                    if (first_rel == UINT32_MAX)
                        first_rel = x;
                } else if (r >= 0) {
                    CHECK(!in_seg);           /* success: the whole segment is held */
                }
                if (ctest_failures != start_failures) {
                    fprintf(stderr, "  at rel %u (op %d)\n", x, op);
                    break;
                }
            }
            if (r >= 0)
                CHECK_EQ(r, newly);
            if (first_rel != UINT32_MAX) {        /* RFC 2018: first block holds the new segment */
                uint32_t L[4], R[4];
                uint32_t nb = tcp_buf_ooo_sack(&o, L, R, 4);
                CHECK_EQ(nb, o.n < 4 ? o.n : 4);
                CHECK(nb > 0 && seq_le(L[0], rcv_nxt + first_rel) && seq_lt(rcv_nxt + first_rel, R[0]));
                for (uint32_t b = 2; b < nb; b++)
                    CHECK(seq_lt(L[b - 1], L[b]));
            }
        } else if (what < 72) {                        /* in-order segment straight into rcv */
            uint32_t len = 1 + rndn(rndn(3) == 0 ? W : 300);
            for (uint32_t i = 0; i < len; i++)
                seg[i] = (uint8_t)rnd();
            uint32_t k = tcp_buf_stream_append(&p, &rcv, seg, len);
            model_push(&m, seg, k);
            rcv_nxt += k;
            model_shift(&m, k);
            uint32_t n = tcp_buf_ooo_pull(&p, &o, rcv_nxt, &rcv);
            uint32_t c = 0;
            while (c < W && m.held[c])
                c++;
            CHECK_EQ(n, c);
            model_push(&m, m.data, c);
            rcv_nxt += c;
            model_shift(&m, c);
        } else if (what < 82) {                        /* pull */
            uint32_t n = tcp_buf_ooo_pull(&p, &o, rcv_nxt, &rcv);
            uint32_t c = 0;
            while (c < W && m.held[c])
                c++;
            CHECK_EQ(n, c);
            model_push(&m, m.data, c);
            rcv_nxt += c;
            model_shift(&m, c);
        } else if (what < 98) {                        /* the application reads */
            CHECK_EQ(rcv.len, m.exp_len);
            uint32_t n = rndn(m.exp_len + 1);
            if (n > sizeof tmp)
                n = sizeof tmp;
            uint32_t off = rndn(m.exp_len - n + 1);
            CHECK_EQ(tcp_buf_stream_peek(&p, &rcv, off, tmp, n), n);
            if (n)
                CHECK_MEM(tmp, m.exp + off, n);
            n = rndn(m.exp_len + 1);
            tcp_buf_stream_consume(&p, &rcv, n);
            if (n)
                memmove(m.exp, m.exp + n, m.exp_len - n);
            m.exp_len -= n;
        } else {                                       /* connection reset: everything back */
            tcp_buf_ooo_clear(&p, &o);
            tcp_buf_stream_clear(&p, &rcv);
            CHECK_EQ(p.nfree, p.nchunks);
            memset(m.held, 0, W);
            m.exp_len = 0;
        }
        if (!check_state(&p, &o, &rcv, rcv_nxt, ih, id))
            break;
        for (uint32_t x = 0; x < W; x++)
            if (ih[x] != m.held[x] || (ih[x] && id[x] != m.data[x])) {
                CHECK(!"model and buffer differ");
                fprintf(stderr, "  at rel %u (op %d)\n", x, op);
                break;
            }
        uint32_t held = 0;
        for (uint32_t x = 0; x < W; x++)
            held += m.held[x];
        CHECK_EQ(tcp_buf_ooo_bytes(&o), held);
        CHECK_EQ(rcv.len, m.exp_len);
    }
    /* the stream content matches */
    if (ctest_failures == start_failures && rcv.len <= sizeof tmp && m.exp_len) {
        CHECK_EQ(tcp_buf_stream_peek(&p, &rcv, 0, tmp, rcv.len), m.exp_len);
        CHECK_MEM(tmp, m.exp, m.exp_len);
    }
    tcp_buf_ooo_clear(&p, &o);
    tcp_buf_stream_clear(&p, &rcv);
    CHECK_EQ(p.nfree, p.nchunks);                      /* every chunk came back */
    if (ctest_failures != start_failures)
        fprintf(stderr, "  random_round: replay with seed 0x%llx (cs %u, nchunks %u)\n",
                (unsigned long long)seed, cs, nchunks);
    tcp_buf_pool_fini(&p);
    free(m.exp);
    m.exp = NULL;
}

static void test_ooo_random(void)
{
    const char *env = getenv("BUF_SEED");
    if (env) {
        random_round(strtoull(env, NULL, 0), 2000);
        return;
    }
    for (uint64_t i = 1; i <= 150; i++) {
        int before = ctest_failures;
        random_round(0x9e3779b97f4a7c15ull * i, 400);
        if (ctest_failures != before)
            break;
    }
}

int main(void)
{
    RUN(test_pool);
    RUN(test_stream_basic);
    RUN(test_stream_random);
    RUN(test_stream_cursor);
    RUN(test_ooo_basic);
    RUN(test_ooo_limits);
    RUN(test_ooo_wrap);
    RUN(test_ooo_random);
    CTEST_END();
}
