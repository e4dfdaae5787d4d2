"""Presence: the cluster view built from every replica's records (web/presence.py), and the app's
side of it (rooms watched, the HTTP API, the chat's member list, `presence` events)."""

from __future__ import annotations

import logging

from common import strict_json
from common.auth import issue_token
from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event
from common.settings import DEV_API_KEY
from tests.support.app import SECRET
from web.presence import (
    EXPIRY_SECONDS,
    FLUSH_SECONDS,
    MAX_MESSAGE_BYTES,
    Changes,
    ClusterView,
    Presence,
    in_parts,
)

API_HEADERS = {"Authorization": f"Bearer {DEV_API_KEY}"}


def message(seq: int, *records, full: bool = False, name: str = "web-a") -> dict:
    return {"seq": seq, "name": name, "full": full, "sync": False, "records": list(records)}


def apply(view: ClusterView, replica: str, body: dict, now: float = 0.0) -> tuple[bool, Changes]:
    changes = Changes()
    return view.apply(replica, body, now, changes), changes


def events_of(view: ClusterView, replica: str, body: dict) -> list:
    """The `presence` events applying `body` gives (against the view as it is then)."""
    return apply(view, replica, body)[1].events(view)


# -- the view ------------------------------------------------------------------------------------

def test_records_of_two_replicas_make_one_view_per_room_and_namespace():
    view = ClusterView()
    apply(view, "a", message(1, ["/chat", "s1", "alice", ["lobby"]], ["/chat", "s2", None, []],
                             full=True))
    apply(view, "b", message(1, ["/chat", "s3", "bob", ["lobby", "x"]],
                             ["/chat", "s4", None, ["lobby"]], full=True, name="web-b"))

    assert view.room(CHAT_NAMESPACE, "lobby").summary() == {
        "users": ["alice", "bob"], "anonymous": 1, "connections": 3}
    assert view.room(CHAT_NAMESPACE).summary() == {
        "users": ["alice", "bob"], "anonymous": 2, "connections": 4}
    assert view.room(CHAT_NAMESPACE, "nobody-here").summary() == {
        "users": [], "anonymous": 0, "connections": 0}
    assert view.connections_of("bob") == [{"sid": "s3", "namespace": "/chat", "replica": "web-b"}]


def test_a_user_comes_with_the_first_connection_and_goes_with_the_last():
    view = ClusterView()
    apply(view, "a", message(1, full=True))
    first = events_of(view, "a", message(2, ["/", "s1", "alice", ["r"]]))
    second = events_of(view, "a", message(3, ["/", "s2", "alice", ["r"]]))
    one_left = events_of(view, "a", message(4, ["/", "s1"]))
    last_left = events_of(view, "a", message(5, ["/", "s2"]))

    assert first == [("/", "r", {"room": "r", "joined": ["alice"], "left": [], "users": 1,
                                 "anonymous": 0})]
    assert second == [] and one_left == []
    assert last_left == [("/", "r", {"room": "r", "joined": [], "left": ["alice"], "users": 0,
                                     "anonymous": 0})]
    assert view.rooms == {} and view.by_user == {}


def test_a_record_is_a_connections_whole_state_so_a_repeat_changes_nothing():
    view = ClusterView()
    apply(view, "a", message(1, ["/", "s1", "alice", ["r"]], full=True))
    again = events_of(view, "a", message(2, ["/", "s1", "alice", ["r"]]))
    moved = events_of(view, "a", message(3, ["/", "s1", "alice", ["q"]]))

    assert again == []
    assert [(room, payload["joined"], payload["left"]) for _, room, payload in moved] == [
        ("q", ["alice"], []), ("r", [], ["alice"])]
    assert view.room(MAIN_NAMESPACE).summary()["connections"] == 1


def test_anonymous_arrivals_give_their_room_an_event_with_the_count():
    view = ClusterView()
    events = events_of(view, "a", message(1, ["/chat", "s1", None, ["lobby"]], full=True))

    assert events == [("/chat", "lobby", {"room": "lobby", "joined": [], "left": [], "users": 0,
                                          "anonymous": 1})]


def test_an_anonymous_record_repeated_or_a_full_list_resent_tells_no_room():
    """A client re-joining a room it is in, or any replica asking for full lists, must not send
    every member of every room of those connections an event about nothing."""
    view = ClusterView()
    rooms = [f"room-{i}" for i in range(50)]
    apply(view, "a", message(1, ["/", "s1", None, rooms], ["/", "s2", "bob", rooms], full=True))

    repeated = events_of(view, "a", message(2, ["/", "s1", None, rooms]))
    resent = events_of(view, "a", message(3, ["/", "s1", None, rooms], ["/", "s2", "bob", rooms],
                                          full=True))
    one_more = events_of(view, "a", message(4, ["/", "s1", None, [*rooms, "new"]]))

    assert repeated == [] and resent == []
    assert one_more == [("/", "new", {"room": "new", "joined": [], "left": [], "users": 0,
                                      "anonymous": 1})]
    assert view.room(MAIN_NAMESPACE, "room-0").summary() == {"users": ["bob"], "anonymous": 1,
                                                             "connections": 2}


