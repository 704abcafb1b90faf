"""MTCPLoop: an asyncio event loop whose TCP runs on the user-space engine (native/engine).

``make_loop_class(base)`` builds the loop class on a base loop: ``uvloop.Loop`` when installed,
else ``asyncio.SelectorEventLoop``. Everything that is not TCP on a stack-owned address (DNS,
UDP, Unix sockets, subprocesses, TCP to other addresses) is the base loop's, unchanged.

Driving the engine (one per loop, like mTCP's per-core stack, but run-to-completion on the loop's
thread):

* the engine's link fd (an eventfd of the in-process loopback attachment) is watched with
  add_reader, so frames from other loops/threads wake this loop;
* every API call that changes the engine (send, close, connect, listen...) "kicks": it schedules
  at most one pending ``call_soon(_run)``;
* ``_run``: one ``mtcp_engine_poll`` (RX batch + timers + TX flush), then the whole batch of
  events is dispatched to transports, protocols, pending connects and listeners; writes made by
  protocols land in the engine's send buffers at once and kick the next poll, which flushes them;
* ``mtcp_engine_next_deadline`` is one loop timer, rescheduled only when the deadline changes.

That driver and the transports are compiled (Cython, mtcp_loop/_aio/core.pyx: the data path);
this module is the control plane (cffi): engine setup, listen/connect, routing, servers.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import functools
import ipaddress
import logging
import operator
import os
import socket
import sys
import weakref
from asyncio import base_events, events, sslproto

from ._native import errstr, ffi, lib
from . import links as _links
from .config import MTCPConfig
try:
    from ._aio.core import (EngineCore, MTCPTransport, PseudoSocket, monotonic_us as _monotonic_us,
                            new_transport, os_error)
except ImportError as _exc:  # pragma: no cover - exercised only without a build
    from ._native import BUILD_HINT as _HINT
    raise ImportError(f"mtcp_loop's compiled data path (mtcp_loop._aio.core) is not built or does "
                      f"not import ({_exc}); {_HINT}") from _exc
from . import socks as _socks
from .socks import KernelGate, PendingAdoption, ShadowListener, StackSocket

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

logger = logging.getLogger("mtcp_loop")

__all__ = ["make_loop_class", "loop_class_for", "MTCPServer", "available_bases"]





def addr_to_tuple(ffi, a):
    """struct mtcp_addr (cffi) -> (host, port) for IPv4, (host, port, 0, 0) for IPv6."""
    if a.family == 4:
        return (socket.inet_ntop(socket.AF_INET, bytes(ffi.buffer(a.ip, 4))), a.port)
    return (socket.inet_ntop(socket.AF_INET6, bytes(ffi.buffer(a.ip, 16))), a.port, 0, 0)


# --------------------------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------------------------
def _strip_scope(host):
    return host.split("%", 1)[0] if isinstance(host, str) else host


@functools.lru_cache(maxsize=1024)
def stack_owns(family, host, listen=False):
    """(Cached: a pure function of its arguments, asked twice per address on every connect.)
    True when the in-process loopback stack owns this address (127.0.0.0/8, ::1; for a
    listener also the wildcard addresses)."""
    try:
        ip = ipaddress.ip_address(_strip_scope(host))
    except ValueError:
        return False
    if ip.version == 4:
        return ip.is_loopback or (listen and int(ip) == 0)
    if ip.ipv4_mapped is not None:
        return False
    return ip.is_loopback or (listen and int(ip) == 0)


def _fill_addr(a, family, host, port):
    if family == socket.AF_INET:
        a.family = lib.MTCP_AF_INET
        raw = socket.inet_pton(socket.AF_INET, host or "0.0.0.0")
        ffi.memmove(a.ip, raw + bytes(12), 16)     # whole field: structs are reused
    else:
        a.family = lib.MTCP_AF_INET6
        raw = socket.inet_pton(socket.AF_INET6, _strip_scope(host) or "::")
        ffi.memmove(a.ip, raw, 16)
    a.port = int(port or 0)
    return a


def _family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --------------------------------------------------------------------------------------------
# the engine of one loop
# --------------------------------------------------------------------------------------------
class _Engine(EngineCore):
    """One mtcp engine (on the in-process loopback link or a real ring), driven by one loop.

    The data path (poll, event dispatch, the cid -> transport table, kick, deadline timer,
    transports) is the compiled base class (mtcp_loop/_aio/core.pyx); this class is the control
    plane through cffi: link and configuration, listen, connect, counters, close."""

    def __init__(self, loop, config: MTCPConfig):
        self.config = config
        err = ffi.new("char[]", 256)
        self._real = config.backend != "loopback"     # tap/packet/xdp: mtcp_loop/links.py
        if self._real:
            link, mac = _links.open_link(config, ffi, lib)    # in a worker: its queue, steered
        elif loop._mtcp_loopback_isolated:      # virtual time: a switch of its own
            link = lib.mtcp_loopback_open_isolated(config.loopback_slots, err, 256)
        else:
            link = lib.mtcp_loopback_open(config.loopback_slots, err, 256)
        if link == ffi.NULL:
            raise OSError(errno.EIO, f"mtcp_loopback_open failed: {errstr(err)}")
        # clock hook: every engine call that takes now_us reads loop._mtcp_now_us (monotonic
        # microseconds; the virtual clock in virtual-time mode, mtcp_loop/vtime.py)
        self.now_us = loop._mtcp_now_us
        if self.now_us is not _monotonic_us:           # the compiled driver's poll clock too
            self._clock = self.now_us
        self._impaired = False
        if (config.impair is not None and config.impair.active) or config.faults:
            imp = ffi.new("struct mtcp_impair *")      # zeroed: a wrapper only for fault rules
            i = config.impair
            if i is not None and i.active:
                imp.loss, imp.duplicate, imp.reorder, imp.corrupt = i.loss, i.duplicate, i.reorder, i.corrupt
                imp.delay_us, imp.jitter_us, imp.rate_bps, imp.seed = i.delay_us, i.jitter_us, i.rate_bps, i.seed
            wrapped = lib.mtcp_impair_wrap(link, imp, err, 256)
            if wrapped == ffi.NULL:
                lib.mtcp_link_close(link)
                raise ValueError(f"impair: {errstr(err)}")
            link = wrapped
            self._impaired = True
        if config.pcap:
            rc = lib.mtcp_link_pcap(link, config.pcap.encode())
            if rc < 0:
                lib.mtcp_link_close(link)
                raise os_error(-rc, f"pcap {config.pcap!r}")
            if loop._mtcp_pcap_offset_us is not None:    # virtual time: fixed capture clock
                lib.mtcp_link_pcap_offset(link, loop._mtcp_pcap_offset_us)
        c = ffi.new("struct mtcp_config *")
        lib.mtcp_config_default(c)
        config.fill_c_config(ffi, lib, c)
        if self._real:
            _links.fill_interface(config, ffi, c, mac)
        else:
            c.link_type = lib.MTCP_LINK_IP
            c.mtu = 65535 if c.mtu < 65535 else c.mtu
            c.own_prefix = 1
            ffi.memmove(c.ipv4, bytes([127, 0, 0, 1]), 4)
            c.ipv4_prefix = 8
            ffi.memmove(c.ipv6, socket.inet_pton(socket.AF_INET6, "::1"), 16)
            c.ipv6_prefix = 128
        e = lib.mtcp_engine_new(c, link, err, 256)
        if e == ffi.NULL:
            lib.mtcp_link_close(link)
            raise ValueError(f"mtcp_engine_new: {errstr(err)}")
        self.link = link
        self.e = e
        self._a1 = ffi.new("struct mtcp_addr *")
        self._a2 = ffi.new("struct mtcp_addr *")
        self._core_attach(loop, int(ffi.cast("uintptr_t", e)), c.max_conns, config.event_batch)
        self._server_cls = MTCPServer
        self.fd = lib.mtcp_engine_fd(e)
        if self.fd >= 0:
            loop._add_reader_base(self.fd, self._on_fd)
        self.kick()

    def conn_info(self, cid):
        out = ffi.new("struct mtcp_conn_info *")
        rc = lib.mtcp_conn_info(self.e, cid, out)
        if rc < 0:
            raise os_error(-rc, "mtcp_conn_info")
        d = {k: getattr(out, k) for k in ("state", "mss", "srtt_us", "rttvar_us", "rto_us", "cwnd",
                                           "ssthresh", "snd_wnd", "rcv_wnd", "unacked", "sndbuf_used",
                                           "rcvbuf_used", "bytes_sent", "bytes_received",
                                           "retransmits", "flags")}
        d["local"] = addr_to_tuple(ffi, out.local)
        d["remote"] = addr_to_tuple(ffi, out.remote)
        return d

    def listen(self, family, host, port, backlog):
        a = _fill_addr(ffi.new("struct mtcp_addr *"), family, host, port)
        lid = lib.mtcp_listen(self.e, a, int(backlog))
        if lid < 0:
            raise os_error(-lid, f"error while attempting to bind on address {(host, port)!r}")
        self.kick()
        return lid

    def connect(self, family, host, port, local=None):
        # mtcp_connect copies both addresses: the engine's two scratch structs serve every call
        r = _fill_addr(self._a1, family, host, port)
        la = ffi.NULL
        if local is not None:
            la = _fill_addr(self._a2, family, local[0], local[1])
        cid = lib.mtcp_connect(self.e, self.now_us(), r, la)
        if cid < 0:
            if -cid == errno.ENOMEM:
                used = ffi.new("uint64_t[4]")
                lib.mtcp_engine_pool_usage(self.e, used)
                mc = self.config.max_conns
                raise os_error(-cid, f"Connect call failed {(host, port)!r}: connection pool exhausted "
                                     f"(max_conns={mc if mc is not None else 'default'}, {int(used[0])} blocks "
                                     f"held by connections, listeners and TIME-WAIT; a connection to this "
                                     f"loop's own listener needs two)")
            raise os_error(-cid, f"Connect call failed {(host, port)!r}")
        self.kick()
        return cid

    def counters(self):
        n = lib.mtcp_counter_count()
        arr = ffi.new("uint64_t[]", n)
        lib.mtcp_engine_counters(self.e, arr, n)
        out = {}
        for i in range(n):
            name = lib.mtcp_counter_name(i)
            key = ffi.string(name).decode() if name != ffi.NULL else f"counter{i}"
            out[key] = int(arr[i])
        return out

    def link_stats(self):
        """Ring-level counters of this engine's link (mtcp_link_stats: rx/tx frames, drops, errors,
        refused TX kicks), the wrapper's inner device for steer/impair."""
        if self.link is None:
            return {}
        n = lib.MTCP_LINK_NSTATS
        out = ffi.new("uint64_t[]", n)
        lib.mtcp_link_stats(self.link, out, n)
        names = (lib.mtcp_link_stat_name(i) for i in range(n))
        return {ffi.string(nm).decode(): int(out[i]) for i, nm in enumerate(names) if nm != ffi.NULL}

    def impair_counters(self):
        if not self._impaired:
            return None
        out = ffi.new("uint64_t[5]")
        lib.mtcp_impair_counters(self.link, out)
        return dict(zip(("dropped", "duplicated", "reordered", "corrupted", "delayed"), map(int, out)))

    def close(self):
        if self.e is None:
            return
        self._core_detach()
        if self.fd >= 0:
            try:
                self.loop._remove_reader_base(self.fd)
            except Exception:
                pass
        e, self.e = self.e, None
        lib.mtcp_engine_free(e)
        lib.mtcp_link_close(self.link)
        self.link = None


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------
_WAIT_CLOSED_RETURNS_AT_CLOSE = sys.version_info < (3, 12)


