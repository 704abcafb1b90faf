#!/usr/bin/env bash
# The README's main command: install mtcp_loop (builds the C stack) and run the demo:
# an aiohttp app served and queried over the embedded user-space TCP stack, no root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check '.[aiohttp,uvloop]' 2>&1 | grep -v -i "running pip as the 'root'" || true
cd /tmp && exec $PY -m mtcp_loop.tools.cli demo "$@"
