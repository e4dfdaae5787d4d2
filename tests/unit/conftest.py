"""Unit-test fixtures: the real app (threading mode, no message queue) and its test clients."""

from __future__ import annotations

import pytest

from tests.support.app import TestClient, unit_settings
from web.app import create_app
from web.extensions import socketio


@pytest.fixture
def app():
    return create_app(unit_settings(), async_mode="threading", use_message_queue=False)


@pytest.fixture
def connect(app):
    """connect(namespace=..., auth=...) opens a test client; all are disconnected at the end."""
    opened: list[TestClient] = []

    def open_client(namespace: str | None = None, auth=None) -> TestClient:
        client = TestClient(app, socketio, namespace=namespace, auth=auth)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        for namespace, connected in list(client.connected.items()):
            if connected:
                client.disconnect(namespace)


