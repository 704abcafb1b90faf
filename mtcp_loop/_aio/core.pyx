# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, embedsignature=True
"""The compiled data path: engine driver, MTCPTransport, PseudoSocket, accept.

Per connection and per event nothing here goes through cffi: the engine is called through the
function table of includes/mtcp.pxd. Layout:

* ``EngineCore``: poll + event dispatch (the batch is drained in C into a preallocated array),
  a cid -> transport table (a list indexed by the cid's slot, checked against the full cid), the
  kick (at most one pending ``call_soon(_run)``: everything written in one loop iteration is
  flushed by the next poll) and one deadline timer. The Python subclass ``loop._Engine`` owns
  the control plane (link, configuration, listen, connect, counters) through cffi.
* ``MTCPTransport``: asyncio's selector socket transport semantics (the conformance suite's
  oracle) over one cid. write() copies into the engine's send buffer at once (one copy) and
  queues only what did not fit; reads copy once, from the engine's receive buffer into the
  bytes given to data_received (up to 256 KiB per call) or straight into a BufferedProtocol's
  buffer.
* ``PseudoSocket``: transport.get_extra_info('socket') / Server.sockets.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t, uintptr_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_CheckExact
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.list cimport PyList_GET_ITEM
from cpython.ref cimport PyObject

from .includes.mtcp cimport *

import collections
import errno as _errno
import logging
import os
import socket
import struct
import warnings
from asyncio import constants as _constants
from asyncio import protocols as _protocols

from .._native import ffi as _ffi, lib as _lib

logger = logging.getLogger("mtcp_loop")

cdef mtcp_api api
cdef int64_t MAX_IO = 1 << 30        # one mtcp_send/mtcp_recv moves at most this (uint32 len)
cdef int64_t READ_CHUNK = 256 * 1024  # bytes per data_received call at most (asyncio's max_size)
cdef int LOG_THRESHOLD_FOR_CONNLOST_WRITES = _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
cdef int EBADF = _errno.EBADF
cdef object BufferedProtocol = _protocols.BufferedProtocol
cdef object _deque = collections.deque
cdef object _inet_ntop = socket.inet_ntop
cdef object AF_INET = socket.AF_INET
cdef object AF_INET6 = socket.AF_INET6
cdef frozenset _ADDR_KEYS = frozenset(("sockname", "peername", "socket"))


cdef void *_fn(str name) except NULL:
    cdef uintptr_t p = <uintptr_t>int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, name)))
    if p == 0:
        raise ImportError(f"mtcp_loop._aio: {name} not found in the cffi extension")
    return <void *>p


cdef _bind_api():
    # The engine lives in the cffi extension (built from native/ by the same pip install); take
    # its functions' addresses once: no second copy of the engine's code or globals.
    api.engine_poll_rx = <mtcp_engine_poll_t>_fn("mtcp_engine_poll_rx")
    api.engine_poll_tx = <mtcp_engine_poll_t>_fn("mtcp_engine_poll_tx")
    api.engine_next_deadline = <mtcp_engine_next_deadline_t>_fn("mtcp_engine_next_deadline")
    api.engine_events = <mtcp_engine_events_t>_fn("mtcp_engine_events")
    api.send = <mtcp_send_t>_fn("mtcp_send")
    api.recv = <mtcp_recv_t>_fn("mtcp_recv")
    api.readable = <mtcp_readable_t>_fn("mtcp_readable")
    api.shutdown = <mtcp_cid_op_t>_fn("mtcp_shutdown")
    api.close = <mtcp_cid_op_t>_fn("mtcp_close")
    api.abort = <mtcp_cid_op_t>_fn("mtcp_abort")
    api.setopt = <mtcp_setopt_t>_fn("mtcp_setopt")
    api.getopt = <mtcp_getopt_t>_fn("mtcp_getopt")
    api.getaddrs = <mtcp_getaddrs_t>_fn("mtcp_getaddrs")


_bind_api()


cdef inline uint64_t _now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)      # the clock of time.monotonic()
    return <uint64_t>ts.tv_sec * 1000000 + <uint64_t>(ts.tv_nsec // 1000)


def monotonic_us():
    """The engine's clock (CLOCK_MONOTONIC, microseconds)."""
    return _now_us()


def os_error(int err, what=""):
    """OSError subclass for a positive errno, like the kernel raises it (ECONNRESET ->
    ConnectionResetError, ECONNREFUSED -> ConnectionRefusedError, ETIMEDOUT -> TimeoutError...)."""
    msg = os.strerror(err)
    if what:
        msg = f"{what}: {msg}"
    return OSError(err, msg)


cdef object _addr_tuple(const mtcp_addr *a):
    """struct mtcp_addr -> (host, port) for IPv4, (host, port, 0, 0) for IPv6; None if empty."""
    if a.family == MTCP_AF_INET:
        return (_inet_ntop(AF_INET, PyBytes_FromStringAndSize(<char *>a.ip, 4)), a.port)
    if a.family == MTCP_AF_INET6:
        return (_inet_ntop(AF_INET6, PyBytes_FromStringAndSize(<char *>a.ip, 16)), a.port, 0, 0)
    return None


