"""`mtcp-loop testbed up|down|status` and `mtcp-loop bench rings` (the namespaces and the ring
benchmark are mtcp_loop/tools/testbed.py; the backends are mtcp_loop/links.py)."""
from __future__ import annotations

import os

from mtcp_loop.links import REAL_BACKENDS


def need_pyroute2(cmd: str) -> bool:
    """False (and one line on stderr) when pyroute2, which the namespaces need, is missing."""
    import importlib.util
    import sys
    if importlib.util.find_spec("pyroute2") is None:
        print(f"mtcp-loop {cmd}: needs pyroute2 (network namespaces): pip install 'mtcp_loop[rings]'",
              file=sys.stderr)
        return False
    return True


def cmd_testbed(args) -> int:
    """`mtcp-loop testbed up|down|status`: the namespaces of mtcp_loop/tools/testbed.py (pyroute2)."""
    import json
    import sys
    if not need_pyroute2("testbed"):
        return 2
    from ..testbed import Testbed, TestbedError
    tb = Testbed(prefix=args.prefix, nqueues=args.queues)
    try:
        if args.action == "up":
            res = tb.up(args.kind, offload=False if args.no_offload else None)
        elif args.action == "down":
            res = {"removed": tb.down()}
        else:
            res = tb.status()
    except TestbedError as exc:
        print(f"mtcp-loop testbed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    elif res is None:
        print("testbed: down")
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


def _fps(d, key):
    v = d.get(key)
    if v is None:
        v = d.get(key + "_fps")
    return v


def cmd_bench_rings(args) -> int:
    """Raw frame rate of each backend's ring pair (lib.mtcp_bench_link: the engine's code path),
    TX (stack -> kernel peer) and RX (kernel peer -> stack), each backend in namespaces created and
    torn down for it. Plus the in-memory sim pair and the in-process loopback."""
    import json
    import sys
    if not need_pyroute2("bench rings"):
        return 2
    try:
        from .. import testbed
        from mtcp_loop._native import lib  # noqa: F401
    except ImportError as exc:
        print(f"mtcp-loop bench rings: {exc}", file=sys.stderr)
        return 2
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in REAL_BACKENDS]
    if bad:
        print(f"mtcp-loop bench rings: unknown backend(s) {', '.join(bad)} (known: {', '.join(REAL_BACKENDS)})",
              file=sys.stderr)
        return 2
    raw = testbed.bench_rings(kinds=kinds, seconds=args.seconds, frame_len=args.frame_len,
                              prefix=f"mtcpbr{os.getpid() % 100000}")
    res = {"frame_len": args.frame_len, "seconds_per_direction": args.seconds, "backends": {}}
    for name, d in raw.items():
        if "error" in d:
            res["backends"][name] = {"error": d["error"]}
        else:
            res["backends"][name] = {"tx_fps": _fps(d, "tx"), "rx_fps": _fps(d, "rx")}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"raw ring frame rates, {args.frame_len}-byte frames, {args.seconds:g} s per direction, one core:")
        for name, d in res["backends"].items():
            if "error" in d:
                print(f"  {name:9s} error: {d['error']}")
            else:
                print(f"  {name:9s} TX {d['tx_fps'] / 1e6:7.3f} Mframes/s   RX {d['rx_fps'] / 1e6:7.3f} Mframes/s")
    errors = [k for k in kinds if "error" in res["backends"].get(k, {"error": 1})]
    return 1 if errors else 0


def add_cli_parsers(sub, bsub) -> None:
    """Add `testbed` (to the top-level subparsers) and `rings` (to `bench`)."""
    t = sub.add_parser("testbed", help="network-namespace testbed for the tap/packet/xdp backends")
    t.add_argument("action", choices=("up", "down", "status"))
    t.add_argument("--kind", choices=REAL_BACKENDS, default="tap")
    t.add_argument("--prefix", default=os.environ.get("MTCP_TESTBED_PREFIX", "mtcp"))
    t.add_argument("--queues", type=int, default=int(os.environ.get("MTCP_NQUEUES", "1")))
    t.add_argument("--no-offload", action="store_true", help="turn TSO/GSO/tx-csum off on the kernel peer")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_testbed)
    r = bsub.add_parser("rings", help="raw frame rate RX/TX of each ring backend (needs root: namespaces)")
    r.add_argument("--kinds", default=",".join(REAL_BACKENDS), help="comma-separated: tap,packet,xdp")
    r.add_argument("--seconds", type=float, default=1.0, help="seconds per direction")
    r.add_argument("--frame-len", type=int, default=64, help="frame length in bytes (incl. Ethernet header)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_bench_rings)
