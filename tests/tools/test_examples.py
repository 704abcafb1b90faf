"""Each example runs (bounded self-test mode) on MTCPLoop."""
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.timeout(90)]


@pytest.mark.parametrize("name", ["echo_server.py", "aiohttp_hello.py", "aiohttp_client.py",
                                  "streams_chat.py"])
def test_example_self_test(name):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), "--self-test"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=80)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "self-test OK" in p.stdout
