"""One loop per core: supervised worker processes with flow affinity (mTCP's shared-nothing model).

With CPython's GIL a "loop per core" is a worker *process* per core. ``serve()`` (``mtcp-loop run
MODULE:APP --cores N``) and ``run(main, cores=N)`` start a supervisor that forks one worker per core:

* worker ``i`` is pinned to its CPU (``os.sched_setaffinity``) and owns logical queue ``i`` of the
  device: TAP queue ``i`` / AF_PACKET fanout member ``i`` / AF_XDP queue ``i``; its own engine,
  pools, timer wheel and listeners (every worker listens on the same ports, like SO_REUSEPORT);
* the link of each worker is wrapped by the C steering wrapper (``mtcp_steer_wrap``,
  native/io/steer.c): the kernel steers each flow to one queue (TAP: eBPF program set with
  TUNSETSTEERINGEBPF; AF_PACKET: PACKET_FANOUT_CBPF program), active opens pick ephemeral ports
  whose replies come back to the connecting worker (claim_port returns -EAGAIN for the others),
  TCP frames that reach the wrong worker are counted as ``misdirected`` and never shown to its
  engine (AF_XDP: handed to the owner over a shared-memory log), and neighbour replies (ARP
  replies, ICMPv6 NAs, which the kernel steers to queue 0) are copied to every worker;
* the supervisor restarts a worker that dies on the same CPU and queue (within a second) and
  re-installs the kernel program with the new member order (TAP queues and fanout members are
  numbered in attach order and the last one moves into a closed one's place); the other workers
  and their connections are untouched;
* SIGINT/SIGTERM drain: the supervisor forwards SIGTERM, each worker closes its listeners (stop
  accepting), waits up to ``drain_timeout`` for its connections to finish, then exits;
* every worker serves a control socket ``<rundir>/worker-<i>.sock`` (JSON counters: connections,
  conn/s, segments, retransmits, drops, misdirected frames ...); ``mtcp-loop stats [--json]`` reads
  them (``stats()`` here). ``<rundir>/supervisor.json`` lists the workers.
"""
from __future__ import annotations

import asyncio
import copy
import importlib
import json
import mmap
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Optional

from . import links as _links
from .ops import default_rundir

__all__ = ["serve", "run", "stats", "resolve_cores", "default_rundir", "load_target",
           "in_worker", "Supervisor", "worker_loop", "CHILD"]

_SHM_SLOTS = 4096
_CTX: Optional[dict] = None          # set in a worker process (after fork)


def in_worker() -> bool:
    return _CTX is not None


def resolve_cores(cores) -> list:
    """cores: N (first N CPUs of the affinity mask, reused round-robin if N exceeds it), 0 or
    "auto" (every CPU of the mask). Returns the CPU of each worker."""
    mask = sorted(os.sched_getaffinity(0))
    if cores in (None, 0, "0", "auto"):
        return mask
    n = int(cores)
    if n < 1:
        raise ValueError(f"cores must be >= 1, 0 or 'auto', got {cores!r}")
    return [mask[i % len(mask)] for i in range(n)]


def device_queues(ifname):
    """RX (or combined) queues of a network device (ETHTOOL_GCHANNELS, in this namespace), or
    None when the driver does not say."""
    import array
    import fcntl
    import struct
    if not ifname:
        return None
    buf = array.array("B", struct.pack("9I", 0x3c, *([0] * 8)))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
            fcntl.ioctl(sk.fileno(), 0x8946, struct.pack("16sP16x", ifname.encode()[:15], buf.buffer_info()[0]))
    except OSError:
        return None
    v = struct.unpack("9I", buf.tobytes())
    n = max(v[5], v[8])                  # rx_count, combined_count
    return n or None


def steer_counters() -> dict:
    if _CTX is None or _CTX.get("steer_link") is None:
        return {}
    from ._native import ffi, lib
    n = lib.MTCP_STEER_NCOUNTERS
    out = ffi.new("uint64_t[]", n)
    lib.mtcp_steer_counters(_CTX["steer_link"], out, n)
    return {ffi.string(lib.mtcp_steer_counter_name(i)).decode(): int(out[i]) for i in range(n)}


