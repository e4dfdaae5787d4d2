"""The drain, without a replica: which clients it drops, how it spreads them, what it refuses."""

from __future__ import annotations

import json
from types import SimpleNamespace

from engineio.base_server import BaseServer

from web.drain import Drain


class FakeSession:
    def __init__(self, sid: str, closes: list):
        self.sid = sid
        self.closes = closes

    def close(self, wait=True, abort=False, reason=None):
        self.closes.append((self.sid, wait, abort, reason))


def fake_socketio(sids):
    closes: list = []
    eio = SimpleNamespace(sockets={sid: FakeSession(sid, closes) for sid in sids},
                          reason=BaseServer.reason)
    return SimpleNamespace(server=SimpleNamespace(eio=eio)), closes


def test_every_client_loses_its_transport_without_a_close_packet_spread_evenly():
    sio, closes = fake_socketio(["a", "b", "c", "d"])
    pauses: list[float] = []
    drain = Drain(sio, sleep=pauses.append)
    drain.run(2.0)
    assert drain.draining
    # abort=True: no CLOSE packet, so client libraries reconnect (to another replica) by themselves
    assert closes == [(sid, False, True, BaseServer.reason.TRANSPORT_CLOSE) for sid in "abcd"]
    assert pauses == [0.5] * 4
    assert sio.server.eio.sockets == {}


def test_a_client_gone_meanwhile_is_skipped():
    sio, closes = fake_socketio(["a", "b"])

    def leave(_pause):
        sio.server.eio.sockets.pop("b", None)

    Drain(sio, sleep=leave).run(1.0)
    assert [sid for sid, *_ in closes] == ["a"]


def test_nothing_to_drain_returns_at_once():
    sio, closes = fake_socketio([])
    pauses: list[float] = []
    Drain(sio, sleep=pauses.append).run(10.0)
    assert closes == [] and pauses == []


def _call(app, path, query=""):
    answer = {}

    def start_response(status, headers):
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query}, start_response))
    return answer, body


def test_while_draining_new_sessions_get_503_and_everything_else_passes():
    sio, _ = fake_socketio([])
    drain = Drain(sio, sleep=lambda _: None)
    app = drain.refuse_new_sessions_while_draining(
        lambda environ, start_response: start_response("200 OK", []) or [b"app"])

    assert _call(app, "/socket.io/", "EIO=4&transport=polling")[1] == b"app"
    drain.run(0)
    answer, body = _call(app, "/socket.io/", "EIO=4&transport=polling")
    assert answer["status"].startswith("503") and answer["headers"]["Retry-After"] == "1"
    assert "shutting down" in json.loads(body)["error"]
    # A session this replica already has keeps being served until it is dropped; other paths too.
    assert _call(app, "/socket.io/", "EIO=4&transport=polling&sid=x")[1] == b"app"
    assert _call(app, "/healthz")[1] == b"app"
