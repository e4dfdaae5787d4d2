"""Half-open sessions against the real stack (one replica behind nginx): a session that connects
no Socket.IO namespace is closed after HANDSHAKE_TIMEOUT_SECONDS, and beyond
MAX_HALF_OPEN_SESSIONS new handshakes are refused with a 503 and a JSON reason, on both
transports, while connected clients keep working and new ones connect once the others are gone.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import websocket

from common.contract import Event
from tests.support.clients import RecordingClient
from tests.support.metrics import replica_metric
from tests.support.stack import STACK_ENV, running_stack

TIMEOUT_SECONDS = 2
CAP = 4


@pytest.fixture(scope="module")
def stack():
    with running_stack("half-open stack", replicas=1, workers=0, extra_env={
            **STACK_ENV, "SERVER_EVENT_INTERVAL": "0",
            "HANDSHAKE_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "MAX_HALF_OPEN_SESSIONS": str(CAP)}) as native:
        yield native


def polling_handshake(base: str) -> requests.Response:
    return requests.get(f"{base}/socket.io/?EIO=4&transport=polling", timeout=5)


def websocket_handshake(base: str) -> websocket.WebSocket:
    """A WebSocket session that reads its Engine.IO OPEN and then connects no namespace."""
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    assert ws.recv().startswith("0{")
    return ws


def limit_count(stack, limit: str) -> float:
    return replica_metric(stack, "socketio_limit_exceeded_total", f'limit="{limit}"')


def closed_by_server(ws: websocket.WebSocket, seconds: float) -> bool:
    """Whether the server ends this WebSocket within `seconds` (a CLOSE packet, a close frame or
    EOF)."""
    ws.settimeout(seconds)
    try:
        while True:
            message = ws.recv()
            if message in ("1", ""):  # Engine.IO CLOSE, or the close frame
                return True
    except websocket.WebSocketConnectionClosedException:
        return True
    except websocket.WebSocketTimeoutException:
        return False


def test_half_open_sessions_are_closed_in_time_and_capped(stack):
    connected = RecordingClient(stack.url).connect()
    try:
        timed_out_before = limit_count(stack, "handshake_timeout")
        refused_before = limit_count(stack, "half_open_sessions")

        polling_sids = []
        for _ in range(CAP // 2):
            answer = polling_handshake(stack.url)
            assert answer.status_code == 200, answer.text
            polling_sids.append(json.loads(answer.text[1:])["sid"])
        sockets = [websocket_handshake(stack.url) for _ in range(CAP - len(polling_sids))]
        opened = time.monotonic()

        # The cap is reached: a new session is refused on both transports, with a reason.
        refused = polling_handshake(stack.url)
        assert refused.status_code == 503, refused.text
        assert "not connected" in refused.json()["error"]
        with pytest.raises(websocket.WebSocketBadStatusException) as upgrade:
            websocket_handshake(stack.url)
        assert upgrade.value.status_code == 503
        assert limit_count(stack, "half_open_sessions") == refused_before + 2
        # The client that connected a namespace is not counted and keeps being served.
        assert connected.sio.call(Event.MY_PING, {"ok": 1}, timeout=5) == {"ok": 1}

        # After the timeout every half-open session is closed by the replica.
        for ws in sockets:
            assert closed_by_server(ws, TIMEOUT_SECONDS + 5 - (time.monotonic() - opened))
            ws.close()
        assert time.monotonic() - opened >= TIMEOUT_SECONDS - 0.5
        for sid in polling_sids:
            answer = requests.get(
                f"{stack.url}/socket.io/?EIO=4&transport=polling&sid={sid}", timeout=5)
            # its CLOSE packet, or, once the session is gone, engine.io's "Invalid session"
            assert (answer.status_code, answer.text) in ((200, "1"), (400, answer.text)), answer
        assert limit_count(stack, "handshake_timeout") == timed_out_before + CAP

        # Room again: new clients connect, on either transport.
        for transports in (["polling"], ["websocket"]):
            client = RecordingClient(stack.url, transports=transports).connect()
            try:
                assert client.sio.call(Event.MY_PING, {"ok": 2}, timeout=5) == {"ok": 2}
            finally:
                client.disconnect()
        assert connected.sio.call(Event.MY_PING, {"ok": 3}, timeout=5) == {"ok": 3}
    finally:
        connected.disconnect()

    log = stack.web[0].process.log_path.read_text(errors="replace")
    assert log.count("half open sessions limit") == 1  # two refusals, one address: one line
    assert log.count("handshake timeout limit") == CAP  # one line per session closed
