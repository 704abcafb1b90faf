"""Virtual time against the real clock on one test-like workload (figures in docs/benchmarks.md).

    mtcp-loop bench vtime [--clients 8] [--rounds 20] [--partition 2.0]

The workload: an echo server; ``clients`` connections, each doing ``rounds`` request/response
exchanges of 4 KB with a 100 ms think time, over ``loss=2%,delay=5ms``, with the server cut off
for ``partition`` seconds after 0.5 s. It runs once on MTCPLoop in real time (asyncio base,
``faults=True``) and once in virtual time, and prints for each: wall seconds, loop seconds
(``loop.time()`` elapsed), retransmissions and RTO expiries.
"""
from __future__ import annotations

import asyncio
import time


async def _workload(clients, rounds, partition):
    loop = asyncio.get_running_loop()

    async def handle(r, w):
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                w.write(d)
                await w.drain()
        except ConnectionError:
            pass
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    if partition:
        loop.faults.partition(port, start=0.5, duration=partition)
    msg = b"x" * 4096

    async def client():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(rounds):
            w.write(msg)
            await r.readexactly(len(msg))
            await asyncio.sleep(0.1)
        w.close()

    t0, w0 = loop.time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    took, wall = loop.time() - t0, time.perf_counter() - w0
    st = loop.stats()
    srv.close()
    await asyncio.sleep(1.0)          # the server's handlers see EOF and end (not measured)
    return took, wall, st


def run_once(virtual, clients, rounds, partition, seed=1):
    from mtcp_loop.policy import new_event_loop
    kw = dict(impair=f"loss=0.02,delay=5ms,seed={seed}", seed=seed)
    loop = (new_event_loop(virtual_time=True, **kw) if virtual
            else new_event_loop(base="asyncio", faults=True, **kw))
    try:
        took, wall, st = loop.run_until_complete(_workload(clients, rounds, partition))
    finally:
        loop.close()
    return {"wall_s": wall, "loop_s": took, "retrans": st["retrans_segs"],
            "rto": st["timeouts"], "dropped": st.get("impair.dropped", 0) + st.get("fault.dropped", 0)}


def report(clients=8, rounds=20, partition=2.0) -> int:
    """Both runs, one line each (`mtcp-loop bench vtime`)."""
    for name, virtual in (("real time", False), ("virtual time", True)):
        r = run_once(virtual, clients, rounds, partition)
        print(f"{name:13s} wall {r['wall_s']:7.3f} s  loop {r['loop_s']:7.3f} s  "
              f"retransmits {r['retrans']:4d}  RTOs {r['rto']:3d}  dropped {r['dropped']}")
    return 0
