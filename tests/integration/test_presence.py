"""Presence across replicas (web/presence.py) on the real stack: python-socketio clients on
different replicas, through nginx; the HTTP API's lists and the `presence` events right after
joins, leaves and a replica killed with SIGKILL.

Its own stack: a replica is killed.
"""

from __future__ import annotations

import os
import signal

import pytest
import requests

from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event
from tests.support.clients import RecordingClient, on_replicas
from tests.support.stack import STACK_ENV, api_headers, running_stack, user_auth
from tests.support.waiting import wait_until
from web.presence import EXPIRY_SECONDS, FLUSH_SECONDS

# A change is in every replica's view after one flush and one trip through the broker.
SETTLED_SECONDS = 5.0


@pytest.fixture(scope="module")
def presence_stack():
    with running_stack("presence stack", replicas=3, workers=1,
                       extra_env={**STACK_ENV, "SERVER_EVENT_INTERVAL": "0"}) as stack:
        yield stack


def presence(url: str, **query) -> dict:
    answer = requests.get(f"{url}/api/presence", params=query, headers=api_headers(), timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def presence_is(url: str, expected: dict, timeout: float = SETTLED_SECONDS, **query) -> None:
    """Wait until GET /api/presence at `url` (nginx: whichever replica) answers `expected`."""
    seen = []

    def matches() -> bool:
        seen.append(presence(url, **query))
        return all(seen[-1][key] == value for key, value in expected.items())
    try:
        wait_until(matches, timeout, what=f"presence {query} == {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {seen[-1] if seen else None}") from None


def chat_client(stack, opened: list, replica: str, user: str | None) -> RecordingClient:
    auth = user_auth(user) if user else None
    return on_replicas(stack.url, opened, {replica}, auth=auth,
                       namespaces=[MAIN_NAMESPACE, CHAT_NAMESPACE])[replica]


def join_chat(client: RecordingClient, room: str, name: str) -> dict:
    return client.sio.call(Event.CHAT_JOIN, {"room": room, "name": name},
                           namespace=CHAT_NAMESPACE, timeout=10)


def test_room_members_on_three_replicas_are_listed_and_told_of_joins_and_leaves(
        presence_stack, clients, unique):
    room = f"lobby-{unique}"
    alice_name, bob_name = f"alice-{unique}", f"bob-{unique}"
    alice = chat_client(presence_stack, clients, "web-1", alice_name)
    bob = chat_client(presence_stack, clients, "web-2", bob_name)
    anonymous = chat_client(presence_stack, clients, "web-3", None)

    join_chat(alice, room, "alice")
    presence_is(presence_stack.url, {"users": [alice_name], "anonymous": 0},
                namespace=CHAT_NAMESPACE, room=room)
    answer = join_chat(bob, room, "bob")
    join_chat(anonymous, room, "someone")

    assert alice_name in answer["members"]["users"]  # the join answer lists who is there
    presence_is(presence_stack.url, {"users": sorted([alice_name, bob_name]), "anonymous": 1,
                                 "connections": 3}, namespace=CHAT_NAMESPACE, room=room)
    alice.wait_for(Event.PRESENCE, lambda event: event["room"] == room
                   and bob_name in event["joined"], timeout=SETTLED_SECONDS)
    alice.wait_for(Event.PRESENCE, lambda event: event["room"] == room
                   and event["anonymous"] == 1, timeout=SETTLED_SECONDS)
    connections = requests.get(f"{presence_stack.url}/api/users/{bob_name}/connections",
                               headers=api_headers(), timeout=5).json()["connections"]
    assert sorted((each["namespace"], each["replica"]) for each in connections) == [
        (MAIN_NAMESPACE, "web-2"), (CHAT_NAMESPACE, "web-2")]

    bob.disconnect()

    presence_is(presence_stack.url, {"users": [alice_name], "anonymous": 1},
                namespace=CHAT_NAMESPACE, room=room)
    left = alice.wait_for(Event.PRESENCE, lambda event: bob_name in event["left"],
                          timeout=SETTLED_SECONDS)
    assert left["users"] == 1
    assert requests.get(f"{presence_stack.url}/api/users/{bob_name}/connections",
                        headers=api_headers(), timeout=5).json()["connections"] == []


def test_a_killed_replicas_members_leave_within_seconds(presence_stack, clients, unique):
    room = f"doomed-{unique}"
    alice_name, carol_name = f"alice-{unique}", f"carol-{unique}"
    alice = chat_client(presence_stack, clients, "web-1", alice_name)
    carol = chat_client(presence_stack, clients, "web-3", carol_name)
    join_chat(alice, room, "alice")
    join_chat(carol, room, "carol")
    presence_is(presence_stack.url, {"users": sorted([alice_name, carol_name])},
                namespace=CHAT_NAMESPACE, room=room)
    presence_is(presence_stack.url, {"replicas": 3})

    victim = next(replica for replica in presence_stack.web if replica.replica_id == "web-3")
    os.killpg(victim.process.popen.pid, signal.SIGKILL)
    try:
        left = alice.wait_for(Event.PRESENCE, lambda event: carol_name in event["left"],
                              timeout=EXPIRY_SECONDS + 2 * FLUSH_SECONDS + SETTLED_SECONDS)
        assert left["room"] == room and left["users"] == 1
        presence_is(presence_stack.url, {"users": [alice_name], "replicas": 2},
                    namespace=CHAT_NAMESPACE, room=room)
        presence_is(presence_stack.url, {"replicas": 2})
    finally:
        presence_stack.start_replica(victim)

    # The restarted replica asks for everyone's list: its view is whole again. (nginx sends it
    # new sessions again once its failure timeout has passed.)
    placed = []

    def newcomer_on_web_3() -> bool:
        try:
            placed.append(chat_client(presence_stack, clients, "web-3", None))
        except AssertionError:
            return False
        return True
    wait_until(newcomer_on_web_3, 30, interval=1, what="a new session on the restarted web-3")
    join_chat(placed[0], room, "late")
    presence_is(victim.url, {"users": [alice_name], "anonymous": 1, "replicas": 3},
                namespace=CHAT_NAMESPACE, room=room)
