"""Starting the native stack (a private RabbitMQ, gunicorn replicas, the worker, nginx) for a test.

A missing nginx or rabbitmq-server fails the test with the command that installs it; nothing here
is ever skipped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from common.auth import issue_token
from scripts.stack import MissingDependency, Replica, Stack, StartupFailed, free_port
from tests.support.waiting import wait_until

# The environment of every test stack: known secrets (the tests sign tokens and call the API with
# them), fast job retries, a frequent server event.
STACK_ENV = {
    "LOG_LEVEL": "INFO",
    "SECRET_KEY": "integration-test-secret-key-0123456789abcdef",
    "API_KEY": "integration-test-api-key-0123456789abcdef",
    "JOB_RETRY_DELAYS": "0.2,0.5",
    "SERVER_EVENT_INTERVAL": "2",
}


def user_auth(user: str) -> dict[str, str]:
    """Socket.IO auth of a signed-in user (a token the stack's SECRET_KEY signs)."""
    return {"token": issue_token(STACK_ENV["SECRET_KEY"], user)}


def api_headers(key: str = STACK_ENV["API_KEY"]) -> dict[str, str]:
    """The headers of an HTTP API call authorized with the test stack's API key."""
    return {"Authorization": f"Bearer {key}"}


def routed_bindings(stack: Stack, exchange: str) -> set[tuple[str, str]]:
    """(queue, routing key) of every binding of `exchange` on the stack's broker, as RabbitMQ
    lists them (rabbitmqctl)."""
    listed = stack.rabbitmqctl("list_bindings", "-q", "--no-table-headers", "source_name",
                               "destination_name", "routing_key")
    rows = (line.split("\t") for line in listed.splitlines())
    return {(row[1], row[2]) for row in rows if len(row) == 3 and row[0] == exchange}


def listener_queue(replica_url: str) -> str:
    """The name of a replica's listener queue (its readiness shows it)."""
    return requests.get(f"{replica_url}/readyz", timeout=5).json()["broker"]["listener_queue"]


def recovery_ready(replica_url: str) -> bool:
    """Whether a replica reads its recovery streams (readiness shows it without requiring it)."""
    status = requests.get(f"{replica_url}/readyz", timeout=5).json().get("recovery")
    return status is None or status["ready"]


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
        for replica in native.web:
            wait_until(lambda url=replica.url: recovery_ready(url), timeout=30,
                       what=f"{replica.replica_id}'s recovery log reader to be ready")
        yield native
    finally:
        native.stop()
        print(f"\n{label} logs: {native.run_dir}")


NGINX_FAIL_TIMEOUT_SECONDS = 10  # nginx's default (nginx/socketio.conf.template keeps it)


def restart_replica(stack: Stack, replica: Replica, *, exit_timeout: float) -> None:
    """Start a killed or drained replica again, as the next tests need it: reading the log, and
    back in nginx's rotation, which leaves out a replica that refused a connection or answered
    503 for fail_timeout after the last time (the next test cuts another replica: one must be
    left to reconnect to)."""
    wait_until(lambda: not replica.process.running(), timeout=exit_timeout,
               what=f"{replica.replica_id} to exit")
    started = time.monotonic()
    stack.start_replica(replica)
    wait_until(lambda: recovery_ready(replica.url), timeout=30,
               what=f"{replica.replica_id}'s recovery log reader to be ready")
    time.sleep(max(0.0, started + NGINX_FAIL_TIMEOUT_SECONDS - time.monotonic()))
