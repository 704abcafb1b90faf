"""Interop with Linux TCP over real ring pairs (tap, packet, xdp) in network namespaces.

Topology (mtcp_loop/tools/testbed.py, prefix "mtcpi<pid>"): the kernel peer is 198.18.0.1 / 2001:db8::1, the
user-space stack (an MTCPLoop in a subprocess that entered the stack's namespace with pyroute2's
``netns.setns``) is 198.18.0.2 / 2001:db8::2. tap: the TAP device lives in the peer namespace and
the stack attaches to its queue there; packet/xdp: a veth pair, the stack on mtcp-s0 in its own
namespace. The testbed is always torn down (fixture finalizer).

Needs root + netns: skipped when missing, unless MTCP_REQUIRE_NETNS=1 (CI), where it FAILS.

This file is also the stack-side / kernel-side helper program: ``python tests/interop/test_interop.py
<role> '<json>'`` (roles: stack-serve, stack-client, kernel-serve, kernel-client).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HTTP_PORT = 8080
ECHO_PORT = 7000
BULK_PORT = 7001
CLOSED_PORT = 9
MB = 1 << 20
IMPAIR = "loss=5%,reorder=25%,duplicate=2%,corrupt=0.5%,delay=2ms,seed=7"


# ============================================================================================
# helper program (runs inside a namespace; no pytest here)
# ============================================================================================
_PATTERN = {}


def pattern(seed: int) -> bytes:
    """1 MiB of seeded pseudo-random bytes; streams are this block repeated (and cut)."""
    b = _PATTERN.get(seed)
    if b is None:
        b = _PATTERN[seed] = random.Random(seed).randbytes(MB)
    return b


def pattern_sha(seed: int, n: int) -> str:
    h = hashlib.sha256()
    blk = pattern(seed)
    left = n
    while left:
        k = min(left, MB)
        h.update(blk[:k])
        left -= k
    return h.hexdigest()


async def bulk_handler(reader, writer):
    """Bulk protocol: b"U" + len(8) + data -> sha256 hex (64 B) of the data.
    b"D" + len(8) + seed(8) -> len bytes of pattern(seed), then the sender closes."""
    try:
        hdr = await reader.readexactly(9)
        op, n = hdr[:1], struct.unpack("!Q", hdr[1:])[0]
        if op == b"U":
            h = hashlib.sha256()
            left = n
            while left:
                chunk = await reader.read(min(left, 1 << 18))
                if not chunk:
                    raise ConnectionError(f"upload ended early, {left} bytes missing")
                h.update(chunk)
                left -= len(chunk)
            writer.write(h.hexdigest().encode())
            await writer.drain()
        elif op == b"D":
            seed = struct.unpack("!Q", await reader.readexactly(8))[0]
            blk = pattern(seed)
            left = n
            while left:
                k = min(left, MB)
                writer.write(blk[:k])
                left -= k
                await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        print(f"bulk_handler: {exc!r}", file=sys.stderr, flush=True)
        writer.close()


async def echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        writer.close()


async def bulk_upload(host, port, n, seed, open_connection=asyncio.open_connection):
    reader, writer = await open_connection(host, port)
    writer.write(b"U" + struct.pack("!Q", n))
    blk = pattern(seed)
    left = n
    while left:
        k = min(left, MB)
        writer.write(blk[:k])
        left -= k
        await writer.drain()
    got = (await reader.readexactly(64)).decode()
    writer.close()
    return got == pattern_sha(seed, n), got


async def bulk_download(host, port, n, seed, open_connection=asyncio.open_connection):
    reader, writer = await open_connection(host, port)
    writer.write(b"D" + struct.pack("!QQ", n, seed))
    await writer.drain()
    h = hashlib.sha256()
    total = 0
    while True:
        chunk = await reader.read(1 << 18)
        if not chunk:
            break
        h.update(chunk)
        total += len(chunk)
    writer.close()
    return total == n and h.hexdigest() == pattern_sha(seed, n), total


def make_app():
    from aiohttp import web

    async def hello(request):
        return web.Response(text="hello from mtcp_loop\n")

    async def blob(request):
        n = int(request.query.get("n", "1024"))
        return web.Response(body=pattern(3)[:n] if n <= MB else pattern(3) * (n // MB))

    async def sha(request):
        h = hashlib.sha256()
        async for chunk in request.content.iter_chunked(1 << 16):
            h.update(chunk)
        return web.Response(text=h.hexdigest())

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/blob", blob)
    app.router.add_post("/sha", sha)
    return app


async def _serve_all(hosts):
    from aiohttp import web
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    servers = []
    for h in hosts:
        site = web.TCPSite(runner, h, HTTP_PORT, backlog=1024)
        await site.start()
        servers.append(await asyncio.start_server(echo_handler, h, ECHO_PORT, backlog=1024))
        servers.append(await asyncio.start_server(bulk_handler, h, BULK_PORT, backlog=128))
    return runner, servers


async def _wait_stdin_eof():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def _stack_config(p):
    from mtcp_loop.config import MTCPConfig
    kw = dict(backend=p["backend"], ifname=p["ifname"], ipv4=p.get("ipv4"), ipv6=p.get("ipv6"),
              base=p.get("base", os.environ.get("MTCP_INTEROP_BASE", "auto")))
    for k in ("pcap", "impair", "mac", "offload", "xdp_mode", "mtu", "min_rto_us", "ipv4_gw", "ipv6_gw"):
        if p.get(k) is not None:
            kw[k] = p[k]
    return MTCPConfig(**kw)


def role_stack_serve(p):
    """MTCPLoop servers (aiohttp, echo, bulk) on the stack's addresses; READY line; run until
    stdin closes; print STATS json."""
    from mtcp_loop.policy import new_event_loop
    loop = new_event_loop(_stack_config(p))
    asyncio.set_event_loop(loop)

    async def main():
        runner, servers = await _serve_all(["0.0.0.0"] + (["::"] if p.get("ipv6") else []))
        print("READY", flush=True)
        await _wait_stdin_eof()
        st = loop.stats()
        await runner.cleanup()
        for s in servers:
            s.close()
        print("STATS " + json.dumps(st), flush=True)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def role_stack_client(p):
    """MTCPLoop clients against the kernel servers in the peer namespace; prints RESULT json."""
    import aiohttp
    from mtcp_loop.policy import new_event_loop
    loop = new_event_loop(_stack_config(p))
    asyncio.set_event_loop(loop)
    peer4, peer6 = p["peer_v4"], p.get("peer_v6")
    n = p.get("bulk", 0)

    async def main():
        res = {}
        async with aiohttp.ClientSession() as s:
            for host in [peer4] + ([f"[{peer6}]"] if peer6 else []):
                async with s.get(f"http://{host}:{HTTP_PORT}/") as r:
                    res[f"http_get {host}"] = (r.status, await r.text())
                body = pattern(5)[:300000]
                async with s.post(f"http://{host}:{HTTP_PORT}/sha", data=body) as r:
                    res[f"http_post {host}"] = (await r.text()) == hashlib.sha256(body).hexdigest()
        for host in [peer4] + ([peer6] if peer6 else []):
            async def one(i, host=host):
                rd, wr = await asyncio.open_connection(host, ECHO_PORT)
                msg = f"hello {i} ".encode() * 50
                wr.write(msg)
                got = await rd.readexactly(len(msg))
                wr.close()
                return got == msg
            oks = await asyncio.gather(*(one(i) for i in range(p.get("conns", 20))))
            res[f"echo {host}"] = sum(oks)
        if n:
            res["upload"] = (await bulk_upload(peer4, BULK_PORT, n, 11))[0]
            res["download"] = (await bulk_download(peer4, BULK_PORT, n, 12))[0]
        try:
            await asyncio.open_connection(peer4, CLOSED_PORT)
            res["closed_port"] = "connected?!"
        except ConnectionRefusedError:
            res["closed_port"] = "refused"
        res["stats"] = loop.stats()
        print("RESULT " + json.dumps(res), flush=True)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), p.get("timeout", 120)))
    finally:
        loop.close()


def role_kernel_serve(p):
    """Stock asyncio (kernel sockets) servers on the peer's addresses; READY; until stdin EOF."""
    async def main():
        runner, servers = await _serve_all([p["peer_v4"]] + ([p["peer_v6"]] if p.get("peer_v6") else []))
        print("READY", flush=True)
        await _wait_stdin_eof()
        await runner.cleanup()
    asyncio.run(main())


