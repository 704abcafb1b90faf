"""Pool exhaustion on the embedded loopback: an 8-block engine (listener + 7), 20 concurrent
open_connection to its own server. Every client told "connected" is one the server accepts;
the others fail at once with ENOMEM and a message naming the pool; after everything is closed
the next connection succeeds at once. Stock asyncio (kernel sockets, no such pool) serves all 20:
printed as the reference. Both MTCPLoop bases."""
from __future__ import annotations

import asyncio
import errno
import time

import pytest

from tests.helpers import HAVE_UVLOOP, make_loop

N = 20


async def _scenario():
    accepted = []

    async def handle(r, w):
        accepted.append(w)
        try:
            d = await r.read(100)
            if d:
                w.write(d)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()           # Python 3.12+: srv.wait_closed() waits for every connection

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]

    async def one(i):
        t = time.monotonic()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except OSError as e:
            return ("fail", e, time.monotonic() - t)
        w.write(b"m%d" % i)
        d = await asyncio.wait_for(r.read(100), 5)
        return ("ok" if d == b"m%d" % i else "bad", w, time.monotonic() - t)

    res = await asyncio.gather(*(one(i) for i in range(N)))
    ok = [x for x in res if x[0] == "ok"]
    fails = [x for x in res if x[0] == "fail"]
    n_acc = len(accepted)
    for x in ok:
        x[1].close()
    for w in accepted:
        w.close()
    await asyncio.sleep(0.05)
    t = time.monotonic()
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    w.write(b"again")
    again = await asyncio.wait_for(r.read(100), 5)
    reconnect = time.monotonic() - t
    w.close()
    srv.close()
    await srv.wait_closed()
    return ok, fails, n_acc, res, again, reconnect


@pytest.mark.parametrize("kind", ["asyncio", "mtcp_asyncio", "mtcp_uvloop"])
def test_pool_exhaustion_admission(kind):
    if kind == "mtcp_uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop not installed")
    loop = make_loop(kind, max_conns=8) if kind != "asyncio" else make_loop(kind)
    try:
        ok, fails, n_acc, res, again, reconnect = loop.run_until_complete(asyncio.wait_for(_scenario(), 60))
    finally:
        loop.close()
    print(f"\n{kind}: {N} concurrent connects, max_conns=8: {len(ok)} connected+echoed, {n_acc} accepted, "
          f"{len(fails)} failed (slowest failure {max((f[2] for f in fails), default=0) * 1000:.1f} ms); "
          f"after close: reconnect+echo in {reconnect * 1000:.1f} ms")
    assert again == b"again"
    assert reconnect < 1.0                                      # well within one RTO
    if kind == "asyncio":
        assert len(ok) == N
        return
    assert len(ok) + len(fails) == N                            # nothing hangs, nothing half-open
    assert len(ok) == n_acc >= 1                                # connected <=> accepted
    for _, e, dt in fails:
        assert e.errno == errno.ENOMEM and "connection pool exhausted" in str(e), e
        assert dt < 1.0
