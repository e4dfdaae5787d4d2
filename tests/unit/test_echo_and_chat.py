"""The /echo namespace (plain functions, errors through on_error_default) and the /chat namespace
(a class-based Namespace with its own on_error)."""

from __future__ import annotations

import pytest

from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, Event
from tests.support.app import errors_for, only

# -- /echo -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["text", "", b"\x00\x01binary\xff", 42, -7, 3.25, True, None,
     {"a": [1, 2, {"b": None}], "c": "d"}, [1, "two", [3]]],
    ids=["str", "empty-str", "bytes", "int", "negative", "float", "bool", "null", "object",
         "array"],
)
def test_echo_acks_one_argument_unchanged(connect, value):
    client = connect(namespace=ECHO_NAMESPACE)

    assert client.emit(Event.ECHO, value, callback=True, namespace=ECHO_NAMESPACE) == value


def test_echo_acks_several_arguments_as_several_arguments(connect):
    client = connect(namespace=ECHO_NAMESPACE)
    args = ("one", b"\x02", 3, {"four": [4]})

    # The handler returns a tuple; Socket.IO sends it as an ack with several arguments.
    assert client.emit(Event.ECHO, *args, callback=True, namespace=ECHO_NAMESPACE) == list(args)


def test_echo_without_arguments_acks_empty(connect):
    client = connect(namespace=ECHO_NAMESPACE)

    assert client.emit(Event.ECHO, callback=True, namespace=ECHO_NAMESPACE) == []


@pytest.mark.parametrize(("numbers", "total"), [((1,), 1), ((1, 2, 3), 6), ((1.5, -0.5, 2), 3.0)])
def test_sum_acks_the_sum(connect, numbers, total):
    client = connect(namespace=ECHO_NAMESPACE)

    assert client.emit(Event.SUM, *numbers, callback=True, namespace=ECHO_NAMESPACE) == total


@pytest.mark.parametrize(
    "arguments", [(), ("1", 2), (True, 1), (None,), ([1, 2],), ({"n": 1},)],
    ids=["none", "str", "bool", "null", "list", "object"])
def test_sum_error_goes_through_the_default_error_handler(connect, arguments):
    client = connect(namespace=ECHO_NAMESPACE)

    ack = client.emit(Event.SUM, *arguments, callback=True, namespace=ECHO_NAMESPACE)

    assert ack == {"event": Event.SUM, "error": "sum takes one or more numbers"}
    assert errors_for(client, ECHO_NAMESPACE) == [ack]
    assert client.emit(Event.SUM, 2, 2, callback=True, namespace=ECHO_NAMESPACE) == 4


def test_a_sum_too_large_for_json_is_a_clear_error(connect):
    client = connect(namespace=ECHO_NAMESPACE)

    ack = client.emit(Event.SUM, 1.7e308, 1.7e308, callback=True, namespace=ECHO_NAMESPACE)

    assert ack == {"event": Event.SUM, "error": "the sum is too large for a JSON number"}


def test_unknown_event_on_echo_gets_error_response(connect):
    # Regression: the catch-all handler was registered for the main namespace only, so an unknown
    # event on /echo was dropped silently and a client waiting for its ack waited until its own
    # timeout. Guards web/echo.py's catch-all on /echo.
    client = connect(namespace=ECHO_NAMESPACE)

    ack = client.emit("no_such_event", 1, callback=True, namespace=ECHO_NAMESPACE)

    assert ack == {"event": "no_such_event", "error": "unknown event 'no_such_event'"}


# -- /chat -------------------------------------------------------------------------------------


def test_chat_join_acks_and_announces_to_the_room(connect):
    bob = connect(namespace=CHAT_NAMESPACE)

    ack = bob.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "bob"}, callback=True,
                   namespace=CHAT_NAMESPACE)

    # Its own connection is among the members (one process: the view is brought up to date).
    assert ack == {"room": "lobby", "replica": "unit-1",
                   "members": {"users": [], "more_users": 0, "anonymous": 1,
                               "connections": 1}}
    announcement = only(bob.events(Event.CHAT_MESSAGE, CHAT_NAMESPACE))
    assert announcement["room"] == "lobby"
    assert announcement["name"] == "server"
    assert announcement["text"] == "bob joined lobby"
    assert announcement["replica"] == "unit-1"
    assert isinstance(announcement["sent_at"], int)


def test_chat_join_without_name_is_anonymous(connect):
    client = connect(namespace=CHAT_NAMESPACE)

    client.emit(Event.CHAT_JOIN, {"room": "lobby"}, namespace=CHAT_NAMESPACE)

    announcement = only(client.events(Event.CHAT_MESSAGE, CHAT_NAMESPACE))
    assert announcement["text"] == "anonymous joined lobby"


def test_chat_say_reaches_the_room_members_only(connect):
    bob, ann, outsider = (connect(namespace=CHAT_NAMESPACE) for _ in range(3))
    bob.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "bob"}, namespace=CHAT_NAMESPACE)
    ann.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "ann"}, namespace=CHAT_NAMESPACE)
    outsider.emit(Event.CHAT_JOIN, {"room": "elsewhere", "name": "out"}, namespace=CHAT_NAMESPACE)
    for client in (bob, ann, outsider):
        client.get_received(CHAT_NAMESPACE)

    ack = bob.emit(Event.CHAT_SAY, {"room": "lobby", "text": "hello ann"}, callback=True,
                   namespace=CHAT_NAMESPACE)

    assert ack == {"ok": True}
    for member in (bob, ann):
        message = only(member.events(Event.CHAT_MESSAGE, CHAT_NAMESPACE))
        assert (message["room"], message["name"], message["text"]) == ("lobby", "bob", "hello ann")
    assert outsider.get_received(CHAT_NAMESPACE) == []


def test_chat_say_before_join_is_refused_by_the_chat_error_handler(connect):
    client = connect(namespace=CHAT_NAMESPACE)

    ack = client.emit(Event.CHAT_SAY, {"room": "lobby", "text": "hi"}, callback=True,
                      namespace=CHAT_NAMESPACE)

    assert ack == {"event": Event.CHAT_SAY, "error": "join room 'lobby' before talking in it"}
    # on_error('/chat') answers in /chat, not in the main namespace.
    assert errors_for(client, CHAT_NAMESPACE) == [ack]


def test_chat_say_in_a_room_not_joined_is_refused(connect):
    client = connect(namespace=CHAT_NAMESPACE)
    client.emit(Event.CHAT_JOIN, {"room": "lobby", "name": "eve"}, namespace=CHAT_NAMESPACE)
    client.get_received(CHAT_NAMESPACE)

    ack = client.emit(Event.CHAT_SAY, {"room": "private", "text": "hi"}, callback=True,
                      namespace=CHAT_NAMESPACE)

    assert ack["event"] == Event.CHAT_SAY and "before talking" in ack["error"]
    assert client.events(Event.CHAT_MESSAGE, CHAT_NAMESPACE) == []


def test_unknown_event_on_chat_gets_error_response(connect):
    # Regression: Flask-SocketIO's Namespace.trigger_event ignores events without an on_<name>
    # method, so an unknown event on /chat was dropped silently and its ack never came. Guards
    # ChatNamespace.trigger_event's answer (web/chat.py).
    client = connect(namespace=CHAT_NAMESPACE)

    ack = client.emit("no_such_event", {"room": "lobby"}, callback=True, namespace=CHAT_NAMESPACE)

    assert ack == {"event": "no_such_event", "error": "unknown event 'no_such_event'"}
