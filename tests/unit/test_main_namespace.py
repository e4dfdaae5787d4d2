"""The main namespace: connect and identity, the example app's events, acks, rooms and errors."""

from __future__ import annotations

import pytest

from common.auth import issue_token
from common.contract import MAIN_NAMESPACE, Event, user_room
from tests.support.app import SECRET, SID_PREFIX, errors_for, only
from web.extensions import socketio

CONNECTED = {"data": "Connected", "count": 0}


# -- connect ---------------------------------------------------------------------------------


def test_anonymous_client_connects_and_is_greeted(connect):
    client = connect()

    assert client.is_connected()
    assert only(client.events(Event.MY_RESPONSE)) == CONNECTED
    info = client.emit(Event.SERVER_INFO, callback=True)
    assert info["user"] is None


def test_session_ids_name_the_replica_for_nginx(connect):
    sid = connect().sid()

    assert sid.startswith(SID_PREFIX) and len(sid) > len(SID_PREFIX)


def test_valid_token_names_the_user_and_joins_the_user_room(connect):
    alice = connect(auth={"token": issue_token(SECRET, "alice")})
    other = connect()
    alice.get_received()

    assert alice.is_connected()
    assert alice.emit(Event.SERVER_INFO, callback=True)["user"] == "alice"
    socketio.emit(Event.NOTIFICATION, {"data": "for alice"}, to=user_room("alice"))
    assert only(alice.events(Event.NOTIFICATION))["data"] == "for alice"
    assert other.events(Event.NOTIFICATION) == []


def test_a_client_cannot_send_to_a_users_room(connect):
    alice = connect(auth={"token": issue_token(SECRET, "alice")})
    mallory = connect()
    alice.get_received()

    ack = mallory.emit(Event.MY_ROOM_EVENT, {"room": user_room("alice"), "data": "from bank"},
                       callback=True)

    assert ack["event"] == Event.MY_ROOM_EVENT and "only the backend" in ack["error"]
    assert alice.events(Event.MY_RESPONSE) == []


def test_auth_without_token_is_anonymous(connect):
    client = connect(auth={})

    assert client.is_connected()
    assert client.emit(Event.SERVER_INFO, callback=True)["user"] is None


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ({"token": "not-a-jwt"}, "token is invalid"),
        ({"token": issue_token(SECRET, "alice", ttl_seconds=-60)}, "token expired"),
        ({"token": issue_token("another-secret-key-0123456789abcdef", "alice")},
         "token signature is invalid"),
        ({"token": ""}, "non-empty string"),
        ({"token": 12345}, "non-empty string"),
        ({"token": ["a", "list"]}, "non-empty string"),
        ("a bare string", "auth must be an object"),
        (["token"], "auth must be an object"),
        (True, "auth must be an object"),
    ],
    ids=["garbage", "expired", "bad-signature", "empty", "int", "list-token", "str-auth",
         "list-auth", "bool-auth"],
)
def test_untrustworthy_auth_is_refused_with_its_reason(connect, auth, reason):
    client = connect(namespace="/echo")  # a connected namespace, so the refusal can be read
    client.connect(namespace=MAIN_NAMESPACE, auth=auth)

    assert not client.is_connected(MAIN_NAMESPACE)
    refusal = client.refusal(MAIN_NAMESPACE)
    assert refusal is not None, "no CONNECT_ERROR packet"
    assert reason in refusal["message"]


# -- unnamed events ----------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["hello", "", "ünïcødé ✓"])
def test_message_event_is_sent_back(connect, message):
    client = connect()
    client.get_received()

    client.send(message)

    assert [(item["name"], item["args"]) for item in client.get_received()] == [
        (Event.MESSAGE, message)]


@pytest.mark.parametrize("data", [{"a": 1, "b": [1, 2, {"c": None}]}, [1, "two", 3.5], "text"])
def test_json_event_is_sent_back_as_json(connect, data):
    client = connect()
    client.get_received()

    client.send(data, json=True)

    assert [(item["name"], item["args"]) for item in client.get_received()] == [(Event.JSON, data)]


# -- the example app's events ------------------------------------------------------------------


def test_my_event_answers_the_sender_and_counts(connect):
    client = connect()
    other = connect()
    client.get_received()
    other.get_received()

    client.emit(Event.MY_EVENT, {"data": "one"})
    client.emit(Event.MY_EVENT, {"data": {"nested": [1, 2]}})

    assert client.events(Event.MY_RESPONSE) == [[{"data": "one", "count": 1}],
                                                [{"data": {"nested": [1, 2]}, "count": 2}]]
    assert other.get_received() == []


