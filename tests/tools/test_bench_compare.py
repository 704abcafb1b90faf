"""`mtcp-loop bench compare`: CI smoke run and the report plumbing.

* test_compare_quick_short: the real harness, --quick, one workload (64 B short connections, loadgen
  and the kernel-socket cross-check) over every configuration it runs for that workload; asserts the
  JSON has every expected cell with sane values. No timing assertions. Needs root + network
  namespaces: skipped cleanly without, FAILS when MTCP_REQUIRE_NETNS=1 (CI).
* the other tests run anywhere: ratios/targets derivation and the docs section rewrite.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mtcp_loop.tools import bench_compare as bc  # noqa: E402
from mtcp_loop.tools import bench_report as report  # noqa: E402

REQUIRE = os.environ.get("MTCP_REQUIRE_NETNS") == "1"


def _gate():
    why = None
    if os.geteuid() != 0:
        why = "needs root (network namespaces, AF_PACKET)"
    else:
        try:
            import pyroute2  # noqa: F401
        except ImportError:
            why = "needs pyroute2"
        if why is None and not os.path.exists("/dev/net/tun"):
            why = "needs /dev/net/tun"
        if why is None and not shutil.which("make"):
            why = "needs make (builds native/bench/loadgen)"
        if why is None:
            try:
                import mtcp_loop._mtcp_cffi  # noqa: F401
            except ImportError as exc:
                why = f"native extension not built: {exc}"
    if why:
        if REQUIRE:
            pytest.fail(f"MTCP_REQUIRE_NETNS=1 but {why}", pytrace=False)
        pytest.skip(why)


@pytest.mark.netns
def test_compare_quick_short(tmp_path):
    _gate()
    out = tmp_path / "compare.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", "bench", "compare", "--quick", "--workloads", "short",
                        "--json", "--output", str(out)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert json.loads(r.stdout)["cells"] == res["cells"]
    assert res["quick"] is True
    assert not res["errors"], res["errors"]
    # progress lines while running
    assert "fresh namespaces" in r.stderr
    # the kernel baseline tuning was applied inside the namespaces and recorded
    assert res["tuning"]["server"]["net.core.somaxconn"] == "65535"
    assert res["tuning"]["client"]["net.ipv4.tcp_tw_reuse"] == "1"
    configs = [c for c in bc.CONFIGS if c != "mtcp tap cores=2"]
    for cfg in configs:
        for wl, driver in (("short", "loadgen"), ("short_kclient", "kclient")):
            cells = [c for c in res["cells"] if c["config"] == cfg and c["workload"] == wl]
            assert len(cells) == 1, (cfg, wl, [(c["config"], c["workload"]) for c in res["cells"]])
            c = cells[0]
            assert c["driver"] == driver
            assert c["unit"] == "conn/s"
            assert 0 < c["value"] < 10_000_000, c
            assert c["server_cpu_s"] > 0, c
            assert 0 < c["server_cpu_us_per_op"] < 1_000_000, c
            assert c["ratio_to_uvloop"] > 0, c
            assert set(c["cpu_split"]) >= {"cpu0"}, c
            for split in c["cpu_split"].values():
                assert 0 <= split["user"] <= 100 and 0 <= split["softirq"] <= 100
            if wl == "short":
                assert c["errors"] == 0 or c["errors"] < c["value"], c
                assert c["frames_per_conn"]["to_server"] > 2, c   # SYN, ACK/data, FIN, ...
            if c["loop"] == "mtcp" and wl == "short":
                assert "target" in c and isinstance(c["target_met"], bool), c
    base = [c for c in res["cells"] if c["config"] == bc.BASELINE and c["workload"] == "short"][0]
    assert base["ratio_to_uvloop"] == 1.0
    assert res["sizes"]["sizeof_conn"] > 0


def _fake_result():
    def cell(wl, cfg, v, unit="conn/s", **kw):
        loop, backend, cores, _ = bc.CONFIGS[cfg]
        c = {"workload": wl, "driver": "x", "config": cfg, "loop": loop, "backend": backend, "cores": cores,
             "value": v, "unit": unit, "ops": 100, "server_cpu_s": 1.0, "server_cpu_us_per_op": 10.0,
             "cpu_split": {"cpu0": {"user": 50, "sys": 10, "softirq": 5, "idle": 35}}}
        c.update(kw)
        return c
    cells = [cell("short", "uvloop+kernel", 10000, frames_per_conn={"to_server": 5, "from_server": 4}),
             cell("short", "mtcp tap", 40000, frames_per_conn={"to_server": 5, "from_server": 4}),
             cell("short", "mtcp tap cores=2", 60000, frames_per_conn={"to_server": 5, "from_server": 4}),
             cell("latency", "uvloop+kernel", 100, "p99 us", p50_us=20, p99_us=100, p999_us=300),
             cell("latency", "mtcp tap", 90, "p99 us", p50_us=20, p99_us=90, p999_us=200),
             cell("idle", "mtcp tap", 900.0, "B/conn", native_bytes_per_conn=900.0, rss_bytes_per_conn=1500.0,
                  slab_bytes_per_conn=3.0, server_open=1000)]
    return {"date": "2026-01-01 00:00 UTC", "command": "mtcp-loop bench compare", "quick": True,
            "machine": {"nproc": 2, "cpu_model": "x", "kernel": "6", "python": "3", "mem_gb": 1},
            "params": bc._params(True), "pinning": {"server": "CPU 0", "client": "CPU 1"},
            "tuning": {"server": {"net.core.somaxconn": "65535"}}, "cells": cells, "errors": [],
            "rings": {"tap": {"tx": 1_000_000, "rx": 800_000}}}


def test_derive_targets_and_ceiling():
    res = _fake_result()
    bc.derive(res)
    get = {(c["workload"], c["config"]): c for c in res["cells"]}
    assert get[("short", "mtcp tap")]["ratio_to_uvloop"] == 4.0
    assert get[("short", "mtcp tap")]["target_met"] is True          # >= 3x
    assert get[("latency", "mtcp tap")]["target_met"] is False       # 0.9x > 0.8x
    assert get[("idle", "mtcp tap")]["target_met"] is True           # <= 2 KB
    sc = get[("scaling", "mtcp tap cores=2 / cores=1")]
    assert sc["value"] == 1.5 and sc["target_met"] is False
    assert res["ceiling"]["tap"]["conn_per_s_ceiling"] == 160000     # min(800k/5, 1M/4)


def test_doc_section_rewritten_in_place(tmp_path):
    res = _fake_result()
    bc.derive(res)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other section\n\nkeep me\n")
    report.write_doc(res, str(doc))
    report.write_doc(res, str(doc))          # idempotent: one section, one generated block
    text = doc.read_text()
    assert text.count(report.SECTION) == 1 and text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert "keep me" in text and "MISSED" in text and "| 64 B short conns (loadgen) | mtcp tap |" in text
    # hand-written analysis after the generated block survives a rewrite
    doc.write_text(text.replace(report.END, report.END + "\n\n### Where the time goes\n\nanalysis\n"))
    report.write_doc(res, str(doc))
    assert "analysis" in doc.read_text()


def test_doc_written_only_with_write_doc(tmp_path, capsys):
    from mtcp_loop.tools.cli import main
    res = _fake_result()
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(res))
    before = sorted(os.listdir(tmp_path))
    assert main(["bench", "compare", "--render", str(saved)]) == 0
    assert sorted(os.listdir(tmp_path)) == before             # nothing written without --write-doc
    assert "mtcp tap" in capsys.readouterr().out
    doc = tmp_path / "out" / "benchmarks.md"
    doc.parent.mkdir()
    assert main(["bench", "compare", "--render", str(saved), "--write-doc", str(doc)]) == 0
    assert doc.read_text().count(report.BEGIN) == 1
    assert f"wrote {doc}" in capsys.readouterr().out


def test_table_prints_every_cell(capsys):
    res = _fake_result()
    bc.derive(res)
    report.print_table(res)
    out = capsys.readouterr().out
    assert out.count("mtcp tap") >= 3 and "ceiling" in out and "somaxconn" in out
