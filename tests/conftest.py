"""Fixtures shared by every tier, and the tier markers.

Each test is marked with the folder it lives in under tests/ (unit, integration, browser,
loadtest, compose, ...), so `pytest tests -m unit` or `-m "not integration"` selects tiers.

`pytest tests` (make test) leaves out tests/compose: it needs a container engine and runs as its
own CI step (make test-compose). Naming tests/compose on the command line still collects it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.clients import RecordingClient, disconnect_all
from tests.support.stack import STACK_ENV, running_stack

collect_ignore = ["compose"]

TESTS = Path(__file__).parent
# These tiers start the native stack too, so they also carry `integration`: `-m "not integration"`
# leaves the unit tier.
ALSO_INTEGRATION = {"browser", "loadtest", "bench", "soak"}


def pytest_configure(config: pytest.Config) -> None:
    # The known tiers are registered in pyproject.toml; a new folder of tests gets a marker too.
    registered = {line.split(":")[0] for line in config.getini("markers")}
    for tier in sorted(path.parent.name for path in TESTS.glob("*/test_*.py")):
        if tier not in registered:
            config.addinivalue_line("markers", f"{tier}: tests/{tier}")
            registered.add(tier)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folders = Path(item.path).relative_to(TESTS).parts[:-1]
        if folders:
            item.add_marker(folders[0])
            if folders[0] in ALSO_INTEGRATION:
                item.add_marker("integration")


@pytest.fixture(scope="session")
def stack():
    """The native stack (3 replicas, the worker), started once per test session."""
    with running_stack("stack", replicas=3, workers=1, extra_env=STACK_ENV) as native:
        yield native


@pytest.fixture
def unique() -> str:
    """A name no other test uses, for rooms and users on the shared broker."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clients():
    """Collects the clients a test opens and disconnects them afterwards."""
    opened: list[RecordingClient] = []
    yield opened
    disconnect_all(opened)
