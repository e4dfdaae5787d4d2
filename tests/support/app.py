"""Unit-test support: the real app in threading mode without a message queue, driven by
Flask-SocketIO's test client. No network, no broker.

Flask-SocketIO's test client drops two things these tests need, so `TestClient` keeps them: the
reason of a refused connection (the CONNECT_ERROR packet's data) and the ack id of an event the
server emits with a callback, so that the test can answer it the way a real client does.
"""

from __future__ import annotations

from flask_socketio.test_client import SocketIOTestClient
from socketio import packet

from common.contract import MAIN_NAMESPACE, Event, session_id_prefix
from common.settings import Settings

SECRET = "unit-test-secret-key-0123456789abcdef-0123"
REPLICA_ADDRESS = "127.0.0.1:5001"
SID_PREFIX = session_id_prefix(REPLICA_ADDRESS)


def unit_settings(**overrides) -> Settings:
    values = {"app_env": "development", "secret_key": SECRET, "replica_id": "unit-1",
              "replica_address": REPLICA_ADDRESS, "cors_allowed_origins": [],
              # Test clients that were refused leave their Engine.IO session unconnected: closed
              # (and logged) after the run, not in the middle of other tests' output.
              "handshake_timeout_seconds": 300}
    values.update(overrides)
    return Settings(**values)


class TestClient(SocketIOTestClient):
    """Flask-SocketIO's test client plus the packets it drops (refusal reasons, server ack ids)."""

    __test__ = False  # not a pytest test class

    def __init__(self, app, sio, **options):
        self.packets: list[packet.Packet] = []
        super().__init__(app, sio, **options)

    def connect(self, namespace=None, query_string=None, headers=None, auth=None):
        # Each new test client installs its own packet sink on the shared server; tap it before
        # the connect packet goes out, so a refusal is recorded too.
        server = self.socketio.server
        if not getattr(server._send_packet, "records_packets", False):
            server._send_packet = _recording(server._send_packet)
        super().connect(namespace=namespace, query_string=query_string, headers=headers,
                        auth=auth)

    def refusal(self, namespace: str = MAIN_NAMESPACE):
        """The data of the last CONNECT_ERROR this client got on `namespace` (None if none)."""
        for pkt in reversed(self.packets):
            if pkt.packet_type == packet.CONNECT_ERROR and (pkt.namespace or "/") == namespace:
                return pkt.data
        return None

    def answer(self, event: str, *answer, namespace: str = MAIN_NAMESPACE) -> None:
        """Ack the last `event` the server emitted with a callback, as a real client would."""
        for pkt in reversed(self.packets):
            if (pkt.packet_type == packet.EVENT and pkt.id is not None
                    and (pkt.namespace or "/") == namespace and pkt.data[0] == event):
                ack = packet.Packet(packet.ACK, data=list(answer), namespace=namespace, id=pkt.id)
                self.socketio.server._handle_eio_message(self.eio_sid, ack.encode())
                return
        raise AssertionError(f"the server emitted no {event!r} with a callback to this client")

    def events(self, name: str, namespace: str = MAIN_NAMESPACE) -> list:
        """The payloads (argument lists) of the `name` events received since the last call."""
        return [item["args"] for item in self.get_received(namespace) if item["name"] == name]

    def sid(self) -> str:
        return self.emit(Event.SERVER_INFO, callback=True)["sid"]


def _recording(send_packet):
    def send_and_record(eio_sid, pkt):
        client = SocketIOTestClient.clients.get(eio_sid)
        if isinstance(client, TestClient):
            client.packets.append(pkt)
        return send_packet(eio_sid, pkt)

    send_and_record.records_packets = True
    return send_and_record


def only(events: list) -> object:
    """The single argument of the single event in `events`."""
    assert len(events) == 1, events
    assert len(events[0]) == 1, events[0]
    return events[0][0]


def errors_for(client: TestClient, namespace: str = MAIN_NAMESPACE) -> list[dict]:
    return [args[0] for args in client.events(Event.ERROR_RESPONSE, namespace)]

