"""MTCPPolicy(cores=N): the unchanged program forks one worker per core (mtcp_loop/workers.py,
program_loop), supervised by the same Supervisor as `mtcp-loop run`.

Root + netns (TAP testbed with a unique prefix, torn down even on failure; skips without root,
FAILS with MTCP_REQUIRE_NETNS=1):
* examples/aiohttp_hello.py as it is (MTCPPolicy(cores="auto") + web.run_app) under wrk from the
  kernel side: both workers serve, 0 misdirected frames; SIGKILL a worker -> replaced (< 1 s, same
  CPU and queue) and serving; SIGTERM -> exits 0.
* tests/workers/_policy_app.py (asyncio.run(main()) with asyncio.start_server): kernel clients in and the
  workers' own active opens out, both workers, 0 misdirected; kill/restart; SIGTERM drains (stops
  accepting, open connections finish, exit 0).
No root: the embedded loopback with cores=2 (own stack per worker, kernel mirror listeners with
SO_REUSEPORT), the no-fork rules (pytest, threads, other threads running, cores=1), argument errors.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.workers.test_workers import (PEER, STACK, REQUIRE, _KERNEL_CLIENTS, _KERNEL_SERVER, _connect_many, _echo, _owner,
                          _why, needs_netns)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.dirname(os.path.abspath(__file__))
NCPU = len(os.sched_getaffinity(0))

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def tb():
    if _why is not None:
        pytest.fail(f"MTCP_REQUIRE_NETNS=1 but {_why}") if REQUIRE else pytest.skip(_why)
    from mtcp_loop.tools.testbed import Testbed
    t = Testbed(prefix=f"mtpc{os.getpid() % 100000}", nqueues=2)
    t.up("tap")
    try:
        yield t
    finally:
        t.down()


class Program:
    """An unchanged program (argv) with the policy line, run in the TAP's namespace with the
    stack configured by MTCP_* variables; its supervisor's rundir under tmp_path."""

    def __init__(self, tb, argv, tmp_path, cores=2, env=None):
        self.base = str(tmp_path / "rundir")
        self.rundir = os.path.join(self.base, "default")
        self.cores = cores
        st = tb.status() or {}
        e = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), PYTHONUNBUFFERED="1",
                 MTCP_BACKEND="tap", MTCP_IFNAME=st.get("stack_if", "mtcptap0"), MTCP_IPV4=f"{STACK}/24",
                 MTCP_IPV6="2001:db8::2/64", MTCP_RUNDIR=self.base, MTCP_MSL_US="1000000")
        e.pop("MTCP_NQUEUES", None)
        e.update(env or {})
        self.out = open(tmp_path / f"program-{len(os.listdir(tmp_path))}.log", "w+")
        self.p = subprocess.Popen(argv, cwd=ROOT, env=e, stdout=self.out, stderr=subprocess.STDOUT,
                                  preexec_fn=tb._preexec(st.get("stack_ns", tb.peer_ns)))
        self.wait_ready()

    def log(self):
        self.out.flush()
        self.out.seek(0)
        return self.out.read()[-6000:]

    def state(self):
        try:
            with open(os.path.join(self.rundir, "supervisor.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def stats(self):
        from mtcp_loop import workers
        return workers.stats(self.rundir)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"program exited {self.p.returncode}: {self.log()}")
            if self.state() and all(os.path.exists(os.path.join(self.rundir, f"worker-{q}.sock"))
                                    for q in range(self.cores)):
                try:
                    if all("error" not in w for w in self.stats()["workers"].values()):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"workers not ready: {self.log()}")

    def kill_worker(self, tb, q="0"):
        """SIGKILL worker q; returns (seconds until its replacement answers on its control socket,
        seconds until it serves kernel clients of its queue)."""
        from mtcp_loop import workers
        old = self.state()["workers"][q]["pid"]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while time.monotonic() - t0 < 5:
            st = self.state()
            new = st and st["workers"][q]["pid"]
            if new not in (None, old):
                try:
                    if workers._query(os.path.join(self.rundir, f"worker-{q}.sock"))["pid"] == new:
                        return time.monotonic() - t0, self.serving(tb, q, t0)
                except OSError:
                    pass
            time.sleep(0.01)
        raise AssertionError(f"worker {q} not replaced: {self.log()}")

    def serving(self, tb, queue, t0, timeout=5.0):
        """Seconds from t0 until a kernel client whose flow steers to `queue` is served (the
        replacement's program listens again), connecting from source ports that map to it."""
        from mtcp_loop import workers
        ports = [p for p in range(50000, 60000) if _owner(p) == int(queue)]
        for sport in ports:
            if time.monotonic() - t0 > timeout:
                break
            try:
                with tb.netns(tb.peer_ns):
                    s = socket.socket()
                    s.bind((PEER, sport))
                s.settimeout(2)
                s.connect((STACK, 8080))
                s.close()
                took = time.monotonic() - t0
                w = workers._query(os.path.join(self.rundir, f"worker-{queue}.sock"))
                assert w["accepted"] >= 1, w
                return took
            except OSError:
                s.close()
                time.sleep(0.02)
        raise AssertionError(f"worker {queue} not serving {timeout}s after the kill: {self.log()}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()


@pytest.fixture
def program(tb, tmp_path):
    progs = []

    def make(*a, **kw):
        p = Program(tb, *a, tmp_path=tmp_path, **kw)
        progs.append(p)
        return p
    yield make
    for p in progs:
        p.stop()


def _wrk(tb, seconds=2, conns=32):
    if not shutil.which("wrk"):
        pytest.fail("wrk not installed (tools/test.sh installs it)")
    r = tb.peer_run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", f"http://{STACK}:8080/"], timeout=seconds + 30)
    m = re.search(r"(\d+) requests in ([\d.]+)s", r.stdout)
    assert m and r.returncode == 0, r.stdout + r.stderr
    assert "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout, r.stdout
    return int(m.group(1))


def _assert_both_serve(st, before=None):
    for q, w in st["workers"].items():
        assert "error" not in w, w
        assert w["misdirected"] == 0 and w["steer"]["misdirected"] == 0, w
        b = (before or {}).get(q, 0)
        assert w["accepted"] > b and w["segs_in"] > 0 and w["segs_out"] > 0, (q, w)


@needs_netns
@pytest.mark.skipif(NCPU < 2, reason="cores='auto' needs 2 CPUs in the affinity mask to fork 2 workers")
def test_aiohttp_example_policy_auto(tb, program):
    """examples/aiohttp_hello.py unchanged: MTCPPolicy(cores="auto") + web.run_app."""
    app = program([sys.executable, os.path.join(ROOT, "examples", "aiohttp_hello.py"), "--host", "0.0.0.0",
                   "--port", "8080"], cores=NCPU)
    st = app.state()
    assert st["cores"] == NCPU and st["pid"] == app.p.pid          # the program's own process supervises
    reqs = _wrk(tb)
    s1 = app.stats()
    print(f"\nwrk: {reqs} requests; per worker accepted "
          f"{ {q: w['accepted'] for q, w in s1['workers'].items()} }, misdirected {s1['total']['misdirected']}")
    assert reqs > 0
    _assert_both_serve(s1)
    cpus = {w["cpu"] for w in s1["workers"].values()}
    assert len(cpus) == NCPU                                       # one worker per core
    old1 = s1["workers"]["1"]["pid"]
    took, serving = app.kill_worker(tb, "0")
    print(f"worker 0 killed -> replacement answering after {took:.3f}s, serving its queue after {serving:.3f}s")
    assert took < 1.0 and serving < 1.0, app.log()
    s2 = app.stats()
    assert s2["workers"]["0"]["cpu"] == s1["workers"]["0"]["cpu"] and s2["workers"]["0"]["queue"] == 0
    assert s2["workers"]["1"]["pid"] == old1 and s2["supervisor"]["workers"]["0"]["restarts"] == 1
    assert _wrk(tb) > 0                                            # the replacement serves too
    r = subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", "stats", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT, MTCP_RUNDIR=app.base))
    assert r.returncode == 0, r.stderr                             # `mtcp-loop stats` finds it with no argument
    cli = json.loads(r.stdout)
    assert set(cli["workers"]) == {str(q) for q in range(NCPU)} and cli["total"]["misdirected"] == 0
    s3 = app.stats()
    assert s3["workers"]["0"]["accepted"] > 0 and s3["workers"]["1"]["accepted"] > s2["workers"]["1"]["accepted"]
    _assert_both_serve(s3)
    app.p.send_signal(signal.SIGTERM)                              # aiohttp's own graceful exit in each worker
    assert app.p.wait(20) == 0, app.log()
    with tb.netns(tb.peer_ns):
        with pytest.raises(OSError):
            socket.create_connection((STACK, 8080), timeout=2)
    assert app.log().count("Running on") == NCPU + 1                # the workers + the replacement, not the supervisor


@needs_netns
@pytest.mark.parametrize("base", ["uvloop", "asyncio"])
def test_asyncio_run_start_server_policy(tb, program, base):
    """asyncio.run(main()) with asyncio.start_server, MTCPPolicy(cores=2): flow affinity both
    ways (kernel clients in, the workers' own connections out), restart, drain; both loop bases."""
    pytest.importorskip(base)
    n_in = 2000
    ks = tb.peer_popen([sys.executable, "-c", _KERNEL_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert ks.stdout.readline().strip() == "READY"
        app = program([sys.executable, os.path.join(TESTS, "_policy_app.py")],
                      env={"MTCP_TEST_OUT": f"{PEER}:9000:{n_in // 2}:50", "MTCP_BASE": base})
        r = tb.peer_run([sys.executable, "-c", _KERNEL_CLIENTS, str(n_in), "100"], timeout=120)
        assert r.stdout.split() == [str(n_in), "0"], r.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and app.log().count("OUT-DONE") < 2:
            time.sleep(0.2)
        log = app.log()
        assert log.count(f"base={base}") == 2, log
        assert log.count("PRE-FORK") == 1 and log.count("SERVING") == 2, log      # module code ran once, main() per worker
        done = [ln for ln in log.splitlines() if ln.startswith("OUT-DONE")]
        assert len(done) == 2 and all(f"ok={n_in // 2} failed=0" in ln for ln in done), log
        st = app.stats()
        for q, w in st["workers"].items():
            print(f"\nworker {q}: accepted={w['accepted']} active_opens={w['active_opens']} "
                  f"misdirected={w['misdirected']} ports_skipped={w['steer']['ports_skipped']}")
            assert w["misdirected"] == 0, w
            assert w["accepted"] > n_in * 0.2 and w["active_opens"] == n_in // 2, w
        assert st["total"]["accepted"] == n_in
        # kill worker 0: replaced on its CPU and queue; worker 1's connections untouched
        socks = _connect_many(tb, 50)
        owners = {s: _owner(s.getsockname()[1]) for s in socks}
        took, serving = app.kill_worker(tb, "0")
        print(f"worker 0 killed -> replacement answering after {took:.3f}s, serving its queue after {serving:.3f}s")
        assert took < 1.0 and serving < 1.0
        for s, q in owners.items():
            if q == 1:
                assert _echo(s, b"still here\n")
        for s in socks:
            s.close()
        more = _connect_many(tb, 40)
        st2 = app.stats()
        assert st2["workers"]["0"]["accepted"] > 0 and st2["workers"]["0"]["cpu"] == st["workers"]["0"]["cpu"]
        assert st2["workers"]["1"]["accepted"] > st["workers"]["1"]["accepted"]
        assert st2["total"]["misdirected"] == 0
        for s in more:
            s.close()
        # drain: SIGTERM to the supervisor -> listeners close at once, open connections finish, exit 0
        held = _connect_many(tb, 20)
        t0 = time.monotonic()
        app.p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert app.p.poll() is None, app.log()
        with tb.netns(tb.peer_ns):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((STACK, 8080), timeout=3)
        for s in held:
            assert _echo(s, b"draining\n")
            s.close()
        assert app.p.wait(15) == 0, app.log()
        assert time.monotonic() - t0 < 8.0
        assert "AFTER-RUN" not in app.log()          # the workers left through SystemExit(0) after draining
    finally:
        ks.kill()
        ks.wait()


@pytest.fixture(params=["packet", "xdp"])
def tb_veth(request):
    if _why is not None:
        pytest.fail(f"MTCP_REQUIRE_NETNS=1 but {_why}") if REQUIRE else pytest.skip(_why)
    from mtcp_loop.tools.testbed import Testbed
    t = Testbed(prefix=f"mtpv{os.getpid() % 100000}", nqueues=2)
    t.up(request.param)
    try:
        yield t, request.param
    finally:
        t.down()


@needs_netns
def test_policy_packet_xdp(tb_veth, tmp_path):
    """The same program on AF_PACKET (fanout members steered by the cBPF program: 0 misdirected)
    and AF_XDP (the veth picks the queue: strays handed to their owner, none lost), both
    directions, then SIGTERM -> exit 0."""
    tb, kind = tb_veth
    n = 1000
    ks = tb.peer_popen([sys.executable, "-c", _KERNEL_SERVER], stdout=subprocess.PIPE, text=True)
    app = None
    try:
        assert ks.stdout.readline().strip() == "READY"
        app = Program(tb, [sys.executable, os.path.join(TESTS, "_policy_app.py")], tmp_path,
                      env={"MTCP_BACKEND": kind, "MTCP_TEST_OUT": f"{PEER}:9000:{n // 2}:50"})
        r = tb.peer_run([sys.executable, "-c", _KERNEL_CLIENTS, str(n), "100"], timeout=120)
        assert r.stdout.split() == [str(n), "0"], r.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and app.log().count("OUT-DONE") < 2:
            time.sleep(0.2)
        done = [ln for ln in app.log().splitlines() if ln.startswith("OUT-DONE")]
        assert len(done) == 2 and all(f"ok={n // 2} failed=0" in ln for ln in done), app.log()
        st = app.stats()
        for q, w in st["workers"].items():
            print(f"\n{kind} worker {q}: accepted={w['accepted']} active_opens={w['active_opens']} steer={w['steer']}")
            assert w["accepted"] > n * 0.2 and w["active_opens"] == n // 2, w
            assert w["steer"]["handoff_lost"] == 0
            if kind == "packet":
                assert w["misdirected"] == 0, w
            else:
                assert w["steer"]["handoff_out"] == w["misdirected"]
        app.p.send_signal(signal.SIGTERM)
        assert app.p.wait(15) == 0, app.log()
    finally:
        if app is not None:
            app.stop()
        ks.kill()
        ks.wait()


# ---- no root: embedded loopback, rules, errors --------------------------------------------------
_LOOPBACK_PROG = textwrap.dedent(r"""
    import asyncio, os, sys
    import mtcp_loop
    asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
    PORT = int(sys.argv[1])

    async def handle(r, w):
        while line := await r.readline():
            w.write(b"%d %s" % (os.getpid(), line)); await w.drain()
        w.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", PORT)
        # in-process: a client of this worker's own stack
        r, w = await asyncio.open_connection("127.0.0.1", PORT)
        w.write(b"self\n"); assert (await r.readline()).split()[0] == str(os.getpid()).encode(); w.close()
        print("SERVING", os.getpid(), flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("base,stop", [("asyncio", "term"), ("uvloop", "term"), ("asyncio", "ctrl-c")])
def test_loopback_cores2_kernel_clients_spread(tmp_path, base, stop):
    """Embedded loopback, cores=2: each worker its own in-process stack; the kernel mirror
    listeners share the port with SO_REUSEPORT, so kernel clients reach both workers; SIGTERM
    (or a terminal's Ctrl-C: SIGINT to the foreground process group) drains kernel connections
    too and exits 0."""
    pytest.importorskip(base)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, MTCP_RUNDIR=str(tmp_path), MTCP_BASE=base, PYTHONUNBUFFERED="1")
    env.pop("MTCP_BACKEND", None)
    p = subprocess.Popen([sys.executable, "-c", _LOOPBACK_PROG, str(port)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("mtcp-loop: 2 worker(s) on CPUs") and f"supervisor pid {p.pid}" in first, first
        pids = {p.stdout.readline().split()[1] for _ in range(2)}
        assert len(pids) == 2
        seen = {}
        for i in range(60):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"hi\n")
                pid = s.recv(100).split()[0].decode()
                seen[pid] = seen.get(pid, 0) + 1
        assert set(seen) == pids                     # SO_REUSEPORT spread them over both workers
        from mtcp_loop import workers
        st = workers.stats(str(tmp_path / "default"))
        assert sum(w["kernel_accepted"] for w in st["workers"].values()) == 60
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        for s in held:                               # accepted (not in a kernel backlog that closing resets)
            s.sendall(b"first\n")
            assert s.recv(100).endswith(b"first\n")
        t0 = time.monotonic()
        if stop == "term":
            p.send_signal(signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGINT)          # the workers have their own groups: one signal each
        time.sleep(0.5)
        assert p.poll() is None                      # draining: kernel connections still open
        for s in held:
            s.sendall(b"late\n")
            assert s.recv(100).endswith(b"late\n")
            s.close()
        assert p.wait(10) == 0
        assert time.monotonic() - t0 < 5
        out = p.stdout.read()
        assert "Traceback" not in out and "never awaited" not in out, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_control_socket_drain_one_worker(tmp_path):
    """The control socket's "drain" in the policy form: that worker stops accepting, finishes
    and exits 0 (not restarted); the other keeps serving; `mtcp-loop stats` shows the rest."""
    from mtcp_loop import workers
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, MTCP_RUNDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("MTCP_BACKEND", None)
    p = subprocess.Popen([sys.executable, "-c", _LOOPBACK_PROG, str(port)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(3)]
        assert sum(ln.startswith("SERVING") for ln in lines) == 2, lines
        rundir = str(tmp_path / "default")
        st = workers.stats(rundir)
        pid0, pid1 = st["workers"]["0"]["pid"], st["workers"]["1"]["pid"]
        assert workers._query(os.path.join(rundir, "worker-0.sock"), "drain") == {"ok": True}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid0, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("worker 0 did not leave after drain")
        time.sleep(0.5)
        sup = json.load(open(os.path.join(rundir, "supervisor.json")))
        assert sup["workers"]["0"]["pid"] is None and sup["workers"]["0"]["restarts"] == 0, sup
        for _ in range(10):                          # every kernel client now reaches worker 1
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"x\n")
                assert s.recv(100).split()[0] == str(pid1).encode()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


_SLOW_AIOHTTP = textwrap.dedent(r"""
    import asyncio, os, sys
    import mtcp_loop
    from aiohttp import web
    asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))

    async def slow(request):
        await asyncio.sleep(1.5)
        return web.Response(text="slow %d" % os.getpid())

    app = web.Application()
    app.router.add_get("/slow", slow)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("RUNNING", flush=True))
""")


def test_aiohttp_group_sigterm_finishes_in_flight(tmp_path):
    """SIGTERM to the supervisor and to every worker at once (a service manager signalling the
    whole group): each worker's aiohttp graceful exit runs once, in-flight requests complete."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, MTCP_RUNDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("MTCP_BACKEND", None)
    p = subprocess.Popen([sys.executable, "-c", _SLOW_AIOHTTP, str(port)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(3)]
        assert sum(ln.startswith("RUNNING") for ln in lines) == 2, lines
        with open(tmp_path / "default" / "supervisor.json") as f:
            pids = [p.pid] + [w["pid"] for w in json.load(f)["workers"].values()]

        def get(_):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=10) as r:
                return r.status, r.read().decode()
        with ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(get, i) for i in range(8)]
            time.sleep(0.5)                      # the requests are in flight
            for pid in pids[1:]:                 # the service manager's SIGTERM to each worker ...
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.3)
            os.kill(pids[0], signal.SIGTERM)     # ... and to the supervisor, which forwards another
            res = [f.result() for f in futs]
        assert all(st == 200 and body.startswith("slow ") for st, body in res), res
        assert p.wait(15) == 0
        out = p.stdout.read()
        assert "Traceback" not in out, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


