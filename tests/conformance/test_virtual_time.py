"""Virtual time (mtcp_loop/vtime.py): autojump clock, seeded determinism (identical pcaps and
callback order), refusals, fault scripting (mtcp_loop/faults.py), the pytest plugin's option,
marker and seed report. The ordinary TCP behaviours in virtual time are the conformance suite's
``mtcp_vtime`` kind (tests/conformance/test_tcp_conformance.py)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.timeout(120)]

HOST = "127.0.0.1"


def vloop(**kw):
    from mtcp_loop import new_event_loop
    kw.setdefault("seed", 11)
    return new_event_loop(virtual_time=True, **kw)


def run(loop, coro, timeout=None):
    try:
        if timeout is not None:
            coro = asyncio.wait_for(coro, timeout)
        return loop.run_until_complete(coro)
    finally:
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()


async def echo_server():
    async def handle(r, w):
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                w.write(d)
                await w.drain()
        except ConnectionError:
            pass
        w.close()
    return await asyncio.start_server(handle, HOST, 0)


# ------------------------------------------------------------------------------------------
def test_hour_sleep_and_rto_backoffs_through_partition():
    """The issue's acceptance scenario: 3600 s of virtual sleep, then a scripted 20 s partition
    that the connection survives through at least three RTO back-offs; wall time is printed."""
    loop = vloop()
    wall0 = time.perf_counter()

    async def main():
        srv = await echo_server()
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection(HOST, port)
        w.write(b"before")
        assert await r.readexactly(6) == b"before"
        t0 = loop.time()
        await asyncio.sleep(3600)
        assert loop.time() - t0 == pytest.approx(3600, abs=1e-6)
        rule = loop.faults.partition(port, duration=20)
        t1 = loop.time()
        w.write(b"through the partition")
        assert await asyncio.wait_for(r.readexactly(21), 120) == b"through the partition"
        took = loop.time() - t1
        st = loop.stats()
        w.close()
        srv.close()
        return took, rule, st

    took, rule, st = run(loop, main())
    wall = time.perf_counter() - wall0
    print(f"virtual: 3600 s sleep + {took:.3f} s through the partition; wall {wall:.3f} s; "
          f"RTO expiries {st['timeouts']}, retransmits {st['retrans_segs']}, dropped {rule.acted}")
    assert 20 <= took < 60, took                  # delivered after the partition, by an RTO retransmit
    assert st["timeouts"] >= 3 and st["retrans_segs"] >= 3, st
    assert rule.acted >= 4 and st["fault.dropped"] == rule.acted, st
    assert st["vtime.jumped_s"] >= 3620, st
    assert wall < 10, wall                        # no real waiting (figure printed above)


def test_keepalive_gives_up_after_two_hours_of_partition():
    """SO_KEEPALIVE with the Linux defaults (idle 7200 s, 9 probes 75 s apart) through a permanent
    partition: ETIMEDOUT at exactly 7875 s of virtual time."""
    loop = vloop()

    async def main():
        async def handle(r, w):
            try:
                await r.read()
            except OSError:
                pass
        srv = await asyncio.start_server(handle, HOST, 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection(HOST, port)
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        loop.faults.partition(port)                   # for ever
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await r.read()
        took = loop.time() - t0
        srv.close()
        return took, loop.stats()

    took, st = run(loop, main())
    assert took == pytest.approx(7200 + 9 * 75, abs=0.01), took
    assert st["keepalive_probes"] == 9 and st["conn_timedout"] == 1, st


def test_autojump_wait_for_and_engine_timers():
    """Timeouts, call_later and the engine's own timers (RTO after a SYN to a dead peer is not
    possible on loopback: a SYN-ACK dropped by rule) all jump; order of timers is kept."""
    loop = vloop()

    async def main():
        order = []
        loop.call_later(30, order.append, "30s")
        loop.call_later(0.001, order.append, "1ms")
        loop.call_at(loop.time() + 7, order.append, "7s")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 60)
        assert order == ["1ms", "7s", "30s"]
        srv = await echo_server()
        port = srv.sockets[0].getsockname()[1]
        rule = loop.faults.drop(src=port, flags="SA")      # the next SYN-ACK only
        t0 = loop.time()
        r, w = await asyncio.open_connection(HOST, port)
        took = loop.time() - t0
        w.close()
        srv.close()
        return took, rule

    took, rule = run(loop, main())
    assert rule.acted == 1 and rule.matched >= 2, rule
    assert 0.9 <= took <= 3.5, took                      # one initial-RTO (1 s) retransmission


# ------------------------------------------------------------------------------------------
DET_SCRIPT = textwrap.dedent('''
    import asyncio, hashlib, sys
    import mtcp_loop

    async def main():
        loop = asyncio.get_running_loop()
        log = []
        class Srv(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr
                log.append(("made", round(loop.time(), 6), tr.get_extra_info("peername")[1]))
            def data_received(self, d):
                log.append(("data", round(loop.time(), 6), len(d)))
                self.tr.write(d)
            def eof_received(self):
                log.append(("eof", round(loop.time(), 6)))
        srv = await loop.create_server(Srv, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        loop.faults.corrupt(dst=port, nth=3)
        loop.faults.delay(src=port, delay=0.25, count=5)
        async def client(i):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for k in range(4):
                w.write(bytes([i]) * (3000 * (k + 1)))
                await r.readexactly(3000 * (k + 1))
                await asyncio.sleep(0.05 * i)
            w.write_eof()
            await r.read()
            w.close()
            log.append(("client done", i, round(loop.time(), 6)))
        await asyncio.gather(*(client(i) for i in range(8)))
        srv.close()
        await asyncio.sleep(70)     # TIME-WAIT ends inside the capture
        st = loop.stats()
        keys = ("retrans_segs", "drop_bad_csum", "impair.dropped", "fault.corrupted", "fault.delayed")
        print(hashlib.sha256(repr(log).encode()).hexdigest(), [st[k] for k in keys], port)

    seed = int(sys.argv[2])
    loop = mtcp_loop.new_event_loop(virtual_time=True, seed=seed, pcap=sys.argv[1],
                                    impair="loss=0.03,delay=2ms,jitter=1ms,reorder=0.02,seed=5")
    loop.run_until_complete(main())
    loop.close()
''')


def test_same_seed_same_pcap_and_callback_order(tmp_path):
    """Two processes with one seed write byte-identical pcaps and see the same callbacks at the
    same virtual times; another seed changes both (random impairment + scripted faults)."""
    script = tmp_path / "det.py"
    script.write_text(DET_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outs, caps = [], []
    for i, seed in enumerate((7, 7, 8)):
        cap = tmp_path / f"run{i}.pcap"
        env["PYTHONHASHSEED"] = str(i + 1)       # str/bytes hashing differs between the runs
        p = subprocess.run([sys.executable, str(script), str(cap), str(seed)], env=env,
                           capture_output=True, text=True, timeout=100)
        assert p.returncode == 0, p.stdout + p.stderr
        outs.append(p.stdout.strip())
        caps.append(cap.read_bytes())
    print(outs)
    assert len(caps[0]) > 10000
    assert caps[0] == caps[1], "same seed: pcaps differ"
    assert outs[0] == outs[1]
    assert caps[0] != caps[2] and outs[0] != outs[2]
    counters = eval(outs[0].split(" ", 1)[1].rsplit(" ", 1)[0])
    assert counters[1] >= 1 and counters[3] == 1 and counters[4] == 5, counters   # faults acted
    # capture clock: 2000-01-01T00:00:00Z at the start of the virtual clock
    import struct
    ts0 = struct.unpack_from("<I", caps[0], 24)[0]
    assert 946684800 <= ts0 < 946684800 + 3600


def test_callback_order_in_process():
    """The same scenario twice in one process: identical event logs (virtual timestamps too)."""
    def scenario():
        loop = vloop(seed=99, impair="loss=0.05,jitter=3ms,delay=1ms")
        log = []

        async def main():
            async def handle(r, w):
                while True:
                    d = await r.read(1000)
                    if not d:
                        break
                    log.append(("srv", round(loop.time(), 6), len(d)))
                    w.write(d[::-1])
                w.close()
            srv = await asyncio.start_server(handle, HOST, 0)
            port = srv.sockets[0].getsockname()[1]

            async def cli(i):
                r, w = await asyncio.open_connection(HOST, port)
                for k in range(5):
                    w.write(b"%d-%d" % (i, k) * 50)
                    got = await r.read(1000)
                    log.append(("cli", i, round(loop.time(), 6), len(got)))
                w.close()
            await asyncio.gather(*(cli(i) for i in range(6)))
            srv.close()
            return loop.stats()["impair.dropped"]
        dropped = run(loop, main())
        return log, dropped

    a, da = scenario()
    b, db = scenario()
    assert da > 0
    assert a == b and da == db


# ------------------------------------------------------------------------------------------
def test_refused_in_virtual_time():
    from mtcp_loop import MTCPConfig, new_event_loop
    from mtcp_loop.vtime import VirtualTimeError
    loop = vloop()

    async def main():
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with pytest.raises(VirtualTimeError, match="run_in_executor"):
                await loop.run_in_executor(pool, time.sleep, 0)
        with pytest.raises(VirtualTimeError, match="set_default_executor"):
            loop.set_default_executor(None)
        # the default executor runs inline, in the loop's thread, taking no virtual time
        import threading
        t0 = loop.time()
        assert await loop.run_in_executor(None, threading.get_ident) == threading.get_ident()
        assert await asyncio.to_thread(sum, [1, 2]) == 3
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, divmod, 1, 0)
        assert loop.time() == t0
        with pytest.raises(VirtualTimeError, match="subprocess"):
            await asyncio.create_subprocess_exec("true")
        with pytest.raises(VirtualTimeError, match="getaddrinfo"):
            await loop.getaddrinfo("example.invalid", 80)
        infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        assert [i[4][0] for i in infos][:1] == ["127.0.0.1"]
        assert (await loop.getaddrinfo("::1", 80, type=socket.SOCK_STREAM))[0][4][0] == "::1"
        with pytest.raises(VirtualTimeError):
            await loop.getnameinfo(("127.0.0.1", 80))
        assert (await loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST
                                       | socket.NI_NUMERICSERV)) == ("127.0.0.1", "80")
        # no kernel fallback: a port without a listener is refused by the stack itself
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, 9)
        assert loop.stats()["loop.kernel_connected"] == 0
        assert loop.mtcp_config.fallback == "error" and not loop.mtcp_config.kernel_mirror
    run(loop, main())
    with pytest.raises(ValueError, match="uvloop"):
        MTCPConfig(virtual_time=True, base="uvloop")
    with pytest.raises(ValueError, match="loopback"):
        new_event_loop(virtual_time=True, backend="tap", ifname="x", ipv4="198.18.0.2/24")
    import mtcp_loop

    async def nap():
        await asyncio.sleep(100)
        return asyncio.get_running_loop().time()
    assert mtcp_loop.run(nap(), virtual_time=True, seed=3) == 1100.0
    coro = nap()
    with pytest.raises(ValueError, match="cores"):
        mtcp_loop.run(coro, virtual_time=True, cores=2)
    coro.close()


def test_isolated_from_other_loops():
    """A real-time MTCPLoop of the same process listens on a port: the virtual-time loop can
    listen on the same port (its own table) and does not reach the other loop's listener."""
    from mtcp_loop import new_event_loop
    other = new_event_loop(base="asyncio", kernel_mirror=False)
    try:
        srv_other = other.run_until_complete(other.create_server(asyncio.Protocol, HOST, 0))
        port = srv_other.sockets[0].getsockname()[1]
        loop = vloop()

        async def main():
            with pytest.raises(ConnectionRefusedError):         # not the other loop's listener
                await asyncio.open_connection(HOST, port)

            async def handle(r, w):
                w.write(b"mine")
                w.close()
            srv = await asyncio.start_server(handle, HOST, port)  # same port: no EADDRINUSE
            r, w = await asyncio.open_connection(HOST, port)
            assert await r.read() == b"mine"
            w.close()
            srv.close()
        run(loop, main())
        srv_other.close()
    finally:
        other.close()


