"""MTCPConfig: defaults, validation naming the field, MTCP_* environment variables, impair grammar.
Needs no native extension."""
import pytest

from mtcp_loop.config import ImpairConfig, MTCPConfig, parse_impair


def test_defaults():
    c = MTCPConfig()
    assert c.backend == "loopback" and c.fallback == "kernel" and c.base == "auto"
    assert c.kernel_mirror is True and c.impair is None and c.max_conns is None


@pytest.mark.parametrize("kw, exc, field", [
    ({"max_conns": 1}, ValueError, "max_conns"),
    ({"max_conns": "many"}, TypeError, "max_conns"),
    ({"fallback": "maybe"}, ValueError, "fallback"),
    ({"base": "trio"}, ValueError, "base"),
    ({"cc": "bbr"}, ValueError, "cc"),
    ({"sack": 1}, TypeError, "sack"),
    ({"loopback_slots": 1000}, ValueError, "loopback_slots"),
    ({"impair": "loss=2"}, ValueError, "impair.loss"),
    ({"impair": "wobble=1"}, ValueError, "wobble"),
    ({"impair": 5}, TypeError, "impair"),
    ({"delack_us": 100000}, ValueError, "delack_us"),
])
def test_validation_names_field(kw, exc, field):
    with pytest.raises(exc) as ei:
        MTCPConfig(**kw)
    assert field in str(ei.value)


def test_unknown_field():
    with pytest.raises(TypeError, match="bogus"):
        MTCPConfig.from_env({}, bogus=1)


def test_env_vars():
    env = {"MTCP_BACKEND": "loopback", "MTCP_FALLBACK": "error", "MTCP_MAX_CONNS": "32768",
           "MTCP_SNDBUF": "65536", "MTCP_RCVBUF": "0x20000", "MTCP_CC": "reno", "MTCP_SEED": "7",
           "MTCP_PCAP": "/tmp/x.pcap", "MTCP_BASE": "asyncio", "MTCP_SACK": "off",
           "MTCP_IMPAIR": "loss=0.01,delay=5ms,reorder=10%,duplicate=0.001,corrupt=0.0001,jitter=500us,rate=100mbit,seed=3"}
    c = MTCPConfig.from_env(env)
    assert c.fallback == "error" and c.max_conns == 32768 and c.sndbuf == 65536 and c.rcvbuf == 131072
    assert c.cc == "reno" and c.seed == 7 and c.pcap == "/tmp/x.pcap" and c.base == "asyncio"
    assert c.sack is False
    assert c.impair == ImpairConfig(loss=0.01, duplicate=0.001, reorder=0.1, corrupt=0.0001,
                                    delay_us=5000, jitter_us=500, rate_bps=100_000_000, seed=3)
    # keyword overrides win over the environment
    assert MTCPConfig.from_env(env, fallback="kernel").fallback == "kernel"


def test_env_errors_name_variable():
    with pytest.raises(ValueError, match="MTCP_MAX_CONNS"):
        MTCPConfig.from_env({"MTCP_MAX_CONNS": "lots"})
    with pytest.raises(ValueError, match="MTCP_SACK"):
        MTCPConfig.from_env({"MTCP_SACK": "perhaps"})
    with pytest.raises(ValueError, match="fallback"):
        MTCPConfig.from_env({"MTCP_FALLBACK": "sometimes"})


def test_impair_grammar():
    assert parse_impair("") is None and parse_impair("none") is None
    i = parse_impair("delay=5,rate=1mbps")
    assert i.delay_us == 5000 and i.rate_bps == 8_000_000       # bare = ms; bps = bytes/s
    assert parse_impair("delay=1s").delay_us == 1_000_000
    assert MTCPConfig(impair={"loss": 0.5}).impair.loss == 0.5
    with pytest.raises(ValueError, match="impair.delay"):
        parse_impair("delay=fast")


def test_fill_c_config_mapping():
    class Lib:
        MTCP_CC_RENO, MTCP_CC_CUBIC = 1, 0
        MTCP_SYNCOOKIES_OFF, MTCP_SYNCOOKIES_ON_OVERFLOW, MTCP_SYNCOOKIES_ALWAYS = 0, 1, 2

    class C:
        pass

    c = C()
    MTCPConfig(max_conns=100, cc="reno", sack=False, seed=9, syncookies="always").fill_c_config(None, Lib, c)
    assert c.max_conns == 100 and c.cc == 1 and c.sack == 0 and c.seed == 9 and c.syncookies == 2
    assert not hasattr(c, "sndbuf")  # None keeps the C default
    c2 = C()
    MTCPConfig().fill_c_config(None, Lib, c2)
    assert c2.max_conns == 65536     # loopback default: both ends of in-process connections


def test_unknown_field_lists_known_fields():
    import pytest
    from mtcp_loop.config import MTCPConfig
    with pytest.raises(TypeError, match="unknown mtcp_loop config field 'bogus'.*max_conns"):
        MTCPConfig(bogus=1)


def test_run_bad_env_raises_before_the_loop_no_warning(monkeypatch):
    import asyncio
    import gc
    import warnings

    import pytest

    import mtcp_loop
    monkeypatch.setenv("MTCP_MAX_CONNS", "abc")
    ran = []

    async def main():
        ran.append(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="MTCP_MAX_CONNS"):
            mtcp_loop.run(main())
        gc.collect()
    assert not ran
    assert not [w for w in caught if "never awaited" in str(w.message)]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()       # no loop was left behind


def test_real_backend_fails_at_loop_creation(monkeypatch):
    import pytest

    import mtcp_loop
    from tests.helpers import EXT
    if not EXT:
        pytest.fail("native extension not built")
    with pytest.raises(OSError, match="mtcpnosuch0"):
        mtcp_loop.new_event_loop(backend="packet", ifname="mtcpnosuch0", ipv4="198.18.0.2/24")
