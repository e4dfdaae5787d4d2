"""The worker, the job queue and the notification API against the real stack."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import kombu
import pytest
import requests

from common.contract import Event
from common.job_queue import JobQueue
from common.jobs import DEAD_LETTER_QUEUE, JOBS_EXCHANGE, JOBS_QUEUE, Job, now_ms
from scripts.stack import ROOT
from tests.support.clients import RecordingClient, on_distinct_replicas
from tests.support.stack import STACK_ENV, api_headers, user_auth
from tests.support.waiting import wait_until


def post_notification(stack, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(f"{stack.url}/api/notifications", json=body,
                         headers=api_headers() if headers is None else headers, timeout=10)


def dead_letters(amqp_url: str, timeout: float = 5.0) -> list[dict]:
    """Drain the dead-letter queue (tests look for their own entries by a unique marker)."""
    found = []
    with kombu.Connection(amqp_url) as connection:
        with connection.SimpleQueue(DEAD_LETTER_QUEUE) as queue:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    message = queue.get(timeout=0.5)
                except queue.Empty:
                    if found:
                        break
                    continue
                found.append(message.payload)
                message.ack()
    return found


def test_api_notification_reaches_clients_on_every_replica(stack, clients, unique):
    receivers = on_distinct_replicas(stack.url, clients)
    response = post_notification(stack, {"to": "all", "data": {"text": unique}})
    assert response.status_code == 202
    notification_id = response.json()["id"]
    for client in receivers:
        got = client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == notification_id)
        assert got["data"] == {"text": unique}
        assert abs(got["created_at"] - now_ms()) < 60_000


def test_user_notification_reaches_only_that_users_connections(stack, clients, unique):
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    alice_sockets = on_distinct_replicas(stack.url, clients, auth=user_auth(alice))
    bob_socket = RecordingClient(stack.url, auth=user_auth(bob)).connect()
    anonymous = RecordingClient(stack.url).connect()
    clients += [bob_socket, anonymous]
    assert {c.info()["user"] for c in alice_sockets} == {alice}

    response = post_notification(stack, {"to": {"user": alice}, "data": {"for": alice}})
    assert response.status_code == 202
    notification_id = response.json()["id"]
    for client in alice_sockets:
        client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == notification_id)
    # A later broadcast is a barrier: once bob and the anonymous client have it, they would
    # already have had alice's notification if it had leaked to them.
    barrier = post_notification(stack, {"to": "all", "data": {"barrier": unique}}).json()["id"]
    for client in (bob_socket, anonymous):
        client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == barrier)
        assert notification_id not in [n["id"] for n in client.events(Event.NOTIFICATION)]


def test_room_notification_reaches_room_members_only(stack, clients, unique):
    member, outsider = on_distinct_replicas(stack.url, clients, count=2)
    member.sio.emit(Event.JOIN, {"room": unique})
    member.wait_for(Event.MY_RESPONSE, lambda r: unique in str(r["data"]))
    notification_id = post_notification(
        stack, {"to": {"room": unique}, "data": {"room": unique}}).json()["id"]
    member.wait_for(Event.NOTIFICATION, lambda n: n["id"] == notification_id)
    barrier = post_notification(stack, {"to": "all", "data": {}}).json()["id"]
    outsider.wait_for(Event.NOTIFICATION, lambda n: n["id"] == barrier)
    assert notification_id not in [n["id"] for n in outsider.events(Event.NOTIFICATION)]


def test_long_task_progress_arrives_in_order(stack, clients, unique):
    client = RecordingClient(stack.url, transports=["polling"],
                             auth=user_auth(f"dan-{unique}")).connect()
    clients.append(client)
    job_id = client.sio.call(Event.START_JOB, {"steps": 5}, timeout=10)["job_id"]
    done = client.wait_for(Event.JOB_DONE, lambda d: d["job_id"] == job_id, timeout=30)
    progress = [p for p in client.events(Event.JOB_PROGRESS) if p["job_id"] == job_id]
    assert [p["step"] for p in progress] == [1, 2, 3, 4, 5]
    assert [p["percent"] for p in progress] == [20, 40, 60, 80, 100]
    assert done["result"]["steps"] == 5


def test_job_progress_follows_a_user_to_all_their_connections(stack, clients, unique):
    user = f"carol-{unique}"
    tabs = on_distinct_replicas(stack.url, clients, count=2, auth=user_auth(user))
    job_id = tabs[0].sio.call(Event.START_JOB, {"steps": 2}, timeout=10)["job_id"]
    for tab in tabs:
        tab.wait_for(Event.JOB_DONE, lambda d: d["job_id"] == job_id, timeout=30)


def test_python_function_and_command_line_enqueue(stack, clients, unique):
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    client.sio.emit(Event.JOIN, {"room": unique})
    client.wait_for(Event.MY_RESPONSE, lambda r: unique in str(r["data"]))

    jobs = JobQueue(stack.amqp_url)
    from_python = jobs.enqueue(Job.NOTIFY, {"to": {"room": unique}, "data": {"via": "python"},
                                            "created_at": now_ms()})
    jobs.close()
    client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == from_python)

    command = subprocess.run(
        [sys.executable, "-m", "worker", "enqueue", Job.NOTIFY,
         json.dumps({"to": {"room": unique}, "data": {"via": "cli"}})],
        cwd=ROOT, env={**stack_env(stack)}, capture_output=True, text=True, timeout=30)
    assert command.returncode == 0, command.stderr
    from_cli = command.stdout.strip().splitlines()[-1]
    got = client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == from_cli)
    assert got["data"] == {"via": "cli"}

    refused = subprocess.run(
        [sys.executable, "-m", "worker", "enqueue", Job.NOTIFY, json.dumps({"to": "nobody"})],
        cwd=ROOT, env={**stack_env(stack)}, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "not queued" in refused.stderr


def stack_env(stack) -> dict[str, str]:
    import os
    return {**os.environ, **STACK_ENV, "AMQP_URL": stack.amqp_url}


def test_worker_killed_mid_job_the_job_still_completes_once(stack, clients, unique):
    client = RecordingClient(stack.url, auth=user_auth(f"erin-{unique}")).connect()
    clients.append(client)
    job_id = client.sio.call(Event.START_JOB, {"steps": 8}, timeout=10)["job_id"]
    client.wait_for(Event.JOB_PROGRESS, lambda p: p["job_id"] == job_id and p["step"] >= 2,
                    timeout=30)
    worker = stack.worker_processes[0]
    worker.send(signal.SIGKILL)
    worker.popen.wait(timeout=10)
    stack.worker_processes[0] = stack.start_worker(1)

    client.wait_for(Event.JOB_DONE, lambda d: d["job_id"] == job_id, timeout=60)
    time.sleep(1.0)  # would a second completion arrive?
    done_ids = [d["job_id"] for d in client.events(Event.JOB_DONE) if d["job_id"] == job_id]
    assert len(set(done_ids)) == 1  # clients dedupe by id: the job completed once for them
    assert len(done_ids) == 1
    steps_seen = {p["step"] for p in client.events(Event.JOB_PROGRESS) if p["job_id"] == job_id}
    assert steps_seen == set(range(1, 9))


def test_failed_job_is_retried_with_backoff_then_succeeds(stack, clients, unique):
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    sid_room = client.info()["sid"]
    jobs = JobQueue(stack.amqp_url)
    job_id = jobs.enqueue(Job.LONG_TASK, {"room": sid_room, "steps": 2, "step_seconds": 0,
                                          "fail_at_step": 1, "fail_attempts": 1})
    jobs.close()
    done = client.wait_for(Event.JOB_DONE, lambda d: d["job_id"] == job_id, timeout=30)
    assert done["result"]["attempt"] == 2


def test_job_failing_every_attempt_lands_in_the_dead_letter_queue(stack, unique):
    jobs = JobQueue(stack.amqp_url)
    job_id = jobs.enqueue(Job.LONG_TASK, {"room": unique, "steps": 1, "step_seconds": 0,
                                          "fail_at_step": 1})
    jobs.close()
    entries = []

    def dead_lettered() -> list:
        entries.extend(e for e in dead_letters(stack.amqp_url, timeout=2)
                       if isinstance(e.get("job"), dict) and e["job"]["id"] == job_id)
        return entries

    wait_until(dead_lettered, timeout=30, interval=0,
               what="the failing job reaching the dead-letter queue")
    assert "failed after 3 attempts" in entries[0]["error"]
    assert "simulated failure" in entries[0]["error"]


def test_poison_messages_are_dead_lettered_and_do_not_block_the_queue(stack, clients, unique):
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    with kombu.Connection(stack.amqp_url) as connection:
        producer = connection.Producer()
        publish = {"exchange": JOBS_EXCHANGE, "routing_key": JOBS_QUEUE.routing_key,
                   "declare": [JOBS_QUEUE]}
        producer.publish(f"not json {unique}", content_type="application/x-garbage", **publish)
        producer.publish({"id": unique, "name": "no_such_job", "args": {}}, **publish)
        producer.publish({"id": unique + "-args", "name": Job.NOTIFY, "args": {"to": 5}},
                         **publish)
    # The queue keeps moving: a good job behind the poison ones is delivered.
    after = post_notification(stack, {"to": "all", "data": {"after": unique}}).json()["id"]
    client.wait_for(Event.NOTIFICATION, lambda n: n["id"] == after, timeout=15)

    entries = dead_letters(stack.amqp_url)
    mine = [e for e in entries if unique in json.dumps(e)]
    errors = " | ".join(e["error"] for e in mine)
    assert len(mine) == 3, errors
    assert "undecodable" in errors and "unknown job 'no_such_job'" in errors
    assert "invalid" in errors.lower() or "validation" in errors.lower()


@pytest.mark.parametrize("headers, expected", [
    ({}, 401),
    ({"Authorization": "Bearer wrong-key"}, 401),
    ({"Authorization": "Basic " + STACK_ENV["API_KEY"]}, 401),
])
def test_api_refuses_missing_or_wrong_keys(stack, headers, expected):
    response = post_notification(stack, {"to": "all", "data": {}}, headers=headers)
    assert response.status_code == expected
    assert "API key" in response.json()["error"]


@pytest.mark.parametrize("body, fragment", [
    ("not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"to": "all"}, "data"),
    ({"to": "everyone", "data": {}}, "to"),
    ({"to": {"user": 7}, "data": {}}, "to"),
    ({"to": "all", "data": "text"}, "data"),
    ({"to": "all", "data": {}, "extra": 1}, "extra"),
])
def test_api_rejects_malformed_bodies_with_a_json_error(stack, body, fragment):
    if isinstance(body, str):
        response = requests.post(f"{stack.url}/api/notifications", data=body, timeout=10,
                                 headers={**api_headers(), "Content-Type": "application/json"})
    else:
        response = post_notification(stack, body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_periodic_server_event_reaches_clients(stack, clients):
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    first = client.wait_for(Event.SERVER_EVENT, timeout=10)
    second = client.wait_for(Event.SERVER_EVENT, lambda e: e["count"] > first["count"], timeout=10)
    assert second["sent_at"] > first["sent_at"]


def test_several_workers_share_the_jobs_and_only_one_schedules(stack, clients):
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    second = stack.start_worker(2)
    try:
        sid_room = client.info()["sid"]
        jobs = JobQueue(stack.amqp_url)
        job_ids = [jobs.enqueue(Job.LONG_TASK, {"room": sid_room, "steps": 2, "step_seconds": 0.3})
                   for _ in range(6)]
        jobs.close()
        for job_id in job_ids:
            client.wait_for(Event.JOB_DONE, lambda d, j=job_id: d["job_id"] == j, timeout=30)
        ran_on = {log.name: sum(job_id in log.log_path.read_text() for job_id in job_ids)
                  for log in (stack.worker_processes[0], second)}
        assert all(count > 0 for count in ran_on.values()), ran_on  # both took jobs

        # The periodic event keeps one sequence: a second scheduler would repeat counts.
        first = client.wait_for(Event.SERVER_EVENT, timeout=10)
        client.wait_for(Event.SERVER_EVENT, lambda e: e["count"] >= first["count"] + 2, timeout=15)
        counts = [e["count"] for e in client.events(Event.SERVER_EVENT)]
        assert len(counts) == len(set(counts)), counts
    finally:
        second.send(signal.SIGTERM)
        second.popen.wait(timeout=15)
        stack.processes.remove(second)
