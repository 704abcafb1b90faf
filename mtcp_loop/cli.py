"""mtcp-loop command line.

    mtcp-loop demo                 aiohttp app served AND queried over the embedded user-space stack
    mtcp-loop stats [--json]       a short loopback exchange, then the engine counters
    mtcp-loop bench loop [--json]  echo, stream, short connections, aiohttp hello: MTCPLoop vs stock
                                   asyncio vs uvloop (kernel)
    mtcp-loop bench rings [--json] raw frame rate RX/TX of the tap/packet/xdp rings (namespaces)
    mtcp-loop testbed up|down|status  the netns testbed (--kind tap|packet|xdp)
    mtcp-loop bench engine         the C engine benchmark (lib.mtcp_bench_engine, no Python in the loop)
    mtcp-loop bench compare [--json] [--quick]  asyncio/uvloop+kernel vs mtcp_loop tap/packet/xdp, cores=1/2

Every subcommand whose backend is not built exits non-zero with a "not built yet" message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


class NotBuilt(SystemExit):
    pass


def _not_built(what: str, hint: str) -> int:
    print(f"mtcp-loop: {what} is not built yet: {hint}", file=sys.stderr)
    return 2


def _require_native():
    try:
        from . import _native  # noqa: F401
    except ImportError as exc:
        raise SystemExit(_not_built("the native extension", str(exc)))


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
async def _demo_main(requests: int, out) -> dict:
    from aiohttp import ClientSession, web

    loop = asyncio.get_running_loop()
    hits = []

    async def hello(request):
        hits.append(request.path)
        return web.Response(text=f"hello from the user-space stack, request {len(hits)}\n")

    async def echo(request):
        body = await request.read()
        return web.Response(body=body[::-1])

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"server: aiohttp app listening on 127.0.0.1:{port} (user-space stack; kernel mirror "
          f"on the same port for outside clients)", file=out)
    results = []
    async with ClientSession() as session:
        for i in range(requests):
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                text = await resp.text()
                results.append(resp.status)
                print(f"client: GET / -> {resp.status} {text.strip()!r}", file=out)
        payload = os.urandom(1 << 20)
        async with session.post(f"http://127.0.0.1:{port}/echo", data=payload) as resp:
            body = await resp.read()
            ok = body == payload[::-1]
            print(f"client: POST /echo 1 MiB -> {resp.status}, body reversed correctly: {ok}", file=out)
            results.append(resp.status)
    # short connections, the workload mTCP was built for: each request on a fresh TCP connection
    burst = 200
    t0 = time.perf_counter()

    async def one_short(session):
        async with session.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}) as resp:
            await resp.read()
            return resp.status

    from aiohttp import TCPConnector
    async with ClientSession(connector=TCPConnector(force_close=True, limit=50)) as session:
        statuses = await asyncio.gather(*(one_short(session) for _ in range(burst)))
    dt = time.perf_counter() - t0
    results.extend(statuses)
    print(f"client: {burst} GET / on {burst} fresh connections (Connection: close, 50 at a time) -> "
          f"{sum(1 for s in statuses if s == 200)} x 200 in {dt * 1000:.0f} ms", file=out)
    await runner.cleanup()
    st = loop.stats()
    return {"statuses": results, "stats": st, "echo_ok": ok}


def cmd_demo(args) -> int:
    _require_native()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return _not_built("the demo", "aiohttp is not installed (pip install aiohttp)")
    from .policy import run
    out = sys.stdout
    res = run(_demo_main(args.requests, out), base=args.base)
    st = res["stats"]
    keys = ["loop.userspace_connections", "loop.kernel_connections", "active_opens", "passive_opens",
            "conn_accepted", "segs_in", "segs_out", "frames_in", "frames_out", "retrans_segs"]
    print("loop.stats() (the engine carried the connections):", file=out)
    for k in keys:
        if k in st:
            print(f"  {k:32s} {st[k]}", file=out)
    ok = (all(s == 200 for s in res["statuses"]) and res["echo_ok"]
          and st.get("loop.userspace_connections", 0) > 0 and st.get("loop.kernel_connections", 1) == 0)
    print("demo:", "OK" if ok else "FAILED", file=out)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------------------------
async def _stats_main(conns: int):
    async def handle(r, w):
        w.write(await r.read())
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    for _ in range(conns):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x" * 1000)
        w.write_eof()
        await r.read()
        w.close()
        await w.wait_closed()
    srv.close()
    await srv.wait_closed()
    await asyncio.sleep(0.05)
    return asyncio.get_running_loop().stats()


def cmd_stats(args) -> int:
    _require_native()
    from .policy import run
    st = run(_stats_main(args.conns))
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        for k in sorted(st):
            if st[k] or args.all:
                print(f"{k:40s} {st[k]}")
    return 0


# ---------------------------------------------------------------------------------------------
# bench loop
# ---------------------------------------------------------------------------------------------
async def _bench_echo(duration: float, clients: int, msg: int):
    """Ping-pong echo: `clients` connections each send msg bytes and wait for them back."""
    class Echo(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr

        def data_received(self, data):
            self.tr.write(data)

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    count = 0
    stop = False
    payload = b"x" * msg

    class Client(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
            self.got = 0
            tr.write(payload)

        def data_received(self, data):
            nonlocal count
            self.got += len(data)
            if self.got >= msg:
                self.got -= msg
                count += 1
                if not stop:
                    self.tr.write(payload)

    trs = []
    for _ in range(clients):
        tr, _ = await loop.create_connection(Client, "127.0.0.1", port)
        trs.append(tr)
    await asyncio.sleep(0.2)  # warm-up
    c0, t0, p0 = count, time.perf_counter(), time.process_time()
    await asyncio.sleep(duration)
    c1, t1, p1 = count, time.perf_counter(), time.process_time()
    stop = True
    for tr in trs:
        tr.close()
    srv.close()
    await asyncio.sleep(0.05)
    n = max(c1 - c0, 1)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / n * 1e6, (p1 - p0) / (t1 - t0)


async def _bench_stream(duration: float):
    """One connection, bulk one way: MB/s."""
    loop = asyncio.get_running_loop()
    got = 0

    class Sink(asyncio.Protocol):
        def data_received(self, data):
            nonlocal got
            got += len(data)

    srv = await loop.create_server(Sink, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    block = b"y" * (256 * 1024)
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        w.write(block)
        await w.drain()
    g0, t0, p0 = got, time.perf_counter(), time.process_time()
    end = t0 + duration
    while time.perf_counter() < end:
        w.write(block)
        await w.drain()
    g1, t1, p1 = got, time.perf_counter(), time.process_time()
    w.close()
    srv.close()
    await asyncio.sleep(0.05)
    mb = max(g1 - g0, 1) / 1e6
    return (g1 - g0) / (t1 - t0) / 1e6, (p1 - p0) / mb * 1e3, (p1 - p0) / (t1 - t0)


async def _bench_short(duration: float, clients: int):
    """Short connections (connect, 64 B echo, client closes), client and server on this loop:
    connections per second and process CPU per connection (both ends)."""
    from .bench_short import Echo, _clients
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    counter = [0]
    stop_at = [time.perf_counter() + 0.2]
    await _clients(port, clients, stop_at, counter)          # warm-up
    c0, t0, p0 = counter[0], time.perf_counter(), time.process_time()
    stop_at[0] = t0 + duration
    await _clients(port, clients, stop_at, counter)
    c1, t1, p1 = counter[0], time.perf_counter(), time.process_time()
    srv.close()
    await asyncio.sleep(0.05)
    n = max(c1 - c0, 1)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / n * 1e6, (p1 - p0) / (t1 - t0)


async def _bench_http(duration: float, concurrency: int):
    from aiohttp import ClientSession, TCPConnector, web

    async def hello(request):
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    count = 0
    stop_at = [0.0]

    async with ClientSession(connector=TCPConnector(limit=concurrency)) as s:
        async def worker():
            nonlocal count
            while time.perf_counter() < stop_at[0]:
                async with s.get(url) as resp:
                    await resp.read()
                count += 1

        stop_at[0] = time.perf_counter() + 0.3
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        c0, t0, p0 = count, time.perf_counter(), time.process_time()
        stop_at[0] = t0 + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        c1, t1, p1 = count, time.perf_counter(), time.process_time()
    await runner.cleanup()
    n = max(c1 - c0, 1)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / n * 1e6, (p1 - p0) / (t1 - t0)


def _bench_one(kind: str, args) -> dict:
    if kind == "mtcp":
        from .policy import loop_factory
        # short TIME-WAIT: the short-connection clients close first (as bench_short's client loop)
        factory = loop_factory(base=args.base, msl_us=1000)
    elif kind == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop
    res = {}
    with asyncio.Runner(loop_factory=factory) as r:
        (res["echo_rtt_per_s"], res["echo_cpu_us_per_rtt"],
         res["echo_cpu_share"]) = r.run(_bench_echo(args.duration, args.clients, args.msg))
        (res["stream_MBps"], res["stream_cpu_ms_per_MB"],
         res["stream_cpu_share"]) = r.run(_bench_stream(args.duration))
        (res["short_conn_per_s"], res["short_cpu_us_per_conn"],
         res["short_cpu_share"]) = r.run(_bench_short(args.duration, args.clients))
        try:
            import aiohttp  # noqa: F401
            (res["http_req_per_s"], res["http_cpu_us_per_req"],
             res["http_cpu_share"]) = r.run(_bench_http(args.duration, args.concurrency))
        except ImportError:
            res["http_req_per_s"] = None
        if kind == "mtcp":
            st = r.get_loop().stats()
            res["userspace_connections"] = st["loop.userspace_connections"]
            res["kernel_connections"] = st["loop.kernel_connections"]
    return res


def cmd_bench_loop(args) -> int:
    _require_native()
    kinds = ["mtcp", "asyncio"]
    try:
        import uvloop  # noqa: F401
        kinds.append("uvloop")
    except ImportError:
        pass
    results = {}
    for k in kinds:
        if not args.json:
            print(f"running {k} ...", file=sys.stderr)
        results[k] = _bench_one(k, args)
    ratios = {}
    for other in kinds[1:]:
        for metric in ("echo_rtt_per_s", "stream_MBps", "short_conn_per_s", "http_req_per_s"):
            a, b = results["mtcp"].get(metric), results[other].get(metric)
            if a and b:
                ratios[f"mtcp/{other} {metric}"] = a / b
        # CPU cost per operation: robust on a shared machine (lower is better, so other/mtcp)
        for metric in ("echo_cpu_us_per_rtt", "stream_cpu_ms_per_MB", "short_cpu_us_per_conn",
                       "http_cpu_us_per_req"):
            a, b = results["mtcp"].get(metric), results[other].get(metric)
            if a and b:
                ratios[f"{other}/mtcp {metric} (efficiency)"] = b / a
    out = {"config": {"duration_s": args.duration, "echo_clients": args.clients, "echo_msg": args.msg,
                      "http_concurrency": args.concurrency, "mtcp_base": args.base,
                      "python": sys.version.split()[0], "cpus": os.cpu_count()},
           "results": results, "ratios": ratios,
           "note": "mtcp = MTCPLoop on the embedded in-process user-space loopback; asyncio/uvloop "
                   "= stock loops over kernel 127.0.0.1; client and server share one loop"}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'loop':10s} {'echo RTT/s':>11s} {'cpu us/RTT':>11s} {'stream MB/s':>12s} {'cpu ms/MB':>10s} "
          f"{'short c/s':>10s} {'us/conn':>8s} {'http req/s':>11s} {'cpu us/req':>11s}")
    for k in kinds:
        r = results[k]
        h = r.get("http_req_per_s")
        http = f"{h:11.0f} {r['http_cpu_us_per_req']:11.1f}" if h else f"{'n/a':>11s} {'':>11s}"
        print(f"{k:10s} {r['echo_rtt_per_s']:11.0f} {r['echo_cpu_us_per_rtt']:11.2f} "
              f"{r['stream_MBps']:12.1f} {r['stream_cpu_ms_per_MB']:10.3f} "
              f"{r['short_conn_per_s']:10.0f} {r['short_cpu_us_per_conn']:8.2f} {http}")
    for k, v in ratios.items():
        print(f"  {k:52s} {v:6.2f}x")
    shares = [results[k][m] for k in kinds for m in ("echo_cpu_share", "stream_cpu_share", "short_cpu_share")]
    if min(shares) < 0.8:
        print(f"note: the process got as little as {min(shares):.0%} of a CPU during a measurement "
              "(shared machine): compare the cpu-per-operation columns.")
    return 0


def cmd_bench_engine(args) -> int:
    try:
        from ._native import ffi, lib
    except ImportError as exc:
        return _not_built("the native extension", str(exc))
    fn = getattr(lib, "mtcp_bench_engine", None)
    if fn is None:
        return _not_built("bench engine", "lib.mtcp_bench_engine is not in this build "
                          "(rebuild: python mtcp_loop/_build.py)")
    modes = {"short": (0, args.clients), "bulk": (1, args.write_size)}
    wanted = ["short", "bulk"] if args.mode == "both" else [args.mode]
    results = {}
    for name in wanted:
        mode, param = modes[name]
        out = ffi.new("struct mtcp_bench_result *")
        rc = fn(mode, float(args.seconds), int(param), out)
        if rc < 0:
            print(f"mtcp-loop: mtcp_bench_engine({name}) failed: {os.strerror(-rc)}", file=sys.stderr)
            return 1
        results[name] = {k: getattr(out, k) for k in (
            "conns_per_sec", "gbps", "conns", "bytes", "seconds", "retransmits", "errors",
            "cpu_seconds", "link_drops", "segments", "verified")}
        results[name]["param"] = param
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            if name == "short":
                print(f"engine short connections ({r['param']} concurrent): {r['conns_per_sec']:.0f} conn/s "
                      f"({r['conns']} in {r['seconds']:.2f} s, cpu {r['cpu_seconds']:.2f} s, "
                      f"errors {r['errors']}, retransmits {r['retransmits']})")
            else:
                print(f"engine bulk ({r['param']} B writes): {r['gbps']:.2f} Gbit/s "
                      f"({r['bytes']} B in {r['seconds']:.2f} s, cpu {r['cpu_seconds']:.2f} s, "
                      f"retransmits {r['retransmits']}, verified {r['verified']} B)")
    bad = any(r["errors"] or r["link_drops"] for r in results.values())
    return 1 if bad else 0


def build_parser():
    p = argparse.ArgumentParser(prog="mtcp-loop", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="aiohttp app served and queried over the embedded user-space stack")
    d.add_argument("--requests", type=int, default=3)
    d.add_argument("--base", default="auto", choices=["auto", "uvloop", "asyncio"])
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("stats", help="short loopback exchange, then the engine counters")
    s.add_argument("--conns", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="also print zero counters")
    s.set_defaults(func=cmd_stats)
    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bl = bsub.add_parser("loop", help="MTCPLoop (embedded) vs stock asyncio and uvloop (kernel 127.0.0.1)")
    bl.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    bl.add_argument("--clients", type=int, default=32, help="concurrent echo connections")
    bl.add_argument("--msg", type=int, default=64, help="echo message size")
    bl.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP clients")
    bl.add_argument("--base", default="auto", choices=["auto", "uvloop", "asyncio"])
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=cmd_bench_loop)
    be = bsub.add_parser("engine", help="the C engine benchmark (two engines over the sim link, no Python)")
    be.add_argument("--mode", choices=["short", "bulk", "both"], default="both")
    be.add_argument("--seconds", type=float, default=2.0)
    be.add_argument("--clients", type=int, default=64, help="short mode: concurrent clients")
    be.add_argument("--write-size", type=int, default=65536, help="bulk mode: bytes per write")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench_engine)
    from .links import add_cli_parsers   # `testbed up|down|status`, `bench rings` (mtcp_loop/links.py)
    add_cli_parsers(sub, bsub)
    from .workers import add_cli_parsers as _workers_cli   # `run`, live `stats`, `bench cores`
    _workers_cli(sub, bsub)
    from .bench_compare import add_cli_parser as _compare_cli   # `bench compare` (mtcp_loop/bench_compare.py)
    _compare_cli(bsub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import MTCPConfig
    from .links import LinkError
    try:
        MTCPConfig.from_env()            # a bad MTCP_* variable: one line naming it, exit 2
    except (TypeError, ValueError) as exc:
        print(f"mtcp-loop: error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except LinkError as exc:             # a real ring that cannot open: one line
        print(f"mtcp-loop: error: {exc.strerror or exc}", file=sys.stderr)
        import gc
        import warnings
        with warnings.catch_warnings():  # the command's coroutine never ran: no second message
            warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
            exc = None
            gc.collect()
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
