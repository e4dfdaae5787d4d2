"""Broker, connection, replica and deploy faults, with real processes on loopback.

These tests run their own stack (they stop the broker and kill replicas), with a TCP fault proxy
between replica web-1 and RabbitMQ so its broker connections can be cut or frozen alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import urllib.parse

import kombu
import pytest
import requests
import socketio
from amqp.exceptions import NotFound

from common.contract import Event
from scripts.stack import Stack
from tests.support.clients import RecordingClient, on_replicas
from tests.support.faultproxy import FaultProxy
from tests.support.metrics import replica_metric
from tests.support.stack import STACK_ENV, api_headers, running_stack, user_auth
from tests.support.waiting import wait_until

QUEUE_EXPIRY_SECONDS = 6
DRAIN_SECONDS = 3
LISTENER = 'connection="listener"'  # metric labels
QUEUE_EXPIRED = 'where="listener_queue_expired"'
JOBS_BLOCKED = 'connection="jobs"'
FANOUT_BLOCKED = 'connection="fanout"'
REFUSED_BLOCKED = 'reason="blocked"'
# RabbitMQ's memory high watermark: a fraction of the RAM no node fits in raises a memory alarm at
# once (every publishing connection is blocked); 0.4 is the default it goes back to.
ALARM_WATERMARK, DEFAULT_WATERMARK = "0.0000001", "0.4"
SUBMISSION_BOUND_SECONDS = 2.0  # what a job submission may take when the broker cannot take it


@pytest.fixture(scope="module")
def faulty():
    """A 3-replica stack whose web-1 reaches RabbitMQ through a fault proxy."""
    proxies: list[FaultProxy] = []

    def route_web1_through_a_proxy(stack: Stack) -> None:
        stack.amqp_url = stack.start_private_broker()
        broker_port = urllib.parse.urlsplit(stack.amqp_url).port
        proxies.append(FaultProxy(broker_port))
        stack.replica_env_overrides[1] = {
            "AMQP_URL": stack.amqp_url.replace(f":{broker_port}/", f":{proxies[0].port}/")}

    with running_stack("fault stack", prepare=route_web1_through_a_proxy, replicas=3, workers=1,
                       extra_env={**STACK_ENV,
                                  "BROKER_QUEUE_EXPIRY_SECONDS": str(QUEUE_EXPIRY_SECONDS),
                                  "DRAIN_SECONDS": str(DRAIN_SECONDS),
                                  "SERVER_EVENT_INTERVAL": "0"}) as stack:
        stack.proxy = proxies[0]
        try:
            yield stack
        finally:
            stack.proxy.close()


def readiness(stack, index: int) -> str:
    """web-<index>'s readiness: "ready", "degraded" (both 200), "not ready" (503), or "" when it
    does not answer."""
    try:
        answer = requests.get(f"{stack.web[index - 1].url}/readyz", timeout=2)
    except requests.RequestException:
        return ""
    status = answer.json()["status"]
    assert answer.status_code == (503 if status == "not ready" else 200), answer.text
    return status


def degraded(stack, index: int) -> dict[str, str]:
    """What web-<index>'s readiness names as degraded."""
    return requests.get(f"{stack.web[index - 1].url}/readyz", timeout=2).json()["degraded"]


def broker_connected(stack, index: int) -> bool:
    """Both broker connections of web-<index> are up (the job queue and recovery aside)."""
    return not {"broker_listener", "broker_publisher"} & set(degraded(stack, index))


def submit_notification(base_url: str, marker: str) -> requests.Response:
    return requests.post(f"{base_url}/api/notifications",
                         json={"to": "all", "data": {"marker": marker}},
                         headers={"Authorization": f"Bearer {STACK_ENV['API_KEY']}"}, timeout=10)


def broadcast_reaches(sender: RecordingClient, receivers, marker: str, timeout: float) -> bool:
    sender.sio.emit(Event.MY_BROADCAST_EVENT, {"data": marker})
    try:
        for client in receivers:
            client.wait_for(Event.MY_RESPONSE, lambda r: r["data"] == marker, timeout=timeout)
        return True
    except AssertionError:
        return False


