"""Wrong payloads for every handler: each one gets one clear error (as its ack and as an
`error_response` in its namespace) naming the event, and the connection keeps working."""

from __future__ import annotations

import logging

import pytest

from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, MAIN_NAMESPACE, Event
from tests.support.app import errors_for
from tests.support.metrics import local_metric

NOT_OBJECTS = [("str", ("text",)), ("int", (5,)), ("list", ([1],)), ("null", (None,)),
               ("bytes", (b"\x00",))]
NO_ARGS = ("no-args", ())

CASES: list[tuple[str, str, str, tuple]] = []


def case(namespace: str, event: str, label: str, args: tuple) -> None:
    CASES.append((namespace, event, label, args))


for event in (Event.MESSAGE, Event.JSON):
    case(MAIN_NAMESPACE, event, *NO_ARGS)
    case(MAIN_NAMESPACE, event, "two-args", ("a", "b"))

for event in (Event.MY_EVENT, Event.MY_BROADCAST_EVENT, Event.ASK_CLIENT):
    case(MAIN_NAMESPACE, event, *NO_ARGS)
    for label, args in NOT_OBJECTS:
        case(MAIN_NAMESPACE, event, label, args)
    case(MAIN_NAMESPACE, event, "missing-data", ({"value": 1},))
    case(MAIN_NAMESPACE, event, "two-args", ({"data": 1}, {"data": 2}))

for event in (Event.JOIN, Event.LEAVE, Event.CLOSE_ROOM, Event.MY_ROOM_EVENT):
    case(MAIN_NAMESPACE, event, *NO_ARGS)
    for label, args in NOT_OBJECTS:
        case(MAIN_NAMESPACE, event, label, args)
    case(MAIN_NAMESPACE, event, "missing-room", ({"data": 1},))
    case(MAIN_NAMESPACE, event, "int-room", ({"room": 7, "data": 1},))
    case(MAIN_NAMESPACE, event, "list-room", ({"room": ["a"], "data": 1},))
    case(MAIN_NAMESPACE, event, "empty-room", ({"room": "", "data": 1},))
    case(MAIN_NAMESPACE, event, "long-room", ({"room": "r" * 201, "data": 1},))
case(MAIN_NAMESPACE, Event.MY_ROOM_EVENT, "missing-data", ({"room": "somewhere"},))

case(MAIN_NAMESPACE, Event.MY_PING, "two-args", (1, 2))
# Only payloads that fail validation: a valid start_job would reach for the job queue's broker.
for label, args in [("str", ("text",)), ("list", ([5],)), ("zero-steps", ({"steps": 0},)),
                    ("too-many-steps", ({"steps": 101},)), ("str-steps", ({"steps": "many"},)),
                    ("float-steps", ({"steps": 1.5},)), ("two-args", ({"steps": 1}, 2))]:
    case(MAIN_NAMESPACE, Event.START_JOB, label, args)
case(MAIN_NAMESPACE, Event.DISCONNECT_REQUEST, "one-arg", ({"now": True},))
case(MAIN_NAMESPACE, Event.SERVER_INFO, "one-arg", ({"verbose": True},))

for label, args in [NO_ARGS, ("str", ("1",)), ("bool", (False,)), ("null", (None,)),
                    ("nested", ([1, 2],)), ("mixed", (1, "2", 3))]:
    case(ECHO_NAMESPACE, Event.SUM, label, args)

for event in (Event.CHAT_JOIN, Event.CHAT_SAY):
    case(CHAT_NAMESPACE, event, *NO_ARGS)
    for label, args in NOT_OBJECTS:
        case(CHAT_NAMESPACE, event, label, args)
    case(CHAT_NAMESPACE, event, "int-room", ({"room": 1, "name": "x", "text": "x"},))
    case(CHAT_NAMESPACE, event, "two-args", ({"room": "r", "name": "x", "text": "x"}, 2))
