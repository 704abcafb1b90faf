/* test_link_tap_packet.c — the TAP and AF_PACKET backends, each in a child process inside a new network
 * namespace (root + /dev/net/tun; skipped otherwise).
 * Shared helpers: link_helpers.h. */
#include "link_helpers.h"

/* ---- TAP (root + /dev/net/tun; runs in a child process inside a new network namespace) ---- */
#include <sched.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>

const char *link_tap_ifname(struct mtcp_link *l);



static int match_echo_reply(struct link_slot *s, void *arg)
{
    (void)arg;
    return s->len >= 42 && s->buf[12] == 0x08 && s->buf[13] == 0 && s->buf[23] == 1 && s->buf[34] == 0 &&
           rx_l4_csum_ok(s);
}


static int tap_child(void)
{
    int fails = 0;
    char err[256];
    if (unshare(CLONE_NEWNET) != 0) { perror("unshare"); return 1; }
    mtcp_link *t = mtcp_tap_open("mtcptest0", 0, 1, 0, err, sizeof(err));
    if (!t) { fprintf(stderr, "tap open: %s\n", err); return 1; }
    TCHECK(strcmp(link_tap_ifname(t), "mtcptest0") == 0);
    TCHECK(t->features & LINK_FEAT_TSO);
    TCHECK(t->mtu == 1500);
    TCHECK(ns_if_up("mtcptest0", PEER_IP, 24) == 0);
    char cap[] = "/tmp/mtcp_test_tap_XXXXXX.pcap";
    int cfd = mkstemps(cap, 5);
    if (cfd >= 0) close(cfd);
    TCHECK(mtcp_link_pcap(t, cap) == 0);
    /* a kernel listener in this namespace */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(5001) };
    memcpy(&sa.sin_addr, PEER_IP, 4);
    TCHECK(bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 8) == 0);
    uint8_t f[70000], peer_mac[6] = {0};
    /* ARP who-has 198.18.0.1 */
    uint8_t arp[42] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memcpy(arp + 6, ME_MAC, 6); arp[12] = 8; arp[13] = 6;
    uint8_t arpb[] = {0, 1, 8, 0, 6, 4, 0, 1};
    memcpy(arp + 14, arpb, 8); memcpy(arp + 22, ME_MAC, 6); memcpy(arp + 28, ME_IP, 4); memcpy(arp + 38, PEER_IP, 4);
    int got = 0;
    for (int k = 0; k < 20 && !got; k++) {       /* the device may need a moment to come up */
        tx_put(t, arp, 42, 0);
        link_txsync(t, 0);
        got = wait_frame(t, match_arp_reply, peer_mac, 200);
    }
    TCHECK(got);
    /* ping 198.18.0.1 */
    uint8_t icmp[98];
    memcpy(icmp, peer_mac, 6); memcpy(icmp + 6, ME_MAC, 6); icmp[12] = 8; icmp[13] = 0;
    uint8_t *ip = icmp + 14;
    memset(ip, 0, 84);
    ip[0] = 0x45; ip[3] = 84; ip[8] = 64; ip[9] = 1; memcpy(ip + 12, ME_IP, 4); memcpy(ip + 16, PEER_IP, 4);
    uint16_t c = (uint16_t)~csum16(0, ip, 20); ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
    ip[20] = 8; ip[25] = 1; for (int k = 28; k < 84; k++) ip[k] = (uint8_t)k;
    c = (uint16_t)~csum16(0, ip + 20, 64); ip[22] = (uint8_t)(c >> 8); ip[23] = (uint8_t)c;
    tx_put(t, icmp, 98, 0);
    link_txsync(t, 0);
    TCHECK(wait_frame(t, match_echo_reply, NULL, 2000));
    /* TCP handshake; our SYN carries a partial checksum the kernel must complete */
    struct tcp_match m = { .dport = 40000 };
    uint32_t n = tcp4_frame(f, peer_mac, 40000, 5001, 1000, 0, 0x02, NULL, 0, 1);
    tx_put(t, f, n, LINK_SLOT_F_CSUM_PARTIAL);
    t->tx.slot[(t->tx.head + t->tx.mask) & t->tx.mask].csum_start = 34;
    t->tx.slot[(t->tx.head + t->tx.mask) & t->tx.mask].csum_offset = 16;
    link_txsync(t, 0);
    TCHECK(wait_frame(t, match_tcp, &m, 2000));
    TCHECK(m.flags == 0x12 && m.ack == 1001);
    TCHECK(m.csum_ok);
    fprintf(stderr, "    tap: SYN-ACK partial=%d csum_ok=%d\n", m.partial, m.csum_ok);
    uint32_t srv = m.seq + 1;
    n = tcp4_frame(f, peer_mac, 40000, 5001, 1001, srv, 0x10, NULL, 0, 0);
    tx_put(t, f, n, 0);
    /* a 3000-byte TSO super-frame, cut by the kernel at 1000 */
    static uint8_t data[3000];
    for (int k = 0; k < 3000; k++) data[k] = (uint8_t)(k * 13);
    n = tcp4_frame(f, peer_mac, 40000, 5001, 1001, srv, 0x18, data, 3000, 1);
    tx_put(t, f, n, LINK_SLOT_F_CSUM_PARTIAL | LINK_SLOT_F_GSO);
    struct link_slot *gs = &t->tx.slot[(t->tx.head + t->tx.mask) & t->tx.mask];
    gs->csum_start = 34; gs->csum_offset = 16; gs->gso_size = 1000;
    link_txsync(t, 0);
    struct pollfd lp = { .fd = ls, .events = POLLIN };
    TCHECK(poll(&lp, 1, 2000) == 1);
    int cs = accept(ls, NULL, NULL);
    TCHECK(cs >= 0);
    uint8_t rbuf[4000];
    uint32_t rtot = 0;
    struct pollfd cp = { .fd = cs, .events = POLLIN };
    while (rtot < 3000 && poll(&cp, 1, 2000) == 1) {
        ssize_t r = read(cs, rbuf + rtot, sizeof(rbuf) - rtot);
        if (r <= 0) break;
        rtot += (uint32_t)r;
    }
    TCHECK(rtot == 3000 && memcmp(rbuf, data, 3000) == 0);
    /* the kernel sends 20000 bytes: with TSO on we should see super-frames */
    static uint8_t big[20000];
    memset(big, 'x', sizeof(big));
    TCHECK(write(cs, big, sizeof(big)) == (ssize_t)sizeof(big));
    struct tcp_match m2 = { .dport = 40000 };
    for (int k = 0; k < 50 && m2.bytes < 20000; k++) {
        if (!wait_frame(t, match_tcp, &m2, 200)) continue;
        TCHECK(m2.csum_ok);
        /* ack everything seen so far (the kernel sends in order here) */
        n = tcp4_frame(f, peer_mac, 40000, 5001, 4001, srv + m2.bytes, 0x10, NULL, 0, 0);
        tx_put(t, f, n, 0);
        link_txsync(t, 0);
    }
    fprintf(stderr, "    tap: kernel->us %u bytes, largest frame %d, gso=%d partial=%d\n", m2.bytes, m2.maxlen, m2.gso, m2.partial);
    TCHECK(m2.bytes == 20000);
    TCHECK(m2.gso && m2.maxlen > 1514);
    close(cs);
    close(ls);
    mtcp_link_close(t);     /* flushes and closes the capture */
    /* the capture: readable, and with partial checksums finished no frame has a bad checksum */
    if (system("command -v tshark >/dev/null 2>&1") == 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "n=$(tshark -r %s -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE "
                 "-Y 'tcp.checksum.status == 0 || ip.checksum.status == 0 || icmp.checksum.status == 0 || "
                 "_ws.malformed || _ws.expert.severity >= 8388608' 2>&1 | grep -vi 'running as user' | wc -l); "
                 "t=$(tshark -r %s 2>/dev/null | wc -l); echo \"    tap capture: $t frames, $n bad\" >&2; "
                 "test \"$n\" -eq 0 -a \"$t\" -ge 8", cap, cap);
        TCHECK(system(cmd) == 0);
    }
    unlink(cap);
    /* error reporting */
    TCHECK(mtcp_tap_open("this-name-is-too-long", 0, 1, 0, err, sizeof(err)) == NULL && strstr(err, "too long"));
    TCHECK(mtcp_tap_open("x", 2, 2, 0, err, sizeof(err)) == NULL && strstr(err, "queue"));
    /* multi-queue: two queues of one device */
    mtcp_link *q0 = mtcp_tap_open("mtcpmq0", 0, 2, MTCP_LINK_NO_OFFLOAD, err, sizeof(err));
    mtcp_link *q1 = mtcp_tap_open("mtcpmq0", 1, 2, MTCP_LINK_NO_OFFLOAD, err, sizeof(err));
    TCHECK(q0 && q1 && mtcp_link_fd(q0) != mtcp_link_fd(q1));
    TCHECK(q0 && !(q0->features & LINK_FEAT_TSO));
    if (q0) mtcp_link_close(q0);
    if (q1) mtcp_link_close(q1);
    return fails ? 1 : 0;
}

