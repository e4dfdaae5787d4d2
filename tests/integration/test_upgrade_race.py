"""Two WebSockets racing to upgrade one long-polling session: the session is carried by the one
whose upgrade completed, and ending the session closes that one.

A client can open a second WebSocket for its session while the first is upgrading (a retry, a
client bug). The other one then waits for a probe that never comes. Ending the session, by the
client's CLOSE packet or by the server, must close the WebSocket that carries it, at once: left
open, the client keeps a dead connection until it notices by itself. A late upgrade on the other
WebSocket is refused (engine.io refuses any upgrade request of an upgraded session) and does not
take the session over.

Against one replica directly: nginx would keep a WebSocket that the replica left open open too,
and the test would see the same, only later.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import requests
import websocket

from common.contract import Event

OPEN = "/socket.io/?EIO=4&transport=polling"
PROMPTLY = 5.0  # seconds: a replica closes a WebSocket within milliseconds
HANDSHAKE_TIMEOUT = 10.0  # the stack's HANDSHAKE_TIMEOUT_SECONDS (the default)
CLOSE_FRAME = websocket.ABNF.OPCODE_CLOSE


def polling_session(base: str, connect_namespace: bool) -> str:
    """A long-polling session (its main namespace connected, if asked); its sid."""
    sid = json.loads(requests.get(base + OPEN, timeout=10).text[1:])["sid"]
    if connect_namespace:
        url = f"{base}{OPEN}&sid={sid}"
        assert requests.post(url, data="40", timeout=10).status_code == 200
        assert "40{" in requests.get(url, timeout=10).text  # the namespace's CONNECT answer
    return sid


def websocket_of(base: str, sid: str) -> websocket.WebSocket:
    url = base.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
    return websocket.create_connection(url, timeout=PROMPTLY)


@contextlib.contextmanager
def raced_session(base: str, connect_namespace: bool
                  ) -> Iterator[tuple[websocket.WebSocket, websocket.WebSocket]]:
    """A long-polling session and two WebSockets opened for it, the first one upgraded; both
    closed at the end."""
    sid = polling_session(base, connect_namespace)
    first, second = websocket_of(base, sid), websocket_of(base, sid)
    try:
        time.sleep(0.2)  # both reach engine.io's WebSocket handler, which runs after the 101
        upgrade(first)
        yield first, second
    finally:
        first.close()
        second.close()


def upgrade(ws: websocket.WebSocket) -> None:
    """Engine.IO's upgrade: the probe PING, its PONG, the UPGRADE packet."""
    ws.send("2probe")
    assert ws.recv() == "3probe"
    ws.send("5")


def carries_the_session(ws: websocket.WebSocket) -> bool:
    """Whether the session's packets come on `ws`: the answer to an event with an ack."""
    ws.send(f'421["{Event.MY_PING}",{{"t":"race"}}]')
    ws.settimeout(PROMPTLY)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == CLOSE_FRAME:
                return False
            if data.startswith(b"431"):
                return True
    except (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException):
        return False


def closed_by_server(ws: websocket.WebSocket, seconds: float) -> bool:
    """Whether the server closes `ws` (a close frame or EOF) within `seconds`; the Engine.IO
    packets before it do not count."""
    ws.settimeout(seconds)
    try:
        while True:
            opcode, _ = ws.recv_data(control_frame=True)
            if opcode == CLOSE_FRAME:
                return True
    except websocket.WebSocketConnectionClosedException:
        return True
    except websocket.WebSocketTimeoutException:
        return False


def test_the_client_closing_the_session_closes_the_websocket_that_carries_it(stack):
    with raced_session(stack.web[0].url, connect_namespace=True) as (first, _):
        assert carries_the_session(first)
        first.send("1")  # Engine.IO CLOSE
        assert closed_by_server(first, PROMPTLY), "the WebSocket carrying the session is open"


def test_the_server_ending_the_session_closes_the_websocket_that_carries_it(stack):
    # A session that connects no namespace is ended by the replica after its handshake timeout.
    with raced_session(stack.web[0].url, connect_namespace=False) as (first, _):
        first.settimeout(PROMPTLY)
        assert first.recv() == "6"  # the NOOP that ended the pending poll: sent on `first`
        assert closed_by_server(first, HANDSHAKE_TIMEOUT + PROMPTLY), (
            "the WebSocket carrying the session is open")


def test_a_late_upgrade_on_the_other_websocket_is_refused(stack):
    with raced_session(stack.web[0].url, connect_namespace=True) as (first, second):
        assert carries_the_session(first)
        second.send("2probe")
        assert closed_by_server(second, PROMPTLY), "a second upgrade of an upgraded session"
        assert carries_the_session(first)
        first.send("1")
        assert closed_by_server(first, PROMPTLY)
