"""Real Socket.IO clients for the integration and compose tests, with a recorder to wait on what
they receive."""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as socketio_packet

from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event

RECORDED_EVENTS = (
    Event.MY_RESPONSE, Event.ERROR_RESPONSE, Event.NOTIFICATION, Event.JOB_PROGRESS,
    Event.JOB_DONE, Event.SERVER_EVENT, Event.MESSAGE, Event.JSON, Event.CLIENT_QUESTION,
)


def on_events_in_arrival_order(sio: socketio.Client, on_event: Callable[[str, str, list], None],
                               containing: str = "") -> None:
    """Call `on_event(namespace, event, args)` for each text event packet (only those
    `containing` a text, which spares decoding the others twice) as it comes off the connection,
    before its handler runs.

    python-engineio's client runs the handler of each message in a new thread, so two handlers
    can run in either order (python-socketio issue #382): a test that records from handlers can
    see the server's order swapped. Packets come off the connection one after the other, in the
    client's read loop (engineio.Client._receive_packet, python-engineio 4.x)."""
    receive = sio.eio._receive_packet

    def receive_in_order(pkt):
        if pkt.packet_type == eio_packet.MESSAGE and isinstance(pkt.data, str) \
                and pkt.data[:1] == str(socketio_packet.EVENT) and containing in pkt.data:
            event = socketio_packet.Packet(encoded_packet=pkt.data)
            on_event(event.namespace or MAIN_NAMESPACE, event.data[0], event.data[1:])
        return receive(pkt)

    sio.eio._receive_packet = receive_in_order


def on_connect_answers(sio: socketio.Client,
                       on_answer: Callable[[str, Any], None]) -> None:
    """Call `on_answer(namespace, data)` with the data of each CONNECT answer as it comes off the
    connection (its sid, and the pid of a session that asked for connection state recovery),
    which python-socketio's client reads and forgets."""
    receive = sio.eio._receive_packet

    def receive_answer(pkt):
        if pkt.packet_type == eio_packet.MESSAGE and isinstance(pkt.data, str) \
                and pkt.data[:1] == str(socketio_packet.CONNECT):
            answer = socketio_packet.Packet(encoded_packet=pkt.data)
            on_answer(answer.namespace or MAIN_NAMESPACE, answer.data)
        return receive(pkt)

    sio.eio._receive_packet = receive_answer


class RecordingClient:
    """A python-socketio client that records every event it receives, per event name, in the
    order they arrived."""

    RECORDED = {(MAIN_NAMESPACE, name) for name in RECORDED_EVENTS} | {
        (CHAT_NAMESPACE, Event.CHAT_MESSAGE), (CHAT_NAMESPACE, Event.PRESENCE)}

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
        self.replica: str | None = None  # set by the helpers below that ask `server_info`
        on_events_in_arrival_order(self.sio, self._record)
        if answer is not None:  # answers the server's `client_question` through the ack
            self.sio.on(Event.CLIENT_QUESTION, answer, namespace=MAIN_NAMESPACE)

    def _record(self, namespace: str, name: str, args: list) -> None:
        if (namespace, name) not in self.RECORDED:
            return
        payload = args[0] if len(args) == 1 else list(args)
        with self._lock:
            self.received[name].append(payload)
        self._arrivals.put(name)

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


class RecoveringClient(RecordingClient):
    """A python-socketio client that asks for connection state recovery (web/recovery/) as the
    official client does: {"recover": true} in its CONNECT auth; it keeps the pid of the CONNECT
    answer and the offset that came last with an event (each event it is sent carries one as
    its last argument, so what it records is [payload, offset]). `resumed_at(url)` is the
    official client's reconnect: a new connection, to `url`, with {pid, offset}."""

    def __init__(self, url: str, auth: dict | None = None, **options):
        super().__init__(url, auth={"recover": True, **(auth or {})}, **options)
        self.answer: dict = {}  # the main namespace's CONNECT answer: {"sid", "pid"}
        self.offset: str | None = None
        on_connect_answers(self.sio, self._answered)

    def _answered(self, namespace: str, data: Any) -> None:
        if namespace == MAIN_NAMESPACE and isinstance(data, dict):
            self.answer = data

    def _record(self, namespace: str, name: str, args: list) -> None:
        if args and isinstance(args[-1], str):
            self.offset = args[-1]
        super()._record(namespace, name, args)

    def cut_transport(self) -> None:
        """Drop the connection as a network failure does: no Socket.IO or Engine.IO goodbye, so
        the replica takes it for a lost transport (a recoverable session)."""
        self.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)

    def resumed_at(self, url: str) -> RecoveringClient:
        auth = {**self.auth, "pid": self.answer["pid"], "offset": self.offset}
        return RecoveringClient(url, auth=auth, transports=self.transports,
                                namespaces=self.namespaces).connect()


