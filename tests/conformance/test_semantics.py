"""asyncio semantics at the edges: buffer types, close/abort/error paths, sockets held by the
application (sock_*), server variants and argument errors. Each behaviour is a mixin bound to
stock asyncio (the oracle) and to MTCPLoop on uvloop and on asyncio's selector loop."""
from __future__ import annotations

import array
import errno
import asyncio
import socket
import struct
import sys

import pytest

from tests.helpers import bind

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"


class Sink(asyncio.Protocol):
    """Server side: collects everything until EOF or loss."""

    def __init__(self, loop):
        self.data = bytearray()
        self.eof = False
        self.lost = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _sink_server(loop, **kw):
    sinks = []

    def factory():
        s = Sink(loop)
        sinks.append(s)
        return s
    srv = await loop.create_server(factory, HOST, 0, **kw)
    return srv, srv.sockets[0].getsockname()[1], sinks


async def _read_all(reader):
    """Everything until EOF; ('reset', data) when the connection is reset instead."""
    data = bytearray()
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return bytes(data)
            data += chunk
    except ConnectionResetError:
        return ("reset", bytes(data))


# ------------------------------------------------------------------------------------------
class _TestWriteBufferTypes:
    """write() moves nbytes of any contiguous buffer, whatever its format or itemsize."""

    def _deliver(self, payload, expect):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            _, w = await asyncio.open_connection(HOST, port)
            w.write(payload)
            w.write_eof()
            exc = await asyncio.wait_for(_wait_sink(sinks), 10)
            assert exc is None
            assert bytes(sinks[0].data) == expect
            w.close()
            srv.close()
        self.run(main())

    def test_memoryview_of_int_array(self):
        a = array.array("i", [1, 2, 3, 4])
        self._deliver(memoryview(a), a.tobytes())

    def test_memoryview_cast_q(self):
        raw = bytes(range(64))
        self._deliver(memoryview(raw).cast("Q"), raw)

    def test_memoryview_2d(self):
        raw = bytes(range(64))
        self._deliver(memoryview(raw).cast("B", (8, 8)), raw)

    def test_bytearray_and_memoryview_slices(self):
        raw = bytes(range(200))
        self._deliver(memoryview(bytearray(raw))[10:150], raw[10:150])

    def test_large_memoryview_of_doubles(self):
        a = array.array("d", range(100000))   # 800 KB: more than one engine/kernel send
        self._deliver(memoryview(a), a.tobytes())

    def test_writelines_of_memoryviews(self):
        if self.kind == "asyncio" and sys.version_info >= (3, 12):
            pytest.xfail("the selector transport's writelines() of CPython 3.12/3.13.0 fails on "
                         "memoryviews of non-byte formats (IndexError: pop from an empty deque "
                         "through the exception handler)")
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            _, w = await asyncio.open_connection(HOST, port)
            a = array.array("H", [1, 2, 3])
            w.writelines([memoryview(a), b"x", memoryview(bytes(16)).cast("I")])
            w.write_eof()
            await asyncio.wait_for(_wait_sink(sinks), 10)
            assert bytes(sinks[0].data) == a.tobytes() + b"x" + bytes(16)
            w.close()
            srv.close()
        self.run(main())

    def test_non_buffer_types_rejected(self):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            _, w = await asyncio.open_connection(HOST, port)
            import mmap
            m = mmap.mmap(-1, 16)
            for bad in ("str", 12, array.array("i", [1]), m):     # asyncio: bytes-like types only
                with pytest.raises(TypeError):
                    w.transport.write(bad)
            m.close()
            w.write(memoryview(mmap.mmap(-1, 8)))       # a view of an mmap is a memoryview: fine
            w.close()
            srv.close()
        self.run(main())

    def test_non_contiguous_memoryview(self):
        """Never a partial or silent write: uvloop and MTCPLoop raise TypeError at the call; stock
        asyncio's send() fails with BufferError and the transport closes with a fatal error."""
        self.allow_loop_errors = True

        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            _, w = await asyncio.open_connection(HOST, port)
            view = memoryview(bytes(range(16)))[::2]
            if self.kind == "asyncio":
                w.transport.write(view)
                assert w.transport.is_closing()
                assert any(isinstance(c.get("exception"), BufferError) for c in self._exc_contexts)
            else:
                with pytest.raises(TypeError, match="C-contiguous"):
                    w.transport.write(view)
                assert not w.transport.is_closing()
                w.write(b"ok")
                w.write_eof()
                await asyncio.wait_for(_wait_sink(sinks), 10)
                assert bytes(sinks[0].data) == b"ok"
            w.close()
            srv.close()
        self.run(main())