_RULES_PROG = textwrap.dedent(r"""
    import asyncio, os, sys, threading
    import mtcp_loop
    case = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RULES_CASE", "")

    def child_loop():
        return os.getpid(), asyncio.run(asyncio.sleep(0, os.getpid()))

    if case == "thread":
        ev = threading.Event()
        threading.Thread(target=ev.wait, name="busy", daemon=True).start()
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
        try:
            asyncio.run(asyncio.sleep(0))
        except RuntimeError as e:
            print("REFUSED", e)
        ev.set()
    elif case == "in-thread":
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
        out = []
        t = threading.Thread(target=lambda: out.append(asyncio.run(asyncio.sleep(0, os.getpid()))))
        t.start(); t.join()
        print("THREAD-LOOP", out[0] == os.getpid(), not os.path.exists(os.path.join(os.environ["MTCP_RUNDIR"], "default")))
    elif case == "pytest":
        import _pytest  # noqa: F401   (what a pytest run has imported)
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
        print("PYTEST-LOOP", asyncio.run(asyncio.sleep(0, os.getpid())) == os.getpid())
    elif case == "mp-child":                  # spawn children re-import this module, policy line included
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
        if __name__ == "__main__":
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
                child, ran_in = ex.submit(child_loop).result(timeout=30)
            print("MP-CHILD", child != os.getpid() and child == ran_in)
    elif case == "cores1":
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=1))
        loop = asyncio.new_event_loop()
        print("ONE-LOOP", type(loop).__name__, loop._mtcp_engine is None)
        loop.close()
    elif case == "running":
        async def main():
            try:
                mtcp_loop.new_event_loop(cores=2)
            except RuntimeError as e:
                print("REFUSED", e)
        asyncio.run(main())
    elif case == "runner-factory":            # no policy (deprecated from 3.14): the loop factory
        async def main():
            await asyncio.sleep(0)
            return os.getpid(), sorted(os.sched_getaffinity(0)), type(asyncio.get_running_loop()).__name__
        with asyncio.Runner(loop_factory=mtcp_loop.loop_factory(cores=2, name="factory")) as runner:
            print("RAN", *runner.run(main()), flush=True)
    elif case == "crash":                     # CRASH=once: each worker's first main() fails; always: every one
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2))
        state = {"n": 0}                         # pre-fork state: every replacement starts from this copy
        async def main():
            state["n"] += 1
            marker = os.path.join(os.environ["MTCP_RUNDIR"], "crashed-%d" % min(os.sched_getaffinity(0)))
            if os.environ["CRASH"] == "always" or not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("boom")
            print("OK", os.getpid(), state["n"], flush=True)
        asyncio.run(main())
    elif case == "exit-status":
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=2, drain_timeout=1, restart=False))
        async def main():
            return 0 if os.sched_getaffinity(0) == {min(os.sched_getaffinity(0))} and len(os.sched_getaffinity(0)) == 1 else 5
        try:
            rc = asyncio.run(main())
        finally:
            print("FINALLY", os.getpid(), flush=True)
        print("WORKER-DONE", os.getpid(), rc, flush=True)
        sys.exit(3 if os.environ.get("FAIL_WORKER") else 0)
""")