def test_my_broadcast_event_reaches_every_client_including_the_sender(connect):
    sender, first, second = connect(), connect(), connect()
    for client in (sender, first, second):
        client.get_received()

    sender.emit(Event.MY_BROADCAST_EVENT, {"data": "to all"})

    for client in (sender, first, second):
        assert only(client.events(Event.MY_RESPONSE)) == {"data": "to all", "count": 1}


def test_join_and_leave_report_the_rooms(connect):
    client = connect()
    sid = client.sid()
    client.get_received()

    client.emit(Event.JOIN, {"room": "room-a"})
    client.emit(Event.JOIN, {"room": "room-b"})
    client.emit(Event.LEAVE, {"room": "room-a"})

    reports = [args[0]["data"] for args in client.events(Event.MY_RESPONSE)]
    assert len(reports) == 3
    assert set(reports[1].removeprefix("In rooms: ").split(", ")) == {sid, "room-a", "room-b"}
    assert set(reports[2].removeprefix("In rooms: ").split(", ")) == {sid, "room-b"}


def test_room_events_reach_members_only(connect):
    member, sender, outsider = connect(), connect(), connect()
    member.emit(Event.JOIN, {"room": "room-x"})
    for client in (member, sender, outsider):
        client.get_received()

    sender.emit(Event.MY_ROOM_EVENT, {"room": "room-x", "data": "hi room"})

    assert only(member.events(Event.MY_RESPONSE)) == {"data": "hi room", "count": 1}
    assert sender.get_received() == []
    assert outsider.get_received() == []


def test_left_room_no_longer_delivers(connect):
    member, sender = connect(), connect()
    member.emit(Event.JOIN, {"room": "room-y"})
    member.emit(Event.LEAVE, {"room": "room-y"})
    member.get_received()

    sender.emit(Event.MY_ROOM_EVENT, {"room": "room-y", "data": "anyone?"})

    assert member.get_received() == []


def test_close_room_tells_members_and_empties_it(connect):
    first, second, closer = connect(), connect(), connect()
    for client in (first, second):
        client.emit(Event.JOIN, {"room": "room-z"})
    for client in (first, second, closer):
        client.get_received()

    closer.emit(Event.CLOSE_ROOM, {"room": "room-z"})
    for client in (first, second):
        assert only(client.events(Event.MY_RESPONSE))["data"] == "Room room-z is closing."
    closer.emit(Event.MY_ROOM_EVENT, {"room": "room-z", "data": "after close"})

    assert first.get_received() == [] and second.get_received() == []


def test_direct_message_to_another_clients_sid_room(connect):
    sender, receiver = connect(), connect()
    receiver_sid = receiver.sid()
    receiver.get_received()

    sender.emit(Event.MY_ROOM_EVENT, {"room": receiver_sid, "data": "just you"})

    assert only(receiver.events(Event.MY_RESPONSE))["data"] == "just you"


def test_own_sid_room_delivers_to_self(connect):
    client = connect()
    sid = client.sid()
    client.get_received()

    client.emit(Event.MY_ROOM_EVENT, {"room": sid, "data": "note to self"})

    assert only(client.events(Event.MY_RESPONSE))["data"] == "note to self"


@pytest.mark.parametrize("payload", [1700000000123, {"t": 1.5}, "ping", [1, 2]])
def test_my_ping_acks_the_payload_back(connect, payload):
    client = connect()

    assert client.emit(Event.MY_PING, payload, callback=True) == payload


def test_my_ping_without_payload_acks_empty(connect):
    client = connect()
    client.get_received()

    assert client.emit(Event.MY_PING, callback=True) == []
    assert client.get_received() == []


def test_disconnect_request_disconnects_once_the_client_acked(connect):
    client = connect()
    client.get_received()

    client.emit(Event.DISCONNECT_REQUEST)
    assert only(client.events(Event.MY_RESPONSE))["data"] == "Disconnected!"
    assert client.is_connected()  # the server waits for the client to see the goodbye

    client.answer(Event.MY_RESPONSE)

    assert not client.is_connected()


