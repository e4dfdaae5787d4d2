"""A rolling update of the web replicas (deploy/compose/rolling-update.sh) under connected clients.

Runs on the cluster stack of tests/cluster, after the node-loss test. Every web replica is
replaced, one at a time, while 30 reconnecting clients are connected and the API sends a
notification to everyone 5 times a second; every client must be moved by the drain and connect
again, and each notification is counted as received or lost, per client.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.cluster.test_rabbitmq_cluster import replica_containers
from tests.support.compose import ROOT
from tests.support.rolling import NotificationStream, RollingClient, report
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

CLIENTS = 30


def test_rolling_update_moves_every_client_and_counts_what_they_received(cluster_stack, capsys):
    stack = cluster_stack
    old = set(replica_containers(stack))
    clients = [RollingClient(stack.url).connect() for _ in range(CLIENTS)]
    try:
        wait_until(lambda: all(client.replicas for client in clients), 20)
        assert {client.replicas[0] for client in clients} == old, "clients on every replica"
        marker = f"roll-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        with NotificationStream(stack.url, stack.api_key, marker) as stream:
            time.sleep(2)
            roll = subprocess.run(
                ["deploy/compose/rolling-update.sh"], cwd=ROOT, capture_output=True, text=True,
                timeout=400, env={**stack.env, "COMPOSE": " ".join([*stack.compose, "-p",
                                                                    stack.project])})
            rolled = time.monotonic() - started
            time.sleep(3)
        assert roll.returncode == 0, roll.stderr[-3000:]
        new = set(replica_containers(stack))
        assert len(new) == len(old) and not new & old, (old, new)
        wait_until(lambda: all(client.sio.connected and client.replicas[-1] in new
                               for client in clients), 30)
        time.sleep(2)  # the last notifications arrive
        result = report(clients, stream, old)
        with capsys.disabled():
            print(f"\n  rolling update of {len(old)} replicas took {rolled:.0f}s: {result.line()}")
        assert result.moved == CLIENTS, result.not_moved[:5]
        assert result.sent > 0
        # After the roll every client gets what is sent again.
        last = stream.accepted[-1]
        wait_until(lambda: all(last in client.notifications for client in clients), 10)
    finally:
        for client in clients:
            client.close()