def _rules(case, tmp_path, **env):
    prog = tmp_path / "rules_prog.py"           # a file: multiprocessing's spawn re-imports it
    prog.write_text(_RULES_PROG)
    e = dict(os.environ, PYTHONPATH=ROOT, MTCP_RUNDIR=str(tmp_path), RULES_CASE=case, **env)
    e.pop("MTCP_BACKEND", None)
    return subprocess.run([sys.executable, str(prog), case], env=e, capture_output=True, text=True,
                          timeout=60)


def test_refuses_with_other_threads(tmp_path):
    r = _rules("thread", tmp_path)
    assert "REFUSED cannot fork one worker per core: this process already runs other threads (busy)" in r.stdout, \
        r.stdout + r.stderr
    assert not (tmp_path / "default" / "supervisor.json").exists()


def test_refuses_inside_running_loop(tmp_path):
    r = _rules("running", tmp_path)
    assert "REFUSED an event loop with cores > 1 must be the first loop" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("case,want", [("in-thread", "THREAD-LOOP True True"), ("pytest", "PYTEST-LOOP True"),
                                       ("cores1", "ONE-LOOP"), ("mp-child", "MP-CHILD True")])
def test_no_fork_cases(tmp_path, case, want):
    """Other threads' loops, a pytest run, cores=1 and multiprocessing children (which re-import
    the main module, policy line included): one plain loop in that process."""
    r = _rules(case, tmp_path)
    assert r.returncode == 0 and want in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "default" / "supervisor.json").exists()