# --------------------------------------------------------------------------------------------
# targets: "module:attr" -> aiohttp Application / async def main() / protocol factory
# --------------------------------------------------------------------------------------------
def load_target(spec):
    if not isinstance(spec, str):
        return spec
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise ValueError(f"expected MODULE:APP, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _kind(obj) -> str:
    if type(obj).__name__ == "Application" and type(obj).__module__.startswith("aiohttp"):
        return "aiohttp"
    if asyncio.iscoroutine(obj) or asyncio.iscoroutinefunction(obj):
        return "main"
    if callable(obj):
        return "factory"
    raise TypeError(f"cannot serve {obj!r}: expected an aiohttp Application, an async def main() "
                    "or a protocol factory")


# --------------------------------------------------------------------------------------------
# worker process
# --------------------------------------------------------------------------------------------
class _Worker:
    def __init__(self, loop, queue, cpu, target, host, port, drain_timeout, rundir):
        self.loop = loop
        self.queue = queue
        self.cpu = cpu
        self.target = target
        self.kind = _kind(target) if target is not None else "program"
        self.host = host
        self.port = port
        self.drain_timeout = drain_timeout
        self.rundir = rundir
        self.started = time.time()
        self.stopping = asyncio.Event()
        self.draining = False
        self.rate = 0.0
        self._last = (time.monotonic(), 0)
        self.servers = []

    def _engine(self):
        return self.loop._mtcp_engine

    def open_conns(self) -> int:
        eng = self._engine()
        if eng is None:
            return 0
        return eng.n_open + len(eng._connecting) + len(eng._unowned)

    def snapshot(self) -> dict:
        d = self.loop.stats()
        st = steer_counters()
        return {
            "queue": self.queue, "cpu": self.cpu, "pid": os.getpid(), "uptime": time.time() - self.started,
            "draining": self.draining,
            "connections": self.open_conns(),
            "conn_per_s": round(self.rate, 1),
            "conns_total": d.get("passive_opens", 0) + d.get("active_opens", 0) + d.get("loop.kernel_accepted", 0),
            "accepted": d.get("conn_accepted", 0) + d.get("loop.kernel_accepted", 0),
            "kernel_accepted": d.get("loop.kernel_accepted", 0), "active_opens": d.get("active_opens", 0),
            "segs_in": d.get("segs_in", 0), "segs_out": d.get("segs_out", 0),
            "retransmits": d.get("retrans_segs", 0),
            "drops": sum(v for k, v in d.items() if k.startswith("drop_")),
            "misdirected": st.get("misdirected", 0),
            # ring level: frames the rings dropped (device RX ring / kernel, TX refused), output
            # stopped by a full TX ring, TX kicks the device refused
            "rx_dropped": d.get("link.rx_dropped", 0), "tx_dropped": d.get("link.tx_dropped", 0),
            "ring_full": d.get("tx_ring_full", 0), "kicks_refused": d.get("link.tx_kicks_refused", 0),
            "link": {k[5:]: v for k, v in d.items() if k.startswith("link.")},
            "steer": st, "engine": {k: v for k, v in d.items() if not k.startswith("loop.")},
        }

    async def _ticker(self):
        while True:
            await asyncio.sleep(1.0)
            d = self.loop.stats()
            now = time.monotonic()
            n = d.get("conn_established", 0) + d.get("conn_accepted", 0) + d.get("loop.kernel_accepted", 0)
            t0, n0 = self._last
            self.rate = (n - n0) / max(1e-6, now - t0)
            self._last = (now, n)

    async def _control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.strip().decode(errors="replace")
                if cmd == "stats":
                    out = self.snapshot()
                elif cmd == "drain":
                    self.stopping.set()
                    out = {"ok": True}
                else:                           # ss, capture, top, metrics (mtcp_loop/ops.py)
                    from . import ops as _ops
                    await _ops.serve_command(self.loop, cmd, writer, {"queue": self.queue, "cpu": self.cpu})
                    continue
                writer.write(json.dumps(out).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _open_control(self):
        os.makedirs(self.rundir, exist_ok=True)
        path = os.path.join(self.rundir, f"worker-{self.queue}.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return await asyncio.start_unix_server(self._control, path), path

    @staticmethod
    def _close_control(ctl, path):
        ctl.close()
        try:
            os.unlink(path)
        except OSError:
            pass

    async def main(self):
        loop = self.loop
        ctl, path = await self._open_control()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        ticker = asyncio.ensure_future(self._ticker())
        task = None
        runner = None
        try:
            if self.kind == "aiohttp":
                from aiohttp import web
                runner = web.AppRunner(self.target, handle_signals=False)
                await runner.setup()
                site = web.TCPSite(runner, self.host, self.port, backlog=1024)
                await site.start()
                self.servers = [site._server]
            elif self.kind == "factory":
                srv = await loop.create_server(self.target, self.host, self.port, backlog=1024)
                self.servers = [srv]
            else:
                coro = self.target() if asyncio.iscoroutinefunction(self.target) else self.target
                task = asyncio.ensure_future(coro)
            stop = asyncio.ensure_future(self.stopping.wait())
            waits = {stop} | ({task} if task else set())
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if task is not None and task in done:
                stop.cancel()
                return task.result()
            await self.drain()
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass
        finally:
            ticker.cancel()
            if runner is not None:
                await runner.cleanup()
            self._close_control(ctl, path)

    async def drain(self, close=True):
        """Stop accepting (every listener of this worker's engine, and their kernel mirror
        listeners), then wait for the open connections to finish, at most drain_timeout seconds.
        close=False (policy form): the servers stop listening but stay open, so the program's
        serve_forever() keeps waiting while its connections finish."""
        self.draining = True
        eng = self._engine()
        servers = set(self.servers)
        if eng is not None:
            servers |= set(eng._listeners.values())
        for s in list(servers):       # a reuse_port group stands in the listener table: its servers
            members = getattr(s, "members", None)
            if members is not None:
                servers.discard(s)
                servers |= set(members)
        ports = set()                 # kernel mirror listeners' ports: their connections drain too
        for s in servers:
            for ks in getattr(s, "_kernel_servers", ()):
                for sk in ks.sockets or ():
                    try:
                        ports.add(sk.getsockname()[1])
                    except OSError:
                        pass
        for s in servers:
            try:
                if close or not hasattr(s, "_stop_listening"):
                    s.close()
                else:
                    s._stop_listening()
            except Exception:
                pass
        deadline = time.monotonic() + self.drain_timeout
        while (self.open_conns() + _kernel_conns(ports) > 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- policy form: beside the unchanged program ---------------------------------------
    def attach_program(self):
        """MTCPPolicy(cores=N): this worker's loop runs the program itself. Serve the control
        socket and the rate ticker as a task of the loop, and drain on SIGTERM/SIGINT (unless
        the program installs its own handlers, as aiohttp's run_app does) or the control
        socket's "drain": stop accepting, wait for the connections, then SystemExit(0) out of
        the loop (asyncio.run cancels what is left and the program exits 0)."""
        for sig, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(sig) in (default, signal.SIG_DFL):   # the program's own handler stays
                self.loop.add_signal_handler(sig, self._on_stop_signal)
        self.service = self.loop.create_task(self._program_service())
        return self.service

    def _on_stop_signal(self):
        self.stopping.set()                        # the supervisor kills after drain_timeout + 3 s

    async def _program_service(self):
        ctl, path = await self._open_control()
        ticker = asyncio.ensure_future(self._ticker())
        try:
            await self.stopping.wait()
            await self.drain(close=False)
        finally:
            ticker.cancel()
            self._close_control(ctl, path)
        self.loop.call_soon(_exit_program, 0)


def _kernel_conns(ports) -> int:
    """Kernel TCP connections of this process on these local ports (accepted through a kernel
    mirror listener), from /proc: the same for both loop bases."""
    if not ports:
        return 0
    inodes = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    n = 0
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10 or parts[3] == "0A":          # LISTEN
                        continue
                    if int(parts[1].rsplit(":", 1)[1], 16) in ports and parts[9] in inodes:
                        n += 1
        except OSError:
            pass
    return n


def _exit_program(code):
    raise SystemExit(code)


def _enter_worker(queue, cpu, nqueues, slots, config, rundir, drain_timeout, shm, evfds, ready_w, signals,
                  supervisor):
    """First thing in a forked worker (both entry points): signal handlers as they were before
    the supervisor took them, its own process group (a terminal's Ctrl-C reaches the supervisor
    only, which forwards one SIGTERM: no worker sees two signals), SIGTERM when the supervisor
    dies, pinned to its CPU, the worker context that open_link reads."""
    global _CTX
    for sig, h in signals.items():
        signal.signal(sig, h)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor:               # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
    _CTX = {"queue": queue, "cpu": cpu, "nqueues": nqueues, "slots": slots, "shm": shm, "evfds": evfds,
            "config": config, "rundir": rundir, "drain_timeout": drain_timeout, "ready_w": ready_w}
    _links.set_queue_context(_CTX)               # open_link joins this queue, steered


def worker_loop():
    """A new loop of this worker: its queue of the device (steered), opened now. The first one
    tells the supervisor that the worker is ready."""
    from .config import MTCPConfig
    from .policy import new_event_loop
    ctx = _CTX
    cfg = MTCPConfig.coerce(copy.copy(ctx["config"]) if ctx["config"] is not None else None)
    cfg.queue = ctx["queue"]
    cfg.nqueues = ctx["nqueues"]
    loop = new_event_loop(config=cfg)
    try:
        if cfg.backend != "loopback":
            loop._engine()               # open + steer the link now (joins the queue)
    except BaseException:
        loop.close()
        raise
    ready_w = ctx.pop("ready_w", None)
    if ready_w is not None:
        try:
            os.write(ready_w, b"R")
        except OSError:
            pass                          # a restart: the supervisor does not wait
        os.close(ready_w)
    return loop


def _worker_entry(queue, cpu, nqueues, slots, target, host, port, config, rundir,
                  drain_timeout, shm, evfds, ready_w, supervisor):
    """`mtcp-loop run` / mtcp_loop.run(main, cores=N): runs in the forked child; never returns."""
    code = 0
    try:
        _enter_worker(queue, cpu, nqueues, slots, config, rundir, drain_timeout, shm, evfds, ready_w,
                      {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_DFL}, supervisor)
        loop = worker_loop()
        asyncio.set_event_loop(loop)
        w = _Worker(loop, queue, cpu, load_target(target), host, port, drain_timeout, rundir)
        try:
            loop.run_until_complete(w.main())
        finally:
            loop.close()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# --------------------------------------------------------------------------------------------
# supervisor
# --------------------------------------------------------------------------------------------
class Supervisor:
    def __init__(self, target, cores=None, *, host="0.0.0.0", port=8080, config=None, rundir=None,
                 name="default", drain_timeout=10.0, restart=True, **overrides):
        from .config import MTCPConfig
        self.cpus = resolve_cores(cores)
        self.n = len(self.cpus)
        self.target = target
        self.host = host
        self.port = port
        cfg = MTCPConfig.coerce(config, **overrides)
        if cfg.backend == "tap" and cfg.mac == "auto":
            cfg.mac = ":".join(f"{b:02x}" for b in _links._random_mac())   # one MAC for all workers
        if cfg.backend == "xdp" and self.n > 1:
            nq = device_queues(cfg.ifname)       # an XSK binds to one queue of the device
            if nq is not None and nq < self.n:
                if cores not in (None, 0, "0", "auto"):
                    raise ValueError(f"backend 'xdp' on {cfg.ifname!r}: the device has {nq} queue(s), cores={cores} "
                                     f"needs {self.n} (one per worker); give it more queues (ethtool -L) or "
                                     f"use cores={nq}")
                self.cpus = self.cpus[:nq]       # "auto": every core the device can feed
                self.n = nq
            if cfg.nqueues < self.n:
                cfg.nqueues = self.n
        self.config = cfg
        self.rundir = rundir or default_rundir(name)
        self.drain_timeout = drain_timeout
        self.restart = restart
        self.pid = os.getpid()
        self.pids = {}                 # queue -> pid
        self.restarts = {q: 0 for q in range(self.n)}
        self.started = {}
        self.exit_codes = {}
        self.members = []              # kernel member order: members[i] = queue
        self.stopping = False
        self.pending = {}              # queue -> monotonic time of its restart
        self.fast_fails = {}           # queue -> consecutive deaths within 2 s of starting
        self.max_fast_fails = 8
        self.shm = None
        self.evfds = []
        self.child = None              # policy form, in a forked worker: its queue
        self._old_signals = {}

    def _setup_shared(self):
        from ._native import ffi, lib
        size = lib.mtcp_steer_shm_size(_SHM_SLOTS)
        self.shm = mmap.mmap(-1, size)                    # MAP_SHARED | MAP_ANONYMOUS
        rc = lib.mtcp_steer_shm_init(ffi.from_buffer(self.shm), size, _SHM_SLOTS)
        if rc < 0:
            raise OSError(-rc, "mtcp_steer_shm_init")
        self.evfds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(self.n)]
        cfg = self.config
        if cfg.backend == "xdp" and self.n > 1:
            # one redirect program + XSKMAP for all workers, held by the supervisor (io/xdp.c)
            err = ffi.new("char[]", 256)
            flags = lib.MTCP_XDP_SKB_MODE if cfg.xdp_mode == "skb" else 0
            rc = lib.mtcp_xdp_share(cfg.ifname.encode(), flags, err, 256)
            if rc < 0:
                raise OSError(-rc, f"xdp: {ffi.string(err).decode()}")

    def _slots(self):
        return [self.members.index(q) if q in self.members else q for q in range(self.n)]

    def _spawn(self, q, wait_ready=True):
        self.members.append(q)
        slots = self._slots()
        r, w = os.pipe()
        for f in (sys.stdout, sys.stderr):        # no buffered output copied into the child
            try:
                f.flush()
            except (AttributeError, OSError, ValueError):
                pass
        pid = os.fork()
        if pid == 0:
            os.close(r)
            if self.target is None:               # policy form: return into the program
                self.child = q
                _enter_worker(q, self.cpus[q], self.n, slots, self.config, self.rundir, self.drain_timeout,
                              self.shm, self.evfds, w, self._old_signals, self.pid)
                return
            _worker_entry(q, self.cpus[q], self.n, slots, self.target, self.host, self.port, self.config,
                          self.rundir, self.drain_timeout, self.shm, self.evfds, w, self.pid)
        os.close(w)
        self.pids[q] = pid
        self.started[q] = time.time()
        if wait_ready:
            deadline = time.monotonic() + 10
            ok = False
            while time.monotonic() < deadline:
                import select
                rr, _, _ = select.select([r], [], [], 0.05)
                if rr:
                    ok = os.read(r, 1) == b"R"
                    break
                wp, _ = os.waitpid(pid, os.WNOHANG)
                if wp:
                    self._reaped(q, pid, None)
                    break
            if not ok and q in self.pids:
                print(f"mtcp-loop: worker {q} did not become ready", file=sys.stderr)
        os.close(r)
        self._write_state()

    def _reaped(self, q, pid, status):
        self.pids.pop(q, None)
        if q in self.members:                     # the kernel moves the last member into its place
            i = self.members.index(q)
            last = self.members.pop()
            if last != q:
                self.members[i] = last
        if status is not None:
            self.exit_codes[q] = os.waitstatus_to_exitcode(status)

    def _write_state(self):
        os.makedirs(self.rundir, exist_ok=True)
        st = {"pid": os.getpid(), "cores": self.n, "backend": self.config.backend,
              "stopping": self.stopping,
              "workers": {str(q): {"pid": self.pids.get(q), "cpu": self.cpus[q], "restarts": self.restarts[q],
                                   "started": self.started.get(q)} for q in range(self.n)}}
        tmp = os.path.join(self.rundir, "supervisor.json.tmp")
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, os.path.join(self.rundir, "supervisor.json"))

    def _on_signal(self, signum, frame):
        if os.getpid() != self.pid:      # a just-forked worker before it reset its handlers
            os._exit(0)
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.drain_timeout + 3.0
            for pid in list(self.pids.values()):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _check_not_running(self):
        try:
            with open(os.path.join(self.rundir, "supervisor.json")) as f:
                pid = json.load(f).get("pid")
        except (OSError, ValueError):
            return
        if pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            raise RuntimeError(f"another mtcp-loop supervisor (pid {pid}) runs with rundir {self.rundir}; "
                               "pick another name or rundir (`mtcp-loop run --name/--rundir`, MTCPPolicy(name=/rundir=), "
                               "MTCP_RUNDIR)")

    def run(self):
        """Fork the workers and supervise them until they are done; returns the exit status (0/1).
        Policy form (target None): in a forked worker it returns CHILD instead, at once."""
        self.pid = os.getpid()
        os.makedirs(self.rundir, exist_ok=True)
        self._check_not_running()
        self._setup_shared()
        old = self._old_signals = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.target is None:
            print(f"mtcp-loop: {self.n} worker(s) on CPUs {self.cpus}, supervisor pid {self.pid} (rundir {self.rundir})",
                  file=sys.stderr, flush=True)
        failures = 0
        try:
            for q in range(self.n):
                self._spawn(q)
                if self.child is not None:
                    return CHILD
            while self.pids or (self.pending and not self.stopping):
                for q, t in list(self.pending.items()):
                    if self.stopping:
                        self.pending.clear()
                        break
                    if time.monotonic() >= t:
                        del self.pending[q]
                        self._spawn(q, wait_ready=False)
                        if self.child is not None:
                            return CHILD
                if not self.pids:
                    time.sleep(0.02)
                    continue
                if self.stopping and time.monotonic() > self.stop_deadline:
                    for pid in list(self.pids.values()):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    time.sleep(0.02)
                    continue
                q = next((k for k, v in self.pids.items() if v == pid), None)
                if q is None:
                    continue
                self._reaped(q, pid, status)
                code = self.exit_codes.get(q, 0)
                if self.stopping or not self.restart or code == 0:
                    if code != 0 and not self.stopping:
                        failures += 1
                    self._write_state()
                    continue
                self.restarts[q] += 1
                lived = time.time() - self.started.get(q, 0)
                self.fast_fails[q] = self.fast_fails.get(q, 0) + 1 if lived < 2.0 else 0
                if self.fast_fails[q] > self.max_fast_fails:
                    print(f"mtcp-loop: worker {q} keeps dying at start ({self.fast_fails[q]} times in a row); "
                          "stopping", file=sys.stderr)
                    failures += 1
                    self._on_signal(signal.SIGTERM, None)
                    continue
                delay = 0.0 if self.fast_fails[q] <= 1 else min(5.0, 0.1 * 2 ** (self.fast_fails[q] - 2))
                print(f"mtcp-loop: worker {q} (pid {pid}) exited with {code}; restarting on cpu "
                      f"{self.cpus[q]}" + (f" in {delay:.1f}s" if delay else ""), file=sys.stderr)
                self.pending[q] = time.monotonic() + delay
        finally:
            if self.child is None:                # the supervisor's own state, not a worker's
                for s, h in old.items():
                    signal.signal(s, h)
                for fd in self.evfds:
                    os.close(fd)
                self._write_state()
        bad = [c for c in self.exit_codes.values() if c != 0]
        return 1 if (bad and not self.stopping) or failures else 0


CHILD = "child"                      # Supervisor.run() in a forked worker of the policy form (program.py)


def serve(target, cores=None, **kw) -> int:
    """Serve target (MODULE:APP string, aiohttp Application, async def main() or protocol
    factory) with one worker process per core. Blocks until the workers exit; returns 0/1.
    config.metrics: one Prometheus endpoint in the supervisor for every worker (metrics.py)."""
    sup = Supervisor(target, cores, **kw)
    metrics_srv = None
    if sup.config.metrics:
        from . import metrics as _metrics
        metrics_srv = _metrics.serve_supervisor(sup.rundir, sup.config.metrics)
    try:
        return sup.run()
    finally:
        if metrics_srv is not None:
            metrics_srv.shutdown()


def run(main, cores=None, config=None, **overrides):
    """mtcp_loop.run(main, cores=N): run main (an async def, or a coroutine) in N workers."""
    kw = {k: overrides.pop(k) for k in ("rundir", "name", "drain_timeout", "restart", "host", "port")
          if k in overrides}
    coro_obj = main if asyncio.iscoroutine(main) else None
    try:
        return serve(main, cores, config=config, **kw, **overrides)
    finally:
        if coro_obj is not None:
            coro_obj.close()


# --------------------------------------------------------------------------------------------
# stats client
# --------------------------------------------------------------------------------------------
def _query(path, cmd="stats", timeout=2.0):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(cmd.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def stats(rundir=None, name="default") -> dict:
    """Live per-worker counters from a running supervisor (through the workers' control sockets)
    and their totals."""
    rundir = rundir or default_rundir(name)
    sup_path = os.path.join(rundir, "supervisor.json")
    if not os.path.exists(sup_path):
        raise FileNotFoundError(f"no running mtcp-loop workers under {rundir} (supervisor.json missing)")
    with open(sup_path) as f:
        sup = json.load(f)
    try:
        os.kill(sup["pid"], 0)
    except ProcessLookupError:
        raise FileNotFoundError(f"no running mtcp-loop workers under {rundir} (supervisor pid {sup['pid']} "
                                "is gone)") from None
    except PermissionError:
        pass
    workers = {}
    for q in sorted(sup["workers"], key=int):
        path = os.path.join(rundir, f"worker-{q}.sock")
        try:
            workers[q] = _query(path)
        except (OSError, ValueError) as e:
            workers[q] = {"queue": int(q), "error": str(e)}
        workers[q]["restarts"] = sup["workers"][q].get("restarts", 0)
    keys = ("connections", "conn_per_s", "conns_total", "accepted", "active_opens", "segs_in", "segs_out",
            "retransmits", "drops", "misdirected", "rx_dropped", "tx_dropped", "ring_full", "kicks_refused")
    total = {k: sum(w.get(k, 0) for w in workers.values() if "error" not in w) for k in keys}
    total["restarts"] = sum(w.get("restarts", 0) for w in workers.values())
    return {"supervisor": sup, "workers": workers, "total": total}
