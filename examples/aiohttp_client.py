"""aiohttp client on MTCPLoop: fetch a URL (a server in this process is reached over the user-space
stack; anything else goes to the kernel unchanged).

    python examples/aiohttp_client.py http://127.0.0.1:8080/
    python examples/aiohttp_client.py --self-test       # starts a tiny server in-process and fetches it
"""
import argparse
import asyncio

import aiohttp
from aiohttp import web

import mtcp_loop


async def fetch(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            body = await resp.read()
            print(resp.status, resp.headers.get("Content-Type"), len(body), "bytes")
            return resp.status, body


async def self_test():
    async def big(request):
        return web.Response(body=b"0123456789" * 100000)

    app = web.Application()
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    status, body = await fetch(f"http://localhost:{port}/big")
    assert status == 200 and body == b"0123456789" * 100000
    await runner.cleanup()
    stats = asyncio.get_running_loop().stats()
    print("user-space connections:", stats["loop.userspace_connections"])
    assert stats["loop.userspace_connections"] >= 2
    print("self-test OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url", nargs="?")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test or not a.url:
        mtcp_loop.run(self_test())
    else:
        mtcp_loop.run(fetch(a.url))   # <- the one line
