"""The Socket.IO client the page serves is the one package.json pins (`make vendor-js` copies
it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = ROOT / "node_modules" / "socket.io-client"
VENDORED = ROOT / "web" / "static" / "vendor"
FILES = ("socket.io.min.js", "socket.io.min.js.map")


def _installed(name: str) -> bytes:
    path = INSTALLED / "dist" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install` (npm ci)", pytrace=False)
    return path.read_bytes()


@pytest.mark.parametrize("name", FILES)
def test_vendored_client_equals_the_installed_one(name):
    vendored = VENDORED / name
    assert vendored.exists(), f"{vendored} is missing: run `make vendor-js` and commit it"
    assert vendored.read_bytes() == _installed(name), (
        f"{vendored} differs from node_modules: run `make vendor-js` and commit the result")


def test_installed_client_is_the_pinned_version():
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["socket.io-client"]
    installed = json.loads((INSTALLED / "package.json").read_text())["version"]
    assert installed == pinned, f"node_modules has {installed}, package.json pins {pinned}: npm ci"
    header = (VENDORED / "socket.io.min.js").read_text()[:200]
    assert f"Socket.IO v{pinned}" in header
