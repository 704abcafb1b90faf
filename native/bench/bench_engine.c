/*
 * bench_engine.c — standalone driver for mtcp_bench_engine (native/engine/bench.c); prints JSON.
 *
 *   build/bench/bench_engine [--mode short|bulk|both] [--seconds S] [--conc N] [--write BYTES]
 *
 * `make -C native bench` builds it with -O2 and runs both modes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mtcp.h"

static void usage(void)
{
    fprintf(stderr, "usage: bench_engine [--mode short|bulk|both] [--seconds S] [--conc N] [--write BYTES]\n");
    exit(2);
}

static int run(int mode, double seconds, uint32_t param, int first)
{
    struct mtcp_bench_result r;
    int rc = mtcp_bench_engine(mode, seconds, param, &r);
    printf("%s  {\"mode\": \"%s\", \"param\": %u, ", first ? "" : ",\n", mode ? "bulk" : "short", param);
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
    const char *mode = "both";
    double seconds = 2.0;
    uint32_t conc = 256, wsize = 65536;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--mode"))
            mode = argv[++i];
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
    printf("{\"engine_bench\": [\n");
    if (!strcmp(mode, "short") || !strcmp(mode, "both")) {
        fail |= run(0, seconds, conc, first);
        first = 0;
        fflush(stdout);
    }
    if (!strcmp(mode, "bulk") || !strcmp(mode, "both")) {
        fail |= run(1, seconds, wsize, first);
        first = 0;
    }
    if (first)
        usage();
    printf("\n]}\n");
    return fail;
}
