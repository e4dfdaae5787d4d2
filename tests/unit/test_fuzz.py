"""Property-based tests: whatever bytes a client sends, the replica answers with a clear error or
drops the packet quietly, never raises, and the connection (or the next one) keeps working.

Driven through the real packet path without a network: the app's WSGI entry (Engine.IO polling
with Flask's test client) and the Socket.IO message handler that `web.upstream` installs, plus every
event handler through Flask-SocketIO's test client. Also the WebSocket frame cap on a real stream.
"""

from __future__ import annotations

import io
import json
import struct

import pytest
from geventwebsocket.websocket import WebSocketError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, MAIN_NAMESPACE, Event
from web.extensions import socketio
from web.limits import TokenBucket
from web.upstream.gevent_websocket import CappedWebSocket, MessageTooBig
from web.upstream.transport import unmask

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    # Only what JSON can carry: a client's NaN or Infinity never decodes (common/strict_json.py).
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

# Socket.IO-shaped text: a packet type, maybe a namespace, maybe an ack id, then JSON-ish text.
socketio_text = st.builds(
    lambda kind, namespace, ack, body: f"{kind}{namespace}{ack}{body}",
    st.sampled_from(list("0123456789") + ["", "x", "-"]),
    st.sampled_from(["", "/", "/chat,", "/echo,", "/nowhere,", "/,"]),
    st.sampled_from(["", "1", "007", "-1", "99999999999999999999"]),
    st.one_of(st.text(max_size=40), json_values.map(json.dumps),
              st.lists(json_values, max_size=3).map(json.dumps),
              st.sampled_from(['["*"]', '["connect"]', '["disconnect", 1]', '[]', '{"a":',
                               '["join", {"room": "127.0.0.1.5001.x"}]'])))

engineio_bodies = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["4", "2", "3", "6", "b", "40", "41", "1"]).flatmap(
        lambda prefix: socketio_text.map(lambda text: prefix + text)), max_size=4)
    .map("\x1e".join))


def _polling_session(app):
    http = app.test_client()
    opened = http.get("/socket.io/?EIO=4&transport=polling")
    assert opened.status_code == 200
    sid = json.loads(opened.get_data(as_text=True)[1:])["sid"]
    return http, f"/socket.io/?EIO=4&transport=polling&sid={sid}"


@FUZZ
@given(body=engineio_bodies)
def test_engineio_polling_bodies_never_break_the_server(app, body):
    http, url = _polling_session(app)
    answer = http.post(url, data=body.encode("utf-8", "surrogatepass"))
    assert answer.status_code in (200, 400), (body, answer.status_code)
    # The server still opens sessions and reads well-formed input.
    http, url = _polling_session(app)
    assert http.post(url, data="40").status_code == 200


@FUZZ
@given(message=st.one_of(socketio_text, st.binary(max_size=40)))
def test_socketio_packets_are_dropped_or_handled(connect, message):
    client = connect()
    handle = socketio.server.eio.handlers["message"]  # what engine.io calls for each message
    handle(client.eio_sid, message)  # must not raise
    if str(message[:1]) in ("0", "1", "b'0'", "b'1'"):
        client = connect()  # a CONNECT or DISCONNECT packet may legitimately end this session
    assert client.emit(Event.MY_PING, {"still": "here"}, callback=True) == {"still": "here"}


HANDLERS = [(MAIN_NAMESPACE, name) for name in (
    Event.MY_EVENT, Event.MY_BROADCAST_EVENT, Event.JOIN, Event.LEAVE, Event.CLOSE_ROOM,
    Event.MY_ROOM_EVENT, Event.MY_PING, Event.SERVER_INFO, Event.ASK_CLIENT, Event.MESSAGE,
    Event.JSON, "no_such_event")] + [(CHAT_NAMESPACE, Event.CHAT_JOIN),
                                     (CHAT_NAMESPACE, Event.CHAT_SAY), (ECHO_NAMESPACE, Event.ECHO),
                                     (ECHO_NAMESPACE, Event.SUM)]


