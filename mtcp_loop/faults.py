"""Fault scripting: per-test link faults on top of (or instead of) the random impairment.

``loop.faults`` (a :class:`FaultScript`) adds rules to the rule table of the link's impairment
wrapper (native/io/impair.c, ``mtcp_fault_add``). The wrapper is on the link when the loop runs
in virtual time or with ``faults=True`` (``MTCP_FAULTS=1``). Rules run in C on every frame; Python
only adds, removes and reads them::

    f = loop.faults
    f.partition(8080, duration=20)        # nothing between port 8080 and anyone for 20 s
    f.drop(flags="SA")                    # drop the next SYN-ACK
    f.delay(src=8080, delay=0.5)          # +500 ms on everything port 8080 sends
    f.corrupt(dst=8080, nth=3)            # corrupt the 3rd data segment sent to port 8080
    f.duplicate(src=8080, count=2)

Endpoints: ``None`` (any), a port (``8080``), a host (``"::1"``), or ``(host, port)``; a listening
server (its first socket's address) is accepted too. ``src``/``dst`` match one direction;
``both_ways=True`` (and ``partition``) both. Times are relative to ``loop.time()`` at the call:
``start`` (default now) and ``duration`` (default: no end). ``flags`` compares the SYN, ACK,
RST and FIN bits exactly: ``"S"`` a SYN, ``"SA"`` a SYN-ACK, ``"R"`` a RST, ``"FA"`` a FIN;
``(mask, value)`` for anything else. ``count``: act on at most that many frames (0 = all);
``skip``: let that many matching frames pass first.

Which side of the wrapper a rule watches: on the loopback backend both ends of a connection are
this loop's engine, so every frame leaves through TX once and comes back through RX: rules watch
TX only (each frame counted once). On real backends a frame is either sent or received: rules
watch both. ``side="tx" | "rx" | "both"`` overrides.

``loop.stats()`` shows ``fault.<id>.matched`` / ``fault.<id>.acted`` per rule and the totals
``fault.dropped``, ``fault.delayed``, ``fault.corrupted``, ``fault.duplicated`` (removed rules
included).
"""
from __future__ import annotations

import errno
import socket

__all__ = ["FaultScript", "Rule", "current"]

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}
_ACTIONS = {1: "drop", 2: "delay", 3: "corrupt", 4: "duplicate"}
_TOTALS = {"drop": "fault.dropped", "delay": "fault.delayed", "corrupt": "fault.corrupted",
           "duplicate": "fault.duplicated"}


def _flags(spec):
    if spec is None:
        return 0, 0
    if isinstance(spec, tuple):
        mask, value = spec
        if value & ~mask or not 0 <= mask <= 255:
            raise ValueError(f"flags: value {value:#x} has bits outside mask {mask:#x}")
        return mask, value
    if not isinstance(spec, str):
        raise TypeError(f"flags must be a str like 'SA' or a (mask, value) tuple, got {spec!r}")
    value = 0
    for ch in spec.upper():
        if ch not in _FLAG_BITS:
            raise ValueError(f"flags: unknown TCP flag {ch!r} in {spec!r} (known: S A R F P U)")
        value |= _FLAG_BITS[ch]
    return 0x17 | (value & 0x28), value      # SYN ACK RST FIN exact (+ PSH/URG when named)


class Rule:
    """One rule of the link's table: ``matched``/``acted`` read live from C; ``remove()``."""

    def __init__(self, script, rid, action, desc):
        self._script = script
        self.id = rid
        self.action = action
        self.description = desc
        self._final = None          # (matched, acted) once removed

    def _counts(self):
        if self._final is not None:
            return self._final
        return self._script._rule_counts(self.id)

    @property
    def matched(self) -> int:
        return self._counts()[0]

    @property
    def acted(self) -> int:
        return self._counts()[1]

    @property
    def active(self) -> bool:
        return self._final is None or (self._script._frozen and self.id in self._script._rules)

    def remove(self) -> None:
        if self.id in self._script._rules and self._script._rules[self.id] is self:
            self._script._remove(self)

    def __repr__(self):
        return (f"<Rule {self.id} {self.action} {self.description} matched={self.matched} "
                f"acted={self.acted}{'' if self.active else ' removed'}>")