def test_clock_advance_by_hand():
    from mtcp_loop.vtime import VirtualClock
    c = VirtualClock()
    assert c.time() == 1000.0 and c.now_us() == 1000 * 10 ** 6
    c.advance(0.0000015)
    assert c.now_us() == 1000 * 10 ** 6 + 1 and c.time() >= 1000.0000015
    c.jump_to(999.0)                          # never backwards
    assert c.time() >= 1000.0000015
    with pytest.raises(ValueError):
        c.advance(-1)
    loop = vloop()
    loop.virtual_clock.advance(50)            # while the loop is idle
    assert loop.time() == pytest.approx(1050.0)
    assert run(loop, asyncio.sleep(10, result="ok")) == "ok"


def test_seed_drawn_when_zero_and_env():
    from mtcp_loop import MTCPConfig
    loop = vloop(seed=0)
    assert loop.mtcp_seed != 0
    loop.close()
    cfg = MTCPConfig.from_env({"MTCP_VIRTUAL_TIME": "1", "MTCP_SEED": "42"})
    assert cfg.virtual_time and cfg.seed == 42
    from mtcp_loop import new_event_loop
    loop = new_event_loop(config=cfg)
    assert type(loop).__name__ == "VirtualTimeMTCPLoop" and loop.mtcp_seed == 42
    assert loop.time() == 1000.0
    loop.close()