class MTCPServer(events.AbstractServer):
    """asyncio Server semantics (3.11) over stack listeners plus kernel mirror listeners."""

    def __init__(self, loop, engine, protocol_factory, ssl_context, backlog,
                 ssl_handshake_timeout, ssl_shutdown_timeout):
        self._loop = loop
        self._engine = engine
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._listeners = []       # (lid, PseudoSocket)
        self._kernel_servers = []  # base loop servers (kernel mirror / kernel-only addresses)
        self._kernel_socks = []
        self._active_count = 0
        self._waiters = []
        self._serving = False
        self._serving_forever_fut = None
        self._pending = collections.deque()
        self._closed = False
        self._sock_form = False    # create_server(sock=...)
        self._groups = {}          # lid -> _ReusePortGroup (reuse_port listeners shared in this loop)
        self._gates = []           # (family, port) of gated kernel listeners (mtcp_loop/socks.py)

    def __repr__(self):
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    def _attach(self):
        assert not self._closed or self._active_count >= 0
        self._active_count += 1

    def _detach(self):
        assert self._active_count > 0
        self._active_count -= 1
        if self._active_count == 0 and self._closed:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _add_listener(self, lid, family, serve=True):
        local, _ = self._engine.getaddrs(lid)
        ps = PseudoSocket(self._loop, self._engine, lid, family, local, None, listener=True)
        if not serve:
            # start_serving=False: the address and port are checked and chosen, but nothing listens
            # (connections are refused, as asyncio's socket is not listening) until start_serving()
            self._engine.release(lid)
            ps._cid = None
            self._listeners.append((None, ps))
            return
        self._listeners.append((lid, ps))
        if lid not in self._groups:
            self._engine._listeners[lid] = self

    def _on_accept(self, cid):
        if not self._serving:
            self._engine._unowned[cid] = [False, 0]   # PEER_CLOSED / ERROR before a transport owns it
            self._pending.append(cid)
            return
        self._accept(cid)

    def _accept(self, cid, fresh=False):
        self._engine._accept(self, cid, fresh)

    def _gate(self, family, port):
        _socks.gate_add(family, port)
        self._gates.append((family, port))

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._closed:
            return ()
        if self._sock_form:
            # create_server(sock=s): s itself (as the base loop reports it: fileno() is s's)
            return tuple(so for ks in self._kernel_servers for so in (ks.sockets or ()))
        socks = [ps for _, ps in self._listeners]
        if not socks:
            for ks in self._kernel_servers:
                socks.extend(ks.sockets or ())
        return tuple(socks)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._stop_listening()
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def _stop_listening(self):
        """Stop accepting: stack listeners released (a reuse_port listener stays while other
        servers of its group listen), connections not yet accepted reset, kernel mirror
        listeners closed. close() does this and ends serving; a draining worker (per-core
        workers, policy form) does only this, so serve_forever() keeps waiting while the
        accepted connections finish."""
        eng = self._engine
        for lid, _ in self._listeners:
            group = self._groups.pop(lid, None)
            if group is not None and group.leave(self):
                continue                    # other reuse_port servers still listen on it
            if lid is not None:
                eng._listeners.pop(lid, None)
                eng.release(lid)
        self._listeners = []
        while self._pending:
            eng.release(self._pending.popleft(), abort=True)
        for ks in self._kernel_servers:
            ks.close()
        for fam, port in self._gates:
            _socks.gate_add(fam, port, -1)
        self._gates = []

    def _start_serving(self):
        if self._serving:
            return
        eng = self._engine
        for i, (lid, ps) in enumerate(self._listeners):
            if lid is None:
                lid = eng.listen(ps.family, ps._sockname[0], ps._sockname[1], self._backlog)
                ps._cid = lid
                self._listeners[i] = (lid, ps)
                eng._listeners[lid] = self
        self._serving = True
        while self._pending:
            self._accept(self._pending.popleft())

    async def start_serving(self):
        self._start_serving()
        for ks in self._kernel_servers:
            await ks.start_serving()
        await asyncio.sleep(0)

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        # asyncio's semantics of the running Python: 3.11 returns once close() ran; 3.12+ waits
        # until the server is closed and every connection it accepted is gone
        if (_WAIT_CLOSED_RETURNS_AT_CLOSE and self._closed) or self._waiters is None:
            for ks in self._kernel_servers:
                await ks.wait_closed()
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
        for ks in self._kernel_servers:
            await ks.wait_closed()