def role_kernel_client(p):
    """Kernel-socket clients (blocking sockets in threads + asyncio) against the stack."""
    from concurrent.futures import ThreadPoolExecutor
    res = {}
    targets = [(socket.AF_INET, p["stack_v4"])] + ([(socket.AF_INET6, p["stack_v6"])] if p.get("stack_v6") else [])

    def echo_once(fam, host, i):
        with socket.create_connection((host, ECHO_PORT), timeout=20) as s:
            msg = os.urandom(1000 + i)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = s.recv(65536)
                if not d:
                    break
                got += d
            return got == msg

    conns = p.get("conns", 200)
    with ThreadPoolExecutor(32) as ex:
        for fam, host in targets:
            res[f"echo {host}"] = sum(ex.map(lambda i, h=host, f=fam: echo_once(f, h, i), range(conns)))

    async def many(host):
        async def one(i):
            rd, wr = await asyncio.open_connection(host, ECHO_PORT)
            wr.write(b"x" * 100)
            got = await rd.readexactly(100)
            wr.close()
            return got == b"x" * 100
        return sum(await asyncio.gather(*(one(i) for i in range(conns))))

    for fam, host in targets:
        res[f"async_echo {host}"] = asyncio.run(asyncio.wait_for(many(host), 60))
    try:
        socket.create_connection((p["stack_v4"], CLOSED_PORT), timeout=5).close()
        res["closed_port"] = "connected?!"
    except ConnectionRefusedError:
        res["closed_port"] = "refused"
    except OSError as exc:
        res["closed_port"] = repr(exc)
    n = p.get("bulk", 0)
    if n:
        async def bulk():
            t0 = time.monotonic()
            up = (await bulk_upload(p["stack_v4"], BULK_PORT, n, 21))[0]
            t1 = time.monotonic()
            down = (await bulk_download(p["stack_v4"], BULK_PORT, n, 22))[0]
            res["upload_s"], res["download_s"] = round(t1 - t0, 2), round(time.monotonic() - t1, 2)
            return up, down
        res["upload"], res["download"] = asyncio.run(asyncio.wait_for(bulk(), p.get("timeout", 120)))
    print("RESULT " + json.dumps(res), flush=True)



