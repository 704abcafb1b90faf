/*
 * kclient.c — kernel-socket epoll client of `mtcp-loop bench compare` (the cross-check of the
 * engine-based loadgen, and the driver of the bulk and latency workloads).
 *
 *   --mode short  --conc N: nonblocking connect, send --size bytes, read the echo, close; a
 *                 finished connection is replaced at once. Connections/s after --warmup.
 *   --mode ping   one connection (TCP_NODELAY), --size bytes back and forth for --seconds;
 *                 RTT p50/p99/p99.9 in microseconds.
 *   --mode send   one connection, --bytes of payload to a sink, then shutdown(WR); done when the
 *                 server closes (it has read everything). Gbit/s.
 *   --mode recv   one connection to a source: sends the 8-byte big-endian byte count, reads
 *                 until EOF. Gbit/s.
 * Output: one JSON object on stdout.  Build: make -C native kclient
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 65536

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(int sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval t = sys ? ru.ru_stime : ru.ru_utime;
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static struct sockaddr_in dst;
static int size = 64;
static uint8_t msg[65536];

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int open_conn(int nonblock)
{
    int s = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (s < 0)
        return -1;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        close(s);
        return -1;
    }
    return s;
}

static int got[MAXC];

static int run_short(int conc, double warmup, double seconds)
{
    int ep = epoll_create1(0);
    uint64_t done = 0, errs = 0, d0 = 0, e0 = 0;
    double t_start = now_s(), t0 = 0, u0 = 0, s0 = 0;
    int measuring = 0;
    struct epoll_event ev;
    for (int i = 0; i < conc; i++) {
        int s = open_conn(1);
        if (s < 0 || s >= MAXC) { errs++; if (s >= 0) close(s); continue; }
        got[s] = -1;   /* -1: connecting */
        ev.events = EPOLLOUT | EPOLLIN;
        ev.data.fd = s;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    }
    struct epoll_event evs[1024];
    char buf[65536];
    for (;;) {
        double t = now_s();
        if (!measuring && t - t_start >= warmup) {
            measuring = 1;
            t0 = t; d0 = done; e0 = errs; u0 = cpu_s(0); s0 = cpu_s(1);
        }
        if (measuring && t - t0 >= seconds)
            break;
        int n = epoll_wait(ep, evs, 1024, 10);
        for (int i = 0; i < n; i++) {
            int s = evs[i].data.fd, ok = -1;
            if (got[s] == -1) {
                int e = 0;
                socklen_t l = sizeof e;
                getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
                if (e || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                    ok = 0;
                } else if (evs[i].events & EPOLLOUT) {
                    if (send(s, msg, (size_t)size, MSG_NOSIGNAL) != size) {
                        ok = 0;
                    } else {
                        got[s] = 0;
                        ev.events = EPOLLIN;
                        ev.data.fd = s;
                        epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
                    }
                }
            } else {
                ssize_t r = recv(s, buf, sizeof buf, 0);
                if (r <= 0 && !(r < 0 && errno == EAGAIN))
                    ok = 0;
                else if (r > 0) {
                    got[s] += (int)r;
                    if (got[s] >= size)
                        ok = 1;
                }
            }
            if (ok >= 0) {
                close(s);
                if (ok) done++; else errs++;
                int ns = open_conn(1);
                if (ns < 0 || ns >= MAXC) { errs++; if (ns >= 0) close(ns); continue; }
                got[ns] = -1;
                ev.events = EPOLLOUT | EPOLLIN;
                ev.data.fd = ns;
                epoll_ctl(ep, EPOLL_CTL_ADD, ns, &ev);
            }
        }
    }
    double el = now_s() - t0;
    printf("{\"mode\": \"short\", \"conc\": %d, \"conns\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
           "\"conns_per_sec\": %.1f, \"cpu_user\": %.3f, \"cpu_sys\": %.3f}\n", conc,
           (unsigned long long)(done - d0), (unsigned long long)(errs - e0), el, (double)(done - d0) / el,
           cpu_s(0) - u0, cpu_s(1) - s0);
    return 0;
}

static int recv_all(int s, char *buf, int n)
{
    int g = 0;
    while (g < n) {
        ssize_t r = recv(s, buf + g, (size_t)(n - g), 0);
        if (r <= 0)
            return -1;
        g += (int)r;
    }
    return 0;
}

