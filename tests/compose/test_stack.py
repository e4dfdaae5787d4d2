"""The containerized stack, end to end through nginx: docker-compose.yml on a real engine.

The tests run in this order and share one stack: spread, broadcast, polling, notification, scale up
to 5, scale down to 2, and `down -v` last.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from common.contract import Event
from tests.support.clients import RecordingClient, connect_many
from tests.support.compose import notify_everyone
from tests.support.waiting import wait_until

# The first test also builds the images and starts the stack.
pytestmark = pytest.mark.timeout(900)

CLIENTS = 30  # new sessions land on a random replica: 3 * (2/3)**30 that one gets none


def open_clients(stack, opened: list, count: int = CLIENTS, **options) -> list[RecordingClient]:
    new = connect_many(stack.url, count, **options)
    opened.extend(new)
    return new


def replicas_of(clients: list[RecordingClient]) -> dict[RecordingClient, str]:
    return {client: client.info()["replica"] for client in clients}


def container_of(replica_id: str) -> str:
    """A replica id is its container's name (REPLICA_ID_FROM_DNS in docker-compose.yml)."""
    return replica_id


def test_clients_spread_over_all_replicas(compose_stack, clients):
    on = replicas_of(open_clients(compose_stack, clients))
    containers = {container_of(replica) for replica in on.values()}
    assert containers == set(compose_stack.web_replicas()), (
        f"sessions reached {sorted(containers)}, "
        f"the web containers are {compose_stack.web_replicas()}")


def test_broadcast_reaches_clients_on_every_replica(compose_stack, clients):
    receivers = open_clients(compose_stack, clients)
    assert len(set(replicas_of(receivers).values())) == len(compose_stack.web_replicas())
    text = f"broadcast-{uuid.uuid4().hex}"
    receivers[0].sio.emit(Event.MY_BROADCAST_EVENT, {"data": text})
    for client in receivers:
        client.wait_for(Event.MY_RESPONSE, lambda payload: payload.get("data") == text)


class PollingSession:
    """A polling-only Engine.IO v4 / Socket.IO v5 client spoken in raw HTTP, so that every
    response status is seen (a real client would just reconnect after a 400)."""

    def __init__(self, url: str):
        self.url = f"{url}/socket.io/"
        self.http = requests.Session()
        self.statuses: list[int] = []
        self.sid = ""
        self.ack_id = 0

    def _request(self, method: str, body: str | None = None) -> str:
        params = {"EIO": "4", "transport": "polling", "t": uuid.uuid4().hex[:8]}
        if self.sid:
            params["sid"] = self.sid
        response = self.http.request(method, self.url, params=params, data=body, timeout=30)
        self.statuses.append(response.status_code)
        return response.text if response.status_code == 200 else ""

    def _packets(self) -> list[str]:
        return [packet for packet in self._request("GET").split("\x1e") if packet]

    def open(self) -> None:
        handshake = self._request("GET")
        assert handshake.startswith("0"), f"handshake answered {handshake!r}"
        self.sid = json.loads(handshake[1:])["sid"]
        self._request("POST", "40")  # connect the main namespace

    def server_info(self) -> dict:
        """Ask `server_info` and poll until its ack arrives; answer the server's pings."""
        self.ack_id += 1
        self._request("POST", f"42{self.ack_id}{json.dumps([Event.SERVER_INFO])}")
        for _ in range(20):
            for packet in self._packets():
                if packet == "2":
                    self._request("POST", "3")
                elif packet.startswith(f"43{self.ack_id}["):
                    return json.loads(packet[len(f"43{self.ack_id}"):])[0]
            if self.statuses[-1] != 200:
                break
        raise AssertionError(f"no ack for server_info #{self.ack_id}; statuses {self.statuses}")

    def close(self) -> None:
        self._request("POST", "1")


def test_polling_sessions_stay_on_their_replica(compose_stack):
    sessions, rounds = 20, 15

    def run_session(_: int) -> tuple[set[str], list[int]]:
        session = PollingSession(compose_stack.url)
        try:
            session.open()
            replicas = {session.server_info()["replica"] for _ in range(rounds)}
            session.close()
        except AssertionError:
            replicas = set()
        return replicas, session.statuses

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        results = list(pool.map(run_session, range(sessions)))
    statuses = [status for _, session_statuses in results for status in session_statuses]
    bad = [status for status in statuses if status != 200]
    assert not bad, f"{len(bad)} of {len(statuses)} polling requests failed: {sorted(set(bad))}"
    assert all(len(replicas) == 1 for replicas, _ in results), (
        f"a polling session moved between replicas: {[sorted(r) for r, _ in results]}")
    used = {next(iter(replicas)) for replicas, _ in results}
    assert len(used) > 1, f"all {sessions} polling sessions landed on {used}"
    assert len(statuses) >= sessions * (2 * rounds + 3)