def test_ask_client_gets_the_clients_answer_back(connect):
    client = connect()
    client.get_received()

    client.emit(Event.ASK_CLIENT, {"data": "what is 6 x 7?"})
    assert only(client.events(Event.CLIENT_QUESTION)) == {"data": "what is 6 x 7?"}
    client.answer(Event.CLIENT_QUESTION, 42)

    response = only(client.events(Event.MY_RESPONSE))
    assert response["data"] == {"question": "what is 6 x 7?", "answer": 42}


def test_server_info_describes_the_connection(connect):
    token = issue_token(SECRET, "bob")
    client = connect(auth={"token": token})

    info = client.emit(Event.SERVER_INFO, callback=True)

    assert info["replica"] == "unit-1"
    assert info["address"] == "127.0.0.1:5001"
    assert info["async_mode"] == "threading"
    assert info["user"] == "bob"
    assert info["sid"].startswith(SID_PREFIX)
    assert isinstance(info["pid"], int)


# -- errors ------------------------------------------------------------------------------------


def test_handler_error_names_its_event_in_ack_and_error_response(connect):
    client = connect()
    client.get_received()

    ack = client.emit(Event.MY_EVENT, "not an object", callback=True)

    assert ack["event"] == Event.MY_EVENT
    assert ack["error"].startswith("invalid payload")
    assert errors_for(client) == [ack]
    assert client.is_connected()


def test_validation_error_says_which_field(connect):
    client = connect()

    ack = client.emit(Event.JOIN, {"room": 7}, callback=True)

    assert ack["event"] == Event.JOIN
    assert "room" in ack["error"]


@pytest.mark.parametrize("event", ["no_such_event", "MY_EVENT", "my event", ""])
def test_unknown_event_gets_error_response_naming_it(connect, event):
    client = connect()
    client.get_received()

    ack = client.emit(event, {"data": 1}, callback=True)

    assert ack == {"event": event, "error": f"unknown event {event!r}"}
    assert errors_for(client) == [ack]
    assert client.is_connected()


def test_close_room_refuses_own_sid_and_user_rooms(connect):
    client = connect(auth={"token": issue_token(SECRET, "carol")})
    sid = client.sid()
    client.get_received()

    for room in (sid, user_room("carol"), user_room("somebody-else")):
        ack = client.emit(Event.CLOSE_ROOM, {"room": room}, callback=True)
        assert ack["event"] == Event.CLOSE_ROOM and "cannot be closed" in ack["error"]
    client.emit(Event.MY_EVENT, {"data": "still here"})

    assert client.events(Event.MY_RESPONSE) == [[{"data": "still here", "count": 1}]]


def test_close_room_refuses_another_connections_sid_room_without_messaging_it(connect):
    # Regression: on_close_room used to refuse only the caller's own sid. Closing another
    # connection's sid room first sent "Room <sid> is closing." to that connection (a message it
    # never asked for), then python-socketio raised ValueError('cannot close a sid room'): the
    # caller got "internal error" and a traceback was logged (on another replica, in its broker
    # listener thread). Guards that every sid room is refused before anything is sent.
    attacker, victim = connect(), connect()
    victim_sid = victim.sid()
    victim.get_received()

    ack = attacker.emit(Event.CLOSE_ROOM, {"room": victim_sid}, callback=True)

    assert victim.get_received() == []
    assert ack["event"] == Event.CLOSE_ROOM and "cannot be closed" in ack["error"]


def test_joining_another_users_room_is_refused(connect):
    # Regression: any client, even an anonymous one, could join `user:<id>` and read everything
    # addressed to that user (the worker's notifications, direct messages). Guards that on_join
    # refuses user rooms.
    eavesdropper = connect()
    eavesdropper.get_received()

    eavesdropper.emit(Event.JOIN, {"room": user_room("alice")})

    errors = errors_for(eavesdropper)
    assert len(errors) == 1 and errors[0]["event"] == Event.JOIN, (
        "an anonymous client joined another user's room")


def test_joining_another_connections_sid_room_is_refused_clearly(connect):
    # Regression: on one replica python-socketio refused to enter a known sid room with
    # ValueError, which reached the client as "internal error" with a traceback in the log (on
    # another replica the join succeeded: tests/integration/test_core.py guards that case).
    # Guards that on_join refuses a sid room with a clear error.
    eavesdropper, target = connect(), connect()
    target_sid = target.sid()
    eavesdropper.get_received()

    ack = eavesdropper.emit(Event.JOIN, {"room": target_sid}, callback=True)

    assert errors_for(eavesdropper) == [ack]
    assert ack["event"] == Event.JOIN and ack["error"] != "internal error"
