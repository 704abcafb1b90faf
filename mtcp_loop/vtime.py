"""Virtual time for MTCPLoop (asyncio base): a test suite over a lossy network in milliseconds,
the same every run.

``mtcp_loop.new_event_loop(virtual_time=True)`` (or ``MTCP_VIRTUAL_TIME=1``, or the pytest
plugin's ``--mtcp-virtual-time`` / ``@pytest.mark.mtcp_virtual_time``) builds a
``VirtualTimeMTCPLoop``:

* one clock: ``loop.time()``, the engine's ``now_us`` (every ``mtcp_engine_poll`` and
  ``mtcp_connect``), the loopback link, the impairment wrapper (delay, jitter, rate, reorder
  hold-back, scripted faults) and the pcap timestamps all read :class:`VirtualClock`; nothing in
  the data path reads the OS clock;
* autojump: the base loop's selector is wrapped (:class:`_AutojumpSelector`). When the base loop
  would block (no ready callback; the engine's frames to itself are a timer due *now*, so no
  frame is in flight either), it polls the real file descriptors without waiting and, if none is
  ready, moves the clock to the earliest timer (an ``asyncio.sleep``, a ``wait_for`` timeout or
  the engine's next deadline: RTO, delayed ACK, keepalive, TIME-WAIT, impairment queue) and
  returns. ``asyncio.sleep(3600)`` and a 60 s RTO back-off take no wall time. With no timer at
  all it blocks on the real selector as any loop would (a deadlocked test waits for its
  timeout);
* determinism: the engine's secret (ISNs, SYN-cookie key, ephemeral-port offset, timestamp
  offsets) comes from ``config.seed``; when it is 0 a seed is drawn and shown as
  ``loop.mtcp_seed`` (the pytest plugin prints it for a failing test). The impairment PRNGs are
  seeded from (seed, impair seed). The clock starts at :data:`START` and pcap timestamps are
  ``2000-01-01T00:00:00Z + (clock - START)``. So one seed gives the same frames (the pcap byte for
  byte) and the same callback order;
* ``run_in_executor(None, func)`` runs ``func`` inline in the loop's thread (no virtual time
  passes; file I/O such as aiohttp's FileResponse or sendfile's fallback, blocking library calls);
* what cannot be virtual is refused with ``RuntimeError`` naming virtual time:
  ``run_in_executor`` with an explicit executor (real threads/processes run in real time), ``subprocess_exec``/``subprocess_shell``,
  ``getaddrinfo``/``getnameinfo`` for anything but IP literals and ``localhost`` (answered
  without a thread), the uvloop base and the real backends (``ValueError`` from the config).
  The kernel fallback is off: ``fallback`` is ``"error"`` and listeners get no kernel mirror.
  The engine sits on an isolated loopback attachment (``mtcp_loopback_open_isolated``): its
  ports are its own and no other loop of the process reaches it, so what other loops do (or
  leave behind) changes nothing here.
  Still possible but outside the determinism guarantee (docs/testing.md): kernel sockets handed
  in (``create_server(sock=...)`` adopts their address, the kernel picked the port),
  ``sock_*`` calls on kernel sockets and ``call_soon_threadsafe`` from other threads.

Hooks this module uses in mtcp_loop/loop.py (kept small so a compiled driver can carry them):
``_MTCPLoopMixin._mtcp_now_us()`` is the engine's clock (``_Engine.now_us``),
``_MTCPLoopMixin._mtcp_pcap_offset_us`` (None = realtime) is applied to a capture when the
engine opens its link, ``_MTCPLoopMixin._mtcp_loopback_isolated`` picks
``mtcp_loopback_open_isolated``, and ``config.faults`` puts the rule wrapper on the link.
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket

from .config import MTCPConfig

__all__ = ["VirtualClock", "virtual_loop_class", "START", "PCAP_EPOCH_US", "VirtualTimeError"]

#: Where the virtual clock starts (seconds). Not 0, so that code subtracting a timeout from
#: ``loop.time()`` stays positive, as with a monotonic clock.
START = 1000.0
#: pcap timestamp of the clock's START: 2000-01-01T00:00:00Z.
PCAP_EPOCH_US = 946684800 * 1000000


class VirtualTimeError(RuntimeError):
    """Something that needs real time (a thread, a subprocess, DNS) in a virtual-time loop."""


def _refuse(what, why):
    return VirtualTimeError(
        f"mtcp_loop virtual time: {what} is refused ({why}); run this test without virtual time "
        "(no --mtcp-virtual-time / mtcp_virtual_time marker / MTCP_VIRTUAL_TIME) or avoid it")


class VirtualClock:
    """Integer nanoseconds; moves only when the loop jumps to its next timer."""

    __slots__ = ("ns", "jumps", "jumped_ns")

    def __init__(self, start: float = START):
        self.ns = int(round(start * 1e9))
        self.jumps = 0
        self.jumped_ns = 0

    def time(self) -> float:
        return self.ns / 1e9

    def now_us(self) -> int:
        return self.ns // 1000

    def jump_to(self, when: float) -> None:
        """Advance to ``when`` (seconds) so that time() >= when afterwards; never backwards."""
        target = math.ceil(when * 1e9)
        while target / 1e9 < when:          # float rounding: land at or after the timer
            target += 1
        if target > self.ns:
            self.jumps += 1
            self.jumped_ns += target - self.ns
            self.ns = target

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (tests; the loop jumps by itself)."""
        if seconds < 0:
            raise ValueError("the virtual clock does not go backwards")
        self.jump_to(self.time() + seconds)


