"""What a replica keeps per connection (web/upstream/): the WSGI environ trimmed to what is read
after the handshake, and the WebSocket reading its socket without the request's buffered reader."""

from __future__ import annotations

import socket

import gevent
import gevent.socket
import pytest

from common.contract import Event
from tests.support.app import TestClient
from web.extensions import socketio
from web.upstream.socketio_server import KEPT_ENVIRON_KEYS, trimmed_environ
from web.upstream.transport import SocketReader

HANDSHAKE_ENVIRON = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/socket.io/", "QUERY_STRING": "EIO=4&transport=polling",
    "SERVER_NAME": "localhost", "SERVER_PORT": "5000", "REMOTE_ADDR": "10.0.0.7",
    "HTTP_HOST": "localhost:5000", "HTTP_X_REAL_IP": "192.0.2.1", "wsgi.url_scheme": "http",
    "HTTP_USER_AGENT": "x" * 300, "HTTP_COOKIE": "c" * 2000, "HTTP_ACCEPT_LANGUAGE": "*",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "wsgi.input": object(),
}


def test_the_environ_kept_has_only_what_is_read_after_the_handshake():
    kept = trimmed_environ(HANDSHAKE_ENVIRON)
    assert set(kept) <= KEPT_ENVIRON_KEYS
    assert kept["HTTP_X_REAL_IP"] == "192.0.2.1" and kept["QUERY_STRING"].startswith("EIO=4")
    assert not {"HTTP_COOKIE", "HTTP_USER_AGENT", "wsgi.input"} & set(kept)


def test_a_session_keeps_the_trimmed_environ_and_its_events_still_run(connect):
    client = connect()
    kept = socketio.server.environ[client.eio_sid]
    # the handler runs in a request context built from the trimmed environ
    assert client.emit(Event.MY_EVENT, {"data": "hi"}, callback=True) is not None
    assert client.get_received()
    # Flask-SocketIO adds the Socket.IO session; werkzeug's request is not left behind
    assert set(kept) - {"saved_session"} <= KEPT_ENVIRON_KEYS and "flask.app" in kept


def test_another_client_after_a_trimmed_one_is_unaffected(app):
    first, second = TestClient(app, socketio), TestClient(app, socketio)
    assert socketio.server.environ[first.eio_sid] is not socketio.server.environ[second.eio_sid]
    first.disconnect()
    assert second.emit(Event.MY_EVENT, {"data": "still here"}, callback=True) is not None
    second.disconnect()


@pytest.fixture
def pair():
    ours, theirs = gevent.socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_socket_reader_returns_exactly_what_is_asked_and_keeps_what_it_read_ahead(pair):
    ours, theirs = pair
    reader = SocketReader(ours, pending=b"\x81")  # what the request's buffer held
    theirs.sendall(b"\x05hello" + b"\x82\x00")
    assert reader.read(2) == b"\x81\x05"
    assert reader.read(5) == b"hello"
    assert reader.pending == b"\x82\x00"  # read ahead in the same system call
    assert reader.read(2) == b"\x82\x00" and reader.pending == b""


def test_socket_reader_waits_for_a_payload_split_across_packets(pair):
    ours, theirs = pair
    reader = SocketReader(ours)
    payload = bytes(range(256)) * 40  # 10,240 bytes, above the read-ahead
    later = gevent.spawn_later(0.05, theirs.sendall, payload[5000:])
    theirs.sendall(payload[:5000])
    assert reader.read(len(payload)) == payload
    later.get(timeout=2)


def test_socket_reader_gives_a_short_read_when_the_peer_closes(pair):
    ours, theirs = pair
    reader = SocketReader(ours)
    theirs.sendall(b"ab")
    theirs.shutdown(socket.SHUT_WR)
    assert reader.read(4) == b"ab"
    assert reader.read(2) == b""
