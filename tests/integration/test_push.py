"""The push API across replicas (POST /api/emit, POST /api/disconnect) and the dead-letter CLI,
against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kombu
import requests

from common.auth import issue_token
from common.contract import Event
from common.jobs import DEAD_LETTER_QUEUE, Job, job_message, now_ms
from scripts.stack import ROOT
from tests.support.clients import RecordingClient, on_distinct_replicas
from tests.support.stack import STACK_ENV, api_headers
from tests.support.waiting import wait_until
from worker import deadletters


def api(stack, path: str, body) -> requests.Response:
    return requests.post(f"{stack.url}/api/{path}", json=body, headers=api_headers(), timeout=10)


def signed_in(stack, user: str) -> RecordingClient:
    return RecordingClient(stack.url, auth={"token": issue_token(STACK_ENV["SECRET_KEY"], user)})


def test_emit_reaches_a_room_and_a_user_on_every_replica(stack, clients, unique):
    members = on_distinct_replicas(stack.url, clients)
    room = f"room-{unique}"
    for member in members:
        member.sio.emit(Event.JOIN, {"room": room})
        member.wait_for(Event.MY_RESPONSE, lambda p: room in str(p.get("data")))
    user = f"user-{unique}"
    users = [signed_in(stack, user).connect() for _ in range(3)]
    clients.extend(users)

    batch = [{"event": Event.MY_RESPONSE, "data": {"data": unique}, "to": {"room": room}},
             {"event": Event.NOTIFICATION, "data": {"id": unique}, "to": {"user": user}}]
    answer = api(stack, "emit", batch)
    assert answer.status_code == 202, answer.text
    for member in members:
        member.wait_for(Event.MY_RESPONSE, lambda p: p.get("data") == unique)
    for client in users:
        client.wait_for(Event.NOTIFICATION, lambda p: p.get("id") == unique)


def test_bad_emit_is_a_json_4xx_through_nginx(stack):
    answer = api(stack, "emit", {"event": Event.MY_RESPONSE, "to": {"room": "user:someone"}})
    assert answer.status_code == 403
    assert answer.headers["Content-Type"].startswith("application/json")
    assert "reserved" in answer.json()["error"]


def test_disconnect_reaches_the_users_connections_on_every_replica(stack, clients, unique):
    user = f"user-{unique}"
    targets: dict[str, RecordingClient] = {}
    for _ in range(12):
        client = signed_in(stack, user).connect()
        clients.append(client)
        targets.setdefault(client.info()["replica"], client)
        if len(targets) == 3:
            break
    assert len(targets) == 3
    bystander = signed_in(stack, f"other-{unique}").connect()
    clients.append(bystander)

    users_connections = len(clients) - 1

    def every_replica_knows_them() -> bool:
        return all(len(requests.get(f"{replica.url}/api/users/{user}/connections",
                                    headers=api_headers(), timeout=5).json()["connections"])
                   == users_connections for replica in stack.web)

    wait_until(every_replica_knows_them, timeout=10,
               what="every replica's presence view has the user's connections")
    answer = api(stack, "disconnect", {"user": user})
    assert answer.status_code == 202
    # What presence knew of when it was asked: the replicas disconnect after answering.
    assert answer.json() == {"user": user, "connections": users_connections}
    wait_until(lambda: not any(c.sio.connected for c in clients if c is not bystander),
               timeout=10, what="every connection of the user closed")
    assert bystander.sio.connected and bystander.info()["user"] == f"other-{unique}"


# -- the dead-letter CLI --------------------------------------------------------------------------

def dead_cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "dead", *args], cwd=ROOT,
                          env={**os.environ, "AMQP_URL": stack.amqp_url}, capture_output=True,
                          text=True, timeout=60)


def park(stack, entry) -> None:
    with kombu.Connection(stack.amqp_url) as connection:
        connection.Producer().publish(json.dumps(entry), routing_key=DEAD_LETTER_QUEUE.name,
                                      exchange="", declare=[DEAD_LETTER_QUEUE],
                                      content_type="application/json",
                                      delivery_mode="persistent")


def test_dead_letters_listed_shown_requeued_and_purged(stack, clients, unique):
    room = f"room-{unique}"
    watcher = RecordingClient(stack.url).connect()
    clients.append(watcher)
    watcher.sio.emit(Event.JOIN, {"room": room})
    watcher.wait_for(Event.MY_RESPONSE, lambda p: room in str(p.get("data")))
    runnable = job_message(Job.LONG_TASK, {"room": room, "steps": 1, "step_seconds": 0})
    runnable["attempt"] = 3
    poison = {"job": f"not json {unique}", "error": "poison message", "dead_at": now_ms()}
    poison_id = deadletters.entry_id(poison)
    park(stack, {"job": runnable, "error": "failed after 3 attempts", "dead_at": now_ms()})
    park(stack, poison)

    listed = dead_cli(stack, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{runnable['id']}  {Job.LONG_TASK}  attempt 3" in listed.stdout
    assert f"{poison_id}  (undecodable)" in listed.stdout
    shown = dead_cli(stack, "show", runnable["id"])
    assert json.loads(shown.stdout)["job"]["args"]["room"] == room
    assert dead_cli(stack, "show", "no-such-id").returncode == 1

    requeued = dead_cli(stack, "requeue", runnable["id"])
    assert requeued.returncode == 0 and requeued.stdout.strip() == runnable["id"]
    done = watcher.wait_for(Event.JOB_DONE, lambda p: p["job_id"] == runnable["id"])
    assert done["result"]["attempt"] == 1

    refused = dead_cli(stack, "requeue", poison_id)
    assert refused.returncode == 1 and "purge it instead" in refused.stderr
    assert dead_cli(stack, "purge", poison_id).returncode == 0
    after = dead_cli(stack, "list").stdout
    assert runnable["id"] not in after and poison_id not in after
