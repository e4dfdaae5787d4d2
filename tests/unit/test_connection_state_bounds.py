"""Per-connection state a client can make a replica keep has a bound: rooms it joins, and
server-to-client calls waiting for its answer."""

from __future__ import annotations

import logging
import time

import pytest
from socketio import packet

from common.contract import CHAT_NAMESPACE, Event
from tests.support.app import TestClient, unit_settings
from tests.support.metrics import local_metric
from web.app import create_app
from web.extensions import socketio


@pytest.fixture
def small_app():
    return create_app(unit_settings(max_rooms_per_connection=3, max_pending_acks=2),
                      async_mode="threading", use_message_queue=False)


def accepted(ack) -> bool:
    return not (isinstance(ack, dict) and "error" in ack)


def answer(client: TestClient, ack_id: int, reply: str) -> None:
    ack = packet.Packet(packet.ACK, data=[reply], namespace="/", id=ack_id)
    socketio.server._handle_eio_message(client.eio_sid, ack.encode())


def test_rooms_per_connection_are_capped_and_leaving_frees_a_place(small_app):
    client = TestClient(small_app, socketio)
    before = local_metric("socketio_limit_exceeded_total", 'limit="rooms"')
    for room in ("a", "b", "c"):
        assert accepted(client.emit(Event.JOIN, {"room": room}, callback=True))
    refused = client.emit(Event.JOIN, {"room": "d"}, callback=True)
    assert "at most 3 rooms" in refused["error"]
    assert local_metric("socketio_limit_exceeded_total", 'limit="rooms"') == before + 1
    assert accepted(client.emit(Event.JOIN, {"room": "a"}, callback=True))  # already in: fine
    client.emit(Event.LEAVE, {"room": "a"})
    assert accepted(client.emit(Event.JOIN, {"room": "d"}, callback=True))
    client.disconnect()


def test_chat_rooms_are_capped_too(small_app):
    client = TestClient(small_app, socketio, namespace=CHAT_NAMESPACE)
    for room in ("a", "b", "c"):
        client.emit(Event.CHAT_JOIN, {"room": room}, namespace=CHAT_NAMESPACE, callback=True)
    refused = client.emit(Event.CHAT_JOIN, {"room": "d"}, namespace=CHAT_NAMESPACE, callback=True)
    assert "at most 3 rooms" in refused["error"]
    client.disconnect(namespace=CHAT_NAMESPACE)


def test_unanswered_calls_beyond_the_cap_are_forgotten_oldest_first(small_app):
    client = TestClient(small_app, socketio)
    for question in ("q1", "q2", "q3"):
        client.emit(Event.ASK_CLIENT, {"data": question})
    asked = [pkt.id for pkt in client.packets
             if pkt.packet_type == packet.EVENT and pkt.data[0] == Event.CLIENT_QUESTION]
    assert len(asked) == 3
    client.get_received()

    answer(client, asked[0], "too late")  # forgotten: nothing happens
    assert client.events(Event.MY_RESPONSE) == []
    answer(client, asked[2], "in time")
    [[response]] = client.events(Event.MY_RESPONSE)
    assert response["data"] == {"question": "q3", "answer": "in time"}
    client.disconnect()


def test_unanswered_calls_expire(small_app, monkeypatch):
    client = TestClient(small_app, socketio)
    client.emit(Event.ASK_CLIENT, {"data": "old"})
    clock = time.monotonic() + 61  # past ACK_TIMEOUT_SECONDS (60)
    monkeypatch.setattr("web.upstream.socketio_manager.time.monotonic", lambda: clock)
    client.emit(Event.ASK_CLIENT, {"data": "new"})  # a new call sweeps the expired one
    client.emit(Event.ASK_CLIENT, {"data": "newer"})
    asked = [pkt.id for pkt in client.packets
             if pkt.packet_type == packet.EVENT and pkt.data[0] == Event.CLIENT_QUESTION]
    client.get_received()
    answer(client, asked[0], "late")
    assert client.events(Event.MY_RESPONSE) == []
    answer(client, asked[1], "fine")
    [[response]] = client.events(Event.MY_RESPONSE)
    assert response["data"]["question"] == "new"
    client.disconnect()


def test_what_a_client_sends_to_many_is_capped(small_app):
    sender = TestClient(small_app, socketio)
    reader = TestClient(small_app, socketio)
    reader.get_received()
    big = "x" * 20_000  # within a message, above MAX_FANOUT_BYTES (16,384)
    for event, payload in ((Event.MY_BROADCAST_EVENT, {"data": big}),
                           (Event.MY_ROOM_EVENT, {"room": "r", "data": big})):
        refused = sender.emit(event, payload, callback=True)
        assert "at most 16384 bytes" in refused["error"], event
    assert reader.events(Event.MY_RESPONSE) == []
    assert accepted(sender.emit(Event.MY_BROADCAST_EVENT, {"data": "x" * 1000}, callback=True))
    assert len(reader.events(Event.MY_RESPONSE)) == 1
    sender.disconnect()
    reader.disconnect()


def test_an_offence_found_by_a_handler_names_the_client_address(small_app, caplog):
    # Handlers know a connection by its Socket.IO sid, the engine.io layer by its Engine.IO sid.
    client = TestClient(small_app, socketio, namespace=CHAT_NAMESPACE,
                        headers={"X-Real-IP": "192.0.2.7"})
    with caplog.at_level(logging.WARNING, logger="web.limits"):
        for room in ("a", "b", "c", "d"):
            client.emit(Event.CHAT_JOIN, {"room": room}, namespace=CHAT_NAMESPACE, callback=True)
    (line,) = [message for message in caplog.messages if message.startswith("rooms limit")]
    assert "from client 192.0.2.7;" in line, line