def connect_many(url: str, count: int, **options) -> list[RecordingClient]:
    return [RecordingClient(url, **options).connect() for _ in range(count)]


def disconnect_all(clients: list[RecordingClient]) -> None:
    for client in clients:
        client.disconnect()


def connect_in_parallel(url: str, count: int, workers: int = 32,
                        **options) -> list[RecordingClient]:
    """Connect `count` clients with at most `workers` handshakes in flight; each knows its replica.

    If any connect fails, the ones that succeeded are disconnected before the error is raised.
    """
    def open_one(_: int) -> RecordingClient:
        client = RecordingClient(url, **options).connect()
        try:
            client.replica = client.info()["replica"]
        except BaseException:
            client.disconnect()
            raise
        return client

    opened: list[RecordingClient] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(open_one, index) for index in range(count)]
        errors = []
        for future in futures:
            try:
                opened.append(future.result())
            except Exception as exc:  # keep collecting, so every opened client gets closed
                errors.append(exc)
    if errors:
        disconnect_in_parallel(opened, workers)
        raise AssertionError(f"{len(errors)} of {count} clients failed to connect: {errors[0]!r}")
    return opened


def disconnect_in_parallel(clients: list[RecordingClient], workers: int = 32) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda client: client.disconnect(), clients))


def on_distinct_replicas(url: str, opened: list[RecordingClient], count: int = 3,
                         **options) -> list[RecordingClient]:
    """`count` connected clients, each on a different replica (asked with `server_info`).

    New sessions go round-robin, so this takes about `count` connects; every client opened is
    appended to `opened` so that the caller's fixture disconnects it.
    """
    by_replica: dict[str, RecordingClient] = {}
    for _ in range(count * 4):
        client = RecordingClient(url, **options).connect()
        opened.append(client)
        client.replica = client.info()["replica"]
        by_replica.setdefault(client.replica, client)
        if len(by_replica) == count:
            return list(by_replica.values())
    raise AssertionError(f"{count * 4} new sessions reached only the replicas {sorted(by_replica)}")


def on_replicas(url: str, opened: list[RecordingClient], wanted: set[str],
                **options) -> dict[str, RecordingClient]:
    """One connected client on each wanted replica (new sessions go round-robin, so this is
    quick); every client opened is appended to `opened`, for the caller's fixture to close."""
    found: dict[str, RecordingClient] = {}
    for _ in range(len(wanted) * 6):
        client = RecordingClient(url, **options).connect()
        opened.append(client)
        client.replica = client.info()["replica"]
        if client.replica in wanted and client.replica not in found:
            found[client.replica] = client
        if set(found) == wanted:
            return found
    raise AssertionError(f"could not place clients on {sorted(wanted)}; got {sorted(found)}")


def with_marker(url: str, marker: str) -> str:
    """`url` plus a query argument that every request of its sessions carries (access log)."""
    return f"{url}?{urllib.parse.urlencode({'test': marker})}"


ACCESS_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) [^"]*" (?P<status>\d{3}) ')


def access_log_entries(log_path: Path, marker: str) -> list[dict[str, str]]:
    """The nginx access-log entries (method, target, status) of requests that carry `marker`."""
    entries = []
    needle = urllib.parse.urlencode({"test": marker})
    for line in log_path.read_text(errors="replace").splitlines():
        match = ACCESS_LOG_LINE.search(line)
        if match and needle in match["target"]:
            entries.append(match.groupdict())
    return entries

