"""pytest configuration of the whole suite (applies to every tests/ subdirectory).

tests/ is a package: pytest puts the project root on sys.path, test modules import as
``tests.<layer>.test_x`` and share helpers with ``from tests.helpers import ...``. The layout
mirrors the layers (docs/architecture.md): conformance (the stock-asyncio oracle suites), engine,
interop (real rings against the Linux kernel, in network namespaces), security, workers, ops,
tools, package.
"""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.helpers import make_tls_certs  # noqa: E402


@pytest.fixture
def tls_certs(tmp_path_factory):
    return make_tls_certs(tmp_path_factory.mktemp("tls"))