def _hand_over(transport, protocol, kernel_sock):
    """Give a StackSocket's internal transport (sock_* I/O so far) to the application's protocol,
    with the bytes and EOF it buffered."""
    old = transport.get_protocol()
    transport._kernel_sock = kernel_sock
    transport.set_write_buffer_limits()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if old.buf:
        data = bytes(old.buf)
        old.buf.clear()
        if isinstance(protocol, asyncio.BufferedProtocol):
            asyncio.protocols._feed_data_to_buffered_proto(protocol, data)
        else:
            protocol.data_received(data)
    if old._paused:
        transport.resume_reading()
    if old.eof:
        if not protocol.eof_received():
            transport.close()


class _ReusePortGroup:
    """Servers of one loop listening with reuse_port=True on the same address: one stack listener,
    new connections handed to the serving members in turn (SO_REUSEPORT spreads them over the
    sockets). Stands in the engine's listener table for the lid (MTCPServer's accept interface)."""

    def __init__(self, loop, engine, lid, key, first):
        self._loop = loop
        self._engine = engine
        self.lid = lid
        self.key = key
        self.members = []
        self._next = 0
        loop._mtcp_reuseport[key] = self
        engine._listeners[lid] = self
        first._groups[lid] = self
        self.members.append(first)

    def join(self, server):
        lid = self.lid
        server._groups[lid] = self
        ps = next(ps for l, ps in self.members[0]._listeners if l == lid)
        server._listeners.append((lid, ps))
        self.members.append(server)

    def leave(self, server):
        """True while other members keep the listener."""
        if server in self.members:
            self.members.remove(server)
        if self.members:
            return True
        self._loop._mtcp_reuseport.pop(self.key, None)
        return False

    @property
    def _serving(self):
        return any(m._serving for m in self.members)

    def _accept(self, cid, fresh=False):
        serving = [m for m in self.members if m._serving]
        m = serving[self._next % len(serving)]
        self._next += 1
        m._accept(cid, fresh)

    def _on_accept(self, cid):
        self.members[0]._on_accept(cid)


def _consume_exception(fut):
    if not fut.cancelled():
        fut.exception()


# --------------------------------------------------------------------------------------------
# the loop mixin
# --------------------------------------------------------------------------------------------
_SENTINEL = object()


