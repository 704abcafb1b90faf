"""MTCPConfig: the one configuration object of mtcp_loop.

Every field has a documented default, is validated in one place (``MTCPConfig.validate``, which
raises ``ValueError``/``TypeError`` naming the field) and can be set from an ``MTCP_<FIELD>``
environment variable (``MTCP_MAX_CONNS=32768``, ``MTCP_IMPAIR="loss=0.01,delay=5ms"`` ...), so a
third-party application or test suite runs on the stack with no code change.

Precedence: explicit keyword arguments > ``MTCP_*`` environment variables > defaults.

Fields left at ``None`` keep the C engine's default (``mtcp_config_default``), documented in
native/include/mtcp.h.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Tuple

__all__ = ["MTCPConfig", "ImpairConfig", "parse_impair"]

LOOPBACK_MAX_CONNS = 65536   # default max_conns on the loopback backend (see MTCPConfig.max_conns)
_BACKENDS = ("loopback", "tap", "packet", "xdp")
_BASES = ("auto", "uvloop", "asyncio")
_FALLBACKS = ("kernel", "error")
_CCS = ("cubic", "reno")
_SYNCOOKIES = ("off", "on_overflow", "always")


@dataclass
class ImpairConfig:
    """Impairment applied to every frame of the loop's link (both directions), seeded.

    String form (``MTCP_IMPAIR``): ``"loss=0.01,delay=5ms,jitter=1ms,reorder=0.1,duplicate=0.01,
    corrupt=0.001,rate=100mbit,seed=7"``. Rates are probabilities in [0, 1] (or N%); durations take
    us/ms/s suffixes (bare numbers are milliseconds); rate takes bit/kbit/mbit/gbit (bits/s) or
    bps/kbps/mbps/gbps (bytes/s) suffixes - the same grammar as the C mtcp_impair_parse.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_us: int = 0
    jitter_us: int = 0
    rate_bps: int = 0
    seed: int = 1

    def validate(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"impair.{name} must be a number, got {type(v).__name__}")
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"impair.{name} must be a probability in [0, 1], got {v!r}")
        for name in ("delay_us", "jitter_us", "rate_bps", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"impair.{name} must be an int, got {type(v).__name__}")
            if v < 0:
                raise ValueError(f"impair.{name} must be >= 0, got {v!r}")

    @property
    def active(self) -> bool:
        return any((self.loss, self.duplicate, self.reorder, self.corrupt, self.delay_us,
                    self.jitter_us, self.rate_bps))


_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$")
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?\s*$", re.I)


def _parse_duration_us(key: str, text: str) -> int:
    m = _DUR.match(text)
    if not m:
        raise ValueError(f"impair.{key}: bad duration {text!r} (use e.g. 500us, 5ms, 1s; bare = ms)")
    mult = {"us": 1, None: 1000, "ms": 1000, "s": 1000000}[m.group(2)]
    return int(round(float(m.group(1)) * mult))


def _parse_rate_bps(text: str) -> int:
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"impair.rate: bad rate {text!r} (use e.g. 100mbit)")
    unit = (m.group(2) or "bit").lower()
    mult = {"bit": 1, "kbit": 1000, "mbit": 1000000, "gbit": 1000000000,
            "bps": 8, "kbps": 8000, "mbps": 8000000, "gbps": 8000000000}[unit]
    return int(float(m.group(1)) * mult)


