"""A pytest-asyncio style suite (plain `@pytest.mark.asyncio` tests and async fixtures, as an
application's own suite looks). The default run executes it on the default loop; test_pytest_plugin
runs this very file again with `-p mtcp_loop.pytest_plugin`, where every test must run on MTCPLoop
and over the user-space stack."""
import asyncio

import pytest
import pytest_asyncio

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def on_mtcp(request):
    return request.config.pluginmanager.has_plugin("mtcp_loop.pytest_plugin")


def check_stack(on_mtcp, at_least):
    loop = asyncio.get_running_loop()
    if on_mtcp:
        assert type(loop).__name__ == "MTCPLoop", type(loop)
        st = loop.stats()
        assert st["loop.userspace_connections"] >= at_least and st["loop.kernel_connections"] == 0, st


@pytest.mark.asyncio
async def test_streams_roundtrip(on_mtcp):
    async def handle(r, w):
        w.write(await r.readexactly(3))
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    w.write(b"abc")
    assert await r.read() == b"abc"
    w.close()
    srv.close()
    await srv.wait_closed()
    check_stack(on_mtcp, 2)


@pytest_asyncio.fixture
async def client():
    async def hello(request):
        return web.Response(text="hi")

    async def ws(request):
        wsr = web.WebSocketResponse()
        await wsr.prepare(request)
        async for msg in wsr:
            await wsr.send_str(msg.data.upper())
        return wsr

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/ws", ws)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.asyncio
async def test_aiohttp_testclient(client, on_mtcp):
    r = await client.get("/")
    assert r.status == 200 and await r.text() == "hi"
    wsc = await client.ws_connect("/ws")
    await wsc.send_str("up")
    assert (await wsc.receive()).data == "UP"
    await wsc.close()
    check_stack(on_mtcp, 2)


@pytest.mark.asyncio
async def test_client_session_many(client, on_mtcp):
    rs = await asyncio.gather(*(client.get("/") for _ in range(50)))
    assert [r.status for r in rs] == [200] * 50
    for r in rs:
        r.release()
    check_stack(on_mtcp, 2)
