"""POST /api/emit and POST /api/disconnect on one replica (threading mode, no broker): who gets
what, and every way a request is refused. tests/integration/test_push.py covers the replicas."""

from __future__ import annotations

import json

import pytest

from common.auth import issue_token
from common.contract import CHAT_NAMESPACE, EMIT_BATCH_MAX, MAIN_NAMESPACE, Event
from common.settings import DEV_API_KEY
from tests.support.app import SECRET, unit_settings
from web.app import create_app

KEY = {"Authorization": f"Bearer {DEV_API_KEY}"}


def post(app, path: str, body, headers=KEY, **options):
    return app.test_client().post(f"/api/{path}", json=body, headers=headers, **options)


def received(client, event: str) -> list:
    return [message["args"][0] for message in client.get_received()
            if message["name"] == event]


def signed_in(connect, user: str, namespace: str | None = None):
    return connect(namespace=namespace, auth={"token": issue_token(SECRET, user)})


def test_emit_to_all_reaches_every_client(app, connect):
    first, second = connect(), connect()
    answer = post(app, "emit", {"event": Event.MY_RESPONSE, "data": {"data": "hi"}, "to": "all"})
    assert answer.status_code == 202 and answer.get_json() == {"emitted": 1}
    assert received(first, Event.MY_RESPONSE)[-1] == {"data": "hi"}
    assert received(second, Event.MY_RESPONSE)[-1] == {"data": "hi"}


def test_emit_to_a_user_reaches_only_that_user(app, connect):
    alice, bob = signed_in(connect, "alice"), signed_in(connect, "bob")
    bob.get_received()
    answer = post(app, "emit", {"event": Event.NOTIFICATION, "data": {"n": 1},
                                "to": {"user": "alice"}})
    assert answer.status_code == 202
    assert received(alice, Event.NOTIFICATION) == [{"n": 1}]
    assert received(bob, Event.NOTIFICATION) == []


def test_a_batch_goes_out_in_order(app, connect):
    client = connect()
    client.emit(Event.JOIN, {"room": "lobby"})
    client.get_received()
    batch = [{"event": Event.MY_RESPONSE, "data": index, "to": {"room": "lobby"}}
             for index in range(3)]
    answer = post(app, "emit", batch)
    assert answer.status_code == 202 and answer.get_json() == {"emitted": 3}
    assert received(client, Event.MY_RESPONSE) == [0, 1, 2]


def test_a_batch_with_one_bad_message_sends_nothing(app, connect):
    client = connect()
    client.get_received()
    batch = [{"event": Event.MY_RESPONSE, "data": 1}, {"event": "connect", "data": 2}]
    answer = post(app, "emit", batch)
    assert answer.status_code == 403 and "[1]" in answer.get_json()["error"]
    assert received(client, Event.MY_RESPONSE) == []


@pytest.mark.parametrize(("body", "status", "says"), [
    pytest.param({"event": "my_event", "data": 1}, 403, "API_EMIT_EVENTS", id="not-allowed"),
    pytest.param({"event": "disconnect"}, 403, "API_EMIT_EVENTS", id="reserved-event"),
    pytest.param({"event": Event.MY_RESPONSE, "to": {"room": "user:alice"}}, 403, "reserved",
                 id="user-room-by-name"),
    pytest.param({"event": Event.MY_RESPONSE, "to": {"room": "127.0.0.1.5001.abcdef"}}, 403,
                 "reserved", id="sid-room"),
    pytest.param({"event": Event.MY_RESPONSE, "namespace": "/admin"}, 400, "namespace",
                 id="admin-namespace"),
    pytest.param({"event": Event.MY_RESPONSE, "to": "everyone"}, 400, "to", id="bad-target"),
    pytest.param({"event": Event.MY_RESPONSE, "to": {"user": "a", "room": "b"}}, 400, "to",
                 id="two-targets"),
    pytest.param({"event": Event.MY_RESPONSE, "extra": 1}, 400, "extra", id="unknown-key"),
    pytest.param({"data": 1}, 400, "event", id="no-event"),
    pytest.param([], 400, "1 to 100", id="empty-batch"),
    pytest.param([{"event": Event.MY_RESPONSE}] * (EMIT_BATCH_MAX + 1), 400, "1 to 100",
                 id="batch-too-long"),
    pytest.param("hello", 400, "object or an array", id="a-string"),
])
def test_bad_emits_are_4xx_with_a_message(app, body, status, says):
    answer = post(app, "emit", body)
    assert answer.status_code == status
    assert says in answer.get_json()["error"]


def test_nan_is_refused_because_browsers_cannot_parse_it(app):
    body = '{"event": "my_response", "data": NaN}'
    answer = app.test_client().post("/api/emit", data=body, headers=KEY,
                                    content_type="application/json")
    assert answer.status_code == 400 and "NaN" in answer.get_json()["error"]


def test_non_json_and_oversized_bodies_are_refused(app):
    as_form = app.test_client().post("/api/emit", data={"event": "x"}, headers=KEY)
    assert as_form.status_code == 415
    huge = json.dumps({"event": Event.MY_RESPONSE, "data": "x" * 1_000_001})
    too_big = app.test_client().post("/api/emit", data=huge, headers=KEY,
                                     content_type="application/json")
    assert too_big.status_code == 413 and "MAX_MESSAGE_BYTES" in too_big.get_json()["error"]


@pytest.mark.parametrize("path", ["emit", "disconnect"])
def test_a_wrong_key_is_401(app, path):
    answer = post(app, path, {"event": Event.MY_RESPONSE, "user": "a"},
                  headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 401 and "API key" in answer.get_json()["error"]


def test_the_allow_list_comes_from_the_settings():
    app = create_app(unit_settings(api_emit_events="my_event"), async_mode="threading",
                     use_message_queue=False)
    assert post(app, "emit", {"event": Event.MY_EVENT}).status_code == 202
    assert post(app, "emit", {"event": Event.MY_RESPONSE}).status_code == 403


def test_disconnect_closes_every_namespace_of_the_users_connections(app, connect):
    alice = signed_in(connect, "alice")
    alice.connect(namespace=CHAT_NAMESPACE)
    bob = signed_in(connect, "bob")
    answer = post(app, "disconnect", {"user": "alice"})
    assert answer.status_code == 202
    assert answer.get_json() == {"user": "alice", "connections": 2}  # on / and on /chat
    assert not alice.is_connected(MAIN_NAMESPACE)
    assert not alice.is_connected(CHAT_NAMESPACE)
    assert bob.is_connected()


def test_disconnect_answers_with_the_connections_presence_knew_of(app, connect):
    """Replicas disconnect after the answer: the count is what the presence view knew, and a
    user it knows nothing of is answered with 0, not refused."""
    signed_in(connect, "carol")
    signed_in(connect, "carol")
    assert post(app, "disconnect", {"user": "carol"}).get_json() == {
        "user": "carol", "connections": 2}
    assert post(app, "disconnect", {"user": "carol"}).get_json() == {
        "user": "carol", "connections": 0}
    assert post(app, "disconnect", {"user": "nobody"}).get_json() == {
        "user": "nobody", "connections": 0}


@pytest.mark.parametrize("body", [{}, {"user": ""}, {"user": 5}, {"user": "a", "x": 1}])
def test_bad_disconnects_are_400(app, body):
    answer = post(app, "disconnect", body)
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("invalid")


def test_settings_refuse_a_reserved_event_in_the_allow_list():
    with pytest.raises(ValueError, match="reserved by Socket.IO"):
        unit_settings(api_emit_events="notification,disconnect")
