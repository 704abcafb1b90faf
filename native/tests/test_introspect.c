/* test_introspect.c — mtcp_engine_sockets / mtcp_engine_gauges / the duration histogram
 * (engine/introspect.c) and the live capture's filter and bounds (io/pcap.c), on two engines
 * joined by mtcp_simlink_pair with a virtual clock. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include "ctest.h"
#include "engine/engine.h"

static const uint8_t MAC_A[6] = {2, 0, 0, 0, 0, 1}, MAC_B[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t IP_A[4] = {198, 18, 0, 1}, IP_B[4] = {198, 18, 0, 2};

static mtcp_engine *A, *B;
static mtcp_link *LA, *LB;
static uint64_t now = 1000000;

static void setup_cookies(int syncookies) {
    CHECK_EQ(mtcp_simlink_pair(1024, 1500, &LA, &LB), 0);
    struct mtcp_config ca, cb;
    mtcp_config_default(&ca);
    ca.max_conns = 64;
    ca.max_chunks = 1024;
    ca.msl_us = 1000000;
    cb = ca;
    cb.syncookies = (uint8_t)syncookies;
    memcpy(ca.mac, MAC_A, 6);
    memcpy(cb.mac, MAC_B, 6);
    memcpy(ca.ipv4, IP_A, 4);
    memcpy(cb.ipv4, IP_B, 4);
    ca.ipv4_prefix = cb.ipv4_prefix = 24;
    char err[128];
    A = mtcp_engine_new(&ca, LA, err, sizeof err);
    B = mtcp_engine_new(&cb, LB, err, sizeof err);
    CHECK(A && B);
}

static void setup(void) { setup_cookies(MTCP_SYNCOOKIES_ON_OVERFLOW); }

static void teardown(void) {
    mtcp_engine_free(A);
    mtcp_engine_free(B);
    mtcp_link_close(LA);
    mtcp_link_close(LB);
}

/* run both engines for `us` microseconds of virtual time; take (and ack) events */
static mtcp_cid accepted;
static int take_b = 1;                    /* 0: leave B's events queued (its accept queue fills) */
static void step(uint64_t us) {
    struct mtcp_event ev[64];
    for (uint64_t t = 0; t < us; t += 1000) {
        now += 1000;
        mtcp_engine_poll(A, now);
        mtcp_engine_poll(B, now);
        uint32_t n = take_b ? mtcp_engine_events(B, ev, 64) : 0;
        for (uint32_t i = 0; i < n; i++) {
            if (ev[i].type == MTCP_EV_ACCEPT) accepted = ev[i].cid;
            if (ev[i].type == MTCP_EV_READABLE) { uint8_t b[64]; (void)mtcp_recv(B, ev[i].cid, b, sizeof b); }
        }
        (void)mtcp_engine_events(A, ev, 64);
    }
}

static uint32_t all(mtcp_engine *e, const struct mtcp_sock_filter *f, struct mtcp_sock_record *out, uint32_t max,
                    uint32_t chunk) {
    uint32_t cursor = 0, n = 0, calls = 0;
    while (cursor < mtcp_engine_nblocks(e)) {
        n += mtcp_engine_sockets(e, now, &cursor, f, out + n, max - n, chunk);
        calls++;
    }
    CHECK(chunk == 0 || calls >= mtcp_engine_nblocks(e) / chunk);    /* bounded per call */
    return n;
}