static int run_ping(double warmup, double seconds)
{
    int s = open_conn(0);
    if (s < 0) { perror("kclient: connect"); return 1; }
    size_t cap = 4000000, n = 0;
    double *rtt = malloc(cap * sizeof *rtt);
    char buf[65536];
    double t_start = now_s(), t0 = 0;
    int measuring = 0;
    for (;;) {
        double a = now_s();
        if (!measuring && a - t_start >= warmup) { measuring = 1; t0 = a; }
        if (measuring && a - t0 >= seconds)
            break;
        if (send(s, msg, (size_t)size, MSG_NOSIGNAL) != size || recv_all(s, buf, size) < 0) {
            perror("kclient: ping");
            return 1;
        }
        double b = now_s();
        if (measuring && n < cap)
            rtt[n++] = (b - a) * 1e6;
    }
    close(s);
    qsort(rtt, n, sizeof *rtt, cmp_d);
#define P(q) (n ? rtt[(size_t)((double)(n - 1) * (q))] : 0.0)
    printf("{\"mode\": \"ping\", \"size\": %d, \"samples\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f, "
           "\"p999_us\": %.1f, \"mean_rtt_per_sec\": %.1f}\n", size, n, P(0.5), P(0.99), P(0.999),
           (double)n / seconds);
    return 0;
}

static int run_bulk(int up, uint64_t bytes)
{
    int s = open_conn(0);
    if (s < 0) { perror("kclient: connect"); return 1; }
    int one = 0;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static char buf[1 << 18];
    memset(buf, 'b', sizeof buf);
    double t0 = now_s(), u0 = cpu_s(0), s0 = cpu_s(1);
    uint64_t moved = 0;
    if (up) {
        while (moved < bytes) {
            size_t k = bytes - moved < sizeof buf ? (size_t)(bytes - moved) : sizeof buf;
            ssize_t r = send(s, buf, k, MSG_NOSIGNAL);
            if (r <= 0) { perror("kclient: send"); return 1; }
            moved += (uint64_t)r;
        }
        shutdown(s, SHUT_WR);
        while (recv(s, buf, sizeof buf, 0) > 0) {}
    } else {
        uint8_t req[8];
        for (int i = 0; i < 8; i++)
            req[i] = (uint8_t)(bytes >> (56 - 8 * i));
        if (send(s, req, 8, MSG_NOSIGNAL) != 8) { perror("kclient: send"); return 1; }
        ssize_t r;
        while ((r = recv(s, buf, sizeof buf, 0)) > 0)
            moved += (uint64_t)r;
    }
    double el = now_s() - t0;
    close(s);
    printf("{\"mode\": \"%s\", \"bytes\": %llu, \"seconds\": %.3f, \"gbps\": %.3f, \"cpu_user\": %.3f, "
           "\"cpu_sys\": %.3f}\n", up ? "send" : "recv", (unsigned long long)moved, el,
           (double)moved * 8 / el / 1e9, cpu_s(0) - u0, cpu_s(1) - s0);
    return moved == bytes ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = "short", *host = NULL;
    int port = 0, conc = 64, cpu = -1;
    double seconds = 5, warmup = 1;
    uint64_t bytes = 1u << 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--dst")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--conc")) conc = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--bytes")) bytes = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--cpu")) cpu = atoi(v);
        else { fprintf(stderr, "kclient: unknown option %s\n", a); return 2; }
    }
    if (!host || port <= 0 || size <= 0 || size > (int)sizeof msg || conc <= 0 || conc > 30000) {
        fprintf(stderr, "usage: kclient --dst IP --port P [--mode short|ping|send|recv] [--conc N] [--size B] "
                        "[--seconds S] [--warmup S] [--bytes N] [--cpu C]\n");
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    struct rlimit rl = {65536 + 1024, 65536 + 1024};
    setrlimit(RLIMIT_NOFILE, &rl);
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) { fprintf(stderr, "kclient: bad --dst\n"); return 2; }
    for (int i = 0; i < (int)sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 1);
    if (!strcmp(mode, "short")) return run_short(conc, warmup, seconds);
    if (!strcmp(mode, "ping")) return run_ping(warmup, seconds);
    if (!strcmp(mode, "send")) return run_bulk(1, bytes);
    if (!strcmp(mode, "recv")) return run_bulk(0, bytes);
    fprintf(stderr, "kclient: unknown mode %s\n", mode);
    return 2;
}
