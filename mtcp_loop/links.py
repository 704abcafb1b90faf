"""Real ring pairs for MTCPLoop: build the engine's link and interface addressing from config.

``backend`` (MTCPConfig / ``MTCP_BACKEND``) picks the link of a loop's engine:

* ``loopback`` (default): the in-process user-space loopback (owns 127.0.0.0/8 and ::1); see loop.py.
* ``tap``:    a (multi-queue) TAP device with virtio-net headers (``mtcp_tap_open``). The stack is
  the "far" end of the device: the kernel's side of the TAP (in whatever namespace it lives) is the
  peer. ``ifname`` empty = a new tapN.
* ``packet``: AF_PACKET rings (TPACKET_V2 RX, TX ring with TSO) bound to an existing interface (a veth end, a NIC).
* ``xdp``:    an AF_XDP socket bound to (ifname, queue), copy mode on veth (``mtcp_xdp_open``).

With a real backend the engine's interface is ``link_type`` ETHERNET (ARP/NDP, ping, RST for closed
ports, the gateway for off-link destinations) and owns exactly the addresses given here
(``ipv4``/``ipv6`` with prefixes); 127.0.0.1/::1 and everything the stack cannot reach stay with the
kernel through the base loop.

Config fields (all with ``MTCP_<FIELD>`` variables; validated by :func:`validate_link_config`, called
from ``MTCPConfig.validate``):

=============  ==========================================================================
ifname         interface name (tap: device to create/attach; packet/xdp: existing device)
queue          queue index (packet: fanout member, xdp: NIC queue, tap: informative)
nqueues        queues of the device (tap: > 1 makes a multi-queue device)
mac            "auto" (tap: locally administered, derived from ifname; packet/xdp: the
               interface's own MAC)
               or "02:00:00:00:00:02"
ipv4, ipv6     "198.18.0.2/24", "2001:db8::2/64" (prefix defaults /24 and /64); None = none
ipv4_gw        gateway for off-link IPv4 destinations, None = on-link only
ipv6_gw        gateway for off-link IPv6 destinations
mtu            IP MTU; None = the interface's MTU (tap: 1500)
offload        tap: TSO/checksum offload (vnet header) - False opens with MTCP_LINK_NO_OFFLOAD
xdp_mode       "native" (default) or "skb" (generic XDP)
=============  ==========================================================================
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import re
import socket
import struct
from typing import Optional

__all__ = ["REAL_BACKENDS", "validate_link_config", "open_link", "fill_interface", "owns",
           "routes", "LinkError", "interface_mac", "interface_mtu", "describe", "set_queue_context",
           "queue_context", "in_worker"]

REAL_BACKENDS = ("tap", "packet", "xdp")

# This process's queue of a multi-queue device: set once in a forked worker (mtcp_loop/workers.py)
# with its queue, queue count, flow-table slots, shared counters and event fds; open_link then
# joins that queue and wraps the ring pair in the steering wrapper. None outside a worker.
_QUEUE_CTX: Optional[dict] = None


def set_queue_context(ctx: Optional[dict]) -> None:
    global _QUEUE_CTX
    _QUEUE_CTX = ctx


def queue_context() -> Optional[dict]:
    return _QUEUE_CTX


def in_worker() -> bool:
    """Is this process one per-core worker of a supervisor (mtcp_loop/workers.py)?"""
    return _QUEUE_CTX is not None

_SIOCGIFHWADDR = 0x8927
_SIOCGIFMTU = 0x8921
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class LinkError(OSError):
    """Opening a real link failed; the message names the backend and what to do."""


# --------------------------------------------------------------------------------------------
# validation (called from MTCPConfig.validate, the one place)
# --------------------------------------------------------------------------------------------
def _as_int(name, v, lo, hi):
    if isinstance(v, str):
        try:
            v = int(v.strip(), 0)
        except ValueError:
            raise ValueError(f"{name} must be an int, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _as_bool(name, v):
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean (1/0/true/false), got {v!r}")
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return v


def _none_text(v):
    return v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "off"))


def _iface(name, v, version, default_prefix):
    """"198.18.0.2/24" -> normalized str; validates host address and prefix."""
    if _none_text(v):
        return None
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str like {'198.18.0.2/24' if version == 4 else '2001:db8::2/64'}, "
                        f"got {type(v).__name__}")
    text = v.strip()
    if "/" not in text:
        text += f"/{default_prefix}"
    try:
        itf = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{name}: bad address/prefix {v!r}") from None
    if itf.version != version:
        raise ValueError(f"{name} must be an IPv{version} address/prefix, got {v!r}")
    ip = itf.ip
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or (version == 4 and ip == itf.network.broadcast_address
                                                                   and itf.network.prefixlen < 31):
        raise ValueError(f"{name}: {ip} cannot be an interface address")
    return str(itf)


def _gw(name, v, version):
    if _none_text(v):
        return None
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, got {type(v).__name__}")
    try:
        ip = ipaddress.ip_address(v.strip())
    except ValueError:
        raise ValueError(f"{name}: bad address {v!r}") from None
    if ip.version != version:
        raise ValueError(f"{name} must be an IPv{version} address, got {v!r}")
    return str(ip)


def validate_link_config(cfg) -> None:
    """Normalize and check the link fields of an MTCPConfig (raises ValueError/TypeError naming
    the field). Idempotent."""
    if cfg.ifname is not None:
        if not isinstance(cfg.ifname, str):
            raise TypeError(f"ifname must be a str, got {type(cfg.ifname).__name__}")
        cfg.ifname = cfg.ifname.strip() or None
        if cfg.ifname is not None and (len(cfg.ifname) > 15 or "/" in cfg.ifname or " " in cfg.ifname):
            raise ValueError(f"ifname must be a Linux interface name (<= 15 chars), got {cfg.ifname!r}")
    cfg.queue = _as_int("queue", cfg.queue, 0, 1023)
    cfg.nqueues = _as_int("nqueues", cfg.nqueues, 1, 256)
    if cfg.queue >= cfg.nqueues and cfg.backend in ("tap", "packet"):
        raise ValueError(f"queue must be < nqueues ({cfg.nqueues}), got {cfg.queue}")
    if cfg.mtu is not None and not (isinstance(cfg.mtu, str) and cfg.mtu.strip().lower() in ("", "none", "auto")):
        cfg.mtu = _as_int("mtu", cfg.mtu, 576, 65535)
    else:
        cfg.mtu = None
    mac = cfg.mac
    if _none_text(mac):
        mac = "auto"
    if not isinstance(mac, str):
        raise TypeError(f"mac must be a str ('auto' or 'aa:bb:cc:dd:ee:ff'), got {type(mac).__name__}")
    mac = mac.strip().lower().replace("-", ":")
    if mac != "auto":
        if not _MAC_RE.match(mac):
            raise ValueError(f"mac must be 'auto' or six hex bytes like 02:00:00:00:00:02, got {cfg.mac!r}")
        if int(mac[:2], 16) & 1:
            raise ValueError(f"mac must be a unicast address (first octet even), got {mac}")
    cfg.mac = mac
    cfg.ipv4 = _iface("ipv4", cfg.ipv4, 4, 24)
    cfg.ipv6 = _iface("ipv6", cfg.ipv6, 6, 64)
    cfg.ipv4_gw = _gw("ipv4_gw", cfg.ipv4_gw, 4)
    cfg.ipv6_gw = _gw("ipv6_gw", cfg.ipv6_gw, 6)
    if cfg.ipv4_gw and cfg.ipv4 and ipaddress.ip_address(cfg.ipv4_gw) not in ipaddress.ip_interface(cfg.ipv4).network:
        raise ValueError(f"ipv4_gw {cfg.ipv4_gw} is not on the interface's network {cfg.ipv4}")
    if cfg.ipv4_gw and not cfg.ipv4:
        raise ValueError("ipv4_gw needs ipv4")
    if cfg.ipv6_gw and not cfg.ipv6:
        raise ValueError("ipv6_gw needs ipv6")
    cfg.offload = _as_bool("offload", cfg.offload)
    xm = cfg.xdp_mode
    if not isinstance(xm, str):
        raise TypeError(f"xdp_mode must be a str, got {type(xm).__name__}")
    xm = xm.strip().lower()
    if xm not in ("native", "skb"):
        raise ValueError(f"xdp_mode must be one of native, skb; got {xm!r}")
    cfg.xdp_mode = xm
    if cfg.backend in REAL_BACKENDS:
        if cfg.backend in ("packet", "xdp") and not cfg.ifname:
            raise ValueError(f"backend {cfg.backend!r} needs ifname (an existing interface, e.g. a veth end)")
        if not cfg.ipv4 and not cfg.ipv6:
            raise ValueError(f"backend {cfg.backend!r} needs an address: ipv4 (e.g. '198.18.0.2/24') "
                             "and/or ipv6 (e.g. '2001:db8::2/64')")
        if cfg.ipv6 and cfg.mtu is not None and cfg.mtu < 1280:
            raise ValueError(f"mtu must be >= 1280 with ipv6, got {cfg.mtu}")


# --------------------------------------------------------------------------------------------
# interface facts (current network namespace)
# --------------------------------------------------------------------------------------------
def _ifreq(name: str, req: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s.fileno(), req, struct.pack("16s16x", name.encode()[:15]))


def interface_mac(name: str) -> Optional[bytes]:
    """The interface's hardware address in the current namespace, or None."""
    try:
        r = _ifreq(name, _SIOCGIFHWADDR)
    except OSError:
        return None
    return bytes(r[18:24])


