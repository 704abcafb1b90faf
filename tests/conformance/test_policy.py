"""Public entry points: MTCPLoop, MTCPPolicy, new_event_loop, run, install, loop factories, stats()."""
import asyncio
import subprocess
import sys

import pytest

from tests.helpers import HAVE_UVLOOP, ROOT

pytestmark = [pytest.mark.timeout(60)]


async def roundtrip():
    async def handle(r, w):
        w.write(await r.readexactly(4))
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    data = await r.read()
    w.close()
    srv.close()
    return data, asyncio.get_running_loop()


def test_run_and_loop_class():
    import mtcp_loop
    data, loop = mtcp_loop.run(roundtrip())
    assert data == b"ping"
    assert isinstance(loop, mtcp_loop.MTCPLoop)
    assert loop.is_closed()


@pytest.mark.parametrize("base", ["asyncio"] + (["uvloop"] if HAVE_UVLOOP else []))
def test_bases(base):
    import mtcp_loop
    from mtcp_loop.loop import make_loop_class
    loop = mtcp_loop.new_event_loop(base=base)
    try:
        assert isinstance(loop, make_loop_class(base))
        assert loop._mtcp_base_name == base
        if base == "uvloop":
            import uvloop
            assert isinstance(loop, uvloop.Loop)
        else:
            assert isinstance(loop, asyncio.SelectorEventLoop)
        data, _ = loop.run_until_complete(roundtrip())
        assert data == b"ping"
        st = loop.stats()
        assert st["loop.userspace_connections"] == 2 and st["conn_accepted"] >= 1
        assert st["active_opens"] >= 1 and st["segs_out"] > 0
    finally:
        loop.close()


def test_policy_and_install():
    import mtcp_loop
    old = asyncio.get_event_loop_policy()
    try:
        pol = mtcp_loop.install(fallback="error")
        assert isinstance(pol, mtcp_loop.MTCPPolicy) and pol.config.fallback == "error"
        data, loop = asyncio.run(roundtrip())
        assert data == b"ping" and isinstance(loop, mtcp_loop.MTCPLoop)
        assert loop.mtcp_config.fallback == "error"
    finally:
        asyncio.set_event_loop_policy(old)


def test_runner_loop_factory():
    import mtcp_loop
    with asyncio.Runner(loop_factory=mtcp_loop.new_event_loop) as r:
        data, loop = r.run(roundtrip())
        assert data == b"ping" and isinstance(loop, mtcp_loop.MTCPLoop)


def test_fallback_error_names_address():
    import mtcp_loop

    async def main():
        with pytest.raises(OSError) as ei:
            await asyncio.open_connection("192.0.2.1", 80)
        assert ei.value.errno == 99 and "192.0.2.1" in str(ei.value)
        # loopback port with no listener: the stack answers RST -> refused
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", 9)
        st = asyncio.get_running_loop().stats()
        assert st["rst_out"] + st["rst_in"] >= 1
    mtcp_loop.run(main(), fallback="error")


def test_threads_share_the_stack():
    """A server loop in one thread and a client loop in another talk over user-space TCP."""
    import threading

    import mtcp_loop
    ready = threading.Event()
    box = {}

    def server_thread():
        async def main():
            async def handle(r, w):
                w.write((await r.readline()).upper())
                await w.drain()
                w.close()
            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            box["port"] = srv.sockets[0].getsockname()[1]
            box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["stop"].wait()
            srv.close()
            box["server_stats"] = asyncio.get_running_loop().stats()
        mtcp_loop.run(main())

    th = threading.Thread(target=server_thread)
    th.start()
    assert ready.wait(10)

    async def client():
        r, w = await asyncio.open_connection("127.0.0.1", box["port"])
        w.write(b"cross thread\n")
        line = await r.readline()
        w.close()
        return line, asyncio.get_running_loop().stats()

    line, cst = mtcp_loop.run(client())
    box["loop"].call_soon_threadsafe(box["stop"].set)
    th.join(10)
    assert line == b"CROSS THREAD\n"
    assert cst["loop.userspace_connected"] == 1 and cst["loop.kernel_connected"] == 0
    assert box["server_stats"]["loop.userspace_accepted"] == 1


def test_stats_without_traffic():
    import mtcp_loop
    loop = mtcp_loop.new_event_loop()
    try:
        st = loop.stats()
        assert st["loop.userspace_connections"] == 0
    finally:
        loop.close()


