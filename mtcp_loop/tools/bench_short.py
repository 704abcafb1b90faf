"""Short-connection micro-benchmark of the Python per-connection path (connect, 64 B echo, close).

    mtcp-loop bench short [--mode threads|one] [--loops mtcp,uvloop,asyncio]
                          [--duration S] [--clients N] [--repeat R] [--profile FILE]

* ``threads`` (default): the echo server runs on its own loop in one thread, the clients on another
  loop in a second thread; the figure is the *server thread's* CPU (time.thread_time) per
  connection, so the client's cost is left out. Both mtcp loops sit on the process-wide
  in-process loopback switch, so every connection crosses the user-space stack.
* ``one``: server and clients on one loop; the figure is the process CPU (time.process_time) per
  connection, both ends included.

The kernel loops (uvloop / asyncio over kernel 127.0.0.1) run the same code for comparison (their
thread CPU includes the kernel's TCP work done in the server thread's syscalls).
``--profile FILE`` writes a cProfile of the server thread (threads mode, mtcp loop only).
"""
from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time

MSG = b"x" * 64


class Echo(asyncio.Protocol):
    __slots__ = ("tr",)

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)


def _factory(kind, base, client=False):
    if kind == "mtcp":
        from mtcp_loop.policy import loop_factory
        # the client closes first and holds TIME-WAIT: a short MSL keeps its ephemeral ports free
        return loop_factory(base=base, msl_us=1000) if client else loop_factory(base=base)
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.SelectorEventLoop


class _Client(asyncio.Protocol):
    def __init__(self, done):
        self.done = done
        self.got = 0

    def connection_made(self, tr):
        self.tr = tr
        tr.write(MSG)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= len(MSG):
            self.tr.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def _clients(port, clients, stop_at, counter, limit=None):
    loop = asyncio.get_running_loop()
    if limit is not None:
        limit += counter[0]

    async def one():
        while (time.perf_counter() < stop_at[0]) if limit is None else (counter[0] < limit):
            done = loop.create_future()
            await loop.create_connection(lambda: _Client(done), "127.0.0.1", port)
            await done
            counter[0] += 1

    await asyncio.gather(*(one() for _ in range(clients)))


def run_threads(kind, base, duration, clients, profile=None):
    started = threading.Event()
    stop = threading.Event()
    info = {}

    def server():
        loop = _factory(kind, base)()
        asyncio.set_event_loop(loop)

        async def main():
            srv = await loop.create_server(Echo, "127.0.0.1", 0)
            info["port"] = srv.sockets[0].getsockname()[1]
            info["loop"] = loop
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            srv.close()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    th = threading.Thread(target=server, daemon=True)
    th.start()
    started.wait(10)
    sloop = info["loop"]
    marks = {}

    def mark(name):
        ev = threading.Event()

        def f():
            marks[name] = time.thread_time()
            if hasattr(sloop, "stats"):        # mtcp: the server engine's segments in/out
                st = sloop.stats()
                marks[name + "_segs"] = (st.get("segs_in", 0), st.get("segs_out", 0))
            if profile is not None and name == "start":
                import cProfile
                marks["prof"] = cProfile.Profile()
                marks["prof"].enable()
            if profile is not None and name == "end":
                marks["prof"].disable()
                marks["prof"].dump_stats(profile)
            ev.set()
        sloop.call_soon_threadsafe(f)
        ev.wait(10)

    cloop = _factory(kind, base, client=True)()
    counter = [0]
    stop_at = [time.perf_counter() + 0.3]
    try:
        cloop.run_until_complete(_clients(info["port"], clients, stop_at, counter))   # warm-up
        mark("start")
        c0, t0 = counter[0], time.perf_counter()
        stop_at[0] = t0 + duration
        cloop.run_until_complete(_clients(info["port"], clients, stop_at, counter))
        c1, t1 = counter[0], time.perf_counter()
        mark("end")
    finally:
        stop.set()
        th.join(10)
        cloop.close()
    n = max(c1 - c0, 1)
    r = {"conn_per_s": n / (t1 - t0), "server_cpu_us_per_conn": (marks["end"] - marks["start"]) / n * 1e6}
    if "start_segs" in marks:
        r["server_segs_in_per_conn"] = (marks["end_segs"][0] - marks["start_segs"][0]) / n
        r["server_segs_out_per_conn"] = (marks["end_segs"][1] - marks["start_segs"][1]) / n
    return r


def run_one(kind, base, duration, clients, conns=None):
    loop = _factory(kind, base, client=True)()

    async def main():
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        counter = [0]
        stop_at = [time.perf_counter() + 0.3]
        await _clients(port, clients, stop_at, counter)
        c0, t0, p0 = counter[0], time.perf_counter(), time.process_time()
        stop_at[0] = t0 + duration
        await _clients(port, clients, stop_at, counter, conns)
        c1, t1, p1 = counter[0], time.perf_counter(), time.process_time()
        srv.close()
        n = max(c1 - c0, 1)
        return {"conn_per_s": n / (t1 - t0), "process_cpu_us_per_conn": (p1 - p0) / n * 1e6}

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def report(mode="threads", loops=("mtcp",), base="auto", duration=2.0, clients=32, repeat=3, conns=None,
           profile=None, as_json=False) -> int:
    """Run each loop `repeat` times and print the medians (`mtcp-loop bench short`)."""
    out = {}
    for kind in loops:
        runs = []
        for i in range(repeat):
            if mode == "threads":
                r = run_threads(kind, base, duration, clients,
                                profile if (kind == "mtcp" and i == repeat - 1) else None)
            else:
                r = run_one(kind, base, duration, clients, conns)
            runs.append(r)
        key = "server_cpu_us_per_conn" if mode == "threads" else "process_cpu_us_per_conn"
        vals = [r[key] for r in runs]
        out[kind] = {"runs": runs, key + "_median": statistics.median(vals), key + "_min": min(vals),
                     "conn_per_s_median": statistics.median(r["conn_per_s"] for r in runs)}
        if not as_json:
            print(f"{kind:8s} {mode}: {key} median {statistics.median(vals):6.2f} min {min(vals):6.2f} "
                  f"(runs {' '.join(f'{v:.2f}' for v in vals)}); "
                  f"{out[kind]['conn_per_s_median']:.0f} conn/s"
                  + (f"; server segments in/out per conn {runs[-1]['server_segs_in_per_conn']:.2f}/"
                     f"{runs[-1]['server_segs_out_per_conn']:.2f}" if "server_segs_in_per_conn" in runs[-1] else ""),
                  flush=True)
    if as_json:
        print(json.dumps(out, indent=2))
    return 0
