"""Build script of the two extensions.

* cffi (API mode, out-of-line): compiles native/ into mtcp_loop._mtcp_cffi (the engine and the
  control-plane API);
* Cython: mtcp_loop/_aio/core.pyx into mtcp_loop._aio.core (the per-connection data path). It
  includes native/include/mtcp.h for the types only and calls the engine through the function
  addresses of mtcp_loop._mtcp_cffi (taken at import), so native/ is compiled once.

Used by setup.py (cffi_modules, ext_modules); `python mtcp_loop/_build.py` builds both in place
for development.
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NATIVE = os.path.join(ROOT, "native")


def _cdef_from_header(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"/\* CDEF-BEGIN \*/(.*)/\* CDEF-END \*/", text, re.S)
    if not m:
        raise RuntimeError(f"{path}: CDEF markers missing")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    lines = []
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("#") and not re.match(r"#define\s+\w+\s+-?(0x[0-9a-fA-F]+|\d+)u?\s*$", s):
            continue
        lines.append(line)
    return "\n".join(lines)


def _sources():
    srcs = []
    for sub in ("wire", "tcp", "engine", "io"):
        srcs += sorted(glob.glob(os.path.join(NATIVE, sub, "*.c")))
    # paths relative to the project root (setuptools wants relative paths)
    return [os.path.relpath(s, ROOT) for s in srcs]


ffibuilder = FFI()
# the public header tiers the binding exposes: the API (mtcp.h), benchmark entry points
# (mtcp_bench.h), debugging and introspection (mtcp_debug.h)
HEADERS = ("mtcp.h", "mtcp_bench.h", "mtcp_debug.h")
ffibuilder.cdef("\n".join(_cdef_from_header(os.path.join(NATIVE, "include", h)) for h in HEADERS))
ffibuilder.set_source(
    "mtcp_loop._mtcp_cffi",
    "".join(f'#include "{h}"\n' for h in HEADERS),
    sources=_sources(),
    include_dirs=[os.path.relpath(os.path.join(NATIVE, "include"), ROOT), os.path.relpath(NATIVE, ROOT)],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter"],
    libraries=["m"],
)


def aio_extensions():
    """The Cython extension(s) of the data path, cythonized (needs Cython >= 3 at build time)."""
    from Cython.Build import cythonize
    from setuptools import Extension
    ext = Extension(
        "mtcp_loop._aio.core",
        [os.path.join("mtcp_loop", "_aio", "core.pyx")],
        include_dirs=[os.path.relpath(os.path.join(NATIVE, "include"), ROOT)],
        extra_compile_args=["-O2", "-g", "-Wno-unused-function"],
    )
    return cythonize([ext], compiler_directives={"language_level": 3}, quiet=True)


def build_aio_inplace():
    from setuptools import Distribution
    dist = Distribution({"name": "mtcp_loop", "ext_modules": aio_extensions()})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.ensure_finalized()
    cmd.run()


if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(tmpdir=ROOT, verbose=False)
    build_aio_inplace()
