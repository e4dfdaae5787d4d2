"""The scaled core against the real stack: 3 gunicorn replicas behind sticky nginx, fanned out
through a private RabbitMQ. Every client is a real python-socketio client talking to nginx.

Proving that something did NOT arrive uses ordering instead of sleeping: after the event that must
not arrive, the same sender sends a marker to the same client. Both travel through the same
replica's single publisher and the receiving replica's single broker queue, in order, so once the
marker is there the other event would have been there too.
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests
from socketio import exceptions as socketio_exceptions

from common.auth import issue_token
from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, MAIN_NAMESPACE, Event, user_room
from tests.support.clients import (
    RecordingClient,
    access_log_entries,
    connect_in_parallel,
    disconnect_in_parallel,
    on_distinct_replicas,
    with_marker,
)
from tests.support.stack import STACK_ENV, api_headers
from tests.support.waiting import wait_until

TRANSPORTS = [pytest.param(["websocket"], id="websocket"),
              pytest.param(["polling"], id="polling")]
LOAD_CLIENTS = 300


def data_is(value):
    return lambda payload: payload.get("data") == value


def sid_of(client: RecordingClient) -> str:
    sid = client.sio.get_sid(MAIN_NAMESPACE)
    assert sid == client.info()["sid"]
    return sid


def send_marker(sender: RecordingClient, receiver: RecordingClient, marker: str) -> None:
    """Send `marker` to `receiver` alone and wait until it arrived (see the module docstring)."""
    sender.sio.emit(Event.MY_ROOM_EVENT, {"room": sid_of(receiver), "data": marker})
    receiver.wait_for(Event.MY_RESPONSE, data_is(marker))


def datas(client: RecordingClient) -> list:
    return [payload.get("data") for payload in client.events(Event.MY_RESPONSE)]


# -- fan-out across replicas -------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_broadcast_reaches_clients_on_every_replica(stack, clients, unique, transports):
    trio = on_distinct_replicas(stack.url, clients, transports=transports)
    assert len({client.replica for client in trio}) == 3
    assert {client.info()["transport"] for client in trio} == {transports[0]}

    trio[0].sio.emit(Event.MY_BROADCAST_EVENT, {"data": f"broadcast {unique}"})

    for client in trio:
        client.wait_for(Event.MY_RESPONSE, data_is(f"broadcast {unique}"))


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_room_event_reaches_members_on_other_replicas_only(stack, clients, unique, transports):
    first, second, sender = on_distinct_replicas(stack.url, clients, transports=transports)
    outsider = next(c for c in on_distinct_replicas(stack.url, clients, transports=transports)
                    if c.replica == first.replica)
    room = f"room-{unique}"
    for member in (first, second):
        member.sio.emit(Event.JOIN, {"room": room})
        member.wait_for(Event.MY_RESPONSE, lambda p: room in str(p.get("data")))

    sender.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": f"to {room}"})

    for member in (first, second):
        member.wait_for(Event.MY_RESPONSE, data_is(f"to {room}"))
    send_marker(sender, outsider, f"marker {unique}")
    assert f"to {room}" not in datas(outsider)
    assert f"to {room}" not in datas(sender)


def test_mixed_transports_share_rooms_across_replicas(stack, clients, unique):
    websocket = on_distinct_replicas(stack.url, clients, count=1, transports=["websocket"])[0]
    polling = next(c for c in on_distinct_replicas(stack.url, clients, transports=["polling"])
                   if c.replica != websocket.replica)
    room = f"mixed-{unique}"
    for client in (websocket, polling):
        client.sio.emit(Event.JOIN, {"room": room})
        client.wait_for(Event.MY_RESPONSE, lambda p: room in str(p.get("data")))

    websocket.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": "from websocket"})
    polling.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": "from polling"})

    for client in (websocket, polling):
        client.wait_for(Event.MY_RESPONSE, data_is("from websocket"))
        client.wait_for(Event.MY_RESPONSE, data_is("from polling"))


def test_user_room_reaches_every_connection_of_the_user(stack, clients, unique):
    auth = {"token": issue_token(STACK_ENV["SECRET_KEY"], f"user-{unique}")}
    tabs = on_distinct_replicas(stack.url, clients, count=2, auth=auth)
    sender = next(c for c in on_distinct_replicas(stack.url, clients)
                  if c.replica not in {tab.replica for tab in tabs})
    assert {tab.info()["user"] for tab in tabs} == {f"user-{unique}"}

    # Only the backend sends to a user's room (here: the notifications API, through the worker);
    # a client that tries is refused.
    refused = sender.sio.call(Event.MY_ROOM_EVENT, {"room": user_room(f"user-{unique}"),
                                                    "data": "posing as the bank"}, timeout=5)
    assert "only the backend" in refused["error"]
    posted = requests.post(f"{stack.url}/api/notifications", headers=api_headers(), timeout=10,
                           json={"to": {"user": f"user-{unique}"}, "data": {"text": "hi you"}})
    assert posted.status_code == 202

    for tab in tabs:
        tab.wait_for(Event.NOTIFICATION, lambda n: n["id"] == posted.json()["id"])
        assert not [r for r in tab.events(Event.MY_RESPONSE) if data_is("posing as the bank")(r)]


def test_invalid_token_is_refused_through_nginx(stack, unique):
    client = RecordingClient(stack.url, auth={"token": f"forged-{unique}"})
    refusals = []

    @client.sio.event
    def connect_error(data):  # Socket.IO's own event: the server's reason for refusing
        refusals.append(data)

    with pytest.raises(socketio_exceptions.ConnectionError):
        client.connect()

    assert len(refusals) == 1 and "token is invalid" in refusals[0]["message"]
    assert not client.sio.connected


def test_chat_reaches_members_on_another_replica(stack, clients, unique):
    bob, ann = on_distinct_replicas(stack.url, clients, count=2,
                                    namespaces=[MAIN_NAMESPACE, CHAT_NAMESPACE])
    room = f"chat-{unique}"
    for client, name in ((bob, "bob"), (ann, "ann")):
        ack = client.sio.call(Event.CHAT_JOIN, {"room": room, "name": name},
                              namespace=CHAT_NAMESPACE, timeout=10)
        assert (ack["room"], ack["replica"]) == (room, client.replica)

    assert bob.sio.call(Event.CHAT_SAY, {"room": room, "text": "hello ann"},
                        namespace=CHAT_NAMESPACE, timeout=10) == {"ok": True}

    message = ann.wait_for(Event.CHAT_MESSAGE, lambda p: p.get("text") == "hello ann")
    assert (message["room"], message["name"], message["replica"]) == (room, "bob", bob.replica)


# -- load spread -------------------------------------------------------------------------------


def test_new_sessions_from_one_ip_spread_evenly_over_the_replicas(stack):
    many = connect_in_parallel(stack.url, LOAD_CLIENTS)
    try:
        counts = Counter(client.replica for client in many)
    finally:
        disconnect_in_parallel(many)

    print(f"\n{LOAD_CLIENTS} clients from 127.0.0.1 per replica: {dict(sorted(counts.items()))}")
    expected = LOAD_CLIENTS / len(stack.web)
    assert set(counts) == {replica.replica_id for replica in stack.web}, counts
    for replica, count in counts.items():
        assert abs(count - expected) <= 0.15 * expected, (
            f"{replica} got {count} of {LOAD_CLIENTS} sessions; expected {expected:.0f} +- 15%: "
            f"{dict(counts)}")


# -- sticky polling through nginx -------------------------------------------------------------


def test_polling_sessions_through_nginx_never_get_http_400(stack, unique):
    url = with_marker(stack.url, unique)
    polling = connect_in_parallel(url, 30, workers=10, transports=["polling"])
    try:
        assert len({client.replica for client in polling}) == 3
        for round_number in range(3):
            for client in polling:
                client.sio.emit(Event.MY_EVENT, {"data": f"round {round_number}"})
            for client in polling:
                assert client.sio.call(Event.MY_PING, round_number, timeout=10) == round_number
                client.wait_for(Event.MY_RESPONSE, data_is(f"round {round_number}"))
    finally:
        disconnect_in_parallel(polling)

    entries = [e for e in access_log_entries(stack.run_dir / "access.log", unique)
               if e["target"].startswith("/socket.io/")]
    # A handshake, its connect POST and the event traffic: several requests per session.
    assert len(entries) >= 30 * 4, f"only {len(entries)} access-log lines carry the marker"
    assert any("sid=" in e["target"] for e in entries)
    bad = [e for e in entries if e["status"] == "400"]
    assert bad == [], f"{len(bad)} polling requests got HTTP 400, e.g. {bad[:3]}"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("sid", ["8.8.8.8.80.forged", "127.0.0.1.22.wrongport", "no-replica-prefix",
                                 "127.0.0.1.5001"])
def test_forged_sid_is_answered_by_nginx_with_a_json_400(stack, method, sid):
    response = requests.request(method, f"{stack.url}/socket.io/",
                                params={"EIO": "4", "transport": "polling", "sid": sid},
                                data="1:6" if method == "POST" else None, timeout=5)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "session id does not name a replica"}


def test_sid_naming_the_broker_port_is_not_proxied(stack):
    # The allow-list of ports keeps nginx from being an open proxy to other loopback services.
    broker_port = stack.amqp_url.rsplit(":", 1)[1].strip("/")
    response = requests.get(f"{stack.url}/socket.io/",
                            params={"EIO": "4", "transport": "polling",
                                    "sid": f"127.0.0.1.{broker_port}.x"}, timeout=5)

    assert response.status_code == 400
    assert response.json() == {"error": "session id does not name a replica"}


# -- acks across the stack -----------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_acks_come_back_through_nginx(stack, clients, unique, transports):
    client = RecordingClient(stack.url, transports=transports,
                             namespaces=[MAIN_NAMESPACE, ECHO_NAMESPACE]).connect()
    clients.append(client)

    assert client.sio.call(Event.MY_PING, {"t": unique}, timeout=10) == {"t": unique}
    several = ("text", 7, {"nested": [1, None]}, [unique])
    assert client.sio.call(Event.ECHO, several, namespace=ECHO_NAMESPACE, timeout=10) == several
    assert client.sio.call(Event.ECHO, b"\x00\xffbytes", namespace=ECHO_NAMESPACE,
                           timeout=10) == b"\x00\xffbytes"
    assert client.sio.call(Event.SUM, (1, 2, 3.5), namespace=ECHO_NAMESPACE, timeout=10) == 6.5
    error = client.sio.call(Event.SUM, "x", namespace=ECHO_NAMESPACE, timeout=10)
    assert error == {"event": Event.SUM, "error": "sum takes one or more numbers"}


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_ask_client_gets_the_clients_ack_through_nginx(stack, clients, unique, transports):
    def answer(question):
        return f"answer to {question['data']}"

    client = RecordingClient(stack.url, transports=transports, answer=answer).connect()
    clients.append(client)

    client.sio.emit(Event.ASK_CLIENT, {"data": unique})

    response = client.wait_for(Event.MY_RESPONSE, lambda p: isinstance(p.get("data"), dict))
    assert response["data"] == {"question": unique, "answer": f"answer to {unique}"}


# -- direct messages, closing rooms, disconnecting ------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_direct_message_to_a_sid_on_another_replica(stack, clients, unique, transports):
    sender, receiver, bystander = on_distinct_replicas(stack.url, clients, transports=transports)

    sender.sio.emit(Event.MY_ROOM_EVENT, {"room": sid_of(receiver), "data": f"dm {unique}"})

    receiver.wait_for(Event.MY_RESPONSE, data_is(f"dm {unique}"))
    send_marker(sender, bystander, f"marker {unique}")
    assert f"dm {unique}" not in datas(bystander)


def test_close_room_empties_the_room_on_every_replica(stack, clients, unique):
    closer, second, third = on_distinct_replicas(stack.url, clients)
    room = f"closing-{unique}"
    for member in (closer, second, third):
        member.sio.emit(Event.JOIN, {"room": room})
        member.wait_for(Event.MY_RESPONSE, lambda p: room in str(p.get("data")))

    closer.sio.emit(Event.CLOSE_ROOM, {"room": room})

    for member in (closer, second, third):
        member.wait_for(Event.MY_RESPONSE, data_is(f"Room {room} is closing."))
    # The close travels through the closer's publisher ahead of these, so every replica has
    # emptied the room before they arrive.
    closer.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": f"after {unique}"})
    for member in (second, third):
        send_marker(closer, member, f"marker {unique}")
        assert f"after {unique}" not in datas(member)
    assert f"after {unique}" not in datas(closer)


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_disconnect_request_disconnects_through_nginx(stack, clients, transports):
    client = RecordingClient(stack.url, transports=transports).connect()
    clients.append(client)

    client.sio.emit(Event.DISCONNECT_REQUEST)

    client.wait_for(Event.MY_RESPONSE, data_is("Disconnected!"))
    wait_until(lambda: not client.sio.connected, timeout=10, interval=0.05,
               what="the server disconnecting the client after it acked the goodbye")


def test_joining_a_sid_room_on_another_replica_is_refused(stack, clients, unique):
    # Regression: the joiner's replica does not know a sid from another replica, so
    # python-socketio's local "cannot enter a sid room" check used to pass and the joiner then read
    # every direct message sent to the target. on_join now refuses any room shaped like a sid
    # (web/events.py, is_reserved_room); this guards that the refusal holds across replicas.
    eavesdropper, target, sender = on_distinct_replicas(stack.url, clients)

    eavesdropper.sio.emit(Event.JOIN, {"room": sid_of(target)})
    wait_until(lambda: eavesdropper.events(Event.ERROR_RESPONSE) or any(
        "In rooms" in str(data) for data in datas(eavesdropper)), timeout=10)
    sender.sio.emit(Event.MY_ROOM_EVENT, {"room": sid_of(target), "data": f"private {unique}"})
    target.wait_for(Event.MY_RESPONSE, data_is(f"private {unique}"))
    send_marker(sender, eavesdropper, f"marker {unique}")

    assert f"private {unique}" not in datas(eavesdropper), (
        "a client on another replica joined someone else's sid room and read its direct messages")
