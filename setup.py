"""Builds both extensions: the engine (native/, via cffi: mtcp_loop._mtcp_cffi) and the compiled
data path (Cython: mtcp_loop._aio.core, which calls the engine through the cffi module's function
addresses at import, so native/ is compiled once), and the C load generators of the tools
(build_py below). Metadata lives in pyproject.toml."""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "mtcp_loop"))
from _build import aio_extensions  # noqa: E402


class build_py_with_loadgen(build_py):
    """Also compile the C load generators of `mtcp-loop bench compare` (native/bench/loadgen.c on the
    engine + AF_PACKET, native/bench/kclient.c on kernel sockets) into mtcp_loop/tools/_bin, with
    the flags of native/Makefile's bench targets, so an installed package benchmarks outside the
    source tree. Without a C compiler the package installs without them (bench compare says so)."""

    FLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-O2", "-g"]

    def run(self):
        super().run()
        native = os.path.join(HERE, "native")
        if getattr(self, "editable_mode", False):
            return                   # a source tree: bench compare builds them with make -C native
        if not os.path.exists(os.path.join(native, "bench", "loadgen.c")):
            return
        cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
        if shutil.which(cc) is None:
            self.warn(f"no C compiler ({cc}): mtcp-loop bench compare's load generators not built")
            return
        out = os.path.join(self.build_lib, "mtcp_loop", "tools", "_bin")
        os.makedirs(out, exist_ok=True)
        engine = sorted(f for sub in ("wire", "tcp", "engine", "io")
                        for f in glob.glob(os.path.join(native, sub, "*.c")))
        inc = ["-I" + os.path.join(native, "include"), "-I" + native]
        for name, srcs, extra in (("loadgen", [os.path.join(native, "bench", "loadgen.c")] + engine, inc),
                                  ("kclient", [os.path.join(native, "bench", "kclient.c")], [])):
            cmd = [cc] + self.FLAGS + extra + ["-o", os.path.join(out, name)] + srcs + ["-lm"]
            self.announce(" ".join(cmd[:3] + ["...", "-o", os.path.join(out, name)]), level=2)
            subprocess.check_call(cmd)


setup(cffi_modules=["mtcp_loop/_build.py:ffibuilder"], ext_modules=aio_extensions(),
      cmdclass={"build_py": build_py_with_loadgen})
