"""What the Makefile installs before each target, as the README says: read from `make -n` (nothing
runs) with package.json or the lock files taken as just changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def installs(target: str, changed: str, command: str) -> bool:
    """Whether `make TARGET` would run `command` (an installer) once `changed` has changed."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed (Debian/Ubuntu: sudo apt-get install -y make)",
                    pytrace=False)
    dry_run = subprocess.run(["make", "-n", "-W", changed, target], cwd=ROOT, text=True,
                             capture_output=True, timeout=30)
    assert dry_run.returncode == 0, dry_run.stderr
    return command in dry_run.stdout


@pytest.mark.parametrize("target", ["test-unit", "test-integration", "test", "vendor-js"])
def test_targets_that_use_node_packages_install_them(target):
    assert installs(target, "package.json", "npm ci")


def test_run_needs_no_node_packages_only_the_virtualenv():
    assert not installs("run", "package.json", "npm ci")
    assert installs("run", "requirements/dev.lock", "pip install")


def test_the_load_test_virtualenv_says_what_it_installs_before_it_does():
    assert installs("loadtest", "requirements/loadtest.lock",
                    'echo "installing Locust and matplotlib into')
