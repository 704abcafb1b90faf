"""MTCPTransport: an asyncio.Transport over one connection of the user-space TCP engine.

Semantics mirror asyncio's selector socket transport (selector_events._SelectorSocketTransport),
which is the oracle of the conformance suite:

* connection_made is called via call_soon after construction; reading starts one callback later;
* Protocol (data_received) and BufferedProtocol (get_buffer/buffer_updated: mtcp_recv straight
  into the protocol's buffer);
* eof_received: a true return keeps the transport open for writing, else the transport closes;
* write() hands data to the engine's send buffer at once (mtcp_send); the part the engine did not
  accept stays in a Python buffer that the WRITABLE event drains; high/low water marks and
  pause_writing/resume_writing via asyncio's _FlowControlMixin;
* pause_reading() stops calling mtcp_recv, so the engine's receive buffer fills, the advertised
  window closes and the peer stops sending; resume_reading() drains what queued;
* close() sends what is buffered, then mtcp_close (FIN); connection_lost(None) via call_soon;
* abort() and fatal errors drop the unsent Python-side buffer and mtcp_close at once (what the
  engine holds is delivered, then FIN; the engine sends RST only with unread received data or
  SO_LINGER(1, 0), as the kernel's close()), connection_lost via call_soon.

The transport never touches packets: it only calls mtcp_send/mtcp_recv/... on its cid.
"""
from __future__ import annotations

import collections
import errno as _errno
import logging
import os
import socket
import struct
import sys
from asyncio import constants, protocols, transports

logger = logging.getLogger("mtcp_loop")

_MAX_IO = 1 << 30  # one mtcp_send/mtcp_recv call moves at most this many bytes (uint32 len)


def os_error(err: int, what: str = "") -> OSError:
    """OSError subclass for a positive errno, like the kernel raises it (ECONNRESET ->
    ConnectionResetError, ECONNREFUSED -> ConnectionRefusedError, ETIMEDOUT -> TimeoutError...)."""
    msg = os.strerror(err)
    if what:
        msg = f"{what}: {msg}"
    return OSError(err, msg)


def addr_to_tuple(ffi, a):
    """struct mtcp_addr -> (host, port) for IPv4, (host, port, 0, 0) for IPv6."""
    if a.family == 4:
        host = socket.inet_ntop(socket.AF_INET, bytes(ffi.buffer(a.ip, 4)))
        return (host, a.port)
    host = socket.inet_ntop(socket.AF_INET6, bytes(ffi.buffer(a.ip, 16)))
    return (host, a.port, 0, 0)


