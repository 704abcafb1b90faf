"""mtcp_loop/links.py without root: config fields, validation messages, routing decisions, errors."""
import os

import pytest

from mtcp_loop.config import MTCPConfig
from mtcp_loop import links


def cfg(**kw):
    base = dict(backend="tap", ifname="tap7", ipv4="198.18.0.2/24", ipv6="2001:db8::2/64")
    base.update(kw)
    return MTCPConfig(**base)


def test_defaults_and_normalisation():
    c = cfg(ipv4="198.18.0.2", ipv6="2001:db8::2", mac="02-00-00-00-00-0A")
    assert c.ipv4 == "198.18.0.2/24" and c.ipv6 == "2001:db8::2/64"
    assert c.mac == "02:00:00:00:00:0a" and c.queue == 0 and c.nqueues == 1 and c.mtu is None
    c.validate()   # idempotent
    assert c.ipv4 == "198.18.0.2/24"
    assert MTCPConfig().backend == "loopback" and MTCPConfig().ifname is None


def test_env_variables():
    env = {"MTCP_BACKEND": "packet", "MTCP_IFNAME": "veth1", "MTCP_IPV4": "198.18.0.2/24",
           "MTCP_IPV4_GW": "198.18.0.1", "MTCP_QUEUE": "1", "MTCP_NQUEUES": "2", "MTCP_MTU": "9000",
           "MTCP_OFFLOAD": "0", "MTCP_XDP_MODE": "SKB", "MTCP_MAC": "auto"}
    c = MTCPConfig.from_env(env)
    assert (c.backend, c.ifname, c.queue, c.nqueues, c.mtu, c.offload, c.xdp_mode) == \
        ("packet", "veth1", 1, 2, 9000, False, "skb")
    assert c.ipv4_gw == "198.18.0.1"


@pytest.mark.parametrize("kw, msg", [
    (dict(backend="packet", ifname=None), "needs ifname"),
    (dict(ipv4=None, ipv6=None), "needs an address"),
    (dict(ipv4="198.18.0.2/33"), "ipv4"),
    (dict(ipv4="2001:db8::5/64"), "IPv4"),
    (dict(ipv4="127.0.0.5/8"), "cannot be an interface address"),
    (dict(ipv4_gw="10.0.0.1"), "not on the interface's network"),
    (dict(ipv6=None, ipv6_gw="2001:db8::1"), "ipv6_gw needs ipv6"),
    (dict(mac="01:00:00:00:00:01"), "unicast"),
    (dict(mac="zz"), "mac"),
    (dict(mtu=100), "mtu"),
    (dict(mtu=1000), "mtu must be >= 1280 with ipv6"),
    (dict(queue=2, nqueues=2), "queue must be < nqueues"),
    (dict(xdp_mode="turbo"), "xdp_mode"),
    (dict(ifname="x" * 20), "ifname"),
    (dict(backend="netmapx"), "backend"),
])
def test_validation_names_the_field(kw, msg):
    with pytest.raises((ValueError, TypeError)) as ei:
        cfg(**kw)
    assert msg in str(ei.value)


def test_owns_and_routes():
    c = cfg(ipv4_gw="198.18.0.1")
    assert links.owns(c, 2, "198.18.0.2") and links.owns(c, 10, "2001:db8::2")
    assert links.owns(c, 2, "0.0.0.0", listen=True) and not links.owns(c, 2, "0.0.0.0")
    assert not links.owns(c, 2, "127.0.0.1") and not links.owns(c, 2, "198.18.0.3")
    assert links.routes(c, 2, "198.18.0.1")            # on-link
    assert links.routes(c, 2, "198.19.5.5")            # via the IPv4 gateway
    assert links.routes(c, 10, "2001:db8::1")          # on-link IPv6
    assert not links.routes(c, 10, "2001:db9::1")      # off-link IPv6, no IPv6 gateway
    for host in ("127.0.0.1", "::1", "198.18.0.2", "224.0.0.1", "fe80::1", "::ffff:198.18.0.1", "localhost"):
        assert not links.routes(c, 2, host), host
    c4 = cfg(ipv6=None)
    assert not links.owns(c4, 10, "::", listen=True) and not links.routes(c4, 10, "2001:db8::1")


def test_missing_interface_message():
    from mtcp_loop._native import ffi, lib
    c = cfg(backend="packet", ifname="nosuchif0")
    with pytest.raises(OSError) as ei:
        links.open_link(c, ffi, lib)
    assert "does not exist in this network namespace" in str(ei.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the unprivileged message")
def test_tap_needs_root_message():
    from mtcp_loop._native import ffi, lib
    with pytest.raises(OSError) as ei:
        links.open_link(cfg(), ffi, lib)
    assert "needs root/CAP_NET_ADMIN" in str(ei.value)


def test_loop_with_real_backend_reports_link_error():
    """A loop whose backend cannot open reports the link error when the loop is created (not at
    the first connection), in one message naming the backend and the interface."""
    from mtcp_loop.policy import new_event_loop
    with pytest.raises(OSError, match="backend 'xdp'.*nosuchif0"):
        new_event_loop(cfg(backend="xdp", ifname="nosuchif0"), base="asyncio")


def test_tap_auto_mac_is_stable_unicast_local():
    a, b = links.tap_auto_mac("mtcptap0"), links.tap_auto_mac("mtcptap0")
    assert a == b and len(a) == 6 and a[0] == 0x02 and a != links.tap_auto_mac("tap1")
