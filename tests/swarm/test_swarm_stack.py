"""deploy/swarm/stack.yml on a one-node swarm, end to end through nginx, in this order: the overlay
carries traffic, spread, broadcast, a notification through the worker, scale up to 5 and down to 2,
and a rolling update (update_config) under connected clients."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from common.contract import Event
from tests.support.clients import connect_many
from tests.support.compose import notify_everyone
from tests.support.rolling import NotificationStream, RollingClient, report
from tests.support.waiting import wait_until
from tests.swarm.conftest import docker

pytestmark = pytest.mark.timeout(900)

CLIENTS = 30


def test_the_overlay_network_carries_traffic_from_nginx_to_every_web_task(swarm_stack):
    (nginx,) = swarm_stack.running_tasks("nginx")
    for replica, container in swarm_stack.web_replicas().items():
        address = docker("inspect", "-f", "{{range $name, $net := .NetworkSettings.Networks}}"
                         "{{if eq $name \"" + swarm_stack.service("front") + "\"}}"
                         "{{$net.IPAddress}}{{end}}{{end}}", container).stdout.strip()
        probe = docker("exec", nginx["Id"], "timeout", "5", "bash", "-c",
                       f"exec 3<>/dev/tcp/{address}/5000", check=False)
        assert probe.returncode == 0, (
            f"nginx cannot reach {replica} at {address}:5000 over the overlay network: "
            f"{probe.stderr.strip()}. With 'No route to host' the engine does not manage "
            "iptables (see tests/swarm/conftest.py).")


def test_clients_spread_over_all_replicas(swarm_stack, clients):
    opened = connect_many(swarm_stack.url, CLIENTS)
    clients.extend(opened)
    on = {client.info()["replica"] for client in opened}
    assert on == set(swarm_stack.web_replicas())


def test_broadcast_reaches_clients_on_every_replica(swarm_stack, clients):
    receivers = connect_many(swarm_stack.url, CLIENTS)
    clients.extend(receivers)
    assert len({client.info()["replica"] for client in receivers}) == 3
    text = f"broadcast-{uuid.uuid4().hex}"
    receivers[0].sio.emit(Event.MY_BROADCAST_EVENT, {"data": text})
    for client in receivers:
        client.wait_for(Event.MY_RESPONSE, lambda payload: payload.get("data") == text)


def test_notification_from_the_api_reaches_every_replica_through_the_worker(swarm_stack, clients):
    receivers = connect_many(swarm_stack.url, CLIENTS)
    clients.extend(receivers)
    data, _ = notify_everyone(swarm_stack.url, swarm_stack.api_key)
    for client in receivers:
        client.wait_for(Event.NOTIFICATION, lambda p: p.get("data") == data, timeout=20)


def scale(stack, replicas: int) -> None:
    docker("service", "scale", "--detach", f"{stack.service('web')}={replicas}")
    stack.wait_healthy("web", replicas)


def test_scale_up_to_five_then_down_to_two_keeps_serving(swarm_stack, clients):
    scale(swarm_stack, 5)
    wanted = set(swarm_stack.web_replicas())
    seen: set[str] = set()

    def new_sessions_reach_all() -> bool:
        client = connect_many(swarm_stack.url, 1)[0]
        clients.append(client)
        seen.add(client.info()["replica"])
        return seen >= wanted

    wait_until(new_sessions_reach_all, 60, interval=0.2)
    scale(swarm_stack, 2)
    remaining = set(swarm_stack.web_replicas())
    fresh = connect_many(swarm_stack.url, 10)
    clients.extend(fresh)
    assert {client.info()["replica"] for client in fresh} == remaining


def test_rolling_update_moves_every_client_and_counts_what_they_received(swarm_stack, capsys):
    scale(swarm_stack, 3)
    old = set(swarm_stack.web_replicas())
    rolling = [RollingClient(swarm_stack.url).connect() for _ in range(CLIENTS)]
    try:
        wait_until(lambda: all(client.replicas for client in rolling), 20)
        started = time.monotonic()
        with NotificationStream(swarm_stack.url, swarm_stack.api_key,
                                f"roll-{uuid.uuid4().hex[:8]}") as stream:
            time.sleep(2)
            # --force replaces every task with the same spec: update_config's one at a time,
            # start-first, as an image change would.
            update = subprocess.run(["docker", "service", "update", "--force", "--quiet",
                                     swarm_stack.service("web")], capture_output=True, text=True,
                                    timeout=600)
            rolled = time.monotonic() - started
            time.sleep(3)
        assert update.returncode == 0, update.stderr[-3000:]
        swarm_stack.wait_healthy("web", 3)
        new = set(swarm_stack.web_replicas())
        assert not new & old, (old, new)
        wait_until(lambda: all(c.sio.connected and c.replicas[-1] in new for c in rolling), 30)
        time.sleep(2)
        result = report(rolling, stream, old)
        with capsys.disabled():
            print(f"\n  swarm rolling update took {rolled:.0f}s: {result.line()}")
        assert result.moved == CLIENTS, result.not_moved[:5]
    finally:
        for client in rolling:
            client.close()