class _AutojumpSelector:
    """The base loop's selector, with select() that never waits while a timer is pending:
    real fds are polled with timeout 0; if none is ready the clock jumps to the earliest timer
    (BaseEventLoop._run_once then runs it)."""

    def __init__(self, inner, loop):
        self._inner = inner
        self._loop = loop

    def select(self, timeout=None):
        events = self._inner.select(0)
        if events or timeout == 0:
            return events
        sched = self._loop._scheduled
        if sched:
            # _run_once removed cancelled handles from the head before computing timeout
            self._loop._vt_clock.jump_to(sched[0]._when)
            return events
        # no timer and nothing ready: only real file descriptors (signals, another thread's
        # call_soon_threadsafe) can wake the loop: block like any loop would
        return self._inner.select(timeout)

    def __getattr__(self, name):        # register, unregister, modify, get_key, get_map, close
        return getattr(self._inner, name)


def _seed_mix(a: int, b: int) -> int:
    """splitmix64 of (a, b): the impairment seed derived from the loop seed."""
    x = (a * 0x9E3779B97F4A7C15 + b) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) or 1


def virtual_config(cfg: MTCPConfig) -> MTCPConfig:
    """The configuration a virtual-time loop runs with: a concrete seed, impairment seeded from
    it, no kernel fallback or mirror, the fault-rule wrapper on the link."""
    seed = cfg.seed or (int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)) or 1
    imp = cfg.impair
    if imp is not None:
        imp = dataclasses.replace(imp, seed=_seed_mix(seed, imp.seed))
    return dataclasses.replace(cfg, seed=seed, impair=imp, fallback="error", kernel_mirror=False,
                               faults=True, virtual_time=True, base="asyncio")


