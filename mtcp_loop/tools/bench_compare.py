"""`mtcp-loop bench compare`: the same server code under stock asyncio + kernel TCP, uvloop + kernel
TCP and mtcp_loop on each real ring backend (tap, packet, xdp; cores=1 and cores=2), driven by the
same load generators, in fresh network namespaces per configuration (mtcp_loop/tools/testbed.py).

Topology per configuration (addresses from 198.18.0.0/24, never the root namespace):

    kernel servers (asyncio, uvloop): testbed kind "packet"
        [peer ns]  mtcp-p0 198.18.0.1   <- the server (kernel sockets), pinned to CPU 0
        [stack ns] mtcp-s0              <- loadgen (engine + AF_PACKET) as 198.18.0.2, CPU 1;
                                           kernel clients (kclient, wrk) get 198.18.0.2 on mtcp-s0
                                           for their phase only
    mtcp_loop servers: testbed kind tap / packet / xdp
        server = mtcp_loop workers on the TAP queues / mtcp-s0, 198.18.0.2, CPU 0 (cores=2: 0,1)
        peer side (mtcptap0 / mtcp-p0): kernel clients as 198.18.0.1 first, then the addresses
        are removed and loadgen owns 198.18.0.1 on the same interface (AF_PACKET)

The server process (mtcp_loop/tools/bench_server.py) serves, on consecutive ports: P echo, P+1
sink, P+2 source (8-byte big-endian length, then that many bytes), P+4 aiohttp hello, P+5 a second
echo port (idle test: more than 64k connections from one client address). It writes its RSS,
open connections and (mtcp) engine pool usage to a stats file once a second. The table, the
markdown section and the plots are mtcp_loop/tools/bench_report.py.

Load generators (native/bench; an installed package carries them in mtcp_loop/tools/_bin, built by
setup.py at install time; in a source tree they are built with ``make -C native loadgen kclient``):
    loadgen  C on the project's engine + AF_PACKET: short connections, idle connections
    kclient  C epoll on kernel sockets: short connections (cross-check), ping-pong latency, bulk
    wrk      aiohttp hello, keep-alive and ``Connection: close``
"""
from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# the directory that holds the mtcp_loop package: the source tree, or site-packages when installed
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVE = os.path.join(ROOT, "native")               # only in a source tree
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin")    # installed load generators
LOADGEN = os.path.join(BIN, "loadgen")
KCLIENT = os.path.join(BIN, "kclient")

PORT = 7000
SERVER_CPU = 0
CLIENT_CPU = 1

#: name -> (loop, backend, cores, testbed kind)
CONFIGS = {
    "asyncio+kernel": ("asyncio", "kernel", 1, "packet"),
    "uvloop+kernel": ("uvloop", "kernel", 1, "packet"),
    "mtcp tap": ("mtcp", "tap", 1, "tap"),
    "mtcp packet": ("mtcp", "packet", 1, "packet"),
    "mtcp xdp": ("mtcp", "xdp", 1, "xdp"),
    "mtcp tap cores=2": ("mtcp", "tap", 2, "tap"),
}
BASELINE = "uvloop+kernel"
WORKLOADS = ("short", "http", "bulk", "latency", "idle", "scaling", "ceiling")

#: targets: cell workload -> (description, check(value_or_ratio) -> bool, what is compared)
TARGETS = {
    "short": ("conn/s >= 3x uvloop+kernel", 3.0, "ratio"),
    "http_close": ("req/s >= 2x uvloop+kernel", 2.0, "ratio"),
    "http_keepalive": ("req/s >= 1.2x uvloop+kernel", 1.2, "ratio"),
    "bulk_up": ("Gbit/s >= 1x kernel", 1.0, "ratio"),
    "bulk_down": ("Gbit/s >= 1x kernel", 1.0, "ratio"),
    "latency": ("p99 <= 0.8x kernel", 0.8, "inv_ratio"),
    "idle": ("native <= 2 KB per idle conn", 2048.0, "max_value"),
    "scaling": ("cores=2/cores=1 >= 1.8x", 1.8, "value"),
}