static void test_tap(void)
{
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
        fprintf(stderr, "    (skipped: needs root and /dev/net/tun)\n");
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(tap_child());
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}



static int packet_child(void)
{
    int fails = 0;
    char err[256];
    if (unshare(CLONE_NEWNET) != 0) { perror("unshare"); return 1; }
    mtcp_link *t = mtcp_tap_open("mtcpq0", 0, 1, MTCP_LINK_NO_OFFLOAD, err, sizeof(err));
    if (!t) { fprintf(stderr, "tap: %s\n", err); return 1; }
    write_file("/proc/sys/net/ipv6/conf/mtcpq0/disable_ipv6", "1");
    TCHECK(ns_if_up("mtcpq0", PEER_IP, 24) == 0);
    mtcp_link *p = mtcp_packet_open("mtcpq0", 0, 1, 0, err, sizeof(err));
    if (!p) { fprintf(stderr, "packet: %s\n", err); return 1; }
    TCHECK(p->mtu == 1500 && p->link_type == MTCP_LINK_ETHERNET);
    TCHECK(mtcp_link_fd(p) >= 0);
    TCHECK(mtcp_packet_open("nosuchif0", 0, 1, 0, err, sizeof(err)) == NULL && strstr(err, "nosuchif0"));
    uint8_t f[1514];
    /* tap -> packet: 3000 frames in batches */
    uint32_t seq = 0, next = 0, bad = 0;
    int got = 0;
    for (int b = 0; b < 30; b++) {
        for (int k = 0; k < 100; k++) {
            uint32_t len = 60 + (seq * 53) % 1454;
            eth_frame(f, len, seq++);
            TCHECK(tx_put(t, f, len, 0) == 0);
        }
        link_txsync(t, 0);
        got += count_eth_seq(p, &next, &bad, 5);
    }
    got += count_eth_seq(p, &next, &bad, 30);
    fprintf(stderr, "    packet rx: %d of 3000 frames, %u bad\n", got, bad);
    TCHECK(got == 3000 && bad == 0);
    /* packet -> tap: 3000 frames (tap's queue holds 1000: batches of 200) */
    next = 0; bad = 0; got = 0; seq = 0;
    for (int b = 0; b < 15; b++) {
        for (int k = 0; k < 200; k++) {
            uint32_t len = 60 + (seq * 71) % 1454;
            eth_frame(f, len, seq++);
            TCHECK(tx_put(p, f, len, 0) == 0);
        }
        link_txsync(p, 0);
        got += count_eth_seq(t, &next, &bad, 5);
    }
    for (int k = 0; k < 50; k++) link_txsync(p, 0);
    got += count_eth_seq(t, &next, &bad, 30);
    fprintf(stderr, "    packet tx: %d of 3000 frames, %u bad\n", got, bad);
    TCHECK(got == 3000 && bad == 0);
    TCHECK(link_ring_space(&p->tx) == p->tx.num_slots - 1);   /* every TX slot came back */
    uint64_t st[MTCP_LINK_NSTATS];
    mtcp_link_stats(p, st, MTCP_LINK_NSTATS);
    TCHECK(st[0] >= 3000 && st[1] == 3000 && st[3] == 0 && st[5] == 0);
    TCHECK(strcmp(mtcp_link_kind(p), "packet") == 0);
    mtcp_link_stats(t, st, MTCP_LINK_NSTATS);
    TCHECK(st[0] >= 3000 && st[1] == 3000 && st[4] == 0 && st[5] == 0);
    /* bench (short): tap -> packet and packet -> tap */
    double txf = 0, rxf = 0;
    TCHECK(mtcp_bench_link(t, p, 0.3, 64, &txf, &rxf) == 0);
    fprintf(stderr, "    bench tap->packet 64B: tx %.0f fps, rx %.0f fps\n", txf, rxf);
    TCHECK(rxf > 1000);
    TCHECK(mtcp_bench_link(p, t, 0.3, 64, &txf, &rxf) == 0);
    fprintf(stderr, "    bench packet->tap 64B: tx %.0f fps, rx %.0f fps\n", txf, rxf);
    TCHECK(rxf > 1000);
    mtcp_link_close(p);
    mtcp_link_close(t);
    return fails ? 1 : 0;
}

static void test_packet(void)
{
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
        fprintf(stderr, "    (skipped: needs root and /dev/net/tun)\n");
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(packet_child());
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    RUN(test_tap);
    RUN(test_packet);
    CTEST_END();
}
