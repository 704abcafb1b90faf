"""Sockets the application holds itself, on the user-space stack: one mechanism for every sock_*.

asyncio code that manages its own sockets instead of calling create_server/create_connection
(anyio's listeners: ``sock_accept`` + ``connect_accepted_socket``; aiohttp's client:
``sock_connect`` + ``create_connection(sock=...)``; plain ``sock_sendall``/``sock_recv`` code)
reaches the stack through one object, :class:`StackSocket`: a connected stack connection (cid)
in socket clothing.

* ``loop.sock_accept(listening_kernel_socket)`` on a socket bound to a stack-owned address
  opens a *shadow* stack listener at the same address (:class:`ShadowListener`) and returns,
  whichever arrives first, a kernel connection (a real socket, as before) or a StackSocket.
* ``loop.sock_connect(kernel_socket, stack_address)`` opens the connection on the stack and
  attaches a StackSocket to the kernel socket (``loop._mtcp_adopted``).
* Every ``loop.sock_*`` method, ``create_connection(sock=...)`` and
  ``connect_accepted_socket(sock=...)`` accept a StackSocket or a kernel socket with one
  attached: I/O goes to the cid (an internal MTCPTransport + buffering protocol for sock_* I/O;
  a transport is created straight on the cid for create_connection/connect_accepted_socket).

A StackSocket answers what such libraries ask of an accepted socket: getsockname/getpeername,
setsockopt/getsockopt (TCP_NODELAY, keepalive, buffers, SO_LINGER; PseudoSocket's table),
non-blocking send/recv/recv_into/shutdown/close; ``fileno()`` is -1 (no kernel descriptor:
add_reader/add_writer on it raise, as on uvloop's PseudoSocket).
"""
from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket

from .transports import MTCPTransport, PseudoSocket, os_error

logger = logging.getLogger("mtcp_loop")

_RECV_HIGH = 256 * 1024      # sock_recv buffering: pause reading above this many bytes


class _SockProtocol(asyncio.Protocol):
    """Buffers what arrives on a StackSocket's internal transport for sock_recv/recv."""

    def __init__(self, loop):
        self._loop = loop
        self.buf = bytearray()
        self.eof = False
        self.exc = None
        self.lost = False
        self.tr = None
        self._waiters = []          # futures woken on any change (data, eof, drain, loss)
        self._paused = False

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def wait(self):
        fut = self._loop.create_future()
        self._waiters.append(fut)
        return fut

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.buf += data
        if len(self.buf) > _RECV_HIGH and not self._paused:
            self._paused = True
            self.tr.pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return True                 # keep the write side open (half-close, as a socket)

    def pause_writing(self):
        pass

    def resume_writing(self):
        self._wake()

    def connection_lost(self, exc):
        self.lost = True
        self.exc = exc
        self._wake()

    def take(self, n):
        data = bytes(self.buf[:n])
        del self.buf[:n]
        if self._paused and len(self.buf) <= _RECV_HIGH // 2:
            self._paused = False
            self.tr.resume_reading()
        return data


