"""Prometheus metrics of the user-space stack (``mtcp-loop run --metrics ADDR:PORT``,
``MTCPConfig(metrics="ADDR:PORT")``), made with prometheus_client.

The endpoint is an HTTP server on the KERNEL stack (prometheus_client's server thread on a
kernel socket), never on the user-space stack it measures. Each scrape asks every loop for one
snapshot taken on the loop's own thread at a poll boundary: ``mtcp-loop run`` workers through
their control sockets (``metrics`` command), an in-process loop through
``call_soon_threadsafe``. Per loop, the snapshot costs one counter copy and one C pass over the
connection blocks (``mtcp_engine_gauges``); see docs/operations.md for the cost at 100k
connections.

Names follow Prometheus conventions: every engine counter is ``mtcp_<name>_total`` (the
segment/frame counters get spelled-out names such as ``mtcp_segments_received_total``), drops
are one family ``mtcp_drops_total{reason=...}``; gauges have units in their names
(``mtcp_send_queue_bytes``), and the histograms are ``mtcp_connection_duration_seconds``
(released connections) and ``mtcp_srtt_seconds`` (a gauge histogram of the open connections'
smoothed RTT at scrape time). Every sample carries ``worker="N"`` (an in-process loop:
``worker="PID/K"``).
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Callable, Dict, Optional

from .config import parse_addr   # noqa: F401  (the endpoint's ADDR:PORT syntax; config checks it)

__all__ = ["parse_addr", "Collector", "serve_loop", "serve_supervisor", "COUNTER_NAMES"]

# engine counter -> metric base name (without mtcp_ and _total); the others keep their name
COUNTER_NAMES = {
    "frames_in": "frames_received", "frames_out": "frames_sent",
    "segs_in": "segments_received", "segs_out": "segments_sent",
    "retrans_segs": "segments_retransmitted", "fast_retrans": "fast_retransmits",
    "timeouts": "retransmission_timeouts", "syn_retrans": "syn_retransmits",
    "rst_in": "resets_received", "rst_out": "resets_sent",
    "ooo_segs": "out_of_order_segments", "ooo_drops": "out_of_order_drops",
    "out_of_window": "out_of_window_segments",
    "conn_accepted": "connections_accepted", "conn_established": "connections_established",
    "conn_failed": "connections_failed", "conn_reset": "connections_reset",
    "conn_timedout": "connections_timed_out", "conn_closed": "connections_closed",
    "active_opens": "active_opens", "passive_opens": "passive_opens",
}
_LINK_NAMES = {"rx_frames": ("link_frames_received", None), "tx_frames": ("link_frames_sent", None),
               "rx_dropped": ("link_drops", "rx"), "tx_dropped": ("link_drops", "tx"),
               "rx_errors": ("link_errors", "rx"), "tx_errors": ("link_errors", "tx")}


class Collector:
    """A prometheus_client collector over ``source()``: {worker label: metrics snapshot}
    (ops.metrics_snapshot's dicts)."""

    def __init__(self, source: Callable[[], Dict[str, dict]]):
        self.source = source

    def describe(self):
        return []                  # no samples at registration (the source may not run yet)

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeHistogramMetricFamily,
                                            GaugeMetricFamily, HistogramMetricFamily)
        snaps = self.source()
        fam = {}

        def counter(name, doc, labels=("worker",)):
            if name not in fam:
                fam[name] = CounterMetricFamily(name, doc, labels=list(labels))
            return fam[name]

        def gauge(name, doc, labels=("worker",)):
            if name not in fam:
                fam[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            return fam[name]

        up = gauge("mtcp_worker_up", "1 when the worker answered this scrape")
        for w, s in sorted(snaps.items()):
            ok = bool(s) and s.get("engine") and "error" not in s
            up.add_metric([w], 1.0 if ok else 0.0)
            if not ok:
                continue
            for k, v in s["counters"].items():
                if k.startswith("drop_"):
                    counter("mtcp_drops", "segments/frames dropped by the engine, by reason",
                            ("worker", "reason")).add_metric([w, k[5:]], v)
                    continue
                base = COUNTER_NAMES.get(k, k)
                counter(f"mtcp_{base}", f"engine counter {k}").add_metric([w], v)
            for k, v in s.get("link", {}).items():
                name, d = _LINK_NAMES.get(k, (f"link_{k}", None))
                if d is None:
                    counter(f"mtcp_{name}", f"link counter {k}").add_metric([w], v)
                else:
                    counter(f"mtcp_{name}", "link counter", ("worker", "direction")).add_metric([w, d], v)
            counter("mtcp_process_cpu_seconds", "CPU time of the loop's process").add_metric(
                [w], s.get("cpu_seconds", 0.0))
            counter("mtcp_engine_polls", "engine polls by the loop").add_metric([w], s.get("polls", 0))
            g = s["gauges"]
            st = gauge("mtcp_connections", "connections by TCP state", ("worker", "state"))
            for name, n in g["states"].items():
                st.add_metric([w, name.lower().replace("-", "_")], n)
            gauge("mtcp_orphan_connections", "connections released by the application, still closing"
                  ).add_metric([w], g["orphans"])
            gauge("mtcp_accept_queue", "established connections not yet accepted (sum over listeners)"
                  ).add_metric([w], g["accept_queue"])
            gauge("mtcp_syn_queue", "SYN-RECEIVED connections (sum over listeners)").add_metric([w], g["syn_queue"])
            gauge("mtcp_listen_backlog", "accept-queue limits (sum over listeners)").add_metric([w], g["backlog"])
            gauge("mtcp_send_queue_bytes", "bytes queued to send").add_metric([w], g["sndbuf_bytes"])
            gauge("mtcp_receive_queue_bytes", "bytes received, not yet read").add_metric([w], g["rcvbuf_bytes"])
            gauge("mtcp_open_transports", "asyncio transports on the stack").add_metric(
                [w], s.get("open_transports", 0))
            p = g["pool"]
            gauge("mtcp_pool_used", "pool entries in use", ("worker", "pool")).add_metric([w, "conns"], p["conns_used"])
            fam["mtcp_pool_used"].add_metric([w, "chunks"], p["chunks_used"])
            fam["mtcp_pool_used"].add_metric([w, "ooo"], p["ooo_used"])
            gauge("mtcp_pool_size", "pool capacity", ("worker", "pool")).add_metric([w, "conns"], p["conns_max"])
            fam["mtcp_pool_size"].add_metric([w, "chunks"], p["chunks_max"])
            for key, name, doc, cls in (
                    ("duration", "mtcp_connection_duration_seconds",
                     "connections released by the engine: first SYN to the last segment from the peer",
                     HistogramMetricFamily),
                    ("srtt", "mtcp_srtt_seconds", "smoothed RTT of the open connections at scrape time",
                     GaugeHistogramMetricFamily)):
                h = g[key]
                if name not in fam:
                    fam[name] = cls(name, doc, labels=["worker"])
                cum, buckets = 0, []
                for b, c in zip(h["bounds"], h["counts"]):
                    cum += c
                    buckets.append(("+Inf" if b is None else repr(float(b)), cum))
                if cls is HistogramMetricFamily:
                    fam[name].add_metric([w], buckets, sum_value=h["sum"])
                else:
                    fam[name].add_metric([w], buckets, gsum_value=h["sum"])
        yield from fam.values()


class _Server:
    def __init__(self, httpd, thread, registry):
        self.httpd, self.thread, self.registry = httpd, thread, registry
        self.address = httpd.server_address[:2]

    def shutdown(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _start(addr: str, collector: Collector) -> _Server:
    from prometheus_client import CollectorRegistry, start_http_server
    host, port = parse_addr(addr)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    try:
        httpd, thread = start_http_server(port, addr=host, registry=reg)   # kernel socket, own thread
    except OSError as exc:
        raise OSError(exc.errno, f"metrics endpoint {addr!r}: {exc.strerror}") from None
    return _Server(httpd, thread, reg)


def serve_loop(loop, addr: str) -> _Server:
    """Endpoint for one in-process loop (MTCPConfig(metrics=...)): each scrape runs
    ops.metrics_snapshot on the loop's thread (call_soon_threadsafe) and waits for it."""
    from . import ops
    label = getattr(loop, "_mtcp_ops_label", f"{os.getpid()}/0")

    def source():
        if loop.is_closed():
            return {label: {}}
        if threading.get_ident() == getattr(loop, "_thread_id", None):
            return {label: ops.metrics_snapshot(loop)}
        fut = concurrent.futures.Future()

        def snap():
            try:
                fut.set_result(ops.metrics_snapshot(loop))
            except BaseException as exc:           # reported as worker_up 0
                fut.set_exception(exc)
        try:
            loop.call_soon_threadsafe(snap)
            return {label: fut.result(timeout=5)}
        except Exception:
            return {label: {}}
    return _start(addr, Collector(source))


_fork_hooked = []
_fork_hook_set = False


def _close_in_child():
    """Worker processes forked by the supervisor must not keep the endpoint's socket open."""
    for srv in _fork_hooked:
        try:
            srv.httpd.socket.close()
        except OSError:
            pass
    _fork_hooked.clear()


def serve_supervisor(rundir: str, addr: str, nworkers: Optional[int] = None) -> _Server:
    """Endpoint of `mtcp-loop run --metrics`: asks every worker's control socket at each scrape."""
    from . import ops

    def source():
        out = {}
        for label, path in ops.instance_sockets(rundir):
            try:
                out[label] = ops.query(path, "metrics", timeout=5)
            except (OSError, ValueError):
                out[label] = {}
        return out
    srv = _start(addr, Collector(source))
    global _fork_hook_set
    if not _fork_hook_set:
        os.register_at_fork(after_in_child=_close_in_child)
        _fork_hook_set = True
    _fork_hooked.append(srv)
    return srv