def recover_everyone(stack, sender, receivers, unique, timeout: float) -> float:
    """Seconds until a broadcast from `sender` reaches every receiver again."""
    attempt = iter(range(10_000))
    return wait_until(lambda: broadcast_reaches(sender, receivers, f"{unique}-{next(attempt)}",
                                                timeout=0.5), timeout, interval=0)


@pytest.mark.parametrize("outage_seconds", [3, 30])
def test_broker_outage(faulty, clients, unique, outage_seconds):
    placed = on_replicas(faulty.url, clients, {"web-1", "web-2", "web-3"})
    sender, others = placed["web-2"], [placed["web-1"], placed["web-3"]]
    local = RecordingClient(faulty.url).connect()  # a second client on web-2, for local delivery
    clients.append(local)
    while local.info()["replica"] != "web-2":
        local.disconnect()
        local = RecordingClient(faulty.url).connect()
        clients.append(local)
    assert broadcast_reaches(sender, [*others, local], f"{unique}-before", timeout=5)

    nginx_log = faulty.run_dir / "nginx.log"
    nginx_log_before = nginx_log.stat().st_size
    # A job in the durable queue while the broker is away must survive and run afterwards.
    faulty.stop_broker()
    down_at = time.monotonic()
    slowest_ack = 0.0
    api_statuses = []
    while time.monotonic() - down_at < outage_seconds:
        started = time.monotonic()
        assert sender.sio.call(Event.MY_PING, {"t": started}, timeout=5) == {"t": started}
        sender.sio.emit(Event.MY_BROADCAST_EVENT, {"data": f"{unique}-local"})
        slowest_ack = max(slowest_ack, time.monotonic() - started)
        started = time.monotonic()
        api_statuses.append(requests.post(
            f"{faulty.url}/api/notifications", json={"to": "all", "data": {}},
            headers={"Authorization": f"Bearer {STACK_ENV['API_KEY']}"}, timeout=10).status_code)
        slowest_ack = max(slowest_ack, time.monotonic() - started)
        time.sleep(0.5)
    # Replicas kept serving their own clients: local delivery needs no broker.
    local.wait_for(Event.MY_RESPONSE, lambda r: r["data"] == f"{unique}-local", timeout=2)
    assert slowest_ack < 1.0, f"a handler or the API blocked {slowest_ack:.2f}s"
    assert set(api_statuses) == {503}
    # Degraded, not out: readiness stays 200 and names what is missing, and nginx took none of
    # the API's 503s for a failure (it logs each replica it stops using, max_fails=1).
    assert readiness(faulty, 2) == "degraded"
    assert {"broker_listener", "broker_publisher", "job_queue"} <= set(degraded(faulty, 2))
    with nginx_log.open() as log:
        log.seek(nginx_log_before)
        assert "temporarily disabled" not in log.read()

    faulty.start_broker()
    recovered = recover_everyone(faulty, sender, others, unique, timeout=5)
    print(f"\noutage {outage_seconds}s: slowest ack {slowest_ack * 1000:.0f} ms during it; "
          f"cross-replica broadcast back {recovered:.2f}s after the broker")
    job = requests.post(f"{faulty.url}/api/notifications", json={"to": "all", "data": {}},
                        headers={"Authorization": f"Bearer {STACK_ENV['API_KEY']}"}, timeout=10)
    assert job.status_code == 202
    for client in others:
        client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == job.json()["id"], timeout=15)


