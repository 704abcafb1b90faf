"""TCP conformance: each behaviour is a mixin bound to stock asyncio (the oracle) and to MTCPLoop on
uvloop, on asyncio's selector loop, and on asyncio's selector loop in virtual time (see
conftest.bind; ``vtime_skip`` marks what needs real sockets or threads)."""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import struct
import threading

import pytest

from tests.helpers import bind

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


class EchoProto(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)

    def eof_received(self):
        self.tr.close()


class CollectProto(asyncio.Protocol):
    """Client side: collects everything, records callbacks in order."""

    def __init__(self, loop):
        self.loop = loop
        self.data = bytearray()
        self.events = []
        self.done = loop.create_future()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.eof_result = None
        self.paused = 0
        self.resumed = 0

    def connection_made(self, tr):
        self.tr = tr
        self.events.append("made")
        self.made.set_result(None)

    def data_received(self, data):
        assert isinstance(data, (bytes, bytearray))
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_result

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        if not self.done.done():
            self.done.set_result(exc)


async def wait_until(pred, timeout=10.0, step=0.005):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


# ------------------------------------------------------------------------------------------
class _TestEcho:
    def test_protocol_echo(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            for i in range(50):
                tr.write(b"ping %d\n" % i)
            want = b"".join(b"ping %d\n" % i for i in range(50))
            await wait_until(lambda: len(pr.data) >= len(want))
            assert bytes(pr.data) == want
            tr.write_eof()
            exc = await pr.done
            assert exc is None
            assert pr.events[0] == "made" and pr.events[-1] == ("lost", None)
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_streams_echo_localhost(self):
        async def handle(r, w):
            while True:
                line = await r.readline()
                if not line:
                    break
                w.write(line.upper())
                await w.drain()
            w.close()
            await w.wait_closed()

        async def main():
            srv = await asyncio.start_server(handle, "localhost", 0, family=socket.AF_INET)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("localhost", port)
            for i in range(20):
                w.write(b"hello %d\n" % i)
                await w.drain()
                assert await r.readline() == b"HELLO %d\n" % i
            w.write_eof()
            assert await r.read() == b""
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_ipv6_echo(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, "::1", 0)
            sn = srv.sockets[0].getsockname()
            assert sn[0] == "::1" and len(sn) == 4
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), "::1", sn[1])
            assert tr.get_extra_info("peername")[:2] == ("::1", sn[1])
            tr.write(b"v6 data")
            await wait_until(lambda: len(pr.data) >= 7)
            assert bytes(pr.data) == b"v6 data"
            tr.close()
            await pr.done
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_writelines_and_memoryview(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            tr.writelines([b"a", bytearray(b"bc"), memoryview(b"xdefx")[1:4]])
            await wait_until(lambda: len(pr.data) >= 6)
            assert bytes(pr.data) == b"abcdef"
            with pytest.raises(TypeError):
                tr.write("str")
            tr.write(b"")
            tr.close()
            assert tr.is_closing()
            tr.write(b"after close")  # ignored, like asyncio
            await pr.done
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestLargeTransfer:
    SIZE = 16 * 1024 * 1024

    def _transfer(self, size):
        async def handle(r, w):
            h = hashlib.sha256()
            n = 0
            while n < size:
                chunk = await r.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            # send back `size` bytes of a different pattern
            block = bytes(range(256)) * 4096  # 1 MiB
            sent = 0
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                w.write(piece)
                sent += len(piece)
                await w.drain()
            w.write(h.digest())
            await w.drain()
            w.close()
            await w.wait_closed()

        async def main():
            srv = await asyncio.start_server(handle, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            payload = os.urandom(1 << 20)
            h_up = hashlib.sha256()
            sent = 0
            while sent < size:
                piece = payload[: min(len(payload), size - sent)]
                w.write(piece)
                h_up.update(piece)
                sent += len(piece)
                await w.drain()
            block = bytes(range(256)) * 4096
            h_exp = hashlib.sha256()
            left = size
            while left:
                piece = block[: min(len(block), left)]
                h_exp.update(piece)
                left -= len(piece)
            h_down = hashlib.sha256()
            got = 0
            while got < size:
                chunk = await r.read(min(1 << 20, size - got))
                assert chunk, "EOF before all data"
                h_down.update(chunk)
                got += len(chunk)
            digest = await r.readexactly(32)
            assert digest == h_up.digest(), "upload corrupted"
            assert h_down.digest() == h_exp.digest(), "download corrupted"
            assert await r.read() == b""
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main(), timeout=600)

    def test_16mb_each_way_sha256(self):
        self._transfer(self.SIZE)

    @pytest.mark.long
    @pytest.mark.timeout(900)
    def test_100mb_each_way_sha256(self):
        self._transfer(100 * 1024 * 1024)


# ------------------------------------------------------------------------------------------
class _TestManyConnections:
    # default config: both ends live in this loop's engine (2 blocks per connection); the loopback
    # default max_conns (65536) covers it

    def _n(self):
        if self.is_mtcp:
            return int(os.environ.get("MTCP_TEST_CONNS", "10000"))
        return 3000   # stock asyncio: two kernel fds per connection; ulimit -n is 20000 here

    def test_many_concurrent_connections(self):
        n = self._n()

        finished = []

        async def handle(r, w):
            data = await r.readexactly(8)
            w.write(data[::-1])
            await w.drain()
            await r.read()  # wait for client's EOF
            w.close()
            finished.append(1)

        async def main():
            srv = await asyncio.start_server(handle, HOST, 0, backlog=4096)
            port = srv.sockets[0].getsockname()[1]
            conns = []
            sem = asyncio.Semaphore(1000)

            async def open_one(i):
                async with sem:
                    r, w = await asyncio.open_connection(HOST, port)
                conns.append((i, r, w))

            await asyncio.gather(*(open_one(i) for i in range(n)))
            assert len(conns) == n  # all open at the same time now
            for i, r, w in conns:
                w.write(struct.pack("!Q", i))

            async def check(i, r, w):
                assert await r.readexactly(8) == struct.pack("!Q", i)[::-1]
                w.close()

            await asyncio.gather(*(check(*c) for c in conns))
            for _, _, w in conns:
                await w.wait_closed()
            await wait_until(lambda: len(finished) == n, timeout=60)
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2 * n)
        self.run(main(), timeout=300)