@FUZZ
@given(handler=st.sampled_from(HANDLERS), args=st.lists(json_values, max_size=3))
def test_every_handler_survives_any_payload(connect, handler, args):
    namespace, event = handler
    # send(None) answers with an argument-less `message`, which the real server sends fine but
    # Flask-SocketIO's test client cannot record (IndexError in its fake transport).
    assume(not (event in (Event.MESSAGE, Event.JSON) and args[:1] == [None]))
    client = connect(namespace=namespace)
    answer = client.emit(event, *args, namespace=namespace, callback=True)
    if isinstance(answer, dict) and "error" in answer:
        assert isinstance(answer["error"], str) and answer["error"] != "internal error"
    assert client.is_connected(namespace)


def _frame(opcode: int, length: int, fin: bool = True, payload: bytes = b"") -> bytes:
    mask = b"\x01\x02\x03\x04"
    second = 0x80 | (127 if length > 0xFFFF else 126 if length > 125 else length)
    extended = (struct.pack("!Q", length) if length > 0xFFFF
                else struct.pack("!H", length) if length > 125 else b"")
    return bytes([(0x80 if fin else 0) | opcode, second]) + extended + mask + unmask(payload, mask)


class _Stream:
    """gevent-websocket's Stream over bytes: what the client sent, and what the server wrote."""

    def __init__(self, data: bytes):
        self.read = io.BytesIO(data).read
        self.written = io.BytesIO()
        self.write = self.written.write


def _websocket(data: bytes, limit: int, stream: _Stream | None = None) -> CappedWebSocket:
    capped = type("Capped", (CappedWebSocket,), {"__slots__": (), "max_message_bytes": limit})
    return capped({}, stream or _Stream(data), handler=None)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=5))
def test_the_frame_cap_counts_every_fragment_before_reading_it(sizes):
    limit = 4000
    frames = b"".join(_frame(0x1 if i == 0 else 0x0, size, fin=i == len(sizes) - 1) + b"a" * size
                      for i, size in enumerate(sizes))
    ws = _websocket(frames, limit)
    total = 0
    stopped: BaseException | None = None
    try:
        for size in sizes:
            total += size
            ws.read_frame()
    except (MessageTooBig, WebSocketError) as exc:
        stopped = exc
    if total > limit:
        assert isinstance(stopped, MessageTooBig) and stopped.args[0] == total
    else:  # within the limit: every fragment is read
        assert stopped is None


def test_too_big_closes_with_1009():
    stream = _Stream(_frame(0x1, 5000))
    ws = _websocket(b"", 4000, stream)
    assert ws.receive() is None and ws.closed
    written = stream.written.getvalue()
    assert written[0] == 0x88  # FIN + CLOSE, unmasked (server to client)
    assert struct.unpack("!H", written[2:4])[0] == 1009


def test_a_100_mb_header_is_refused_without_reading():
    ws = _websocket(_frame(0x2, 100_000_000), 1_000_000)
    with pytest.raises(MessageTooBig):
        ws.read_frame()


@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_fast_unmask_matches_the_protocol(payload, mask):
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_token_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(now=0.0) for _ in range(5))
    assert not bucket.take(now=0.0)
    assert bucket.take(now=0.1) and not bucket.take(now=0.1)
    assert sum(bucket.take(now=10.0) for _ in range(20)) == 5  # refills up to the burst only


@given(text=st.text(max_size=300))
def test_text_messages_decode_as_utf8_without_the_python_validator(text):
    payload = text.encode("utf-8", "surrogatepass")
    ws = _websocket(_frame(0x1, len(payload), payload=payload), 4000)
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:  # lone surrogates: not UTF-8; the connection closes with 1007
        assert ws.receive() is None and ws.closed
    else:
        assert ws.receive() == text


def test_invalid_utf8_split_over_fragments_closes_with_1007():
    stream = _Stream(_frame(0x1, 2, fin=False, payload=b"\xc3\xa9"[:1] + b"a")
                     + _frame(0x0, 1, payload=b"\xa9"))
    ws = _websocket(b"", 4000, stream)
    assert ws.receive() is None and ws.closed
    assert struct.unpack("!H", stream.written.getvalue()[2:4])[0] == 1007