def interface_mtu(name: str) -> Optional[int]:
    try:
        r = _ifreq(name, _SIOCGIFMTU)
    except OSError:
        return None
    return struct.unpack_from("i", r, 16)[0]


def _random_mac() -> bytes:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02          # locally administered, unicast
    return bytes(b)


def tap_auto_mac(ifname: str) -> bytes:
    """The stack's MAC on TAP device `ifname` with mac="auto": locally administered unicast,
    derived from the name (02:xx:xx:xx:xx:xx)."""
    import hashlib
    return b"\x02" + hashlib.sha256(b"mtcp_loop/tap/" + ifname.encode()).digest()[:5]


def _mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _privilege_hint() -> str:
    return "run as root or grant CAP_NET_ADMIN/CAP_NET_RAW (e.g. inside `mtcp-loop testbed up`'s namespace)"


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def open_link(cfg, ffi, lib):
    """Open the backend's ring pair. Returns (link, mac_bytes). Raises LinkError with a clear
    message (privileges, missing interface, unsupported kernel feature). In a worker (a queue
    context is set): this worker's queue of the device, wrapped by the steering wrapper."""
    backend = cfg.backend
    ctx = _QUEUE_CTX
    err = ffi.new("char[]", 256)
    name = (cfg.ifname or "").encode()
    flags = 0
    if not cfg.offload:
        flags |= lib.MTCP_LINK_NO_OFFLOAD
    if backend in ("packet", "xdp") and interface_mac(cfg.ifname) is None:
        raise LinkError(errno.ENODEV, f"backend {backend!r}: interface {cfg.ifname!r} does not exist in this "
                        "network namespace (create it first, e.g. `mtcp-loop testbed up`, and run inside "
                        "its namespace)")
    if backend == "tap":
        link = lib.mtcp_tap_open(name, cfg.queue, cfg.nqueues, flags, err, 256)
    elif backend == "packet":
        if ctx is not None:
            flags |= lib.MTCP_PACKET_FANOUT_CBPF        # the kernel's fanout follows the flow table
        link = lib.mtcp_packet_open(name, cfg.queue, cfg.nqueues, flags, err, 256)
    elif backend == "xdp":
        if cfg.xdp_mode == "skb":
            flags |= lib.MTCP_XDP_SKB_MODE
        link = lib.mtcp_xdp_open(name, cfg.queue, flags, err, 256)
    else:
        raise ValueError(f"open_link: backend {backend!r} is not a real backend")
    if link == ffi.NULL:
        msg = ffi.string(err).decode("utf-8", "replace")
        low = msg.lower()
        perm = ("eperm" in low or "eacces" in low or "permitted" in low or "permission" in low
                or "capab" in low)
        if perm or (os.geteuid() != 0 and backend in REAL_BACKENDS):
            raise LinkError(errno.EPERM, f"backend {backend!r} needs root/CAP_NET_ADMIN: {msg} "
                            f"({_privilege_hint()})")
        code = errno.ENODEV if "no such device" in low or "enodev" in low else errno.EIO
        raise LinkError(code, f"backend {backend!r} on {cfg.ifname or '(new tap)'!r}: {msg}")
    if cfg.mac != "auto":
        mac = _mac_bytes(cfg.mac)
    elif backend == "tap":
        # the kernel side of the TAP has its own MAC; we are another host. Stable per device name:
        # a restarted stack keeps its MAC, so the peer's neighbour cache stays right.
        mac = tap_auto_mac(cfg.ifname) if cfg.ifname else _random_mac()
    else:
        mac = interface_mac(cfg.ifname) or _random_mac()
    if ctx is not None:
        link = _steer(link, backend, ctx, ffi, lib)
    return link, mac