# --------------------------------------------------------------------------------------------
# the engine driver
# --------------------------------------------------------------------------------------------
cdef class EngineCore:
    """Poll, event dispatch, cid table, kick and deadline timer of one engine (one loop)."""

    cdef mtcp_engine *_e
    cdef object loop
    cdef object _call_soon
    cdef object _run_cb
    cdef list _table            # cid slot -> MTCPTransport or None
    cdef uint32_t _table_n
    cdef mtcp_event *_ev
    cdef uint32_t _nev
    cdef bint _scheduled
    cdef int64_t _deadline
    cdef object _timer
    cdef mtcp_addr _a[2]        # scratch for getaddrs
    cdef public dict _connecting   # cid -> future (active opens)
    cdef public dict _listeners    # lid -> MTCPServer (or an object with _serving/_accept/_on_accept)
    cdef public object _server_cls # MTCPServer: its accepts take the compiled path directly
    cdef public dict _unowned      # accepted cid not yet owned by a transport -> [peer_eof, err]
    cdef public uint64_t polls
    cdef public uint64_t events
    cdef public uint64_t n_accepted
    cdef public Py_ssize_t n_open  # live transports in the table
    cdef public object _clock      # None: CLOCK_MONOTONIC; else a callable -> microseconds
                                   # (virtual time, mtcp_loop/vtime.py)

    def __dealloc__(self):
        if self._ev != NULL:
            free(self._ev)
            self._ev = NULL

    def _core_attach(self, loop, uintptr_t engine, uint32_t max_conns, uint32_t nev):
        """Called by loop._Engine once the engine exists (engine = its address)."""
        self._e = <mtcp_engine *>engine
        self.loop = loop
        self._call_soon = loop.call_soon
        self._run_cb = self._run
        self._table = [None] * max_conns
        self._table_n = max_conns
        if nev < 1:
            nev = 1
        self._ev = <mtcp_event *>malloc(sizeof(mtcp_event) * nev)
        if self._ev == NULL:
            raise MemoryError()
        self._nev = nev
        self._scheduled = False
        self._deadline = -1
        self._timer = None
        self._connecting = {}
        self._listeners = {}
        self._unowned = {}
        self.polls = self.events = self.n_accepted = 0
        self.n_open = 0

    # -- driving ----------------------------------------------------------------------------
    cdef inline void _kick(self) except *:
        if not self._scheduled and self._e != NULL:
            self._scheduled = True
            self._call_soon(self._run_cb)

    def kick(self):
        self._kick()

    def _on_fd(self):
        if not self._scheduled:
            self._scheduled = True
            self._run()

    def _on_timer(self):
        self._timer = None
        self._deadline = -1
        if not self._scheduled:
            self._scheduled = True
            self._run()

    def _run(self):
        cdef int64_t d
        cdef uint64_t now
        cdef int n
        self._scheduled = False
        if self._e == NULL:
            return
        now = _now_us() if self._clock is None else <uint64_t>self._clock()
        # RX + timers, then the events (protocol callbacks write and close), then the output:
        # replies carry the ACKs of what arrived, a FIN leaves with the last data
        n = api.engine_poll_rx(self._e, now)
        for _ in range(8):
            if n:
                self._dispatch()
                if self._e == NULL:
                    return
            # on the loopback, frames to this engine itself are taken in the same call; it stops
            # once they made events, which are dispatched before their ACKs go out
            n = api.engine_poll_tx(self._e, now)
            self.polls += 1
            if not n:
                break
        if n:
            self._dispatch()         # rounds left: these callbacks' writes kick the next _run
        if self._e == NULL:
            return
        # one loop timer: re-armed only when the engine's deadline moves earlier; a timer that
        # fires before a later deadline just polls and re-arms (cheaper than a cancel + new timer
        # whenever the deadline moves, which is most polls under short connections)
        d = api.engine_next_deadline(self._e)
        if d >= 0 and (self._timer is None or d < self._deadline):
            if self._timer is not None:
                self._timer.cancel()
            self._deadline = d
            delay = (d - <int64_t>now) / 1e6
            self._timer = self.loop.call_later(delay if delay > 0 else 0.0, self._on_timer)

    cdef inline MTCPTransport _lookup(self, uint64_t cid):
        cdef uint32_t slot = <uint32_t>(cid & 0xffffffffu)
        cdef object o
        if slot >= self._table_n:
            return None
        o = <object>PyList_GET_ITEM(self._table, slot)
        if o is None or (<MTCPTransport>o)._cid != cid:
            return None
        return <MTCPTransport>o

    cdef _dispatch(self):
        cdef uint32_t k, i
        cdef mtcp_event *ev
        cdef MTCPTransport tr
        cdef uint64_t cid
        cdef uint32_t t
        while self._e != NULL:
            k = api.engine_events(self._e, self._ev, self._nev)
            if k == 0:
                break
            self.events += k
            for i in range(k):
                if self._e == NULL:
                    return
                ev = &self._ev[i]
                cid = ev.cid
                t = ev.type
                if t == MTCP_EV_READABLE:
                    tr = self._lookup(cid)
                    if tr is not None:
                        tr._rx_empty = False
                        if tr._reading and not tr._read_scheduled:
                            tr._read_ready()
                elif t == MTCP_EV_WRITABLE:
                    tr = self._lookup(cid)
                    if tr is not None:
                        tr._on_writable()
                elif t == MTCP_EV_PEER_CLOSED:
                    tr = self._lookup(cid)
                    if tr is not None:
                        tr._peer_eof = True
                        if tr._reading and not tr._read_scheduled:
                            tr._read_ready()
                    elif self._unowned and cid in self._unowned:
                        self._unowned[cid][0] = True
                elif t == MTCP_EV_ACCEPT:
                    self._on_accept(cid, ev.parent)
                elif t == MTCP_EV_CLOSED:
                    pass      # the transport releases its cid on close/connection_lost
                elif t == MTCP_EV_CONNECTED:
                    fut = self._connecting.pop(cid, None)
                    if fut is None or fut.done():
                        api.abort(self._e, cid)
                    else:
                        # the transport comes a few callbacks later: keep a FIN or an error
                        # that arrives meanwhile for it (as for accepted connections)
                        self._unowned[cid] = [False, 0]
                        fut.set_result(cid)
                elif t == MTCP_EV_CONNECT_FAILED:
                    fut = self._connecting.pop(cid, None)
                    api.close(self._e, cid)
                    if fut is not None and not fut.done():
                        addr = getattr(fut, "_mtcp_addr", None)
                        fut.set_exception(os_error(ev.err, f"Connect call failed {addr!r}"
                                                   if addr is not None else "Connect call failed"))
                elif t == MTCP_EV_ERROR:
                    tr = self._lookup(cid)
                    if tr is not None:
                        tr._on_error(ev.err)
                    elif self._unowned and cid in self._unowned:
                        self._unowned[cid][1] = ev.err
            if k < self._nev:
                break

    cdef _on_accept(self, uint64_t cid, uint64_t parent):
        srv = self._listeners.get(parent)
        if srv is None:
            api.abort(self._e, cid)
            return
        if not srv._serving:
            srv._on_accept(cid)      # keeps cid pending (and in _unowned)
            return
        if type(srv) is self._server_cls:
            self._accept(srv, cid, True)
        else:
            srv._accept(cid, True)   # a listener shared by several servers (reuse_port) picks one

    cpdef _accept(self, srv, uint64_t cid, bint fresh=False):
        """A new connection of listener server srv: protocol, transport (SSL if configured)."""
        cdef object loop = self.loop
        self.n_accepted += 1
        try:
            protocol = srv._protocol_factory()
            sslctx = srv._ssl_context
            if sslctx is not None:
                from asyncio import sslproto
                waiter = loop.create_future()
                protocol = sslproto.SSLProtocol(
                    loop, protocol, sslctx, waiter, server_side=True,
                    ssl_handshake_timeout=srv._ssl_handshake_timeout,
                    ssl_shutdown_timeout=srv._ssl_shutdown_timeout)
                waiter.add_done_callback(_consume_exception)
            _new_transport(loop, self, cid, protocol, None, srv, None, fresh)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.release(cid)     # closed like asyncio's dropped socket: FIN (RST if data unread)
            if loop.get_debug():
                loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc})

    # -- table -------------------------------------------------------------------------------
    cdef int _register(self, MTCPTransport tr) except -1:
        cdef uint32_t slot = <uint32_t>(tr._cid & 0xffffffffu)
        if slot >= self._table_n:
            raise ValueError(f"cid {tr._cid:#x} outside the engine's table")
        if self._table[slot] is None:
            self.n_open += 1
        self._table[slot] = tr
        return 0

    cdef void _unregister(self, uint64_t cid) except *:
        cdef uint32_t slot = <uint32_t>(cid & 0xffffffffu)
        cdef object o
        if slot < self._table_n:
            o = <object>PyList_GET_ITEM(self._table, slot)
            if o is not None and (<MTCPTransport>o)._cid == cid:
                self._table[slot] = None
                self.n_open -= 1
        if self._unowned:
            self._unowned.pop(cid, None)

    # -- connection calls for the control plane -----------------------------------------------
    def release(self, uint64_t cid, bint abort=False):
        """Hand cid back to the engine (mtcp_close, or mtcp_abort = RST)."""
        self._unregister(cid)
        if self._e == NULL:
            return
        if abort:
            api.abort(self._e, cid)
        else:
            api.close(self._e, cid)
        self._kick()

    def getaddrs(self, uint64_t cid):
        """(local, remote) address tuples of cid (remote None for a listener)."""
        cdef int rc
        if self._e == NULL:
            raise os_error(EBADF, "mtcp_getaddrs")
        memset(self._a, 0, sizeof(self._a))
        rc = api.getaddrs(self._e, cid, &self._a[0], &self._a[1])
        if rc < 0:
            raise os_error(-rc, "mtcp_getaddrs")
        return _addr_tuple(&self._a[0]), _addr_tuple(&self._a[1])

    def _core_detach(self):
        """The engine is about to be freed: every transport is done (extra info stays)."""
        cdef MTCPTransport tr
        for o in self._table:
            if o is not None:
                tr = <MTCPTransport>o
                tr._take_addrs()
                tr._released = True
                tr._closing = True
                tr._conn_lost += 1
        self._table = [None] * self._table_n
        self.n_open = 0
        for fut in self._connecting.values():
            if not fut.done():
                fut.cancel()
        self._connecting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._e = NULL