def test_resource_alarm_refuses_jobs_fast_and_readiness_and_metrics_say_so(faulty, clients,
                                                                         unique):
    web2 = faulty.web[1].url  # straight to one replica: its readiness and metrics are the ones
    [local] = on_replicas(faulty.url, clients, {"web-2"},
                          auth=user_auth(f"{unique}-alarm")).values()
    receiver = RecordingClient(faulty.url).connect()  # notifications go to everyone
    clients.append(receiver)
    refused_before = replica_metric(faulty, "job_submissions_refused_total", REFUSED_BLOCKED, 2)
    refused_markers: list[str] = []
    timings: list[float] = []

    def submit(marker: str) -> requests.Response:
        started = time.monotonic()
        answer = submit_notification(web2, marker)
        timings.append(time.monotonic() - started)
        if answer.status_code == 503:
            refused_markers.append(marker)
            assert answer.headers["Retry-After"] and answer.json()["error"], answer.text
        return answer

    faulty.rabbitmqctl("set_vm_memory_high_watermark", ALARM_WATERMARK)
    try:
        attempt = iter(range(100))
        wait_until(lambda: submit(f"{unique}-{next(attempt)}").json().get("reason") == "blocked",
                   timeout=20, what="a job submission refused for the memory alarm")
        for n in range(5):
            answer = submit(f"{unique}-blocked-{n}")
            assert answer.status_code == 503 and answer.json()["reason"] == "blocked", answer.text
        refused_job = local.sio.call(Event.START_JOB, {"steps": 1}, timeout=5)
        assert "short of memory or disk" in refused_job["error"], refused_job

        assert readiness(faulty, 2) == "degraded"
        assert "job_queue" in degraded(faulty, 2)
        assert replica_metric(faulty, "broker_publisher_blocked", JOBS_BLOCKED, 2) == 1
        assert replica_metric(faulty, "job_submissions_refused_total", REFUSED_BLOCKED,
                              2) >= refused_before + 7
        # The replica's own emits wait in its outbox: once its publisher is found blocked, the
        # emit API answers 503 too. Its clients are still served.
        emit = {"event": Event.MY_RESPONSE, "data": {"data": f"{unique}-emit"}}
        wait_until(lambda: requests.post(f"{web2}/api/emit", json=emit, headers=api_headers(),
                                         timeout=5).status_code == 503,
                   timeout=10, what="the emit API to refuse while the publisher is blocked")
        assert replica_metric(faulty, "broker_publisher_blocked", FANOUT_BLOCKED, 2) == 1
        assert "broker_blocked" in degraded(faulty, 2)
        assert local.sio.call(Event.MY_PING, {"t": unique}, timeout=5) == {"t": unique}
    finally:
        faulty.rabbitmqctl("set_vm_memory_high_watermark", DEFAULT_WATERMARK)
    assert max(timings) < SUBMISSION_BOUND_SECONDS, timings
    timings.sort()
    print(f"\nresource alarm: {len(refused_markers)} submissions refused, slowest "
          f"{timings[-1] * 1000:.0f} ms, median {timings[len(timings) // 2] * 1000:.0f} ms")

    accepted: list[str] = []

    def taken_again() -> bool:
        answer = submit_notification(web2, f"{unique}-after")
        if answer.status_code == 202:
            accepted.append(answer.json()["id"])
        return bool(accepted)

    wait_until(taken_again, timeout=20, what="submissions to be taken again")
    wait_until(lambda: readiness(faulty, 2) == "ready", timeout=20)
    assert replica_metric(faulty, "broker_publisher_blocked", JOBS_BLOCKED, 2) == 0
    receiver.wait_for(Event.NOTIFICATION, lambda n: n["id"] == accepted[0], timeout=15)
    # What was refused was not queued: nothing of it ran before the one taken afterwards.
    delivered = {n["data"].get("marker") for n in receiver.events(Event.NOTIFICATION)}
    assert not delivered & set(refused_markers)


def test_jobs_survive_a_broker_restart(faulty, clients):
    client = RecordingClient(faulty.url, auth=user_auth("fay-broker-restart")).connect()
    clients.append(client)
    job_id = client.sio.call(Event.START_JOB, {"steps": 6}, timeout=10)["job_id"]
    client.wait_for(Event.JOB_PROGRESS, lambda p: p["job_id"] == job_id, timeout=15)
    faulty.stop_broker()
    time.sleep(2)
    faulty.start_broker()
    done = client.wait_for(Event.JOB_DONE, lambda d: d["job_id"] == job_id, timeout=60)
    assert done["result"]["steps"] == 6