def test_one_anonymous_leaving_as_another_comes_leaves_the_count_and_tells_no_one():
    view = ClusterView()
    apply(view, "a", message(1, ["/", "s1", None, ["r"]], full=True))

    swapped = events_of(view, "a", message(2, ["/", "s1"], ["/", "s2", None, ["r"]]))

    assert swapped == []
    assert view.room(MAIN_NAMESPACE, "r").anonymous == 1


def test_a_missed_message_or_an_unknown_replica_asks_for_a_full_list():
    view = ClusterView()
    unknown, _ = apply(view, "a", message(7, ["/", "s1", None, []]))
    in_order, _ = apply(view, "a", message(8))
    skipped, _ = apply(view, "a", message(10))
    full, _ = apply(view, "a", message(11, full=True))

    assert (unknown, in_order, skipped, full) == (True, False, True, False)


def test_a_full_list_replaces_what_was_known_of_its_replica():
    view = ClusterView()
    apply(view, "a", message(1, ["/", "s1", "alice", []], ["/", "s2", "bob", []], full=True))
    apply(view, "a", message(5, ["/", "s2", "bob", []], ["/", "s3", None, []], full=True))

    assert view.room(MAIN_NAMESPACE).summary() == {"users": ["bob"], "anonymous": 1,
                                                   "connections": 2}


def test_a_replica_not_heard_of_leaves_with_its_connections_but_never_this_one():
    view = ClusterView()
    apply(view, "me", message(1, ["/", "s1", "alice", ["r"]], full=True), now=0.0)
    apply(view, "dead", message(1, ["/", "s2", "bob", ["r"]], full=True, name="web-dead"),
          now=0.0)
    apply(view, "alive", message(1, full=True), now=0.0)
    apply(view, "alive", message(2), now=EXPIRY_SECONDS)

    changes = Changes()
    gone = view.expire(EXPIRY_SECONDS + 1, changes, keep="me")

    assert gone == ["web-dead"]
    assert changes.events(view) == [("/", "r", {"room": "r", "joined": [], "left": ["bob"],
                                                "users": 1, "anonymous": 0})]
    assert set(view.replicas) == {"me", "alive"}


def test_a_replica_that_was_itself_stalled_reads_before_it_forgets_the_others():
    clock = [0.0]
    presence = Presence(None, None, namespaces=(MAIN_NAMESPACE,), replica_name="web-me",
                        clock=lambda: clock[0])
    apply(presence.view, "other", message(1, ["/", "s9", "bob", []], full=True, name="web-o"))
    presence.flush()

    clock[0] = EXPIRY_SECONDS + 5  # nothing ran here meanwhile: the other's messages are unread
    presence.flush()
    kept = set(presence.view.replicas)
    clock[0] += FLUSH_SECONDS  # on time again, and still nothing heard of it
    presence.flush()

    assert kept == {"this-replica", "other"}
    assert set(presence.view.replicas) == {"this-replica"}


# -- the app (one process: the view is this replica's) -------------------------------------------

def token(user: str) -> dict:
    return {"token": issue_token(SECRET, user)}


def test_the_api_lists_users_and_counts_anonymous_connections_per_room(app, connect):
    alice = connect(auth=token("alice"))
    connect()  # anonymous
    alice.emit(Event.JOIN, {"room": "r1"})
    http = app.test_client()

    everyone = http.get("/api/presence", headers=API_HEADERS).get_json()
    room = http.get("/api/presence?room=r1", headers=API_HEADERS).get_json()
    connections = http.get("/api/users/alice/connections", headers=API_HEADERS).get_json()

    assert everyone == {"namespace": "/", "room": None, "users": ["alice"], "anonymous": 1,
                        "connections": 2, "replicas": 1}
    assert room["users"] == ["alice"] and room["anonymous"] == 0
    alice_sid = app.extensions["socketio"].server.manager.sid_from_eio_sid(alice.eio_sid, "/")
    assert connections == {"user": "alice", "connections": [
        {"sid": alice_sid, "namespace": "/", "replica": "unit-1"}]}


def test_the_presence_api_needs_the_key_and_checks_its_arguments(app):
    http = app.test_client()

    assert http.get("/api/presence").status_code == 401
    bad_namespace = http.get("/api/presence?namespace=/admin", headers=API_HEADERS)
    bad_room = http.get("/api/presence?room=" + "x" * 201, headers=API_HEADERS)

    assert bad_namespace.status_code == 400 and "namespace" in bad_namespace.get_json()["error"]
    assert bad_room.status_code == 400 and "room" in bad_room.get_json()["error"]