def _consume_exception(fut):
    if not fut.cancelled():
        fut.exception()


# --------------------------------------------------------------------------------------------
# the transport
# --------------------------------------------------------------------------------------------
cdef MTCPTransport _new_transport(loop, EngineCore engine, uint64_t cid, protocol, waiter, server,
                                  kernel_sock, bint fresh):
    cdef MTCPTransport tr = MTCPTransport.__new__(MTCPTransport)
    _init_transport(tr, loop, engine, cid, protocol, waiter, None, server, kernel_sock, fresh)
    return tr


cdef _init_transport(MTCPTransport tr, loop, EngineCore engine, uint64_t cid, protocol, waiter,
                     extra, server, kernel_sock, bint fresh):
    tr._extra = extra
    tr._loop = loop
    tr._engine = engine
    tr._cid = cid
    tr._kernel_sock = kernel_sock
    tr._high_water = 64 * 1024
    tr._low_water = 16 * 1024
    tr._protocol = protocol
    tr._protocol_is_buffered = isinstance(protocol, BufferedProtocol)
    tr._server = server
    tr._waiter = waiter
    # True: the engine's receive buffer is known to be empty (no READABLE since it was drained,
    # or since the ACCEPT event that created this transport in the dispatch pass: fresh)
    tr._rx_empty = fresh
    if server is not None:
        server._active_count += 1         # server._attach()
    engine._register(tr)
    if engine._unowned:
        early = engine._unowned.pop(cid, None)
        if early is not None:
            if early[0]:
                tr._peer_eof = True
            if early[1]:
                loop.call_soon(tr._on_error_cb, early[1])
    loop.call_soon(tr._connection_made)


