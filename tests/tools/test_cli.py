"""mtcp-loop CLI: demo, stats, bench loop (short), bench engine (not built yet -> non-zero)."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.timeout(120)]


def cli(*args, timeout=100):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_demo():
    p = cli("demo")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "demo: OK" in p.stdout and "loop.userspace_connections" in p.stdout


def test_stats_json():
    p = cli("stats", "--json", "--conns", "3")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["loop.userspace_connections"] == 6 and st["conn_accepted"] == 3


def test_bench_loop_short():
    p = cli("bench", "loop", "--json", "--duration", "0.3", "--clients", "4", "--concurrency", "4")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    r = out["results"]
    assert r["mtcp"]["echo_rtt_per_s"] > 0 and r["asyncio"]["echo_rtt_per_s"] > 0
    assert r["mtcp"]["userspace_connections"] > 0 and r["mtcp"]["kernel_connections"] == 0


def test_bench_engine():
    from mtcp_loop._native import lib
    p = cli("bench", "engine", "--json", "--seconds", "0.3")
    if not hasattr(lib, "mtcp_bench_engine"):
        assert p.returncode != 0 and "not built yet" in p.stderr
        return
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["short"]["conns"] > 0 and out["bulk"]["bytes"] > 0


def test_bad_env_variable_one_line_exit_2():
    env = dict(os.environ, PYTHONPATH=ROOT, MTCP_MAX_CONNS="abc")
    p = subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", "demo"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=100)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "MTCP_MAX_CONNS" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and "never awaited" not in p.stderr


def test_backend_that_cannot_open_one_line_exit_2():
    # an interface that does not exist: nothing is opened, nothing is sent
    env = dict(os.environ, PYTHONPATH=ROOT, MTCP_BACKEND="packet", MTCP_IFNAME="mtcpnosuch0",
               MTCP_IPV4="198.18.0.2/24")
    p = subprocess.run([sys.executable, "-m", "mtcp_loop.tools.cli", "stats"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=100)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "mtcpnosuch0" in lines[0], p.stderr
    assert "never awaited" not in p.stderr


def test_cli_wiring():
    from mtcp_loop.tools import cli
    from mtcp_loop.tools.cli import rings
    a = cli.build_parser().parse_args(["testbed", "status", "--kind", "xdp", "--prefix", "nope"])
    assert a.func is rings.cmd_testbed and a.kind == "xdp"
    a = cli.build_parser().parse_args(["bench", "rings", "--kinds", "tap", "--seconds", "0.5", "--json"])
    assert a.func is rings.cmd_bench_rings and a.seconds == 0.5 and a.json
    assert cli.main(["bench", "rings", "--kinds", "bogus"]) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to look at namespaces")
def test_cli_testbed_status_of_absent_prefix(capsys):
    from mtcp_loop.tools import cli
    assert cli.main(["testbed", "status", "--prefix", f"mtcpnone{os.getpid() % 100000}"]) == 0
    assert "down" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["testbed", "up"], ["bench", "rings"], ["bench", "compare", "--quick"],
                                  ["bench", "cores"]])
def test_namespace_commands_without_pyroute2_say_so(argv, monkeypatch, capsys):
    from mtcp_loop.tools import cli
    monkeypatch.setitem(sys.modules, "pyroute2", None)          # as if not installed
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs pyroute2" in err[0] and "mtcp_loop[rings]" in err[0], err

