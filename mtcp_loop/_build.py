"""cffi build script (API mode, out-of-line): compiles native/ into mtcp_loop._mtcp_cffi.

Used by setup.py (cffi_modules); `python mtcp_loop/_build.py` builds in place for development.
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
ffibuilder.cdef(_cdef_from_header(os.path.join(NATIVE, "include", "mtcp.h")))
ffibuilder.set_source(
    "mtcp_loop._mtcp_cffi",
    '#include "mtcp.h"\n',
    sources=_sources(),
    include_dirs=[os.path.relpath(os.path.join(NATIVE, "include"), ROOT), os.path.relpath(NATIVE, ROOT)],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter"],
    libraries=["m"],
)

if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(tmpdir=ROOT, verbose=False)