def test_notification_from_the_api_reaches_every_replica_through_the_worker(compose_stack, clients):
    try:
        compose_stack.wait_healthy("worker", 1, timeout=60)
    except Exception as exc:
        raise AssertionError(f"the worker is not healthy: {exc}") from None
    receivers = open_clients(compose_stack, clients)
    assert len(set(replicas_of(receivers).values())) == len(compose_stack.web_replicas())
    data, answer = notify_everyone(compose_stack.url, compose_stack.api_key)
    notification_id = answer["id"]
    for client in receivers:
        notification = client.wait_for(
            Event.NOTIFICATION, lambda payload: payload.get("id") == notification_id, timeout=20)
        assert notification["data"] == data
        assert isinstance(notification["created_at"], int)

    refused = requests.post(f"{compose_stack.url}/api/notifications",
                            json={"to": "all", "data": data},
                            headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert refused.status_code == 401


def wait_until_sessions_reach(stack, wanted: set[str], opened: list, timeout: float = 30,
                              ) -> float:
    """Connect clients until new sessions land on every container in `wanted` and on no other;
    the seconds that took (nginx asks Docker's DNS again every 5 s)."""
    recent: list[str] = []

    def last_sessions_on_wanted() -> bool:
        client = RecordingClient(stack.url)
        try:
            client.connect()
            opened.append(client)
            recent.append(container_of(client.info()["replica"]))
        except Exception as exc:  # a session sent to a replica that is going away
            recent.append(f"failed: {exc}")
        window = recent[-CLIENTS:]
        return len(window) == CLIENTS and set(window) == wanted

    try:
        return wait_until(last_sessions_on_wanted, timeout, interval=0.05)
    except AssertionError:
        landed = sorted(set(recent[-CLIENTS:]))
        raise AssertionError(f"after {timeout:.0f}s new sessions still land on {landed}, "
                             f"expected {sorted(wanted)}") from None


def test_scale_up_to_five_replicas_gets_new_sessions(compose_stack, clients, timings):
    before = open_clients(compose_stack, clients, count=6)
    started = time.monotonic()
    compose_stack.up(replicas=5)
    compose_stack.wait_healthy("web", 5)
    timings["scale up to 5 (healthy)"] = time.monotonic() - started
    replicas = compose_stack.web_replicas()
    assert len(replicas) == 5
    timings["new replicas get sessions"] = wait_until_sessions_reach(
        compose_stack, set(replicas), clients)
    for client in before:  # the replicas that were there keep serving their sessions
        assert container_of(client.info()["replica"]) in replicas


def test_scale_down_to_two_replicas_keeps_serving_the_rest(compose_stack, clients, timings):
    on = replicas_of(open_clients(compose_stack, clients, count=40))
    assert len({container_of(r) for r in on.values()}) == 5, "every replica should have clients"
    started = time.monotonic()
    compose_stack.up(replicas=2)
    compose_stack.wait_healthy("web", 2)
    timings["scale down to 2"] = time.monotonic() - started
    remaining = set(compose_stack.web_replicas())
    assert len(remaining) == 2
    survivors = [client for client, replica in on.items() if container_of(replica) in remaining]
    gone = [client for client, replica in on.items() if container_of(replica) not in remaining]
    assert survivors and gone

    for client in survivors:  # still connected, still answered by the same replica
        assert client.sio.connected
        assert client.info()["replica"] == on[client]
    text = f"after-scale-down-{uuid.uuid4().hex}"
    survivors[0].sio.emit(Event.MY_BROADCAST_EVENT, {"data": text})
    for client in survivors:
        client.wait_for(Event.MY_RESPONSE, lambda payload: payload.get("data") == text)
    wait_until_sessions_reach(compose_stack, remaining, clients)


def test_down_removes_every_container_network_and_volume(compose_stack, timings):
    before = compose_stack.resources()
    assert before["containers"] and before["networks"] and before["volumes"]
    started = time.monotonic()
    compose_stack.down()
    timings["down -v"] = time.monotonic() - started
    left = compose_stack.resources()
    assert not any(left.values()), f"left behind by down -v: {left}"
    for network in before["networks"]:
        assert not exists("network", network), network
    for volume in before["volumes"]:
        assert not exists("volume", volume), volume


def exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0
