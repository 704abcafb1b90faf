"""Tools around the runtime: the `mtcp-loop` command line (mtcp_loop.tools.cli, the only place
argparse appears) and the benchmarks and testbed it runs (bench_compare with bench_server and
bench_report, bench_short, bench_vtime, bench_cores, testbed). Shipped in the wheel for users who
benchmark their own NIC; the runtime (mtcp_loop.*) never imports this package."""
