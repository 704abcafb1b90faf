"""Operating a running stack: `mtcp-loop ss / top / capture`, the Prometheus endpoint
(`mtcp-loop run --metrics`, MTCPConfig(metrics=)), loop.connections(), control sockets of
in-process loops (MTCPConfig(control=)).

The commands are driven against a real `mtcp-loop run` (loopback backend without root; TAP and
AF_PACKET inside the testbed's namespaces as root): the test makes a worker open a connection on
its own stack (tests/ops/_ops_app.py) and checks what ss, capture and the metrics endpoint report.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import HAVE_UVLOOP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.dirname(os.path.abspath(__file__))
ECHO_PORT = 7001

import prometheus_client  # noqa: F401  (test extra: the metrics tests must not be skipped)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra=None):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), PYTHONUNBUFFERED="1")
    e.update(extra or {})
    return e


def cli(*argv, timeout=60, check=True):
    r = subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", *argv], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r


class Run:
    """`mtcp-loop run _ops_app:main` (loopback: 2 workers, no kernel mirror; the echo server
    and the connections the test asks for live on each worker's own stack)."""

    def __init__(self, tmp_path, cores=2, metrics=None, extra_args=(), env=None, preexec_fn=None):
        self.rundir = str(tmp_path / "run")
        self.cmd = str(tmp_path / "cmd")
        self.cores = cores
        argv = [sys.executable, "-m", "mtcp_loop.tools.cli", "run", "_ops_app:main", "--cores", str(cores),
                "--rundir", self.rundir, "--drain-timeout", "1", *extra_args]
        if metrics:
            argv += ["--metrics", metrics]
        self.log = open(tmp_path / "run.log", "w+")
        e = _env({"MTCP_TEST_PORT": str(ECHO_PORT), "MTCP_TEST_CMD": self.cmd, "MTCP_KERNEL_MIRROR": "0"})
        e.update(env or {})
        self.p = subprocess.Popen(argv, cwd=ROOT, env=e, stdout=self.log, stderr=subprocess.STDOUT,
                                  preexec_fn=preexec_fn)
        deadline = time.monotonic() + 30
        while not all(os.path.exists(f"{self.cmd}-{q}.sock") for q in range(cores)):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self.log.seek(0)
                pytest.fail(f"mtcp-loop run did not start: {self.log.read()}")
            time.sleep(0.05)

    def ask(self, q, line, timeout=30):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(f"{self.cmd}-{q}.sock")
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()

    def ss(self, *args):
        return json.loads(cli("ss", "--rundir", self.rundir, "--json", *args).stdout)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path, metrics=f"127.0.0.1:{_free_port()}")
    try:
        yield r
    finally:
        r.stop()


def _mine(recs, port):
    """The two ends of the test's connection (client port `port` <-> echo server)."""
    cli_side = [r for r in recs if r["local"][1] == port and r["peer"][1] == ECHO_PORT]
    srv_side = [r for r in recs if r["local"][1] == ECHO_PORT and r["peer"][1] == port]
    return cli_side, srv_side