def parse_impair(text: str) -> Optional[ImpairConfig]:
    """Parse ``"loss=0.01,delay=5ms,..."``; empty/"none"/"off" -> None."""
    text = (text or "").strip()
    if text.lower() in ("", "none", "off", "0"):
        return None
    imp = ImpairConfig()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"impair: expected key=value, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        k = k.lower()
        try:
            if k in ("loss", "duplicate", "dup", "reorder", "corrupt"):
                k = "duplicate" if k == "dup" else k
                val = v[:-1] if v.endswith("%") else v
                f = float(val) / (100.0 if v.endswith("%") else 1.0)
                setattr(imp, k, f)
            elif k in ("delay", "jitter"):
                setattr(imp, k + "_us", _parse_duration_us(k, v))
            elif k == "rate":
                imp.rate_bps = _parse_rate_bps(v)
            elif k == "seed":
                imp.seed = int(v, 0)
            else:
                raise ValueError(f"impair: unknown key {k!r} (known: loss, duplicate, reorder, "
                                 "corrupt, delay, jitter, rate, seed)")
        except ValueError as exc:
            if str(exc).startswith("impair"):
                raise
            raise ValueError(f"impair.{k}: bad value {v!r}") from None
    imp.validate()
    return imp


def _to_bool(name: str, text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected a boolean (1/0/true/false), got {text!r}")


@dataclass
class MTCPConfig:
    """Configuration of an MTCPLoop and its engine. See the module docstring for precedence."""

    #: Which link the engine runs on. "loopback": the process-wide in-process user-space loopback
    #: (owns 127.0.0.0/8 and ::1; no root, no device). "tap", "packet", "xdp": real ring pairs
    #: (mtcp_loop/links.py; see the ifname... fields below).
    backend: str = "loopback"
    #: Base loop class: "auto" (uvloop when installed, else asyncio's selector loop), "uvloop", "asyncio".
    base: str = "auto"
    #: Destinations the stack does not own: "kernel" (use the base loop unchanged) or "error"
    #: (raise OSError(EADDRNOTAVAIL) naming the address).
    fallback: str = "kernel"
    #: Loopback mode: a listener on the stack also listens on the same port on the kernel's
    #: 127.0.0.1/::1 (so curl, blocking sockets and other processes reach it).
    kernel_mirror: bool = True
    #: Warn (once per listener / destination, naming the call) when TCP on an address the stack
    #: owns ends up on kernel TCP (also on in the loop's debug mode).
    warn_kernel: bool = False
    #: sock_connect(s, ...) to a stack server also connects s itself over kernel TCP (the server
    #: holds that connection back), so s.getpeername() and s's own send/recv work; the first use
    #: decides where the connection lives (docs/architecture.md). Costs one kernel connection per
    #: sock_connect (aiohttp's client opens connections this way), hence off by default: then s
    #: stays unconnected and only the loop's methods (sock_*, create_connection(sock=)) use it.
    connected_socket: bool = False
    #: Connection blocks (listeners + connections + TIME-WAIT). None: 65536 on the loopback backend
    #: (both ends of an in-process connection live in this process's engines, so 10,000 concurrent
    #: connections need 20,000 blocks), else the C default 16384.
    max_conns: Optional[int] = None
    #: Per-connection send / receive buffer bytes, C default 262144.
    sndbuf: Optional[int] = None
    rcvbuf: Optional[int] = None
    #: Shared buffer pool: chunks x chunk_size bytes, C default 32768 x 2048.
    max_chunks: Optional[int] = None
    chunk_size: Optional[int] = None
    #: Engine event queue capacity, C default 65536.
    max_events: Optional[int] = None
    #: Congestion control: "cubic" (default) or "reno".
    cc: str = "cubic"
    #: Secret for ISNs, SYN cookies and port choice; 0 = the engine picks one.
    seed: int = 0
    #: Write every frame of the link to this pcap file.
    pcap: Optional[str] = None
    #: Impairment of the link (ImpairConfig, a dict of its fields, or the "loss=..,delay=.." string).
    impair: Optional[Any] = None
    #: TCP options offered/accepted.
    sack: bool = True
    timestamps: bool = True
    window_scaling: bool = True
    #: TCP_NODELAY on new connections (asyncio sets it on every TCP transport; so do we).
    nodelay: bool = True
    #: SYN cookies: "off", "on_overflow" (default), "always".
    syncookies: str = "on_overflow"
    #: Timers in microseconds (None = C default: 200 ms min RTO, 40 ms delayed ACK, 30 s MSL).
    min_rto_us: Optional[int] = None
    delack_us: Optional[int] = None
    msl_us: Optional[int] = None
    #: Orphaned FIN-WAIT-2 timeout (Linux tcp_fin_timeout; C default 60 s; 0 = 2*MSL).
    fin_timeout_us: Optional[int] = None
    #: RACK-TLP transmit-record sets (one per connection with data in flight; C default
    #: max_conns/4 within 16..4096; 0 = no RACK, RFC 6675 DupThresh only).
    max_rack: Optional[int] = None
    #: Initial RTO (C default 1 s), SYN retransmissions before ETIMEDOUT (6), data RTO expiries
    #: before ETIMEDOUT (15).
    initial_rto_us: Optional[int] = None
    syn_retries: Optional[int] = None
    max_retries: Optional[int] = None
    #: Reply rate limits (token buckets per engine; what they suppress is counted, e.g.
    #: rst_ratelimited): RSTs to segments without a connection per second and burst (C default
    #: 10000/s, 1000), echo replies (1000/s, 50: Linux icmp_msgs_per_sec/burst), ARP requests and
    #: neighbour solicitations per second (100), and the per-connection interval between ACKs
    #: answering invalid segments (500 ms: Linux tcp_invalid_ratelimit); 0 = unlimited.
    rst_ratelimit: Optional[int] = None
    rst_burst: Optional[int] = None
    icmp_ratelimit: Optional[int] = None
    icmp_burst: Optional[int] = None
    solicit_ratelimit: Optional[int] = None
    invalid_ratelimit_ms: Optional[int] = None
    #: RFC 5961 challenge ACKs per second per engine (C default 1000, Linux tcp_challenge_ack_limit).
    challenge_ack_limit: Optional[int] = None
    #: Slots of the loopback attachment's rings.
    loopback_slots: int = 4096
    #: Events taken from the engine per mtcp_engine_events call.
    event_batch: int = 1024
    #: Real-ring interface (backend tap/packet/xdp; see mtcp_loop/links.py): interface name,
    #: queue / queue count, MAC ("auto"), "198.18.0.2/24"-style addresses, gateways, IP MTU
    #: (None = the interface's), TAP offloads, XDP attach mode ("native"/"skb").
    ifname: Optional[str] = None
    queue: int = 0
    nqueues: int = 1
    mac: str = "auto"
    ipv4: Optional[str] = None
    ipv4_gw: Optional[str] = None
    ipv6: Optional[str] = None
    ipv6_gw: Optional[str] = None
    mtu: Optional[int] = None
    offload: bool = True
    xdp_mode: str = "native"
    #: Prometheus endpoint "ADDR:PORT" (":9100" = every address) served on the kernel stack with
    #: prometheus_client for this loop (``mtcp-loop run --metrics``: one endpoint in the
    #: supervisor for all workers). See docs/operations.md.
    metrics: Optional[str] = None
    #: Instance name under which this in-process loop serves a control socket
    #: ($MTCP_RUNDIR/NAME/loop-PID-K.sock) so that `mtcp-loop ss/top/capture --name NAME` see it.
    control: Optional[str] = None
    #: Virtual time (mtcp_loop/vtime.py, docs/testing.md): loop.time(), the engine and the link
    #: read one virtual clock that jumps to the next timer when nothing is ready; needs the
    #: loopback backend and the asyncio base; implies fallback="error", no kernel mirror and a
    #: concrete seed (drawn when 0).
    virtual_time: bool = False
    #: Put the fault-scripting wrapper on the link (loop.faults; virtual_time implies it).
    faults: bool = False

    _INT_FIELDS = ("max_conns", "sndbuf", "rcvbuf", "max_chunks", "chunk_size", "max_events",
                   "seed", "min_rto_us", "delack_us", "msl_us", "fin_timeout_us", "max_rack", "initial_rto_us", "syn_retries",
                   "max_retries", "loopback_slots", "event_batch", "rst_ratelimit", "rst_burst", "icmp_ratelimit",
                   "icmp_burst", "solicit_ratelimit", "invalid_ratelimit_ms", "challenge_ack_limit")
    _BOOL_FIELDS = ("kernel_mirror", "warn_kernel", "connected_socket", "sack", "timestamps",
                    "window_scaling", "nodelay", "virtual_time", "faults")

    def __post_init__(self) -> None:
        self.validate()

    # -- validation (the one place) ---------------------------------------------------------
    def validate(self) -> "MTCPConfig":
        def choice(name, allowed):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a str, got {type(v).__name__}")
            v = v.strip().lower()
            if v not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {v!r}")
            setattr(self, name, v)

        choice("backend", _BACKENDS)
        choice("base", _BASES)
        choice("fallback", _FALLBACKS)
        choice("cc", _CCS)
        choice("syncookies", _SYNCOOKIES)
        for name in self._BOOL_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        limits = {
            "max_conns": (4, 1 << 24), "sndbuf": (2048, 1 << 30), "rcvbuf": (2048, 1 << 30),
            "max_chunks": (16, 1 << 26), "chunk_size": (256, 65536), "max_events": (16, 1 << 24),
            "seed": (0, (1 << 64) - 1), "min_rto_us": (1000, 60000000),
            "delack_us": (0, 40000), "msl_us": (0, 600000000), "fin_timeout_us": (0, 600000000), "max_rack": (0, 1 << 20),
            "initial_rto_us": (1000, 60000000), "syn_retries": (0, 255), "max_retries": (1, 255),
            "loopback_slots": (64, 1 << 20), "event_batch": (1, 1 << 20),
            "rst_ratelimit": (0, 1 << 30), "rst_burst": (1, 1000000), "icmp_ratelimit": (0, 1 << 30),
            "icmp_burst": (1, 1000000), "solicit_ratelimit": (0, 1 << 30), "invalid_ratelimit_ms": (0, 60000),
            "challenge_ack_limit": (0, 1 << 30),
        }
        for name in self._INT_FIELDS:
            v = getattr(self, name)
            if v is None and name not in ("seed", "loopback_slots", "event_batch"):
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            lo, hi = limits[name]
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
        if self.loopback_slots & (self.loopback_slots - 1):
            raise ValueError(f"loopback_slots must be a power of two, got {self.loopback_slots}")
        if self.pcap is not None and not isinstance(self.pcap, (str, os.PathLike)):
            raise TypeError(f"pcap must be a path, got {type(self.pcap).__name__}")
        if self.pcap is not None:
            self.pcap = os.fspath(self.pcap) or None
        for name in ("metrics", "control"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{name} must be a str, got {type(v).__name__}")
            if v is not None:
                setattr(self, name, v.strip() or None)
        if self.metrics is not None:
            parse_addr(self.metrics)
        if self.control is not None and ("/" in self.control or self.control in (".", "..")):
            raise ValueError(f"control must be an instance name (no '/'), got {self.control!r}")
        imp = self.impair
        if isinstance(imp, str):
            imp = parse_impair(imp)
        elif isinstance(imp, Mapping):
            try:
                imp = ImpairConfig(**imp)
            except TypeError as exc:
                raise TypeError(f"impair: {exc}") from None
        elif imp is not None and not isinstance(imp, ImpairConfig):
            raise TypeError(f"impair must be an ImpairConfig, dict or str, got {type(imp).__name__}")
        if imp is not None:
            imp.validate()
        self.impair = imp
        if self.virtual_time:
            if self.backend != "loopback":
                raise ValueError(f"virtual_time needs backend='loopback' (a real ring runs in real "
                                 f"time), got backend={self.backend!r}")
            if self.base == "uvloop":
                raise ValueError("virtual_time needs base='asyncio' or 'auto' (libuv reads the OS "
                                 "clock), got base='uvloop'")
        from .links import validate_link_config
        validate_link_config(self)
        return self

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "MTCPConfig":
        """Defaults, then MTCP_* variables, then keyword overrides; validated."""
        env = os.environ if environ is None else environ
        names = cls.field_names()
        kw: dict = {}
        for name in names:
            key = "MTCP_" + name.upper()
            if key not in env:
                continue
            text = env[key]
            try:
                if name in cls._BOOL_FIELDS:
                    kw[name] = _to_bool(name, text)
                elif name in cls._INT_FIELDS:
                    t = text.strip()
                    kw[name] = None if t.lower() in ("", "none", "default") else int(t, 0)
                elif name == "pcap":
                    kw[name] = text or None
                else:
                    kw[name] = text
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        for k in overrides:
            if k not in names:
                raise TypeError(f"unknown mtcp_loop config field {k!r} (known: {', '.join(names)})")
        kw.update(overrides)
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"mtcp_loop config: {exc}") from None

    @classmethod
    def coerce(cls, config: Optional["MTCPConfig"] = None, **overrides: Any) -> "MTCPConfig":
        """``config`` (if given) with overrides applied, else from_env(**overrides)."""
        if config is None:
            return cls.from_env(**overrides)
        if not isinstance(config, MTCPConfig):
            raise TypeError(f"config must be an MTCPConfig, got {type(config).__name__}")
        if overrides:
            for k in overrides:
                if k not in cls.field_names():
                    raise TypeError(f"unknown mtcp_loop config field {k!r}")
            return dataclasses.replace(config, **overrides)
        return config

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d

    # -- mapping onto struct mtcp_config ------------------------------------------------------
    def fill_c_config(self, ffi, lib, c) -> None:
        """Fill an already mtcp_config_default()-initialised struct mtcp_config."""
        for name in ("max_conns", "sndbuf", "rcvbuf", "max_chunks", "chunk_size", "max_events",
                     "min_rto_us", "delack_us", "msl_us", "fin_timeout_us", "max_rack",
                     "initial_rto_us", "syn_retries", "max_retries", "rst_ratelimit", "rst_burst",
                     "icmp_ratelimit", "icmp_burst", "solicit_ratelimit", "invalid_ratelimit_ms",
                     "challenge_ack_limit"):
            v = getattr(self, name)
            if v is not None:
                setattr(c, name, v)
        if self.max_conns is None and self.backend == "loopback":
            c.max_conns = LOOPBACK_MAX_CONNS
        c.cc = lib.MTCP_CC_RENO if self.cc == "reno" else lib.MTCP_CC_CUBIC
        c.sack = int(self.sack)
        c.timestamps = int(self.timestamps)
        c.window_scaling = int(self.window_scaling)
        c.nodelay_default = int(self.nodelay)
        c.syncookies = {"off": lib.MTCP_SYNCOOKIES_OFF, "on_overflow": lib.MTCP_SYNCOOKIES_ON_OVERFLOW,
                        "always": lib.MTCP_SYNCOOKIES_ALWAYS}[self.syncookies]
        c.seed = self.seed


def _unknown_field_check(init):
    """MTCPConfig(bogus=1) names the known fields, as new_event_loop(bogus=1) does."""
    import functools

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        names = MTCPConfig.field_names()
        for k in kwargs:
            if k not in names:
                raise TypeError(f"unknown mtcp_loop config field {k!r} (known: {', '.join(names)})")
        init(self, *args, **kwargs)
    return __init__


MTCPConfig.__init__ = _unknown_field_check(MTCPConfig.__init__)


def parse_addr(spec: str) -> Tuple[str, int]:
    """"ADDR:PORT", ":PORT", "PORT" or "[v6]:PORT" -> (addr, port); ValueError naming the spec."""
    if not isinstance(spec, str):
        raise TypeError(f"metrics must be an 'ADDR:PORT' string, got {type(spec).__name__}")
    s = spec.strip()
    host, port = "127.0.0.1", s
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1:].startswith(":"):
            raise ValueError(f"metrics: bad address {spec!r} (expected [ADDR]:PORT)")
        host, port = s[1:end], s[end + 2:]
    elif ":" in s:
        host, port = s.rsplit(":", 1)
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"metrics: bad port in {spec!r}")
    return host, int(port)