case(CHAT_NAMESPACE, Event.CHAT_JOIN, "int-name", ({"room": "r", "name": 5},))
case(CHAT_NAMESPACE, Event.CHAT_JOIN, "empty-name", ({"room": "r", "name": ""},))
case(CHAT_NAMESPACE, Event.CHAT_JOIN, "long-name", ({"room": "r", "name": "n" * 51},))
case(CHAT_NAMESPACE, Event.CHAT_SAY, "missing-text", ({"room": "r"},))
case(CHAT_NAMESPACE, Event.CHAT_SAY, "empty-text", ({"room": "r", "text": ""},))
case(CHAT_NAMESPACE, Event.CHAT_SAY, "int-text", ({"room": "r", "text": 5},))
case(CHAT_NAMESPACE, Event.CHAT_SAY, "long-text", ({"room": "r", "text": "t" * 2001},))


def still_works(client, namespace: str) -> None:
    """A valid request on the same connection still gets its normal answer."""
    if namespace == MAIN_NAMESPACE:
        assert client.emit(Event.MY_PING, "alive", callback=True) == "alive"
    elif namespace == ECHO_NAMESPACE:
        assert client.emit(Event.ECHO, "alive", callback=True, namespace=namespace) == "alive"
    else:
        ack = client.emit(Event.CHAT_JOIN, {"room": "ok"}, callback=True, namespace=namespace)
        assert ack["room"] == "ok"


@pytest.mark.parametrize(("namespace", "event", "args"), [c[:2] + c[3:] for c in CASES],
                         ids=[f"{c[0]}{c[1]}-{c[2]}" for c in CASES])
def test_wrong_payload_gets_error_response_not_a_crash(connect, namespace, event, args):
    client = connect(namespace=namespace)
    client.get_received(namespace)

    ack = client.emit(event, *args, callback=True, namespace=namespace)

    assert isinstance(ack, dict), f"expected an error ack, got {ack!r}"
    assert ack["event"] == event
    assert ack["error"] and ack["error"] != "internal error"
    assert errors_for(client, namespace) == [ack]
    assert client.is_connected(namespace)
    still_works(client, namespace)


def test_every_client_event_has_bad_payload_cases():
    """A new handler in the contract needs its wrong-payload cases here."""
    covered = {(namespace, event) for namespace, event, _, _ in CASES}
    accepts_anything = {(ECHO_NAMESPACE, Event.ECHO)}
    expected = {(MAIN_NAMESPACE, name) for name in (
        Event.MESSAGE, Event.JSON, Event.MY_EVENT, Event.MY_BROADCAST_EVENT, Event.JOIN,
        Event.LEAVE, Event.CLOSE_ROOM, Event.MY_ROOM_EVENT, Event.MY_PING,
        Event.DISCONNECT_REQUEST, Event.SERVER_INFO, Event.ASK_CLIENT, Event.START_JOB)}
    expected |= {(ECHO_NAMESPACE, Event.SUM), (CHAT_NAMESPACE, Event.CHAT_JOIN),
                 (CHAT_NAMESPACE, Event.CHAT_SAY)}
    assert expected <= covered | accepts_anything


def test_a_client_repeating_bad_events_is_logged_once_and_counted_each_time(connect, caplog):
    # Below the event rate limit a client may send a bad event 50 times a second for as long as
    # it likes: one log line per connection, every one counted.
    client = connect()
    client.get_received()
    refused = local_metric("socketio_events_refused_total", 'reason="bad_request"')

    with caplog.at_level(logging.WARNING, logger="web.errors"):
        for index in range(5):
            ack = client.emit(Event.JOIN, {"room": f"user:someone-{index}"}, callback=True)
            assert "cannot be joined" in ack["error"]

    assert len([line for line in caplog.messages if "bad 'join' event" in line]) == 1
    assert local_metric("socketio_events_refused_total",
                        'reason="bad_request"') == refused + 5
    assert len(errors_for(client)) == 5