def _eph_range(ffi, lib):
    c = ffi.new("struct mtcp_config *")
    lib.mtcp_config_default(c)
    return int(c.eph_port_lo), int(c.eph_port_hi)


def _steer(link, backend, ctx, ffi, lib):
    """Wrap a worker's queue in the steering wrapper (flow table shared by the workers, hand-off
    of misdirected frames to their owner). Keeps the C buffers alive in ctx."""
    n = ctx["nqueues"]
    sc = ffi.new("struct mtcp_steer_cfg *")
    sc.queue = ctx["queue"]
    sc.nqueues = n
    sc.eph_lo, sc.eph_hi = _eph_range(ffi, lib)
    flags = 0
    if backend in ("tap", "packet") and n > 1:
        flags |= lib.MTCP_STEER_INSTALL
    if backend == "xdp":
        flags |= lib.MTCP_STEER_HANDOFF
    sc.flags = flags
    slots = ffi.new("uint32_t[]", ctx["slots"])
    sc.slots = slots
    shm = ctx.get("shm")
    if shm is not None:
        buf = ffi.from_buffer(shm)
        sc.shm = buf
        sc.shm_len = len(shm)
        ctx["_shm_buf"] = buf
    evfds = ffi.new("int32_t[]", ctx["evfds"])
    sc.evfds = evfds
    ctx["_keep"] = (slots, evfds)
    err = ffi.new("char[]", 256)
    w = lib.mtcp_steer_wrap(link, sc, err, 256)
    if w == ffi.NULL:
        lib.mtcp_link_close(link)
        raise OSError(errno.EIO, f"steering for queue {ctx['queue']}/{n}: {ffi.string(err).decode()}")
    ctx["steer_link"] = w
    return w


