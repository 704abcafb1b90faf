#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test:
#   1. C unit tests under ASan+UBSan (make -C native test)
#   2. coverage-guided fuzzing of the wire parsers and the engine (native/fuzz/run.sh, ~60 s)
#   3. the Python suite (pytest): conformance on stock asyncio vs MTCPLoop, aiohttp, impairment,
#      and - as root with network namespaces - interop with the Linux kernel over real rings.
# Env: FUZZ_SECONDS (default 60), PYTEST_ARGS (extra pytest arguments), MTCP_REQUIRE_NETNS=1
# turns a missing root/netns capability into a failure instead of a skip (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

# --- system packages (Debian) ---------------------------------------------------------------
DEB_PKGS="clang llvm make iproute2 curl wrk nghttp2-client tshark ethtool libbpf-dev libxdp-dev"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        echo "== apt-get install$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    # the sanitizer/libFuzzer runtime that matches the installed clang
    major=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
    if [ -n "$major" ] && ! dpkg -s "libclang-rt-$major-dev" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$major-dev" >/dev/null || true
    fi
fi

# --- Python packages + the extensions (cffi builds native/, Cython the data path) -------------
echo "== pip install -e .[test]"
$PY -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -i "running pip as the 'root'" || true
$PY -c "import mtcp_loop._mtcp_cffi, mtcp_loop._aio.core" || { echo "extensions failed to build"; exit 1; }

# --- C tests (sanitizers) ---------------------------------------------------------------------
echo "== C unit tests (ASan+UBSan)"
make -s -C native test

# --- fuzzing ----------------------------------------------------------------------------------
if [ "$FUZZ_SECONDS" != 0 ]; then
    echo "== fuzzing for ${FUZZ_SECONDS}s"
    bash native/fuzz/run.sh "$FUZZ_SECONDS"
fi

# --- Python tests -----------------------------------------------------------------------------
echo "== pytest"
set +e
$PY -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} tests
rc=$?
set -e
if [ $rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
exit $rc
