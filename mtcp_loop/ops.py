"""Operating a running stack: ``ss``-like socket records, live capture, per-worker views.

The kernel's tools (``ss``, ``netstat``, ``/proc/net/tcp``, ``tcpdump`` on kernel-bypass rings)
cannot see connections carried by the user-space stack. This module reads them from the
engine (``native/engine/introspect.c``) and serves them over the control sockets of the
workers and of in-process loops that opted in (``MTCPConfig(control="NAME")``):

* ``records(loop)`` / ``loop.connections()``: one record (a dict) per connection and listener,
  with the columns of ``ss -tni``;
* ``serve_command(loop, cmd, writer)``: the control-socket commands ``ss``, ``capture``, ``top``,
  ``metrics`` (``workers.py`` hands every command it does not know to it);
* client side for the CLI: ``instance_sockets()``, ``query()``, ``format_ss()``, ``parse_filter()``.

Engine state is read on the loop's own thread, between two polls (at a poll boundary), in
chunks of connection blocks (``SS_STEP`` for the control socket): the copy of one chunk is one
C call (fixed-size records into a preallocated array), and the control command yields to the
event loop between chunks, so a walk over 100k connections never stalls the data path for longer
than one chunk (see docs/operations.md for the measured cost).
"""
from __future__ import annotations

import asyncio
import glob
import json
import os
import resource
import socket
import struct
import time
from typing import Iterable, Optional

__all__ = ["records", "STATE_NAMES", "parse_states", "format_ss", "parse_filter", "instance_sockets",
           "query", "control", "attach_loop", "detach_loop"]

# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
# struct mtcp_sock_record (native/include/mtcp.h), little-endian x86-64/aarch64 layout;
# checked against cffi's layout at first use.
_REC = struct.Struct("<QII12IQQIIBBH16sBBH16sIBBBBIII4xQQIIIIIIQ")
SCAN_CHUNK = 8192            # connection blocks looked at per C call / per loop iteration

# ss(8) state names, indexed by MTCP_ST_*
STATE_NAMES = ("UNCONN", "LISTEN", "SYN-SENT", "SYN-RECV", "ESTAB", "FIN-WAIT-1", "FIN-WAIT-2",
               "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")
_STATE_ARGS = {
    "closed": [0], "listening": [1], "listen": [1], "syn-sent": [2], "syn-recv": [3], "established": [4],
    "estab": [4], "fin-wait-1": [5], "fin-wait-2": [6], "close-wait": [7], "closing": [8],
    "last-ack": [9], "time-wait": [10],
    "all": list(range(11)),
    "connected": [2, 3, 4, 5, 6, 7, 8, 9, 10],           # ss: all except listening and closed
    "synchronized": [4, 5, 6, 7, 8, 9, 10],               # ss: connected except syn-sent/syn-recv
    "bucket": [3, 10],
    "big": [0, 1, 2, 4, 5, 6, 7, 8, 9],
}
_CC_NAMES = {0: "cubic", 1: "reno"}


def parse_states(names: Optional[Iterable[str]]) -> int:
    """ss -t/--state names (``established``, ``time-wait``, ``connected``, ...) -> bit mask of
    (1 << MTCP_ST_*); 0 = every state."""
    mask = 0
    for n in names or ():
        key = n.strip().lower()
        if key not in _STATE_ARGS:
            raise ValueError(f"unknown state {n!r} (known: {', '.join(sorted(_STATE_ARGS))})")
        for s in _STATE_ARGS[key]:
            mask |= 1 << s
    return mask


def _ip(family, raw):
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return "*"


_checked = False


def _check_layout(ffi):
    global _checked
    if not _checked:
        if ffi.sizeof("struct mtcp_sock_record") != _REC.size:
            raise RuntimeError("struct mtcp_sock_record layout differs from ops._REC")
        _checked = True


_LIP, _RIP = 22, 26          # positions of the raw addresses in a record tuple


def _wire_row(t) -> list:
    """A record tuple as a JSON-able row (addresses as text): what the control socket sends."""
    row = list(t)
    row[_LIP] = _ip(t[19], t[_LIP])
    row[_RIP] = _ip(t[23], t[_RIP]) if t[23] else "*"
    return row