async def _wait_sink(sinks, n=1):
    while len(sinks) < n:
        await asyncio.sleep(0.005)
    while not sinks[n - 1].eof and not sinks[n - 1].lost.done():
        await asyncio.sleep(0.005)
    if sinks[n - 1].lost.done():
        return sinks[n - 1].lost.result()
    return None


# ------------------------------------------------------------------------------------------
class _TestCloseAndErrorPaths:
    """Bytes handed to the transport before an error/abort reach the peer, then FIN; RST only where
    the kernel sends one (unread received data at close, SO_LINGER(1, 0))."""

    def test_protocol_error_after_write_delivers_reply(self):
        self.allow_loop_errors = True

        class Failing(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr

            def data_received(self, data):
                self.tr.write(b"HTTP/1.0 500 Internal Server Error\r\n\r\n")
                raise RuntimeError("handler failed")

        async def main():
            srv = await self.loop.create_server(Failing, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            got = await _read_all(r)
            assert got == b"HTTP/1.0 500 Internal Server Error\r\n\r\n"
            w.close()
            srv.close()
            assert any(isinstance(c.get("exception"), RuntimeError) for c in self._exc_contexts)
        self.run(main())

    def test_protocol_factory_raises_peer_sees_eof(self):
        self.allow_loop_errors = True

        def factory():
            raise RuntimeError("no protocol")

        async def main():
            srv = await self.loop.create_server(factory, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            assert await _read_all(r) == b""
            w.close()
            srv.close()
        self.run(main())

    def test_tls_server_gets_plain_text(self, tmp_path):
        from tests.helpers import ssl_contexts
        sctx, _ = ssl_contexts(tmp_path)
        self.allow_loop_errors = True

        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0, ssl=sctx)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            got = await _read_all(r)
            assert isinstance(got, bytes), got    # an alert at most, then EOF: no reset
            w.close()
            srv.close()
        self.run(main())

    def test_abort_delivers_handed_bytes_then_fin(self):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            tr, _ = await self.loop.create_connection(asyncio.Protocol, HOST, port)
            tr.write(b"handed to the kernel before abort")
            tr.abort()
            assert tr.is_closing()
            exc = await asyncio.wait_for(_wait_sink(sinks), 10)
            assert exc is None
            assert bytes(sinks[0].data) == b"handed to the kernel before abort"
            assert await asyncio.wait_for(sinks[0].lost, 10) is None   # EOF, not a reset
            srv.close()
        self.run(main())

    def test_abort_large_write_prefix_then_fin(self):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            tr, _ = await self.loop.create_connection(asyncio.Protocol, HOST, port)
            data = bytes(range(256)) * 40000          # 10 MB: more than any send buffer
            tr.write(data)
            tr.abort()
            assert await asyncio.wait_for(_wait_sink(sinks), 20) is None
            got = bytes(sinks[0].data)
            assert 0 < len(got) < len(data) and data.startswith(got)
            srv.close()
        self.run(main())

    def test_close_with_unread_data_resets(self):
        class Unread(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr
                tr.pause_reading()

        async def main():
            servers = []

            def factory():
                p = Unread()
                servers.append(p)
                return p
            srv = await self.loop.create_server(factory, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"never read by the server")
            await w.drain()
            while not servers:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)                 # the bytes reach the server's receive buffer
            servers[0].tr.close()
            got = await _read_all(r)
            assert got == ("reset", b"")
            w.close()
            srv.close()
        self.run(main())

    def test_linger_zero_resets(self):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            r, w = await asyncio.open_connection(HOST, port)
            while not sinks:
                await asyncio.sleep(0.005)
            s = sinks[0].tr.get_extra_info("socket")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sinks[0].tr.close()
            assert await _read_all(r) == ("reset", b"")
            w.close()
            srv.close()
        self.run(main())

    def test_close_delivers_buffered_then_fin(self):
        async def main():
            srv, port, sinks = await _sink_server(self.loop)
            tr, _ = await self.loop.create_connection(asyncio.Protocol, HOST, port)
            data = bytes(range(256)) * 8000           # 2 MB
            tr.write(data)
            tr.close()
            assert await asyncio.wait_for(_wait_sink(sinks), 20) is None
            assert bytes(sinks[0].data) == data
            srv.close()
        self.run(main())


bind(globals(), _TestWriteBufferTypes, _TestCloseAndErrorPaths)


# ------------------------------------------------------------------------------------------
class EchoProto(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)

    def eof_received(self):
        self.tr.close()


class _TestOwnSockets:
    """Sockets the application creates and drives itself through loop.sock_* (aiohttp's client,
    anyio's listeners, plain socket code)."""

    vtime_skip = {"test_sock_accept_kernel_client":
                  "a blocking kernel client in a thread (real socket, real time)"}

    def test_sock_connect_then_sock_io(self, tmp_path):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            await self.loop.sock_sendall(s, b"ping")
            assert await self.loop.sock_recv(s, 4) == b"ping"
            await self.loop.sock_sendall(s, array.array("i", [7, 8]).tobytes())
            buf = bytearray(8)
            n = 0
            while n < 8:
                n += await self.loop.sock_recv_into(s, memoryview(buf)[n:])
            assert bytes(buf) == array.array("i", [7, 8]).tobytes()
            f = tmp_path / "f.bin"
            f.write_bytes(bytes(range(256)) * 100)
            with open(f, "rb") as fh:
                sent = await self.loop.sock_sendfile(s, fh)
            assert sent == 25600
            got = bytearray()
            while len(got) < 25600:
                got += await self.loop.sock_recv(s, 65536)
            assert bytes(got) == bytes(range(256)) * 100
            await self.loop.sock_connect(s, (HOST, port))     # already connected: no-op, as connect()
            s.close()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_sock_connect_then_close_socket_ends_connection(self):
        """The application's own s.close() ends the connection: the server sees EOF."""
        async def main():
            ended = self.loop.create_future()

            class P(asyncio.Protocol):
                def eof_received(self):
                    if not ended.done():
                        ended.set_result("eof")

                def connection_lost(self, exc):
                    if not ended.done():
                        ended.set_result("lost")
            srv = await self.loop.create_server(P, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            await self.loop.sock_sendall(s, b"x")
            s.close()
            assert await asyncio.wait_for(ended, 5) in ("eof", "lost")
            srv.close()
        self.run(main())

    def test_sock_io_errors_after_reset(self):
        class Rst(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr

            def data_received(self, data):
                self.tr.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.tr.close()

        async def main():
            srv = await self.loop.create_server(Rst, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            await self.loop.sock_sendall(s, b"reset me")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(self.loop.sock_recv(s, 100), 10)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(100):
                    await self.loop.sock_sendall(s, b"more")
                    await asyncio.sleep(0.001)
            s.close()
            srv.close()
        self.run(main())

    def test_sock_recv_eof_after_server_close(self):
        class Bye(asyncio.Protocol):
            def connection_made(self, tr):
                tr.write(b"bye")
                tr.close()

        async def main():
            srv = await self.loop.create_server(Bye, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            got = b""
            while True:
                chunk = await asyncio.wait_for(self.loop.sock_recv(s, 100), 10)
                if not chunk:
                    break
                got += chunk
            assert got == b"bye"
            assert await self.loop.sock_recv(s, 100) == b""
            s.close()
            srv.close()
        self.run(main())

    def test_sock_connect_then_create_connection(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            r, w = await asyncio.open_connection(sock=s)
            w.write(b"adopted")
            assert await r.readexactly(7) == b"adopted"
            assert w.get_extra_info("peername")[:2] == (HOST, port)
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def _own_listener(self, family=socket.AF_INET, host=HOST):
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, 0))
        ls.listen(128)
        ls.setblocking(False)
        return ls

    def test_sock_accept_connect_accepted_socket(self):
        """anyio's listener: its own kernel socket, sock_accept, connect_accepted_socket."""
        async def main():
            ls = self._own_listener()
            port = ls.getsockname()[1]

            async def serve_one():
                conn, addr = await self.loop.sock_accept(ls)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert conn.getsockname()[:2] == (HOST, port)
                assert conn.getpeername()[:2] == addr[:2]
                tr, _ = await self.loop.connect_accepted_socket(EchoProto, conn)
                assert tr.get_extra_info("peername")[:2] == addr[:2]
                return addr

            task = self.loop.create_task(serve_one())
            await asyncio.sleep(0)      # accepting (the stack listener opens at the first sock_accept)
            r, w = await asyncio.open_connection(HOST, port)
            addr = await task
            assert w.get_extra_info("sockname")[:2] == addr[:2]
            for i in range(10):
                w.write(b"line %d\n" % i)
                assert await r.readline() == b"line %d\n" % i
            w.write_eof()
            assert await r.read() == b""
            w.close()
            ls.close()
            self.assert_userspace(2)
        self.run(main())

    def test_sock_accept_connect_accepted_socket_tls(self, tmp_path):
        from tests.helpers import ssl_contexts
        sctx, cctx = ssl_contexts(tmp_path)

        async def main():
            ls = self._own_listener()
            port = ls.getsockname()[1]

            async def serve_one():
                conn, _ = await self.loop.sock_accept(ls)
                await self.loop.connect_accepted_socket(EchoProto, conn, ssl=sctx)

            task = self.loop.create_task(serve_one())
            await asyncio.sleep(0)
            r, w = await asyncio.open_connection(HOST, port, ssl=cctx, server_hostname="localhost")
            await task
            w.write(b"secret")
            assert await r.readexactly(6) == b"secret"
            w.close()
            ls.close()
            self.assert_userspace(2)
        self.run(main())

    def test_sock_recv_then_transport_keeps_the_rest(self):
        """Part read with sock_recv, then a transport on the same socket: nothing is lost."""
        async def main():
            ls = self._own_listener()
            port = ls.getsockname()[1]
            got = bytearray()
            done = self.loop.create_future()

            class Collect(asyncio.Protocol):
                def connection_made(self, tr):
                    self.tr = tr

                def data_received(self, data):
                    got.extend(data)

                def eof_received(self):
                    done.set_result(None)

            async def serve_one():
                conn, _ = await self.loop.sock_accept(ls)
                first = await self.loop.sock_recv(conn, 5)
                while len(first) < 5:
                    first += await self.loop.sock_recv(conn, 5 - len(first))
                await self.loop.connect_accepted_socket(Collect, conn)
                return first

            task = self.loop.create_task(serve_one())
            await asyncio.sleep(0)
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"hello world, and more")
            w.write_eof()
            first = await task
            await asyncio.wait_for(done, 10)
            assert first + bytes(got) == b"hello world, and more"
            w.close()
            ls.close()
            self.assert_userspace(2)
        self.run(main())

    def test_sock_accept_then_sock_io(self):
        async def main():
            ls = self._own_listener(socket.AF_INET6, "::1")
            port = ls.getsockname()[1]

            async def serve_one():
                conn, addr = await self.loop.sock_accept(ls)
                data = await self.loop.sock_recv(conn, 100)
                await self.loop.sock_sendall(conn, data.upper())
                assert await self.loop.sock_recv(conn, 100) == b""      # peer's EOF
                conn.close()

            task = self.loop.create_task(serve_one())
            await asyncio.sleep(0)      # accepting (the stack listener opens at the first sock_accept)
            r, w = await asyncio.open_connection("::1", port)
            w.write(b"hello")
            assert await r.readexactly(5) == b"HELLO"
            w.write_eof()
            await task
            assert await r.read() == b""
            w.close()
            ls.close()
            self.assert_userspace(2)
        self.run(main())

    def test_sock_accept_kernel_client(self):
        """A blocking client in a thread (kernel TCP) reaches the same listener."""
        async def main():
            ls = self._own_listener()
            port = ls.getsockname()[1]

            def client():
                with socket.create_connection((HOST, port), timeout=10) as c:
                    c.sendall(b"from a thread")
                    c.shutdown(socket.SHUT_WR)
                    return c.recv(100)

            fut = self.loop.run_in_executor(None, client)
            conn, _ = await self.loop.sock_accept(ls)
            data = b""
            while len(data) < 13:
                data += await self.loop.sock_recv(conn, 100)
            await self.loop.sock_sendall(conn, b"ok")
            conn.close()
            assert await fut == b"ok"
            assert data == b"from a thread"
            ls.close()
        self.run(main())

    def test_sock_accept_cancelled_then_listener_closed(self):
        async def main():
            ls = self._own_listener()
            port = ls.getsockname()[1]
            task = self.loop.create_task(self.loop.sock_accept(ls))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            try:
                self.loop.remove_reader(ls)
            except (ValueError, NotImplementedError):
                pass
            await asyncio.sleep(0)
            ls.close()
            await asyncio.sleep(0.01)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(HOST, port)
        self.run(main())


bind(globals(), _TestOwnSockets)


class _TestConnectedSocket:
    """With connected_socket=True (MTCP_CONNECTED_SOCKET=1) the socket sock_connect attached to
    the stack is itself a connected kernel socket (mtcp_loop/socks.py)."""

    vtime_skip = "a real kernel connection to the kernel mirror (virtual time has no kernel mirror)"

    def test_sock_connect_socket_is_connected(self):
        """The socket the application holds is a connected socket: getpeername/getsockname, and
        its own send/recv reach the server (which then serves it like any connection)."""
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            assert s.getpeername() == (HOST, port)
            assert s.getsockname()[1] != 0
            s.send(b"direct")                  # the socket's own methods
            got = b""
            while len(got) < 6:
                try:
                    got += s.recv(100)
                except BlockingIOError:
                    await asyncio.sleep(0.005)
            assert got == b"direct"
            await self.loop.sock_sendall(s, b"then loop")     # and the loop's, on the same path
            got = b""
            while len(got) < 9:
                got += await self.loop.sock_recv(s, 100)
            assert got == b"then loop"
            s.close()
            srv.close()
            await srv.wait_closed()
        self.run(main())

    def test_sock_connect_close_socket_closes_connection(self):
        async def main():
            lost = self.loop.create_future()

            class P(EchoProto):
                def connection_lost(self, exc):
                    lost.set_result(exc)
            srv = await self.loop.create_server(P, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            s = socket.socket()
            s.setblocking(False)
            await self.loop.sock_connect(s, (HOST, port))
            await self.loop.sock_sendall(s, b"x")
            assert await self.loop.sock_recv(s, 1) == b"x"
            peer = s.getsockname()
            s.close()                          # the server sees the connection end
            assert await asyncio.wait_for(lost, 10) is None
            srv.close()
            self.assert_userspace(2)
            assert peer[1] != 0
        self.run(main())


class _TestOwnSocketsConnectedSocket(_TestOwnSockets):
    """The same sock_* behaviours with connected_socket=True."""


bind(globals(), _TestConnectedSocket, _TestOwnSocketsConnectedSocket,
     loop_config={"connected_socket": True})


# ------------------------------------------------------------------------------------------
class _TestArgumentErrors:
    """Bad arguments: the exception type (and message) stock asyncio gives."""

    def test_port_out_of_range(self):
        async def main():
            for port in (-1, 70000):
                with pytest.raises(OverflowError, match="port must be 0-65535"):
                    await self.loop.create_connection(asyncio.Protocol, HOST, port)
        self.run(main())

    def test_backlog_not_an_int(self):
        async def main():
            for backlog in ("x", 1.5):
                with pytest.raises(TypeError):
                    await self.loop.create_server(asyncio.Protocol, HOST, 0, backlog=backlog)
        self.run(main())

    def test_local_addr_family_mismatch(self):
        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises(OSError, match="no matching local address") as ei:
                await self.loop.create_connection(asyncio.Protocol, HOST, port, local_addr=("::1", 0))
            assert type(ei.value) is OSError
            srv.close()
        self.run(main())

    def test_protocol_factory_returns_none(self):
        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            # asyncio: AttributeError (None.connection_made); uvloop: TypeError("protocol is required");
            # MTCPLoop raises what its base raises
            expect = TypeError if self.kind == "mtcp_uvloop" else AttributeError
            with pytest.raises(expect):
                await self.loop.create_connection(lambda: None, HOST, port)
            srv.close()
        self.run(main())


bind(globals(), _TestArgumentErrors)


# ------------------------------------------------------------------------------------------
class _TestServerVariants:
    def test_wait_closed_follows_the_running_python(self):
        """Server.wait_closed(): Python 3.11 returns once close() ran; 3.12+ also waits until
        every accepted connection is gone."""
        async def main():
            made = []

            class Keep(asyncio.Protocol):
                def connection_made(self, tr):
                    made.append(tr)
            srv = await self.loop.create_server(Keep, HOST, 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(HOST, port)
            for _ in range(200):
                if made:
                    break
                await asyncio.sleep(0.01)
            assert made
            srv.close()
            waiting = asyncio.ensure_future(srv.wait_closed())
            await asyncio.sleep(0.2)
            assert waiting.done() is (sys.version_info < (3, 12))
            made[0].close()
            w.close()
            await asyncio.wait_for(waiting, 10)
        self.run(main())

    def test_start_serving_false_refuses_until_started(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, HOST, 0, start_serving=False)
            port = srv.sockets[0].getsockname()[1]
            for _ in range(3):
                with pytest.raises(ConnectionRefusedError):
                    await asyncio.open_connection(HOST, port)
            await srv.start_serving()
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"now")
            assert await r.readexactly(3) == b"now"
            w.close()
            srv.close()
            await srv.wait_closed()
        self.run(main())

    def test_start_serving_false_wildcard_v6(self):
        async def main():
            srv = await self.loop.create_server(EchoProto, "::1", 0, start_serving=False)
            port = srv.sockets[0].getsockname()[1]
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("::1", port)
            task = self.loop.create_task(srv.serve_forever())
            await asyncio.sleep(0.01)
            r, w = await asyncio.open_connection("::1", port)
            w.write(b"v6")
            assert await r.readexactly(2) == b"v6"
            w.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        self.run(main())

    def test_create_server_sock_reports_the_socket(self):
        async def main():
            s = socket.socket()
            s.bind((HOST, 0))
            srv = await self.loop.create_server(EchoProto, sock=s)
            assert srv.sockets[0].fileno() == s.fileno()
            assert srv.sockets[0].getsockname() == s.getsockname()
            r, w = await asyncio.open_connection(*s.getsockname())
            w.write(b"s")
            assert await r.readexactly(1) == b"s"
            w.close()
            srv.close()
            await srv.wait_closed()
            self.assert_userspace(2)
        self.run(main())

    def test_create_server_unbound_sock(self):
        async def main():
            s = socket.socket()
            srv = await self.loop.create_server(EchoProto, sock=s)
            name = s.getsockname()
            assert name[1] != 0
            assert srv.sockets[0].getsockname() == name
            r, w = await asyncio.open_connection(HOST, name[1])
            w.write(b"u")
            assert await r.readexactly(1) == b"u"
            w.close()
            srv.close()
            await srv.wait_closed()
        self.run(main())

    def test_create_server_same_sock_twice(self):
        async def main():
            s = socket.socket()
            s.bind((HOST, 0))
            srv = await self.loop.create_server(EchoProto, sock=s)
            if self.kind == "mtcp_uvloop":
                with pytest.raises(RuntimeError):          # what uvloop itself raises
                    await self.loop.create_server(EchoProto, sock=s)
                srv.close()
                return
            srv2 = await self.loop.create_server(EchoProto, sock=s)     # asyncio: both listen
            assert srv2.sockets[0].getsockname() == s.getsockname()
            r, w = await asyncio.open_connection(*s.getsockname())
            w.write(b"2")
            assert await r.readexactly(1) == b"2"
            w.close()
            srv2.close()
        self.run(main())


bind(globals(), _TestServerVariants)


# ------------------------------------------------------------------------------------------
class _TestReusePort:
    def test_reuse_port_same_loop_spreads(self):
        async def main():
            hits = [0, 0]

            def factory(i):
                class P(EchoProto):
                    def connection_made(self, tr):
                        hits[i] += 1
                        super().connection_made(tr)
                return P()
            s1 = await self.loop.create_server(lambda: factory(0), HOST, 0, reuse_port=True)
            port = s1.sockets[0].getsockname()[1]
            s2 = await self.loop.create_server(lambda: factory(1), HOST, port, reuse_port=True)
            assert s2.sockets[0].getsockname()[1] == port
            for i in range(24):
                r, w = await asyncio.open_connection(HOST, port)
                w.write(b"x")
                assert await r.readexactly(1) == b"x"
                w.close()
                await w.wait_closed()
            assert hits[0] + hits[1] == 24 and hits[0] > 0 and hits[1] > 0, hits
            s1.close()
            # the other server keeps listening
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"y")
            assert await r.readexactly(1) == b"y"
            w.close()
            s2.close()
            await s2.wait_closed()
            with pytest.raises(OSError):
                await asyncio.open_connection(HOST, port)
            self.assert_userspace(2)
        self.run(main())

    def test_reuse_port_without_flag_is_in_use(self):
        async def main():
            s1 = await self.loop.create_server(EchoProto, HOST, 0, reuse_port=True)
            port = s1.sockets[0].getsockname()[1]
            with pytest.raises(OSError) as ei:
                await self.loop.create_server(EchoProto, HOST, port)
            assert ei.value.errno == errno.EADDRINUSE
            s1.close()
        self.run(main())

    def test_reuse_port_loops_in_two_threads(self):
        import threading

        async def main():
            s1 = await self.loop.create_server(EchoProto, HOST, 0, reuse_port=True)
            port = s1.sockets[0].getsockname()[1]
            ready, stop = threading.Event(), threading.Event()
            errors = []

            def other():
                from tests.helpers import make_loop
                loop = make_loop(self.kind)
                try:
                    async def serve():
                        srv = await loop.create_server(EchoProto, HOST, port, reuse_port=True)
                        ready.set()
                        while not stop.is_set():
                            await asyncio.sleep(0.01)
                        srv.close()
                    loop.run_until_complete(serve())
                except BaseException as exc:
                    errors.append(exc)
                    ready.set()
                finally:
                    loop.close()
            t = threading.Thread(target=other)
            t.start()
            await self.loop.run_in_executor(None, ready.wait, 10)
            try:
                assert not errors, errors
                for _ in range(6):
                    r, w = await asyncio.open_connection(HOST, port)
                    w.write(b"t")
                    assert await r.readexactly(1) == b"t"
                    w.close()
            finally:
                stop.set()
                await self.loop.run_in_executor(None, t.join, 10)
            s1.close()
        self.run(main())


bind(globals(), _TestReusePort)


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["uvloop", "asyncio"])
def test_warn_kernel_names_the_call_once(base, caplog):
    """warn_kernel=True: TCP on a stack-owned address that ends up on kernel TCP is logged once
    per destination/listener, naming the call."""
    import logging

    from tests.helpers import HAVE_UVLOOP, make_loop
    if base == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop not installed")
    loop = make_loop("mtcp_" + base, warn_kernel=True)
    ks = socket.socket()
    ks.bind((HOST, 0))
    ks.listen(8)
    ks.setblocking(False)
    port = ks.getsockname()[1]

    async def main():
        for _ in range(2):              # no stack listener there: kernel TCP, logged once
            tr, _ = await loop.create_connection(asyncio.Protocol, HOST, port)
            c, _ = ks.accept()
            c.close()
            tr.close()
        # an own listener accepting a kernel client (a blocking socket in a thread)
        ls = socket.socket()
        ls.bind((HOST, 0))
        ls.listen(8)
        ls.setblocking(False)
        acc = loop.create_task(loop.sock_accept(ls))
        await asyncio.sleep(0)
        c = await loop.run_in_executor(None, socket.create_connection, ls.getsockname())
        conn, _ = await acc
        conn.close()
        c.close()
        ls.close()
        return loop.stats()

    with caplog.at_level(logging.WARNING, logger="mtcp_loop"):
        try:
            st = loop.run_until_complete(asyncio.wait_for(main(), 20))
        finally:
            loop.close()
            ks.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "mtcp_loop"]
    assert sum("create_connection()" in m for m in msgs) == 1, msgs
    assert sum("sock_accept()" in m for m in msgs) == 1, msgs
    assert st["loop.kernel_connected"] == 2 and st["loop.userspace_connections"] == 0, st