class FaultScript:
    """The fault rules of one loop's link (``loop.faults``)."""

    def __init__(self, loop):
        self._loop = loop
        self._rules = {}            # id -> Rule
        self._removed_totals = dict.fromkeys(_TOTALS.values(), 0)
        self._frozen = False

    # -- plumbing ---------------------------------------------------------------------------
    def _link(self):
        eng = self._loop._engine()
        if not eng._impaired:
            raise RuntimeError("fault scripting needs the fault wrapper on the link: run the loop "
                               "with virtual_time=True or faults=True (MTCP_FAULTS=1)")
        return eng

    def _addr(self, spec, ffi, lib):
        a = ffi.new("struct mtcp_addr *")
        if spec is None:
            return a
        if hasattr(spec, "sockets"):           # a server: its first listening address
            socks = spec.sockets
            if not socks:
                raise ValueError("server has no sockets")
            spec = socks[0].getsockname()[:2]
        host, port = None, 0
        if isinstance(spec, bool):
            raise TypeError("endpoint must be None, a port, a host or (host, port)")
        if isinstance(spec, int):
            port = spec
        elif isinstance(spec, str):
            host = spec
        elif isinstance(spec, tuple) and len(spec) >= 2:
            host, port = spec[0], spec[1]
        else:
            raise TypeError(f"endpoint must be None, a port, a host or (host, port), got {spec!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"endpoint port must be in [0, 65535], got {port!r}")
        a.port = port
        if host not in (None, "", "*"):
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            raw = socket.inet_pton(fam, host.split("%", 1)[0])
            a.family = lib.MTCP_AF_INET6 if fam == socket.AF_INET6 else lib.MTCP_AF_INET
            ffi.memmove(a.ip, raw, len(raw))
        return a

    def _side(self, side):
        from ._native import lib
        if side is None:
            side = "tx" if self._loop._mtcp_config.backend == "loopback" else "both"
        try:
            return {"tx": lib.MTCP_FAULT_DIR_TX, "rx": lib.MTCP_FAULT_DIR_RX,
                    "both": lib.MTCP_FAULT_DIR_TX | lib.MTCP_FAULT_DIR_RX}[side]
        except KeyError:
            raise ValueError(f"side must be 'tx', 'rx' or 'both', got {side!r}") from None

    def _add(self, action, src, dst, *, both_ways=False, flags=None, data=False, start=0.0,
             duration=None, count=0, skip=0, delay=0.0, side=None, desc=""):
        from ._native import ffi, lib
        eng = self._link()
        for name, v in (("count", count), ("skip", skip)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if start < 0:
            raise ValueError(f"start must be >= 0 (seconds from now), got {start!r}")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
        f = ffi.new("struct mtcp_fault *")
        f.action = action
        f.dirs = self._side(side)
        f.flags = (lib.MTCP_FAULT_BOTH_WAYS if both_ways else 0) | (lib.MTCP_FAULT_DATA if data else 0)
        f.tcp_mask, f.tcp_value = _flags(flags)
        ffi.memmove(ffi.addressof(f, "a"), self._addr(src, ffi, lib), ffi.sizeof("struct mtcp_addr"))
        ffi.memmove(ffi.addressof(f, "b"), self._addr(dst, ffi, lib), ffi.sizeof("struct mtcp_addr"))
        now = eng.now_us()
        f.start_us = now + int(round(start * 1e6))
        f.end_us = 0 if duration is None else f.start_us + max(1, int(round(duration * 1e6)))
        f.count = count
        f.skip = skip
        if action == lib.MTCP_FAULT_DELAY:
            if not 0 < delay <= 60:
                raise ValueError(f"delay must be in (0, 60] seconds, got {delay!r}")
            f.delay_us = max(1, int(round(delay * 1e6)))
        rid = lib.mtcp_fault_add(eng.link, f)
        if rid < 0:
            if rid == -errno.ENOSPC:
                raise RuntimeError(f"fault scripting: at most {lib.MTCP_FAULT_MAX_RULES} rules")
            raise OSError(-rid, f"mtcp_fault_add: {errno.errorcode.get(-rid, -rid)}")
        r = Rule(self, rid, _ACTIONS[action], desc)
        self._rules[rid] = r
        eng.kick()
        return r

    def _rule_counts(self, rid):
        from ._native import ffi, lib
        eng = self._loop._mtcp_engine
        if eng is None or eng.e is None:
            return (0, 0)
        out = ffi.new("uint64_t[2]")
        if lib.mtcp_fault_stats(eng.link, rid, out) < 0:
            return (0, 0)
        return int(out[0]), int(out[1])

    def _remove(self, rule):
        from ._native import lib
        if rule._final is None:
            rule._final = self._rule_counts(rule.id)
        self._removed_totals[_TOTALS[rule.action]] += rule._final[1]
        self._rules.pop(rule.id, None)
        eng = self._loop._mtcp_engine
        if eng is not None and eng.e is not None:
            lib.mtcp_fault_remove(eng.link, rule.id)

    def _freeze(self):
        """The loop is closing: keep every rule's last counts."""
        for r in self._rules.values():
            if r._final is None:
                r._final = self._rule_counts(r.id)
        self._frozen = True

    # -- the API --------------------------------------------------------------------------------
    def partition(self, a=None, b=None, *, start=0.0, duration=None, side=None) -> Rule:
        """Drop every segment between a and b (both ways) from start for duration seconds."""
        from ._native import lib
        return self._add(lib.MTCP_FAULT_DROP, a, b, both_ways=True, start=start, duration=duration,
                         side=side, desc=f"partition {a!r} <-> {b!r}")

    def drop(self, src=None, dst=None, *, flags=None, data=False, count=1, skip=0,
             both_ways=False, start=0.0, duration=None, side=None) -> Rule:
        """Drop the next ``count`` matching segments (after ``skip``); count=0: all."""
        from ._native import lib
        return self._add(lib.MTCP_FAULT_DROP, src, dst, both_ways=both_ways, flags=flags, data=data,
                         start=start, duration=duration, count=count, skip=skip, side=side,
                         desc=f"drop {src!r} -> {dst!r} flags={flags!r}")

    def delay(self, src=None, dst=None, delay=0.1, *, flags=None, data=False, count=0, skip=0,
              both_ways=False, start=0.0, duration=None, side=None) -> Rule:
        """Delay matching segments by ``delay`` seconds (one direction unless both_ways)."""
        from ._native import lib
        return self._add(lib.MTCP_FAULT_DELAY, src, dst, both_ways=both_ways, flags=flags, data=data,
                         start=start, duration=duration, count=count, skip=skip, delay=delay,
                         side=side, desc=f"delay {src!r} -> {dst!r} by {delay}s")

    def corrupt(self, src=None, dst=None, *, nth=1, count=1, data=True, flags=None,
                both_ways=False, start=0.0, duration=None, side=None) -> Rule:
        """Corrupt the ``nth`` matching segment (1-based; data segments unless data=False) and
        the ``count - 1`` after it; the receiver drops it as bad-checksum."""
        from ._native import lib
        if isinstance(nth, bool) or not isinstance(nth, int) or nth < 1:
            raise ValueError(f"nth must be an int >= 1, got {nth!r}")
        return self._add(lib.MTCP_FAULT_CORRUPT, src, dst, both_ways=both_ways, flags=flags,
                         data=data, start=start, duration=duration, count=count, skip=nth - 1,
                         side=side, desc=f"corrupt #{nth} {src!r} -> {dst!r}")

    def duplicate(self, src=None, dst=None, *, flags=None, data=False, count=1, skip=0,
                  both_ways=False, start=0.0, duration=None, side=None) -> Rule:
        """Send the next ``count`` matching segments twice."""
        from ._native import lib
        return self._add(lib.MTCP_FAULT_DUPLICATE, src, dst, both_ways=both_ways, flags=flags,
                         data=data, start=start, duration=duration, count=count, skip=skip,
                         side=side, desc=f"duplicate {src!r} -> {dst!r}")

    @property
    def rules(self):
        return list(self._rules.values())

    def clear(self) -> None:
        for r in list(self._rules.values()):
            r.remove()

    def stats(self) -> dict:
        d = dict(self._removed_totals)
        for rid, r in sorted(self._rules.items()):
            m, a = r._counts()
            d[f"fault.{rid}.matched"] = m
            d[f"fault.{rid}.acted"] = a
            d[_TOTALS[r.action]] += a
        return d


class _CurrentLoopFaults:
    """``loop.faults`` of whatever loop is running when a method is called (pytest fixture); from
    a synchronous fixture, the current event loop (pytest-asyncio sets the test's loop)."""

    def __getattr__(self, name):
        import asyncio
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        if not hasattr(loop, "faults"):
            raise RuntimeError(f"mtcp_faults: the current loop {loop!r} is not an MTCPLoop")
        return getattr(loop.faults, name)


def current():
    """A FaultScript proxy bound to the running loop at each call (for fixtures)."""
    return _CurrentLoopFaults()