@pytest.mark.parametrize("how", ["loop", "policy"])
def test_run_app_sigint(how):
    """web.run_app(app, loop=mtcp_loop.new_event_loop()) and web.run_app under MTCPPolicy serve
    (a kernel client - urllib in a thread - reaches the app) and shut down cleanly on SIGINT."""
    pytest.importorskip("aiohttp")
    code = r"""
import os, signal, socket, threading, time, urllib.request
from aiohttp import web
import mtcp_loop
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
async def hello(request):
    return web.Response(text="hi")
app = web.Application(); app.router.add_get("/", hello)
def poke():
    for _ in range(100):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            print("GOT", body.decode(), flush=True)
            break
        except OSError:
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=poke, daemon=True).start()
if HOW == "loop":
    web.run_app(app, host="127.0.0.1", port=port, loop=mtcp_loop.new_event_loop(), print=None)
else:
    mtcp_loop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None)
print("CLEAN EXIT", flush=True)
"""
    code = f"HOW = {how!r}\n" + code
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "GOT hi" in p.stdout and "CLEAN EXIT" in p.stdout, (p.stdout, p.stderr)
    assert p.returncode == 0, p.stderr


def test_connect_timeout_is_timeouterror():
    """SYNs lost (100% loss on the link) -> ETIMEDOUT -> TimeoutError, as the kernel gives it."""
    import mtcp_loop

    async def main():
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 20)
        srv.close()
        return asyncio.get_running_loop().stats()

    st = mtcp_loop.run(main(), impair="loss=1.0,seed=1", initial_rto_us=20000, min_rto_us=10000,
                       syn_retries=2)
    assert st["syn_retrans"] >= 2 and st["conn_failed"] >= 1


def test_pcap(tmp_path):
    import mtcp_loop
    path = tmp_path / "trace.pcap"
    data, _ = mtcp_loop.run(roundtrip(), pcap=str(path))
    assert data == b"ping"
    raw = path.read_bytes()
    assert len(raw) > 24 + 3 * 16 and raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                                                   b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


@pytest.mark.parametrize("base", ["asyncio"] + (["uvloop"] if HAVE_UVLOOP else []))
def test_base_loop_features_unchanged(base, tmp_path):
    """Unix sockets, UDP and subprocesses are the base loop's, unchanged, on MTCPLoop."""
    import mtcp_loop

    async def main():
        loop = asyncio.get_running_loop()

        async def handle(r, w):
            w.write(await r.readexactly(2))
            await w.drain()
            w.close()

        path = str(tmp_path / "s.sock")
        us = await asyncio.start_unix_server(handle, path)
        r, w = await asyncio.open_unix_connection(path)
        w.write(b"ux")
        assert await r.read() == b"ux"
        w.close()
        us.close()

        got = loop.create_future()

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, tr):
                self.tr = tr

            def datagram_received(self, data, addr):
                if data == b"ping":
                    self.tr.sendto(b"pong", addr)
                elif not got.done():
                    got.set_result(data)

        st, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
        ct, _ = await loop.create_datagram_endpoint(Udp, remote_addr=st.get_extra_info("sockname"))
        ct.sendto(b"ping")
        assert await asyncio.wait_for(got, 5) == b"pong"
        st.close()
        ct.close()

        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('sub')",
                                                 stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        assert out.strip() == b"sub"
        assert loop.stats()["loop.userspace_connections"] == 0

    mtcp_loop.run(main(), base=base)


def test_many_threads_many_loops():
    """One server loop and four client loops (both bases) in five threads, all over the stack."""
    import os
    import threading

    import mtcp_loop
    ready = threading.Event()
    box = {}

    def server():
        async def main():
            async def handle(r, w):
                while d := await r.read(65536):
                    w.write(d)
                    await w.drain()
                w.close()
            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            box["port"] = srv.sockets[0].getsockname()[1]
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()
            srv.close()
            box["st"] = asyncio.get_running_loop().stats()
        mtcp_loop.run(main())

    res = []

    def client(i):
        async def main():
            ok = 0
            for _ in range(10):
                r, w = await asyncio.open_connection("127.0.0.1", box["port"])
                data = os.urandom(200000)
                w.write(data)
                w.write_eof()
                ok += (await r.read()) == data
                w.close()
            res.append(ok)
        mtcp_loop.run(main(), base=("asyncio" if i % 2 or not HAVE_UVLOOP else "uvloop"))

    ts = threading.Thread(target=server)
    ts.start()
    assert ready.wait(10)
    cs = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for c in cs:
        c.start()
    for c in cs:
        c.join(50)
    box["loop"].call_soon_threadsafe(box["stop"].set)
    ts.join(10)
    assert res == [10, 10, 10, 10]
    assert box["st"]["loop.userspace_accepted"] == 40 and box["st"]["loop.kernel_connections"] == 0
