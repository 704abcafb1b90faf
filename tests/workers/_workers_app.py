"""Apps served by tests/workers/test_workers.py through `mtcp-loop run` / workers.serve.

* ``Echo``: protocol factory (line echo).
* ``main``: async def main(): echo server on :8080 on the stack, and when MTCP_TEST_OUT is
  "host:port:count:concurrency" each worker also opens `count` connections to that kernel server
  (send a line, read the echo, close) and prints "OUT-DONE <queue> ok=<n> failed=<m>".
"""
import asyncio
import os
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)

    def eof_received(self):
        return False


async def _one(host, port, i):
    r, w = await asyncio.open_connection(host, port)
    try:
        msg = f"hello {i}\n".encode()
        w.write(msg)
        got = await r.readline()
        return got == msg
    finally:
        w.close()


async def _out(spec):
    from mtcp_loop import workers
    host, port, count, conc = spec.rsplit(":", 3)
    host = host.strip("[]")
    port, count, conc = int(port), int(count), int(conc)
    sem = asyncio.Semaphore(conc)
    ok = failed = 0

    async def go(i):
        nonlocal ok, failed
        async with sem:
            try:
                if await asyncio.wait_for(_one(host, port, i), 20):
                    ok += 1
                else:
                    failed += 1
            except Exception as e:      # noqa: BLE001
                failed += 1
                if failed < 5:
                    print(f"OUT-ERR {e!r}", file=sys.stderr, flush=True)

    await asyncio.gather(*(go(i) for i in range(count)))
    q = workers._CTX["queue"] if workers._CTX else 0
    print(f"OUT-DONE {q} ok={ok} failed={failed}", flush=True)


async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, ["0.0.0.0", "::"], int(os.environ.get("MTCP_TEST_PORT", "8080")), backlog=4096)
    spec = os.environ.get("MTCP_TEST_OUT")
    if spec:
        await _out(spec)
    async with srv:
        await srv.serve_forever()