# ------------------------------------------------------------------------------------------
def test_fault_corrupt_and_delay_one_direction():
    loop = vloop()

    async def main():
        srv = await echo_server()
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection(HOST, port)
        w.write(b"x")
        await r.readexactly(1)
        base = loop.stats()
        bad = loop.faults.corrupt(dst=port, nth=2)
        w.write(b"a" * 100)
        await r.readexactly(100)
        w.write(b"b" * 100)                       # the 2nd data segment to the server: corrupted
        t0 = loop.time()
        assert await r.readexactly(100) == b"b" * 100
        repaired = loop.time() - t0
        st = loop.stats()
        assert bad.acted == 1 and st["fault.corrupted"] == 1
        assert st["drop_bad_csum"] - base["drop_bad_csum"] == 1
        assert st["retrans_segs"] > base["retrans_segs"]
        assert repaired > 0.005                   # repaired by a retransmission (TLP or RTO)
        # delay what the server sends by 0.5 s: one direction only
        slow = loop.faults.delay(src=port, delay=0.5)
        t0 = loop.time()
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        rtt = loop.time() - t0
        slow.remove()
        assert not slow.active and slow.acted >= 1
        t0 = loop.time()
        w.write(b"pong")
        assert await r.readexactly(4) == b"pong"
        rtt_after = loop.time() - t0
        w.close()
        srv.close()
        return rtt, rtt_after, loop.stats()

    rtt, rtt_after, st = run(loop, main())
    assert 0.5 <= rtt < 0.6, rtt
    assert rtt_after < 0.05, rtt_after
    assert st["fault.delayed"] >= 1 and "fault.1.acted" not in st   # removed rule: totals only


