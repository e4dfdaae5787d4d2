"""The official JavaScript client (socket.io-client, pinned in package.json) against the stack.

tests/js/client_check.mjs runs under Node with one polling-only client (no cookies) and one
WebSocket client on different replicas, and prints what happened as JSON.
"""

from __future__ import annotations

import json

from common.contract import ECHO_NAMESPACE, MAIN_NAMESPACE, Event
from scripts.stack import ROOT
from tests.support.node import CLIENT_PACKAGE, node_or_fail, run_node_script

SCRIPT = ROOT / "tests" / "js" / "client_check.mjs"


def run_client_check(node: str, config: dict) -> dict:
    return run_node_script(node, SCRIPT, config)


def test_official_js_client_polling_and_websocket_across_replicas(stack, unique):
    node = node_or_fail()
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["socket.io-client"]
    installed = json.loads(CLIENT_PACKAGE.read_text())["version"]
    assert installed == pinned, (
        f"node_modules has socket.io-client {installed}, package.json pins {pinned}: run `npm ci`")

    result = run_client_check(node, {
        "url": stack.url,
        "marker": unique,
        "timeoutMs": 10000,
        "namespaces": {"main": MAIN_NAMESPACE, "echo": ECHO_NAMESPACE},
        "events": {
            "myResponse": Event.MY_RESPONSE,
            "myBroadcastEvent": Event.MY_BROADCAST_EVENT,
            "join": Event.JOIN,
            "myRoomEvent": Event.MY_ROOM_EVENT,
            "myPing": Event.MY_PING,
            "serverInfo": Event.SERVER_INFO,
            "askClient": Event.ASK_CLIENT,
            "clientQuestion": Event.CLIENT_QUESTION,
            "echo": Event.ECHO,
            "sum": Event.SUM,
        },
    })

    polling, websocket = result["polling"], result["websocket"]
    replica_ids = {replica.replica_id for replica in stack.web}
    assert {polling["replica"], websocket["replica"]} <= replica_ids
    assert polling["replica"] != websocket["replica"]
    assert (polling["serverTransport"], polling["engineTransport"]) == ("polling", "polling")
    assert websocket["serverTransport"] == websocket["engineTransport"] == "websocket"
    for client in (polling, websocket):
        assert client["sid"] == client["serverSid"]
        assert client["gotBroadcast"] is True
        assert client["gotRoomEvent"] is True
        assert client["echo"] == result["sent"]["several"]  # all arguments, in order
        assert client["ping"] == [{"t": unique}]
        assert client["sum"] == [6.5]
        assert client["question"] == {"question": unique, "answer": f"js answer to {unique}"}