# ------------------------------------------------------------------------------------------
class _TestFlowControl:
    def test_write_flow_control_pause_resume(self):
        """Peer does not read -> writer's buffer grows past high water -> pause_writing; peer
        reads -> resume_writing."""
        async def main():
            server_tr = self.loop.create_future()

            class Lazy(asyncio.Protocol):
                def connection_made(self, tr):
                    tr.pause_reading()
                    server_tr.set_result(tr)

                def data_received(self, data):
                    pass

            srv = await self.loop.create_server(Lazy, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            str_ = await server_tr
            chunk = b"x" * 65536
            total = 0
            while pr.paused == 0 and total < 64 * 1024 * 1024:
                tr.write(chunk)
                total += len(chunk)
                await asyncio.sleep(0)
            assert pr.paused == 1, "pause_writing never called"
            assert tr.get_write_buffer_size() > 64 * 1024
            # the peer is not reading: the buffer does not drain
            size_before = tr.get_write_buffer_size()
            await asyncio.sleep(0.2)
            assert tr.get_write_buffer_size() >= size_before - 16384 and pr.resumed == 0  # probes may take a little
            str_.resume_reading()
            await wait_until(lambda: pr.resumed == 1, timeout=20)
            assert tr.get_write_buffer_size() <= 16 * 1024
            tr.close()
            srv.close()
        self.run(main())

    def test_pause_reading_stops_peer(self):
        """pause_reading stops consuming: the sender's data piles up in its own buffer (the window
        closed); nothing more is delivered while paused; resume delivers everything."""
        async def main():
            got = bytearray()
            server_tr = self.loop.create_future()

            class Reader(asyncio.Protocol):
                def connection_made(self, tr):
                    server_tr.set_result(tr)

                def data_received(self, data):
                    got.extend(data)

            srv = await self.loop.create_server(Reader, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            stp = await server_tr
            tr.write(b"a" * 1000)
            await wait_until(lambda: len(got) == 1000)
            stp.pause_reading()
            assert not stp.is_reading()
            total = 1000
            block = b"b" * (256 * 1024)
            # write until the writer's own buffer holds data: the peer's window closed
            for _ in range(400):
                tr.write(block)
                total += len(block)
                await asyncio.sleep(0.005)
                if tr.get_write_buffer_size() >= 2 * len(block):
                    break
            assert tr.get_write_buffer_size() >= 2 * len(block), \
                "sender never stalled although the peer paused reading"
            seen = len(got)
            await asyncio.sleep(0.3)   # let what is in flight settle
            stalled = tr.get_write_buffer_size()
            await asyncio.sleep(0.3)
            assert len(got) == seen, "data delivered while reading was paused"
            if self.is_mtcp:
                info = stp.conn_info()
                assert info["rcv_wnd"] < 16384 and info["rcvbuf_used"] > 128 * 1024, info
            assert tr.get_write_buffer_size() >= stalled - 16384, (tr.get_write_buffer_size(), stalled)
            stp.resume_reading()
            await wait_until(lambda: len(got) == total, timeout=30)
            assert got[:1000] == b"a" * 1000 and got[1000:] == b"b" * (total - 1000)
            tr.close()
            await pr.done
            srv.close()
        self.run(main())

    def test_streams_drain_backpressure(self):
        async def main():
            release = asyncio.Event()
            received = []

            async def handle(r, w):
                await release.wait()
                n = 0
                while True:
                    d = await r.read(1 << 16)
                    if not d:
                        break
                    n += len(d)
                received.append(n)
                w.close()

            srv = await asyncio.start_server(handle, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            blocked = False
            total = 0
            for _ in range(200):
                w.write(b"z" * 65536)
                total += 65536
                try:
                    await asyncio.wait_for(w.drain(), 0.05)
                except asyncio.TimeoutError:
                    blocked = True
                    break
            assert blocked, "drain() never blocked although the reader did not read"
            release.set()
            await w.drain()
            w.write_eof()
            await wait_until(lambda: received, timeout=30)
            assert received[0] == total
            w.close()
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestHalfCloseAndEOF:
    def test_half_close_keep_open(self):
        """Client write_eof; server's eof_received returns True and it still sends; client
        reads response then EOF."""
        async def main():
            class Srv(asyncio.Protocol):
                def connection_made(self, tr):
                    self.tr = tr
                    self.buf = b""

                def data_received(self, d):
                    self.buf += d

                def eof_received(self):
                    assert self.tr.can_write_eof()
                    self.tr.write(b"got:" + self.buf)
                    self.tr.write_eof()
                    return True

            srv = await self.loop.create_server(Srv, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            pr.eof_result = True
            tr.write(b"question")
            tr.write_eof()
            with pytest.raises(RuntimeError):
                tr.write(b"more")
            await pr.eof
            assert bytes(pr.data) == b"got:question"
            assert not tr.is_closing()  # eof_received returned True
            tr.close()
            assert await pr.done is None
            srv.close()
        self.run(main())

    def test_eof_received_false_closes(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]

            class P(CollectProto):
                pass

            tr, pr = await self.loop.create_connection(lambda: P(self.loop), HOST, port)
            pr.eof_result = None
            tr.write(b"x")
            await wait_until(lambda: pr.data == b"x")
            # server closes (EchoProto closes on EOF) after our write_eof
            tr.write_eof()
            await pr.done
            assert pr.events == ["made", "eof", ("lost", None)]
            assert tr.is_closing()
            srv.close()
        self.run(main())

    def test_server_closes_first(self):
        async def main():
            class Bye(asyncio.Protocol):
                def connection_made(self, tr):
                    tr.write(b"bye")
                    tr.close()

            srv = await self.loop.create_server(Bye, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            assert await r.read() == b"bye"
            assert r.at_eof()
            w.close()
            await w.wait_closed()
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestAbortAndErrors:
    def test_abort(self):
        async def main():
            lost = self.loop.create_future()

            class Srv(asyncio.Protocol):
                def connection_made(self, tr):
                    self.tr = tr

                def connection_lost(self, exc):
                    lost.set_result(exc)

            srv = await self.loop.create_server(Srv, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            tr.write(b"data that may be dropped" * 1000)
            tr.abort()
            assert tr.is_closing()
            assert await pr.done is None     # our side: connection_lost(None)
            exc = await lost                 # peer: what was handed over, then EOF (no RST)
            assert exc is None
            srv.close()
        self.run(main())

    def test_connection_refused(self):
        async def main():
            s = socket.socket()
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            s.close()  # nobody listens there
            with pytest.raises(ConnectionRefusedError):
                await self.loop.create_connection(asyncio.Protocol, HOST, port)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(HOST, port)
        self.run(main())

    def test_reset_by_peer(self):
        """Peer closes with SO_LINGER(1, 0) -> RST -> ConnectionResetError on our side."""
        async def main():
            class Rst(asyncio.Protocol):
                def connection_made(self, tr):
                    self.tr = tr

                def data_received(self, d):
                    sock = self.tr.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.tr.abort()

            srv = await self.loop.create_server(Rst, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"hello")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(r.read(), 10)
            # writing after the reset: no exception from write(); drain reports the error
            w.write(b"more")
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await w.drain()
            w.close()
            srv.close()
        self.run(main())

    def test_eaddrinuse(self):
        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises(OSError) as ei:
                await self.loop.create_server(asyncio.Protocol, HOST, port, reuse_address=False)
            assert ei.value.errno == errno.EADDRINUSE
            srv.close()
            await srv.wait_closed()
        self.run(main())

    def test_bad_arguments(self):
        async def main():
            with pytest.raises(ValueError):
                await self.loop.create_connection(asyncio.Protocol)
            with pytest.raises(ValueError):
                await self.loop.create_connection(asyncio.Protocol, HOST, 1, server_hostname="x")
            with pytest.raises(ValueError):
                await self.loop.create_server(asyncio.Protocol, HOST, 0, ssl_handshake_timeout=1)
            with pytest.raises(TypeError):
                await self.loop.create_server(asyncio.Protocol, HOST, 0, ssl=True)
        self.run(main())

    def test_cancel_connect(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            t = self.loop.create_task(self.loop.create_connection(asyncio.Protocol, HOST, port))
            await asyncio.sleep(0)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            # the loop still works afterwards
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            tr.write(b"ok")
            await wait_until(lambda: pr.data == b"ok")
            tr.close()
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestConnectOptions:
    def test_local_addr(self):
        async def main():
            peer = self.loop.create_future()

            class S(asyncio.Protocol):
                def connection_made(self, tr):
                    peer.set_result(tr.get_extra_info("peername"))

            srv = await self.loop.create_server(S, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            probe = socket.socket()
            probe.bind((HOST, 0))
            lport = probe.getsockname()[1]
            probe.close()
            tr, _ = await self.loop.create_connection(asyncio.Protocol, HOST, port,
                                                      local_addr=(HOST, lport))
            assert tr.get_extra_info("sockname") == (HOST, lport)
            assert await peer == (HOST, lport)
            tr.close()
            srv.close()
        self.run(main())

    def test_happy_eyeballs_args_accepted(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, "localhost", 0)
            port = srv.sockets[0].getsockname()[1]
            kw = dict(happy_eyeballs_delay=0.25, interleave=1)
            if self.kind == "mtcp_uvloop" or self.kind == "uvloop":
                pass  # accepted (and ignored on the stack path)
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), "localhost",
                                                       port, **kw)
            tr.write(b"he")
            await wait_until(lambda: pr.data == b"he")
            tr.close()
            srv.close()
            self.assert_userspace(2)
        self.run(main())

    def test_connect_accepted_socket(self):
        """A kernel socket accepted elsewhere is served by the loop (kernel path on MTCPLoop)."""
        async def main():
            ls = socket.socket()
            ls.bind((HOST, 0))
            ls.listen(1)
            c = socket.create_connection(ls.getsockname())
            a, _ = ls.accept()
            a.setblocking(False)
            tr, pr = await self.loop.connect_accepted_socket(lambda: CollectProto(self.loop), a)
            c.sendall(b"accepted")
            await wait_until(lambda: pr.data == b"accepted")
            tr.close()
            c.close()
            ls.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestBufferedProtocol:
    def test_buffered_protocol_receive(self):
        async def main():
            payload = os.urandom(3 * 1024 * 1024 + 17)

            class BP(asyncio.BufferedProtocol):
                def __init__(self):
                    self.buf = bytearray(65536)
                    self.out = bytearray()
                    self.done = asyncio.get_running_loop().create_future()
                    self.sizes = []

                def get_buffer(self, sizehint):
                    return self.buf

                def buffer_updated(self, n):
                    self.sizes.append(n)
                    self.out += self.buf[:n]

                def eof_received(self):
                    pass

                def connection_lost(self, exc):
                    self.done.set_result(exc)

            class Sender(asyncio.Protocol):
                def connection_made(self, tr):
                    tr.write(payload)
                    tr.close()

            srv = await self.loop.create_server(Sender, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(BP, HOST, port)
            assert await pr.done is None
            assert bytes(pr.out) == payload
            assert max(pr.sizes) <= 65536
            srv.close()
        self.run(main())

    def test_buffered_protocol_server_echo(self):
        async def main():
            class BEcho(asyncio.BufferedProtocol):
                def connection_made(self, tr):
                    self.tr = tr
                    self.buf = memoryview(bytearray(1000))

                def get_buffer(self, sizehint):
                    return self.buf

                def buffer_updated(self, n):
                    self.tr.write(bytes(self.buf[:n]))

            srv = await self.loop.create_server(BEcho, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            data = os.urandom(100000)
            w.write(data)
            assert await r.readexactly(len(data)) == data
            w.close()
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestServerAPI:
    def test_server_object(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0, start_serving=False)
            assert isinstance(srv, asyncio.AbstractServer)
            assert not srv.is_serving()
            assert srv.get_loop() is self.loop
            socks = srv.sockets
            assert isinstance(socks, tuple) and len(socks) == 1
            host, port = socks[0].getsockname()[:2]
            assert host == HOST and port > 0
            await srv.start_serving()
            assert srv.is_serving()
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"x")
            assert await r.readexactly(1) == b"x"
            w.close()
            srv.close()
            assert not srv.is_serving()
            assert srv.sockets == () or srv.sockets is None or len(srv.sockets) == 0
            await srv.wait_closed()
            with pytest.raises(OSError):
                await asyncio.open_connection(HOST, port)
        self.run(main())

    def test_async_with_and_serve_forever(self):
        async def main():
            async with await self.loop.create_server(EchoProto, HOST, 0) as srv:
                port = srv.sockets[0].getsockname()[1]
                task = self.loop.create_task(srv.serve_forever())
                await asyncio.sleep(0.01)
                with pytest.raises(RuntimeError):
                    await srv.serve_forever()
                r, w = await asyncio.open_connection(HOST, port)
                w.write(b"sf")
                assert await r.readexactly(2) == b"sf"
                w.close()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert not srv.is_serving()
        self.run(main())

    def test_host_list_and_same_port(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, [HOST, "::1"], 0)
            names = sorted(s.getsockname()[0] for s in srv.sockets)
            assert names == ["127.0.0.1", "::1"]
            for s in srv.sockets:
                r, w = await asyncio.open_connection(s.getsockname()[0], s.getsockname()[1])
                w.write(b"q")
                assert await r.readexactly(1) == b"q"
                w.close()
            srv.close()
        self.run(main())

    def test_reuse_port_and_backlog_accepted(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0, reuse_address=True,
                                                reuse_port=True, backlog=5)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"k")
            assert await r.readexactly(1) == b"k"
            w.close()
            srv.close()
        self.run(main())

    def test_wildcard_host(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, None, 0, family=socket.AF_INET)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"w")
            assert await r.readexactly(1) == b"w"
            w.close()
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestExtraInfo:
    def test_extra_info_and_pseudo_socket(self):
        async def main():
            server_side = self.loop.create_future()

            class S(asyncio.Protocol):
                def connection_made(self, tr):
                    server_side.set_result(tr)

            srv = await self.loop.create_server(S, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            st = await server_side
            assert tr.get_extra_info("peername") == (HOST, port)
            assert tr.get_extra_info("sockname") == st.get_extra_info("peername")
            assert st.get_extra_info("sockname") == (HOST, port)
            assert tr.get_extra_info("nonexistent", "dflt") == "dflt"
            sock = tr.get_extra_info("socket")
            assert sock.getpeername() == (HOST, port)
            assert sock.getsockname() == tr.get_extra_info("sockname")
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            # asyncio sets TCP_NODELAY on TCP transports
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
            if self.is_mtcp:
                assert sock.fileno() == -1
                with pytest.raises(TypeError):
                    sock.send(b"x")
                with pytest.raises(TypeError):
                    sock.recv(1)
                info = tr.conn_info()
                assert info["state"] == 4  # ESTABLISHED
            tr.close()
            await pr.done
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestSendfile:
    def test_loop_sendfile(self, tmp_path):
        data = os.urandom(2 * 1024 * 1024 + 5)
        p = tmp_path / "blob"
        p.write_bytes(data)

        async def main():
            got = bytearray()
            done = self.loop.create_future()

            class R(asyncio.Protocol):
                def data_received(self, d):
                    got.extend(d)

                def connection_lost(self, exc):
                    done.set_result(exc)

            srv = await self.loop.create_server(R, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), HOST, port)
            with open(p, "rb") as f:
                n = await self.loop.sendfile(tr, f, 5, None)
            assert n == len(data) - 5
            tr.close()
            await done
            assert bytes(got) == data[5:]
            srv.close()
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestKernelSockets:
    """aiohttp's patterns: create_server(sock=<bound kernel socket>) and sock_connect + create_connection(sock=)."""

    vtime_skip = {
        "test_blocking_client_thread_reaches_server":
            "a blocking kernel client in a thread (real socket, real time; no kernel mirror)",
        "test_client_to_kernel_server_in_thread":
            "a kernel server in a thread (virtual time refuses the kernel fallback)",
    }

    def test_create_server_sock_and_sock_connect(self):
        async def main():
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((HOST, 0))
            port = ls.getsockname()[1]
            srv = await self.loop.create_server(EchoProto, sock=ls)
            assert srv.sockets[0].getsockname()[:2] == (HOST, port)
            cs = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            cs.setblocking(False)
            await self.loop.sock_connect(cs, (HOST, port))
            tr, pr = await self.loop.create_connection(lambda: CollectProto(self.loop), sock=cs)
            tr.write(b"adopted")
            await wait_until(lambda: pr.data == b"adopted")
            assert tr.get_extra_info("peername")[:2] == (HOST, port)
            tr.close()
            await pr.done
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_blocking_client_thread_reaches_server(self):
        """A plain blocking socket in another thread reaches the server (kernel mirror on MTCP)."""
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            result = []

            def client():
                with socket.create_connection((HOST, port), timeout=10) as s:
                    s.sendall(b"from thread")
                    s.shutdown(socket.SHUT_WR)
                    buf = b""
                    while True:
                        d = s.recv(100)
                        if not d:
                            break
                        buf += d
                    result.append(buf)

            await self.loop.run_in_executor(None, client)
            assert result == [b"from thread"]
            if self.is_mtcp:
                assert self.loop.stats()["loop.kernel_accepted"] == 1
            srv.close()
        self.run(main())

    def test_client_to_kernel_server_in_thread(self):
        """An asyncio client reaches a kernel server running in a thread (no user-space listener)."""
        async def main():
            ls = socket.socket()
            ls.bind((HOST, 0))
            ls.listen(1)
            port = ls.getsockname()[1]

            def serve():
                c, _ = ls.accept()
                with c:
                    c.sendall(c.recv(100).upper())
                ls.close()

            th = threading.Thread(target=serve, daemon=True)
            th.start()
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"kernel")
            assert await r.read() == b"KERNEL"
            w.close()
            th.join(5)
            if self.is_mtcp:
                assert self.loop.stats()["loop.kernel_connected"] == 1
        self.run(main())


# ------------------------------------------------------------------------------------------
class _TestTLS:
    def test_tls_echo_streams(self, tmp_path):
        from tests.helpers import ssl_contexts
        sctx, cctx = ssl_contexts(tmp_path)

        async def handle(r, w):
            assert w.get_extra_info("sslcontext") is sctx
            data = await r.read(100)
            w.write(data[::-1])
            await w.drain()
            w.close()

        async def main():
            srv = await asyncio.start_server(handle, HOST, 0, ssl=sctx, ssl_handshake_timeout=10,
                                             ssl_shutdown_timeout=10)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port, ssl=cctx, server_hostname="localhost",
                                                 ssl_handshake_timeout=10)
            assert w.get_extra_info("ssl_object") is not None
            assert w.get_extra_info("peercert")["subject"][0][0][1] == "localhost"
            w.write(b"secret")
            assert await r.read() == b"terces"
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_start_tls_upgrade(self, tmp_path):
        from tests.helpers import ssl_contexts
        sctx, cctx = ssl_contexts(tmp_path)

        async def handle(r, w):
            line = await r.readline()
            assert line == b"STARTTLS\n"
            w.write(b"OK\n")
            await w.drain()
            await w.start_tls(sctx)
            data = await r.readline()
            w.write(b"tls:" + data)
            await w.drain()
            w.close()

        async def main():
            srv = await asyncio.start_server(handle, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"STARTTLS\n")
            assert await r.readline() == b"OK\n"
            await w.start_tls(cctx, server_hostname="localhost")
            assert w.get_extra_info("ssl_object") is not None
            w.write(b"hi\n")
            assert await r.readline() == b"tls:hi\n"
            w.close()
            srv.close()
        self.run(main())

    def test_tls_handshake_timeout(self, tmp_path):
        from tests.helpers import ssl_contexts
        sctx, cctx = ssl_contexts(tmp_path)

        async def main():
            # a plain TCP server that never answers the handshake
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises((ConnectionAbortedError, asyncio.TimeoutError, TimeoutError)):
                await self.loop.create_connection(asyncio.Protocol, HOST, port, ssl=cctx,
                                                  server_hostname="localhost",
                                                  ssl_handshake_timeout=0.3)
            srv.close()
        self.run(main())

    def test_tls_bad_certificate(self, tmp_path):
        import ssl
        from tests.helpers import ssl_contexts
        sctx, _ = ssl_contexts(tmp_path)

        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0, ssl=sctx)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(HOST, port, ssl=ssl.create_default_context(),
                                              server_hostname="localhost")
            srv.close()
        self.run(main())


bind(globals(), _TestEcho, _TestLargeTransfer, _TestManyConnections, _TestFlowControl,
     _TestHalfCloseAndEOF, _TestAbortAndErrors, _TestConnectOptions, _TestBufferedProtocol, _TestServerAPI,
     _TestExtraInfo, _TestSendfile, _TestKernelSockets, _TestTLS)
