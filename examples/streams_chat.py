"""A tiny chat server with asyncio streams: every line a client sends goes to all other clients.

    python examples/streams_chat.py --port 7777       # then: nc 127.0.0.1 7777 (kernel mirror)
    python examples/streams_chat.py --self-test       # three in-process clients chat over user-space TCP
"""
import argparse
import asyncio

import mtcp_loop

clients = set()


async def handle(reader, writer):
    clients.add(writer)
    name = f"{writer.get_extra_info('peername')[1]}"
    try:
        while line := await reader.readline():
            for w in list(clients):
                if w is not writer:
                    w.write(f"[{name}] ".encode() + line)
                    await w.drain()
    finally:
        clients.discard(writer)
        writer.close()


async def self_test():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await asyncio.sleep(0.05)
    peers[0][1].write(b"hi all\n")
    for r, _ in peers[1:]:
        line = await asyncio.wait_for(r.readline(), 5)
        print("received:", line.decode().strip())
        assert line.endswith(b"hi all\n")
    for _, w in peers:
        w.close()
        await w.wait_closed()
    server.close()
    await server.wait_closed()
    stats = asyncio.get_running_loop().stats()
    print("user-space connections:", stats["loop.userspace_connections"])
    assert stats["loop.userspace_connections"] == 6
    print("self-test OK")


async def serve(host, port):
    server = await asyncio.start_server(handle, host, port)
    print("chat on", server.sockets[0].getsockname())
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7777)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    mtcp_loop.run(self_test() if a.self_test else serve(a.host, a.port))   # <- the one line