def test_fault_api_errors():
    from mtcp_loop import new_event_loop
    loop = vloop()
    with pytest.raises(ValueError):
        loop.faults.drop(flags="SX")
    with pytest.raises(ValueError):
        loop.faults.delay(delay=0)
    with pytest.raises(ValueError):
        loop.faults.partition(80, duration=0)
    with pytest.raises(ValueError):
        loop.faults.corrupt(nth=0)
    with pytest.raises(TypeError):
        loop.faults.drop(src=[1])
    with pytest.raises(ValueError):
        loop.faults.drop(side="up")
    rules = [loop.faults.drop(count=0) for _ in range(64)]
    with pytest.raises(RuntimeError, match="64"):
        loop.faults.drop()
    loop.faults.clear()
    assert loop.faults.rules == [] and all(not r.active for r in rules)
    loop.close()
    plain = new_event_loop(base="asyncio")
    with pytest.raises(RuntimeError, match="faults=True"):
        plain.faults.drop()
    plain.close()
    # faults=True works in real time too
    real = new_event_loop(base="asyncio", faults=True)
    r = real.faults.drop(flags="S")
    assert r.acted == 0
    real.close()


def test_impairment_delay_in_virtual_time():
    """The impairment wrapper's delay is on the virtual clock: 200 round trips of 10 ms one-way
    impairment (applied on TX and on RX of the loopback) take 200 * 40 ms virtual, no wall time."""
    loop = vloop(impair="delay=10ms")
    wall0 = time.perf_counter()

    async def main():
        srv = await echo_server()
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection(HOST, port)
        t0 = loop.time()
        for _ in range(200):
            w.write(b"q")
            await r.readexactly(1)
        took = loop.time() - t0
        w.close()
        srv.close()
        return took

    took = run(loop, main())
    assert took == pytest.approx(200 * 0.040, rel=0.01), took
    assert time.perf_counter() - wall0 < 10


