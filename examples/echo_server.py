"""Echo server: plain asyncio streams; the one mtcp_loop line is `mtcp_loop.run(...)`.

    python examples/echo_server.py --port 8888       # serve until Ctrl-C (also reachable: nc 127.0.0.1 8888)
    python examples/echo_server.py --self-test       # serve, connect a client over the user-space stack, exit
"""
import argparse
import asyncio

import mtcp_loop


async def handle(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main(host, port, self_test):
    server = await asyncio.start_server(handle, host, port)
    port = server.sockets[0].getsockname()[1]
    print(f"echo server on {host}:{port}")
    if not self_test:
        async with server:
            await server.serve_forever()
        return
    reader, writer = await asyncio.open_connection(host, port)
    for msg in (b"hello", b"user-space", b"tcp"):
        writer.write(msg)
        assert await reader.readexactly(len(msg)) == msg
        print("echoed", msg)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    stats = asyncio.get_running_loop().stats()
    print("user-space connections:", stats["loop.userspace_connections"])
    assert stats["loop.userspace_connections"] == 2
    print("self-test OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8888)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    mtcp_loop.run(main(a.host, 0 if a.self_test else a.port, a.self_test))   # <- the one line