@pytest.mark.skipif(NCPU < 2, reason="needs 2 CPUs")
@pytest.mark.parametrize("fail", [False, True])
def test_program_ends_per_worker_and_exit_status(tmp_path, fail):
    """A program that is not a server: main() runs once per worker (pinned to one CPU), the
    code after asyncio.run() runs in the workers only, the supervisor leaves with their status."""
    r = _rules("exit-status", tmp_path, **({"FAIL_WORKER": "1"} if fail else {}))
    done = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("WORKER-DONE")]
    assert len(done) == 2 and all(d[2] == "0" for d in done), r.stdout + r.stderr
    assert r.stdout.count("FINALLY") == 3          # the supervisor's SystemExit runs finally blocks too
    assert r.returncode == (1 if fail else 0), r.stdout + r.stderr
    assert "never awaited" not in r.stderr, r.stderr


@pytest.mark.skipif(NCPU < 2, reason="needs 2 CPUs")
def test_runner_loop_factory_cores(tmp_path):
    """asyncio.Runner(loop_factory=mtcp_loop.loop_factory(cores=2)): the same pre-fork, no policy."""
    r = _rules("runner-factory", tmp_path)
    ran = [ln.split(" ", 2) for ln in r.stdout.splitlines() if ln.startswith("RAN")]
    assert r.returncode == 0 and len(ran) == 2, r.stdout + r.stderr
    assert len({x[1] for x in ran}) == 2 and all("MTCPLoop" in x[2] for x in ran), ran
    assert all(len(x[2].split("]")[0].split(",")) == 1 for x in ran), ran       # each pinned to one CPU
    with open(tmp_path / "factory" / "supervisor.json") as f:
        st = json.load(f)
    assert st["cores"] == 2 and st["pid"] not in {int(x[1]) for x in ran}