class _MTCPLoopMixin:
    """Methods layered over the base loop (see make_loop_class)."""

    _mtcp_base_name = "?"
    #: the engine's clock (hook: mtcp_loop/vtime.py gives a virtual one)
    _mtcp_now_us = staticmethod(_monotonic_us)
    #: pcap timestamp offset (None: realtime - monotonic; vtime.py: a fixed epoch)
    _mtcp_pcap_offset_us = None
    #: loopback attachment with a port table of its own (vtime.py: True)
    _mtcp_loopback_isolated = False

    def __init__(self, config=None, **overrides):
        super().__init__()
        self._mtcp_config = MTCPConfig.coerce(config, **overrides)
        self._mtcp_engine = None
        self._mtcp_adopted = {}          # kernel socket -> StackSocket after sock_connect
        self._mtcp_adopt_timer = None    # watches adopted sockets for the application's close()
        self._mtcp_shadows = weakref.WeakKeyDictionary()   # listening kernel socket -> ShadowListener
        self._mtcp_warned = set()
        self._mtcp_sock_servers = weakref.WeakKeyDictionary()   # create_server(sock=s): s -> server
        self._mtcp_reuseport = {}        # (family, ip, port) -> _ReusePortGroup
        self._mtcp_pending = weakref.WeakKeyDictionary()   # kernel socket -> PendingAdoption
        self._mtcp_n_user_connected = 0
        self._mtcp_n_user_accepted = 0   # sock_accept arrivals (servers: counted by the engine)
        self._mtcp_n_kernel_connected = 0
        self._mtcp_n_kernel_accepted = 0
        if self._mtcp_config.backend != "loopback":
            # a real ring that cannot open (no such interface, no permission) fails here, when the
            # loop is created, not at the first connection
            try:
                self._engine()
            except BaseException:
                super().close()
                raise

    # base add_reader without any override (engines use it for their fd)
    def _add_reader_base(self, fd, cb):
        return super().add_reader(fd, cb)

    def _remove_reader_base(self, fd):
        return super().remove_reader(fd)

    @property
    def mtcp_config(self):
        return self._mtcp_config

    def _engine(self):
        eng = self._mtcp_engine
        if eng is None:
            if self.is_closed():
                raise RuntimeError("Event loop is closed")
            eng = self._mtcp_engine = _Engine(self, self._mtcp_config)
            if self._mtcp_config.metrics or self._mtcp_config.control:
                from . import ops as _ops       # opted in: control socket / metrics endpoint
                _ops.attach_loop(self)
        return eng

    def connections(self, state=None, sport=0, dport=0, family=0):
        """The stack's connections and listeners of this loop, one ss-like dict each (the
        records of `mtcp-loop ss --json`). state: an ss state name or a list of them."""
        from . import ops as _ops
        return _ops.records(self, state=state, sport=sport, dport=dport, family=family)
    @property
    def faults(self):
        """The link's fault script (mtcp_loop/faults.py); needs faults=True or virtual time."""
        fs = getattr(self, "_mtcp_faults", None)
        if fs is None:
            from .faults import FaultScript
            fs = self._mtcp_faults = FaultScript(self)
        return fs

    def stats(self):
        """Engine counters (netstat -s like) plus how many connections took each path."""
        eng = self._mtcp_engine
        d = eng.counters() if eng is not None and eng.e is not None else {}
        d["loop.userspace_connected"] = self._mtcp_n_user_connected
        accepted = self._mtcp_n_user_accepted + (eng.n_accepted if eng is not None else 0)
        d["loop.userspace_accepted"] = accepted
        d["loop.kernel_connected"] = self._mtcp_n_kernel_connected
        d["loop.kernel_accepted"] = self._mtcp_n_kernel_accepted
        d["loop.userspace_connections"] = self._mtcp_n_user_connected + accepted
        d["loop.kernel_connections"] = self._mtcp_n_kernel_connected + self._mtcp_n_kernel_accepted
        if eng is not None and eng.e is not None:
            d["loop.engine_polls"] = eng.polls
            d["loop.engine_events"] = eng.events
            d["loop.open_transports"] = eng.n_open
            for k, v in eng.link_stats().items():
                d["link." + k] = v
            imp = eng.impair_counters()
            if imp:
                for k, v in imp.items():
                    d["impair." + k] = v
            fs = getattr(self, "_mtcp_faults", None)
            if fs is not None:
                d.update(fs.stats())
        return d

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        eng = self._mtcp_engine
        for sh in list(self._mtcp_shadows.values()):
            if sh:
                sh.close()
        fs = getattr(self, "_mtcp_faults", None)
        if fs is not None:
            fs._freeze()            # rule counters stay readable after the link is gone
        if eng is not None:
            if self._mtcp_config.metrics or self._mtcp_config.control:
                from . import ops as _ops
                _ops.detach_loop(self)
            eng.close()
        for ss in list(self._mtcp_adopted.values()):
            ss._fin.detach()
        self._mtcp_adopted.clear()
        if self._mtcp_adopt_timer is not None:
            self._mtcp_adopt_timer.cancel()
            self._mtcp_adopt_timer = None
        self._mtcp_shadows = weakref.WeakKeyDictionary()
        super().close()

    def _watch_adopted_start(self):
        if self._mtcp_adopt_timer is None:
            self._mtcp_adopt_timer = self.call_later(0.05, self._watch_adopted)

    def _watch_adopted(self):
        """A socket the application closed itself (``s.close()`` after ``sock_connect``) closes
        its stack connection: closing an unconnected kernel socket tells no one, so adopted
        sockets are checked every 50 ms while there are any (a socket that is garbage-collected
        closes it at once, through its finalizer)."""
        self._mtcp_adopt_timer = None
        adopted = self._mtcp_adopted
        for sock, ss in list(adopted.items()):
            if sock.fileno() == -1:
                del adopted[sock]
                ss._fin.detach()
                ss.close()
        if adopted and not self.is_closed():
            self._watch_adopted_start()

    # -- routing -------------------------------------------------------------------------------
    def _stack_owns(self, family, host, listen=False):
        """stack_owns for this loop's backend (real rings own their configured addresses)."""
        if self._mtcp_config.backend != "loopback":
            return _links.owns(self._mtcp_config, family, host, listen)
        return stack_owns(family, host, listen)

    def _route_to_stack(self, family, host, port):
        """Should an outgoing connection to (host, port) take the user-space stack?"""
        if not isinstance(port, int) or not 0 <= port <= 65535:
            return False            # the base loop raises what the kernel path raises (OverflowError...)
        if self._mtcp_config.backend != "loopback":
            return _links.routes(self._mtcp_config, family, host)
        if not stack_owns(family, host):
            return False
        fam = lib.MTCP_AF_INET6 if family == socket.AF_INET6 else lib.MTCP_AF_INET
        if lib.mtcp_loopback_has_listener(fam, int(port)):
            return True
        return self._mtcp_config.fallback == "error"

    def _not_owned_error(self, host, port):
        return OSError(errno.EADDRNOTAVAIL,
                       f"mtcp_loop: address {(host, port)!r} is not owned by the user-space stack "
                       "(fallback='error'; the loopback stack owns 127.0.0.0/8 and ::1)")

    async def _stack_connect(self, family, host, port, local=None):
        eng = self._engine()
        cid = eng.connect(family, host, port, local)
        fut = self.create_future()
        fut._mtcp_addr = (host, port)
        eng._connecting[cid] = fut
        try:
            await fut
        except BaseException:
            if eng._connecting.pop(cid, None) is not None and eng.e is not None:
                lib.mtcp_abort(eng.e, cid)
                eng.kick()
            raise
        return cid

    async def _stack_transport(self, cid, protocol_factory, ssl, server_hostname,
                               ssl_handshake_timeout, ssl_shutdown_timeout, kernel_sock=None,
                               server_side=False, internal=None, count=True):
        """A transport (TLS on request) on the connected stack connection cid. ``internal``: the
        transport a StackSocket already made for sock_* I/O; it is handed over with what it buffered."""
        eng = self._engine()
        try:
            protocol = protocol_factory()
            if protocol is None:    # what the base loop raises
                if self._mtcp_base_name == "uvloop":
                    raise TypeError("protocol is required")
                raise AttributeError("'NoneType' object has no attribute 'connection_made'")
        except BaseException:
            if internal is not None:
                internal.close()
            else:
                eng.release(cid)
            raise
        waiter = self.create_future()
        proto = protocol
        if ssl:
            sslcontext = None if isinstance(ssl, bool) else ssl
            proto = ssl_protocol = sslproto.SSLProtocol(
                self, protocol, sslcontext, waiter, server_side, server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
        if internal is not None:
            transport = internal
            _hand_over(transport, proto, kernel_sock)
            if not ssl:
                waiter.set_result(None)
        else:
            transport = new_transport(self, eng, cid, proto, None if ssl else waiter,
                                      kernel_sock=kernel_sock)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if count:
            self._mtcp_n_user_connected += 1
        if ssl:
            return ssl_protocol._app_transport, protocol
        return transport, protocol

    async def _resolve_stream(self, host, port, family, proto, flags):
        # an IP literal needs no getaddrinfo (asyncio's _ensure_resolved skips it the same way)
        info = base_events._ipaddr_info(host, port, family, socket.SOCK_STREAM, proto)
        if info is not None:
            return [info]
        infos = await self.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                       proto=proto, flags=flags)
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        return infos

    # -- create_connection ---------------------------------------------------------------------
    async def create_connection(self, protocol_factory, host=None, port=None, *, ssl=None,
                                family=0, proto=0, flags=0, sock=None, local_addr=None,
                                server_hostname=None, ssl_handshake_timeout=None,
                                ssl_shutdown_timeout=None, happy_eyeballs_delay=None,
                                interleave=None, **kwargs):
        passthrough = dict(ssl=ssl, family=family, proto=proto, flags=flags, sock=sock,
                           local_addr=local_addr, server_hostname=server_hostname,
                           ssl_handshake_timeout=ssl_handshake_timeout,
                           ssl_shutdown_timeout=ssl_shutdown_timeout, **kwargs)
        # happy-eyeballs arguments are accepted; uvloop's create_connection has no such parameters
        if self._mtcp_base_name != "uvloop":
            if happy_eyeballs_delay is not None:
                passthrough["happy_eyeballs_delay"] = happy_eyeballs_delay
            if interleave is not None:
                passthrough["interleave"] = interleave

        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                if sock is None or (sock not in self._mtcp_adopted and sock not in self._mtcp_pending
                                    and not isinstance(sock, StackSocket)):
                    raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")

        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            ss = await self._resolve_sock(sock)
            if ss is not None:
                if sock.type != socket.SOCK_STREAM:
                    raise ValueError(f"A Stream Socket was expected, got {sock!r}")
                cid, internal = ss._take_cid()
                if ss is not sock:
                    del self._mtcp_adopted[sock]
                    ss._fin.detach()
                    sock.setblocking(False)
                if server_hostname is None and ssl:
                    server_hostname = ss.getpeername()[0]
                return await self._stack_transport(cid, protocol_factory, ssl, server_hostname,
                                                   ssl_handshake_timeout, ssl_shutdown_timeout,
                                                   kernel_sock=None if ss is sock else sock,
                                                   internal=internal, count=False)
            self._warn_kernel_sock("create_connection(sock=...)", sock, peer=True)
            res = await super().create_connection(protocol_factory, **passthrough)
            self._mtcp_n_kernel_connected += 1
            return res

        if host is None and port is None:
            raise ValueError("host and port was not specified and no sock specified")
        infos = await self._resolve_stream(host, port, family, proto, flags)
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise OverflowError("connect(): port must be 0-65535.")   # socket.connect's error
        stack, others = [], []
        for fam, _t, _p, _c, sa in infos:
            (stack if self._route_to_stack(fam, sa[0], sa[1]) else others).append((fam, sa))
        if self._mtcp_config.fallback == "error":
            bad = [sa for fam, sa in others if not self._stack_owns(fam, sa[0])]
            if bad and not stack:
                raise self._not_owned_error(bad[0][0], bad[0][1])
        if not stack:
            owned = [sa for fam, sa in others if self._stack_owns(fam, sa[0])]
            if owned:
                self._warn_kernel("create_connection()", owned[0][:2])
            res = await super().create_connection(protocol_factory, host, port, **passthrough)
            self._mtcp_n_kernel_connected += 1
            return res

        exceptions = []
        laddr_infos = None
        if local_addr is not None:
            # as asyncio: resolved once with the requested family, then matched per remote family
            laddr_infos = await self._resolve_stream(local_addr[0], local_addr[1], family, proto, flags)
        for fam, sa in stack:
            local = None
            if laddr_infos is not None:
                match = [li for li in laddr_infos if li[0] == fam]
                if not match:
                    exceptions.append(OSError(f"no matching local address with family={fam!r} found"))
                    continue
                local = match[0][4][:2]
            try:
                cid = await self._stack_connect(fam, sa[0], sa[1], local)
            except OSError as exc:
                exceptions.append(exc)
                continue
            return await self._stack_transport(cid, protocol_factory, ssl, server_hostname,
                                               ssl_handshake_timeout, ssl_shutdown_timeout)
        if others and self._mtcp_config.fallback == "kernel":
            res = await super().create_connection(protocol_factory, host, port, **passthrough)
            self._mtcp_n_kernel_connected += 1
            return res
        if len(exceptions) == 1:
            raise exceptions[0]
        model = str(exceptions[0])
        if all(str(exc) == model for exc in exceptions):
            raise exceptions[0]
        raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in exceptions)))

    # -- sockets the application holds (mtcp_loop/socks.py: one mechanism for every sock_*) ------
    def _warn_on(self):
        return self._mtcp_config.warn_kernel or self.get_debug()

    def _warn_kernel(self, call, addr, key=None):
        """Once per listener/destination: TCP on a stack-owned address went to kernel TCP."""
        if not self._warn_on():
            return
        key = (call, key if key is not None else addr)
        if key in self._mtcp_warned:
            return
        self._mtcp_warned.add(key)
        # logged, not warnings.warn: a program run with -W error must not break over it
        logger.warning("%s on %r uses kernel TCP, not the user-space stack (see "
                       "docs/compatibility.md, 'libraries that hold their own sockets')", call, addr)

    def _warn_kernel_sock(self, call, sock, peer=False):
        if not self._warn_on() or not isinstance(sock, socket.socket):
            return
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return
        try:
            sa = sock.getpeername() if peer else sock.getsockname()
        except OSError:
            return
        if self._stack_owns(sock.family, sa[0], listen=not peer):
            self._warn_kernel(call, sa[:2])

    def _stack_sock(self, sock):
        """The StackSocket behind ``sock`` (itself, or attached by sock_connect), else None."""
        if isinstance(sock, StackSocket):
            return sock
        if self._mtcp_adopted:
            return self._mtcp_adopted.get(sock)
        return None

    async def sock_connect(self, sock, address):
        ss = self._stack_sock(sock)
        if ss is not None:
            if ss.getpeername()[:2] != tuple(address[:2]):
                raise OSError(errno.EISCONN, os.strerror(errno.EISCONN))
            return None             # connected already (CPython's connect() returns at EISCONN)
        if self._mtcp_pending and sock in self._mtcp_pending:
            return await super().sock_connect(sock, address)     # a connected kernel socket
        if (isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM and isinstance(address, tuple) and len(address) >= 2):
            host, port = address[0], address[1]
            try:
                ipaddress.ip_address(_strip_scope(host))
                literal = True
            except ValueError:
                literal = False
            if not literal:
                infos = await self._resolve_stream(host, port, sock.family, 0, 0)
                host, port = infos[0][4][0], infos[0][4][1]
            if self._route_to_stack(sock.family, host, port):
                if (self._mtcp_config.connected_socket and self._mtcp_config.backend == "loopback"
                        and _socks.is_gated(sock.family, port)
                        and await self._sock_connect_pending(sock, host, port)):
                    return None
                local = None
                try:
                    lsa = sock.getsockname()
                    if lsa[1]:
                        local = lsa[:2]
                except OSError:
                    pass
                cid = await self._stack_connect(sock.family, host, port, local)
                eng = self._engine()
                ss = StackSocket.from_cid(self, eng, cid)
                ss._fin = weakref.finalize(sock, ss.close)
                self._mtcp_adopted[sock] = ss
                self._watch_adopted_start()
                self._mtcp_n_user_connected += 1
                return None
            if self._stack_owns(sock.family, host):
                self._warn_kernel("sock_connect()", (host, port))
        return await super().sock_connect(sock, address)

    async def _sock_connect_pending(self, sock, host, port):
        """Connect ``sock`` over kernel TCP to the gated stack server and leave the choice of path
        to its first use (mtcp_loop/socks.py). False: the kernel connect failed (use the stack)."""
        try:
            lsa = sock.getsockname()
            if not lsa[1]:
                sock.bind((host, 0))            # learn the local port before connecting
                lsa = sock.getsockname()
        except OSError:
            return False
        pair = _socks.pair_register(sock.family, lsa[0], lsa[1], port)
        try:
            # a loopback connect completes inside connect() (EINPROGRESS, yet established):
            # no loop round-trip unless it really is in progress
            err = sock.connect_ex((host, port))
            if err and err != errno.EISCONN:
                if err not in (errno.EINPROGRESS, errno.EAGAIN):
                    raise OSError(err, os.strerror(err))
                try:
                    sock.getpeername()
                except OSError:
                    await super().sock_connect(sock, (host, port))
        except OSError:
            _socks.pair_forget(pair)
            return False
        except BaseException:
            _socks.pair_forget(pair)
            raise
        pend = PendingAdoption(pair, sock.family, host, port, lsa[:2])
        pend.fin = weakref.finalize(sock, _socks.pair_dropped, pair)
        self._mtcp_pending[sock] = pend
        return True

    async def _resolve_sock(self, sock):
        """_stack_sock, deciding first for a socket whose path is still open (PendingAdoption)."""
        ss = self._stack_sock(sock)
        if ss is not None or not self._mtcp_pending:
            return ss
        pend = self._mtcp_pending.pop(sock, None)
        if pend is None:
            return None
        if pend.pair.decide("stack") != "stack":
            self._mtcp_n_kernel_connected += 1    # bytes went over s directly: it stays kernel
            return None
        try:
            cid = await self._stack_connect(pend.family, pend.host, pend.port, pend.local)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            cid = await self._stack_connect(pend.family, pend.host, pend.port, None)
        ss = StackSocket.from_cid(self, self._engine(), cid)
        ss._fin = weakref.finalize(sock, ss.close)
        self._mtcp_adopted[sock] = ss
        self._watch_adopted_start()
        self._mtcp_n_user_connected += 1

        def client_closed():          # s was closed: its stack connection closes too
            try:
                self.call_soon_threadsafe(ss.close)
            except RuntimeError:
                pass                  # loop closed
        pend.pair.on_client_close = client_closed
        return ss

    async def sock_accept(self, sock):
        if isinstance(sock, StackSocket):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        sh = self._shadow_for(sock)
        if sh is None:
            return await super().sock_accept(sock)
        cid = sh.pop()
        if cid is None:
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                pass
            else:
                return self._kernel_arrival(sh, conn, addr)
            kind, val = await self._shadow_wait(sh, sock)
            if kind == "kernel":
                return self._kernel_arrival(sh, *val)
            cid = val
        ss = StackSocket.from_cid(self, self._engine(), cid)
        self._mtcp_n_user_accepted += 1
        return ss, ss.getpeername()

    def _kernel_arrival(self, sh, conn, addr):
        conn.setblocking(False)
        if not sh.kernel_warned and self._warn_on():
            sh.kernel_warned = True
            self._warn_kernel("sock_accept()", sh.addr[:2], key=("shadow", id(sh)))
        return conn, addr

    async def _shadow_wait(self, sh, sock):
        fut = self.create_future()
        sh._waiters.append(fut)
        fd = sock.fileno()

        def on_readable():
            if fut.done():
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                fut.set_exception(exc)
                return
            fut.set_result(("kernel", (conn, addr)))

        self.add_reader(fd, on_readable)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                kind, val = fut.result()        # arrived while being cancelled: not lost
                if kind == "stack":
                    sh.push_front(val)
                else:
                    val[0].close()
            # the application may close the listening socket next (anyio's aclose)
            self.call_soon(self._shadow_check_soon, sh, 3)
            raise
        finally:
            try:
                sh._waiters.remove(fut)
            except ValueError:
                pass
            if sock.fileno() == fd:
                self.remove_reader(fd)

    def _shadow_check_soon(self, sh, n):
        if sh.check() and n > 1:
            self.call_soon(self._shadow_check_soon, sh, n - 1)

    def _shadow_for(self, sock):
        """The shadow stack listener of a listening kernel socket bound to a stack-owned address
        (opened on first sock_accept), else None (the socket is served by the base loop only)."""
        if not isinstance(sock, socket.socket):
            return None
        sh = self._mtcp_shadows.get(sock)
        if sh is not None:
            if sh is False or not sh.check():
                return None
            return sh
        if (sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM
                or sock.fileno() == -1):
            return None
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return None
            sa = sock.getsockname()
        except OSError:
            return None
        if not self._stack_owns(sock.family, sa[0], listen=True):
            return None
        eng = self._engine()
        try:
            lid = eng.listen(sock.family, sa[0], sa[1], socket.SOMAXCONN)
        except OSError as exc:
            self._mtcp_shadows[sock] = False
            if self._warn_on():
                self._warn_kernel(f"sock_accept() (no stack listener: {exc.strerror})", sa[:2])
            return None
        sh = self._mtcp_shadows[sock] = ShadowListener(self, eng, sock, lid)
        return sh

    async def connect_accepted_socket(self, protocol_factory, sock, *, ssl=None,
                                      ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        ss = await self._resolve_sock(sock)
        if ss is None:
            res = await super().connect_accepted_socket(
                protocol_factory, sock, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
            self._mtcp_n_kernel_accepted += 1
            return res
        cid, internal = ss._take_cid()
        if ss is not sock:
            del self._mtcp_adopted[sock]
            ss._fin.detach()
        return await self._stack_transport(cid, protocol_factory, ssl, None, ssl_handshake_timeout,
                                           ssl_shutdown_timeout, server_side=True,
                                           kernel_sock=None if ss is sock else sock,
                                           internal=internal, count=False)

    async def sock_recv(self, sock, n):
        ss = await self._resolve_sock(sock)
        if ss is None:
            return await super().sock_recv(sock, n)
        return await ss.a_recv(n)

    async def sock_recv_into(self, sock, buf):
        ss = await self._resolve_sock(sock)
        if ss is None:
            return await super().sock_recv_into(sock, buf)
        return await ss.a_recv_into(buf)

    async def sock_sendall(self, sock, data):
        ss = await self._resolve_sock(sock)
        if ss is None:
            return await super().sock_sendall(sock, data)
        return await ss.a_sendall(data)

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        ss = await self._resolve_sock(sock)
        if ss is None:
            return await super().sock_sendfile(sock, file, offset, count, fallback=fallback)
        base_events.BaseEventLoop._check_sendfile_params(self, ss, file, offset, count)
        if not fallback:
            raise asyncio.SendfileNotAvailableError(
                "native sendfile is not available on the user-space stack")
        return await base_events.BaseEventLoop._sock_sendfile_fallback(self, ss, file, offset, count)

    # -- create_server ---------------------------------------------------------------------------
    async def create_server(self, protocol_factory, host=None, port=None, *,
                            family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
                            backlog=100, ssl=None, reuse_address=None, reuse_port=None,
                            ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                            start_serving=True, **kwargs):
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        backlog = operator.index(backlog)   # TypeError for 'x' or 1.5, as socket.listen()
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        kernel_kw = dict(backlog=backlog, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout,
                         ssl_shutdown_timeout=ssl_shutdown_timeout, start_serving=start_serving,
                         **kwargs)

        def counted_factory():
            self._mtcp_n_kernel_accepted += 1
            return protocol_factory()

        # with connected_socket, kernel listeners next to a stack listener (mirrors,
        # create_server(sock=)) accept through KernelGate, which holds back connections of sockets
        # sock_connect attached to the stack (mtcp_loop/socks.py) and layers TLS itself
        gated_kw = dict(kernel_kw, ssl=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None)

        def gate_factory():
            return KernelGate(self, counted_factory, ssl, ssl_handshake_timeout, ssl_shutdown_timeout)

        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            try:
                sa = sock.getsockname()
            except OSError:
                sa = None
            if sa is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sa[1] == 0:
                # unbound: listen() would pick the port; bind now so stack and kernel share it
                sock.bind((sa[0], 0))
                sa = sock.getsockname()
            prev = self._mtcp_sock_servers.get(sock)
            if prev is not None and not prev._closed:
                # the same socket twice: the stack listener is the first server's; this one serves
                # the socket as the base loop does (asyncio: both listen; uvloop: RuntimeError)
                return await super().create_server(counted_factory, sock=sock, **kernel_kw)
            if (sock.family not in (socket.AF_INET, socket.AF_INET6) or sa is None
                    or not self._stack_owns(sock.family, sa[0], listen=True)):
                if self._mtcp_config.fallback == "error" and sock.family in (socket.AF_INET, socket.AF_INET6):
                    raise self._not_owned_error(sa and sa[0], sa and sa[1])
                return await super().create_server(counted_factory, sock=sock, **kernel_kw)
            # adopt: serve on the stack at the socket's address, and kernel arrivals on the socket
            eng = self._engine()
            server = MTCPServer(self, eng, protocol_factory, ssl, backlog,
                                ssl_handshake_timeout, ssl_shutdown_timeout)
            server._sock_form = True
            lid = eng.listen(sock.family, sa[0], sa[1], backlog)
            try:
                server._add_listener(lid, sock.family, serve=start_serving)
                if self._mtcp_config.connected_socket:
                    ks = await super().create_server(gate_factory, sock=sock, **gated_kw)
                    server._gate(sock.family, sa[1])
                else:
                    ks = await super().create_server(counted_factory, sock=sock, **kernel_kw)
                server._kernel_servers.append(ks)
            except BaseException:
                server.close()
                raise
            self._mtcp_sock_servers[sock] = server
            if start_serving:
                server._start_serving()
                await asyncio.sleep(0)
            return server

        # host/port form
        if host == "":
            hosts = [None]
        elif isinstance(host, str) or host is None:
            hosts = [host]
        else:
            hosts = list(host)
        targets = []   # (family, ip)
        for h in hosts:
            if h is None or h == "":
                for fam, ip in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                    if family in (socket.AF_UNSPEC, 0, fam):
                        if fam == socket.AF_INET6 and not socket.has_ipv6:
                            continue
                        targets.append((fam, ip))
                continue
            infos = await self.getaddrinfo(h, port or 0, family=family, type=socket.SOCK_STREAM,
                                           flags=flags)
            if not infos:
                raise OSError(f"getaddrinfo({h!r}) returned empty list")
            for fam, _t, _p, _c, sa in infos:
                if (fam, sa[0]) not in targets:
                    targets.append((fam, sa[0]))
        stack_t = [t for t in targets if self._stack_owns(t[0], t[1], listen=True)]
        if reuse_port is None:
            if _links.in_worker():
                reuse_port = True    # every worker binds the same kernel ports: the kernel spreads clients
        if not stack_t:
            if self._mtcp_config.fallback == "error":
                raise self._not_owned_error(targets[0][1] if targets else host, port)
            return await super().create_server(counted_factory, host, port, family=family,
                                               flags=flags, reuse_address=reuse_address,
                                               reuse_port=reuse_port, **kernel_kw)
        if self._mtcp_config.fallback == "error" and len(stack_t) != len(targets):
            bad = [t for t in targets if t not in stack_t][0]
            raise self._not_owned_error(bad[1], port)

        mirror = self._mtcp_config.kernel_mirror and self._mtcp_config.backend == "loopback"
        eng = self._engine()
        if reuse_address is None:
            reuse_address = True
        attempts = 20 if not port else 1
        last_exc = None
        for _ in range(attempts):
            server = MTCPServer(self, eng, protocol_factory, ssl, backlog,
                                ssl_handshake_timeout, ssl_shutdown_timeout)
            ksocks = []
            chosen = int(port or 0)
            try:
                for fam, ip in targets:
                    on_stack = (fam, ip) in stack_t
                    if mirror or not on_stack:
                        ks = self._bind_kernel(fam, ip, chosen, reuse_address, reuse_port,
                                               optional=on_stack)
                        if ks is not None:
                            ksocks.append(ks)
                            if not chosen:
                                chosen = ks.getsockname()[1]
                    if on_stack:
                        group = None
                        if reuse_port and chosen and start_serving:
                            group = self._mtcp_reuseport.get((fam, ip, chosen))
                        if group is not None:
                            group.join(server)          # SO_REUSEPORT within this loop
                            continue
                        try:
                            lid = eng.listen(fam, ip, chosen, backlog)
                        except OSError as exc:
                            if not (reuse_port and exc.errno == errno.EADDRINUSE and mirror):
                                raise
                            # the port is another loop's stack listener (another thread): this
                            # server takes the kernel arrivals (the kernel spreads them over the
                            # SO_REUSEPORT mirror sockets); stack connections go to that loop
                            self._warn_kernel("create_server(reuse_port=True) (the stack "
                                              "listener belongs to another loop)", (ip, chosen))
                            continue
                        if not chosen:                  # no kernel mirror chose it: the stack did
                            chosen = eng.getaddrs(lid)[0][1]
                        if reuse_port and start_serving:
                            _ReusePortGroup(self, eng, lid, (fam, ip, chosen), server)
                        server._add_listener(lid, fam, serve=start_serving)
                        if not chosen:
                            chosen = server._listeners[-1][1].getsockname()[1]
            except OSError as exc:
                server.close()
                for s in ksocks:
                    s.close()
                if exc.errno == errno.EADDRINUSE and not port:
                    last_exc = exc
                    continue
                raise
            except BaseException:
                server.close()
                for s in ksocks:
                    s.close()
                raise
            break
        else:
            raise last_exc
        try:
            for s in ksocks:
                gated = bool(server._listeners) and self._mtcp_config.connected_socket
                if gated:
                    ks = await super().create_server(gate_factory, sock=s, **gated_kw)
                    server._gate(s.family, s.getsockname()[1])
                else:
                    ks = await super().create_server(counted_factory, sock=s, **kernel_kw)
                server._kernel_servers.append(ks)
        except BaseException:
            server.close()
            for s in ksocks:
                s.close()
            raise
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server

    def _bind_kernel(self, fam, ip, port, reuse_address, reuse_port, optional):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM, 0)
        except OSError:
            if optional:
                return None
            raise
        try:
            if reuse_address:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise ValueError("reuse_port not supported by socket module")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if fam == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            try:
                s.bind((ip, port))
            except OSError as err:
                if optional and err.errno == errno.EADDRNOTAVAIL:
                    s.close()
                    return None
                raise OSError(err.errno, "error while attempting to bind on address %r: %s"
                              % ((ip, port), err.strerror.lower())) from None
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    # -- start_tls / sendfile over stack transports --------------------------------------------
    @staticmethod
    def _is_stack_transport(transport):
        if isinstance(transport, MTCPTransport):
            return True
        if isinstance(transport, sslproto._SSLProtocolTransport):
            ssl_proto = getattr(transport, "_ssl_protocol", None)
            return isinstance(getattr(ssl_proto, "_transport", None), MTCPTransport)
        return False

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        if not self._is_stack_transport(transport):
            return await super().start_tls(transport, protocol, sslcontext, server_side=server_side,
                                           server_hostname=server_hostname,
                                           ssl_handshake_timeout=ssl_handshake_timeout,
                                           ssl_shutdown_timeout=ssl_shutdown_timeout)
        return await base_events.BaseEventLoop.start_tls(
            self, transport, protocol, sslcontext, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        if not self._is_stack_transport(transport):
            return await super().sendfile(transport, file, offset, count, fallback=fallback)
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if not fallback:
            raise RuntimeError(f"fallback is disabled and native sendfile is not supported for "
                               f"transport {transport!r}")
        return await self._mtcp_sendfile_fallback(transport, file, offset, count)

    async def _mtcp_sendfile_fallback(self, transp, file, offset, count):
        # asyncio's BaseEventLoop._sendfile_fallback, with a fallback protocol that accepts the
        # compiled transport (asyncio's checks for its pure-Python _FlowControlMixin class)
        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total_sent = 0
        proto = _SendfileFallbackProtocol(transp)
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total_sent  # EOF
                await proto.drain()
                transp.write(view[:read])
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)
            await proto.restore()


class _SendfileFallbackProtocol(base_events._SendfileFallbackProtocol):
    """asyncio's sendfile fallback protocol for MTCPTransport (same state, no class check)."""

    def __init__(self, transp):
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = transp._protocol_paused
        transp.pause_reading()
        transp.set_protocol(self)
        if self._should_resume_writing:
            self._write_ready_fut = self._transport._loop.create_future()
        else:
            self._write_ready_fut = None


_classes = {}


def available_bases():
    """Base loop names usable here: 'asyncio' always, 'uvloop' when installed."""
    names = ["asyncio"]
    try:
        import uvloop  # noqa: F401
        names.insert(0, "uvloop")
    except ImportError:
        pass
    return names


def _base_class(name):
    if name in ("auto", None):
        name = available_bases()[0]
    if name == "uvloop":
        import uvloop
        return "uvloop", uvloop.Loop
    if name == "asyncio":
        return "asyncio", asyncio.SelectorEventLoop
    raise ValueError(f"base must be 'auto', 'uvloop' or 'asyncio', got {name!r}")


def make_loop_class(base):
    """Build an MTCPLoop class on ``base`` (a loop class, or 'uvloop'/'asyncio'/'auto')."""
    if isinstance(base, str) or base is None:
        name, base_cls = _base_class(base)
    else:
        base_cls = base
        name = "uvloop" if base.__module__.startswith("uvloop") else "asyncio"
    key = base_cls
    if key in _classes:
        return _classes[key]
    cls = type("MTCPLoop", (_MTCPLoopMixin, base_cls), {
        "__module__": __name__,
        "__doc__": f"asyncio event loop with TCP on the mtcp_loop user-space stack (base: {name}).",
        "_mtcp_base_name": name,
    })
    if not issubclass(base_cls, base_events.BaseEventLoop):
        # uvloop has no asyncio fallback sendfile helpers; borrow asyncio's (pure Python)
        for attr in ("_sendfile_fallback",):
            setattr(cls, attr, getattr(base_events.BaseEventLoop, attr))
    _classes[key] = cls
    return cls


def loop_class_for(base="auto"):
    return make_loop_class(base)
