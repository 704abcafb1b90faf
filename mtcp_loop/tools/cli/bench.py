"""`mtcp-loop bench compare` (mtcp_loop/tools/bench_compare.py), `mtcp-loop bench short`
(mtcp_loop/tools/bench_short.py) and `mtcp-loop bench vtime` (mtcp_loop/tools/bench_vtime.py)."""
from __future__ import annotations

import json
import os
import sys


def cmd_bench_compare(args) -> int:
    from .. import bench_compare as bc
    from .. import bench_report as report
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
    else:
        from .rings import need_pyroute2
        if not need_pyroute2("bench compare"):
            return 2
        wl = [w.strip() for w in args.workloads.split(",") if w.strip()] if args.workloads else list(bc.WORKLOADS)
        bad = [w for w in wl if w not in bc.WORKLOADS]
        if bad:
            print(f"mtcp-loop bench compare: unknown workload(s) {bad}; choose from {','.join(bc.WORKLOADS)}",
                  file=sys.stderr)
            return 2
        configs = None
        if args.configs:
            configs = [c.strip() for c in args.configs.split(",")]
            unknown = [c for c in configs if c not in bc.CONFIGS]
            if unknown:
                print(f"mtcp-loop bench compare: unknown configuration(s) {unknown}; choose from "
                      f"{list(bc.CONFIGS)}", file=sys.stderr)
                return 2
        try:
            res = bc.compare(wl, quick=args.quick, configs=configs, repeat=max(1, args.repeat))
        except (PermissionError, bc.LoadgenMissing) as exc:
            print(f"mtcp-loop bench compare: {exc}", file=sys.stderr)
            return 2
    if args.write_doc:
        img = os.path.join(os.path.dirname(os.path.abspath(args.write_doc)), "img")
        res["plots"] = report.plots(res, img)
        report.write_doc(res, args.write_doc)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(res, f, indent=2)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        report.print_table(res)
        if args.write_doc:
            print(f"\nwrote {args.write_doc} and {len(res.get('plots', []))} plot(s) in {img}")
    return 0


def cmd_bench_short(args) -> int:
    from .. import bench_short
    return bench_short.report(mode=args.mode, loops=args.loops.split(","), base=args.base,
                              duration=args.duration, clients=args.clients, repeat=args.repeat,
                              conns=args.conns, profile=args.profile, as_json=args.json)


def cmd_bench_vtime(args) -> int:
    from .. import bench_vtime
    return bench_vtime.report(clients=args.clients, rounds=args.rounds, partition=args.partition)


def add_cli_parsers(bsub) -> None:
    from ..bench_compare import CONFIGS, WORKLOADS
    c = bsub.add_parser("compare", help="asyncio/uvloop on kernel TCP vs mtcp_loop on tap/packet/xdp, "
                                        "cores=1/2 (needs root: network namespaces)")
    c.add_argument("--json", action="store_true", help="print every cell as JSON")
    c.add_argument("--quick", action="store_true", help="short version of every workload (smoke check)")
    c.add_argument("--workloads", default=None, help=f"comma list of {','.join(WORKLOADS)} (default: all)")
    c.add_argument("--configs", default=None, help=f"comma list of {', '.join(CONFIGS)} (default: all needed)")
    c.add_argument("--write-doc", default=None, metavar="PATH",
                   help="write the results section into this markdown file (e.g. docs/benchmarks.md) and the "
                        "plots into img/ next to it; nothing is written without it")
    c.add_argument("--render", default=None, metavar="JSON",
                   help="no measurement: table (and --write-doc) from a JSON saved with --output")
    c.add_argument("--repeat", type=int, default=1, help="run every configuration N times (alternating order); "
                                                         "medians per cell, per-run values in the JSON")
    c.add_argument("--output", default=None, help="also write the JSON to this file")
    c.set_defaults(func=cmd_bench_compare)
    s = bsub.add_parser("short", help="Python CPU per short connection: mtcp vs uvloop/asyncio servers "
                                      "(in-process, no root)")
    s.add_argument("--mode", choices=["threads", "one"], default="threads")
    s.add_argument("--loops", default="mtcp", help="comma list of mtcp,uvloop,asyncio")
    s.add_argument("--base", default="auto", choices=["auto", "uvloop", "asyncio"])
    s.add_argument("--duration", type=float, default=2.0)
    s.add_argument("--clients", type=int, default=32)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--conns", type=int, default=None,
                   help="one mode: a fixed number of connections instead of --duration (for "
                        "instruction counts: perf stat -e instructions:u, difference of two --conns)")
    s.add_argument("--profile", default=None, help="cProfile output of the server thread (threads mode)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench_short)
    v = bsub.add_parser("vtime", help="the same lossy, partitioned echo workload in real and in virtual time")
    v.add_argument("--clients", type=int, default=8)
    v.add_argument("--rounds", type=int, default=20)
    v.add_argument("--partition", type=float, default=2.0)
    v.set_defaults(func=cmd_bench_vtime)