@pytest.mark.skipif(NCPU < 2, reason="needs 2 CPUs")
def test_crashed_worker_replaced_from_prefork_copy(tmp_path):
    """A worker whose program fails is replaced by forking the supervisor again: a copy of the
    program as it was before its first loop (pre-fork state untouched by the dead worker)."""
    r = _rules("crash", tmp_path, CRASH="once")
    ok = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("OK")]
    assert r.returncode == 0 and len(ok) == 2, r.stdout + r.stderr
    assert all(x[2] == "1" for x in ok)                  # state["n"] counts from the pre-fork copy
    assert r.stderr.count("RuntimeError: boom") == 2 and r.stderr.count("restarting on cpu") == 2, r.stderr
    with open(tmp_path / "default" / "supervisor.json") as f:
        assert sum(w["restarts"] for w in json.load(f)["workers"].values()) == 2


@pytest.mark.skipif(NCPU < 2, reason="needs 2 CPUs")
def test_crash_loop_backoff_stops(tmp_path):
    """A worker that keeps dying at start: restarts back off, then the supervisor stops, exit 1."""
    t0 = time.monotonic()
    r = _rules("crash", tmp_path, CRASH="always")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    assert "keeps dying at start" in r.stderr and " in 0.1s" in r.stderr and " in 0.4s" in r.stderr, r.stderr
    assert took > 3, took                                # backed off, not a tight loop


