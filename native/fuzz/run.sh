#!/bin/sh
# run.sh — build the libFuzzer harnesses and run each one on a copy of its seed corpus.
#
#   native/fuzz/run.sh [SECONDS]      total budget (default 60), shared equally by the harnesses
#   FUZZERS="fuzz_wire" native/fuzz/run.sh 20     run a subset
#
# Exits non-zero if a harness fails to build or reports any finding (crash, ASan error, leak,
# UBSan error, timeout, OOM): libFuzzer exits non-zero and writes a reproducer, which is copied
# to native/build/fuzz/findings/ and can be replayed with `native/build/fuzz/<harness> <file>`.
set -u
SECS=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
NATIVE=$(dirname "$HERE")
if [ -z "${FUZZERS:-}" ]; then
    FUZZERS=$(cd "$HERE" && ls fuzz_*.c | sed 's/\.c$//' | tr '\n' ' ')
fi
NH=$(echo $FUZZERS | wc -w)
HALF=$((SECS / (NH > 0 ? NH : 1)))
[ "$HALF" -ge 1 ] || HALF=1

targets=""
for h in $FUZZERS; do targets="$targets build/fuzz/$h"; done
# shellcheck disable=SC2086
if ! make -s -C "$NATIVE" $targets; then
    echo "run.sh: building the fuzz harnesses failed" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtcp-fuzz.XXXXXX")
FINDINGS="$NATIVE/build/fuzz/findings"
rc=0
for h in $FUZZERS; do
    cp -r "$HERE/corpus/$h" "$WORK/$h-corpus"
    mkdir -p "$WORK/$h-art"
    "$NATIVE/build/fuzz/$h" -max_total_time="$HALF" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$WORK/$h-art/" "$WORK/$h-corpus" >"$WORK/$h.log" 2>&1
    r=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$h.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$h.log")
    cov=$(grep -E '^#[0-9]+' "$WORK/$h.log" | tail -1 | sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*\(corp: [0-9]*\).*/\1 \2 \3/p')
    found=$(ls "$WORK/$h-art" 2>/dev/null | wc -l)
    if [ "$r" -ne 0 ] || [ "$found" -ne 0 ]; then
        echo "FAIL $h: exit $r, $found finding(s) after ${execs:-?} executions"
        grep -E 'ERROR|SUMMARY|runtime error|fuzz_(wire|engine|fault):|Test unit written' "$WORK/$h.log" | head -20
        mkdir -p "$FINDINGS"
        cp "$WORK/$h-art/"* "$FINDINGS/" 2>/dev/null
        cp "$WORK/$h.log" "$FINDINGS/$h.log"
        echo "  log and reproducers in $FINDINGS"
        rc=1
    else
        echo "ok   $h: ${execs:-?} executions in ${HALF}s (${rate:-?}/s), ${cov:-}, no findings"
    fi
done
rm -rf "$WORK"
exit $rc
