"""Cost of reading engine state at N connections (docs/operations.md): `mtcp-loop ss`, a
Prometheus scrape, loop.connections(), and how long the data path is held per step.

    PYTHONPATH=. python tools/bench_ops.py [--conns 100000] [--repeat 5]

Opens N/2 connection pairs on the in-process loopback stack (both ends in this process's one
engine: N connections + 1 listener), with a keep-alive echo running on a few of them, then
times, on the loop's thread (CPU time of the thread, so that a busy machine preempting the
process does not count as cost):

* C walk: mtcp_engine_sockets over every block in SCAN_CHUNK steps (the copy out);
* records: loop.connections() (C walk + one dict per record);
* gauges: mtcp_engine_gauges (one C pass; what a scrape costs per worker besides the counters);
* metrics snapshot: everything the Prometheus endpoint asks a loop for;
and end to end from another process: `ss` over the control socket (every record, converted to
dicts as the CLI does) and a scrape of the metrics endpoint, while 4 echo clients measure the
round trip through the same loop. The longest single step on the loop thread is the data-path
stall bound.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Sink(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.t.write(d)


def client(path, mport, repeat):
    from mtcp_loop import ops
    ss_t, ss_n, sc_t, sc_len, hold = [], 0, [], 0, 0.0
    for _ in range(repeat):
        t1 = time.perf_counter()
        ans = ops.query(path, "ss", {"states": []}, timeout=120)
        ss_n = len(ops.ss_records(ans))
        hold = max(hold, ans["max_step_seconds"])
        ss_t.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=60) as r:
            sc_len = len(r.read())
        sc_t.append(time.perf_counter() - t1)
    print(json.dumps([ss_t, ss_n, sc_t, sc_len, hold]))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        return client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=100000, help="connections (both ends counted)")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    import mtcp_loop
    from mtcp_loop import ops
    from mtcp_loop._native import ffi, lib

    rundir = tempfile.mkdtemp(prefix="mtcp-bench-ops-")
    os.environ["MTCP_RUNDIR"] = rundir
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        mport = s.getsockname()[1]
    pairs = a.conns // 2
    cfg = mtcp_loop.MTCPConfig(kernel_mirror=False, max_conns=a.conns + 1024, control="bench-ops",
                               metrics=f"127.0.0.1:{mport}")
    loop = mtcp_loop.new_event_loop(cfg)
    res = {}

    async def run():
        # one engine has ~28k ephemeral ports per address family: half the pairs over IPv4, half
        # over IPv6
        srv = await loop.create_server(_Sink, "127.0.0.1", 0, backlog=65535)
        port = srv.sockets[0].getsockname()[1]
        srv6 = await loop.create_server(_Sink, "::1", 0, backlog=65535)
        port6 = srv6.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        trs = []
        batch = 512
        for i in range(0, pairs, batch):
            host, p = ("127.0.0.1", port) if i < pairs // 2 else ("::1", port6)
            got = await asyncio.gather(*(loop.create_connection(asyncio.Protocol, host, p)
                                         for _ in range(min(batch, pairs - i))))
            trs.extend(t for t, _ in got)
        res["open_seconds"] = time.perf_counter() - t0
        await asyncio.sleep(0.2)
        eng = loop._mtcp_engine
        n_est = len(loop.connections(state="established"))
        res["established"] = n_est

        # background load: a few echo round trips keep the data path busy while we measure
        stop = False
        rtts = []

        async def pinger(t):
            class P(asyncio.Protocol):
                def __init__(self):
                    self.w = None

                def data_received(self, d):
                    if self.w and not self.w.done():
                        self.w.set_result(None)
            tr, p = await loop.create_connection(P, "127.0.0.1", port)
            while not stop:
                p.w = loop.create_future()
                t1 = time.perf_counter()
                tr.write(b"x")
                await p.w
                rtts.append(time.perf_counter() - t1)
                await asyncio.sleep(0.001)
            tr.close()
        pingers = [asyncio.ensure_future(pinger(t)) for t in trs[:4]]
        await asyncio.sleep(0.1)

        def timed(fn, n):
            out = []
            for _ in range(n):
                t1 = time.thread_time()
                fn()
                out.append(time.thread_time() - t1)
            return out

        # C walk, one SCAN_CHUNK step at a time (the longest step = the stall per loop iteration)
        w_steps, w_total = [], []
        buf = ffi.new("struct mtcp_sock_record[]", ops.SCAN_CHUNK)
        for _ in range(a.repeat):
            cur = ffi.new("uint32_t *", 0)
            t1 = time.thread_time()
            while cur[0] < lib.mtcp_engine_nblocks(eng.e):
                t2 = time.thread_time()
                lib.mtcp_engine_sockets(eng.e, time.monotonic_ns() // 1000, cur, ffi.NULL, buf, ops.SCAN_CHUNK, ops.SCAN_CHUNK)
                w_steps.append(time.thread_time() - t2)
            w_total.append(time.thread_time() - t1)
            await asyncio.sleep(0)
        res["c_walk_total_ms"] = 1000 * statistics.median(w_total)
        res["c_walk_step_max_ms"] = 1000 * max(w_steps)
        # python conversion per step (what one control-channel step holds the loop for)
        wk = ops._Walker(eng)
        conv = []
        while not wk.done:
            t1 = time.thread_time()
            [ops._to_dict(t) for t in wk.step()]
            conv.append(time.thread_time() - t1)
        res["records_step_max_ms"] = 1000 * max(conv)
        res["connections_ms"] = 1000 * statistics.median(timed(lambda: loop.connections(), a.repeat))
        g = ffi.new("struct mtcp_engine_gauges *")
        res["gauges_ms"] = 1000 * statistics.median(timed(lambda: lib.mtcp_engine_gauges(eng.e, g), a.repeat))
        res["metrics_snapshot_ms"] = 1000 * statistics.median(timed(lambda: ops.metrics_snapshot(loop), a.repeat))

        # end to end from another thread: ss over the control socket, a scrape
        rtts.clear()
        path = ops.instance_sockets(os.path.join(rundir, "bench-ops"))[0][1]

        def pct(xs, q):
            xs = sorted(xs)
            return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None
        t_client = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--client", path, str(mport), str(a.repeat),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()       # a separate process, as `mtcp-loop ss` is
        ss_t, ss_n, sc_t, sc_len, hold = json.loads(out)
        res["ss_loop_hold_max_ms"] = 1000 * hold
        res["ss_control_ms"] = 1000 * statistics.median(ss_t)
        res["ss_records"] = ss_n
        res["scrape_ms"] = 1000 * statistics.median(sc_t)
        res["scrape_bytes"] = sc_len
        busy = list(rtts)
        rtts.clear()
        await asyncio.sleep(time.perf_counter() - t_client)      # the same time without ss/scrapes
        idle = list(rtts)
        res["echo_rtt_ms_during_ss"] = {"p50": pct(busy, .5), "p99": pct(busy, .99), "max": pct(busy, 1),
                                        "n": len(busy)}
        res["echo_rtt_ms_baseline"] = {"p50": pct(idle, .5), "p99": pct(idle, .99), "max": pct(idle, 1),
                                       "n": len(idle)}
        stop = True
        await asyncio.gather(*pingers, return_exceptions=True)
        for t in trs:
            t.abort()
        srv.close()
        srv6.close()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
        shutil.rmtree(rundir, ignore_errors=True)
    res["conns"] = a.conns
    res["load"] = os.getloadavg()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