# ------------------------------------------------------------------------------------------
def test_aiohttp_client_retries_through_partition():
    """The docs/testing.md example: an aiohttp client with a per-attempt timeout and retries
    against an aiohttp server behind a 10 s partition."""
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web
    loop = vloop()

    async def main():
        async def hello(request):
            return web.Response(text="hi")
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        attempts = []

        async def get_with_retries(session, url, tries=6, per_try=2.0, backoff=1.0):
            for i in range(tries):
                attempts.append(round(loop.time(), 3))
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=per_try)) as resp:
                        return await resp.text()
                except (asyncio.TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(backoff * 2 ** i)
            raise AssertionError("no answer")

        async with aiohttp.ClientSession() as session:
            assert await get_with_retries(session, f"http://{HOST}:{port}/") == "hi"
            attempts.clear()
            rule = loop.faults.partition(port, duration=10)
            t0 = loop.time()
            assert await get_with_retries(session, f"http://{HOST}:{port}/") == "hi"
            took = loop.time() - t0
        await runner.cleanup()
        return attempts, took, rule, loop.stats()

    attempts, took, rule, st = run(loop, main())
    # attempts at 0, 3, 7, 13 s (2 s timeout, then 1, 2, 4 s back-off): the 4th, after the
    # partition, gets the answer
    assert len(attempts) == 4, attempts
    assert [round(b - a, 3) for a, b in zip(attempts, attempts[1:])] == [3.0, 4.0, 6.0]
    assert 13 <= took < 14, took
    assert rule.acted > 0 and st["loop.kernel_connections"] == 0


# ------------------------------------------------------------------------------------------
PLUGIN_SUITE = textwrap.dedent('''
    import asyncio
    import pytest

    @pytest.mark.asyncio
    async def test_long_sleep():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        assert loop.time() - t0 >= 3600
        assert type(loop).__name__ == "VirtualTimeMTCPLoop"

    @pytest.mark.asyncio
    async def test_partition(mtcp_faults):
        async def handle(r, w):
            w.write(await r.readexactly(2)); await w.drain(); w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        mtcp_faults.partition(port, duration=5)
        r, w = await asyncio.open_connection("127.0.0.1", port)   # SYN retries through 5 s
        w.write(b"ok")
        assert await r.read() == b"ok"
        assert asyncio.get_running_loop().stats()["fault.dropped"] >= 2
        w.close(); srv.close()

    @pytest.mark.asyncio
    async def test_fails_with_seed():
        loop = asyncio.get_running_loop()
        print("SEED-IS", loop.mtcp_seed)
        assert False, "deliberate"

    @pytest.mark.asyncio
    @pytest.mark.mtcp_real_time
    async def test_real_clock():
        assert type(asyncio.get_running_loop()).__name__ == "MTCPLoop"

    def test_hand_made_loop(mtcp_loop_factory):
        loop = mtcp_loop_factory()
        try:
            assert type(loop).__name__ == "VirtualTimeMTCPLoop"
            loop.run_until_complete(asyncio.sleep(600))
            assert loop.time() == 1600.0
        finally:
            loop.close()
''')

MARKER_SUITE = textwrap.dedent('''
    import asyncio
    import pytest

    @pytest.mark.asyncio
    @pytest.mark.mtcp_virtual_time
    async def test_marked():
        await asyncio.sleep(86400)
        assert type(asyncio.get_running_loop()).__name__ == "VirtualTimeMTCPLoop"

    @pytest.mark.asyncio
    async def test_unmarked():
        assert type(asyncio.get_running_loop()).__name__ == "MTCPLoop"
''')


def _pytest(tmp_path, source, *args, env_extra=None):
    (tmp_path / "test_suite.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MTCP_SEED", None)
    env.pop("MTCP_VIRTUAL_TIME", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "mtcp_loop.pytest_plugin", *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110)


def test_plugin_option_seed_report_and_replay(tmp_path):
    pytest.importorskip("pytest_asyncio")
    from mtcp_loop.pytest_plugin import HAS_FACTORIES_HOOK
    if not HAS_FACTORIES_HOOK:
        pytest.skip("pytest-asyncio without pytest_asyncio_loop_factories")
    p = _pytest(tmp_path, PLUGIN_SUITE, "--mtcp-virtual-time")
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "1 failed, 4 passed" in out, out
    seed = int(out.split("SEED-IS ", 1)[1].split()[0])
    assert f"this test ran in virtual time with seed {seed}" in out, out
    replay = f"MTCP_SEED={seed} python -m pytest 'test_suite.py::test_fails_with_seed' --mtcp-virtual-time"
    assert replay in out, out
    # the replay command runs the failing test with the same seed
    p2 = _pytest(tmp_path, PLUGIN_SUITE, "--mtcp-virtual-time", "-k", "test_fails_with_seed",
                 env_extra={"MTCP_SEED": str(seed)})
    assert f"SEED-IS {seed}" in p2.stdout, p2.stdout
    # --mtcp-seed fixes the seed of every virtual-time test
    p3 = _pytest(tmp_path, PLUGIN_SUITE, "--mtcp-virtual-time", "--mtcp-seed", "5",
                 "-k", "test_fails_with_seed")
    assert "SEED-IS 5" in p3.stdout, p3.stdout


def test_plugin_marker(tmp_path):
    from mtcp_loop.pytest_plugin import HAS_FACTORIES_HOOK
    if not HAS_FACTORIES_HOOK:
        pytest.skip("pytest-asyncio without pytest_asyncio_loop_factories")
    p = _pytest(tmp_path, MARKER_SUITE)
    assert p.returncode == 0 and "2 passed" in p.stdout, p.stdout + p.stderr


def test_docs_example(tmp_path):
    """The aiohttp example of docs/testing.md, run as written under the pytest plugin."""
    pytest.importorskip("aiohttp")
    from mtcp_loop.pytest_plugin import HAS_FACTORIES_HOOK
    if not HAS_FACTORIES_HOOK:
        pytest.skip("pytest-asyncio without pytest_asyncio_loop_factories")
    text = open(os.path.join(ROOT, "docs", "testing.md")).read()
    section = text.split("## Example: an aiohttp client retrying through a partition", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    p = _pytest(tmp_path, code)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr


def test_plugin_suites_in_virtual_time(tmp_path):
    """The project's pytest-asyncio suite (tests/conformance/test_asyncio_suite.py) and the plugin's streams +
    aiohttp TestClient suite pass under --mtcp-virtual-time."""
    from mtcp_loop.pytest_plugin import HAS_FACTORIES_HOOK
    if not HAS_FACTORIES_HOOK:
        pytest.skip("pytest-asyncio without pytest_asyncio_loop_factories")
    from tests.conformance import test_pytest_plugin
    src = open(os.path.join(ROOT, "tests", "conformance", "test_asyncio_suite.py")).read()
    src = src.replace('type(loop).__name__ == "MTCPLoop"', 'type(loop).__name__ == "VirtualTimeMTCPLoop"')
    p = _pytest(tmp_path, src, "--mtcp-virtual-time")
    assert p.returncode == 0 and "3 passed" in p.stdout, p.stdout + p.stderr
    suite = test_pytest_plugin.SUITE.replace('type(loop).__name__ == "MTCPLoop"',
                                             'type(loop).__name__ == "VirtualTimeMTCPLoop"')
    p = _pytest(tmp_path, suite, "--mtcp-virtual-time")
    assert p.returncode == 0 and "3 passed" in p.stdout, p.stdout + p.stderr


MODULE_SCOPE_SUITE = textwrap.dedent('''
    import asyncio
    import pytest

    pytestmark = pytest.mark.asyncio(loop_scope="module")

    async def test_first():
        await asyncio.sleep(10)

    async def test_second_fails():
        print("SEED-IS", asyncio.get_running_loop().mtcp_seed)
        assert False
''')


def test_plugin_reports_seed_of_module_scoped_loop(tmp_path):
    from mtcp_loop.pytest_plugin import HAS_FACTORIES_HOOK
    if not HAS_FACTORIES_HOOK:
        pytest.skip("pytest-asyncio without pytest_asyncio_loop_factories")
    p = _pytest(tmp_path, MODULE_SCOPE_SUITE, "--mtcp-virtual-time")
    out = p.stdout + p.stderr
    assert "1 failed, 1 passed" in out, out
    seed = int(out.split("SEED-IS ", 1)[1].split()[0])
    assert f"with seed {seed}; replay it with" in out and "shared with the earlier tests" in out, out
    assert f"MTCP_SEED={seed} python -m pytest 'test_suite.py' --mtcp-virtual-time" in out, out
    p2 = _pytest(tmp_path, MODULE_SCOPE_SUITE, "--mtcp-virtual-time", env_extra={"MTCP_SEED": str(seed)})
    assert f"SEED-IS {seed}" in p2.stdout, p2.stdout


# ------------------------------------------------------------------------------------------
def _replay_scenario(tmp_path, tag, seed, impair, part_start, part_len, nclients,
                     syncookies="on_overflow"):
    """One randomized scenario; returns (event log, pcap bytes, counters)."""
    cap = str(tmp_path / f"{tag}.pcap")
    loop = vloop(seed=seed, impair=impair, pcap=cap, syncookies=syncookies)
    log = []

    async def main():
        async def handle(r, w):
            try:
                while True:
                    d = await r.read(4096)
                    if not d:
                        break
                    log.append(("srv", round(loop.time(), 6), len(d)))
                    w.write(d)
                    await w.drain()
            except ConnectionError as exc:
                log.append(("srv-err", type(exc).__name__))
            w.close()
        srv = await asyncio.start_server(handle, HOST, 0)
        port = srv.sockets[0].getsockname()[1]
        loop.faults.partition(port, start=part_start, duration=part_len)

        async def cli(i):
            try:
                r, w = await asyncio.open_connection(HOST, port)
                for k in range(3):
                    w.write(bytes([65 + i]) * (500 + 700 * k))
                    got = await r.readexactly(500 + 700 * k)
                    log.append(("cli", i, k, round(loop.time(), 6), got[:1]))
                    await asyncio.sleep(0.3 * (i + 1))
                w.close()
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.append(("cli-err", i, type(exc).__name__, round(loop.time(), 6)))
        await asyncio.gather(*(cli(i) for i in range(nclients)))
        srv.close()
        await asyncio.sleep(65)              # TIME-WAIT ends inside the capture
        st = loop.stats()
        return {k: st[k] for k in ("retrans_segs", "timeouts", "impair.dropped", "fault.dropped",
                                    "syncookies_sent")}

    counters = run(loop, main())
    with open(cap, "rb") as f:
        return log, f.read(), counters


def test_replay_property(tmp_path):
    """Hypothesis draws seeds, impairments, partitions, client counts and SYN-cookie mode (the
    cookie secret and its clock); every scenario run twice gives the same callback log, the same
    counters and a byte-identical pcap."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, HealthCheck, strategies as st

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seed=st.integers(1, 2 ** 63 - 1),
           impair=st.sampled_from(["loss=0.05", "loss=0.02,reorder=0.1,delay=3ms,jitter=2ms",
                                   "duplicate=0.05,corrupt=0.02,delay=1ms", "rate=2mbit,delay=5ms"]),
           part_start=st.floats(0, 1.5), part_len=st.floats(0.1, 8),
           nclients=st.integers(1, 4), syncookies=st.sampled_from(["on_overflow", "always"]))
    def check(seed, impair, part_start, part_len, nclients, syncookies):
        args = (seed, impair, part_start, part_len, nclients, syncookies)
        a = _replay_scenario(tmp_path, "a", *args)
        b = _replay_scenario(tmp_path, "b", *args)
        assert a[0] == b[0], "callback logs differ"
        assert a[2] == b[2], (a[2], b[2])
        assert a[1] == b[1], "pcaps differ"
        assert len(a[1]) > 24
    check()
