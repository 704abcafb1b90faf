"""`mtcp-loop bench cores`: the same workload against `mtcp-loop run` (or the unchanged program
under MTCPPolicy(cores=N)) at each core count on a multi-queue TAP testbed. Needs root (network
namespaces), wrk for the http/close workloads, and the source tree's examples/ (the aiohttp app)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

from mtcp_loop.workers import stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # holds mtcp_loop/

_BENCH_CONN_CLIENT = r"""
import asyncio, sys, time
HOST, PORT, DUR, CONC = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
async def main():
    n = bad = 0
    end = time.monotonic() + DUR
    async def worker():
        nonlocal n, bad
        while time.monotonic() < end:
            try:
                r, w = await asyncio.open_connection(HOST, PORT)
                w.write(b"x" * 63 + b"\n"); await r.readline(); w.close(); n += 1
            except OSError:
                bad += 1
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONC)))
    print(n, bad, time.monotonic() - t0)
asyncio.run(main())
"""


def _cpu_of(pids) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    tot = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            tot += (int(parts[11]) + int(parts[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return tot


_BENCH_POLICY_APP = r"""
import asyncio, sys
import mtcp_loop
from aiohttp import web
from examples.aiohttp_hello import make_app
asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=int(sys.argv[1])))
web.run_app(make_app(), host="0.0.0.0", port=int(sys.argv[2]), print=None)
"""


def bench_cores(cores_list=(1, 2), seconds=5.0, conc=64, workload="http", form="run") -> dict:
    """Same workload against `mtcp-loop run` at each core count on a multi-queue TAP testbed.
    http: wrk (keep-alive GETs) against an aiohttp hello app; close: wrk with "Connection: close"
    (a new TCP connection per request); conn: short connections (connect, 64 B echo, close) from
    Python kernel clients (generator-bound). The load generator shares the machine.
    form="policy" (http/close only): the unchanged program instead, MTCPPolicy(cores=N) +
    web.run_app(app) (at cores=1 one process, no supervisor)."""
    import shutil
    import subprocess
    import tempfile
    from .testbed import Testbed
    if form not in ("run", "policy"):
        raise ValueError(f"form must be 'run' or 'policy', got {form!r}")
    if form == "policy" and workload == "conn":
        raise ValueError("the policy form serves the aiohttp app: workloads http and close")
    tb = Testbed(prefix=f"mtbc{os.getpid() % 10000}", nqueues=max(cores_list))
    tb.up("tap")
    root = ROOT
    results = {}
    try:
        for i, n in enumerate(cores_list):
            port = 8080 + i      # a fresh port per run: the kernel clients' TIME-WAIT of the previous run
            base = tempfile.mkdtemp(prefix="mtcp-bench-")
            rundir = os.path.join(base, "default")
            wrk = workload in ("http", "close")
            target = "examples.aiohttp_hello:make_app" if wrk else "mtcp_loop.tools.bench_cores:_BenchEcho"
            hdr = ["-H", "Connection: close"] if workload == "close" else []
            env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
            if form == "run":
                argv = [sys.executable, "-m", "mtcp_loop.tools.cli", "run", target, "--cores", str(n), "--backend", "tap",
                        "--ifname", "mtcptap0", "--ipv4", "198.18.0.2/24", "--port", str(port), "--rundir", rundir,
                        "--drain-timeout", "1"]
            else:
                argv = [sys.executable, "-c", _BENCH_POLICY_APP, str(n), str(port)]
                env.update(MTCP_BACKEND="tap", MTCP_IFNAME="mtcptap0", MTCP_IPV4="198.18.0.2/24", MTCP_RUNDIR=base)
                for k in ("MTCP_NQUEUES", "MTCP_QUEUE", "MTCP_IPV6"):
                    env.pop(k, None)
            supervised = form == "run" or n > 1
            p = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 preexec_fn=tb._preexec(tb.peer_ns))
            try:
                deadline = time.monotonic() + 20
                while True:
                    if p.poll() is not None:
                        raise RuntimeError(f"server exited: {p.stderr.read().decode()[-2000:]}")
                    if time.monotonic() > deadline:
                        raise RuntimeError("server not ready after 20 s")
                    if not supervised or all(os.path.exists(os.path.join(rundir, f"worker-{q}.sock"))
                                             for q in range(n)):
                        try:
                            with tb.netns(tb.peer_ns):
                                socket.create_connection(("198.18.0.2", port), timeout=0.5).close()
                            break
                        except OSError:
                            pass
                    time.sleep(0.1)
                time.sleep(0.5)
                pids = [w["pid"] for w in stats(rundir)["workers"].values()] if supervised else [p.pid]
                warm = ["wrk", "-t1", "-c8", "-d1s"] + hdr + ["http://198.18.0.2:%d/" % port] if wrk else \
                    [sys.executable, "-c", _BENCH_CONN_CLIENT, "198.18.0.2", str(port), "1", "8"]
                tb.peer_run(warm, timeout=30)
                st0 = stats(rundir) if supervised else None
                c0 = _cpu_of(pids)
                if wrk:
                    if not shutil.which("wrk"):
                        raise RuntimeError("wrk not installed")
                    r = tb.peer_run(["wrk", "-t2", f"-c{conc}", f"-d{max(1, int(round(seconds)))}s"] + hdr +
                                    ["http://198.18.0.2:%d/" % port],
                                    timeout=seconds + 30)
                    import re
                    m = re.search(r"(\d+) requests in ([\d.]+)s", r.stdout)
                    if not m:
                        raise RuntimeError(f"wrk failed: {r.stdout[-1000:]} {r.stderr[-1000:]} "
                                           f"server: {p.stderr.read1(4000).decode(errors='replace') if p.poll() is not None else 'running'}")
                    reqs, el = int(m.group(1)), float(m.group(2))
                    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", r.stdout)
                    bad = errs.group(0) if errs else ""
                else:
                    r = tb.peer_run([sys.executable, "-c", _BENCH_CONN_CLIENT, "198.18.0.2", str(port), str(seconds),
                                     str(conc)], timeout=seconds + 30)
                    a, b, c = r.stdout.split()
                    reqs, bad, el = int(a), b, float(c)
                cpu = _cpu_of(pids) - c0
                st1 = stats(rundir) if supervised else None
                results[n] = {"requests": reqs, "seconds": el, "per_s": reqs / el, "server_cpu_s": cpu,
                              "server_util_cpus": cpu / max(1e-9, el),
                              "server_cpu_us_per_req": 1e6 * cpu / max(1, reqs), "errors": bad,
                              "misdirected": st1["total"]["misdirected"] if st1 else 0,
                              "per_worker_conns": {q: w.get("conns_total", 0) - st0["workers"][q].get("conns_total", 0)
                                                   for q, w in st1["workers"].items()} if st1 else {}}
            finally:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                shutil.rmtree(base, ignore_errors=True)
    finally:
        tb.down()
    if len(cores_list) >= 2:
        a, b = results[cores_list[0]], results[cores_list[-1]]
        results["ratio"] = b["per_s"] / a["per_s"]
    return results


class _BenchEcho(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.t.write(d)