class StackSocket(PseudoSocket):
    """A connected user-space stack connection (cid) that behaves as a non-blocking socket."""

    def __init__(self, loop, engine, cid, family, sockname, peername):
        super().__init__(loop, engine, cid, family, sockname, peername)
        self._tr = None           # internal transport (sock_* I/O), created on first use
        self._proto = None
        self._owned = False       # handed to a transport of the application
        self._closed = False
        engine._unowned.setdefault(cid, [False, 0])   # PEER_CLOSED/ERROR before a transport

    @classmethod
    def from_cid(cls, loop, engine, cid):
        local, remote = engine.getaddrs(cid)
        family = socket.AF_INET6 if len(local) == 4 else socket.AF_INET
        return cls(loop, engine, cid, family, local, remote)

    def __repr__(self):
        return (f"<mtcp_loop.StackSocket family={self.family!r} laddr={self._sockname!r} "
                f"raddr={self._peername!r}{' [closed]' if self._closed else ''}>")

    # -- ownership ------------------------------------------------------------------------
    def _take_cid(self):
        """Hand the cid to a transport of the application (create_connection /
        connect_accepted_socket); returns (cid, internal transport or None)."""
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor: the socket is closed")
        if self._owned:
            raise RuntimeError(f"{self!r} is already used by a transport")
        self._owned = True
        return self._cid, self._tr

    def _io(self):
        if self._closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self._owned:
            raise RuntimeError(f"{self!r} is used by a transport: use the transport")
        if self._tr is None:
            self._proto = _SockProtocol(self._loop)
            self._tr = MTCPTransport(self._loop, self._engine, self._cid, self._proto)
            self._tr.set_write_buffer_limits(high=0)     # resume_writing once fully handed over
        return self._tr, self._proto

    # -- non-blocking socket methods ------------------------------------------------------------
    def _check_lost(self, p, writing=False):
        if p.exc is not None:
            raise p.exc
        if p.lost or (writing and self._tr.is_closing()):
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def recv(self, n, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "StackSocket.recv: flags are not supported")
        if n < 0:
            raise ValueError("negative buffersize in recv")
        tr, p = self._io()
        if p.buf:
            return p.take(n)
        if p.eof:
            return b""
        if p.exc is not None:
            raise p.exc
        if p.lost:
            return b""
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    def recv_into(self, buffer, nbytes=0, flags=0):
        mv = memoryview(buffer).cast("B")
        n = nbytes or mv.nbytes
        data = self.recv(n, flags)
        mv[:len(data)] = data
        return len(data)

    def send(self, data, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "StackSocket.send: flags are not supported")
        tr, p = self._io()
        self._check_lost(p, writing=True)
        if tr.get_write_buffer_size():
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        mv = memoryview(data).cast("B")
        tr.write(mv)
        return mv.nbytes

    def sendall(self, data, flags=0):
        return self.send(data, flags) and None

    def shutdown(self, how):
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            tr, p = self._io()
            if not tr.is_closing():
                tr.write_eof()

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._owned:
            return                  # the transport owns the connection
        if self._tr is not None:
            self._tr.close()
            return
        eng = self._engine
        if eng.e is not None:
            eng.release(self._cid)  # FIN (RST if received data is unread), as close()

    def fileno(self):
        return -1

    # -- the coroutines behind loop.sock_* ------------------------------------------------------
    async def a_recv(self, n):
        while True:
            try:
                return self.recv(n)
            except BlockingIOError:
                await self._proto.wait()

    async def a_recv_into(self, buf):
        while True:
            try:
                return self.recv_into(buf)
            except BlockingIOError:
                await self._proto.wait()

    async def a_sendall(self, data):
        tr, p = self._io()
        self._check_lost(p, writing=True)
        mv = memoryview(data).cast("B")
        if mv.nbytes:
            tr.write(mv)
        while tr.get_write_buffer_size():
            self._check_lost(p, writing=True)
            await p.wait()
        self._check_lost(p)


class ShadowListener:
    """A stack listener at the address of a kernel listening socket the application accepts on
    itself (loop.sock_accept). Duck-types the part of MTCPServer the engine dispatch uses
    (``_serving`` False -> ``_on_accept(cid)`` queues the connection)."""

    _serving = False

    def __init__(self, loop, engine, sock, lid):
        self._loop = loop
        self._engine = engine
        self.sock = sock
        self.lid = lid
        self.addr = sock.getsockname()
        self._pending = collections.deque()
        self._waiters = collections.deque()
        self.closed = False
        self.kernel_warned = False
        engine._listeners[lid] = self
        self._timer = loop.call_later(0.05, self._watch)

    def _on_accept(self, cid):
        self._engine._unowned[cid] = [False, 0]
        self._pending.append(cid)
        self._wake()

    def _wake(self):
        while self._pending and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(("stack", self._pending.popleft()))

    def pop(self):
        return self._pending.popleft() if self._pending else None

    def push_front(self, cid):
        self._pending.appendleft(cid)

    def check(self):
        """The application closed the kernel socket: the stack listener goes with it."""
        if not self.closed and self.sock.fileno() == -1:
            self.close()
        return not self.closed

    def _watch(self):
        self._timer = None
        if self.check():
            self._timer = self._loop.call_later(0.05, self._watch)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        eng = self._engine
        eng._listeners.pop(self.lid, None)
        if eng.e is not None:
            eng.release(self.lid)
            while self._pending:
                eng.release(self._pending.popleft(), abort=True)   # unaccepted: RST, as the kernel
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(OSError(errno.EBADF, os.strerror(errno.EBADF)))
        self._waiters.clear()


# --------------------------------------------------------------------------------------------
# A kernel socket connected by sock_connect to a stack server: decided at first use
# --------------------------------------------------------------------------------------------
# sock_connect(s, address) to a stack server whose kernel listener is "gated" (an MTCPServer's
# kernel mirror or create_server(sock=) socket) connects s for real over kernel TCP, so s is a
# connected socket for everything (getpeername, s.send/recv, selectors). The server side holds
# that kernel connection back (KernelGate) until the first use decides:
#   * the loop's create_connection(sock=s) / sock_* on s: "stack" - the connection is opened on
#     the stack (same local port as s when free) and the held kernel connection carries nothing;
#     it is closed when s is (and closing s closes the stack connection too, as closing a socket);
#   * bytes sent on s directly (or s closed first): "kernel" - the held connection is served as
#     a kernel arrival and the loop's sock_* on s use the kernel socket.
# The decision is made once, under a process-wide lock (servers may run on loops in other threads).
import threading as _threading