# ============================================================================================
# pytest side
# ============================================================================================
try:
    import pytest
except ImportError:  # the helper roles run without pytest
    pytest = None

if pytest is not None:
    import queue
    import threading

    KINDS = ("tap", "packet", "xdp")
    REQUIRE = os.environ.get("MTCP_REQUIRE_NETNS") == "1"
    pytestmark = [pytest.mark.netns]
    BULK = int(os.environ.get("MTCP_INTEROP_BULK_MB", "32")) * MB

    def _gate():
        why = None
        if os.geteuid() != 0:
            why = "interop tests need root (CAP_NET_ADMIN) for network namespaces"
        else:
            try:
                import pyroute2  # noqa: F401
                import aiohttp  # noqa: F401
                from mtcp_loop import _native  # noqa: F401
            except ImportError as exc:
                why = f"interop tests need pyroute2, aiohttp and the built extension: {exc}"
        if why:
            if REQUIRE:
                pytest.fail(f"MTCP_REQUIRE_NETNS=1 but {why}", pytrace=False)
            pytest.skip(why)

    class Proc:
        """A helper role in a subprocess inside a namespace; lines collected by a thread."""

        def __init__(self, bed, ns, role, params, env=None):
            self.role = role
            self.lines = queue.Queue()
            self.out = []
            e = dict(os.environ)
            e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
            e.update(env or {})
            self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), role, json.dumps(params)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, preexec_fn=bed._preexec(ns), env=e, cwd=ROOT)
            self.t = threading.Thread(target=self._pump, daemon=True)
            self.t.start()

        def _pump(self):
            for line in self.p.stdout:
                self.out.append(line)
                self.lines.put(line)
            self.lines.put(None)

        def expect(self, prefix, timeout):
            end = time.monotonic() + timeout
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    line = self.lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    break
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            self.kill()
            raise AssertionError(f"{self.role}: no {prefix!r} line within {timeout}s; output:\n"
                                 + "".join(self.out)[-4000:])

        def finish(self, prefix="STATS ", timeout=30):
            """Close stdin (the role's stop signal) and return the parsed `prefix` json."""
            try:
                self.p.stdin.close()
            except OSError:
                pass
            txt = self.expect(prefix, timeout)
            self.p.wait(timeout)
            return json.loads(txt)

        def kill(self):
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait(10)

    def _icmp_csum(b):
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF

    def kernel_ping(bed, host, v6=False, timeout=2.0):
        """ICMP echo from the kernel peer's namespace (raw socket); True if answered."""
        with bed.netns(bed.peer_ns):
            if v6:
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            ident, payload = os.getpid() & 0xFFFF, b"mtcp-ping" * 6
            for seq in range(1, 4):
                typ = 128 if v6 else 8
                hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq)
                if not v6:
                    hdr = struct.pack("!BBHHH", typ, 0, _icmp_csum(hdr + payload), ident, seq)
                s.sendto(hdr + payload, (host, 0))
                end = time.monotonic() + timeout / 3
                while time.monotonic() < end:
                    s.settimeout(max(0.01, end - time.monotonic()))
                    try:
                        data, addr = s.recvfrom(2048)
                    except socket.timeout:
                        break
                    icmp = data if v6 else data[(data[0] & 0xF) * 4:]
                    if (addr[0] == host and icmp[0] == (129 if v6 else 0)
                            and struct.unpack("!HH", icmp[4:8]) == (ident, seq) and icmp[8:] == payload):
                        return True
            return False
        finally:
            s.close()

    @pytest.fixture(scope="module", params=KINDS)
    def bed(request):
        _gate()
        from mtcp_loop.tools.testbed import Testbed
        tb = Testbed(prefix=f"mtcpi{os.getpid() % 100000}")
        request.addfinalizer(tb.down)      # torn down even when up() or a test fails
        info = tb.up(request.param)
        tb.info = info
        tb.kind = request.param
        return tb

    def stack_params(bed, **kw):
        i = bed.info
        p = dict(backend=bed.kind, ifname=i["stack_if"], ipv4=f"{i['stack_v4']}/{i['v4_prefix']}",
                 ipv6=f"{i['stack_v6']}/{i['v6_prefix']}", peer_v4=i["peer_v4"], peer_v6=i["peer_v6"],
                 stack_v4=i["stack_v4"], stack_v6=i["stack_v6"])
        p.update(kw)
        return p

    @pytest.fixture
    def stack(bed, request):
        """Start an MTCPLoop server role in the stack's namespace: stack(**params) -> Proc."""
        procs = []

        def start(**kw):
            pr = Proc(bed, bed.info["stack_ns"], "stack-serve", stack_params(bed, **kw))
            procs.append(pr)
            pr.expect("READY", 30)
            return pr
        yield start
        for pr in procs:
            pr.kill()

    def peer_run(bed, argv, timeout=60):
        r = bed.peer_run(argv, timeout=timeout)
        assert r.returncode == 0, f"{argv}: rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        return r.stdout

    def run_role(bed, ns, role, params, timeout):
        pr = Proc(bed, ns, role, params)
        try:
            res = json.loads(pr.expect("RESULT ", timeout))
            pr.p.wait(30)
            return res
        finally:
            pr.kill()

    # ---------------------------------------------------------------------------------------
    def test_ping_closed_port_and_curl(bed, stack):
        srv = stack()
        assert kernel_ping(bed, bed.info["stack_v4"]), "ICMP echo to the stack (IPv4) not answered"
        assert kernel_ping(bed, bed.info["stack_v6"], v6=True), "ICMPv6 echo to the stack not answered"
        for host in (bed.info["stack_v4"], f"[{bed.info['stack_v6']}]"):
            out = peer_run(bed, ["curl", "-sS", "-m", "10", f"http://{host}:{HTTP_PORT}/"])
            assert out == "hello from mtcp_loop\n"
            out = peer_run(bed, ["curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{size_download}",
                                 f"http://{host}:{HTTP_PORT}/blob?n={4 * MB}"])
            assert int(out) == 4 * MB
        # closed port: the kernel client gets ECONNREFUSED (our RST)
        with bed.netns(bed.peer_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            s.connect((bed.info["stack_v4"], CLOSED_PORT))
        s.close()
        st = srv.finish()
        assert st["icmp_echo_answered"] >= 2 or st["icmp_in"] >= 2
        assert st["loop.userspace_accepted"] >= 4 and st["loop.kernel_accepted"] == 0
        assert st["rst_out"] >= 1

    def test_wrk_many_connections(bed, stack):
        srv = stack()
        out = peer_run(bed, ["wrk", "-t1", "-c50", "-d3s", "--timeout", "5s",
                             f"http://{bed.info['stack_v4']}:{HTTP_PORT}/"], timeout=30)
        rps = float(out.split("Requests/sec:")[1].split()[0])
        assert "Non-2xx" not in out and "Socket errors" not in out, out
        assert rps > 50, out
        out6 = peer_run(bed, ["wrk", "-t1", "-c20", "-d1s", "--timeout", "5s",
                              f"http://[{bed.info['stack_v6']}]:{HTTP_PORT}/"], timeout=30)
        assert "Non-2xx" not in out6 and "Socket errors" not in out6, out6
        st = srv.finish()
        assert st["loop.userspace_accepted"] >= 70 and st["loop.kernel_accepted"] == 0
        print(f"[{bed.kind}] wrk -t1 -c50 -d3s: {rps:.0f} req/s")

    def test_kernel_clients_echo_and_bulk(bed, stack):
        srv = stack()
        res = run_role(bed, bed.info["peer_ns"], "kernel-client",
                       stack_params(bed, conns=200, bulk=BULK, timeout=150), timeout=200)
        for host in (bed.info["stack_v4"], bed.info["stack_v6"]):
            assert res[f"echo {host}"] == 200, res
            assert res[f"async_echo {host}"] == 200, res
        assert res["closed_port"] == "refused", res
        assert res["upload"] is True and res["download"] is True, res
        st = srv.finish()
        assert st["loop.userspace_accepted"] >= 802 and st["loop.kernel_accepted"] == 0
        print(f"[{bed.kind}] clean {BULK // MB} MB: kernel->stack {res['upload_s']} s, "
              f"stack->kernel {res['download_s']} s")

    def test_stack_clients_to_kernel_servers(bed):
        _gate()
        ks = Proc(bed, bed.info["peer_ns"], "kernel-serve", stack_params(bed))
        try:
            ks.expect("READY", 30)
            res = run_role(bed, bed.info["stack_ns"], "stack-client",
                           stack_params(bed, conns=50, bulk=BULK, timeout=150), timeout=200)
        finally:
            ks.kill()
        for host in (bed.info["peer_v4"], f"[{bed.info['peer_v6']}]"):
            assert res[f"http_get {host}"] == [200, "hello from mtcp_loop\n"], res
            assert res[f"http_post {host}"] is True, res
        for host in (bed.info["peer_v4"], bed.info["peer_v6"]):
            assert res[f"echo {host}"] == 50, res
        assert res["upload"] is True and res["download"] is True, res
        assert res["closed_port"] == "refused", res
        st = res["stats"]
        assert st["loop.userspace_connected"] >= 104 and st["loop.kernel_connected"] == 0, st

    def test_impaired_bulk_all_backends():
        """32 MB each way through the impairment layer, for tap, packet and xdp at once: each
        backend in its own testbed (own namespaces), the three transfers run concurrently (they
        are bound by loss recovery timers, not CPU), so CI pays for the slowest, not the sum."""
        _gate()
        from mtcp_loop.tools.testbed import Testbed
        beds, procs, clients, failures = [], [], {}, []
        try:
            for kind in KINDS:
                tb = Testbed(prefix=f"mtcpj{os.getpid() % 100000}{kind[0]}")
                beds.append(tb)
                tb.info = tb.up(kind)
                tb.kind = kind
                srv = Proc(tb, tb.info["stack_ns"], "stack-serve",
                           stack_params(tb, impair=IMPAIR, min_rto_us=20000))
                procs.append(srv)
                srv.expect("READY", 30)
                cl = Proc(tb, tb.info["peer_ns"], "kernel-client",
                          stack_params(tb, conns=20, bulk=BULK, timeout=200))
                procs.append(cl)
                clients[kind] = (tb, srv, cl)
            for kind, (tb, srv, cl) in clients.items():
                try:
                    res = json.loads(cl.expect("RESULT ", 240))
                    st = srv.finish()
                except AssertionError as exc:
                    failures.append(f"{kind}: {exc}")
                    continue
                ok = (res.get("upload") is True and res.get("download") is True
                      and res.get(f"echo {tb.info['stack_v4']}") == 20
                      and st["impair.dropped"] > 0 and st["impair.corrupted"] > 0
                      and st["retrans_segs"] > 0 and st["drop_bad_csum"] > 0
                      and st["loop.kernel_accepted"] == 0)
                print(f"[{kind}] impaired 32 MB: upload {res.get('upload_s')} s, download "
                      f"{res.get('download_s')} s, retrans {st['retrans_segs']}, rto {st['timeouts']}")
                if not ok:
                    failures.append(f"{kind}: result {res} stats "
                                    f"{ {k: v for k, v in st.items() if k.startswith(('impair', 'retrans', 'drop_bad'))} }")
        finally:
            for pr in procs:
                pr.kill()
            for tb in beds:
                tb.down()
        assert not failures, "\n".join(failures)

    def test_off_link_via_gateway(bed):
        """The kernel peer also owns 198.19.0.1 / 2001:db8:1::1 (on its lo, off the stack's
        subnet): MTCPLoop clients reach them only through ipv4_gw / ipv6_gw (the peer)."""
        _gate()
        from pyroute2 import NetNS
        far4, far6 = "198.19.0.1", "2001:db8:1::1"
        with NetNS(bed.info["peer_ns"]) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.addr("add", index=lo, address=far4, prefixlen=32)
            ns.addr("add", index=lo, address=far6, prefixlen=128)
        try:
            ks = Proc(bed, bed.info["peer_ns"], "kernel-serve", dict(peer_v4=far4, peer_v6=far6))
            try:
                ks.expect("READY", 30)
                res = run_role(bed, bed.info["stack_ns"], "stack-client",
                               stack_params(bed, peer_v4=far4, peer_v6=far6, conns=10, bulk=0,
                                            ipv4_gw=bed.info["peer_v4"], ipv6_gw=bed.info["peer_v6"]),
                               timeout=120)
            finally:
                ks.kill()
        finally:
            with NetNS(bed.info["peer_ns"]) as ns:
                lo = ns.link_lookup(ifname="lo")[0]
                for a, pl in ((far4, 32), (far6, 128)):
                    try:
                        ns.addr("del", index=lo, address=a, prefixlen=pl)
                    except Exception:
                        pass
        assert res[f"http_get {far4}"] == [200, "hello from mtcp_loop\n"], res
        assert res[f"http_get [{far6}]"] == [200, "hello from mtcp_loop\n"], res
        assert res[f"echo {far4}"] == 10 and res[f"echo {far6}"] == 10, res
        assert res["closed_port"] == "refused", res
        assert res["stats"]["loop.kernel_connected"] == 0, res["stats"]

    @pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
    def test_pcap_clean_for_tshark(bed, stack, tmp_path):
        cap = tmp_path / f"{bed.kind}.pcap"
        srv = stack(pcap=str(cap), offload=False)
        for host in (bed.info["stack_v4"], f"[{bed.info['stack_v6']}]"):
            peer_run(bed, ["curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{host}:{HTTP_PORT}/blob?n={MB}"])
        kernel_ping(bed, bed.info["stack_v4"])
        srv.finish()
        assert cap.stat().st_size > MB
        ours = f"(ip.src=={bed.info['stack_v4']} || ipv6.src=={bed.info['stack_v6']})"
        flt = (f"_ws.malformed || _ws.expert.severity >= error || ({ours} && (ip.checksum.status == 0 || "
               "tcp.checksum.status == 0 || icmp.checksum.status == 0 || icmpv6.checksum.status == 0))")
        r = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "ip.check_checksum:TRUE",
                            "-o", "tcp.check_checksum:TRUE", "-Y", flt], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "", f"tshark flags frames:\n{r.stdout[:3000]}"
        n = subprocess.run(["tshark", "-n", "-r", str(cap)], capture_output=True, text=True, timeout=60)
        assert len(n.stdout.splitlines()) > 100

    @pytest.mark.long
    @pytest.mark.timeout(1800)
    @pytest.mark.parametrize("impair", [None, IMPAIR], ids=["clean", "impaired"])
    def test_long_256mb_each_way(bed, stack, impair):
        srv = stack(impair=impair, min_rto_us=20000 if impair else None)
        res = run_role(bed, bed.info["peer_ns"], "kernel-client",
                       stack_params(bed, conns=10, bulk=256 * MB, timeout=1500), timeout=1600)
        assert res["upload"] is True and res["download"] is True, res
        srv.finish()


ROLES = {"stack-serve": role_stack_serve, "stack-client": role_stack_client,
         "kernel-serve": role_kernel_serve, "kernel-client": role_kernel_client}

if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
    sys.exit(0)
