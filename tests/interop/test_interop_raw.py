"""Raw-engine interop (no asyncio): a kernel TCP client in the testbed's peer namespace talks to
an echo server written directly against the C API, over each real backend, clean and through
the impairment wrapper. This checks the io layer (rings, vnet headers / partial checksums / TSO
frames, impairment) against Linux TCP independently of the event loop (tests/interop/test_interop.py
covers MTCPLoop itself).

Needs root; skips cleanly otherwise unless MTCP_REQUIRE_NETNS=1 (then it fails).
"""
from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import raw_engine_config

from mtcp_loop.tools import testbed as tbmod

REQUIRE = os.environ.get("MTCP_REQUIRE_NETNS") == "1"
PREFIX = f"mtcpr{os.getpid() % 100000}"
PORT = 7100
pytestmark = pytest.mark.netns


def _need():
    why = None
    if os.geteuid() != 0:
        why = "needs root (network namespaces)"
    else:
        try:
            import pyroute2  # noqa: F401
            from mtcp_loop._native import lib  # noqa: F401
        except ImportError as exc:
            why = f"missing: {exc}"
    if why:
        if REQUIRE:
            pytest.fail(f"MTCP_REQUIRE_NETNS=1 but cannot run: {why}")
        pytest.skip(why)
    from mtcp_loop._native import ffi, lib
    return ffi, lib


# The kernel-side client: connect, send n pattern bytes while reading the echo, half-close,
# read to EOF, print "<sent> <received> <sha256 of received>".
CLIENT = r"""
import hashlib, os, selectors, socket, sys
host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import random
blk = random.Random(seed).randbytes(1 << 16)
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(30)
s.connect((host, port))
s.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
sent = got = 0
h = hashlib.sha256()
wdone = False
import time
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    for key, ev in sel.select(1.0):
        if ev & selectors.EVENT_WRITE and not wdone:
            off = sent % len(blk)
            chunk = blk[off:off + min(len(blk) - off, n - sent)]
            try:
                k = s.send(chunk)
            except BlockingIOError:
                k = 0
            sent += k
            if sent >= n:
                s.shutdown(socket.SHUT_WR)
                wdone = True
                sel.modify(s, selectors.EVENT_READ)
        if ev & selectors.EVENT_READ:
            try:
                d = s.recv(1 << 16)
            except BlockingIOError:
                continue
            if not d:
                print(sent, got, h.hexdigest())
                sys.exit(0)
            got += len(d)
            h.update(d)
print(sent, got, "timeout")
sys.exit(1)
"""


def pattern_sha(n: int, seed: int) -> str:
    import random
    blk = random.Random(seed).randbytes(1 << 16)
    h = hashlib.sha256()
    left = n
    while left:
        k = min(left, len(blk))
        h.update(blk[:k])
        left -= k
    return h.hexdigest()