KERNEL_TUNING = {
    "server": {"net/core/somaxconn": "65535", "net/ipv4/tcp_max_syn_backlog": "65535"},
    "client": {"net/ipv4/tcp_tw_reuse": "1", "net/ipv4/ip_local_port_range": "1024 65535"},
}


def _log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =============================================================================================
# measurement helpers
# =============================================================================================
def _proc_cpu(pid) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / tck
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid) -> list:
    out = [pid]
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            if int(parts[1]) == pid:
                out.append(int(path.split("/")[2]))
        except (OSError, IndexError, ValueError):
            pass
    return out


def _cpu_stat() -> dict:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"cpu\d+ ", line):
                p = line.split()
                v = [int(x) for x in p[1:9]]
                out[p[0]] = {"user": v[0] + v[1], "sys": v[2], "idle": v[3] + v[4], "irq": v[5],
                             "softirq": v[6], "steal": v[7]}
    return out


def _cpu_split(a: dict, b: dict) -> dict:
    out = {}
    for cpu in b:
        d = {k: b[cpu][k] - a[cpu][k] for k in b[cpu]}
        tot = sum(d.values()) or 1
        out[cpu] = {k: round(100.0 * d[k] / tot, 1) for k in ("user", "sys", "softirq", "idle")}
    return out


def _meminfo(key="Slab") -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


#: slab caches one established, idle kernel TCP socket held by an epoll server allocates
SOCKET_CACHES = ("TCP", "TCPv6", "request_sock_TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi",
                 "eventpoll_pwq")


def _slab_bytes(caches=SOCKET_CACHES) -> int:
    """Bytes of active objects in the given slab caches (/proc/slabinfo, root only)."""
    tot = 0
    with contextlib.suppress(OSError):
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in caches:
                    tot += int(p[1]) * int(p[3])
    return tot


def _pre(ns, cpus=None):
    def fn():
        from pyroute2 import netns
        netns.setns(ns)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    return fn


def _json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON in output: {text[-500:]!r}")


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": sys.version.split()[0], "mem_gb": round(os.sysconf("SC_PHYS_PAGES") *
                                                              os.sysconf("SC_PAGE_SIZE") / 2**30, 1)}


