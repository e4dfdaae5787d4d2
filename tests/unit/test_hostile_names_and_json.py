"""Hostile input, round 2, without a network: reserved and oversized event names never reach a
handler, NaN/Infinity never enter or leave, non-ASCII text is not inflated, reserved rooms are
refused on every namespace, and invalid UTF-8 is found by the strict decoder."""

from __future__ import annotations

import json

import pytest

from common import strict_json
from common.auth import issue_token
from common.contract import CHAT_NAMESPACE, Event, user_room
from tests.support.app import SECRET, errors_for, unit_settings
from tests.support.metrics import local_metric
from web.extensions import socketio
from web.limits import MAX_EVENT_NAME_CHARS


@pytest.mark.parametrize("name", ["connect", "disconnect", "connect_error", "*",
                                  "__disconnect_final"])
def test_reserved_event_names_are_refused_without_running_handlers(connect, name):
    client = connect()
    client.get_received()
    disconnects = local_metric("socketio_disconnects_total", 'reason="a label from outside"')

    ack = client.emit(name, "a label from outside", callback=True)

    assert ack == {"event": name, "error": f"{name!r} is reserved for Socket.IO itself"}
    assert errors_for(client) == [ack]
    assert client.is_connected()
    assert local_metric("socketio_disconnects_total",
                        'reason="a label from outside"') == disconnects == 0


def test_an_oversized_event_name_is_refused_and_not_echoed_whole(connect):
    client = connect()
    client.get_received()
    name = "x" * 100_000

    ack = client.emit(name, callback=True)

    assert ack["error"] == f"event names are at most {MAX_EVENT_NAME_CHARS} characters"
    assert ack["event"] == name[:MAX_EVENT_NAME_CHARS]
    assert client.is_connected()


def test_the_codec_refuses_nan_and_infinity_both_ways():
    for text in ('{"data": NaN}', '[Infinity]', '[-Infinity]'):
        with pytest.raises(ValueError):
            strict_json.loads(text)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            strict_json.dumps({"data": value})


def nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize("packet", ['42["my_broadcast_event",{"data":NaN}]',
                                    f'42["my_event",{{"data":{nested(600)}}}]'],
                         ids=["nan", "nested-600-levels"])
def test_an_undecodable_polling_message_is_dropped_and_the_session_keeps_working(app, packet):
    http = app.test_client()
    opened = http.get("/socket.io/?EIO=4&transport=polling")
    sid = json.loads(opened.get_data(as_text=True)[1:])["sid"]
    url = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert http.post(url, data="40").status_code == 200
    http.get(url)  # the CONNECT answer
    dropped = local_metric("socketio_packets_dropped_total", 'layer="socket.io"')

    http.post(url, data=packet)

    assert local_metric("socketio_packets_dropped_total", 'layer="socket.io"') == dropped + 1
    assert http.post(url, data='42["my_event",{"data":"fine"}]').status_code == 200
    assert '"fine"' in http.get(url).get_data(as_text=True)


def test_non_ascii_text_goes_out_as_utf8_not_escaped():
    packet = socketio.server.packet_class(2, data=["my_response", {"data": "é" * 10}])
    assert packet.encode() == '2["my_response",{"data":"' + "é" * 10 + '"}]'


def test_the_api_refuses_a_body_with_nan(app):
    answer = app.test_client().post("/api/demo/token", data='{"user": NaN}',
                                    content_type="application/json")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "the body is not valid JSON: NaN is not JSON"


def test_the_codec_refuses_data_nested_deeper_than_its_bound():
    assert strict_json.loads(nested(strict_json.MAX_DEPTH)) is not None
    assert strict_json.loads(f'{{"deep": {nested(strict_json.MAX_DEPTH - 1)}}}')
    for levels in (strict_json.MAX_DEPTH + 1, 900, 50_000):  # 50,000: the decoder's own limit
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            strict_json.loads(nested(levels))
    with pytest.raises(ValueError, match="nested deeper"):
        strict_json.loads(nested(40).encode())  # bytes, as the broker delivers


@pytest.mark.parametrize("levels", [33, 900, 50_000])
def test_the_api_answers_400_to_deeply_nested_data(app, levels):
    api = app.test_client()
    headers = {"Authorization": f"Bearer {unit_settings().api_key.get_secret_value()}"}
    body = f'{{"to": "all", "data": {{"text": {nested(levels)}}}}}'
    notification = api.post("/api/notifications", data=body, headers=headers,
                            content_type="application/json")
    emit = api.post("/api/emit", headers=headers, content_type="application/json",
                    data=f'{{"event": "my_response", "data": {nested(levels)}}}')
    for answer in (notification, emit):
        assert answer.status_code == 400
        assert "nested deeper than 32 levels" in answer.get_json()["error"]


def test_the_chat_refuses_reserved_rooms(connect):
    client = connect(namespace=CHAT_NAMESPACE)
    for room in (user_room("alice"), "127.0.0.1.5001.abcdef"):
        ack = client.emit(Event.CHAT_JOIN, {"room": room, "name": "m"}, namespace=CHAT_NAMESPACE,
                          callback=True)
        assert "cannot be joined" in ack["error"], room



def test_a_signed_in_connection_cannot_leave_its_users_room(connect):
    """Out of `user:<id>`, it would escape POST /api/disconnect yet still act as that user."""
    client = connect(auth={"token": issue_token(SECRET, "alice")})
    sid = client.emit(Event.SERVER_INFO, callback=True)["sid"]
    for room in (user_room("alice"), sid):
        ack = client.emit(Event.LEAVE, {"room": room}, callback=True)
        assert "cannot be left" in ack["error"], room

    assert user_room("alice") in socketio.server.rooms(sid)
