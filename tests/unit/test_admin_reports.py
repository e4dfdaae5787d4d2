"""What the Admin UI's reports (web/upstream/admin_ui.py) may cost and carry, on the unit app
(no broker: the records it would publish are recorded). Its namespace across real replicas and
its page: tests/browser/test_admin_ui.py."""

from __future__ import annotations

import json
import time

import pytest

from common.contract import ADMIN_NAMESPACE, ECHO_NAMESPACE
from tests.support.app import TestClient, unit_settings
from tests.support.fakes import FakeBroker, ManagerOnFakeBroker
from web.app import create_app
from web.extensions import socketio
from web.upstream import admin_ui, hooks_of
from web.upstream.engineio_session import LimitedSocket

PASSWORD = "admin-ui-password-0123456789abcdef-0123"
ADMIN_AUTH = {"username": "admin", "password": PASSWORD}


@pytest.fixture
def admin_app():
    return create_app(unit_settings(admin_ui_password=PASSWORD), async_mode="threading",
                      use_message_queue=False)


@pytest.fixture
def published(admin_app):
    """The records the replica's reports would publish: (key, body)."""
    records: list[tuple[str, dict]] = []
    hooks_of(socketio.server).admin.publish_record = lambda key, body: records.append(
        (key, body))
    return records


def reports(published, event: str) -> list[dict]:
    return [body for key, body in published
            if key == admin_ui.REPORT_KEY and body.get("event") == event]


def test_nothing_is_reported_while_no_admin_watches(admin_app, published):
    client = TestClient(admin_app, socketio)
    client.emit("no_such_event", "x")
    client.disconnect()
    assert published == []
    assert hooks_of(socketio.server).transport_meter is None


def test_a_binary_event_is_reported_without_its_bytes(admin_app, published):
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    client = TestClient(admin_app, socketio, namespace=ECHO_NAMESPACE)
    client.emit("echo", b"\x00\x01binary", namespace=ECHO_NAMESPACE, callback=True)

    [received] = reports(published, "event_received")
    json.dumps(received)  # a record is JSON, or the publisher could not send it
    assert "binary" in received["args"][2][1]


def test_an_unencodable_message_fails_alone_not_the_publisher():
    broker = FakeBroker()
    manager = ManagerOnFakeBroker(broker)
    try:
        manager.publish_record("admin_report", {"args": [b"\x00"]})  # dropped, logged
        manager._publish({"method": "emit", "event": "news", "data": ["hello"], "namespace": "/",
                          "room": None, "host_id": manager.host_id})
        assert manager.flush(timeout=3), "the emit after it never reached the broker"
        assert manager.publisher_connected
    finally:
        broker.close()


def test_the_whole_report_is_bounded_not_each_argument(admin_app, published):
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    TestClient(admin_app, socketio).emit("no_such_event", *["x" * 1000] * 900)

    sizes = [len(json.dumps(body)) for body in reports(published, "event_received")]
    assert sizes and max(sizes) <= 2 * admin_ui.MAX_REPORTED_BYTES


def test_refused_connections_are_neither_remembered_nor_reported(admin_app, published):
    admin = hooks_of(socketio.server).admin
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    refused = TestClient(admin_app, socketio, auth={"token": "not-a-jwt"})
    assert refused.refusal() is not None
    for _ in range(100):  # the same session sends CONNECT again and again
        socketio.server._handle_eio_message(refused.eio_sid, '0{"token":"not-a-jwt"}')

    assert admin.connected_at == {}
    assert reports(published, "socket_connected") == []


def test_reports_stop_at_the_rate_limit(admin_app, published, monkeypatch):
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    client = TestClient(admin_app, socketio)
    published.clear()
    for index in range(500):
        socketio.server._handle_eio_message(client.eio_sid, f'2["no_such_event",{index}]')
    assert len(reports(published, "event_received")) <= 2 * admin_ui.REPORTS_PER_SECOND + 10


def test_an_admin_reconnecting_does_not_add_lease_renewals(admin_app, published, monkeypatch):
    monkeypatch.setattr(admin_ui, "WATCH_RENEW_SECONDS", 0.5)
    admin = hooks_of(socketio.server).admin
    for _ in range(4):  # four reloads of the admin page within one renewal
        TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE,
                   auth=ADMIN_AUTH).disconnect(ADMIN_NAMESPACE)
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    published.clear()
    time.sleep(2.05)
    renewals = [body for key, body in published if key == admin_ui.WATCH_KEY]
    admin.local_admins.clear()  # ends the renewals
    assert len(renewals) <= 5, f"{len(renewals)} lease renewals in 2 s, every 0.5 s expected"


def test_each_ping_refreshes_the_session_for_a_watching_admin(admin_app, published):
    TestClient(admin_app, socketio, namespace=ADMIN_NAMESPACE, auth=ADMIN_AUTH)
    client = TestClient(admin_app, socketio)
    published.clear()
    # The test client has no Engine.IO session of its own: one for its id, as the server makes.
    session = LimitedSocket(socketio.server.eio, client.eio_sid)
    session.ping_now()  # what the ping timetable calls when the session's PING is due

    [refresh] = reports(published, "socket_connected")
    assert refresh["args"][0]["clientId"] == client.eio_sid