def test_listener_reconnect_loses_nothing_published_meanwhile(faulty, clients, unique):
    placed = on_replicas(faulty.url, clients, {"web-1", "web-2"})
    cut_off, sender = placed["web-1"], placed["web-2"]
    reconnects_before = replica_metric(faulty, "broker_reconnects_total", LISTENER)
    faulty.proxy.cut()
    wait_until(lambda: "broker_listener" in degraded(faulty, 1), timeout=10)
    markers = [f"{unique}-{n}" for n in range(20)]
    for marker in markers:
        sender.sio.emit(Event.MY_BROADCAST_EVENT, {"data": marker})
    time.sleep(1)
    faulty.proxy.restore()
    wait_until(lambda: broker_connected(faulty, 1), timeout=10)
    for marker in markers:
        cut_off.wait_for(Event.MY_RESPONSE, lambda r, m=marker: r["data"] == m, timeout=10)
    assert replica_metric(faulty, "broker_reconnects_total", LISTENER) > reconnects_before


def test_frozen_broker_is_noticed_by_each_connection_even_a_busy_publisher(faulty, unique):
    """Each connection reads the broker's heartbeats, the publisher also while it has something
    to publish every few hundred milliseconds, and lets go of the frozen connection at once:
    AMQP's goodbye (connection.close, then waiting for close-ok) to a frozen broker never
    ends."""
    stop = threading.Event()

    def keep_web1_publishing() -> None:
        for i in range(200):  # bounded: 200 x 0.2 s
            if stop.wait(0.2):
                return
            with contextlib.suppress(requests.RequestException):  # 503 once it noticed
                requests.post(f"{faulty.web[0].url}/api/emit", headers=api_headers(), timeout=2,
                              json={"event": Event.MY_RESPONSE, "data": {"data": f"{unique} {i}"},
                                    "to": "all"})

    publishing = threading.Thread(target=keep_web1_publishing)
    publishing.start()
    try:
        time.sleep(1)
        frozen_at = time.monotonic()
        faulty.proxy.freeze()
        noticed = {}
        for connection in ("broker_listener", "broker_publisher"):
            wait_until(lambda c=connection: c in degraded(faulty, 1), timeout=30, interval=0.5,
                       what=f"web-1's readiness to name {connection}")
            noticed[connection] = round(time.monotonic() - frozen_at, 1)
    finally:
        stop.set()
        publishing.join()
        faulty.proxy.cut()
        faulty.proxy.restore()
    print(f"\nfrozen broker noticed after (s): {noticed}")
    wait_until(lambda: broker_connected(faulty, 1), timeout=15)


def test_loss_after_queue_expiry_is_counted(faulty, clients, unique):
    lost_before = replica_metric(faulty, "broker_messages_lost_total", QUEUE_EXPIRED)
    faulty.proxy.cut()
    time.sleep(QUEUE_EXPIRY_SECONDS + 4)
    faulty.proxy.restore()
    wait_until(lambda: broker_connected(faulty, 1), timeout=15)
    lost_after = replica_metric(faulty, "broker_messages_lost_total", QUEUE_EXPIRED)
    assert lost_after == lost_before + 1
    log = (faulty.run_dir / "web-1.log").read_text()
    assert "expired while disconnected" in log


def reconnecting_client(url: str, rejoin_room: str | None = None) -> socketio.Client:
    """A client as an app would write it: reconnects by itself and re-joins its room on connect."""
    client = socketio.Client(reconnection=True, reconnection_delay=0.5,
                             reconnection_delay_max=2, request_timeout=10)
    client.history = []

    @client.on("connect")
    def rejoin():
        client.history.append(time.monotonic())
        if rejoin_room:
            client.emit(Event.JOIN, {"room": rejoin_room})

    client.connect(url, transports=["websocket"], wait_timeout=10)
    return client


def replica_of(client: socketio.Client) -> str:
    return client.call(Event.SERVER_INFO, timeout=10)["replica"]


