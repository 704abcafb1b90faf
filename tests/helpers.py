"""Shared helpers for the Python suite (``from tests.helpers import ...``): loop kinds and the
uvloop-style mixin binding, TLS test certificates, the raw engine config of a testbed.

Each behaviour is a mixin class ``_TestX`` (methods ``test_*`` using ``self.loop``); ``bind(globals(),
_TestX)`` creates one concrete class per loop kind:

* ``asyncio``      - stock asyncio SelectorEventLoop over kernel sockets: the oracle;
* ``mtcp_uvloop``  - MTCPLoop on uvloop (when uvloop is installed);
* ``mtcp_asyncio`` - MTCPLoop on asyncio's selector loop;
* ``mtcp_vtime``   - MTCPLoop on asyncio's selector loop in virtual time (mtcp_loop/vtime.py), seed
  from MTCP_SEED or a fixed default, so a run replays; a mixin sets ``vtime_skip`` (reason) when
  its behaviour needs the real clock or real sockets. ``MTCP_VTIME_PCAP_DIR=dir`` writes one pcap
  per such test into dir (compare two runs byte for byte).

MTCP classes are never skipped: without the native extension they fail with the ImportError that
says how to build it (python mtcp_loop/_build.py or pip install -e .).
"""
from __future__ import annotations

import asyncio
import functools
import gc
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def extension_present() -> bool:
    try:
        return importlib.util.find_spec("mtcp_loop._mtcp_cffi") is not None
    except (ImportError, ValueError):
        return False


EXT = extension_present()
NO_EXT_REASON = ("mtcp_loop native extension not built (python mtcp_loop/_build.py); "
                 "MTCPLoop tests skipped")

try:
    import uvloop  # noqa: F401
    HAVE_UVLOOP = True
except ImportError:
    HAVE_UVLOOP = False

LOOP_KINDS = ["asyncio", "mtcp_uvloop", "mtcp_asyncio", "mtcp_vtime"]
try:
    VTIME_SEED = int(os.environ.get("MTCP_SEED", "0") or "0", 0) or 20261204
except ValueError:
    VTIME_SEED = 20261204


def make_loop(kind: str, **config):
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    from mtcp_loop.policy import new_event_loop
    if kind == "mtcp_vtime":
        config.setdefault("seed", VTIME_SEED)
        return new_event_loop(virtual_time=True, **config)
    base = kind.split("_", 1)[1]
    return new_event_loop(base=base, **config)


class LoopTestBase:
    """Per-test loop of ``self.kind``; ``self.run(coro)`` runs with a timeout."""

    kind = "asyncio"
    loop_config: dict = {}
    default_timeout = 60.0
    allow_loop_errors = False

    @property
    def is_mtcp(self):
        return self.kind.startswith("mtcp")

    def setup_method(self, method):
        config = dict(self.loop_config)
        cap_dir = os.environ.get("MTCP_VTIME_PCAP_DIR")
        if cap_dir and self.kind == "mtcp_vtime":     # one capture per test (replay comparisons)
            config.setdefault("pcap", os.path.join(cap_dir, f"{type(self).__name__}.{method.__name__}.pcap"))
        self.loop = make_loop(self.kind, **config)
        asyncio.set_event_loop(self.loop)
        self._exc_contexts = []
        self.loop.set_exception_handler(self._exc_handler)

    def _exc_handler(self, loop, context):
        self._exc_contexts.append(context)

    def teardown_method(self, method):
        loop = self.loop
        try:
            if not loop.is_closed():
                # cancel leftovers and close like asyncio.run does
                tasks = asyncio.all_tasks(loop)
                for t in tasks:
                    t.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio.set_event_loop(None)
            gc.collect()
        # nothing may reach the loop's exception handler (protocol errors, fatal transport errors...)
        assert self.allow_loop_errors or not self._exc_contexts, [(c.get("message"), c.get("exception")) for c in self._exc_contexts]

    def run(self, coro, timeout=None):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout or self.default_timeout))

    def stats(self):
        return self.loop.stats() if self.is_mtcp else None

    def assert_userspace(self, at_least=1):
        """On MTCP kinds: the engine carried at least `at_least` connections (both ends count)."""
        if not self.is_mtcp:
            return
        st = self.loop.stats()
        assert st["loop.userspace_connections"] >= at_least, st
        assert st["loop.kernel_connections"] == 0, st


def _kind_marks(kind):
    # MTCP kinds are never skipped: without the extension, make_loop raises the ImportError that
    # says how to build it, and the test fails.
    marks = []
    if kind in ("mtcp_uvloop", "uvloop") and not HAVE_UVLOOP:
        marks.append(pytest.mark.skip(reason="uvloop not installed"))
    return marks





def bind(ns: dict, *mixins, kinds=None, **attrs):
    """Create Test<Kind><Name> classes for each mixin and loop kind inside namespace ``ns``."""
    for mixin in mixins:
        name = mixin.__name__.lstrip("_")
        if name.startswith("Test"):
            name = name[4:]
        for kind in (kinds or LOOP_KINDS):
            cls_name = "Test_" + "".join(p.capitalize() for p in kind.split("_")) + "_" + name
            cls = type(cls_name, (mixin, LoopTestBase), dict(kind=kind, __module__=ns["__name__"], **attrs))
            for m in _kind_marks(kind):
                cls = m(cls)
            if kind == "mtcp_vtime":
                _apply_vtime_skips(cls, getattr(mixin, "vtime_skip", None))
            ns[cls_name] = cls


def _apply_vtime_skips(cls, spec):
    """Tests that need real sockets/threads/the real clock do not run in virtual time (marked)."""
    if not spec:
        return
    if isinstance(spec, str):
        pytest.mark.skip(reason=f"virtual time: {spec}")(cls)
        return
    for name, reason in spec.items():
        fn = getattr(cls, name)
        wrapped = pytest.mark.skip(reason=f"virtual time: {reason}")(
            functools.wraps(fn)(lambda self, *a, __fn=fn, **k: __fn(self, *a, **k)))
        setattr(cls, name, wrapped)


_CERT_CACHE = {}


def make_tls_certs(directory):
    """Self-signed CA + server certificate for localhost/127.0.0.1/::1 (cryptography)."""
    if "paths" in _CERT_CACHE:
        return _CERT_CACHE["paths"]
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtcp_loop test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory = str(directory)
    paths = {"ca": os.path.join(directory, "ca.pem"), "cert": os.path.join(directory, "cert.pem"),
             "key": os.path.join(directory, "key.pem")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    _CERT_CACHE["paths"] = paths
    return paths


def ssl_contexts(directory):
    import ssl
    p = make_tls_certs(directory)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(p["cert"], p["key"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(p["ca"])
    return server, client


def raw_engine_config(ffi, lib, info):
    """struct mtcp_config for a raw engine on the stack's side of a testbed (testbed info dict)."""
    import ipaddress
    cfg = ffi.new("struct mtcp_config *")
    lib.mtcp_config_default(cfg)
    cfg.link_type = lib.MTCP_LINK_ETHERNET
    cfg.mtu = info["mtu"]
    cfg.mac = list(bytes.fromhex(info["stack_mac"].replace(":", "")))
    cfg.ipv4 = list(ipaddress.IPv4Address(info["stack_v4"]).packed)
    cfg.ipv4_prefix = info["v4_prefix"]
    cfg.ipv6 = list(ipaddress.IPv6Address(info["stack_v6"]).packed)
    cfg.ipv6_prefix = info["v6_prefix"]
    return cfg