class _VirtualTimeMixin:
    """Layered over an MTCPLoop class on asyncio's selector loop."""

    _mtcp_pcap_offset_us = None          # set per instance below
    _mtcp_loopback_isolated = True       # ports of our own; no other loop reaches this engine

    def __init__(self, config=None, **overrides):
        cfg = MTCPConfig.coerce(config, **overrides)
        self._vt_clock = VirtualClock()
        self._mtcp_pcap_offset_us = PCAP_EPOCH_US - self._vt_clock.now_us()
        super().__init__(config=virtual_config(cfg))
        self._selector = _AutojumpSelector(self._selector, self)

    # -- the clock -----------------------------------------------------------------------------
    def time(self):
        return self._vt_clock.ns / 1e9

    def _mtcp_now_us(self):
        return self._vt_clock.ns // 1000

    @property
    def virtual_clock(self) -> VirtualClock:
        return self._vt_clock

    @property
    def mtcp_seed(self) -> int:
        return self._mtcp_config.seed

    def stats(self):
        d = super().stats()
        d["vtime.now"] = self._vt_clock.time()
        d["vtime.jumps"] = self._vt_clock.jumps
        d["vtime.jumped_s"] = self._vt_clock.jumped_ns / 1e9
        d["vtime.seed"] = self._mtcp_config.seed
        return d

    # -- what cannot be virtual ------------------------------------------------------------------
    def run_in_executor(self, executor, func, *args):
        """The default executor runs ``func`` inline, in the loop's thread, taking no virtual
        time (file I/O as aiohttp's FileResponse and sendfile's fallback do, a blocking library
        call): its result is ready at a deterministic point. A function that waits for the loop
        would deadlock. An explicit executor (a real thread or process pool) is refused."""
        self._check_closed()
        if executor is not None:
            raise _refuse(f"run_in_executor({executor!r}, ...)", "a thread or process pool runs "
                          "in real time, so its result would arrive at a nondeterministic point "
                          "of the virtual timeline; the default executor (None) runs inline")
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    def set_default_executor(self, executor):
        raise _refuse("set_default_executor", "threads run in real time")

    async def subprocess_exec(self, *args, **kwargs):
        raise _refuse("subprocess_exec", "a child process runs in real time")

    async def subprocess_shell(self, *args, **kwargs):
        raise _refuse("subprocess_shell", "a child process runs in real time")

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """IP literals, None and 'localhost' (127.0.0.1 then ::1) are answered at once, without a
        thread; other names are refused (DNS is real network and real time)."""
        if isinstance(host, bytes):
            host = host.decode("idna")
        if isinstance(host, str) and host.lower().rstrip(".") == "localhost":
            hosts = []
            if family in (0, socket.AF_UNSPEC, socket.AF_INET):
                hosts.append(("127.0.0.1", socket.AF_INET))
            if family in (0, socket.AF_UNSPEC, socket.AF_INET6) and socket.has_ipv6:
                hosts.append(("::1", socket.AF_INET6))
            out = []
            for h, fam in hosts:
                out += socket.getaddrinfo(h, port, fam, type, proto, flags | socket.AI_NUMERICHOST)
            if not out:
                raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")
            return out
        try:
            return socket.getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror as exc:
            if exc.errno != socket.EAI_NONAME:
                raise
        raise _refuse(f"getaddrinfo({host!r})", "name resolution needs a thread and the real "
                      "network; use an IP literal or 'localhost'")

    async def getnameinfo(self, sockaddr, flags=0):
        """Numeric only (NI_NUMERICHOST in flags): a reverse lookup is real network."""
        if not flags & socket.NI_NUMERICHOST:
            raise _refuse("getnameinfo without NI_NUMERICHOST", "a reverse lookup needs a thread "
                          "and the real network")
        return socket.getnameinfo(sockaddr, flags)


_vt_classes = {}


def virtual_loop_class():
    """The virtual-time MTCPLoop class (always on asyncio's selector loop)."""
    cls = _vt_classes.get("asyncio")
    if cls is None:
        from .loop import make_loop_class
        base = make_loop_class("asyncio")
        cls = type("VirtualTimeMTCPLoop", (_VirtualTimeMixin, base), {
            "__module__": __name__,
            "__doc__": "MTCPLoop on asyncio's selector loop with a virtual, autojumping clock.",
        })
        _vt_classes["asyncio"] = cls
    return cls
