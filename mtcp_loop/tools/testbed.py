"""Network-namespace testbed for the real ring-pair backends (TAP, AF_PACKET, AF_XDP).

Builds, in network namespaces it creates itself (never the root namespace), a kernel peer and a
place for the user-level stack to attach to::

    kind "tap":     [ns <prefix>-peer]  mtcptap0 (multi-queue TAP, vnet hdr)  198.18.0.1/24, 2001:db8::1/64
                    the stack attaches to the TAP's queues (open it inside the peer namespace:
                    ``with tb.stack_netns(): lib.mtcp_tap_open(...)``) and is 198.18.0.2 / 2001:db8::2.

    kind "packet"/"xdp":
                    [ns <prefix>-peer]  mtcp-p0  198.18.0.1/24, 2001:db8::1/64
                          |  veth
                    [ns <prefix>-stack] mtcp-s0  no addresses, IPv6 off (the kernel stays quiet);
                    the stack opens AF_PACKET / AF_XDP on mtcp-s0 inside that namespace and is
                    198.18.0.2 / 2001:db8::2 with mtcp-s0's MAC.

Everything goes through netlink (pyroute2) and a few ioctls (TUNSETIFF/TUNSETPERSIST for the
persistent TAP, SIOCETHTOOL for offloads) made from inside the namespaces; nothing is added to the
root namespace, and ``down()`` removes the namespaces (and with them every device in them).

For xdp the kernel peer's TX checksum offload and TSO/GSO are turned off (XDP frames carry no
checksum metadata, and a veth with XDP cannot take GSO super-frames); for tap and packet they are
left on (the backends honour partial checksums; TAP takes TSO frames).

Python API::

    tb = Testbed(prefix="mtcp")
    info = tb.up("tap")          # -> dict (namespaces, interface names, addresses, MACs)
    tb.status()                  # -> dict or None
    tb.down()
    with Testbed().running("xdp") as info: ...   # always torn down
    with tb.stack_netns(): ...   # run code (open sockets/devices) inside the stack's namespace
    tb.peer_ping("198.18.0.2", count=3)   # kernel-side echo requests, returns replies received
    tb.peer_run(["curl", "http://198.18.0.2/"])   # a command inside the peer namespace

CLI: ``mtcp-loop testbed up|down|status [--kind tap|packet|xdp] [--prefix P] [--json]``
(mtcp_loop/tools/cli/rings.py; needs pyroute2, the ``rings`` extra).
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import select
import struct
import subprocess
import time

KINDS = ("tap", "packet", "xdp")

PEER_V4 = "198.18.0.1"
STACK_V4 = "198.18.0.2"
V4_PREFIX = 24
PEER_V6 = "2001:db8::1"
STACK_V6 = "2001:db8::2"
V6_PREFIX = 64
TAP_IF = "mtcptap0"
PEER_IF = "mtcp-p0"
STACK_IF = "mtcp-s0"


def _tap_stack_mac() -> str:
    """The MAC the stack really uses on the testbed's TAP (backend tap, mac="auto": derived from
    the interface name, links.tap_auto_mac); the TAP's own MAC is the peer's."""
    from mtcp_loop.links import tap_auto_mac
    return ":".join(f"{b:02x}" for b in tap_auto_mac(TAP_IF))


TAP_STACK_MAC = _tap_stack_mac()

STATE_DIR = "/run/mtcp_loop"

# linux/if_tun.h, linux/sockios.h, linux/ethtool.h
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_MULTI_QUEUE = 0x0100
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17
_ETHTOOL_SSG = 0x19
_ETHTOOL_STSO = 0x1F
_ETHTOOL_SGSO = 0x24
_ETHTOOL_SGRO = 0x2C
_IFA_F_NODAD = 0x02


class TestbedError(RuntimeError):
    pass


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _pyroute2():
    try:
        from pyroute2 import NetNS, netns  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise TestbedError(f"the testbed needs pyroute2: pip install 'mtcp_loop[rings]' ({exc})") from exc
    return NetNS, netns


def is_root() -> bool:
    return os.geteuid() == 0


class Testbed:
    """A peer namespace + stack namespace topology. One instance per prefix."""

    def __init__(self, prefix: str = "mtcp", nqueues: int = 1):
        if not prefix or len(prefix) > 24 or "/" in prefix:
            raise ValueError("prefix must be 1..24 characters without '/'")
        self.prefix = prefix
        self.nqueues = max(1, int(nqueues))
        self.peer_ns = f"{prefix}-peer"
        self.stack_ns = f"{prefix}-stack"
        self.state_file = os.path.join(STATE_DIR, f"testbed-{prefix}.json")

    # ---------------------------------------------------------------- namespaces
    @contextlib.contextmanager
    def netns(self, name: str):
        """Run the body with the calling thread inside namespace `name` (sockets and devices
        opened there stay in it after the body)."""
        _, netns = _pyroute2()
        netns.pushns(name)
        try:
            yield
        finally:
            netns.popns()

    def stack_netns(self):
        """Where the stack opens its backend: the peer namespace for tap (the TAP device lives
        there), the stack namespace for packet/xdp."""
        st = self.status()
        kind = st["kind"] if st else "packet"
        return self.netns(self.peer_ns if kind == "tap" else self.stack_ns)

    def _preexec(self, name: str):
        def fn():
            _, netns = _pyroute2()
            netns.setns(name)
        return fn

    def peer_run(self, argv, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a command inside the peer namespace (kernel side)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(argv, preexec_fn=self._preexec(self.peer_ns), timeout=timeout, **kw)

    def peer_popen(self, argv, **kw) -> subprocess.Popen:
        return subprocess.Popen(argv, preexec_fn=self._preexec(self.peer_ns), **kw)

    def peer_ping(self, addr: str, count: int = 3, timeout: float = 2.0, interval: float = 0.1,
                  size: int = 56) -> int:
        """ICMP/ICMPv6 echo from the kernel peer namespace to `addr` (a raw socket opened inside
        that namespace; no ping binary needed). Returns how many of `count` echoes were answered
        with the right id, sequence and payload."""
        import socket
        ip = ipaddress.ip_address(addr)
        v6 = ip.version == 6
        with self.netns(self.peer_ns):
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                              socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
        try:
            ident = os.getpid() & 0xFFFF
            got = 0
            for seq in range(1, count + 1):
                payload = struct.pack("!d", time.time()) + bytes((seq + i) & 0xFF for i in range(size - 8))
                typ = 128 if v6 else 8
                hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq)
                if not v6:   # the kernel fills the ICMPv6 checksum itself
                    c = _csum(hdr + payload)
                    hdr = struct.pack("!BBHHH", typ, 0, c, ident, seq)
                s.sendto(hdr + payload, (addr, 0))
                end = time.monotonic() + timeout
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    r, _, _ = select.select([s], [], [], left)
                    if not r:
                        break
                    data, src = s.recvfrom(65535)
                    if not v6:
                        data = data[(data[0] & 15) * 4:]          # raw IPv4 sockets include the IP header
                    if len(data) < 8 or ipaddress.ip_address(src[0].split("%")[0]) != ip:
                        continue
                    t, _, _, rid, rseq = struct.unpack("!BBHHH", data[:8])
                    if t == (129 if v6 else 0) and rid == ident and rseq == seq and data[8:] == payload:
                        got += 1
                        break
                time.sleep(interval)
            return got
        finally:
            s.close()

    # ---------------------------------------------------------------- lifecycle
    def up(self, kind: str = "tap", offload: bool | None = None, mtu: int = 1500) -> dict:
        """Build the topology (tearing down a previous one of this prefix first)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not is_root():
            raise TestbedError("the testbed needs root (CAP_NET_ADMIN) to create network namespaces")
        if offload is None:
            offload = kind != "xdp"
        NetNS, netns = _pyroute2()
        self.down()
        netns.create(self.peer_ns)
        try:
            if kind == "tap":
                info = self._up_tap(NetNS, mtu)
            else:
                info = self._up_veth(NetNS, kind, offload, mtu)
        except BaseException:
            self.down()
            raise
        info.update(kind=kind, prefix=self.prefix, offload=offload, created=time.time())
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(self.state_file, "w") as f:
            json.dump(info, f)
        return info

    def _addr_peer(self, ns, index: int, mtu: int):
        ns.link("set", index=index, mtu=mtu)
        ns.addr("add", index=index, address=PEER_V4, prefixlen=V4_PREFIX)
        ns.addr("add", index=index, address=PEER_V6, prefixlen=V6_PREFIX, flags=_IFA_F_NODAD)
        ns.link("set", index=index, state="up")
        lo = ns.link_lookup(ifname="lo")
        if lo:
            ns.link("set", index=lo[0], state="up")

    def _up_tap(self, NetNS, mtu: int) -> dict:
        flags = _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR | _IFF_MULTI_QUEUE
        with self.netns(self.peer_ns):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", TAP_IF.encode(), flags))
                fcntl.ioctl(fd, _TUNSETPERSIST, 1)
            finally:
                os.close(fd)
            self._sysctl(f"net/ipv6/conf/{TAP_IF}/accept_dad", "0")
        with NetNS(self.peer_ns) as ns:
            idx = ns.link_lookup(ifname=TAP_IF)
            if not idx:
                raise TestbedError(f"{TAP_IF} did not appear in {self.peer_ns}")
            self._addr_peer(ns, idx[0], mtu)
            peer_mac = ns.get_links(idx[0])[0].get_attr("IFLA_ADDRESS")
        return {
            "peer_ns": self.peer_ns, "stack_ns": self.peer_ns, "peer_if": TAP_IF, "stack_if": TAP_IF,
            "peer_mac": peer_mac, "stack_mac": TAP_STACK_MAC, "nqueues": self.nqueues,
            "peer_v4": PEER_V4, "stack_v4": STACK_V4, "v4_prefix": V4_PREFIX,
            "peer_v6": PEER_V6, "stack_v6": STACK_V6, "v6_prefix": V6_PREFIX, "mtu": mtu,
        }

    def _up_veth(self, NetNS, kind: str, offload: bool, mtu: int) -> dict:
        _, netns = _pyroute2()
        netns.create(self.stack_ns)
        with NetNS(self.stack_ns) as ns:
            q = self.nqueues       # one veth queue per worker (AF_XDP binds to a queue)
            ns.link("add", ifname=STACK_IF, kind="veth", num_tx_queues=q, num_rx_queues=q,
                    peer={"ifname": PEER_IF, "net_ns_fd": self.peer_ns,
                          "num_tx_queues": q, "num_rx_queues": q})
            sidx = ns.link_lookup(ifname=STACK_IF)[0]
            ns.link("set", index=sidx, mtu=mtu)
        with self.netns(self.stack_ns):
            self._sysctl(f"net/ipv6/conf/{STACK_IF}/disable_ipv6", "1")
            if kind == "xdp":
                self._ethtool(STACK_IF, _ETHTOOL_SGRO, 0)
        with NetNS(self.stack_ns) as ns:
            ns.link("set", index=sidx, state="up")
            stack_mac = ns.get_links(sidx)[0].get_attr("IFLA_ADDRESS")
        with self.netns(self.peer_ns):
            self._sysctl(f"net/ipv6/conf/{PEER_IF}/accept_dad", "0")
            if not offload:
                for cmd in (_ETHTOOL_STSO, _ETHTOOL_SGSO, _ETHTOOL_STXCSUM):
                    self._ethtool(PEER_IF, cmd, 0)
        with NetNS(self.peer_ns) as ns:
            pidx = ns.link_lookup(ifname=PEER_IF)[0]
            self._addr_peer(ns, pidx, mtu)
            peer_mac = ns.get_links(pidx)[0].get_attr("IFLA_ADDRESS")
        return {
            "peer_ns": self.peer_ns, "stack_ns": self.stack_ns, "peer_if": PEER_IF, "stack_if": STACK_IF,
            "peer_mac": peer_mac, "stack_mac": stack_mac, "nqueues": self.nqueues,
            "peer_v4": PEER_V4, "stack_v4": STACK_V4, "v4_prefix": V4_PREFIX,
            "peer_v6": PEER_V6, "stack_v6": STACK_V6, "v6_prefix": V6_PREFIX, "mtu": mtu,
        }

    @staticmethod
    def _sysctl(key: str, value: str):
        # /proc/sys/net belongs to the namespace of the thread that opens it
        try:
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
        except OSError:
            pass

    @staticmethod
    def _ethtool(ifname: str, cmd: int, value: int):
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            ev = struct.pack("II", cmd, value)
            import array
            buf = array.array("B", ev)
            addr = buf.buffer_info()[0]
            ifr = struct.pack("16sP16x", ifname.encode(), addr)
            fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifr)
        except OSError:
            pass   # a feature the driver cannot change is not fatal
        finally:
            s.close()

    def down(self) -> bool:
        """Remove this prefix's namespaces (and every device in them). True if anything existed."""
        NetNS, netns = _pyroute2()
        existed = False
        names = set(netns.listnetns())
        if self.peer_ns in names:
            existed = True
            # the persistent TAP: delete it explicitly before its namespace goes
            try:
                with NetNS(self.peer_ns) as ns:
                    idx = ns.link_lookup(ifname=TAP_IF)
                    if idx:
                        ns.link("del", index=idx[0])
            except Exception:
                pass
        for name in (self.stack_ns, self.peer_ns):
            if name in names:
                existed = True
                try:
                    netns.remove(name)
                except OSError:
                    pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)
        return existed

    def status(self) -> dict | None:
        """The recorded topology plus what is live now, or None when it is down."""
        NetNS, netns = _pyroute2()
        names = set(netns.listnetns())
        if self.peer_ns not in names:
            return None
        try:
            with open(self.state_file) as f:
                info = json.load(f)
        except (OSError, ValueError):
            info = {"kind": "unknown", "peer_ns": self.peer_ns}
        live = {}
        for name in (self.peer_ns, self.stack_ns):
            if name not in names:
                continue
            with NetNS(name) as ns:
                for link in ns.get_links():
                    ifname = link.get_attr("IFLA_IFNAME")
                    if ifname == "lo":
                        continue
                    addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                             for a in ns.get_addr(index=link["index"])]
                    live[f"{name}/{ifname}"] = {"operstate": link.get_attr("IFLA_OPERSTATE"),
                                                "mac": link.get_attr("IFLA_ADDRESS"), "addrs": addrs}
        info["live"] = live
        return info

    @contextlib.contextmanager
    def running(self, kind: str = "tap", **kw):
        """Context manager: up(kind) on entry, down() on exit, whatever happens."""
        try:
            yield self.up(kind, **kw)
        finally:
            self.down()

    def wait_operstate_up(self, timeout: float = 5.0) -> bool:
        """TAP: operstate becomes UP once a queue is attached; veth: once both ends are up."""
        NetNS, _ = _pyroute2()
        st = self.status()
        if not st:
            return False
        ns_name, ifname = st["peer_ns"], st["peer_if"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with NetNS(ns_name) as ns:
                idx = ns.link_lookup(ifname=ifname)
                if idx and ns.get_links(idx[0])[0].get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN"):
                    return True
            time.sleep(0.05)
        return False


# ------------------------------------------------------------------------------------ bench rings
def bench_rings(kinds=KINDS, seconds: float = 1.0, frame_len: int = 64, prefix: str = "mtcpbench") -> dict:
    """Raw frame rates through each backend's rings (lib.mtcp_bench_link), each in its own
    testbed. tap: TAP fd <-> AF_PACKET on the TAP's kernel side; packet: AF_PACKET on both veth
    ends; xdp: AF_XDP on the stack end <-> AF_PACKET on the peer end. Plus the in-memory sim pair
    and the loopback switch. Returns {name: {"tx_fps":..., "rx_fps":...}}; errors as {"error": msg}.
    """
    from mtcp_loop._native import ffi, lib

    def run(tx, rx):
        t = ffi.new("double *")
        r = ffi.new("double *")
        rc = lib.mtcp_bench_link(tx, rx, seconds, frame_len, t, r)
        if rc < 0:
            raise TestbedError(f"mtcp_bench_link: {os.strerror(-rc)}")
        return {"tx_fps": round(t[0]), "rx_fps": round(r[0])}

    err = ffi.new("char[256]")
    out = {}
    a = ffi.new("mtcp_link **")
    b = ffi.new("mtcp_link **")
    if lib.mtcp_simlink_pair(1024, 1500, a, b) == 0:
        try:
            out["sim"] = run(a[0], b[0])
        finally:
            lib.mtcp_link_close(a[0])
            lib.mtcp_link_close(b[0])
    lo = lib.mtcp_loopback_open(1024, err, 256)
    if lo != ffi.NULL:
        try:
            out["loopback"] = run(lo, lo)
        finally:
            lib.mtcp_link_close(lo)
    if not is_root():
        for k in kinds:
            out[k] = {"error": "needs root"}
        return out
    for kind in kinds:
        tb = Testbed(prefix=prefix)
        links = []
        try:
            info = tb.up(kind)
            if kind == "tap":
                with tb.netns(tb.peer_ns):
                    t = lib.mtcp_tap_open(TAP_IF.encode(), 0, 1, 0, err, 256)
                    links.append(t)
                    if t == ffi.NULL:
                        raise TestbedError(ffi.string(err).decode())
                    p = lib.mtcp_packet_open(TAP_IF.encode(), 0, 1, 0, err, 256)
                    links.append(p)
                    if p == ffi.NULL:
                        raise TestbedError(ffi.string(err).decode())
                out["tap"] = {"tx": run(t, p)["tx_fps"], "rx": run(p, t)["rx_fps"]}
            else:
                with tb.netns(tb.stack_ns):
                    if kind == "xdp":
                        s = lib.mtcp_xdp_open(STACK_IF.encode(), 0, 0, err, 256)
                    else:
                        s = lib.mtcp_packet_open(STACK_IF.encode(), 0, 1, 0, err, 256)
                    links.append(s)
                    if s == ffi.NULL:
                        raise TestbedError(ffi.string(err).decode())
                with tb.netns(tb.peer_ns):
                    p = lib.mtcp_packet_open(PEER_IF.encode(), 0, 1, 0, err, 256)
                    links.append(p)
                    if p == ffi.NULL:
                        raise TestbedError(ffi.string(err).decode())
                out[kind] = {"tx": run(s, p)["tx_fps"], "rx": run(p, s)["rx_fps"]}
            out[kind].update(frame_len=frame_len, mtu=info["mtu"])
        except Exception as exc:  # report, keep going with the next backend
            out[kind] = {"error": str(exc)}
        finally:
            for link in reversed(links):
                if link != ffi.NULL:
                    lib.mtcp_link_close(link)
            tb.down()
    return out
