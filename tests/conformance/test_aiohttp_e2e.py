"""aiohttp end to end over the stack (server + ClientSession, chunked and large bodies, FileResponse,
websockets, TestServer/TestClient), bound to stock asyncio and MTCPLoop; on MTCPLoop loop.stats()
must show that the engine carried every connection."""
import asyncio
import hashlib
import os

import pytest

from tests.helpers import bind

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def make_app(tmp_path):
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def hello(request):
        return web.Response(text="Hello, World!")

    async def echo(request):
        body = await request.read()
        return web.Response(body=body, headers={"X-Sha256": hashlib.sha256(body).hexdigest()})

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(100):
            await resp.write(b"chunk %03d\n" % i)
        await resp.write_eof()
        return resp

    async def big(request):
        n = int(request.query.get("n", 8 * 1024 * 1024))
        return web.Response(body=b"b" * n)

    async def file(request):
        return web.FileResponse(tmp_path / "static.bin")

    async def ws(request):
        wsr = web.WebSocketResponse()
        await wsr.prepare(request)
        async for msg in wsr:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data == "close":
                    await wsr.close()
                else:
                    await wsr.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await wsr.send_bytes(msg.data[::-1])
        return wsr

    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)
    app.router.add_get("/file", file)
    app.router.add_get("/ws", ws)
    return app


class _TestAiohttp:
    vtime_skip = {"test_curl_subprocess_reaches_app":
                  "curl in a subprocess (real process, kernel mirror)"}

    def _setup_files(self, tmp_path):
        data = os.urandom(5 * 1024 * 1024 + 3)
        (tmp_path / "static.bin").write_bytes(data)
        return data

    def test_server_and_client_session(self, tmp_path):
        static = self._setup_files(tmp_path)

        async def main():
            runner = web.AppRunner(make_app(tmp_path), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/") as r:
                    assert r.status == 200 and await r.text() == "Hello, World!"
                body = os.urandom(9 * 1024 * 1024)
                async with s.post(base + "/echo", data=body) as r:
                    got = await r.read()
                    assert got == body and r.headers["X-Sha256"] == hashlib.sha256(body).hexdigest()

                async def gen():
                    for i in range(64):
                        yield os.urandom(1000) if i % 2 else b"z" * 65536

                async with s.post(base + "/echo", data=gen()) as r:   # chunked request body
                    assert r.status == 200 and len(await r.read()) == 32 * 1000 + 32 * 65536
                async with s.get(base + "/chunked") as r:
                    assert r.headers.get("Transfer-Encoding") == "chunked"
                    assert await r.read() == b"".join(b"chunk %03d\n" % i for i in range(100))
                async with s.get(base + "/big", params={"n": str(16 * 1024 * 1024)}) as r:
                    assert len(await r.read()) == 16 * 1024 * 1024
                async with s.get(base + "/file") as r:
                    assert r.status == 200 and await r.read() == static
                async with s.ws_connect(base + "/ws") as wsc:
                    await wsc.send_str("hi")
                    assert (await wsc.receive()).data == "echo:hi"
                    await wsc.send_bytes(b"\x01\x02\x03" * 10000)
                    assert (await wsc.receive()).data == (b"\x01\x02\x03" * 10000)[::-1]
                    await wsc.send_str("close")
                    msg = await wsc.receive()
                    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await runner.cleanup()
            self.assert_userspace(2)
        self.run(main())

    def test_many_parallel_requests(self, tmp_path):
        async def main():
            runner = web.AppRunner(make_app(tmp_path), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "localhost", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            conn = aiohttp.TCPConnector(limit=50, force_close=True)
            async with aiohttp.ClientSession(connector=conn) as s:
                async def one():
                    async with s.get(f"http://localhost:{port}/") as r:
                        return await r.text()
                res = await asyncio.gather(*(one() for _ in range(300)))
            assert res == ["Hello, World!"] * 300
            await runner.cleanup()
            self.assert_userspace(300)
        self.run(main())

    def test_curl_subprocess_reaches_app(self, tmp_path):
        """curl in a subprocess reaches an app served on the loop (kernel mirror on MTCPLoop),
        while the in-process client goes over the user-space stack."""
        import shutil
        if not shutil.which("curl"):
            pytest.skip("curl not installed")

        async def main():
            runner = web.AppRunner(make_app(tmp_path), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "localhost", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            for host in ("127.0.0.1", "localhost", "127.0.0.1"):
                p = await asyncio.create_subprocess_exec(
                    "curl", "-sS", "--max-time", "10", f"http://{host}:{port}/",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await p.communicate()
                assert p.returncode == 0 and out == b"Hello, World!", (host, out, err)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://localhost:{port}/") as r:
                    assert await r.text() == "Hello, World!"
            await runner.cleanup()
            if self.is_mtcp:
                st = self.loop.stats()
                assert st["loop.kernel_accepted"] == 3, st
                assert st["loop.userspace_accepted"] >= 1 and st["loop.userspace_connected"] >= 1, st
        self.run(main())

    def test_testserver_testclient(self, tmp_path):
        async def main():
            async with TestClient(TestServer(make_app(tmp_path))) as client:
                r = await client.get("/")
                assert r.status == 200 and await r.text() == "Hello, World!"
                r = await client.post("/echo", data=b"x" * 100000)
                assert len(await r.read()) == 100000
                wsc = await client.ws_connect("/ws")
                await wsc.send_str("t")
                assert (await wsc.receive()).data == "echo:t"
                await wsc.close()
            self.assert_userspace(2)
        self.run(main())


bind(globals(), _TestAiohttp)