cdef class MTCPTransport:
    """asyncio Transport over one engine connection (cid); selector-transport semantics."""

    cdef readonly object _loop
    cdef EngineCore _engine
    cdef readonly uint64_t _cid
    cdef public object _kernel_sock  # adopted kernel socket kept to reserve a port
    cdef object _protocol
    cdef object _server
    cdef object _waiter
    cdef object _extra              # dict or None
    cdef object _buffer             # deque of the unaccepted tail (bytes / memoryviews), lazily
    cdef object _empty_waiter
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef int _conn_lost
    cdef readonly bint _protocol_paused
    cdef bint _protocol_connected
    cdef bint _protocol_is_buffered
    cdef bint _closing
    cdef bint _eof                  # write_eof() called
    cdef bint _paused               # pause_reading()
    cdef bint _reading              # reading started (after connection_made)
    cdef bint _peer_eof             # PEER_CLOSED seen
    cdef bint _eof_delivered
    cdef bint _read_scheduled
    cdef bint _released             # cid handed back to the engine
    cdef bint _rx_empty
    cdef bint _addrs_taken          # _laddr/_raddr hold the addresses
    cdef bint _addrs_filled         # sockname/peername/socket are in _extra
    cdef mtcp_addr _laddr
    cdef mtcp_addr _raddr
    cdef object __weakref__

    _start_tls_compatible = True
    _sendfile_compatible = _constants._SendfileMode.FALLBACK
    max_size = READ_CHUNK

    def __init__(self, loop, EngineCore engine, uint64_t cid, protocol, waiter=None, extra=None,
                 server=None, kernel_sock=None, fresh=False):
        if self._engine is not None:
            raise RuntimeError("MTCPTransport is already initialised")
        _init_transport(self, loop, engine, cid, protocol, waiter, extra, server, kernel_sock, fresh)

    def __repr__(self):
        info = [self.__class__.__name__, f"cid={self._cid:#x}"]
        if self._closing:
            info.append("closing")
        try:
            peer = self.get_extra_info("peername")
        except Exception:
            peer = None
        info.append(f"peer={peer!r}")
        info.append(f"write_bufsize={self._buffer_size}")
        return "<{}>".format(" ".join(info))

    # -- extra info ----------------------------------------------------------------------------
    cdef void _take_addrs(self) except *:
        """Copy the addresses out of the engine while the cid is valid (before release)."""
        if self._addrs_taken or self._engine._e == NULL:
            return
        if api.getaddrs(self._engine._e, self._cid, &self._laddr, &self._raddr) >= 0:
            self._addrs_taken = True

    def get_extra_info(self, name, default=None):
        extra = self._extra
        if extra is None or (not self._addrs_filled and name in _ADDR_KEYS):
            if extra is None:
                extra = self._extra = {}
            self._addrs_filled = True
            self._take_addrs()
            if self._addrs_taken:
                local = _addr_tuple(&self._laddr)
                remote = _addr_tuple(&self._raddr)
                extra["sockname"] = local
                extra["peername"] = remote
                family = AF_INET6 if self._laddr.family == MTCP_AF_INET6 else AF_INET
                extra["socket"] = _new_pseudo(self._loop, self._engine, self._cid, family, local, remote, False)
        return extra.get(name, default)

    # -- protocol ------------------------------------------------------------------------------
    def set_protocol(self, protocol):
        self._protocol_is_buffered = isinstance(protocol, BufferedProtocol)
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def _connection_made(self):
        # asyncio: call_soon(connection_made), call_soon(add_reader), call_soon(waiter): one
        # callback here, same order; reading starts (and the waiter is set) even if it raised
        try:
            if self._protocol is not None:
                self._protocol_connected = True
                self._protocol.connection_made(self)
        finally:
            self._start_reading()
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.cancelled():
                    waiter.set_result(None)

    # -- flow control (asyncio's _FlowControlMixin) -------------------------------------------
    cdef _maybe_pause_protocol(self):
        if self._buffer_size <= self._high_water:
            return
        if not self._protocol_paused:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.pause_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    cdef _maybe_resume_protocol(self):
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    def get_write_buffer_limits(self):
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            if low is None:
                high = 64 * 1024
            else:
                high = 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def get_write_buffer_size(self):
        return self._buffer_size

    # -- reading -------------------------------------------------------------------------------
    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._schedule_read()

    cdef _start_reading(self):
        self._reading = True
        if self._read_scheduled or self._conn_lost or self._closing or self._released:
            return
        # a READABLE/PEER_CLOSED event after this reads in the dispatch pass; only what is
        # already there needs the next-iteration read (as asyncio's first select)
        if not self._peer_eof:
            if self._rx_empty:
                return
            if self._engine._e != NULL and api.readable(self._engine._e, self._cid) == 0:
                self._rx_empty = True
                return
        self._read_scheduled = True
        self._loop.call_soon(self._read_ready_cb)

    cdef _schedule_read(self):
        if not self._read_scheduled and self._reading:
            self._read_scheduled = True
            self._loop.call_soon(self._read_ready_cb)

    def _read_ready_cb(self):
        self._read_ready()

    cdef _read_ready(self):
        cdef int64_t avail, r, n
        cdef mtcp_engine *e
        self._read_scheduled = False
        if self._conn_lost or self._closing or self._released:
            return
        if self._protocol_is_buffered:
            self._read_ready__buffered()
            return
        while not self._paused and not self._closing:
            e = self._engine._e
            if e == NULL:
                return
            if self._rx_empty:
                avail = 0
            else:
                avail = api.readable(e, self._cid)
            if avail <= 0:
                if avail == 0:                  # nothing readable now
                    self._rx_empty = True
                    if self._peer_eof and not self._eof_delivered:
                        self._eof_delivered = True
                        self._read_ready__on_eof()
                elif avail != -EBADF:
                    self._fatal_error(os_error(-avail), "Fatal read error on mtcp transport")
                return
            n = avail if avail < READ_CHUNK else READ_CHUNK
            data = PyBytes_FromStringAndSize(NULL, n)
            r = api.recv(e, self._cid, <uint8_t *>PyBytes_AS_STRING(data), <uint32_t>n)
            if r <= 0:                          # the engine said n bytes were readable
                if r < 0 and r != -EBADF:
                    self._fatal_error(os_error(<int>-r), "Fatal read error on mtcp transport")
                return
            if r < n:
                data = data[:r]
            if avail <= READ_CHUNK:
                self._rx_empty = True           # drained (the engine only adds data in poll)
            self._engine._kick()                # the window may reopen: let the engine announce it
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
            if self._rx_empty and not self._peer_eof:
                return

    cdef _read_ready__buffered(self):
        cdef int64_t avail, r, cap
        cdef Py_buffer view
        cdef mtcp_engine *e
        self._rx_empty = False                  # this path asks the engine (mtcp_readable)
        while not self._paused and not self._closing:
            e = self._engine._e
            if e == NULL:
                return
            avail = api.readable(e, self._cid)
            if avail <= 0:
                if avail < 0:
                    if avail != -EBADF:
                        self._fatal_error(os_error(<int>-avail), "Fatal read error on mtcp transport")
                    return
                if self._peer_eof and not self._eof_delivered:
                    self._eof_delivered = True
                    self._read_ready__on_eof()
                return
            try:
                buf = self._protocol.get_buffer(-1)
                PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            cap = view.len
            if cap > MAX_IO:
                cap = MAX_IO
            if cap <= 0:
                PyBuffer_Release(&view)
                self._fatal_error(RuntimeError("get_buffer() returned an empty buffer"),
                                  "Fatal error: protocol.get_buffer() call failed.")
                return
            e = self._engine._e
            r = api.recv(e, self._cid, <uint8_t *>view.buf, <uint32_t>cap) if e != NULL else -EBADF
            PyBuffer_Release(&view)
            if r <= 0:
                if r < 0 and r != -EBADF:
                    self._fatal_error(os_error(<int>-r), "Fatal read error on mtcp transport")
                return
            self._engine._kick()
            try:
                self._protocol.buffer_updated(r)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return

    cdef _read_ready__on_eof(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- writing -------------------------------------------------------------------------------
    def write(self, data):
        cdef Py_buffer view
        cdef int64_t n, r
        cdef mtcp_engine *e
        if not PyBytes_CheckExact(data) and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not PyBytes_CheckExact(data) and type(data) is not bytearray:
            # lengths are nbytes for any format/shape; a non-contiguous view raises TypeError
            # ("casts are restricted to C-contiguous views", as uvloop) instead of a partial write
            data = memoryview(data).cast("B")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        n = view.len
        if n == 0:
            PyBuffer_Release(&view)
            return
        if self._conn_lost:
            PyBuffer_Release(&view)
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer_size:
            # straight into the engine's send buffer (the one copy); the next poll sends it
            e = self._engine._e
            if e == NULL:
                r = -EBADF
            else:
                r = api.send(e, self._cid, <const uint8_t *>view.buf, <uint32_t>(n if n <= MAX_IO else MAX_IO))
                self._engine._kick()
            if r < 0:
                PyBuffer_Release(&view)
                self._fatal_error(os_error(<int>-r), "Fatal write error on mtcp transport")
                return
            if r == n:
                PyBuffer_Release(&view)
                return
            if PyBytes_CheckExact(data):
                tail = memoryview(data)[r:]     # immutable: keep a view, no copy
            else:
                tail = PyBytes_FromStringAndSize(<char *>view.buf + r, n - r)
        else:
            r = 0
            tail = data if PyBytes_CheckExact(data) else PyBytes_FromStringAndSize(<char *>view.buf, n)
        PyBuffer_Release(&view)
        if self._buffer is None:
            self._buffer = _deque()
        self._buffer.append(tail)
        self._buffer_size += n - r
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        # one engine call for the whole batch (like asyncio 3.12's writelines)
        if self._eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to writelines; sendfile is in progress")
        data = b"".join(list_of_data)
        if data:
            self.write(data)

    cdef _on_writable(self):          # engine event: send space available again
        cdef Py_buffer view
        cdef int64_t r, n
        if self._conn_lost or not self._buffer_size or self._released or self._engine._e == NULL:
            return
        buf = self._buffer
        while buf:
            item = buf[0]
            PyObject_GetBuffer(item, &view, PyBUF_SIMPLE)
            n = view.len
            r = api.send(self._engine._e, self._cid, <const uint8_t *>view.buf,
                         <uint32_t>(n if n <= MAX_IO else MAX_IO))
            PyBuffer_Release(&view)
            self._engine._kick()
            if r < 0:
                buf.clear()
                self._buffer_size = 0
                exc = os_error(<int>-r)
                self._fatal_error(exc, "Fatal write error on mtcp transport")
                if self._empty_waiter is not None:
                    self._empty_waiter.set_exception(exc)
                return
            self._buffer_size -= r
            if r == n:
                buf.popleft()
                continue
            if r:
                buf[0] = (item if type(item) is memoryview else memoryview(item))[r:]
            break
        self._maybe_resume_protocol()  # may append to the buffer
        if not self._buffer_size:
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                api.shutdown(self._engine._e, self._cid)
                self._engine._kick()

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer_size and self._engine._e != NULL:
            api.shutdown(self._engine._e, self._cid)
            self._engine._kick()

    def can_write_eof(self):
        return True

    # -- closing -------------------------------------------------------------------------------
    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._buffer_size:
            self._conn_lost += 1
            # hand the cid back now: a FIN queued in this iteration leaves with the data
            # written in it (one segment), connection_lost follows one callback later
            self._release(False)
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None, True)

    def _on_error_cb(self, int err):
        self._on_error(err)

    cdef _on_error(self, int err):        # engine event: connection died (RST, timeout...)
        if self._conn_lost:
            return
        # a reset while the application still reads or writes is a fatal error, as asyncio has it
        self._fatal_error(os_error(err), "Fatal error on mtcp transport")

    cpdef _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self, "protocol": self._protocol})
        self._force_close(exc, not isinstance(exc, OSError))

    cpdef _force_close(self, exc, bint abort=False):
        if self._conn_lost:
            return
        if self._buffer_size:
            self._buffer.clear()
            self._buffer_size = 0
        self._closing = True
        self._conn_lost += 1
        if abort or exc is not None:
            # as asyncio/uvloop: the socket is closed at once (what the engine holds still goes
            # out, then FIN; RST only with unread received data or SO_LINGER(1, 0)); the unsent
            # Python-side buffer is dropped
            self._release(False)
        self._loop.call_soon(self._call_connection_lost, exc)

    cdef _release(self, bint abort):
        cdef EngineCore eng = self._engine
        if self._released:
            return
        self._released = True
        # get_extra_info keeps working after close, as asyncio's: copy the addresses
        self._take_addrs()
        eng._unregister(self._cid)
        if eng._e != NULL:
            if abort:
                api.abort(eng._e, self._cid)
            else:
                api.close(eng._e, self._cid)
            eng._kick()

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._release(False)
            if self._kernel_sock is not None:
                try:
                    self._kernel_sock.close()
                except OSError:
                    pass
                self._kernel_sock = None
            self._protocol = None
            server = self._server
            if server is not None:
                self._server = None
                server._active_count -= 1   # server._detach(), inlined
                if server._active_count <= 0:
                    server._active_count += 1
                    server._detach()
            if self._empty_waiter is not None:
                if not self._empty_waiter.done():
                    self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
                self._empty_waiter = None

    def __del__(self):
        # The engine's table holds every live transport, so this only runs for transports whose
        # engine went away with the loop; never touch the engine from here.
        if not self._released and self._engine is not None:
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    # -- sendfile fallback support (asyncio's _SendfileFallbackProtocol uses these) -----------
    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self._buffer_size:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    # -- extras --------------------------------------------------------------------------------
    def conn_info(self):
        """The engine's view of this connection (state, cwnd, srtt, ...) as a dict."""
        return self._engine.conn_info(self._cid)


