"""`mtcp-loop run MODULE:APP`, the live `mtcp-loop stats` of a running instance and
`mtcp-loop bench cores` (the worker supervisor itself is mtcp_loop/workers.py)."""
from __future__ import annotations

import asyncio
import json
import os
import sys

from mtcp_loop.workers import _kind, default_rundir, load_target, resolve_cores, serve, stats


def format_stats(st: dict) -> str:
    cols = ("connections", "conn_per_s", "conns_total", "segs_in", "segs_out", "retransmits", "drops",
            "misdirected", "rx_dropped", "tx_dropped", "ring_full", "kicks_refused", "restarts")
    lines = ["worker  pid      cpu  " + "  ".join(f"{c:>12}" for c in cols)]
    for q, w in st["workers"].items():
        if "error" in w:
            lines.append(f"{q:>6}  error: {w['error']}")
            continue
        lines.append(f"{q:>6}  {w['pid']:<7}  {w['cpu']:>3}  " + "  ".join(f"{w.get(c, 0):>12}" for c in cols))
    t = st["total"]
    lines.append(f"{'total':>6}  {'':<7}  {'':>3}  " + "  ".join(f"{t.get(c, 0):>12}" for c in cols))
    return "\n".join(lines)


def _enter_netns(name):
    if name:
        from .rings import need_pyroute2
        if not need_pyroute2("run --netns"):
            raise SystemExit(2)
        from pyroute2 import netns
        netns.setns(name)


def _resolve_app(obj):
    """A plain function (not a class) that returns an aiohttp Application is an app factory."""
    import inspect
    if inspect.isfunction(obj) and not asyncio.iscoroutinefunction(obj):
        try:
            sig = inspect.signature(obj)
            if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for p in sig.parameters.values()):
                r = obj()
                if _kind(r) == "aiohttp":
                    return r
        except (TypeError, ValueError):
            pass
    return obj


def _overrides(args) -> dict:
    o = {}
    for k in ("backend", "ifname", "ipv4", "ipv6", "ipv4_gw", "ipv6_gw", "mac", "mtu", "metrics"):
        v = getattr(args, k, None)
        if v is not None:
            o[k] = v
    return o


def cmd_run(args) -> int:
    _enter_netns(args.netns)
    target = _resolve_app(load_target(args.target))
    ov = _overrides(args)
    cores = args.cores
    if cores != "auto":
        cores = int(cores)
    n = len(resolve_cores(cores))
    if ov.get("backend", os.environ.get("MTCP_BACKEND", "loopback")) in ("tap", "packet", "xdp"):
        ov.setdefault("nqueues", n)
    print(f"mtcp-loop: serving {args.target} on {args.host}:{args.port} with {n} worker(s) "
          f"(rundir {args.rundir or default_rundir(args.name)})", file=sys.stderr, flush=True)
    return serve(target, cores, host=args.host, port=args.port, rundir=args.rundir, name=args.name,
                 drain_timeout=args.drain_timeout, **ov)


def _stats_hook(orig):
    def cmd(args):
        rundir = args.rundir or default_rundir(args.name)
        try:
            st = stats(rundir)
        except FileNotFoundError as e:
            if args.rundir or args.name != "default":
                print(f"mtcp-loop: {e}", file=sys.stderr)
                return 1
            return orig(args)                    # no server running: the loopback demo counters
        if args.json:
            print(json.dumps(st, indent=2, sort_keys=True))
        else:
            print(format_stats(st))
        return 0
    return cmd


