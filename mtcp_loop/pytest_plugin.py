"""pytest plugin: run an existing pytest-asyncio suite on MTCPLoop.

    pytest -p mtcp_loop.pytest_plugin            # or, in conftest.py: pytest_plugins = ["mtcp_loop.pytest_plugin"]

* pytest-asyncio >= 1.4 (which has the ``pytest_asyncio_loop_factories`` hook): every asyncio test
  gets its loop from ``mtcp_loop.new_event_loop`` (config from MTCP_* environment variables).
  ``--mtcp-also-stock`` additionally runs each test on stock asyncio (ids ``[mtcp]``/``[asyncio]``).
* older pytest-asyncio: the ``event_loop_policy`` fixture returns ``MTCPPolicy()``.
* ``mtcp_loop_factory`` fixture: the factory itself, for tests that build loops by hand
  (e.g. aiohttp's ``loop`` fixture users).
"""
from __future__ import annotations

import asyncio

import pytest

from .config import MTCPConfig


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


def pytest_configure(config):
    config.addinivalue_line("markers", "mtcp_skip: do not run this asyncio test on MTCPLoop")
    # fail early with the build hint when the extension is missing
    from . import _native  # noqa: F401


def _mtcp_factory():
    from .policy import new_event_loop
    return new_event_loop()


def _stock_factory():
    return asyncio.SelectorEventLoop()


if HAS_FACTORIES_HOOK:
    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(config, item):
        factories = {}
        if item.get_closest_marker("mtcp_skip") is None:
            factories["mtcp"] = _mtcp_factory
        if config.getoption("--mtcp-also-stock") or not factories:
            factories["asyncio"] = _stock_factory
        return factories
else:  # pragma: no cover - exercised with old pytest-asyncio only
    @pytest.fixture(scope="session")
    def event_loop_policy():
        from .policy import MTCPPolicy
        return MTCPPolicy()


@pytest.fixture(scope="session")
def mtcp_loop_factory():
    """Zero-argument callable returning a new MTCPLoop (config from MTCP_* variables)."""
    MTCPConfig.from_env()  # validate the environment once
    return _mtcp_factory