def test_a_refused_caller_cannot_write_a_long_log_line_through_the_user_in_the_path(app, caplog):
    """Without the key anyone may ask; the user id of the path is theirs, up to nginx's 8 KB."""
    with caplog.at_level(logging.WARNING, logger="web.api"):
        refused = app.test_client().get(f"/api/users/{'u' * 7000}/connections")

    assert refused.status_code == 401
    assert [len(line) < 400 for line in caplog.messages] == [True]


def test_chat_members_get_presence_events_and_a_signed_in_user_counts_on_every_namespace(
        app, connect):
    alice = connect(auth=token("alice"))
    alice.connect(namespace=CHAT_NAMESPACE)
    bob = connect(namespace=CHAT_NAMESPACE)
    bob.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "bob"}, namespace=CHAT_NAMESPACE)

    ack = alice.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "alice"}, callback=True,
                     namespace=CHAT_NAMESPACE)
    app.extensions["presence"].flush()

    assert ack["members"] == {"users": ["alice"], "more_users": 0, "anonymous": 1,
                              "connections": 2}
    events = [args[0] for args in bob.events(Event.PRESENCE, CHAT_NAMESPACE)]
    assert {"room": "lobby", "joined": ["alice"], "left": [], "users": 1,
            "anonymous": 1} in events


def test_reserved_and_sid_rooms_are_not_presence_rooms(app, connect):
    connect(auth=token("carol"))
    view = app.extensions["presence"].current_view()

    assert all(room is None for _, room in view.rooms)


def test_a_full_list_in_parts_removes_the_unlisted_only_after_its_last_part():
    view = ClusterView()
    apply(view, "a", message(1, ["/", "s1", "alice", []], ["/", "s2", "bob", []], full=True))
    first = {**message(2, ["/", "s3", None, []], full=True), "part": 0, "parts": 2}
    last = {**message(3, ["/", "s2", "bob", []], full=True), "part": 1, "parts": 2}

    apply(view, "a", first)
    assert view.room(MAIN_NAMESPACE).summary()["users"] == ["alice", "bob"]
    apply(view, "a", last)

    assert view.room(MAIN_NAMESPACE).summary() == {"users": ["bob"], "anonymous": 1,
                                                   "connections": 2}


def test_a_full_list_missing_a_part_removes_nothing_and_asks_again():
    view = ClusterView()
    apply(view, "a", message(1, ["/", "s1", "alice", []], full=True))
    apply(view, "a", {**message(2, full=True), "part": 0, "parts": 3})
    gap, _ = apply(view, "a", {**message(4, ["/", "s2", None, []], full=True), "part": 2,
                               "parts": 3})

    assert gap
    assert view.room(MAIN_NAMESPACE).summary()["users"] == ["alice"]


def test_records_go_in_parts_of_bounded_size():
    record = ["/chat", "s" * 20, "u" * 50, ["r" * 200] * 50]  # about 10 KiB
    parts = in_parts([record] * 100)

    assert len(parts) == 4 and sum(len(part) for part in parts) == 100
    assert all(len(strict_json.dumps(part)) <= MAX_MESSAGE_BYTES + 11_000 for part in parts)
    assert in_parts([]) == [[]]  # a heartbeat still goes out


def test_a_replica_with_a_large_list_sends_it_in_parts_another_applies_whole(app, connect):
    presence = app.extensions["presence"]
    for index in range(60):
        presence.room_changed(f"s{index}", "/", None, f"e{index}", True)
        for room in range(50):
            presence.room_changed(f"s{index}", "/", f"{room:03d}" + "r" * 197, f"e{index}", True)
    published = []
    presence.manager = type("Publisher", (), {"publish_record": staticmethod(
        lambda key, body: published.append(body))})()

    presence.flush()
    other = ClusterView()
    for each in published:
        apply(other, presence.me, each)

    assert len(published) > 1 and all(each["full"] for each in published)
    assert other.room(MAIN_NAMESPACE).summary()["anonymous"] == 60
    assert other.room(MAIN_NAMESPACE, "049" + "r" * 197).summary()["connections"] == 60


def test_the_join_answer_lists_at_most_a_hundred_users_and_counts_the_others(app, connect):
    presence = app.extensions["presence"]
    for index in range(150):
        presence.room_changed(f"s{index}", "/chat", None, f"e{index}", True)
        presence.room_changed(f"s{index}", "/chat", "crowd", f"e{index}", True)
        presence.users[f"e{index}"] = f"user-{index:03d}"
    guest = connect(namespace=CHAT_NAMESPACE)

    ack = guest.emit(Event.CHAT_JOIN, {"room": "crowd", "name": "guest"}, callback=True,
                     namespace=CHAT_NAMESPACE)

    members = ack["members"]
    assert len(members["users"]) == 100 and members["more_users"] == 50
    assert members["users"][0] == "user-000" and members["anonymous"] == 1