def new_transport(loop, EngineCore engine, uint64_t cid, protocol, waiter=None, server=None,
                  kernel_sock=None, bint fresh=False):
    """Create the transport of an established connection cid (connection_made follows via
    call_soon, then reading starts and waiter gets its result)."""
    return _new_transport(loop, engine, cid, protocol, waiter, server, kernel_sock, fresh)


# --------------------------------------------------------------------------------------------
# PseudoSocket
# --------------------------------------------------------------------------------------------
cdef object _OPT_TABLE = None


cdef object _opt_table():
    global _OPT_TABLE
    if _OPT_TABLE is None:
        IPPROTO_TCP = socket.IPPROTO_TCP
        SOL = socket.SOL_SOCKET
        table = {
            (IPPROTO_TCP, socket.TCP_NODELAY): (MTCP_OPT_NODELAY, 1),
            (SOL, socket.SO_KEEPALIVE): (MTCP_OPT_KEEPALIVE, 1),
            (SOL, socket.SO_SNDBUF): (MTCP_OPT_SNDBUF, 1),
            (SOL, socket.SO_RCVBUF): (MTCP_OPT_RCVBUF, 1),
        }
        for name, opt in (("TCP_KEEPIDLE", MTCP_OPT_KEEPIDLE), ("TCP_KEEPINTVL", MTCP_OPT_KEEPINTVL)):
            if hasattr(socket, name):
                table[(IPPROTO_TCP, getattr(socket, name))] = (opt, 1000000)  # seconds <-> us
        if hasattr(socket, "TCP_KEEPCNT"):
            table[(IPPROTO_TCP, socket.TCP_KEEPCNT)] = (MTCP_OPT_KEEPCNT, 1)
        _OPT_TABLE = table
    return _OPT_TABLE


