"""Real Socket.IO clients for the integration tests, with a recorder to wait on what they receive."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from typing import Any, Callable

import socketio

from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, MAIN_NAMESPACE, Event

RECORDED_EVENTS = (
    Event.MY_RESPONSE, Event.ERROR_RESPONSE, Event.NOTIFICATION, Event.JOB_PROGRESS,
    Event.JOB_DONE, Event.SERVER_EVENT, Event.MESSAGE, Event.JSON, Event.CLIENT_QUESTION,
)


class RecordingClient:
    """A python-socketio client that records every event it receives, per event name."""

    def __init__(self, url: str, transports: list[str] | None = None, auth: Any = None,
                 namespaces: list[str] | None = None, answer: Callable | None = None):
        self.url = url
        self.sio = socketio.Client(reconnection=False, request_timeout=10)
        self.received: dict[str, list] = defaultdict(list)
        self._arrivals: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.transports = transports or ["websocket"]
        self.auth = auth
        self.namespaces = namespaces or [MAIN_NAMESPACE]
        for name in RECORDED_EVENTS:
            self.sio.on(name, self._recorder(name), namespace=MAIN_NAMESPACE)
        self.sio.on(Event.CHAT_MESSAGE, self._recorder(Event.CHAT_MESSAGE), namespace=CHAT_NAMESPACE)
        if answer is not None:  # answers the server's `client_question` through the ack
            self.sio.on(Event.CLIENT_QUESTION, answer, namespace=MAIN_NAMESPACE)

    def _recorder(self, name: str):
        def record(*args):
            payload = args[0] if len(args) == 1 else list(args)
            with self._lock:
                self.received[name].append(payload)
            self._arrivals.put(name)
        return record

    def connect(self) -> RecordingClient:
        self.sio.connect(self.url, transports=self.transports, auth=self.auth,
                         namespaces=self.namespaces, wait_timeout=10)
        return self

    def disconnect(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()

    def info(self) -> dict:
        return self.sio.call(Event.SERVER_INFO, timeout=10)

    def events(self, name: str) -> list:
        with self._lock:
            return list(self.received[name])

    def wait_for(self, name: str, predicate: Callable[[Any], bool] = lambda _: True,
                 timeout: float = 10.0) -> Any:
        """The first `name` event whose payload satisfies `predicate`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for payload in self.events(name):
                if predicate(payload):
                    return payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching {name!r} within {timeout}s; got {self.events(name)!r}")
            try:
                self._arrivals.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                pass


def connect_many(url: str, count: int, **options) -> list[RecordingClient]:
    return [RecordingClient(url, **options).connect() for _ in range(count)]


def disconnect_all(clients: list[RecordingClient]) -> None:
    for client in clients:
        client.disconnect()
