"""Builds both extensions: the engine (native/, via cffi: mtcp_loop._mtcp_cffi) and the compiled
data path (Cython: mtcp_loop._aio.core, which calls the engine through the cffi module's function
addresses at import, so native/ is compiled once). Metadata lives in pyproject.toml."""
from setuptools import setup

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mtcp_loop"))
from _build import aio_extensions  # noqa: E402

setup(cffi_modules=["mtcp_loop/_build.py:ffibuilder"], ext_modules=aio_extensions())