static void test_records(void) {
    setup();
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 8080};
    int64_t lid = mtcp_listen(B, &la, 7);
    CHECK(lid > 0);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(ra.ip, IP_B, 4);
    int64_t cid = mtcp_connect(A, now, &ra, NULL);
    CHECK(cid > 0);
    /* before any poll: SYN-SENT on A */
    struct mtcp_sock_record r[64];
    CHECK_EQ(all(A, NULL, r, 64, 5), 1);
    CHECK_EQ(r[0].info.state, MTCP_ST_SYN_SENT);
    CHECK_EQ(r[0].cid, (mtcp_cid)cid);
    step(20000);
    CHECK(accepted != 0);
    CHECK_EQ(mtcp_send(A, (mtcp_cid)cid, (const uint8_t *)"hello", 5), 5);
    step(20000);

    uint32_t n = all(B, NULL, r, 64, 3);
    CHECK_EQ(n, 2);
    int li = r[0].flags & MTCP_SOCK_LISTENER ? 0 : 1, ci = 1 - li;
    CHECK_EQ(r[li].info.state, MTCP_ST_LISTEN);
    CHECK_EQ(r[li].backlog, 7);
    CHECK_EQ(r[li].acceptq, 0);
    CHECK_EQ(r[li].synq, 0);
    CHECK_EQ(r[li].cookies_sent, 0);
    CHECK_EQ(r[li].overflows, 0);
    CHECK_EQ(r[li].info.local.port, 8080);
    CHECK_EQ(r[ci].info.state, MTCP_ST_ESTABLISHED);
    CHECK_EQ(r[ci].cid, accepted);
    CHECK_EQ(r[ci].info.local.port, 8080);
    CHECK_MEM(r[ci].info.remote.ip, IP_A, 4);
    CHECK_EQ(r[ci].info.bytes_received, 5);
    CHECK(r[ci].lastrcv_ms < 100);
    CHECK_EQ(r[ci].cc, MTCP_CC_CUBIC);

    n = all(A, NULL, r, 64, 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(r[0].bytes_acked, 5);
    CHECK(r[0].age_us >= 40000 && r[0].age_us <= 45000);   /* two 20 ms steps since the connect */
    /* an idle engine (no poll for 5 s): ages count from the caller's clock, not the last poll */
    uint32_t cur5 = 0;
    CHECK_EQ(mtcp_engine_sockets(A, now + 5000000, &cur5, NULL, r, 64, 0), 1);
    CHECK(r[0].lastrcv_ms >= 5000 && r[0].lastrcv_ms < 5100);
    CHECK(r[0].age_us >= 5040000);
    cur5 = 0;                             /* an older clock than the last poll counts as the poll's */
    CHECK_EQ(mtcp_engine_sockets(A, 1, &cur5, NULL, r, 64, 0), 1);
    CHECK(r[0].age_us >= 40000 && r[0].age_us <= 45000);
    CHECK(r[0].info.srtt_us > 0);
    CHECK_EQ(r[0].info.remote.port, 8080);

    /* filters */
    struct mtcp_sock_filter f = {.states = 1u << MTCP_ST_LISTEN};
    CHECK_EQ(all(B, &f, r, 64, 0), 1);
    CHECK(r[0].flags & MTCP_SOCK_LISTENER);
    f = (struct mtcp_sock_filter){.dport = 8080};
    CHECK_EQ(all(B, &f, r, 64, 0), 0);
    CHECK_EQ(all(A, &f, r, 64, 0), 1);
    f = (struct mtcp_sock_filter){.sport = 8080, .states = 1u << MTCP_ST_ESTABLISHED};
    CHECK_EQ(all(B, &f, r, 64, 0), 1);
    f = (struct mtcp_sock_filter){.family = MTCP_AF_INET6};
    CHECK_EQ(all(B, &f, r, 64, 0), 0);
    /* max = 1 stops early and resumes from the cursor */
    uint32_t cur = 0, got = 0;
    while (cur < mtcp_engine_nblocks(B)) got += mtcp_engine_sockets(B, now, &cur, NULL, r, 1, 0);
    CHECK_EQ(got, 2);

    struct mtcp_engine_gauges g;
    mtcp_engine_gauges(B, &g);
    CHECK_EQ(g.states[MTCP_ST_LISTEN], 1);
    CHECK_EQ(g.states[MTCP_ST_ESTABLISHED], 1);
    CHECK_EQ(g.backlog, 7);
    uint64_t hs = 0;
    for (int i = 0; i < MTCP_SRTT_BUCKETS; i++) hs += g.srtt_hist[i];
    CHECK_EQ(hs, 1);
    CHECK(mtcp_srtt_bound_us(MTCP_SRTT_BUCKETS - 1) == UINT64_MAX);

    /* close: A (first) ends in TIME-WAIT as an orphan, B's block is released -> histogram */
    uint64_t d0[MTCP_DUR_BUCKETS], sum0;
    mtcp_engine_conn_durations(B, d0, MTCP_DUR_BUCKETS, &sum0);
    uint64_t c0 = 0;
    for (int i = 0; i < MTCP_DUR_BUCKETS; i++) c0 += d0[i];
    CHECK_EQ(c0, 0);
    CHECK_EQ(mtcp_close(A, (mtcp_cid)cid), 0);
    step(5000);
    CHECK_EQ(mtcp_close(B, accepted), 0);
    step(50000);
    f = (struct mtcp_sock_filter){.states = 1u << MTCP_ST_TIME_WAIT};
    CHECK_EQ(all(A, &f, r, 64, 0), 1);
    CHECK(r[0].flags & MTCP_SOCK_DETACHED);
    f = (struct mtcp_sock_filter){.states = 1u << MTCP_ST_ESTABLISHED};
    CHECK_EQ(all(B, &f, r, 64, 0), 0);
    uint64_t d[MTCP_DUR_BUCKETS], sum;
    mtcp_engine_conn_durations(B, d, MTCP_DUR_BUCKETS, &sum);
    uint64_t c = 0;
    for (int i = 0; i < MTCP_DUR_BUCKETS; i++) c += d[i];
    CHECK_EQ(c, 1);
    CHECK(sum >= 20000 && sum < 200000);      /* ~45 ms of virtual time: SYN to the last ACK */
    mtcp_engine_gauges(A, &g);
    CHECK_EQ(g.states[MTCP_ST_TIME_WAIT], 1);
    CHECK_EQ(g.orphans, 1);
    teardown();
}