_lock = _threading.Lock()
_gated = {}      # (family, port) -> number of gated kernel listeners
_pairs = {}      # (family, client ip, client port, server port) -> _Pair


class _Pair:
    __slots__ = ("state", "on_client_close", "key")

    def __init__(self, key):
        self.key = key
        self.state = "undecided"
        self.on_client_close = None     # stack side: close the StackSocket when s closes

    def decide(self, want):
        with _lock:
            if self.state == "undecided":
                self.state = want
            return self.state


def gate_add(family, port, n=1):
    with _lock:
        k = (int(family), port)
        _gated[k] = _gated.get(k, 0) + n
        if _gated[k] <= 0:
            del _gated[k]


def is_gated(family, port):
    return (int(family), port) in _gated


def pair_register(family, ip, port, dport):
    key = (int(family), ip, port, dport)
    pair = _Pair(key)
    with _lock:
        _pairs[key] = pair
    return pair


def pair_forget(pair):
    with _lock:
        if _pairs.get(pair.key) is pair:
            del _pairs[pair.key]


def pair_dropped(pair):
    """The client's socket is gone. Undecided: forgotten (the held connection, if any, is served
    as the kernel connection it is). Decided "stack": kept until the gate meets the held
    connection (it may not have been accepted yet); a later pair on the same port replaces it."""
    with _lock:
        if pair.state != "stack" and _pairs.get(pair.key) is pair:
            del _pairs[pair.key]


def pair_lookup(family, ip, port, dport):
    with _lock:
        return _pairs.get((int(family), ip, port, dport))


class KernelGate(asyncio.Protocol):
    """Protocol of every kernel connection a gated listener accepts: connections from a socket of
    this process that sock_connect attached to the stack are held back (see above); any other
    is served at once by the server's protocol (TLS layered here when the server has ssl)."""

    def __init__(self, loop, factory, ssl_context=None, ssl_handshake_timeout=None,
                 ssl_shutdown_timeout=None):
        self._loop = loop
        self._factory = factory
        self._ssl = ssl_context
        self._hs = ssl_handshake_timeout
        self._sd = ssl_shutdown_timeout
        self._pair = None
        self._buf = bytearray()
        self._tr = None

    def connection_made(self, tr):
        self._tr = tr
        pair = None
        if _pairs:
            peer = tr.get_extra_info("peername")
            local = tr.get_extra_info("sockname")
            sock = tr.get_extra_info("socket")
            if peer and local and sock is not None:
                pair = pair_lookup(sock.family, peer[0], peer[1], local[1])
        if pair is None or pair.state == "kernel":
            self._serve()
            return
        self._pair = pair                    # held back until the client's first use decides

    def data_received(self, data):
        if self._pair is None:
            return
        if self._pair.decide("kernel") == "kernel":
            self._buf += data
            self._serve()
        # "stack": bytes written on s after the decision are not part of the connection

    def eof_received(self):
        pair = self._pair
        if pair is None:
            return None
        if pair.decide("kernel") == "kernel":
            self._serve(eof=True)
            return True
        # "stack": the client closed s; the stack connection goes with it
        self._pair = None
        pair_forget(pair)
        cb = pair.on_client_close
        if cb is not None:
            cb()
        self._tr.close()
        return None

    def connection_lost(self, exc):
        if self._pair is not None:
            pair_forget(self._pair)
            self._pair = None

    def _serve(self, eof=False):
        pair, self._pair = self._pair, None
        if pair is not None:
            pair_forget(pair)
        tr = self._tr
        try:
            proto = app = self._factory()
            if self._ssl is not None:
                from asyncio import sslproto
                waiter = self._loop.create_future()
                proto = sslproto.SSLProtocol(self._loop, app, self._ssl, waiter, server_side=True,
                                             ssl_handshake_timeout=self._hs,
                                             ssl_shutdown_timeout=self._sd)
                waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            tr.close()
            if self._loop.get_debug():
                self._loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc})
            return
        tr.set_protocol(proto)
        proto.connection_made(tr)
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            if isinstance(proto, asyncio.BufferedProtocol):
                asyncio.protocols._feed_data_to_buffered_proto(proto, data)
            else:
                proto.data_received(data)
        if eof and not proto.eof_received():
            tr.close()


class PendingAdoption:
    """Client side: kernel socket s, connected over kernel TCP to a gated stack server, whose
    first use through the loop decides where its connection lives."""

    __slots__ = ("pair", "family", "host", "port", "local", "fin")

    def __init__(self, pair, family, host, port, local):
        self.pair = pair
        self.family = family
        self.host = host
        self.port = port
        self.local = local
        self.fin = None
