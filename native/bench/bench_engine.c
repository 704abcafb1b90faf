/*
 * bench_engine.c — standalone driver for mtcp_bench_engine (native/engine/bench.c); prints JSON.
 *
 *   build/bench/bench_engine [--mode short|bulk|both] [--link sim|frames|both] [--seconds S]
 *                            [--conc N] [--write BYTES]
 *
 * --link sim: the engines joined by mtcp_simlink_pair, driven by mtcp_engine_poll (default);
 * --link frames: the frame API, output after event dispatch (see native/engine/bench.c);
 * --link sim-offload: the sim link with checksum offload (as veth/loopback); all: every one.
 *
 * `make -C native bench` builds it with -O2 and runs both modes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mtcp.h"
#include "mtcp_bench.h"

static void usage(void)
{
    fprintf(stderr, "usage: bench_engine [--mode short|bulk|both] [--link sim|frames|sim-offload|both|all] [--seconds S] "
                    "[--conc N] [--write BYTES]\n");
    exit(2);
}

static int run(int mode, double seconds, uint32_t param, int first)
{
    struct mtcp_bench_result r;
    int rc = mtcp_bench_engine(mode, seconds, param, &r);
    printf("%s  {\"mode\": \"%s\", \"link\": \"%s\", \"param\": %u, ", first ? "" : ",\n",
           (mode & 1) ? "bulk" : "short", (mode & 2) ? "frames" : (mode & 4) ? "sim-offload" : "sim", param);
    if (rc < 0) {
        printf("\"error\": \"%s\"}", strerror(-rc));
        return 1;
    }
    double cpu = r.cpu_seconds > 0 ? r.cpu_seconds : r.seconds;
    printf("\"seconds\": %.3f, \"cpu_seconds\": %.3f, \"conns\": %llu, \"conns_per_sec\": %.0f, "
           "\"conns_per_cpu_sec\": %.0f, \"bytes\": %llu, \"gbps\": %.3f, \"gbps_per_cpu\": %.3f, "
           "\"segments\": %llu, \"ns_per_segment\": %.1f, \"retransmits\": %llu, \"link_drops\": %llu, "
           "\"verified_bytes\": %llu, \"errors\": %llu}",
           r.seconds, r.cpu_seconds, (unsigned long long)r.conns, r.conns_per_sec, (double)r.conns / cpu,
           (unsigned long long)r.bytes, r.gbps, (double)r.bytes * 8 / cpu / 1e9, (unsigned long long)r.segments,
           r.segments ? cpu * 1e9 / (double)r.segments : 0.0, (unsigned long long)r.retransmits,
           (unsigned long long)r.link_drops, (unsigned long long)r.verified, (unsigned long long)r.errors);
    return r.errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *mode = "both", *link = "sim";
    double seconds = 2.0;
    uint32_t conc = 256, wsize = 65536;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--mode"))
            mode = argv[++i];
        else if (!strcmp(argv[i], "--link"))
            link = argv[++i];
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--conc"))
            conc = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--write"))
            wsize = (uint32_t)strtoul(argv[++i], NULL, 0);
        else
            usage();
    }
    int fail = 0, first = 1;
    int do_short = !strcmp(mode, "short") || !strcmp(mode, "both");
    int do_bulk = !strcmp(mode, "bulk") || !strcmp(mode, "both");
    int all = !strcmp(link, "all");
    int do_sim = !strcmp(link, "sim") || !strcmp(link, "both") || all;
    int do_frames = !strcmp(link, "frames") || !strcmp(link, "both") || all;
    int do_off = !strcmp(link, "sim-offload") || all;
    if (!(do_short || do_bulk) || !(do_sim || do_frames || do_off))
        usage();
    /* the machine may be shared: say how busy it was (CPU-time figures stay comparable) */
    double load = -1;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load) != 1)
            load = -1;
        fclose(lf);
    }
    printf("{\"loadavg_1min\": %.2f, \"engine_bench\": [\n", load);
    static const int base[3] = {0, 2, 4};
    for (int f = 0; f < 3; f++) {
        if (!(f == 0 ? do_sim : f == 1 ? do_frames : do_off))
            continue;
        if (do_short) {
            fail |= run(base[f], seconds, conc, first);
            first = 0;
            fflush(stdout);
        }
        if (do_bulk) {
            fail |= run(base[f] + 1, seconds, wsize, first);
            first = 0;
            fflush(stdout);
        }
    }
    printf("\n]}\n");
    return fail;
}