static uint64_t file_size(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return (uint64_t)n;
}

static void test_capture_filter(void) {
    setup();
    char path[] = "/tmp/mtcp_introspect_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    uint64_t st[5];
    CHECK_EQ(mtcp_link_pcap_status(LA, st), -ENOENT);
    struct mtcp_pcap_opts o = {.family = 9};
    CHECK_EQ(mtcp_link_pcap_start(LA, path, &o), -EINVAL);
    o = (struct mtcp_pcap_opts){.family = MTCP_AF_INET, .port = 9090};
    memcpy(o.host, IP_B, 4);
    CHECK_EQ(mtcp_link_pcap_start(LA, path, &o), 0);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 8080}, lb = {.family = MTCP_AF_INET, .port = 9090};
    CHECK(mtcp_listen(B, &la, 8) > 0);
    CHECK(mtcp_listen(B, &lb, 8) > 0);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(ra.ip, IP_B, 4);
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);          /* not matched: port 8080 */
    step(20000);
    CHECK_EQ(mtcp_link_pcap_status(LA, st), 0);
    CHECK_EQ(st[0], 0);
    CHECK(st[2] >= 3);                                   /* ARP + handshake seen, none written */
    ra.port = 9090;
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);
    step(20000);
    CHECK_EQ(mtcp_link_pcap_status(LA, st), 0);
    CHECK_EQ(st[0], 3);                                  /* SYN, SYN-ACK, ACK of the 9090 flow */
    CHECK_EQ(st[1], file_size(path));
    CHECK_EQ(st[3], 0);
    CHECK_EQ(mtcp_link_pcap(LA, NULL), 0);
    /* bounds: max_frames */
    o = (struct mtcp_pcap_opts){.max_frames = 2};
    CHECK_EQ(mtcp_link_pcap_start(LA, path, &o), 0);
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);
    step(20000);
    CHECK_EQ(mtcp_link_pcap_status(LA, st), 0);
    CHECK_EQ(st[0], 2);
    CHECK_EQ(st[3], 1);
    CHECK_EQ(file_size(path), st[1]);
    /* bounds: max_bytes (header 24 + one 16-byte record header + a 74-byte SYN fits, two do not) */
    o = (struct mtcp_pcap_opts){.max_bytes = 24 + 16 + 80};
    CHECK_EQ(mtcp_link_pcap_start(LA, path, &o), 0);
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);
    step(20000);
    CHECK_EQ(mtcp_link_pcap_status(LA, st), 0);
    CHECK_EQ(st[0], 1);
    CHECK(st[1] <= 24 + 16 + 80);
    CHECK_EQ(st[3], 1);
    CHECK_EQ(file_size(path), st[1]);
    unlink(path);
    teardown();
}

/* per-listener SYN-cookie use and overflow drops */
static void test_listener_cookies(void) {
    setup_cookies(MTCP_SYNCOOKIES_ALWAYS);
    struct mtcp_addr la = {.family = MTCP_AF_INET, .port = 8080};
    int64_t lid = mtcp_listen(B, &la, 1);
    CHECK(lid > 0);
    struct mtcp_addr ra = {.family = MTCP_AF_INET, .port = 8080};
    memcpy(ra.ip, IP_B, 4);
    take_b = 0;
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);
    step(20000);
    struct mtcp_sock_record r[8];
    struct mtcp_sock_filter f = {.states = 1u << MTCP_ST_LISTEN};
    CHECK_EQ(all(B, &f, r, 8, 0), 1);
    CHECK_EQ(r[0].cookies_sent, 1);
    CHECK_EQ(r[0].cookies_ok, 1);
    CHECK_EQ(r[0].acceptq, 1);            /* established, ACCEPT not taken: the queue is full */
    CHECK_EQ(r[0].overflows, 0);
    CHECK(mtcp_connect(A, now, &ra, NULL) > 0);
    step(5000);
    CHECK_EQ(all(B, &f, r, 8, 0), 1);
    CHECK(r[0].overflows >= 1);           /* the second SYN was dropped */
    CHECK_EQ(r[0].cookies_sent, 1);
    struct mtcp_engine_gauges g;
    mtcp_engine_gauges(B, &g);
    CHECK_EQ(g.acceptq, 1);
    take_b = 1;
    teardown();
}

int main(void) {
    RUN(test_records);
    RUN(test_listener_cookies);
    RUN(test_capture_filter);
    CTEST_END();
}
