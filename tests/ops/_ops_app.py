"""App served by tests/ops/test_ops.py through `mtcp-loop run`: a line echo server on the stack
(port $MTCP_TEST_PORT) and, per worker, a command socket ($MTCP_TEST_CMD-<queue>.sock, a kernel
Unix socket) through which the test makes the worker open/close connections on its own stack:

    open            -> "<local port>"   a connection to the echo server, one line echoed, kept open
    close PORT      -> "ok"             closes that connection (this side closes first)
    load N          -> "<ok count>"     N short connections (line echo, close)
"""
import asyncio
import os


async def _echo(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                break
            w.write(line)
            await w.drain()
    finally:
        w.close()


async def main():
    from mtcp_loop import workers
    port = int(os.environ["MTCP_TEST_PORT"])
    srv = await asyncio.start_server(_echo, os.environ.get("MTCP_TEST_HOST", "127.0.0.1"), port)
    q = workers._CTX["queue"] if workers._CTX else 0
    conns = {}

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping\n")
        assert await r.readline() == b"ping\n"
        return r, w

    async def cmd(r, w):
        line = (await r.readline()).decode().split()
        if line[0] == "open":
            cr, cw = await one()
            lport = cw.get_extra_info("sockname")[1]
            conns[lport] = cw
            w.write(f"{lport}\n".encode())
        elif line[0] == "close":
            cw = conns.pop(int(line[1]))
            cw.close()
            await cw.wait_closed()
            w.write(b"ok\n")
        elif line[0] == "load":
            ok = 0
            for _ in range(int(line[1])):
                cr, cw = await one()
                cw.close()
                await cw.wait_closed()
                ok += 1
            w.write(f"{ok}\n".encode())
        await w.drain()
        w.close()

    path = f"{os.environ['MTCP_TEST_CMD']}-{q}.sock"
    cs = await asyncio.start_unix_server(cmd, path)
    async with srv, cs:
        await srv.serve_forever()
