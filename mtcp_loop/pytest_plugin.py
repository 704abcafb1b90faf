"""pytest plugin: run an existing pytest-asyncio suite on MTCPLoop.

    pytest -p mtcp_loop.pytest_plugin            # or, in conftest.py: pytest_plugins = ["mtcp_loop.pytest_plugin"]

* pytest-asyncio >= 1.4 (which has the ``pytest_asyncio_loop_factories`` hook): every asyncio test
  gets its loop from ``mtcp_loop.new_event_loop`` (config from MTCP_* environment variables).
  ``--mtcp-also-stock`` additionally runs each test on stock asyncio (ids ``[mtcp]``/``[asyncio]``).
* older pytest-asyncio: the ``event_loop_policy`` fixture returns ``MTCPPolicy()``.
* ``mtcp_loop_factory`` fixture: the factory itself, for tests that build loops by hand
  (e.g. aiohttp's ``loop`` fixture users).

Virtual time (mtcp_loop/vtime.py, docs/testing.md):

* ``--mtcp-virtual-time`` (every asyncio test), ``@pytest.mark.mtcp_virtual_time`` (one test) or
  ``MTCP_VIRTUAL_TIME=1``: the test's MTCPLoop runs on a virtual, autojumping clock; tests marked
  ``@pytest.mark.mtcp_real_time`` keep the real clock under ``--mtcp-virtual-time``;
* seeds: ``--mtcp-seed N`` or ``MTCP_SEED=N`` gives every virtual-time test seed N; otherwise
  each test gets its own seed derived from the session's (random, shown in the header) and its
  node id. A failing virtual-time test reports its seed and the command that replays it;
* ``mtcp_faults`` fixture: ``loop.faults`` of the running loop (mtcp_loop/faults.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from .config import MTCPConfig

_SEED_KEY = pytest.StashKey[int]()
_state = {"item": None, "last_seed": None, "base_seed": None}


def _has_factories_hook() -> bool:
    try:
        from pytest_asyncio import plugin as _pa
    except ImportError:
        return False
    specs = getattr(_pa, "PytestAsyncioSpecs", None)
    return specs is not None and hasattr(specs, "pytest_asyncio_loop_factories")


HAS_FACTORIES_HOOK = _has_factories_hook()


def pytest_addoption(parser):
    group = parser.getgroup("mtcp_loop")
    group.addoption("--mtcp-also-stock", action="store_true", default=False,
                    help="also run every asyncio test on stock asyncio (the oracle)")
    group.addoption("--mtcp-virtual-time", action="store_true", default=False,
                    help="run every asyncio test's MTCPLoop on a virtual, autojumping clock "
                         "(tests marked mtcp_real_time excepted)")
    group.addoption("--mtcp-seed", action="store", default=None, type=int,
                    help="seed of every virtual-time test (default: MTCP_SEED, else one per test "
                         "derived from a random session seed)")


def pytest_configure(config):
    config.addinivalue_line("markers", "mtcp_skip: do not run this asyncio test on MTCPLoop")
    config.addinivalue_line("markers", "mtcp_virtual_time: run this test's MTCPLoop in virtual "
                            "time (mtcp_loop/vtime.py)")
    config.addinivalue_line("markers", "mtcp_real_time: keep the real clock under "
                            "--mtcp-virtual-time (the test needs threads, subprocesses, DNS...)")
    # fail early with the build hint when the extension is missing
    from . import _native  # noqa: F401
    fixed = _fixed_seed(config)
    _state["base_seed"] = fixed if fixed is not None else int.from_bytes(os.urandom(4), "little")


def _fixed_seed(config):
    opt = config.getoption("--mtcp-seed", None) if config is not None else None
    if opt is not None:
        return int(opt)
    env = os.environ.get("MTCP_SEED", "").strip()
    if env and env.lower() not in ("none", "default"):
        return int(env, 0) or None
    return None


def pytest_report_header(config):
    fixed = _fixed_seed(config)
    if fixed is not None:
        return f"mtcp_loop: virtual-time seed {fixed} (fixed)"
    return (f"mtcp_loop: virtual-time session seed {_state['base_seed']} (each test's seed is "
            f"derived from it and the test id; a failing test prints its own)")


def _test_seed(config, nodeid):
    fixed = _fixed_seed(config)
    if fixed is not None:
        return fixed
    h = hashlib.blake2b(f"{_state['base_seed']}:{nodeid}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "little") & ((1 << 63) - 1)) or 1


def _env_virtual():
    return os.environ.get("MTCP_VIRTUAL_TIME", "").strip().lower() in ("1", "true", "yes", "on")


def _wants_virtual(config, item):
    if item.get_closest_marker("mtcp_virtual_time") is not None:
        return True
    return ((bool(config.getoption("--mtcp-virtual-time", False)) or _env_virtual())
            and item.get_closest_marker("mtcp_real_time") is None)


def _record(loop):
    """Remember the seed of a virtual-time loop for the test being set up (failure report)."""
    seed = getattr(loop, "mtcp_seed", None) if hasattr(loop, "virtual_clock") else None
    if seed is not None:
        _state["last_seed"] = seed
        item = _state["item"]
        if item is not None:
            item.stash[_SEED_KEY] = seed
    return loop


def _mtcp_factory():
    from .policy import new_event_loop
    return _record(new_event_loop())


def _virtual_factory():
    """One function object for every item (pytest-asyncio parametrizes the loop fixture by
    factory: a shared loop scope needs the same object); the seed is the test's being set up."""
    from .policy import new_event_loop
    item = _state["item"]
    config = item.config if item is not None else None
    seed = _test_seed(config, item.nodeid if item is not None else "")
    return _record(new_event_loop(virtual_time=True, seed=seed))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _state["item"] = item
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    seed = item.stash.get(_SEED_KEY, None)
    shared = False
    if seed is None:
        # a loop wider than the test (loop_scope="module"...) was made for an earlier test
        loop = _current_loop()
        if loop is None or not hasattr(loop, "virtual_clock"):
            return
        seed, shared = loop.mtcp_seed, True
    target = item.nodeid.split("::", 1)[0] if shared else item.nodeid
    cmd = f"MTCP_SEED={seed} python -m pytest '{target}'"
    if item.get_closest_marker("mtcp_virtual_time") is None and not _env_virtual():
        cmd += " --mtcp-virtual-time"
    text = f"this test ran in virtual time with seed {seed}; replay it with:\n    {cmd}"
    if shared:
        text += ("\n(its loop was shared with the earlier tests of its loop scope, so the "
                 "replay runs them too)")
    rep.sections.append(("mtcp_loop virtual time", text))