def fill_interface(cfg, ffi, c, mac: bytes) -> None:
    """Fill the interface part of a struct mtcp_config for a real (Ethernet) backend."""
    from ._native import lib
    c.link_type = lib.MTCP_LINK_ETHERNET
    c.own_prefix = 0
    mtu = cfg.mtu
    if mtu is None and cfg.ifname and cfg.backend != "tap":
        mtu = interface_mtu(cfg.ifname)
    c.mtu = mtu or 1500
    ffi.memmove(c.mac, mac, 6)
    if cfg.ipv4:
        itf = ipaddress.IPv4Interface(cfg.ipv4)
        ffi.memmove(c.ipv4, itf.ip.packed, 4)
        c.ipv4_prefix = itf.network.prefixlen
        if cfg.ipv4_gw:
            ffi.memmove(c.ipv4_gw, ipaddress.IPv4Address(cfg.ipv4_gw).packed, 4)
    if cfg.ipv6:
        itf6 = ipaddress.IPv6Interface(cfg.ipv6)
        ffi.memmove(c.ipv6, itf6.ip.packed, 16)
        c.ipv6_prefix = itf6.network.prefixlen
        if cfg.ipv6_gw:
            ffi.memmove(c.ipv6_gw, ipaddress.IPv6Address(cfg.ipv6_gw).packed, 16)


# --------------------------------------------------------------------------------------------
# routing decisions for the loop (which addresses the stack owns / reaches)
# --------------------------------------------------------------------------------------------
def _ip(host):
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def owns(cfg, family, host, listen=False) -> bool:
    """Does the stack own (host) as a local address? With listen=True the wildcard of a family the
    stack has an address in counts too."""
    ip = _ip(host)
    if ip is None:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return False
    mine = cfg.ipv4 if ip.version == 4 else cfg.ipv6
    if not mine:
        return False
    if listen and int(ip) == 0:
        return True
    return ip == ipaddress.ip_interface(mine).ip


def routes(cfg, family, host) -> bool:
    """Should an outgoing connection to host take the stack? Yes for any address of a family the
    stack has, that is on-link or reachable through the configured gateway; never loopback,
    multicast, unspecified or the stack's own address."""
    ip = _ip(host)
    if ip is None:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return False
    mine = cfg.ipv4 if ip.version == 4 else cfg.ipv6
    if not mine:
        return False
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or (ip.version == 6 and ip.is_link_local):
        return False
    itf = ipaddress.ip_interface(mine)
    if ip == itf.ip:
        return False
    if ip in itf.network:
        return True
    return bool(cfg.ipv4_gw if ip.version == 4 else cfg.ipv6_gw)


def describe(cfg) -> str:
    parts = [f"backend={cfg.backend}", f"ifname={cfg.ifname or '-'}", f"queue={cfg.queue}/{cfg.nqueues}"]
    for k in ("ipv4", "ipv4_gw", "ipv6", "ipv6_gw", "mtu", "mac"):
        v = getattr(cfg, k)
        if v is not None:
            parts.append(f"{k}={v}")
    return " ".join(parts)