# =============================================================================================
# one configuration: testbed + server, torn down whatever happens
# =============================================================================================
class ConfigRun:
    def __init__(self, name: str, prefix: str):
        self.name = name
        self.loop, self.backend, self.cores, self.kind = CONFIGS[name]
        self.kernel = self.backend == "kernel"
        self.prefix = prefix
        self.tb = None
        self.proc = None
        self.statsdir = None
        self.tuning = {}

    # ---- lifecycle
    def __enter__(self):
        from .testbed import Testbed
        self.tb = Testbed(prefix=self.prefix, nqueues=self.cores)
        self.info = self.tb.up(self.kind)
        i = self.info
        if self.kernel:
            self.server_ns, self.server_ip = i["peer_ns"], i["peer_v4"]
            self.client_ns, self.client_if, self.client_ip = i["stack_ns"], i["stack_if"], i["stack_v4"]
            self.tuning["server"] = self._sysctls(self.server_ns, KERNEL_TUNING["server"])
        else:
            self.server_ns, self.server_ip = i["stack_ns"], i["stack_v4"]
            self.client_ns, self.client_if, self.client_ip = i["peer_ns"], i["peer_if"], i["peer_v4"]
        self.tuning["client"] = self._sysctls(self.client_ns, KERNEL_TUNING["client"])
        self.statsdir = tempfile.mkdtemp(prefix="mtcp-compare-")
        cpus = ",".join(str(c) for c in ([SERVER_CPU] if self.cores == 1 else range(self.cores)))
        kw = dict(loop=self.loop, host=self.server_ip, port=PORT, statsdir=self.statsdir, cpus=cpus,
                  cores=self.cores, max_conns=140000)
        if not self.kernel:
            kw.update(backend=self.backend, ifname=i["stack_if"], ipv4=f"{self.server_ip}/24")
        argv = _serve_argv(**kw)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.errlog = open(os.path.join(self.statsdir, "server.log"), "w+")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.errlog, stderr=subprocess.STDOUT,
                                     preexec_fn=_pre(self.server_ns))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(self.stats()) >= self.cores:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.server_log()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"server not ready after 30 s: {self.server_log()}")
        self.client_addr = None
        return self

    def __exit__(self, *exc):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    for pid in _children(self.proc.pid)[1:]:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    self.proc.kill()
                    self.proc.wait()
        finally:
            try:
                if self.tb is not None:
                    self.tb.down()
            finally:
                if self.statsdir:
                    shutil.rmtree(self.statsdir, ignore_errors=True)
        return False

    def server_log(self) -> str:
        try:
            self.errlog.flush()
            self.errlog.seek(0)
            return self.errlog.read()[-3000:]
        except (OSError, ValueError):
            return ""

    def _sysctls(self, ns, kv: dict) -> dict:
        out = {}
        with self.tb.netns(ns):
            for k, v in kv.items():
                path = "/proc/sys/" + k
                try:
                    with open(path, "w") as f:
                        f.write(v)
                    with open(path) as f:
                        out[k.replace("/", ".")] = " ".join(f.read().split())
                except OSError as exc:
                    out[k.replace("/", ".")] = f"error: {exc}"
        return out

    # ---- server state
    def stats(self) -> list:
        out = []
        for path in glob.glob(os.path.join(self.statsdir, "stats-*.json")):
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    out.append(json.load(f))
        return out

    def server_pids(self) -> list:
        return _children(self.proc.pid)

    def server_cpu(self) -> float:
        return sum(_proc_cpu(p) for p in self.server_pids())

    # ---- client side addresses: kernel clients need one, loadgen needs none
    def kernel_client_phase(self):
        from pyroute2 import NetNS
        if self.kernel:
            with NetNS(self.client_ns) as ns:
                idx = ns.link_lookup(ifname=self.client_if)[0]
                with contextlib.suppress(Exception):
                    ns.addr("add", index=idx, address=self.client_ip, prefixlen=24)
            time.sleep(0.2)

    def loadgen_phase(self):
        from pyroute2 import NetNS
        with NetNS(self.client_ns) as ns:
            idx = ns.link_lookup(ifname=self.client_if)[0]
            with contextlib.suppress(Exception):
                ns.addr("del", index=idx, address=self.client_ip, prefixlen=24)
        with self.tb.netns(self.client_ns):
            with contextlib.suppress(OSError):
                with open(f"/proc/sys/net/ipv6/conf/{self.client_if}/disable_ipv6", "w") as f:
                    f.write("1")
        time.sleep(0.2)

    # ---- running a client with server CPU accounting around it
    def measure(self, argv, timeout: float, ops_key=None) -> dict:
        c0, s0, t0 = self.server_cpu(), _cpu_stat(), time.monotonic()
        r = subprocess.run(argv, preexec_fn=_pre(self.client_ns, {CLIENT_CPU}), capture_output=True,
                           text=True, timeout=timeout)
        c1, s1, t1 = self.server_cpu(), _cpu_stat(), time.monotonic()
        if r.returncode != 0 and "{" not in r.stdout:
            raise RuntimeError(f"{os.path.basename(argv[0])} failed ({r.returncode}): "
                               f"{r.stderr.strip()[-800:]} {r.stdout.strip()[-400:]}")
        return {"raw": r.stdout, "server_cpu_s": round(c1 - c0, 3), "wall_s": round(t1 - t0, 3),
                "cpu_split": _cpu_split(s0, s1)}