cdef PseudoSocket _new_pseudo(loop, engine, uint64_t cid, family, sockname, peername, bint listener):
    cdef PseudoSocket ps = PseudoSocket.__new__(PseudoSocket)
    ps._setup(loop, engine, cid, family, sockname, peername, listener)
    return ps


cdef class PseudoSocket:
    """What ``transport.get_extra_info('socket')`` (and ``Server.sockets``) return: a socket-like
    object like uvloop's PseudoSocket. getsockname/getpeername work; setsockopt/getsockopt map
    TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT, SO_SNDBUF/SO_RCVBUF and
    SO_LINGER(on, 0) onto the engine; I/O methods raise TypeError (use the transport)."""

    cdef public object _loop
    cdef public object _engine
    cdef public object _cid          # None: a listener not listening yet (start_serving=False)
    cdef public object family
    cdef public object type
    cdef public object proto
    cdef public object _sockname
    cdef public object _peername
    cdef public bint _listener
    cdef public dict _opts_cache

    def __init__(self, loop, engine, cid, family, sockname, peername=None, listener=False):
        self._setup(loop, engine, cid, family, sockname, peername, listener)

    cdef _setup(self, loop, engine, cid, family, sockname, peername, listener):
        self._loop = loop
        self._engine = engine
        self._cid = cid
        self.family = socket.AddressFamily(family)
        self.type = socket.SOCK_STREAM
        self.proto = socket.IPPROTO_TCP
        self._sockname = sockname
        self._peername = peername
        self._listener = listener
        self._opts_cache = {}

    def __repr__(self):
        s = f"<mtcp_loop.PseudoSocket family={self.family!r} type={self.type!r} proto={self.proto}"
        if self._sockname is not None:
            s += f" laddr={self._sockname!r}"
        if self._peername is not None:
            s += f" raddr={self._peername!r}"
        return s + ">"

    def fileno(self):
        return -1

    def dup(self):
        raise TypeError("mtcp_loop PseudoSocket.dup() is not supported (the connection lives in the user-space stack)")

    def getsockname(self):
        return self._sockname

    def getpeername(self):
        if self._peername is None:
            raise OSError(_errno.ENOTCONN, os.strerror(_errno.ENOTCONN))
        return self._peername

    cdef _check(self, int rc):
        if rc < 0:
            raise os_error(-rc, "mtcp_setopt/getopt")

    cdef mtcp_engine *_eng(self) except NULL:
        cdef EngineCore eng = self._engine
        if eng is None or eng._e == NULL or self._cid is None:
            raise OSError(EBADF, os.strerror(EBADF))
        return eng._e

    def setsockopt(self, level, optname, value, optlen=None):
        if level == socket.SOL_SOCKET and optname in (socket.SO_REUSEADDR, getattr(socket, "SO_REUSEPORT", -1)):
            self._opts_cache[(level, optname)] = value
            return None
        if level == socket.SOL_SOCKET and optname == socket.SO_LINGER:
            onoff, linger = struct.unpack("ii", value) if isinstance(value, (bytes, bytearray)) else (value, 0)
            val = 1 if (onoff and linger == 0) else 0
            self._check(api.setopt(self._eng(), self._cid, MTCP_OPT_LINGER_ZERO, val))
            self._opts_cache[(level, optname)] = value
            return None
        m = _opt_table().get((level, optname))
        if m is None:
            raise OSError(_errno.ENOPROTOOPT, f"mtcp_loop PseudoSocket: option ({level}, {optname}) is not supported")
        opt, scale = m
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(value[:4], "little", signed=True)
        self._check(api.setopt(self._eng(), self._cid, opt, int(value) * scale))
        return None

    def getsockopt(self, level, optname, buflen=None):
        cdef int64_t out = 0
        if level == socket.SOL_SOCKET and optname == socket.SO_TYPE:
            return socket.SOCK_STREAM
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR:
            return 0
        if (level, optname) in self._opts_cache and buflen is None:
            v = self._opts_cache[(level, optname)]
            return v if isinstance(v, int) else 0
        m = _opt_table().get((level, optname))
        if m is None:
            raise OSError(_errno.ENOPROTOOPT, f"mtcp_loop PseudoSocket: option ({level}, {optname}) is not supported")
        opt, scale = m
        self._check(api.getopt(self._eng(), self._cid, opt, &out))
        v = int(out) // scale
        if buflen is not None:
            return v.to_bytes(4, "little", signed=True)[:buflen]
        return v

    def settimeout(self, value):
        if value == 0:
            return
        raise ValueError("settimeout(): only 0 timeout is allowed on transport sockets")

    def gettimeout(self):
        return 0

    def setblocking(self, flag):
        if not flag:
            return
        raise ValueError("setblocking(): transport sockets cannot be blocking")

    def getblocking(self):
        return False

    def close(self):  # the transport owns the connection
        return None

    def detach(self):
        raise TypeError("mtcp_loop PseudoSocket.detach() is not supported")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def _na(self, name):
        raise TypeError(f"transport's socket.{name}() is not supported: the connection lives in the "
                        "mtcp_loop user-space stack; use the transport")

    def send(self, *a, **k): self._na("send")
    def sendall(self, *a, **k): self._na("sendall")
    def sendto(self, *a, **k): self._na("sendto")
    def sendmsg(self, *a, **k): self._na("sendmsg")
    def recv(self, *a, **k): self._na("recv")
    def recv_into(self, *a, **k): self._na("recv_into")
    def recvfrom(self, *a, **k): self._na("recvfrom")
    def recvmsg(self, *a, **k): self._na("recvmsg")
    def accept(self, *a, **k): self._na("accept")
    def connect(self, *a, **k): self._na("connect")
    def connect_ex(self, *a, **k): self._na("connect_ex")
    def bind(self, *a, **k): self._na("bind")
    def listen(self, *a, **k): self._na("listen")
    def shutdown(self, *a, **k): self._na("shutdown")
    def makefile(self, *a, **k): self._na("makefile")