def _to_dict(t) -> dict:
    (cid, flags, cc, state, mss, srtt, rttvar, rto, cwnd, ssthresh, snd_wnd, rcv_wnd, unacked, sndbuf_used,
     rcvbuf_used, bytes_sent, bytes_received, retrans, iflags, lfam, _p1, lport, lip, rfam, _p2, rport, rip,
     rcv_mss, snd_ws, rcv_ws, retries, dupacks, lastrcv, min_rtt, sacked, bytes_acked, timer_ms, backlog,
     acceptq, synq, cookies_sent, cookies_ok, overflows, age_us) = t
    listener = bool(flags & 1)
    if not isinstance(lip, str):
        lip, rip = _ip(lfam, lip), _ip(rfam, rip)
    d = {
        "cid": cid,
        "state": STATE_NAMES[state] if state < len(STATE_NAMES) else str(state),
        "listener": listener,
        "orphan": bool(flags & 2),
        "family": "inet6" if lfam == 6 else "inet",
        "local": [lip, lport],
        "peer": [rip if not listener else "*", rport],
        # ss: Recv-Q/Send-Q = unread / unacknowledged+unsent bytes; listeners: accept queue / backlog
        "recv_q": acceptq if listener else rcvbuf_used,
        "send_q": backlog if listener else sndbuf_used,
        "age_ms": age_us // 1000,
    }
    if listener:
        d.update(backlog=backlog, accept_queue=acceptq, syn_queue=synq, syncookies_sent=cookies_sent,
                 syncookies_accepted=cookies_ok, overflows=overflows, mss=mss)
        return d
    d.update(
        pending=bool(flags & 4), accept_queued=bool(flags & 8),
        cc=_CC_NAMES.get(cc, str(cc)), mss=mss, rcv_mss=rcv_mss,
        cwnd=cwnd, cwnd_segs=(cwnd // mss) if mss else 0,
        ssthresh=ssthresh, ssthresh_segs=(ssthresh // mss if mss and ssthresh < 0x7fffffff else None),
        srtt_us=srtt, rttvar_us=rttvar, rto_us=rto, min_rtt_us=min_rtt,
        snd_wnd=snd_wnd, rcv_wnd=rcv_wnd, unacked=unacked, sacked=sacked,
        bytes_sent=bytes_sent, bytes_acked=bytes_acked, bytes_received=bytes_received,
        retrans=retrans, retries=retries, dupacks=dupacks,
        sack=bool(iflags & 1), ts=bool(iflags & 2), wscale=[snd_ws, rcv_ws] if iflags & 4 else None,
        nodelay=bool(iflags & 8), keepalive=bool(iflags & 16),
        lastrcv_ms=None if lastrcv == 0xffffffff else lastrcv, timer_ms=timer_ms or None,
        # ss's "send" rate: cwnd / srtt (an estimate from the window, not a measured delivery rate)
        send_bps=(cwnd * 8 * 1000000 // srtt) if srtt else None,
        # bytes acknowledged over the connection's age: an average, not Linux's per-flight
        # delivery_rate sample
        avg_delivery_bps=(bytes_acked * 8 * 1000000 // age_us) if age_us else None,
    )
    return d


def _engine(loop):
    eng = getattr(loop, "_mtcp_engine", None)
    if eng is None or getattr(eng, "e", None) is None:
        return None
    return eng


def _now_us() -> int:
    return time.monotonic_ns() // 1000          # the clock the loop passes to mtcp_engine_poll


class _Walker:
    """A bounded walk over one engine's connection blocks (one C call per step)."""

    def __init__(self, eng, states=0, sport=0, dport=0, family=0, chunk=SCAN_CHUNK):
        from ._native import ffi, lib
        _check_layout(ffi)
        self.ffi, self.lib, self.eng = ffi, lib, eng
        self.cursor = ffi.new("uint32_t *", 0)
        self.flt = ffi.new("struct mtcp_sock_filter *")
        self.flt.states, self.flt.sport, self.flt.dport, self.flt.family = states, sport, dport, family
        self.chunk = chunk
        self.buf = ffi.new("struct mtcp_sock_record[]", chunk)
        self.view = ffi.buffer(self.buf)
        self.done = False

    def step(self) -> list:
        """Up to `chunk` blocks: raw record tuples."""
        e = self.eng.e
        if e is None:
            self.done = True
            return []
        n = self.lib.mtcp_engine_sockets(e, _now_us(), self.cursor, self.flt, self.buf, self.chunk, self.chunk)
        if self.cursor[0] >= self.lib.mtcp_engine_nblocks(e):
            self.done = True
        if not n:
            return []
        return list(_REC.iter_unpack(self.view[:n * _REC.size]))


def records(loop, state=None, sport=0, dport=0, family=0) -> list:
    """Every connection and listener of ``loop``'s engine as ss-like dicts (``loop.connections()``).

    state: an ss state name or a list of them (``"established"``, ``"time-wait"``,
    ``"connected"``, ...); sport/dport: local/peer port; family: 4 or 6. Runs on the loop's
    thread (call it from a coroutine or callback of that loop).
    """
    eng = _engine(loop)
    if eng is None:
        return []
    states = parse_states([state] if isinstance(state, str) else state)
    w = _Walker(eng, states, sport or 0, dport or 0, family or 0)
    out = []
    while not w.done:
        out.extend(_to_dict(t) for t in w.step())
    return out


# ---------------------------------------------------------------------------------------------
# formatting (ss -tn / -tni)
# ---------------------------------------------------------------------------------------------
def _hostport(h, p):
    if h == "*":
        return f"*:{p}" if p else "*:*"
    return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"


def _rate(bps):
    if bps is None:
        return None
    for unit, div in (("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3)):
        if bps >= div:
            return f"{bps / div:.1f}{unit}"
    return f"{bps}bps"


def info_line(r: dict) -> str:
    """The second line of ``ss -i`` for one record."""
    if r["listener"]:
        return (f"\t accept_queue:{r['accept_queue']} backlog:{r['backlog']} syn_queue:{r['syn_queue']} "
                f"syncookies_sent:{r['syncookies_sent']} syncookies_accepted:{r['syncookies_accepted']} "
                f"overflows:{r['overflows']} mss:{r['mss']}")
    parts = []
    opts = []
    if r["ts"]:
        opts.append("ts")
    if r["sack"]:
        opts.append("sack")
    parts.append(" ".join(opts) + (" " if opts else "") + r["cc"])
    if r["wscale"]:
        parts.append(f"wscale:{r['wscale'][0]},{r['wscale'][1]}")
    parts.append(f"rto:{r['rto_us'] / 1000:g}")
    if r["srtt_us"]:
        parts.append(f"rtt:{r['srtt_us'] / 1000:.3f}/{r['rttvar_us'] / 1000:.3f}")
    parts.append(f"mss:{r['mss']} rcvmss:{r['rcv_mss']}")
    parts.append(f"cwnd:{r['cwnd_segs']}")
    if r["ssthresh_segs"] is not None:
        parts.append(f"ssthresh:{r['ssthresh_segs']}")
    parts.append(f"bytes_sent:{r['bytes_sent']} bytes_acked:{r['bytes_acked']} "
                 f"bytes_received:{r['bytes_received']}")
    if r["retrans"]:
        parts.append(f"retrans:{r['retries']}/{r['retrans']}")
    if r["send_bps"]:
        parts.append(f"send {_rate(r['send_bps'])}")
    if r["avg_delivery_bps"] is not None:
        parts.append(f"avg_delivery {_rate(r['avg_delivery_bps'])}")
    parts.append(f"age:{r['age_ms']}ms")
    if r["lastrcv_ms"] is not None:
        parts.append(f"lastrcv:{r['lastrcv_ms']}")
    if r["unacked"]:
        parts.append(f"unacked:{r['unacked']}")
    if r["sacked"]:
        parts.append(f"sacked:{r['sacked']}")
    if r["min_rtt_us"]:
        parts.append(f"minrtt:{r['min_rtt_us'] / 1000:.3f}")
    parts.append(f"snd_wnd:{r['snd_wnd']} rcv_wnd:{r['rcv_wnd']}")
    if r["timer_ms"]:
        parts.append(f"timer:{r['timer_ms']}ms")
    if r["orphan"]:
        parts.append("orphan")
    return "\t " + " ".join(parts)


def format_ss(recs: list, info=False, show_worker=True) -> str:
    """ss -tn[i]-style table: State Recv-Q Send-Q Local Peer (and the worker)."""
    rows = [("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Worker")]
    for r in recs:
        rows.append((r["state"], str(r["recv_q"]), str(r["send_q"]), _hostport(*r["local"]),
                     _hostport(*r["peer"]), str(r.get("worker", ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = []
    ncol = 6 if show_worker else 5
    for k, row in enumerate(rows):
        cells = []
        for i in range(ncol):
            cells.append(row[i].rjust(widths[i]) if i in (1, 2) else row[i].ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
        if info and k > 0:
            lines.append(info_line(recs[k - 1]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# capture filter ("host 127.0.0.1 and port 8080")
# ---------------------------------------------------------------------------------------------
def parse_filter(words) -> dict:
    """A simple tcpdump-like filter: ``host ADDR``, ``port N``, joined by ``and``. Returns
    {"host": str|None, "port": int}."""
    toks = [t for w in (words or ()) for t in w.split()]
    out = {"host": None, "port": 0}
    i = 0
    while i < len(toks):
        t = toks[i].lower()
        if t in ("and", "&&", "tcp", "ip", "ip6"):
            i += 1
            continue
        if t in ("host", "port") and i + 1 < len(toks):
            v = toks[i + 1]
            if t == "host":
                if out["host"] is not None:
                    raise ValueError("filter: only one host")
                try:
                    socket.inet_pton(socket.AF_INET6 if ":" in v else socket.AF_INET, v)
                except OSError:
                    raise ValueError(f"filter: bad host address {v!r}") from None
                out["host"] = v
            else:
                if out["port"]:
                    raise ValueError("filter: only one port")
                if not v.isdigit() or not 0 < int(v) < 65536:
                    raise ValueError(f"filter: bad port {v!r}")
                out["port"] = int(v)
            i += 2
            continue
        raise ValueError(f"filter: unsupported {' '.join(toks[i:])!r} (supported: host ADDR, port N, "
                         "joined by 'and')")
    return out


# ---------------------------------------------------------------------------------------------
# control commands (server side, run on the loop)
# ---------------------------------------------------------------------------------------------
def _pool(eng) -> dict:
    from ._native import ffi, lib
    u = ffi.new("uint64_t[4]")
    lib.mtcp_engine_pool_usage(eng.e, u)
    cfg = ffi.new("struct mtcp_config *")
    lib.mtcp_config_default(cfg)
    eng.config.fill_c_config(ffi, lib, cfg)
    return {"conns_used": int(u[0]), "conns_max": int(cfg.max_conns), "chunks_used": int(u[1]),
            "chunks_max": int(cfg.max_chunks), "ooo_used": int(u[2]), "events_queued": int(u[3])}


def gauges(loop) -> dict:
    """Per-engine gauges and histograms in one C pass (metrics, top)."""
    from ._native import ffi, lib
    eng = _engine(loop)
    if eng is None:
        return {}
    g = ffi.new("struct mtcp_engine_gauges *")
    lib.mtcp_engine_gauges(eng.e, g)
    dur = ffi.new("uint64_t[]", lib.MTCP_DUR_BUCKETS)
    dsum = ffi.new("uint64_t *")
    lib.mtcp_engine_conn_durations(eng.e, dur, lib.MTCP_DUR_BUCKETS, dsum)

    def bounds(fn, n):
        return [None if i == n - 1 else fn(i) / 1e6 for i in range(n)]
    return {
        "states": {STATE_NAMES[i]: int(g.states[i]) for i in range(11)},
        "orphans": int(g.orphans), "accept_queue": int(g.acceptq), "syn_queue": int(g.synq),
        "backlog": int(g.backlog), "sndbuf_bytes": int(g.sndbuf_bytes), "rcvbuf_bytes": int(g.rcvbuf_bytes),
        "srtt": {"bounds": bounds(lib.mtcp_srtt_bound_us, lib.MTCP_SRTT_BUCKETS),
                 "counts": [int(x) for x in g.srtt_hist], "sum": g.srtt_sum_us / 1e6},
        "duration": {"bounds": bounds(lib.mtcp_duration_bound_us, lib.MTCP_DUR_BUCKETS),
                     "counts": [int(x) for x in dur], "sum": dsum[0] / 1e6},
        "pool": _pool(eng),
    }


def _link_stats(eng) -> dict:
    from ._native import ffi, lib
    n = lib.MTCP_LINK_NSTATS
    out = ffi.new("uint64_t[]", n)
    lib.mtcp_link_stats(eng.link, out, n)
    return {ffi.string(lib.mtcp_link_stat_name(i)).decode(): int(out[i]) for i in range(n)}


def metrics_snapshot(loop) -> dict:
    """Everything the Prometheus endpoint exposes for one loop (one poll boundary)."""
    eng = _engine(loop)
    if eng is None:
        return {"engine": False}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"engine": True, "counters": eng.counters(), "gauges": gauges(loop), "link": _link_stats(eng),
            "open_transports": eng.n_open, "cpu_seconds": ru.ru_utime + ru.ru_stime,
            "polls": eng.polls, "events": eng.events}


class _Capture:
    def __init__(self, eng, path, flt, max_frames, max_bytes, seconds):
        self.eng, self.path = eng, path
        self.flt, self.max_frames, self.max_bytes, self.seconds = flt, max_frames, max_bytes, seconds
        self.timer = None
        self.started = time.time()
        self.stopped = False
        self.last = None


def _capture_status(eng) -> Optional[list]:
    from ._native import ffi, lib
    out = ffi.new("uint64_t[5]")
    if lib.mtcp_link_pcap_status(eng.link, out) < 0:
        return None
    return [int(x) for x in out]


def _capture_stop(loop, eng) -> dict:
    from ._native import lib
    cap = getattr(loop, "_mtcp_capture", None)
    st = _capture_status(eng)
    if cap is None:
        return {"error": "no live capture runs"}
    if cap.timer is not None:
        cap.timer.cancel()
    if not cap.stopped:
        lib.mtcp_link_pcap(eng.link, b"")       # flush + close the file
        cap.stopped = True
        if st is not None:
            cap.last = st
    loop._mtcp_capture = None
    return _capture_report(cap, cap.last, running=False)


def _capture_report(cap, st, running=True) -> dict:
    d = {"path": cap.path, "running": running, "seconds": round(time.time() - cap.started, 3)}
    if st is not None:
        d.update(frames=st[0], bytes=st[1], seen=st[2], done=bool(st[3]), failed=bool(st[4]))
    return d


def capture(loop, args: dict) -> dict:
    from ._native import ffi, lib
    eng = _engine(loop)
    if eng is None:
        return {"error": "this loop has no user-space engine yet"}
    op = args.get("op", "start")
    cap = getattr(loop, "_mtcp_capture", None)
    if op == "status":
        if cap is None:
            return {"error": "no live capture runs"}
        st = _capture_status(eng) if not cap.stopped else cap.last
        return _capture_report(cap, st, running=not cap.stopped)
    if op == "stop":
        return _capture_stop(loop, eng)
    if op != "start":
        return {"error": f"capture: unknown op {op!r}"}
    if cap is not None or _capture_status(eng) is not None:
        return {"error": "a capture already runs on this worker (a start-up pcap or another capture)"}
    path = args.get("path")
    if not path or not os.path.isabs(path):
        return {"error": "capture: an absolute path is required"}
    opts = ffi.new("struct mtcp_pcap_opts *")
    host = args.get("host")
    if host:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            raw = socket.inet_pton(fam, host)
        except OSError:
            return {"error": f"capture: bad host {host!r}"}
        opts.family = 6 if fam == socket.AF_INET6 else 4
        ffi.memmove(opts.host, raw, len(raw))
    opts.port = int(args.get("port") or 0)
    opts.max_frames = int(args.get("count") or 0)
    opts.max_bytes = int(args.get("max_bytes") or 0)
    rc = lib.mtcp_link_pcap_start(eng.link, os.fsencode(path), opts)
    if rc < 0:
        return {"error": f"capture: {os.strerror(-rc)}: {path}"}
    cap = _Capture(eng, path, (host, opts.port), opts.max_frames, opts.max_bytes, args.get("seconds"))
    loop._mtcp_capture = cap
    secs = args.get("seconds")
    if secs:
        def _timeout():
            cap.timer = None
            if getattr(loop, "_mtcp_capture", None) is cap and not cap.stopped:
                cap.last = _capture_status(eng)
                lib.mtcp_link_pcap(eng.link, b"")
                cap.stopped = True
        cap.timer = loop.call_later(float(secs), _timeout)
    return _capture_report(cap, _capture_status(eng))


def top_snapshot(loop) -> dict:
    """What `mtcp-loop top` shows for one loop: counters, gauges, pool use, CPU time."""
    eng = _engine(loop)
    if eng is None:
        return {"engine": False}
    c = eng.counters()
    g = gauges(loop)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "engine": True, "pid": os.getpid(), "t": time.monotonic(), "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "new_conns": c.get("conn_accepted", 0) + c.get("conn_established", 0),
        "segs_in": c.get("segs_in", 0), "segs_out": c.get("segs_out", 0),
        "retransmits": c.get("retrans_segs", 0),
        "drops": {k[5:]: v for k, v in c.items() if k.startswith("drop_") and v},
        "active": g["states"]["ESTAB"], "states": g["states"], "accept_queue": g["accept_queue"],
        "syn_queue": g["syn_queue"], "pool": g["pool"],
    }


SS_STEP = 256                # blocks per step of a control-socket `ss` (one step = one loop hold)


async def _ss_stream(loop, args, writer) -> None:
    """The `ss` answer, written step by step: {"rows": [record rows...], "seconds": s}. Each
    step copies SS_STEP blocks out of the engine, encodes their rows and yields to the loop, so
    the data path runs between steps however many connections there are."""
    try:
        states = parse_states(args.get("states"))
    except ValueError as exc:
        writer.write(json.dumps({"error": str(exc)}).encode() + b"\n")
        return
    t0 = time.perf_counter()
    writer.write(b'{"rows": [')
    eng = _engine(loop)
    n = 0
    hold = 0.0                   # longest step (CPU time): how long the loop was held at once
    if eng is not None:
        w = _Walker(eng, states, int(args.get("sport") or 0), int(args.get("dport") or 0),
                    int(args.get("family") or 0), chunk=SS_STEP)
        while not w.done:
            t1 = time.thread_time()
            rows = [_wire_row(t) for t in w.step()]
            if rows:
                writer.write((b"," if n else b"") + json.dumps(rows)[1:-1].encode())
                n += len(rows)
            hold = max(hold, time.thread_time() - t1)
            if rows:
                await writer.drain()
            await asyncio.sleep(0)
    writer.write(f'], "count": {n}, "seconds": {time.perf_counter() - t0:.6f}, '
                 f'"max_step_seconds": {hold:.6f}}}\n'.encode())


async def serve_command(loop, cmd: str, writer, extra: Optional[dict] = None) -> None:
    """Answer one control command on writer (one JSON line)."""
    name, _, arg = cmd.partition(" ")
    if name == "ss":
        try:
            args = json.loads(arg) if arg.strip() else {}
        except ValueError as exc:
            args = None
            writer.write(json.dumps({"error": f"bad arguments for 'ss': {exc}"}).encode() + b"\n")
        if isinstance(args, dict):
            await _ss_stream(loop, args, writer)
        elif args is not None:
            writer.write(b'{"error": "arguments for \'ss\' must be a JSON object"}\n')
    else:
        out = await control(loop, cmd, extra)
        writer.write(json.dumps(out).encode() + b"\n")
    await writer.drain()


def ss_records(answer: dict) -> list:
    """The records (dicts) of an `ss` answer."""
    return [_to_dict(tuple(r)) for r in answer["rows"]]


async def control(loop, cmd: str, extra: Optional[dict] = None) -> dict:
    """One control-socket command (a line: NAME [JSON]); returns a JSON-able dict."""
    name, _, arg = cmd.partition(" ")
    try:
        args = json.loads(arg) if arg.strip() else {}
    except ValueError as exc:
        return {"error": f"bad arguments for {name!r}: {exc}"}
    if not isinstance(args, dict):
        return {"error": f"arguments for {name!r} must be a JSON object"}
    if name == "capture":
        return capture(loop, args)
    if name == "top":
        d = top_snapshot(loop)
        if extra:
            d.update(extra)
        return d
    if name == "metrics":
        d = metrics_snapshot(loop)
        if extra:
            d.update(extra)
        return d
    return {"error": f"unknown command {name!r} (known: stats, drain, ss, capture, top, metrics)"}


# ---------------------------------------------------------------------------------------------
# client side
# ---------------------------------------------------------------------------------------------
def instance_sockets(rundir: str, worker: Optional[int] = None) -> list:
    """[(label, path)] of the control sockets of a running instance: the workers of
    `mtcp-loop run` (worker-N.sock, label N) and in-process loops that opted in
    (loop-PID-K.sock, label "PID/K")."""
    out = []
    for p in sorted(glob.glob(os.path.join(rundir, "worker-*.sock")),
                    key=lambda p: int(os.path.basename(p)[7:-5]) if os.path.basename(p)[7:-5].isdigit() else 0):
        label = os.path.basename(p)[7:-5]
        if worker is None or label == str(worker):
            out.append((label, p))
    for p in sorted(glob.glob(os.path.join(rundir, "loop-*.sock"))):
        label = os.path.basename(p)[5:-5].replace("-", "/")
        if worker is None or label == str(worker):
            out.append((label, p))
    return out


def query(path: str, cmd: str, args: Optional[dict] = None, timeout: float = 10.0) -> dict:
    """Send one control command and read its one-line JSON answer (any size)."""
    line = cmd + (" " + json.dumps(args) if args else "") + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode())
        chunks = []
        while True:
            c = s.recv(1 << 20)
            if not c:
                break
            chunks.append(c)
            if c.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks))


# ---------------------------------------------------------------------------------------------
# in-process loops that opted in: MTCPConfig(control="NAME") / MTCPConfig(metrics="ADDR:PORT")
# ---------------------------------------------------------------------------------------------
_seq = 0


def default_rundir(name: str = "default") -> str:
    """Where an instance's control sockets live: $MTCP_RUNDIR/NAME (default /tmp/mtcp-loop-UID/NAME)."""
    base = os.environ.get("MTCP_RUNDIR") or f"/tmp/mtcp-loop-{os.getuid()}"
    return os.path.join(base, name)


def attach_loop(loop) -> None:
    """Called when a loop's engine starts: serve its control socket and/or metrics endpoint."""
    global _seq
    cfg = loop._mtcp_config
    from . import links as _links
    if _links.in_worker():
        return                     # the worker's own control socket and the supervisor's endpoint
    _seq += 1
    loop._mtcp_ops_label = f"{os.getpid()}/{_seq}"     # the `Worker` column / worker="..." label
    if cfg.control:
        rundir = default_rundir(cfg.control)
        os.makedirs(rundir, exist_ok=True)
        path = os.path.join(rundir, f"loop-{os.getpid()}-{_seq}.sock")
        loop._mtcp_control_path = path

        async def _serve():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            loop._mtcp_control_server = await asyncio.start_unix_server(
                lambda r, w: _serve_conn(loop, r, w), path)
        loop._mtcp_control_task = asyncio.ensure_future(_serve(), loop=loop)
    if cfg.metrics:
        from . import metrics as _metrics
        loop._mtcp_metrics = _metrics.serve_loop(loop, cfg.metrics)


def detach_loop(loop) -> None:
    srv = getattr(loop, "_mtcp_control_server", None)
    if srv is not None:
        srv.close()
        loop._mtcp_control_server = None
    t = getattr(loop, "_mtcp_control_task", None)
    if t is not None and not t.done():
        t.cancel()
    path = getattr(loop, "_mtcp_control_path", None)
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
        loop._mtcp_control_path = None
    m = getattr(loop, "_mtcp_metrics", None)
    if m is not None:
        m.shutdown()
        loop._mtcp_metrics = None
    cap = getattr(loop, "_mtcp_capture", None)
    if cap is not None and cap.timer is not None:
        cap.timer.cancel()


async def _serve_conn(loop, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line.strip().decode(errors="replace")
            if cmd == "stats":
                writer.write(json.dumps({"pid": os.getpid(), "engine": loop.stats()}).encode() + b"\n")
                await writer.drain()
            else:
                await serve_command(loop, cmd, writer)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
