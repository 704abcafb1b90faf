"""The netns testbed and the real backends under a raw engine (no asyncio): the kernel peer pings
the stack over TAP, AF_PACKET and AF_XDP, IPv4 and IPv6.

Needs root (network namespaces, TAP, AF_PACKET, BPF). Skips cleanly otherwise, unless
MTCP_REQUIRE_NETNS=1 (CI), which turns the skip into a failure. All traffic stays inside the
namespaces the testbed creates; every test tears its testbed down.
"""
from __future__ import annotations

import os
import select
import threading
import time

import pytest

from tests.helpers import raw_engine_config

from mtcp_loop.tools import testbed as tbmod

REQUIRE = os.environ.get("MTCP_REQUIRE_NETNS") == "1"


def _need_root():
    why = None
    if os.geteuid() != 0:
        why = "needs root (network namespaces)"
    elif not os.path.exists("/dev/net/tun"):
        why = "needs /dev/net/tun"
    else:
        try:
            import pyroute2  # noqa: F401
        except ImportError:
            why = "needs pyroute2"
    if why:
        if REQUIRE:
            pytest.fail(f"MTCP_REQUIRE_NETNS=1 but the testbed cannot run: {why}")
        pytest.skip(why)


pytestmark = pytest.mark.netns
PREFIX = f"mtcpt{os.getpid() % 100000}"


def _native():
    try:
        from mtcp_loop._native import ffi, lib
    except ImportError as exc:
        if REQUIRE:
            pytest.fail(f"native extension missing: {exc}")
        pytest.skip(f"native extension not built: {exc}")
    return ffi, lib


class RawEngine:
    """An engine on a link, polled by a thread: enough to answer ARP/NDP and ping."""

    def __init__(self, ffi, lib, link, info):
        self.ffi, self.lib, self.link = ffi, lib, link
        cfg = raw_engine_config(ffi, lib, info)
        err = ffi.new("char[256]")
        self.engine = lib.mtcp_engine_new(cfg, link, err, 256)
        if self.engine == ffi.NULL:
            raise RuntimeError(ffi.string(err).decode())
        self.stop = threading.Event()
        self.polls = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        lib, ffi = self.lib, self.ffi
        ev = ffi.new("struct mtcp_event[64]")
        fd = lib.mtcp_engine_fd(self.engine)
        while not self.stop.is_set():
            now = int(time.monotonic() * 1e6)
            lib.mtcp_engine_poll(self.engine, now)
            while lib.mtcp_engine_events(self.engine, ev, 64):
                pass
            self.polls += 1
            dl = lib.mtcp_engine_next_deadline(self.engine)
            timeout = 0.05 if dl < 0 else max(0.0, min(0.05, (dl - now) / 1e6))
            if fd >= 0:
                select.select([fd], [], [], timeout)
            else:
                time.sleep(timeout)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.lib.mtcp_engine_free(self.engine)


def _open_link(tb, kind, ffi, lib, info):
    err = ffi.new("char[256]")
    with tb.stack_netns():
        if kind == "tap":
            link = lib.mtcp_tap_open(info["stack_if"].encode(), 0, 1, 0, err, 256)
        elif kind == "packet":
            link = lib.mtcp_packet_open(info["stack_if"].encode(), 0, 1, 0, err, 256)
        else:
            link = lib.mtcp_xdp_open(info["stack_if"].encode(), 0, 0, err, 256)
    if link == ffi.NULL:
        raise AssertionError(f"{kind} open failed: {ffi.string(err).decode()}")
    return link


def test_up_status_down_leaves_nothing():
    _need_root()
    from pyroute2 import netns
    tb = tbmod.Testbed(prefix=PREFIX)
    for kind in tbmod.KINDS:
        with tb.running(kind) as info:
            st = tb.status()
            assert st["kind"] == kind
            live = st["live"]
            peer = live[f"{info['peer_ns']}/{info['peer_if']}"]
            assert "198.18.0.1/24" in peer["addrs"] and "2001:db8::1/64" in peer["addrs"]
            if kind != "tap":
                stack = live[f"{info['stack_ns']}/{info['stack_if']}"]
                assert stack["addrs"] == []          # the kernel has no address on the stack's side
        assert tb.status() is None
        assert not any(n.startswith(PREFIX) for n in netns.listnetns())
    with pytest.raises(ValueError):
        tb.up("nope")


def test_multi_queue_veth():
    _need_root()
    from pyroute2 import NetNS
    tb = tbmod.Testbed(prefix=PREFIX, nqueues=4)
    with tb.running("xdp") as info:
        assert info["nqueues"] == 4
        for ns_name, ifname in ((info["stack_ns"], info["stack_if"]), (info["peer_ns"], info["peer_if"])):
            with NetNS(ns_name) as ns:
                link = ns.get_links(ns.link_lookup(ifname=ifname)[0])[0]
                assert link.get_attr("IFLA_NUM_RX_QUEUES") == 4


def test_teardown_on_failure():
    _need_root()
    from pyroute2 import netns
    tb = tbmod.Testbed(prefix=PREFIX)
    with pytest.raises(RuntimeError):
        with tb.running("packet"):
            assert tb.peer_ns in netns.listnetns()
            raise RuntimeError("boom")
    assert tb.peer_ns not in netns.listnetns() and tb.stack_ns not in netns.listnetns()


def test_peer_ping_without_responder_fails():
    """peer_ping must be able to fail: nobody answers 198.18.0.2 when no engine runs."""
    _need_root()
    tb = tbmod.Testbed(prefix=PREFIX)
    with tb.running("packet") as info:
        assert tb.peer_ping(info["stack_v4"], count=1, timeout=0.5) == 0
        assert tb.peer_ping(info["peer_v4"], count=2, timeout=1) == 2    # the kernel answers itself


def test_cli_roundtrip(capsys):
    _need_root()
    from mtcp_loop.tools.cli import main
    assert main(["testbed", "up", "--kind", "packet", "--prefix", PREFIX, "--json"]) == 0
    try:
        assert main(["testbed", "status", "--prefix", PREFIX]) == 0
        assert "packet" in capsys.readouterr().out
    finally:
        assert main(["testbed", "down", "--prefix", PREFIX]) == 0
    assert main(["testbed", "status", "--prefix", PREFIX]) == 0
    assert "down" in capsys.readouterr().out


@pytest.mark.parametrize("kind", tbmod.KINDS)
def test_ping_raw_engine(kind):
    _need_root()
    ffi, lib = _native()
    tb = tbmod.Testbed(prefix=PREFIX)
    with tb.running(kind) as info:
        link = _open_link(tb, kind, ffi, lib, info)
        try:
            assert tb.wait_operstate_up(5)
            with RawEngine(ffi, lib, link, info) as eng:
                got4 = tb.peer_ping(info["stack_v4"], count=3)
                got6 = tb.peer_ping(info["stack_v6"], count=3)
                big4 = tb.peer_ping(info["stack_v4"], count=1, size=1400)
                assert eng.polls > 0
            assert (got4, got6, big4) == (3, 3, 1)
        finally:
            lib.mtcp_link_close(link)


def test_bench_rings_reports_every_backend():
    _need_root()
    _native()
    res = tbmod.bench_rings(seconds=0.2, prefix=PREFIX)
    for name in ("sim", "loopback"):
        assert res[name]["rx_fps"] > 0, res
    for kind in tbmod.KINDS:
        assert "error" not in res[kind], res
        assert res[kind]["tx"] > 0 and res[kind]["rx"] > 0, res
