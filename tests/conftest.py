"""Shared fixtures: the real stack (a private RabbitMQ, 3 gunicorn replicas, the worker, nginx),
started once per test session for the integration and browser tests.

A missing nginx or rabbitmq-server fails the tests with the command that installs it; nothing here
is ever skipped.

`pytest tests` (make test) leaves out tests/compose: it needs a container engine and runs as its
own CI step (make test-compose). Naming tests/compose on the command line still collects it.
"""

from __future__ import annotations

import os
import uuid

import pytest

from scripts.stack import MissingDependency, Stack, StartupFailed, free_port
from tests.integration.clients import RecordingClient, disconnect_all

collect_ignore = ["compose"]

STACK_ENV = {
    "LOG_LEVEL": "INFO",
    "SECRET_KEY": "integration-test-secret-key-0123456789abcdef",
    "API_KEY": "integration-test-api-key-0123456789abcdef",
    "JOB_RETRY_DELAYS": "0.2,0.5",
    "SERVER_EVENT_INTERVAL": "2",
}


@pytest.fixture(scope="session")
def stack():
    if "/usr/sbin" not in os.environ.get("PATH", ""):
        os.environ["PATH"] += ":/usr/sbin:/sbin"
    native = Stack(replicas=3, port=free_port(), workers=1, log_to_files=True,
                   extra_env=STACK_ENV)
    try:
        native.start()
    except (MissingDependency, StartupFailed) as exc:
        pytest.fail(f"cannot start the stack: {exc}", pytrace=False)
    yield native
    native.stop()
    print(f"\nstack logs: {native.run_dir}")


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
