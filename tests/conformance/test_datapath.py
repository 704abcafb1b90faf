"""The compiled data path (mtcp_loop/_aio/core.pyx): read chunking and write copies against the
stock loop (oracle mixins), and the segments a short connection costs on MTCPLoop (replies carry
the ACK of the request, a FIN queued by close() leaves with the last data)."""
import asyncio

import pytest

from tests.helpers import bind

pytestmark = pytest.mark.timeout(120)

MTCP_KINDS = ["mtcp_uvloop", "mtcp_asyncio"]


class _TestReadChunks:
    def test_data_received_chunks_at_most_256k(self):
        """A 4 MiB write arrives intact in data_received chunks of at most 256 KiB (asyncio's
        max_size), in order, with eof_received then connection_lost last."""
        size = 4 * 1024 * 1024
        payload = bytes(range(256)) * (size // 256)

        async def main():
            loop = asyncio.get_running_loop()
            got = []
            events = []
            done = loop.create_future()

            class Sink(asyncio.Protocol):
                def connection_made(self, tr):
                    events.append("made")

                def data_received(self, data):
                    got.append(data)

                def eof_received(self):
                    events.append("eof")

                def connection_lost(self, exc):
                    events.append("lost")
                    done.set_result(None)

            srv = await loop.create_server(Sink, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(payload)
            await w.drain()
            w.close()
            await done
            srv.close()
            return got, events

        got, events = self.run(main())
        assert b"".join(got) == payload
        assert max(len(c) for c in got) <= 256 * 1024
        assert all(type(c) is bytes for c in got)
        assert events == ["made", "eof", "lost"]


class _TestWriteCopies:
    def test_bytearray_reused_after_write(self):
        """write() takes its copy at the call: a bytearray changed afterwards (even one too
        large for the send buffer) does not change what the peer receives."""
        size = 1024 * 1024

        async def main():
            loop = asyncio.get_running_loop()
            got = bytearray()
            done = loop.create_future()

            async def handle(r, w):
                while chunk := await r.read(65536):
                    got.extend(chunk)
                w.close()
                done.set_result(None)

            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            buf = bytearray(b"a" * size)
            w.write(buf)
            buf[:] = b"b" * size
            w.write(memoryview(buf)[:10])
            buf[:10] = b"c" * 10
            await w.drain()
            w.close()
            await done
            srv.close()
            return bytes(got)

        data = self.run(main())
        assert data == b"a" * size + b"b" * 10


class _TestSegmentsPerConnection:
    def test_short_connection_segments(self):
        """64 B echo, the client closes when the reply arrives (in data_received), the server
        closes on EOF, both ends on this loop's engine: SYN, SYN-ACK, ACK, request, reply+ACK,
        FIN+ACK, FIN+ACK, ACK = 8 segments (11 when every ACK left on its own)."""
        n = 20

        class Echo(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr

            def data_received(self, data):
                self.tr.write(data)

        async def main():
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(Echo, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]

            class Client(asyncio.Protocol):
                def __init__(self, done):
                    self.done = done
                    self.got = b""

                def connection_made(self, tr):
                    self.tr = tr
                    tr.write(b"x" * 64)

                def data_received(self, data):
                    self.got += data
                    if len(self.got) >= 64:
                        self.tr.close()

                def connection_lost(self, exc):
                    self.done.set_result(self.got)

            async def one():
                done = loop.create_future()
                await loop.create_connection(lambda: Client(done), "127.0.0.1", port)
                assert await done == b"x" * 64

            await one()                      # warm-up
            await asyncio.sleep(0.05)
            s0 = loop.stats()["segs_out"]
            for _ in range(n):
                await one()
            await asyncio.sleep(0.05)         # the last ACKs
            s1 = loop.stats()["segs_out"]
            srv.close()
            return (s1 - s0) / n

        per_conn = self.run(main())
        assert per_conn <= 8.0, per_conn


bind(globals(), _TestReadChunks, _TestWriteCopies)
bind(globals(), _TestSegmentsPerConnection, kinds=MTCP_KINDS)