def cmd_bench_cores(args) -> int:
    import statistics
    from ..bench_cores import bench_cores
    from .rings import need_pyroute2
    if not need_pyroute2("bench cores"):
        return 2
    from ..bench_cores import ROOT as tree
    if any(w in ("http", "close") for w in args.workloads.split(",")) and \
            not os.path.exists(os.path.join(tree, "examples", "aiohttp_hello.py")):
        print("mtcp-loop bench cores: the http/close workloads serve examples/aiohttp_hello.py of a source "
              "checkout (not installed); run from the source tree or use --workloads conn", file=sys.stderr)
        return 2
    cores = tuple(int(x) for x in args.cores.split(","))
    res = {"loadavg_before": os.getloadavg(), "command": " ".join(["mtcp-loop"] + sys.argv[1:])}
    for wl in args.workloads.split(","):
        runs = [bench_cores(cores, args.seconds, args.concurrency, wl, form=args.form) for _ in range(args.repeat)]
        summary = {}
        for n in cores:
            rs = [r[n] for r in runs]
            summary[n] = {"per_s_median": statistics.median(x["per_s"] for x in rs),
                          "per_s_runs": [round(x["per_s"]) for x in rs],
                          "server_cpu_us_per_req_median": statistics.median(x["server_cpu_us_per_req"] for x in rs),
                          "server_util_cpus_median": statistics.median(x["server_util_cpus"] for x in rs),
                          "misdirected": sum(x["misdirected"] for x in rs),
                          "per_worker_conns_last": rs[-1]["per_worker_conns"]}
        if len(cores) >= 2:
            summary["ratio"] = summary[cores[-1]]["per_s_median"] / summary[cores[0]]["per_s_median"]
            summary["ratio_runs"] = [round(r["ratio"], 2) for r in runs]
        res[wl] = summary
    res["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    print(f"load average before {res['loadavg_before'][0]:.1f}, after {res['loadavg_after'][0]:.1f} "
          f"({os.cpu_count()} CPUs; the load generator shares them)")
    for wl in args.workloads.split(","):
        r = res[wl]
        for n in cores:
            v = r[n]
            print(f"{wl:5s} cores={n}: {v['per_s_median']:9.0f}/s (runs {v['per_s_runs']})  server CPU "
                  f"{v['server_cpu_us_per_req_median']:7.1f} us/req, {v['server_util_cpus_median']:.2f} CPUs busy  "
                  f"misdirected {v['misdirected']}  "
                  f"per worker {v['per_worker_conns_last']}")
        if "ratio" in r:
            print(f"{wl:5s} ratio cores={cores[-1]}/cores={cores[0]}: {r['ratio']:.2f} (runs {r['ratio_runs']})")
    return 0


def add_cli_parsers(sub, bsub) -> None:
    """`run` (top level), live `stats` (extends the existing stats subcommand), `bench cores`."""
    r = sub.add_parser("run", help="serve MODULE:APP (aiohttp Application, async def main(), protocol "
                                   "factory) with one supervised worker process per core")
    r.add_argument("target", metavar="MODULE:APP")
    r.add_argument("--cores", default="1", help="worker processes: N, or 0/auto = every CPU of the affinity mask")
    r.add_argument("--backend", choices=("loopback", "tap", "packet", "xdp"), default=None)
    r.add_argument("--ifname", default=None)
    r.add_argument("--ipv4", default=None, help="e.g. 198.18.0.2/24")
    r.add_argument("--ipv6", default=None)
    r.add_argument("--ipv4-gw", dest="ipv4_gw", default=None)
    r.add_argument("--ipv6-gw", dest="ipv6_gw", default=None)
    r.add_argument("--mac", default=None)
    r.add_argument("--mtu", type=int, default=None)
    r.add_argument("--host", default="0.0.0.0")
    r.add_argument("--port", type=int, default=8080)
    r.add_argument("--name", default="default", help="instance name (control sockets under $MTCP_RUNDIR/NAME)")
    r.add_argument("--rundir", default=None)
    r.add_argument("--drain-timeout", type=float, default=10.0)
    r.add_argument("--netns", default=None, help="enter this network namespace first (e.g. the testbed's)")
    r.add_argument("--metrics", default=None, metavar="ADDR:PORT",
                   help="serve Prometheus metrics of every worker here (kernel stack; docs/operations.md)")
    r.set_defaults(func=cmd_run)
    s = sub.choices.get("stats")
    if s is not None:
        s.add_argument("--name", default="default", help="running `mtcp-loop run` instance")
        s.add_argument("--rundir", default=None)
        s.set_defaults(func=_stats_hook(s.get_default("func")))
    c = bsub.add_parser("cores", help="the same workload at cores=1 and cores=2 on a TAP testbed (needs root)")
    c.add_argument("--cores", default="1,2")
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--concurrency", type=int, default=64)
    c.add_argument("--workloads", default="http,close", help="http (wrk keep-alive vs aiohttp hello), close (wrk, "
                   "Connection: close: one TCP connection per request), conn (Python clients, short echo connections)")
    c.add_argument("--repeat", type=int, default=1, help="alternate the core counts this many times; medians")
    c.add_argument("--form", choices=("run", "policy"), default="run",
                   help="run: `mtcp-loop run MODULE:APP --cores N`; policy: the unchanged program with "
                        "MTCPPolicy(cores=N) + web.run_app (http/close workloads)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_bench_cores)
