"""Fault rules (mtcp_fault_add) on a real ring against Linux TCP: a kernel client in the testbed's
peer namespace talks to the raw echo engine of tests/interop/test_interop_raw.py over TAP, through an
impairment wrapper that only runs scripted rules, on both sides of the wrapper (frames the
engine sends and frames it receives). Needs root; skips cleanly otherwise unless
MTCP_REQUIRE_NETNS=1 (then it fails)."""
from __future__ import annotations

import sys
import time

import pytest

from tests.interop import test_interop_raw as raw
from mtcp_loop.tools import testbed as tbmod

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def _rule(ffi, lib, action, dirs, *, src_port=0, dst_port=0, mask=0, value=0, data=False,
          skip=0, count=0):
    f = ffi.new("struct mtcp_fault *")
    f.action = action
    f.dirs = dirs
    f.flags = lib.MTCP_FAULT_DATA if data else 0
    f.tcp_mask, f.tcp_value = mask, value
    f.a.port, f.b.port = src_port, dst_port
    f.skip, f.count = skip, count
    return f


def test_kernel_client_through_scripted_faults():
    ffi, lib = raw._need()
    nbytes = 2 << 20
    tb = tbmod.Testbed(prefix=raw.PREFIX + "f")
    with tb.running("tap") as info:
        link = raw._open(tb, "tap", ffi, lib, info, "")
        err = ffi.new("char[256]")
        zero = ffi.new("struct mtcp_impair *")
        w = lib.mtcp_impair_wrap(link, zero, err, 256)
        assert w != ffi.NULL, ffi.string(err).decode()
        link = w
        try:
            assert tb.wait_operstate_up(5)
            tx, rx = lib.MTCP_FAULT_DIR_TX, lib.MTCP_FAULT_DIR_RX
            # our first SYN-ACK is lost: the kernel retransmits its SYN (1 s) and gets a new one
            synack = lib.mtcp_fault_add(link, _rule(ffi, lib, lib.MTCP_FAULT_DROP, tx,
                                                    src_port=raw.PORT, mask=0x17, value=0x12,
                                                    count=1))
            # the kernel's 4th and 5th data segments never arrive (RX side)
            lost = lib.mtcp_fault_add(link, _rule(ffi, lib, lib.MTCP_FAULT_DROP, rx,
                                                  dst_port=raw.PORT, data=True, skip=3, count=2))
            # our 6th data segment is corrupted (the kernel drops it: bad checksum) and one
            # echoed segment is delayed by 50 ms
            bad = lib.mtcp_fault_add(link, _rule(ffi, lib, lib.MTCP_FAULT_CORRUPT, tx,
                                                 src_port=raw.PORT, data=True, skip=5, count=1))
            slow = _rule(ffi, lib, lib.MTCP_FAULT_DELAY, tx, src_port=raw.PORT, data=True,
                         skip=10, count=1)
            slow.delay_us = 50000
            slow_id = lib.mtcp_fault_add(link, slow)
            assert min(synack, lost, bad, slow_id) >= 0
            with raw.EchoEngine(ffi, lib, link, info) as eng:
                t0 = time.monotonic()
                r = tb.peer_run([sys.executable, "-c", raw.CLIENT, info["stack_v4"], str(raw.PORT),
                                 str(nbytes), "9"], timeout=100)
                took = time.monotonic() - t0
                out = r.stdout.split()
                assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
                assert int(out[0]) == nbytes and int(out[1]) == nbytes, r.stdout
                assert out[2] == raw.pattern_sha(nbytes, 9)
                assert eng.errors == []
            st = ffi.new("uint64_t[2]")
            acted = {}
            for name, rid in (("synack", synack), ("lost", lost), ("bad", bad), ("slow", slow_id)):
                assert lib.mtcp_fault_stats(link, rid, st) == 0
                acted[name] = (int(st[0]), int(st[1]))
            print(f"tap, kernel client, {nbytes >> 20} MiB echoed in {took:.2f} s; rules "
                  f"(matched, acted): {acted}")
            assert acted["synack"][1] == 1 and acted["synack"][0] >= 2
            assert acted["lost"][1] == 2
            assert acted["bad"][1] == 1
            assert acted["slow"][1] == 1
            assert took >= 1.0            # the lost SYN-ACK cost the kernel's 1 s SYN timer
        finally:
            lib.mtcp_link_close(link)