class PseudoSocket:
    """What ``transport.get_extra_info('socket')`` (and ``Server.sockets``) return: a socket-like
    object like uvloop's PseudoSocket. getsockname/getpeername work; setsockopt/getsockopt map
    TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT, SO_SNDBUF/SO_RCVBUF and
    SO_LINGER(on, 0) onto the engine; I/O methods raise TypeError (use the transport)."""

    def __init__(self, loop, engine, cid, family, sockname, peername=None, listener=False):
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

    def _map(self, level, optname):
        from ._native import lib
        IPPROTO_TCP = socket.IPPROTO_TCP
        SOL = socket.SOL_SOCKET
        table = {
            (IPPROTO_TCP, socket.TCP_NODELAY): (lib.MTCP_OPT_NODELAY, 1),
            (SOL, socket.SO_KEEPALIVE): (lib.MTCP_OPT_KEEPALIVE, 1),
            (SOL, socket.SO_SNDBUF): (lib.MTCP_OPT_SNDBUF, 1),
            (SOL, socket.SO_RCVBUF): (lib.MTCP_OPT_RCVBUF, 1),
        }
        for name, opt in (("TCP_KEEPIDLE", lib.MTCP_OPT_KEEPIDLE), ("TCP_KEEPINTVL", lib.MTCP_OPT_KEEPINTVL)):
            if hasattr(socket, name):
                table[(IPPROTO_TCP, getattr(socket, name))] = (opt, 1000000)  # seconds <-> us
        if hasattr(socket, "TCP_KEEPCNT"):
            table[(IPPROTO_TCP, socket.TCP_KEEPCNT)] = (lib.MTCP_OPT_KEEPCNT, 1)
        return table.get((level, optname))

    def setsockopt(self, level, optname, value, optlen=None):
        from ._native import lib
        if level == socket.SOL_SOCKET and optname in (socket.SO_REUSEADDR, getattr(socket, "SO_REUSEPORT", -1)):
            self._opts_cache[(level, optname)] = value
            return None
        if level == socket.SOL_SOCKET and optname == socket.SO_LINGER:
            onoff, linger = struct.unpack("ii", value) if isinstance(value, (bytes, bytearray)) else (value, 0)
            val = 1 if (onoff and linger == 0) else 0
            self._check(lib.mtcp_setopt(self._engine.e, self._cid, lib.MTCP_OPT_LINGER_ZERO, val))
            self._opts_cache[(level, optname)] = value
            return None
        m = self._map(level, optname)
        if m is None:
            raise OSError(_errno.ENOPROTOOPT, f"mtcp_loop PseudoSocket: option ({level}, {optname}) is not supported")
        opt, scale = m
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(value[:4], "little", signed=True)
        self._check(lib.mtcp_setopt(self._engine.e, self._cid, opt, int(value) * scale))
        return None

    def getsockopt(self, level, optname, buflen=None):
        from ._native import ffi, lib
        if level == socket.SOL_SOCKET and optname == socket.SO_TYPE:
            return socket.SOCK_STREAM
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR:
            return 0
        if (level, optname) in self._opts_cache and buflen is None:
            v = self._opts_cache[(level, optname)]
            return v if isinstance(v, int) else 0
        m = self._map(level, optname)
        if m is None:
            raise OSError(_errno.ENOPROTOOPT, f"mtcp_loop PseudoSocket: option ({level}, {optname}) is not supported")
        opt, scale = m
        out = ffi.new("int64_t *")
        self._check(lib.mtcp_getopt(self._engine.e, self._cid, opt, out))
        v = int(out[0]) // scale
        if buflen is not None:
            return v.to_bytes(4, "little", signed=True)[:buflen]
        return v

    def _check(self, rc):
        if rc < 0:
            raise os_error(-rc, "mtcp_setopt/getopt")

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


_ADDR_KEYS = frozenset(("sockname", "peername", "socket"))
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_BYTEORDER = sys.byteorder


def _raw_addr(raw, off):
    """(host, port[, 0, 0]) from the struct mtcp_addr bytes at raw[off:off + 20]; None if empty."""
    fam = raw[off]
    port = int.from_bytes(raw[off + 2:off + 4], _BYTEORDER)
    if fam == 4:
        return (socket.inet_ntop(socket.AF_INET, raw[off + 4:off + 8]), port)
    if fam == 6:
        return (socket.inet_ntop(socket.AF_INET6, raw[off + 4:off + 20]), port, 0, 0)
    return None


def _native():
    global _lib, _ffi, _recv, _send, _readable, _from_buffer, _getaddrs, _close
    from ._native import ffi, lib
    _ffi, _lib = ffi, lib
    _recv, _send, _readable, _from_buffer = lib.mtcp_recv, lib.mtcp_send, lib.mtcp_readable, ffi.from_buffer
    _getaddrs, _close = lib.mtcp_getaddrs, lib.mtcp_close


_lib = _ffi = _recv = _send = _readable = _from_buffer = _getaddrs = _close = None


