"""docker/wait_for_brokers.py, run as the Swarm stack runs it, against real loopback sockets; and
deploy/swarm/stack.yml starting web and worker through it, after every broker node.

Why the wait (docker/wait_for_brokers.py): streams declared while one RabbitMQ node ran alone left
the nodes that joined later with a second stream coordinator, and every publish to the fan-out
exchange through them was lost (stream_not_found).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "wait_for_brokers.py"
STACK = ROOT / "deploy" / "swarm" / "stack.yml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30)


def listening() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.listen()
    return server


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_returns_at_once_when_every_node_accepts():
    with listening() as one, listening() as two:
        started = time.monotonic()
        result = run("--timeout", "20", f"127.0.0.1:{one.getsockname()[1]}",
                     f"127.0.0.1:{two.getsockname()[1]}")
    assert result.returncode == 0, result.stderr
    assert "every broker node answered" in result.stderr
    assert time.monotonic() - started < 10


def test_waits_for_a_node_that_starts_listening_later():
    port = closed_port()
    late = threading.Timer(2.0, lambda: servers.append(
        socket.create_server(("127.0.0.1", port))))
    servers: list[socket.socket] = []
    late.start()
    try:
        started = time.monotonic()
        result = run("--timeout", "20", f"127.0.0.1:{port}")
        took = time.monotonic() - started
    finally:
        late.cancel()
        for server in servers:
            server.close()
    assert result.returncode == 0, result.stderr
    assert "every broker node answered" in result.stderr
    assert 1.5 < took < 15


def test_starts_anyway_after_the_timeout_naming_the_silent_node():
    port = closed_port()
    with listening() as up:
        up_address = f"127.0.0.1:{up.getsockname()[1]}"
        result = run("--timeout", "1.5", up_address, f"127.0.0.1:{port}",
                     "no-such-host.invalid:5672")
    assert result.returncode == 0, result.stderr
    verdict = result.stderr.splitlines()[-1]
    assert verdict.startswith(f"broker nodes 127.0.0.1:{port}, no-such-host.invalid:5672 did not "
                              "answer"), result.stderr
    assert up_address not in verdict


def test_refuses_an_address_without_a_port():
    result = run("--timeout", "1", "rabbitmq-1")
    assert result.returncode == 2
    assert "'rabbitmq-1' is not HOST:PORT" in result.stderr


def test_the_swarm_stack_starts_web_and_worker_after_every_broker_node():
    stack = yaml.safe_load(STACK.read_text())
    services = stack["services"]
    brokers = sorted(name for name in services if name.startswith("rabbitmq-"))
    for name in ("web", "worker"):
        service = services[name]
        nodes = service["environment"]["BROKER_NODES"].split()
        assert nodes == [f"{broker}:5672" for broker in brokers], name
        command = " ".join(service["command"])
        wait = re.search(r"python docker/wait_for_brokers\.py --timeout (\d+) \$\$BROKER_NODES &&",
                         command)
        assert wait, (name, command)
        assert command.startswith("sh -c python docker/wait_for_brokers.py"), name
        # The healthcheck must not replace a task still waiting for the brokers.
        start_period = int(service["healthcheck"]["start_period"].rstrip("s"))
        assert start_period > int(wait.group(1)), name
        # Recovery is on: its streams are safe once the cluster is whole before they are declared.
        assert "RECOVERY_WINDOW_SECONDS" not in service["environment"], name
