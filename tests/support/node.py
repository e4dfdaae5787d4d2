"""Running the Node scripts of tests/js (the official socket.io-client) from a test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.stack import ROOT

CLIENT_PACKAGE = ROOT / "node_modules" / "socket.io-client" / "package.json"


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed, and the JavaScript client test needs it. Install "
                    "Node.js 18 or newer (Debian/Ubuntu: `sudo apt-get install -y nodejs npm`, or "
                    "https://nodejs.org), then run `npm ci` (or `make install`) in the repository "
                    "root.", pytrace=False)
    if not CLIENT_PACKAGE.exists():
        pytest.fail("socket.io-client is not installed: run `npm ci` (or `make install`) in "
                    f"{ROOT}.", pytrace=False)
    return node


def run_node_script(node: str, script: Path, config: dict, timeout: float = 90):
    """Run `script` with its JSON config; what it printed last, as JSON."""
    try:
        finished = subprocess.run([node, str(script), json.dumps(config)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script.name} did not finish: stdout={exc.stdout!r} stderr={exc.stderr!r}")
    assert finished.returncode == 0, (
        f"{script.name} exited with {finished.returncode}:\n{finished.stderr}{finished.stdout}")
    return json.loads(finished.stdout.strip().splitlines()[-1])
