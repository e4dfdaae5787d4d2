"""Clients that live through a rolling update of the web replicas, and what they received.

Each `RollingClient` reconnects by itself (as Socket.IO clients do) and records every session it
had, its disconnects and the notifications it received. `NotificationStream` posts numbered
notifications to everyone through the API (and so through the worker and the fan-out) at a steady
rate while the roll runs. `RollReport` says, per client, whether it was moved (disconnected from a
replica that went away, then connected again) and which notifications it received or lost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests
import socketio

from common.contract import MAIN_NAMESPACE, Event


class RollingClient:
    def __init__(self, url: str):
        self.url = url
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.5,
                                   reconnection_delay_max=2, request_timeout=10)
        self.replicas: list[str] = []  # the replica of each session, in order
        self.disconnects = 0
        self.notifications: set[str] = set()
        self._lock = threading.Lock()
        self.sio.on("connect", self._on_connect, namespace=MAIN_NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=MAIN_NAMESPACE)
        self.sio.on(Event.NOTIFICATION, self._on_notification, namespace=MAIN_NAMESPACE)

    def _on_connect(self) -> None:
        threading.Thread(target=self._ask_replica, daemon=True).start()

    def _ask_replica(self) -> None:
        try:
            replica = self.sio.call(Event.SERVER_INFO, namespace=MAIN_NAMESPACE,
                                    timeout=10)["replica"]
        except Exception:  # the session ended before the answer: the next one asks again
            return
        with self._lock:
            self.replicas.append(replica)

    def _on_disconnect(self, *reason) -> None:
        with self._lock:
            self.disconnects += 1

    def _on_notification(self, payload) -> None:
        with self._lock:
            self.notifications.add(str(payload.get("data", {}).get("text")))

    def connect(self) -> RollingClient:
        self.sio.connect(self.url, transports=["websocket"], namespaces=[MAIN_NAMESPACE],
                         wait_timeout=10)
        return self

    def close(self) -> None:
        self.sio.reconnection = False
        if self.sio.connected:
            self.sio.disconnect()


class NotificationStream:
    """Numbered notifications to everyone, `rate` per second, until stopped (at most `limit`)."""

    def __init__(self, url: str, api_key: str, marker: str, rate: float = 5.0,
                 limit: int = 5_000):
        self.url, self.api_key, self.marker = url, api_key, marker
        self.interval, self.limit = 1 / rate, limit
        self.accepted: list[str] = []  # texts the API accepted (202)
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        for number in range(self.limit):
            if self._stop.is_set():
                return
            text = f"{self.marker}:{number}"
            try:
                response = session.post(f"{self.url}/api/notifications",
                                        json={"to": "all", "data": {"text": text}},
                                        headers={"Authorization": f"Bearer {self.api_key}"},
                                        timeout=5)
                if response.status_code == 202:
                    self.accepted.append(text)
                else:
                    self.refused += 1
            except requests.RequestException:
                self.refused += 1
            time.sleep(self.interval)

    def __enter__(self) -> NotificationStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


@dataclass
class RollReport:
    clients: int
    moved: int  # clients whose replica went away and who connected again elsewhere
    not_moved: list[str] = field(default_factory=list)  # why, for each client that was not
    sent: int = 0
    refused: int = 0
    received_all: int = 0  # clients that received every accepted notification
    lost: dict[int, int] = field(default_factory=dict)  # notifications lost -> clients

    def line(self) -> str:
        return (f"{self.clients} clients, {self.moved} moved by the drain and reconnected; "
                f"{self.sent} notifications sent ({self.refused} refused by the API), "
                f"{self.received_all} clients received all of them, lost per client: "
                f"{dict(sorted(self.lost.items())) or 'none'}")


def report(clients: list[RollingClient], stream: NotificationStream,
           old_replicas: set[str]) -> RollReport:
    result = RollReport(clients=len(clients), moved=0, sent=len(stream.accepted),
                        refused=stream.refused)
    for client in clients:
        first = client.replicas[0] if client.replicas else None
        now = client.replicas[-1] if client.replicas else None
        if first in old_replicas and client.disconnects >= 1 and client.sio.connected \
                and now not in old_replicas:
            result.moved += 1
        else:
            result.not_moved.append(f"sessions on {client.replicas}, {client.disconnects} "
                                    f"disconnects, connected: {client.sio.connected}")
        lost = len(set(stream.accepted) - client.notifications)
        if lost:
            result.lost[lost] = result.lost.get(lost, 0) + 1
        else:
            result.received_all += 1
    return result