# =============================================================================================
# workloads
# =============================================================================================
def _cell(cr: ConfigRun, workload: str, driver: str, value: float, unit: str, ops: float, m: dict,
          **extra) -> dict:
    cpu = m.get("server_cpu_s")
    c = {"workload": workload, "driver": driver, "config": cr.name, "loop": cr.loop, "backend": cr.backend,
         "cores": cr.cores, "value": value, "unit": unit, "ops": ops, "server_cpu_s": cpu,
         "server_cpu_us_per_op": round(1e6 * cpu / ops, 2) if cpu is not None and ops else None,
         "cpu_split": m.get("cpu_split")}
    c.update(extra)
    return c


def run_short_loadgen(cr, p) -> dict:
    lg = [LOADGEN, "--mode", "short", "--ifname", cr.client_if, "--ip", f"{cr.client_ip}/24",
          "--dst", cr.server_ip, "--port", str(PORT), "--conc", str(p["conc"]), "--size", "64",
          "--seconds", str(p["short_s"]), "--warmup", str(p["warm_s"]), "--cpu", str(CLIENT_CPU)]
    if cr.kind == "xdp":
        lg.append("--no-offload")
    m = cr.measure(lg, p["short_s"] + p["warm_s"] + 30)
    r = _json_line(m["raw"])
    stalled = None
    if r["conns"] == 0:
        # a stalled loadgen (before its sendto() re-kick work-around for native/io/packet.c, 1024 in
        # flight on the TAP stopped transmitting for good): retry once at half the concurrency
        stalled = p["conc"]
        lg[lg.index("--conc") + 1] = str(p["conc"] // 2)
        m = cr.measure(lg, p["short_s"] + p["warm_s"] + 30)
        r = _json_line(m["raw"])
    # server CPU is measured over warm-up + measurement; scale to the measured window's connections
    ops = r["conns_per_sec"] * (m["wall_s"]) or 1
    c = _cell(cr, "short", "loadgen", r["conns_per_sec"], "conn/s", ops, m, errors=r["errors"],
              retransmits=r["retransmits"], loadgen=r, stalled_at_conc=stalled,
              frames_per_conn={"to_server": round(r["frames_tx"] / max(1, r["conns"]), 2),
                               "from_server": round(r["frames_rx"] / max(1, r["conns"]), 2)})
    return c


def run_short_kclient(cr, p) -> dict:
    m = cr.measure([KCLIENT, "--mode", "short", "--dst", cr.server_ip, "--port", str(PORT),
                    "--conc", str(p["kconc"]), "--seconds", str(p["kshort_s"]), "--warmup", str(p["warm_s"]),
                    "--cpu", str(CLIENT_CPU)], p["kshort_s"] + p["warm_s"] + 30)
    r = _json_line(m["raw"])
    ops = r["conns_per_sec"] * m["wall_s"] or 1
    return _cell(cr, "short_kclient", "kclient", r["conns_per_sec"], "conn/s", ops, m, errors=r["errors"],
                 client=r)


def _wrk(cr, p, close: bool) -> dict:
    argv = ["wrk", "-t1", f"-c{p['http_conc']}", f"-d{p['http_s']}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{cr.server_ip}:{PORT + 4}/")
    m = cr.measure(argv, p["http_s"] + 30)
    out = m["raw"]
    mm = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not mm:
        raise RuntimeError(f"wrk: {out[-600:]}")
    reqs = int(mm.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return _cell(cr, "http_close" if close else "http_keepalive", "wrk", rps, "req/s", reqs, m,
                 errors=(errs.group(1) if errs else "") + (f" non2xx {non2xx.group(1)}" if non2xx else ""))


def run_latency(cr, p) -> dict:
    m = cr.measure([KCLIENT, "--mode", "ping", "--dst", cr.server_ip, "--port", str(PORT), "--size", "64",
                    "--seconds", str(p["ping_s"]), "--warmup", "0.3", "--cpu", str(CLIENT_CPU)], p["ping_s"] + 30)
    r = _json_line(m["raw"])
    return _cell(cr, "latency", "kclient", r["p99_us"], "p99 us", r["samples"] or 1, m,
                 p50_us=r["p50_us"], p99_us=r["p99_us"], p999_us=r["p999_us"], samples=r["samples"])


def run_bulk(cr, p, up: bool) -> dict:
    port = PORT + (1 if up else 2)
    m = cr.measure([KCLIENT, "--mode", "send" if up else "recv", "--dst", cr.server_ip, "--port", str(port),
                    "--bytes", str(p["bulk_bytes"]), "--cpu", str(CLIENT_CPU)], 120)
    r = _json_line(m["raw"])
    return _cell(cr, "bulk_up" if up else "bulk_down", "kclient", r["gbps"], "Gbit/s", r["bytes"] / 1e6, m,
                 bytes=r["bytes"], seconds=r["seconds"], ops_unit="MB")


def _fd_cap() -> int:
    """Connections a kernel-socket server can hold: its RLIMIT_NOFILE hard limit (containers without
    CAP_SYS_RESOURCE cannot raise it) minus a margin for listeners, the loop and files."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= 400000:
        return 1 << 30
    return max(1000, hard - 500)


def run_idle(cr, p, sizes: dict) -> dict:
    n = p["idle_conns"]
    capped = None
    if cr.kernel and n > _fd_cap():
        capped = n
        n = _fd_cap()
    st0 = {s["pid"]: s for s in cr.stats()}
    rss0 = sum(s["rss_kb"] for s in st0.values())
    pool0 = [sum(s.get("pool", [0] * 4)[i] for s in st0.values()) for i in range(4)]
    slab0, sock0 = _meminfo("Slab"), _slab_bytes()
    c0 = cr.server_cpu()
    lg = subprocess.Popen([LOADGEN, "--mode", "idle", "--ifname", cr.client_if, "--ip", f"{cr.client_ip}/24",
                           "--dst", cr.server_ip, "--port", str(PORT), "--ports", "2", "--port-step", "5",
                           "--conns", str(n), "--conc", "1000", "--seconds", "90", "--cpu", str(CLIENT_CPU)]
                          + (["--no-offload"] if cr.kind == "xdp" else []),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=_pre(cr.client_ns, {CLIENT_CPU}))
    try:
        line = lg.stdout.readline()
        if not line:
            raise RuntimeError(f"loadgen idle: {lg.stderr.read()[-600:]}")
        r = json.loads(line)
        # wait until the server saw them all (accept queue drained) and its stats file is fresh
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            st1 = {s["pid"]: s for s in cr.stats()}
            if sum(s["open"] for s in st1.values()) >= r["established"] * 0.999:
                break
        time.sleep(0.6)
        st1 = {s["pid"]: s for s in cr.stats()}
        slab1, sock1 = _meminfo("Slab"), _slab_bytes()
        c1 = cr.server_cpu()
    finally:
        with contextlib.suppress(OSError):
            lg.stdin.close()
        try:
            lg.wait(10)
        except subprocess.TimeoutExpired:
            lg.kill()
            lg.wait()
    opened = sum(s["open"] for s in st1.values()) - sum(s["open"] for s in st0.values())
    if opened < 0.9 * n:
        raise RuntimeError(f"the server holds {opened} of {n} connections (loadgen: {r}); "
                           f"server log: {cr.server_log()[-500:]}")
    k = max(1, opened)
    rss_per = (sum(s["rss_kb"] for s in st1.values()) - rss0) * 1024 / k
    slab_total_per = (slab1 - slab0) * 1024 / k
    slab_per = (sock1 - sock0) / k        # the socket caches only: the machine is shared
    native_per = None
    pool_delta = None
    if not cr.kernel:
        pool1 = [sum(s.get("pool", [0] * 4)[i] for s in st1.values()) for i in range(4)]
        pool_delta = [pool1[i] - pool0[i] for i in range(4)]
        native_per = (pool_delta[0] * sizes["sizeof_conn"] + pool_delta[1] * sizes["chunk_size"]) / k
    value = native_per if native_per is not None else slab_per
    return _cell(cr, "idle", "loadgen", round(value, 1), "B/conn", k, {"server_cpu_s": round(c1 - c0, 3)},
                 established=r["established"], server_open=opened, connect_rate=r["conns_per_sec"],
                 rss_bytes_per_conn=round(rss_per, 1), slab_bytes_per_conn=round(slab_per, 1),
                 slab_total_bytes_per_conn=round(slab_total_per, 1),
                 native_bytes_per_conn=None if native_per is None else round(native_per, 1),
                 pool_delta=pool_delta, requested=capped,
                 note=(f"capped at {n} connections by RLIMIT_NOFILE (hard limit "
                       f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}, not raisable here)" if capped else None))


def run_ceiling(p) -> dict:
    from .testbed import bench_rings
    return bench_rings(seconds=p["rings_s"], prefix=f"bcr{os.getpid() % 10000}")


# =============================================================================================
# the comparison
# =============================================================================================
def _params(quick: bool) -> dict:
    if quick:
        return dict(conc=256, short_s=2, warm_s=0.5, kconc=128, kshort_s=2, http_conc=32, http_s=2, ping_s=1,
                    bulk_bytes=64 << 20, idle_conns=5000, rings_s=0.3)
    return dict(conc=1024, short_s=5, warm_s=1, kconc=256, kshort_s=3, http_conc=64, http_s=4, ping_s=3,
                bulk_bytes=1 << 30, idle_conns=100000, rings_s=1.0)


class LoadgenMissing(RuntimeError):
    pass


def build_native():
    """Point LOADGEN/KCLIENT at runnable load generators. In a source tree (native/Makefile next
    to the package): `make -C native loadgen kclient` (rebuilt when a source changed). Installed:
    the binaries setup.py built into mtcp_loop/tools/_bin."""
    global LOADGEN, KCLIENT
    if os.path.exists(os.path.join(NATIVE, "Makefile")):
        r = subprocess.run(["make", "-s", "-C", NATIVE, "loadgen", "kclient"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"make -C native loadgen kclient failed: {r.stderr[-2000:]}")
        LOADGEN = os.path.join(NATIVE, "build", "bench", "loadgen")
        KCLIENT = os.path.join(NATIVE, "build", "bench", "kclient")
        return
    missing = [p for p in (LOADGEN, KCLIENT) if not os.access(p, os.X_OK)]
    if missing:
        raise LoadgenMissing(f"load generator(s) {', '.join(missing)} not installed (the package was built "
                             "without a C compiler?): reinstall with cc available, or run from a source tree")


def compare(workloads=WORKLOADS, quick=False, configs=None, progress=_log, repeat=1) -> dict:
    if os.geteuid() != 0:
        raise PermissionError("bench compare needs root (network namespaces, AF_PACKET/AF_XDP)")
    build_native()
    p = _params(quick)
    sizes = json.loads(subprocess.run([LOADGEN, "--mode", "sizes"], capture_output=True, text=True).stdout)
    wl = set(workloads)
    if configs is None:
        configs = [c for c in CONFIGS if c != "mtcp tap cores=2" or "scaling" in wl]
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": "mtcp-loop bench compare " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "compare"]
                                                            else sys.argv[1:]),
           "machine": machine(), "quick": quick, "params": p, "sizes": sizes, "workloads": sorted(wl),
           "pinning": {"server": f"CPU {SERVER_CPU} (cores=2: CPUs 0,1)", "client": f"CPU {CLIENT_CPU}"},
           "tuning": {}, "cells": [], "errors": [], "repeat": repeat}
    t_start = time.monotonic()
    runs = []
    for rep in range(repeat):
        # alternate the order so slow drifts of the shared machine hit every configuration alike
        order = configs if rep % 2 == 0 else list(reversed(configs))
        for ci, name in enumerate(order):
            progress(f"[run {rep + 1}/{repeat}, {ci + 1}/{len(order)}] {name}: fresh namespaces, server up")
            _run_config(res, name, wl, p, sizes, progress, rep)
    merge_repeats(res)
    if "ceiling" in wl:
        progress("ceiling: mtcp-loop bench rings (raw frame rates)")
        try:
            res["rings"] = run_ceiling(p)
        except Exception as exc:
            res["errors"].append({"config": "rings", "step": "bench rings", "error": str(exc)})
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    derive(res)
    return res


def merge_repeats(res: dict):
    """Several runs: one cell per (workload, config) with the median of each figure and the
    per-run values under "runs"."""
    import statistics
    groups = {}
    for c in res["cells"]:
        groups.setdefault((c["workload"], c["config"]), []).append(c)
    if all(len(v) == 1 for v in groups.values()):
        return
    out = []
    for (wl, cfg), cs in groups.items():
        m = dict(cs[len(cs) // 2])
        for k in ("value", "server_cpu_s", "server_cpu_us_per_op", "p50_us", "p99_us", "p999_us",
                  "rss_bytes_per_conn", "slab_bytes_per_conn", "native_bytes_per_conn", "slab_total_bytes_per_conn"):
            vals = [c[k] for c in cs if c.get(k) is not None]
            if vals:
                m[k] = round(statistics.median(vals), 2)
        m["runs"] = [c["value"] for c in cs]
        m["runs_cpu_us_per_op"] = [c.get("server_cpu_us_per_op") for c in cs]
        out.append(m)
    res["cells"] = out


def _run_config(res, name, wl, p, sizes, progress, rep):
    try:
        with ConfigRun(name, f"bc{os.getpid() % 10000}") as cr:
            if cr.kernel:
                res["tuning"] = cr.tuning
            steps = []
            need_short = "short" in wl or ("scaling" in wl and cr.backend == "tap")
            need_http = "http" in wl or ("scaling" in wl and cr.backend == "tap")
            if need_short and cr.cores == 1:
                steps.append(("short (kclient cross-check)", lambda: run_short_kclient(cr, p)))
            if need_http:
                steps.append(("aiohttp keep-alive (wrk)", lambda: _wrk(cr, p, False)))
                if cr.cores == 1:
                    steps.append(("aiohttp Connection: close (wrk)", lambda: _wrk(cr, p, True)))
            if "latency" in wl and cr.cores == 1:
                steps.append(("latency 64 B ping-pong", lambda: run_latency(cr, p)))
            if "bulk" in wl and cr.cores == 1:
                steps.append(("bulk up", lambda: run_bulk(cr, p, True)))
                steps.append(("bulk down", lambda: run_bulk(cr, p, False)))
            lsteps = []
            if need_short:
                lsteps.append(("short 64 B (loadgen)", lambda: run_short_loadgen(cr, p)))
            if "idle" in wl and cr.cores == 1:
                lsteps.append((f"idle {p['idle_conns']} conns", lambda: run_idle(cr, p, sizes)))
            for phase, todo in (("kernel clients", steps), ("loadgen", lsteps)):
                if not todo:
                    continue
                (cr.kernel_client_phase if phase == "kernel clients" else cr.loadgen_phase)()
                for label, fn in todo:
                    try:
                        c = fn()
                        c["rep"] = rep
                        res["cells"].append(c)
                        progress(f"    {label:34s} {_fmt_value(c):>16s}  server CPU "
                                 f"{_fmt_cpu(c)}  cpu0 {_fmt_split(c, 'cpu0')} cpu1 {_fmt_split(c, 'cpu1')}")
                    except Exception as exc:  # report and go on with the next cell
                        res["errors"].append({"config": name, "step": label, "error": str(exc)[-1500:]})
                        progress(f"    {label:34s} ERROR {str(exc)[-300:]}")
                    if cr.proc.poll() is not None:
                        raise RuntimeError(f"server died: {cr.server_log()}")
    except Exception as exc:
        res["errors"].append({"config": name, "step": "setup", "error": str(exc)[-1500:]})
        progress(f"    {name}: ERROR {str(exc)[-400:]}")


def _find(res, workload, config):
    for c in res["cells"]:
        if c["workload"] == workload and c["config"] == config:
            return c
    return None


def derive(res: dict):
    """Ratios to uvloop+kernel, target verdicts, scaling and ceiling rows."""
    for c in res["cells"]:
        base = _find(res, c["workload"], BASELINE)
        if base and base["value"]:
            c["ratio_to_uvloop"] = round(c["value"] / base["value"], 3)
            if base.get("server_cpu_us_per_op") and c.get("server_cpu_us_per_op"):
                c["cpu_per_op_ratio_to_uvloop"] = round(c["server_cpu_us_per_op"] / base["server_cpu_us_per_op"], 3)
        t = TARGETS.get(c["workload"])
        if t and c["loop"] == "mtcp":
            desc, thr, kind = t
            c["target"] = desc
            if kind == "ratio" and "ratio_to_uvloop" in c:
                c["target_met"] = c["ratio_to_uvloop"] >= thr
            elif kind == "inv_ratio" and "ratio_to_uvloop" in c:
                c["target_met"] = c["ratio_to_uvloop"] <= thr
            elif kind == "max_value":
                c["target_met"] = c["value"] <= thr
    scal = []
    for wl in ("short", "http_keepalive"):
        a, b = _find(res, wl, "mtcp tap"), _find(res, wl, "mtcp tap cores=2")
        if a and b and a["value"]:
            r = round(b["value"] / a["value"], 3)
            scal.append({"workload": "scaling", "driver": wl, "config": "mtcp tap cores=2 / cores=1", "loop": "mtcp",
                         "backend": "tap", "cores": 2, "value": r, "unit": "x", "target": TARGETS["scaling"][0],
                         "target_met": r >= TARGETS["scaling"][1], "server_cpu_us_per_op": None,
                         "cores1": a["value"], "cores2": b["value"]})
    res["cells"] += scal
    rings = res.get("rings")
    if rings:
        res["ceiling"] = {}
        for k in ("tap", "packet", "xdp"):
            rr = rings.get(k, {})
            c = _find(res, "short", f"mtcp {k}")
            if "tx" in rr and "rx" in rr and c:
                fpc = c["frames_per_conn"]
                # server RX = frames the client sends, server TX = frames it receives
                lim = min(rr["rx"] / max(fpc["to_server"], 1e-9), rr["tx"] / max(fpc["from_server"], 1e-9))
                res["ceiling"][k] = {"rx_fps": rr["rx"], "tx_fps": rr["tx"], "frames_per_conn": fpc,
                                     "conn_per_s_ceiling": round(lim), "measured_conn_per_s": c["value"],
                                     "share_of_ceiling": round(c["value"] / lim, 3) if lim else None}


def _fmt_value(c) -> str:
    v = c["value"]
    if c["unit"] in ("conn/s", "req/s"):
        return f"{v:,.0f} {c['unit']}"
    if c["unit"] == "p99 us":
        return f"p99 {v:,.0f} us"
    if c["unit"] == "B/conn":
        return f"{v:,.0f} B/conn"
    return f"{v:.2f} {c['unit']}"


def _fmt_cpu(c) -> str:
    u = c.get("server_cpu_us_per_op")
    if u is None:
        return "-"
    return f"{u:.1f} us/{c.get('ops_unit', 'op')}"


def _fmt_split(c, cpu) -> str:
    s = (c.get("cpu_split") or {}).get(cpu)
    if not s:
        return "-"
    return f"u{s['user']:.0f}/s{s['sys']:.0f}/si{s['softirq']:.0f}"


def _serve_argv(**kw) -> list:
    """The server process of one configuration (mtcp_loop/tools/bench_server.py)."""
    opts = dict(port=PORT, cpus=str(SERVER_CPU), cores=1, backend=None, ifname=None, ipv4=None,
                max_conns=140000)
    opts.update(kw)
    return [sys.executable, "-m", "mtcp_loop.tools.bench_server", json.dumps(opts)]
