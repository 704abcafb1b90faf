"""`-p mtcp_loop.pytest_plugin` runs an existing pytest-asyncio suite (streams + aiohttp
TestServer/TestClient) on MTCPLoop; --mtcp-also-stock adds the stock loop."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.timeout(120)]

SUITE = textwrap.dedent('''
    import asyncio
    import pytest
    import pytest_asyncio
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    @pytest.mark.asyncio
    async def test_loop_is_mtcp():
        loop = asyncio.get_running_loop()
        assert type(loop).__name__ == "MTCPLoop", type(loop)

    @pytest.mark.asyncio
    async def test_streams():
        async def handle(r, w):
            w.write(await r.readexactly(3)); await w.drain(); w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        w.write(b"abc")
        assert await r.read() == b"abc"
        w.close(); srv.close()
        assert asyncio.get_running_loop().stats()["loop.userspace_connections"] == 2

    @pytest_asyncio.fixture
    async def client():
        async def hello(request):
            return web.Response(text="hi")
        app = web.Application()
        app.router.add_get("/", hello)
        async with TestClient(TestServer(app)) as c:
            yield c

    @pytest.mark.asyncio
    async def test_aiohttp_testclient(client):
        r = await client.get("/")
        assert r.status == 200 and await r.text() == "hi"
        st = asyncio.get_running_loop().stats()
        assert st["loop.userspace_connections"] >= 2 and st["loop.kernel_connections"] == 0, st
''')

STOCK_OK = textwrap.dedent('''
    import asyncio
    import pytest

    @pytest.mark.asyncio
    async def test_any_loop():
        assert asyncio.get_running_loop() is not None
''')


def run_pytest(tmp_path, source, *args):
    (tmp_path / "test_suite.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "mtcp_loop.pytest_plugin", *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110)


def test_suite_runs_on_mtcp(tmp_path):
    p = run_pytest(tmp_path, SUITE)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed" in p.stdout, p.stdout


def test_project_asyncio_suite_on_mtcp(tmp_path):
    """The project's own pytest-asyncio suite (tests/conformance/test_asyncio_suite.py) on MTCPLoop."""
    src = open(os.path.join(ROOT, "tests", "conformance", "test_asyncio_suite.py")).read()
    p = run_pytest(tmp_path, src)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed" in p.stdout, p.stdout


def test_also_stock(tmp_path):
    p = run_pytest(tmp_path, STOCK_OK, "--mtcp-also-stock")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout, p.stdout
    p = run_pytest(tmp_path, STOCK_OK, "--mtcp-also-stock", "--collect-only")
    assert "[mtcp]" in p.stdout and "[asyncio]" in p.stdout, p.stdout