# ---- ss ------------------------------------------------------------------------------------
def test_ss_connection_appears_and_goes(run):
    port = int(run.ask(1, "open"))
    recs = run.ss()
    c, s = _mine(recs, port)
    assert len(c) == 1 and len(s) == 1, recs
    assert c[0]["state"] == s[0]["state"] == "ESTAB"
    assert c[0]["worker"] == s[0]["worker"] == "1"               # opened on worker 1's stack
    assert c[0]["local"] == ["127.0.0.1", port] and c[0]["peer"] == ["127.0.0.1", ECHO_PORT]
    assert c[0]["bytes_acked"] == 5 and c[0]["bytes_received"] == 5    # "ping\n" each way
    assert c[0]["srtt_us"] > 0 and c[0]["cwnd"] > 0 and c[0]["cc"] == "cubic"
    assert c[0]["sack"] and c[0]["ts"] and c[0]["wscale"] is not None
    assert c[0]["age_ms"] >= 0 and c[0]["avg_delivery_bps"] > 0
    assert not any(r["listener"] for r in recs)                  # ss default: no listeners
    # filters: state, ports, listeners
    assert _mine(run.ss("--sport", str(port)), port)[0] and not _mine(run.ss("--sport", str(port)), port)[1]
    assert not _mine(run.ss("-t", "time-wait"), port)[0]
    lis = run.ss("-l")
    assert {(r["worker"], r["local"][1], r["state"]) for r in lis} == {("0", ECHO_PORT, "LISTEN"),
                                                                        ("1", ECHO_PORT, "LISTEN")}
    assert all(r["backlog"] > 0 and r["accept_queue"] == 0 and r["syn_queue"] == 0 for r in lis)
    # text output with -i
    out = cli("ss", "--rundir", run.rundir, "-i", "--sport", str(port)).stdout
    assert f"127.0.0.1:{port}" in out and "ESTAB" in out and "cwnd:" in out and "rtt:" in out
    # close (this side first): gone from the default view, the closer's end in TIME-WAIT
    assert run.ask(1, f"close {port}") == "ok"
    deadline = time.monotonic() + 10
    while any(_mine(run.ss(), port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _mine(run.ss(), port) == ([], [])
    tw = _mine(run.ss("-t", "time-wait"), port)
    assert [r["state"] for r in tw[0]] == ["TIME-WAIT"] and tw[0][0]["orphan"] and tw[1] == []


def test_ss_errors(run, tmp_path):
    r = cli("ss", "--rundir", run.rundir, "-t", "nonsense", check=False)
    assert r.returncode == 2 and "unknown state" in r.stderr
    r = cli("ss", "--rundir", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 1 and "no running instance" in r.stderr


# ---- capture -------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (tools/test.sh installs it)")
def test_capture_has_the_syn(run, tmp_path):
    pcap = str(tmp_path / "cap.pcap")
    started = str(tmp_path / "started")
    p = subprocess.Popen([sys.executable, "-m", "mtcp_loop.tools.cli", "capture", "--rundir", run.rundir, "--worker", "0",
                          "-w", pcap, "-G", "20", "-c", "200", "--started-file", started, "port", str(ECHO_PORT)],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(started):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    port = int(run.ask(0, "open"))
    run.ask(0, "load 3")
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)                  # stop early, as an operator would with Ctrl-C
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "frames" in out
    r = subprocess.run(["tshark", "-r", pcap, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
                        "-e", "tcp.flags.syn", "-e", "tcp.flags.ack"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines() if line.strip()]
    assert rows
    assert (str(port), str(ECHO_PORT), "1", "0") in {tuple(x) for x in rows}, rows     # the test's SYN
    assert all(str(ECHO_PORT) in x[:2] for x in rows)                              # the port filter


def test_capture_bounds_and_errors(run, tmp_path):
    pcap = str(tmp_path / "c.pcap")
    p = subprocess.Popen([sys.executable, "-m", "mtcp_loop.tools.cli", "capture", "--rundir", run.rundir, "--worker", "1",
                          "-w", pcap, "-c", "4", "-G", "20"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(pcap) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    run.ask(1, "load 3")                          # > 4 frames: the count bound ends the capture
    out, err = p.communicate(timeout=25)
    assert p.returncode == 0, err
    assert "worker 1: 4 frames" in out
    with open(pcap, "rb") as f:
        data = f.read()
    assert data[:4] == bytes.fromhex("d4c3b2a1") and len(data) > 24
    # a capture whose client went away keeps its worker busy until `capture --stop`
    started = str(tmp_path / "started")
    p = subprocess.Popen([sys.executable, "-m", "mtcp_loop.tools.cli", "capture", "--rundir", run.rundir, "--worker", "0",
                          "-w", pcap, "--started-file", started], cwd=ROOT, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(started):
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    p.kill()
    p.wait()
    r = cli("capture", "--rundir", run.rundir, "--worker", "0", "-w", pcap, check=False)
    assert r.returncode == 1 and "already runs" in r.stderr
    r = cli("capture", "--rundir", run.rundir, "--worker", "0", "--stop")
    assert "worker 0: stopped" in r.stdout
    r = cli("capture", "--rundir", run.rundir, "--worker", "0", "--stop", check=False)
    assert r.returncode == 1 and "no live capture" in r.stderr
    r = cli("capture", "--rundir", run.rundir, "--worker", "0", "-w", pcap, "bogus", check=False)
    assert r.returncode == 2 and "unsupported" in r.stderr
    r = cli("capture", "--rundir", run.rundir, "--worker", "7", "-w", pcap, check=False)
    assert r.returncode == 1 and "no worker 7" in r.stderr


def test_capture_every_worker(run, tmp_path):
    """Without --worker each worker captures into its own file (FILE.wN.pcap) until -G."""
    out = str(tmp_path / "all.pcap")
    p = subprocess.Popen([sys.executable, "-m", "mtcp_loop.tools.cli", "capture", "--rundir", run.rundir, "-w", out, "-G", "2"],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    run.ask(0, "load 2")
    run.ask(1, "load 3")
    o, e = p.communicate(timeout=30)
    assert p.returncode == 0, e
    for q, n in (("0", 2), ("1", 3)):
        path = str(tmp_path / f"all.w{q}.pcap")
        assert f"worker {q}: " in o and path in o
        with open(path, "rb") as f:
            data = f.read()
        assert data[:4] == bytes.fromhex("d4c3b2a1")
        frames, off = 0, 24
        while off + 16 <= len(data):
            incl = int.from_bytes(data[off + 8:off + 12], "little")
            off += 16 + incl
            frames += 1
        assert off == len(data) and frames >= n * 7      # SYN, SYN-ACK, ACK, data, echo, FINs...


# ---- top -----------------------------------------------------------------------------------
def test_top_plain_lines(run):
    run.ask(0, "load 5")
    r = cli("top", "--rundir", run.rundir, "-n", "2", "--interval", "0.3")   # stdout is a pipe: plain
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 4, r.stdout
    for q in ("0", "1"):
        mine = [x for x in lines if f" worker={q} " in x]
        assert len(mine) == 2 and "conns_pool=" in mine[0] and "cpu_%=" in mine[0]
    assert "active=0" in lines[0] or "active=" in lines[0]


# ---- metrics -------------------------------------------------------------------------------
def _scrape(url):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_scrape_grows_with_load(run):
    url = "http://" + run.p.args[run.p.args.index("--metrics") + 1] + "/metrics"
    a = _scrape(url)
    w0 = (("worker", "0"),)
    assert a[("mtcp_worker_up", w0)] == 1.0 and a[("mtcp_worker_up", (("worker", "1"),))] == 1.0
    assert ("mtcp_segments_received_total", w0) in a
    assert a[("mtcp_connections", (("state", "listen"), ("worker", "0")))] == 1.0
    run.ask(0, "load 30")
    tw = (("state", "time_wait"), ("worker", "0"))
    inf = ("mtcp_connection_duration_seconds_bucket", (("le", "+Inf"), ("worker", "0")))
    deadline = time.monotonic() + 10
    while True:                                   # the last close finishes after `load` answered
        b = _scrape(url)
        if (b[("mtcp_connections", tw)] >= 30 and b[inf] - a.get(inf, 0) >= 30) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert b[("mtcp_segments_received_total", w0)] >= a[("mtcp_segments_received_total", w0)] + 30 * 4
    assert b[("mtcp_connections_accepted_total", w0)] - a[("mtcp_connections_accepted_total", w0)] == 30
    assert b[("mtcp_connections", tw)] >= 30
    assert b[inf] - a.get(inf, 0) >= 30          # the server ends were released (the closers wait)
    assert b[("mtcp_connection_duration_seconds_count", w0)] == b[inf]
    assert b[("mtcp_drops_total", (("reason", "bad_csum"), ("worker", "0")))] == 0


# ---- in-process loops: loop.connections(), control=, metrics= --------------------------------
BASES = ["asyncio"] + (["uvloop"] if HAVE_UVLOOP else [])


async def _pair():
    async def echo(r, w):
        w.write(await r.readline())
        await w.drain()
        await r.read()
        w.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"hi\n")
    assert await r.readline() == b"hi\n"
    return srv, port, r, w


@pytest.mark.parametrize("base", BASES)
def test_loop_connections(base):
    import mtcp_loop
    loop = mtcp_loop.new_event_loop(mtcp_loop.MTCPConfig(base=base, kernel_mirror=False))

    async def main():
        srv, port, r, w = await _pair()
        lport = w.get_extra_info("sockname")[1]
        recs = loop.connections()
        mine = {(x["local"][1], x["peer"][1], x["state"]) for x in recs}
        assert {(lport, port, "ESTAB"), (port, lport, "ESTAB"), (port, 0, "LISTEN")} <= mine, recs
        assert [x["state"] for x in loop.connections(state="listening")] == ["LISTEN"]
        assert loop.connections(state="established", sport=lport)[0]["bytes_acked"] == 3
        with pytest.raises(ValueError):
            loop.connections(state="bogus")
        w.close()
        await w.wait_closed()
        for _ in range(100):
            if not loop.connections(state="established", sport=lport):
                break
            await asyncio.sleep(0.01)
        assert loop.connections(state="established", sport=lport) == []
        srv.close()
        await srv.wait_closed()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_inprocess_control_and_metrics(tmp_path, monkeypatch):
    """A program that opted in: `mtcp-loop ss --name` sees its loop; its metrics endpoint
    answers (scraped from another thread while the loop runs)."""
    import mtcp_loop
    monkeypatch.setenv("MTCP_RUNDIR", str(tmp_path))
    mport = _free_port()
    name = f"t{os.getpid()}"
    loop = mtcp_loop.new_event_loop(mtcp_loop.MTCPConfig(kernel_mirror=False, control=name,
                                                         metrics=f"127.0.0.1:{mport}"))

    async def main():
        srv, port, r, w = await _pair()
        lport = w.get_extra_info("sockname")[1]
        env = dict(os.environ, MTCP_RUNDIR=str(tmp_path), PYTHONPATH=ROOT)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "mtcp_loop.tools.cli", "ss", "--name", name,
                                                    "--json", env=env, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        recs = json.loads(out)
        assert any(x["local"][1] == lport and x["state"] == "ESTAB" for x in recs), recs
        assert recs[0]["worker"].startswith(f"{os.getpid()}/")
        m = await loop.run_in_executor(None, _scrape, f"http://127.0.0.1:{mport}/metrics")
        est = [v for (n, lab), v in m.items() if n == "mtcp_connections" and ("state", "estab") in lab]
        assert est == [2.0]
        w.close()
        srv.close()
        await srv.wait_closed()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert not list(tmp_path.glob(f"{name}/loop-*.sock"))        # removed at close
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2)


def test_metrics_port_in_use():
    from mtcp_loop import metrics
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"metrics endpoint '127.0.0.1:{port}'"):
            metrics.serve_supervisor("/nonexistent", f"127.0.0.1:{port}")


def test_config_validation():
    from mtcp_loop import MTCPConfig
    with pytest.raises(ValueError, match="metrics"):
        MTCPConfig(metrics="127.0.0.1:notaport")
    with pytest.raises(TypeError, match="metrics"):
        MTCPConfig(metrics=9100)
    with pytest.raises(ValueError, match="control"):
        MTCPConfig(control="a/b")
    assert MTCPConfig(metrics=":9100").metrics == ":9100"


# ---- real rings (root, inside the testbed's namespaces) ---------------------------------------
REQUIRE = os.environ.get("MTCP_REQUIRE_NETNS") == "1"


def _netns_why():
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 not installed"
    return None


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["tap", "packet"])
def test_ss_capture_metrics_on_rings(kind, tmp_path):
    why = _netns_why()
    if why:
        pytest.fail(f"MTCP_REQUIRE_NETNS=1 but {why}") if REQUIRE else pytest.skip(why)
    from mtcp_loop.tools.testbed import Testbed
    tb = Testbed(prefix=f"mto{os.getpid() % 100000}", nqueues=1)
    info = tb.up(kind)
    PEER, STACK = info["peer_v4"], info["stack_v4"]
    try:
        ns = info["stack_ns"]
        from pyroute2 import NetNS
        with NetNS(ns) as n:                      # the endpoint listens on this namespace's lo
            n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
        mport = _free_port()
        run = Run(tmp_path, cores=1, extra_args=["--backend", kind, "--ifname", info["stack_if"], "--ipv4",
                                                  f"{STACK}/{info['v4_prefix']}"],
                  metrics=f"127.0.0.1:{mport}", env={"MTCP_TEST_HOST": "0.0.0.0"}, preexec_fn=tb._preexec(ns))
        try:
            pcap = str(tmp_path / "ring.pcap")
            started = str(tmp_path / "started")
            cap = subprocess.Popen([sys.executable, "-m", "mtcp_loop.tools.cli", "capture", "--rundir", run.rundir,
                                    "-w", pcap, "-G", "20", "--started-file", started, "host", PEER, "and",
                                    "port", str(ECHO_PORT)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 20
            while not os.path.exists(started):
                assert cap.poll() is None and time.monotonic() < deadline, cap.communicate()
                time.sleep(0.05)
            with tb.netns(tb.peer_ns):
                s = socket.create_connection((STACK, ECHO_PORT), timeout=5)
            s.sendall(b"x\n")
            assert s.recv(10) == b"x\n"
            cport = s.getsockname()[1]
            recs = run.ss()
            mine = [r for r in recs if r["peer"] == [PEER, cport]]
            assert len(mine) == 1 and mine[0]["state"] == "ESTAB" and mine[0]["local"] == [STACK, ECHO_PORT]
            with tb.netns(ns):                    # the endpoint is on the stack namespace's kernel stack
                m = _scrape(f"http://127.0.0.1:{mport}/metrics")
            assert m[("mtcp_connections", (("state", "estab"), ("worker", "0")))] == 1.0
            r = cli("top", "--rundir", run.rundir, "-n", "1", "--interval", "0.3")
            assert " worker=0 " in r.stdout and "active=1 " in r.stdout, r.stdout
            s.close()
            deadline = time.monotonic() + 10
            while [r for r in run.ss() if r["peer"] == [PEER, cport]] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert [r for r in run.ss() if r["peer"] == [PEER, cport]] == []
            cap.send_signal(signal.SIGINT)
            out, err = cap.communicate(timeout=20)
            assert cap.returncode == 0, err
            if shutil.which("tshark"):
                r = subprocess.run(["tshark", "-r", pcap, "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport",
                                    "-e", "tcp.flags.syn", "-e", "tcp.flags.ack"], capture_output=True, text=True,
                                   timeout=60)
                rows = {tuple(x.split("\t")) for x in r.stdout.splitlines()}
                assert (PEER, str(cport), "1", "0") in rows, r.stdout
        finally:
            run.stop()
    finally:
        tb.down()
