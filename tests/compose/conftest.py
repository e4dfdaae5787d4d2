"""Fixtures that build the images and run docker-compose.yml on a real engine.

The stack runs under a test-only project name on a free 127.0.0.1 port, so it never touches a stack
started with `make up`. It is always torn down with `down -v`, also when a test fails; on failure
every container's log is printed at the end of the run and kept in test-artifacts/.

No engine means FAILED with the way to get one, never skipped. The variables PYTHON_IMAGE,
NGINX_IMAGE, RABBITMQ_IMAGE (stand-in base images) and COMPOSE ("docker compose" or
"docker-compose") are used when set, as `../shared/tools/container-engine up` prints them.
"""

from __future__ import annotations

import atexit
import time
import uuid

import pytest

from tests.support.compose import (
    COMPOSE_USED,
    FAILED,
    LOGS,
    REPLICAS,
    TIMINGS,
    ComposeError,
    ComposeStack,
    compose_command,
    keep_logs,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        item.config.stash[FAILED] = True


def pytest_terminal_summary(terminalreporter, config):
    timings = config.stash.get(TIMINGS, {})
    if timings:
        terminalreporter.section(f"compose timings ({config.stash[COMPOSE_USED]})")
        terminalreporter.write_line(", ".join(f"{name} {seconds:.1f}s"
                                              for name, seconds in timings.items()))
    logs = config.stash.get(LOGS, "")
    if logs:
        terminalreporter.section("container logs (tests/compose failed)")
        terminalreporter.write_line(logs)


@pytest.fixture(scope="session")
def timings(request) -> dict[str, float]:
    """Wall-clock seconds of the steps, printed after the run."""
    return request.config.stash.setdefault(TIMINGS, {})


@pytest.fixture(scope="session")
def compose_stack(request, timings):
    compose = compose_command()
    request.config.stash[COMPOSE_USED] = " ".join(compose)
    stack = ComposeStack(compose, f"rtstack-test-{uuid.uuid4().hex[:8]}")
    # Teardown also when pytest itself is interrupted before the fixture's finally runs.
    atexit.register(lambda: stack.down_done or stack.run("down", "-v", "--remove-orphans",
                                                         check=False))
    try:
        started = time.monotonic()
        stack.run("build", timeout=900)
        timings["build"] = time.monotonic() - started
        started = time.monotonic()
        stack.up(replicas=REPLICAS)
        for service, count in (("rabbitmq", 1), ("web", REPLICAS), ("nginx", 1)):
            stack.wait_healthy(service, count)
        timings["up"] = time.monotonic() - started
    except ComposeError as exc:
        request.config.stash[FAILED] = True
        tail = keep_logs(request.config, stack)
        stack.down()
        pytest.fail(f"the stack did not start: {exc}\n--- container logs (tail) ---\n"
                    f"{tail[-8000:]}", pytrace=False)
    try:
        yield stack
    finally:
        if request.config.stash.get(FAILED, False):
            keep_logs(request.config, stack)
        stack.down()  # a no-op when the last test already took it down
