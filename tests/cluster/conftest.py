"""The compose stack on a three-node RabbitMQ cluster (deploy/compose/rabbitmq-cluster.yml).

Like tests/compose: a test-only project name on a free 127.0.0.1 port, always torn down with
`down -v`; no engine means FAILED with the way to get one. Run with `make test-cluster`.
"""

from __future__ import annotations

import atexit
import secrets
import time
import uuid
from pathlib import Path

import pytest

from tests.support.compose import ComposeError, ComposeStack, compose_command, keep_logs
from tests.support.engine_tiers import only_when_named

pytest_ignore_collect = only_when_named(Path(__file__).parent)

CLUSTER_FILES = ("-f", "docker-compose.yml", "-f", "deploy/compose/rabbitmq-cluster.yml")
NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
REPLICAS = 3
WORKERS = 2


@pytest.fixture(scope="session")
def cluster_timings() -> dict[str, float]:
    return {}


@pytest.fixture(scope="session")
def cluster_stack(request, cluster_timings):
    stack = ComposeStack([*compose_command(), *CLUSTER_FILES],
                         f"rtstack-cluster-{uuid.uuid4().hex[:8]}")
    stack.env["RABBITMQ_ERLANG_COOKIE"] = secrets.token_hex(24)
    atexit.register(lambda: stack.down_done or stack.run("down", "-v", "--remove-orphans",
                                                         check=False))
    try:
        started = time.monotonic()
        stack.run("build", timeout=900)
        cluster_timings["build"] = time.monotonic() - started
        started = time.monotonic()
        stack.up("--scale", f"worker={WORKERS}", replicas=REPLICAS)
        for service, count in ((NODES[0], 1), (NODES[1], 1), (NODES[2], 1), ("web", REPLICAS),
                               ("worker", WORKERS), ("nginx", 1)):
            stack.wait_healthy(service, count, timeout=180)
        cluster_timings["up"] = time.monotonic() - started
    except ComposeError as exc:
        tail = keep_logs(request.config, stack)
        stack.down()
        pytest.fail(f"the cluster stack did not start: {exc}\n--- container logs (tail) ---\n"
                    f"{tail[-8000:]}", pytrace=False)
    failed_before = request.session.testsfailed
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            keep_logs(request.config, stack)
        stack.down()
        print(f"\ncluster stack timings: "
              f"{', '.join(f'{k} {v:.1f}s' for k, v in cluster_timings.items())}")