def test_killed_replica_clients_move_and_rejoin_their_rooms(faulty, unique):
    victim = faulty.web[2]  # web-3
    listener_queue = requests.get(f"{victim.url}/readyz", timeout=5).json()["broker"][
        "listener_queue"]
    clients = [reconnecting_client(faulty.url, rejoin_room=unique) for _ in range(9)]
    try:
        on_victim = [c for c in clients if replica_of(c) == victim.replica_id]
        assert on_victim, "round-robin should place some of 9 clients on web-3"
        hits = []
        for c in on_victim:
            c.on(Event.MY_RESPONSE, hits.append)
        killed_at = time.monotonic()
        os.killpg(victim.process.popen.pid, signal.SIGKILL)
        moved = wait_until(lambda: all(len(c.history) >= 2 and c.connected for c in on_victim),
                           timeout=10)
        assert {replica_of(c) for c in on_victim} <= {"web-1", "web-2"}
        print(f"\n{len(on_victim)} clients of the killed replica reconnected within {moved:.1f}s")

        # They re-joined their room on connect, so a room event reaches them on their new replica.
        sender = socketio.Client()
        sender.connect(faulty.url, transports=["websocket"])
        sender.emit(Event.MY_ROOM_EVENT, {"room": unique, "data": "after the move"})
        wait_until(lambda: sum(h["data"] == "after the move" for h in hits) >= len(on_victim),
                   timeout=5)
        sender.disconnect()

        # The dead replica's queue goes away on its own instead of filling for minutes. (Only one
        # look: a declare, even a passive one, renews the queue's lease.)
        time.sleep(max(0.0, killed_at + QUEUE_EXPIRY_SECONDS + 3 - time.monotonic()))
        assert not queue_exists(faulty.amqp_url, listener_queue)
        print(f"its broker queue was gone {time.monotonic() - killed_at:.1f}s after the kill")
    finally:
        for c in clients:
            c.disconnect()
        faulty.start_replica(victim)


def queue_exists(amqp_url: str, name: str) -> bool:
    with kombu.Connection(amqp_url) as connection:
        channel = connection.channel()
        try:
            channel.queue_declare(queue=name, passive=True)
            return True
        except NotFound:
            return False


def test_graceful_drain_moves_clients_spread_over_time(faulty, clients):
    victim = faulty.web[1]  # web-2
    moving = [reconnecting_client(faulty.url) for _ in range(12)]
    # Long-polling: each of its requests goes through nginx by its session id. The drain drops
    # connections in the order they came, so this one, the last, is dropped last.
    [polling] = on_replicas(faulty.url, clients, {victim.replica_id},
                            transports=["polling"]).values()
    try:
        on_victim = [c for c in moving if replica_of(c) == victim.replica_id]
        assert len(on_victim) >= 3
        victim.process.send(signal.SIGTERM)
        wait_until(lambda: readiness(faulty, 2) in ("not ready", ""), timeout=2)
        # New sessions go elsewhere while it drains; existing ones still reach it until it
        # drops them. WebSocket handshakes too: refused before the upgrade, so nginx tries the
        # next replica (after a 101 the 503 went nowhere and the socket closed before the
        # handshake). Round-robin: one of three reaches the draining replica, before a 503 takes
        # it out of nginx's rotation.
        for _ in range(3):
            newcomer = socketio.Client()
            newcomer.connect(faulty.url, transports=["websocket"], wait_timeout=5)
            assert replica_of(newcomer) != victim.replica_id
            newcomer.disconnect()
        newcomer = socketio.Client()
        newcomer.connect(faulty.url, transports=["polling"])
        assert replica_of(newcomer) != victim.replica_id
        newcomer.disconnect()
        assert polling.info()["replica"] == victim.replica_id

        wait_until(lambda: all(len(c.history) >= 2 and c.connected for c in on_victim),
                   timeout=DRAIN_SECONDS + 10)
        moves = sorted(c.history[1] for c in on_victim)
        spread = moves[-1] - moves[0]
        assert spread >= DRAIN_SECONDS * 0.4, f"clients moved all at once ({spread:.2f}s)"
        exited = wait_until(lambda: not victim.process.running(), timeout=DRAIN_SECONDS + 12)
        print(f"\ndrain: {len(on_victim)} clients moved over {spread:.1f}s; "
              f"the replica exited {exited:.1f}s after that")
        assert victim.process.popen.returncode == 0
    finally:
        for c in moving:
            c.disconnect()
        if not victim.process.running():
            faulty.start_replica(victim)
