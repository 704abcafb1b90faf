"""aiohttp hello-world server on MTCPLoop: unchanged aiohttp code plus the policy line.

    python examples/aiohttp_hello.py --port 8080        # serve (curl http://127.0.0.1:8080/ works too)
    python examples/aiohttp_hello.py --self-test        # serve, query it with ClientSession, exit

Serving, ``MTCPPolicy(cores="auto")`` makes ``web.run_app`` run once per core: one pinned worker
process per CPU, each with its own loop and stack, under a supervisor (docs/scaling.md).
"""
import argparse
import asyncio

from aiohttp import ClientSession, web

import mtcp_loop


async def hello(request):
    name = request.match_info.get("name", "World")
    return web.Response(text=f"Hello, {name}!")


def make_app():
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/{name}", hello)
    return app


app = make_app()   # `mtcp-loop run examples.aiohttp_hello:app --cores 2 --backend tap ...`


async def self_test():
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with ClientSession() as session:
        for path, want in (("/", "Hello, World!"), ("/mtcp", "Hello, mtcp!")):
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                text = await resp.text()
                print(resp.status, text)
                assert resp.status == 200 and text == want
    await runner.cleanup()
    stats = asyncio.get_running_loop().stats()
    print("user-space connections:", stats["loop.userspace_connections"])
    assert stats["loop.userspace_connections"] >= 2 and stats["loop.kernel_connections"] == 0
    print("self-test OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        mtcp_loop.run(self_test())
    else:
        asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores="auto"))   # <- the one line
        web.run_app(make_app(), host=a.host, port=a.port)
