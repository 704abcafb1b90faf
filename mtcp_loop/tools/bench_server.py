"""The server process of one `mtcp-loop bench compare` configuration: the same code under every
loop (asyncio, uvloop, mtcp_loop workers), started by mtcp_loop/tools/bench_compare.py as

    python -m mtcp_loop.tools.bench_server JSON

On consecutive ports from ``port``: echo, sink, source, the aiohttp hello app (keep-alive and
Connection: close) and a second echo. It writes its RSS, open connections and (mtcp) engine pool
usage to a stats file once a second.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import types

BACKLOG = 65535

_OPEN = [0]


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        _OPEN[0] += 1

    def data_received(self, d):
        self.t.write(d)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        _OPEN[0] -= 1


class Sink(Echo):
    def data_received(self, d):
        pass


class Source(Echo):
    BLOCK = b"s" * 262144

    def connection_made(self, t):
        super().connection_made(t)
        self.req = b""
        self.left = None
        self.paused = False

    def data_received(self, d):
        if self.left is None:
            self.req += d
            if len(self.req) >= 8:
                self.left = int.from_bytes(self.req[:8], "big")
                self._pump()

    def _pump(self):
        blk = self.BLOCK
        while self.left > 0 and not self.paused:
            n = min(self.left, len(blk))
            self.t.write(blk if n == len(blk) else blk[:n])
            self.left -= n
        if self.left == 0:
            self.left = -1
            self.t.close()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.left is not None and self.left > 0:
            self._pump()


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


_SERVE = {}


async def _server_main():
    """Listeners + aiohttp app + the stats file. Parameters in _SERVE (set before the loop runs;
    inherited by mtcp_loop's forked workers)."""
    from aiohttp import web
    host, port, statsdir = _SERVE["host"], _SERVE["port"], _SERVE["statsdir"]
    loop = asyncio.get_running_loop()
    servers = []
    for off, proto in ((0, Echo), (1, Sink), (2, Source), (5, Echo)):
        servers.append(await loop.create_server(proto, host, port + off, backlog=BACKLOG))

    async def hello(request):
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port + 4, backlog=BACKLOG)
    await site.start()
    path = os.path.join(statsdir, f"stats-{os.getpid()}.json")
    pool = None
    try:
        from mtcp_loop._native import ffi, lib
        pool = ffi.new("uint64_t[4]")
    except ImportError:
        pass
    while True:
        st = {"pid": os.getpid(), "ready": True, "rss_kb": _rss_kb(), "open": _OPEN[0],
              "loop": type(loop).__name__, "time": time.time()}
        eng = getattr(loop, "_mtcp_engine", None)
        if eng is not None and getattr(eng, "e", None) is not None and pool is not None:
            lib.mtcp_engine_pool_usage(eng.e, pool)
            st["pool"] = [int(pool[i]) for i in range(4)]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, path)
        await asyncio.sleep(1.0)


def _serve(args) -> int:
    cpus = {int(c) for c in args.cpus.split(",")}
    os.sched_setaffinity(0, cpus)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in ((400000, 400000), (hard, hard)):     # raising the hard limit needs CAP_SYS_RESOURCE
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            pass
    _SERVE.update(host=args.host, port=args.port, statsdir=args.statsdir)
    if args.loop == "mtcp":
        from mtcp_loop import workers
        ov = dict(backend=args.backend, ifname=args.ifname, ipv4=args.ipv4, nqueues=args.cores,
                  max_conns=args.max_conns)
        return workers.run(_server_main, cores=args.cores, rundir=os.path.join(args.statsdir, "ctl"),
                           drain_timeout=0.5, **ov) or 0
    if args.loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop
    with asyncio.Runner(loop_factory=factory) as r:
        r.run(_server_main())
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mtcp_loop.tools.bench_server JSON (internal: the server process of "
              "`mtcp-loop bench compare`)", file=sys.stderr)
        return 2
    return _serve(types.SimpleNamespace(**json.loads(argv[0])))


if __name__ == "__main__":
    sys.exit(main())
