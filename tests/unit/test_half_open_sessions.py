"""Half-open sessions (web/limits.py, web/upstream/): an Engine.IO session that connects no
Socket.IO namespace in time is closed, and a replica holds a bounded number of them."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.app import TestClient, unit_settings
from tests.support.metrics import local_metric
from web.app import create_app
from web.extensions import socketio
from web.limits import HalfOpenSessions, opens_session

HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


def test_sessions_are_due_oldest_first_and_settled_ones_are_forgotten():
    sessions = HalfOpenSessions(timeout=5.0, cap=10)
    sessions.opened("a", now=100.0)
    sessions.opened("b", now=101.0)
    sessions.opened("c", now=102.0)
    sessions.settled("b")
    assert sessions.next_deadline() == 105.0
    assert sessions.expired(now=104.9) == []
    assert sessions.expired(now=107.0) == ["a", "c"]
    assert len(sessions) == 0 and sessions.next_deadline() is None


def test_the_cap_counts_only_sessions_still_half_open():
    sessions = HalfOpenSessions(timeout=5.0, cap=2)
    sessions.opened("a")
    assert not sessions.full(lambda sid: True)
    sessions.opened("b")
    assert sessions.full(lambda sid: True)
    assert not sessions.full(lambda sid: sid != "a")  # "a" connected meanwhile: forgotten
    assert list(sessions.deadlines) == ["b"]


@pytest.mark.parametrize(("path", "query", "opens"), [
    ("/socket.io/", "EIO=4&transport=polling", True),
    ("/socket.io/", "EIO=4&transport=websocket", True),
    ("/socket.io/", "EIO=4&transport=polling&sid=abc", False),
    ("/api/emit", "", False),
])
def test_which_requests_open_a_session(path, query, opens):
    assert opens_session({"PATH_INFO": path, "QUERY_STRING": query}) is opens


@pytest.fixture
def quick_app():
    return create_app(unit_settings(handshake_timeout_seconds=0.3, max_half_open_sessions=2),
                      async_mode="threading", use_message_queue=False)


def polling_handshake(http) -> str:
    answer = http.get(HANDSHAKE)
    assert answer.status_code == 200, answer.text
    return json.loads(answer.get_data(as_text=True)[1:])["sid"]


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_session_that_connects_no_namespace_is_closed_after_the_timeout(quick_app):
    eio = socketio.server.eio
    before = local_metric("socketio_limit_exceeded_total", 'limit="handshake_timeout"')
    sid = polling_handshake(quick_app.test_client())
    assert sid in eio.sockets
    assert wait_until(lambda: sid not in eio.sockets, 3.0)
    assert sid not in socketio.server.environ  # its environ went with it
    assert local_metric("socketio_limit_exceeded_total",
                        'limit="handshake_timeout"') == before + 1


def test_a_session_that_connects_in_time_is_left_alone(quick_app):
    http = quick_app.test_client()
    sid = polling_handshake(http)
    assert http.post(f"{HANDSHAKE}&sid={sid}", data="40").status_code == 200
    time.sleep(0.6)  # twice the timeout
    assert sid in socketio.server.eio.sockets
    assert sid not in quick_app.extensions["client_limits"].half_open.deadlines


def test_beyond_the_cap_new_sessions_are_refused_while_connected_clients_are_not_counted(
        quick_app):
    limits = quick_app.extensions["client_limits"]
    connected = TestClient(quick_app, socketio)  # a namespace at once: never half-open
    http = quick_app.test_client()
    first, second = polling_handshake(http), polling_handshake(http)
    before = local_metric("socketio_limit_exceeded_total", 'limit="half_open_sessions"')
    environ = {"PATH_INFO": "/socket.io/", "QUERY_STRING": "EIO=4&transport=polling",
               "REMOTE_ADDR": "192.0.2.9"}
    assert limits.handshake_refused(environ)
    assert list(limits.half_open.deadlines) == [first, second]  # the connected one not counted
    assert local_metric("socketio_limit_exceeded_total",
                        'limit="half_open_sessions"') == before + 1
    # a session's own requests are never refused
    assert not limits.handshake_refused({**environ, "QUERY_STRING": f"EIO=4&sid={first}"})
    assert http.post(f"{HANDSHAKE}&sid={first}", data="40").status_code == 200
    assert not limits.handshake_refused(environ)  # one connected: room for one more
    assert wait_until(lambda: second not in socketio.server.eio.sockets, 3.0)
    connected.disconnect()