def test_policy_arguments():
    import mtcp_loop
    with pytest.raises(ValueError, match="cores must be"):
        mtcp_loop.MTCPPolicy(cores=-1)
    with pytest.raises(ValueError, match="cores must be"):
        mtcp_loop.MTCPPolicy(cores="many")
    with pytest.raises(TypeError, match="cores must be"):
        mtcp_loop.MTCPPolicy(cores=1.5)
    with pytest.raises(ValueError, match="drain_timeout"):
        mtcp_loop.MTCPPolicy(cores=2, drain_timeout=-1)
    with pytest.raises(TypeError):
        mtcp_loop.MTCPPolicy(cores=2, no_such_field=1)
    assert mtcp_loop.MTCPPolicy().cores is None
    assert mtcp_loop.MTCPPolicy(cores="auto").cores == "auto"
    f = mtcp_loop.loop_factory(cores=2, rundir="/nonexistent")
    assert f.cores == 2
    # under pytest a cores=2 policy makes plain loops: nothing forks
    pol = mtcp_loop.MTCPPolicy(cores=2)
    loop = pol.new_event_loop()
    try:
        assert isinstance(loop, mtcp_loop.MTCPLoop)
        assert loop.run_until_complete(asyncio_sleep_pid()) == os.getpid()
    finally:
        loop.close()
    assert threading.active_count() >= 1


async def asyncio_sleep_pid():
    import asyncio
    await asyncio.sleep(0)
    return os.getpid()
