#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test:
#   1. C unit tests under ASan+UBSan (make -C native test)
#   2. coverage-guided fuzzing of the wire parsers and the engine (native/fuzz/run.sh, ~60 s)
#   3. the Python suite (pytest): conformance on stock asyncio vs MTCPLoop, aiohttp, impairment,
#      and - as root with network namespaces - interop with the Linux kernel over real rings;
#   4. the package as users get it: python -m build (sdist + wheel), the sdist installed into a
#      fresh venv, `mtcp-loop demo` there (tests/package/test_packaging.py, marker "packaging");
#   5. the suite without its root/netns part on the other supported Pythons (3.12, 3.13).
# Env: FUZZ_SECONDS (default 60), PYTEST_ARGS (extra pytest arguments), EXTRA_PYTHONS (default
# "3.12 3.13"; empty to skip), MTCP_REQUIRE_NETNS=1
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
make -s -C native check      # include direction + layer-prefixed symbols

# --- fuzzing ----------------------------------------------------------------------------------
if [ "$FUZZ_SECONDS" != 0 ]; then
    echo "== fuzzing for ${FUZZ_SECONDS}s"
    bash native/fuzz/run.sh "$FUZZ_SECONDS"
fi

# --- Python tests -----------------------------------------------------------------------------
# pytest's exit code 5 (no test collected) is a failure here, never a silent pass.
run_pytest() {
    local py=$1; shift
    set +e
    "$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} "$@"
    local rc=$?
    set -e
    if [ $rc = 5 ]; then echo "pytest collected no tests: failing"; return 1; fi
    return $rc
}

echo "== pytest ($($PY --version 2>&1))"
run_pytest "$PY" tests

# --- the package as users get it: sdist + wheel, the sdist installed into a fresh venv ---------
echo "== packaging: python -m build, pip install the sdist, mtcp-loop demo"
run_pytest "$PY" -m packaging tests/package/test_packaging.py

# --- the other supported Pythons (without the root/network-namespace part) --------------------
# Each gets its own virtual environment with the package installed from this tree.
find_python() {
    local v=$1 p
    if command -v pyenv >/dev/null 2>&1; then
        for p in "$(pyenv root)"/versions/"$v".*/bin/python"$v"; do
            [ -x "$p" ] && { echo "$p"; return 0; }
        done
    fi
    p=$(command -v "python$v" 2>/dev/null) && "$p" -c "" 2>/dev/null && { echo "$p"; return 0; }
    return 1
}
for v in ${EXTRA_PYTHONS-3.12 3.13}; do
    if ! py=$(find_python "$v"); then
        if [ "${CI:-}" = true ]; then echo "python$v not found: failing (CI runs every supported version)"; exit 1; fi
        echo "== python$v not found: skipped"; continue
    fi
    venv=$(mktemp -d "${TMPDIR:-/tmp}/mtcp-venv$v.XXXXXX")
    trap 'rm -rf "$venv"' EXIT
    echo "== pytest ($("$py" --version 2>&1), without the root/netns tests)"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -i "running pip as the 'root'" || true
    MTCP_REQUIRE_NETNS= run_pytest "$venv/bin/python" -m "not netns and not long and not packaging" tests
    rm -rf "$venv"; trap - EXIT
done
