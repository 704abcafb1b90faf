"""mtcp-loop command line.

    mtcp-loop demo                 aiohttp app served AND queried over the embedded user-space stack
    mtcp-loop stats [--json]       a short loopback exchange, then the engine counters
    mtcp-loop bench loop [--json]  echo, stream, short connections, aiohttp hello: MTCPLoop vs stock
                                   asyncio vs uvloop (kernel)
    mtcp-loop bench rings [--json] raw frame rate RX/TX of the tap/packet/xdp rings (namespaces)
    mtcp-loop testbed up|down|status  the netns testbed (--kind tap|packet|xdp)
    mtcp-loop bench engine         the C engine benchmark (lib.mtcp_bench_engine, no Python in the loop)
    mtcp-loop bench compare [--json] [--quick]  asyncio/uvloop+kernel vs mtcp_loop tap/packet/xdp, cores=1/2
    mtcp-loop ss [-t STATE] [-l|-a] [-i] [--json]   connections of a running instance (docs/operations.md)
    mtcp-loop top                  live per-worker view
    mtcp-loop capture [-w FILE] [-c N] [-G SEC] [filter]  live pcap of a running worker

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
        from mtcp_loop import _native  # noqa: F401
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
    from mtcp_loop.policy import run
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
    from mtcp_loop.policy import run
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
    from ..bench_short import Echo, _clients
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
        from mtcp_loop.policy import loop_factory
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
        from mtcp_loop._native import ffi, lib
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



# ---------------------------------------------------------------------------------------------
# ss / top / capture: a running instance (`mtcp-loop run` workers, in-process loops that opted
# in with MTCPConfig(control=NAME)), through the control sockets (mtcp_loop/ops.py)
# ---------------------------------------------------------------------------------------------
def _instance(args, worker=None):
    from mtcp_loop import ops
    from mtcp_loop.ops import default_rundir
    rundir = args.rundir or default_rundir(args.name)
    socks = ops.instance_sockets(rundir, worker)
    if not socks:
        what = f"worker {worker} of " if worker is not None else ""
        print(f"mtcp-loop: no {what}running instance under {rundir} (start one with `mtcp-loop run "
              f"--name {args.name}` or MTCPConfig(control={args.name!r}))", file=sys.stderr)
    return socks


def _ask_all(socks, cmd, qargs=None, timeout=30.0):
    from mtcp_loop import ops
    out = []
    for label, path in socks:
        try:
            out.append((label, ops.query(path, cmd, qargs, timeout=timeout)))
        except (OSError, ValueError) as exc:
            out.append((label, {"error": str(exc)}))
    return out


def cmd_ss(args) -> int:
    from mtcp_loop import ops
    try:
        ops.parse_states(args.state)
    except ValueError as exc:
        print(f"mtcp-loop ss: {exc}", file=sys.stderr)
        return 2
    socks = _instance(args)
    if not socks:
        return 1
    states = args.state
    if not states and not args.all:
        # ss's default: connected sockets except TIME-WAIT and SYN-RECV; -l: listeners
        states = ["listening"] if args.listening else ["syn-sent", "established", "fin-wait-1", "fin-wait-2",
                                                       "close-wait", "closing", "last-ack"]
    qargs = {"states": states, "sport": args.sport or 0, "dport": args.dport or 0,
             "family": 4 if args.ipv4 else 6 if args.ipv6 else 0}
    recs, bad = [], 0
    for label, ans in _ask_all(socks, "ss", qargs):
        if "error" in ans:
            print(f"mtcp-loop ss: worker {label}: {ans['error']}", file=sys.stderr)
            bad += 1
            continue
        for r in ops.ss_records(ans):
            r["worker"] = label
            recs.append(r)
    try:
        if args.json:                              # a JSON array, one record per line
            print("[" + ",\n ".join(json.dumps(r) for r in recs) + "]")
        else:
            print(ops.format_ss(recs, info=args.info))
        sys.stdout.flush()
    except BrokenPipeError:                        # `mtcp-loop ss | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if bad else 0


def _top_rows(prev, cur):
    rows = []
    for label, s in cur:
        if "error" in s or not s.get("engine"):
            rows.append((label, s.get("error", "no engine yet"), None))
            continue
        p = prev.get(label)
        dt = (s["t"] - p["t"]) if p else 0.0

        def rate(k):
            return (s[k] - p[k]) / dt if p and dt > 0 else 0.0
        drops = {k: v - (p["drops"].get(k, 0) if p else v) for k, v in s["drops"].items()}
        rows.append((label, None, {
            "pid": s["pid"], "conn/s": rate("new_conns"), "active": s["active"],
            "segs in/s": rate("segs_in"), "segs out/s": rate("segs_out"), "retrans/s": rate("retransmits"),
            "drops/s": ", ".join(f"{k} {v / dt:.0f}" for k, v in drops.items() if v and dt > 0) or "-",
            "conns pool": f"{s['pool']['conns_used']}/{s['pool']['conns_max']}",
            "chunks pool": f"{s['pool']['chunks_used']}/{s['pool']['chunks_max']}",
            "acceptq": s["accept_queue"], "cpu %": 100.0 * rate("cpu_seconds"),
        }))
    return rows


_TOP_COLS = ("pid", "conn/s", "active", "segs in/s", "segs out/s", "retrans/s", "drops/s", "conns pool",
             "chunks pool", "acceptq", "cpu %")


def _fmt(v):
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def cmd_top(args) -> int:
    socks = _instance(args)
    if not socks:
        return 1
    plain = args.plain or not sys.stdout.isatty()
    prev = {}
    n = 0

    def sample():
        cur = _ask_all(_instance(args) or socks, "top", timeout=5.0)
        rows = _top_rows(prev, cur)
        for label, s in cur:
            if "error" not in s and s.get("engine"):
                prev[label] = s
        return rows
    sample()
    try:
        if plain:
            while args.count == 0 or n < args.count:
                time.sleep(args.interval)
                n += 1
                ts = time.strftime("%H:%M:%S")
                for label, err, row in sample():
                    if err:
                        print(f"{ts} worker={label} error={err}", flush=True)
                    else:
                        print(f"{ts} worker={label} " + " ".join(f"{k.replace(' ', '_').replace('/', '_per_')}="
                                                               f"{_fmt(row[k]).replace(' ', '')}" for k in _TOP_COLS),
                              flush=True)
            return 0
        from rich.live import Live
        from rich.table import Table

        def table(rows):
            t = Table(title=f"mtcp-loop top --name {args.name}  {time.strftime('%H:%M:%S')}")
            t.add_column("worker")
            for c in _TOP_COLS:
                t.add_column(c, justify="right")
            for label, err, row in rows:
                t.add_row(label, *([err] + [""] * (len(_TOP_COLS) - 1) if err else [_fmt(row[c]) for c in _TOP_COLS]))
            return t
        with Live(table([]), refresh_per_second=4, screen=False) as live:
            while args.count == 0 or n < args.count:
                time.sleep(args.interval)
                n += 1
                live.update(table(sample()))
    except KeyboardInterrupt:
        pass
    return 0


def _parse_size(text):
    t = text.strip().lower()
    mult = 1
    for suf, m in (("kb", 1000), ("mb", 1000 ** 2), ("gb", 1000 ** 3), ("k", 1024), ("m", 1024 ** 2),
                   ("g", 1024 ** 3)):
        if t.endswith(suf):
            t, mult = t[:-len(suf)], m
            break
    try:
        v = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 10m, 500k, 1000000)") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"size must be > 0, got {text!r}")
    return v


def cmd_capture(args) -> int:
    from mtcp_loop import ops
    try:
        flt = ops.parse_filter(args.filter)
    except ValueError as exc:
        print(f"mtcp-loop capture: {exc}", file=sys.stderr)
        return 2
    socks = _instance(args, args.worker)
    if not socks:
        return 1
    if args.stop:                                  # a capture left running (its client died)
        rc = 0
        for label, ans in _ask_all(socks, "capture", {"op": "stop"}):
            if "error" in ans:
                print(f"mtcp-loop capture: worker {label}: {ans['error']}", file=sys.stderr)
                rc = 1
            else:
                print(f"worker {label}: stopped; {ans.get('frames', 0)} frames in {ans['path']}")
        return rc
    out = os.path.abspath(args.write or "mtcp-capture.pcap")
    targets = []
    for label, path in socks:
        if len(socks) == 1:
            fpath = out
        else:
            stem, ext = os.path.splitext(out)
            fpath = f"{stem}.w{label.replace('/', '-')}{ext or '.pcap'}"
        targets.append((label, path, fpath))
    started = []
    rc = 0
    for label, path, fpath in targets:
        ans = ops.query(path, "capture", {"op": "start", "path": fpath, "host": flt["host"], "port": flt["port"],
                                          "count": args.count, "max_bytes": args.max_bytes,
                                          "seconds": args.seconds})
        if "error" in ans:
            print(f"mtcp-loop capture: worker {label}: {ans['error']}", file=sys.stderr)
            rc = 1
            continue
        started.append((label, path, fpath))
        print(f"mtcp-loop capture: worker {label} -> {fpath}", file=sys.stderr, flush=True)
    if not started:
        return 1
    if args.started_file:
        with open(args.started_file, "w") as f:
            f.write("started\n")
    deadline = time.monotonic() + (args.seconds + 1.0 if args.seconds else float("inf"))
    running = {label for label, _, _ in started}
    try:
        while running and time.monotonic() < deadline:
            time.sleep(0.1)
            for label, path, _ in started:
                if label not in running:
                    continue
                try:
                    st = ops.query(path, "capture", {"op": "status"})
                except OSError:
                    running.discard(label)
                    continue
                if "error" in st or not st.get("running") or st.get("done"):
                    running.discard(label)
    except KeyboardInterrupt:
        pass
    for label, path, fpath in started:
        try:
            st = ops.query(path, "capture", {"op": "stop"})
        except OSError as exc:
            st = {"error": str(exc)}
        if "error" in st:
            print(f"mtcp-loop capture: worker {label}: {st['error']}", file=sys.stderr)
            rc = 1
            continue
        if st.get("failed"):
            print(f"mtcp-loop capture: worker {label}: writing {fpath} failed", file=sys.stderr)
            rc = 1
        print(f"worker {label}: {st.get('frames', 0)} frames ({st.get('bytes', 0)} bytes) of "
              f"{st.get('seen', 0)} seen written to {fpath} in {st['seconds']:.1f}s")
    return rc


def _add_ops_parsers(sub):
    def inst(p):
        p.add_argument("--name", default="default", help="instance (`mtcp-loop run --name`, MTCPConfig(control=))")
        p.add_argument("--rundir", default=None)
    s = sub.add_parser("ss", help="connections of a running instance, like ss -tn[i] (every worker)")
    inst(s)
    s.add_argument("-t", "--state", action="append", default=None,
                   help="ss state filter (established, syn-sent, time-wait, listening, connected, all, ...)")
    s.add_argument("--sport", type=int, default=None, help="local port")
    s.add_argument("--dport", type=int, default=None, help="peer port")
    s.add_argument("-l", "--listening", action="store_true", help="listeners only (with accept/SYN queues)")
    s.add_argument("-a", "--all", action="store_true", help="connections and listeners")
    s.add_argument("-i", "--info", action="store_true", help="TCP internals: cwnd, rtt, rto, retransmits ...")
    s.add_argument("-4", dest="ipv4", action="store_true")
    s.add_argument("-6", dest="ipv6", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ss)
    t = sub.add_parser("top", help="live per-worker view (conn/s, segments, retransmits, drops, pools, CPU)")
    inst(t)
    t.add_argument("--interval", type=float, default=1.0)
    t.add_argument("-n", "--count", type=int, default=0, help="stop after N refreshes (0 = until Ctrl-C)")
    t.add_argument("--plain", action="store_true", help="plain lines (the default when stdout is not a terminal)")
    t.set_defaults(func=cmd_top)
    c = sub.add_parser("capture", help="live pcap of a running worker's frames (both directions)")
    inst(c)
    c.add_argument("--worker", default=None, help="worker label (default: every worker, one file each)")
    c.add_argument("-w", "--write", default=None, metavar="FILE.pcap", help="default ./mtcp-capture.pcap")
    c.add_argument("-c", "--count", type=int, default=0, help="stop after N frames")
    c.add_argument("-C", "--max-bytes", type=_parse_size, default=None, help="stop at this file size (e.g. 10m)")
    c.add_argument("-G", "--seconds", type=float, default=None, help="stop after this many seconds")
    c.add_argument("--stop", action="store_true", help="stop a capture left running on the worker(s)")
    c.add_argument("--started-file", default=None, help=argparse.SUPPRESS)
    c.add_argument("filter", nargs="*", help="host ADDR / port N, joined by 'and'")
    c.set_defaults(func=cmd_capture)


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
    from .rings import add_cli_parsers as _rings_cli   # `testbed up|down|status`, `bench rings` (rings.py)
    _rings_cli(sub, bsub)
    from .run import add_cli_parsers as _run_cli   # `run`, live `stats`, `bench cores` (run.py)
    _run_cli(sub, bsub)
    _add_ops_parsers(sub)    # `ss`, `top`, `capture` (mtcp_loop/ops.py)
    from .bench import add_cli_parsers as _bench_cli   # `bench compare`, `bench short`, `bench vtime` (bench.py)
    _bench_cli(bsub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mtcp_loop.config import MTCPConfig
    from mtcp_loop.links import LinkError
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