def _current_loop():
    """The event loop pytest-asyncio set for the test (not running between phases), or None."""
    try:
        policy = asyncio.get_event_loop_policy()
        return getattr(getattr(policy, "_local", None), "_loop", None)
    except Exception:
        return None


def _stock_factory():
    return asyncio.SelectorEventLoop()


if HAS_FACTORIES_HOOK:
    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(config, item):
        factories = {}
        if item.get_closest_marker("mtcp_skip") is None:
            if _wants_virtual(config, item):
                factories["mtcp"] = _virtual_factory
            else:
                factories["mtcp"] = _mtcp_factory
        if config.getoption("--mtcp-also-stock") or not factories:
            factories["asyncio"] = _stock_factory
        return factories
else:  # pragma: no cover - exercised with old pytest-asyncio only
    @pytest.fixture(scope="session")
    def event_loop_policy(request):
        # no per-test factories here: --mtcp-virtual-time applies to the whole session (markers
        # need pytest-asyncio >= 1.4), seed from --mtcp-seed / MTCP_SEED or drawn per loop
        from .policy import MTCPPolicy
        if request.config.getoption("--mtcp-virtual-time", False):
            return MTCPPolicy(virtual_time=True, seed=_fixed_seed(request.config) or 0)
        return MTCPPolicy()


@pytest.fixture(scope="session")
def mtcp_loop_factory(request):
    """Zero-argument callable returning a new MTCPLoop (config from MTCP_* variables); under
    --mtcp-virtual-time a virtual-time one seeded for the test being set up."""
    MTCPConfig.from_env()  # validate the environment once
    if request.config.getoption("--mtcp-virtual-time", False) or _env_virtual():
        return _virtual_factory
    return _mtcp_factory


@pytest.fixture
def mtcp_faults():
    """Fault scripting on the running loop's link (``loop.faults``, mtcp_loop/faults.py): the
    methods act on whatever MTCPLoop runs when they are called."""
    from .faults import current
    return current()