class EchoEngine:
    """An engine with an echo listener, polled by a thread."""

    def __init__(self, ffi, lib, link, info):
        self.ffi, self.lib = ffi, lib
        cfg = raw_engine_config(ffi, lib, info)
        err = ffi.new("char[256]")
        self.e = lib.mtcp_engine_new(cfg, link, err, 256)
        assert self.e != ffi.NULL, ffi.string(err).decode()
        for fam in (lib.MTCP_AF_INET, lib.MTCP_AF_INET6):
            a = ffi.new("struct mtcp_addr *")
            a.family = fam
            a.port = PORT
            assert lib.mtcp_listen(self.e, a, 64) > 0
        self.pending = {}
        self.peer_closed = set()
        self.errors = []
        self.stop = threading.Event()
        self.buf = ffi.new("uint8_t[]", 1 << 16)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _flush(self, cid):
        lib, ffi = self.lib, self.ffi
        data = self.pending.get(cid)
        while data:
            k = lib.mtcp_send(self.e, cid, ffi.from_buffer(data), min(len(data), 1 << 20))
            if k <= 0:
                break
            del data[:k]
        if not data and cid in self.peer_closed:
            lib.mtcp_shutdown(self.e, cid)
            self.peer_closed.discard(cid)

    def _run(self):
        lib, ffi = self.lib, self.ffi
        ev = ffi.new("struct mtcp_event[128]")
        fd = lib.mtcp_engine_fd(self.e)
        while not self.stop.is_set():
            now = int(time.monotonic() * 1e6)
            lib.mtcp_engine_poll(self.e, now)
            while True:
                n = lib.mtcp_engine_events(self.e, ev, 128)
                if not n:
                    break
                for i in range(n):
                    t, cid = ev[i].type, ev[i].cid
                    if t == lib.MTCP_EV_ACCEPT:
                        self.pending[cid] = bytearray()
                    elif t == lib.MTCP_EV_READABLE:
                        while True:
                            k = lib.mtcp_recv(self.e, cid, self.buf, 1 << 16)
                            if k <= 0:
                                break
                            self.pending.setdefault(cid, bytearray()).extend(ffi.buffer(self.buf, k))
                        self._flush(cid)
                    elif t == lib.MTCP_EV_WRITABLE:
                        self._flush(cid)
                    elif t == lib.MTCP_EV_PEER_CLOSED:
                        self.peer_closed.add(cid)
                        self._flush(cid)
                    elif t in (lib.MTCP_EV_ERROR, lib.MTCP_EV_CLOSED):
                        if t == lib.MTCP_EV_ERROR:
                            self.errors.append(ev[i].err)
                        self.pending.pop(cid, None)
                        lib.mtcp_close(self.e, cid)
            lib.mtcp_engine_poll(self.e, int(time.monotonic() * 1e6))
            dl = lib.mtcp_engine_next_deadline(self.e)
            now = int(time.monotonic() * 1e6)
            timeout = 0.02 if dl < 0 else max(0.0, min(0.02, (dl - now) / 1e6))
            select.select([fd], [], [], timeout)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.lib.mtcp_engine_free(self.e)


def _open(tb, kind, ffi, lib, info, impair):
    err = ffi.new("char[256]")
    with tb.stack_netns():
        if kind == "tap":
            link = lib.mtcp_tap_open(info["stack_if"].encode(), 0, 1, 0, err, 256)
        elif kind == "packet":
            link = lib.mtcp_packet_open(info["stack_if"].encode(), 0, 1, 0, err, 256)
        else:
            link = lib.mtcp_xdp_open(info["stack_if"].encode(), 0, 0, err, 256)
    assert link != ffi.NULL, ffi.string(err).decode()
    if impair:
        cfg = ffi.new("struct mtcp_impair *")
        assert lib.mtcp_impair_parse(impair.encode(), cfg, err, 256) == 0, ffi.string(err).decode()
        w = lib.mtcp_impair_wrap(link, cfg, err, 256)
        assert w != ffi.NULL, ffi.string(err).decode()
        link = w
    return link


CASES = [(k, imp) for k in tbmod.KINDS for imp in
         ("", "loss=2%,reorder=10%,duplicate=1%,corrupt=0.5%,delay=1ms,jitter=200us,seed=3")]


@pytest.mark.parametrize("kind,impair", CASES, ids=[f"{k}-{'impaired' if i else 'clean'}" for k, i in CASES])
def test_kernel_client_echo(kind, impair):
    ffi, lib = _need()
    nbytes = (4 if impair else 16) << 20
    tb = tbmod.Testbed(prefix=PREFIX)
    with tb.running(kind) as info:
        link = _open(tb, kind, ffi, lib, info, impair)
        try:
            assert tb.wait_operstate_up(5)
            with EchoEngine(ffi, lib, link, info) as eng:
                for host, seed in ((info["stack_v4"], 1), (info["stack_v6"], 2)):
                    t0 = time.monotonic()
                    r = tb.peer_run([sys.executable, "-c", CLIENT, host, str(PORT), str(nbytes), str(seed)],
                                    timeout=180)
                    el = time.monotonic() - t0
                    out = r.stdout.split()
                    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
                    assert int(out[0]) == nbytes and int(out[1]) == nbytes, r.stdout
                    assert out[2] == pattern_sha(nbytes, seed)
                    print(f"{kind} {host} impair={bool(impair)}: {2 * nbytes / el / 1e6:.1f} MB/s echoed")
                assert eng.errors == []
            if impair:
                cnt = ffi.new("uint64_t[5]")
                lib.mtcp_impair_counters(link, cnt)
                assert cnt[0] > 0 and cnt[3] > 0        # frames were really dropped and corrupted
        finally:
            lib.mtcp_link_close(link)