class MTCPTransport(transports._FlowControlMixin, transports.Transport):
    """Transport over one engine connection (cid).

    Per-connection cost matters (short connections): the instance has __slots__, the extra info
    (sockname, peername, socket) is built on first get_extra_info (the raw addresses are taken from
    the engine at the latest when the cid is released), and connection_made, the start of reading
    and the waiter share one call_soon callback (the order asyncio gives them)."""

    __slots__ = ("_engine", "_cid", "_kernel_sock", "_addrs", "_protocol_connected", "_protocol",
                 "_protocol_is_buffered", "_server", "_buffer", "_buffer_size", "_conn_lost",
                 "_closing", "_eof", "_paused", "_reading", "_peer_eof", "_eof_delivered",
                 "_read_scheduled", "_released", "_empty_waiter", "_engine_closed", "_waiter",
                 "_rx_empty", "__weakref__")

    max_size = 256 * 1024                   # asyncio's per-read cap (kept for compatibility)
    # bytes per data_received call at most: below glibc's 128 KiB mmap threshold, so the bytes
    # objects come from the heap (256 KiB objects cost an mmap+munmap+page faults each: 3-5x slower)
    recv_chunk = 64 * 1024
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, engine, cid, protocol, waiter=None, extra=None, server=None,
                 kernel_sock=None, fresh=False):
        if _recv is None:
            _native()
        # _FlowControlMixin.__init__ + BaseTransport.__init__, inlined (asyncio's default limits)
        self._extra = {} if extra is None else extra
        self._loop = loop
        self._protocol_paused = False
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._engine = engine
        self._cid = cid
        self._kernel_sock = kernel_sock       # adopted kernel socket kept to reserve a port
        self._addrs = None                    # None, raw struct mtcp_addr[2] bytes, or True (in _extra)
        self._protocol_connected = False
        self._protocol = protocol
        self._protocol_is_buffered = isinstance(protocol, protocols.BufferedProtocol)
        self._server = server
        self._buffer = None                  # deque of unaccepted tail (bytes / memoryviews), lazily
        self._buffer_size = 0
        self._conn_lost = 0
        self._closing = False
        self._eof = False                     # write_eof() called
        self._paused = False                  # pause_reading()
        self._reading = False                 # reading started (after connection_made)
        self._peer_eof = False                # PEER_CLOSED seen, not yet delivered
        self._eof_delivered = False
        self._read_scheduled = False
        self._released = False                # cid handed back to the engine
        self._empty_waiter = None
        self._engine_closed = False
        self._waiter = waiter
        # True: the engine's receive buffer is known to be empty (no READABLE since we drained it
        # or since the ACCEPT event that created this transport in the dispatch pass: fresh)
        self._rx_empty = fresh
        if server is not None:
            server._active_count += 1         # server._attach()
        # engine.register(cid, self), inlined
        engine._conns[cid] = self
        if engine._unowned:
            early = engine._unowned.pop(cid, None)
            if early is not None:
                peer_eof, err = early
                if peer_eof:
                    self._peer_eof = True
                if err:
                    loop.call_soon(self._on_error, err)
        loop.call_soon(self._connection_made)

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

    # -- extra info (lazy) -------------------------------------------------------------------
    def get_extra_info(self, name, default=None):
        if self._addrs is not True and name in _ADDR_KEYS:
            self._fill_extra()
        return self._extra.get(name, default)

    def _take_addrs(self):
        """Copy the raw addresses out of the engine while the cid is valid (before release)."""
        if self._addrs is None:
            eng = self._engine
            if eng.e is not None:
                raw = eng.getaddrs_raw(self._cid)
                if raw is not None:
                    self._addrs = raw

    def _fill_extra(self):
        self._take_addrs()
        raw = self._addrs
        if raw is None or raw is True:
            return
        local, remote = _raw_addr(raw, 0), _raw_addr(raw, 20)
        self._addrs = True
        extra = self._extra
        extra["sockname"] = local
        extra["peername"] = remote
        family = socket.AF_INET6 if len(local) == 4 else socket.AF_INET
        extra["socket"] = PseudoSocket(self._loop, self._engine, self._cid, family, local, remote)

    # -- protocol ---------------------------------------------------------------------------
    def set_protocol(self, protocol):
        self._protocol_is_buffered = isinstance(protocol, protocols.BufferedProtocol)
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

    # -- reading -----------------------------------------------------------------------------
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

    def _start_reading(self):
        self._reading = True
        if self._read_scheduled or self._conn_lost or self._closing or self._released:
            return
        # a READABLE/PEER_CLOSED event after this calls _read_ready in the dispatch pass; only
        # what is already there needs the next-iteration read (as asyncio's first select)
        if not self._peer_eof:
            if self._rx_empty:
                return
            e = self._engine.e
            if e is not None and _readable(e, self._cid) == 0:
                self._rx_empty = True
                return
        self._read_scheduled = True
        self._loop.call_soon(self._read_ready)

    def _schedule_read(self):
        if not self._read_scheduled and self._reading:
            self._read_scheduled = True
            self._loop.call_soon(self._read_ready)

    def _on_readable(self):          # engine event
        self._rx_empty = False
        if self._reading and not self._read_scheduled:
            self._read_ready()

    def _on_peer_closed(self):       # engine event: FIN received, all data before it readable
        self._peer_eof = True
        if self._reading and not self._read_scheduled:
            self._read_ready()

    def _read_ready(self):
        self._read_scheduled = False
        if self._conn_lost or self._closing or self._released:
            return
        if self._protocol_is_buffered:
            return self._read_ready__buffered()
        eng = self._engine
        cid = self._cid
        chunk = self.recv_chunk
        while not self._paused and not self._closing:
            if self._rx_empty:
                r = 0
            else:
                e = eng.e
                if e is None:
                    return
                r = _recv(e, cid, eng._rxbuf, chunk)
            if r <= 0:
                if r == 0:                      # nothing readable now
                    self._rx_empty = True
                    if self._peer_eof and not self._eof_delivered:
                        self._eof_delivered = True
                        self._read_ready__on_eof()
                elif r != -_errno.EBADF:
                    self._fatal_error(os_error(-r), "Fatal read error on mtcp transport")
                return
            if r < chunk:
                self._rx_empty = True           # drained (the engine only adds data in poll)
            data = eng._rxview[:r]
            if not eng._scheduled:              # the window may reopen: let the engine announce it
                eng._scheduled = True
                self._loop.call_soon(eng._run)
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
            if r < chunk and not self._peer_eof:
                return

    def _read_ready__buffered(self):
        eng = self._engine
        cid = self._cid
        self._rx_empty = False                  # this path asks the engine (mtcp_readable)
        while not self._paused and not self._closing:
            avail = eng.readable(cid)
            if avail <= 0:
                if avail < 0:
                    if avail != -_errno.EBADF:
                        self._fatal_error(os_error(-avail), "Fatal read error on mtcp transport")
                    return
                if self._peer_eof and not self._eof_delivered:
                    self._eof_delivered = True
                    self._read_ready__on_eof()
                return
            try:
                buf = self._protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            n = eng.recv_into(cid, buf)
            if n <= 0:
                if n < 0 and n != -_errno.EBADF:
                    self._fatal_error(os_error(-n), "Fatal read error on mtcp transport")
                return
            try:
                self._protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return

    def _read_ready__on_eof(self):
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

    # -- writing -----------------------------------------------------------------------------
    def write(self, data):
        cls = data.__class__
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if cls is not bytes and cls is not bytearray:
            # lengths are nbytes for any format/shape; a non-contiguous view raises TypeError
            # ("casts are restricted to C-contiguous views", as uvloop) instead of a partial write
            data = memoryview(data).cast("B")
            cls = memoryview
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            # engine.send(cid, data), inlined: one mtcp_send (bytes go to cffi as they are)
            eng = self._engine
            e = eng.e
            if e is None:
                n = -_errno.EBADF
            else:
                ln = len(data)
                n = _send(e, self._cid, data if cls is bytes else _from_buffer(data),
                          ln if ln <= _MAX_IO else _MAX_IO)
                if not eng._scheduled:
                    eng._scheduled = True
                    self._loop.call_soon(eng._run)
            if n < 0:
                self._fatal_error(os_error(-n), "Fatal write error on mtcp transport")
                return
            if n == len(data):
                return
            if n and cls is bytes:
                data = memoryview(data)[n:]     # immutable: keep a view, no copy
            else:
                data = bytes(memoryview(data)[n:]) if n else bytes(data)
        elif cls is not bytes:
            data = bytes(data)                  # the caller may reuse a mutable buffer
        if self._buffer is None:
            self._buffer = collections.deque()
        self._buffer.append(data)
        self._buffer_size += len(data)
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

    def _on_writable(self):          # engine event: send space available again
        if self._conn_lost or not self._buffer or self._released:
            return
        buf = self._buffer
        send = self._engine.send
        while buf:
            item = buf[0]
            n = send(self._cid, item)
            if n < 0:
                buf.clear()
                self._buffer_size = 0
                exc = os_error(-n)
                self._fatal_error(exc, "Fatal write error on mtcp transport")
                if self._empty_waiter is not None:
                    self._empty_waiter.set_exception(exc)
                return
            self._buffer_size -= n
            if n == len(item):
                buf.popleft()
                continue
            if n:
                buf[0] = (item if item.__class__ is memoryview else memoryview(item))[n:]
            break
        self._maybe_resume_protocol()  # may append to the buffer
        if not self._buffer:
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._engine.shutdown(self._cid)

    def get_write_buffer_size(self):
        return self._buffer_size

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._engine.shutdown(self._cid)

    def can_write_eof(self):
        return True

    # -- closing -----------------------------------------------------------------------------
    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        # as asyncio/uvloop: the socket is closed at once (what the engine holds still goes out,
        # then FIN; RST only with unread received data or SO_LINGER(1, 0)); the unsent
        # Python-side buffer is dropped
        self._force_close(None, abort=True)

    def _on_error(self, err):        # engine event: connection died (RST, timeout...)
        if self._conn_lost:
            return
        exc = os_error(err)
        # a reset while the application still reads or writes is a fatal error, as asyncio has it
        self._fatal_error(exc, "Fatal error on mtcp transport")

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self, "protocol": self._protocol})
        self._force_close(exc, abort=not isinstance(exc, OSError))

    def _force_close(self, exc, abort=False):
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
        if not self._closing:
            self._closing = True
        self._conn_lost += 1
        if abort or exc is not None:
            self._release()           # mtcp_close: the kernel's close(), not a forced RST
        self._loop.call_soon(self._call_connection_lost, exc)

    def _release(self, abort=False):
        if self._released:
            return
        self._released = True
        eng = self._engine
        if self._addrs is None and eng.e is not None:
            # get_extra_info keeps working after close, as asyncio's: copy the raw addresses
            self._addrs = eng.getaddrs_raw(self._cid)
        eng.release(self._cid, abort=abort)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            if not self._released:          # _release(abort=False), inlined
                self._released = True
                eng = self._engine
                cid = self._cid
                eng._conns.pop(cid, None)   # eng.release(cid), inlined
                if eng._unowned:
                    eng._unowned.pop(cid, None)
                e = eng.e
                if e is not None:
                    if self._addrs is None and _getaddrs(e, cid, eng._ab, eng._ab1) >= 0:
                        self._addrs = eng._abuf[:]     # raw addresses for a later get_extra_info
                    _close(e, cid)
                    if not eng._scheduled:
                        eng._scheduled = True
                        self._loop.call_soon(eng._run)
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

    def __del__(self, _warn=None):
        # The engine's table holds every live transport, so this only runs for transports whose
        # engine went away with the loop; never touch the engine from here (GC may run in any thread).
        if not getattr(self, "_released", True):
            import warnings
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    # -- sendfile fallback support (asyncio's _SendfileFallbackProtocol uses these) ----------
    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self._buffer:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    # -- extras ------------------------------------------------------------------------------
    def conn_info(self):
        """The engine's view of this connection (state, cwnd, srtt, ...) as a dict."""
        return self._engine.conn_info(self._cid)


def _set_result_unless_cancelled(fut, result):
    if fut.cancelled():
        return
    fut.set_result(result)
