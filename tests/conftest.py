"""Shared fixtures: the real stack (a private RabbitMQ, 3 gunicorn replicas, the worker, nginx),
started once per test session for the integration and browser tests.

A missing nginx or rabbitmq-server fails the tests with the command that installs it; nothing here
is ever skipped.

`pytest tests` (make test) leaves out tests/compose: it needs a container engine and runs as its
own CI step (make test-compose). Naming tests/compose on the command line still collects it.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Callable, Iterator

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


@contextlib.contextmanager
def running_stack(label: str, prepare: Callable[[Stack], None] | None = None,
                  **options) -> Iterator[Stack]:
    """A native stack on free loopback ports, stopped afterwards; its logs stay in its run_dir.

    `prepare` runs before the start (a fault proxy in front of the broker, say). A missing
    program fails the test with the command that installs it: never a skip.
    """
    native = Stack(port=free_port(), log_to_files=True, **options)
    try:
        if prepare is not None:
            prepare(native)
        native.start()
    except (MissingDependency, StartupFailed) as exc:
        native.stop()
        pytest.fail(f"cannot start the {label}: {exc}", pytrace=False)
    try:
        yield native
    finally:
        native.stop()
        print(f"\n{label} logs: {native.run_dir}")


@pytest.fixture(scope="session")
def stack():
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
