"""The RabbitMQ message queue that ties the web replicas and the worker together.

`QueueManager` is python-socketio's `KombuManager` with the traps of the stock one removed, and
wire-compatible with it (same exchange, same JSON messages), so any Flask-SocketIO emitter on the
same channel still reaches our clients:

* publishing never blocks the caller: `emit()` puts the message in a bounded outbox and returns; one
  publisher thread (a greenlet under gevent) owns the publishing connection, so py-amqp is never
  used by two greenlets at once, and it retries while the broker is away;
* the listener's queue is durable (RabbitMQ 4.x refuses transient non-exclusive queues), keeps its
  name across reconnects (nothing published meanwhile is lost, up to its length cap), and expires
  soon after its replica is gone instead of filling for minutes;
* AMQP heartbeats are on and checked, so a dead or frozen broker connection is noticed;
* the listener starts with the replica, not on its first client.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import kombu
import socketio

from common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerLimits:
    """Bounds on what the broker path may buffer or wait for."""

    outbox_size: int = 10_000  # messages waiting to be published by this process
    listener_queue_length: int = 10_000  # messages kept for a replica whose listener is away
    listener_queue_expiry_ms: int = 30_000  # a dead replica's queue is deleted after this
    heartbeat_seconds: int = 10
    connect_timeout_seconds: float = 2.0
    retry_max_seconds: float = 2.0


class QueueManager(socketio.KombuManager):
    """A KombuManager whose emits never block and whose listener survives reconnects."""

    name = "rabbitmq"

    def __init__(self, url: str, channel: str, *, write_only: bool = False,
                 process_id: str = "", limits: BrokerLimits = BrokerLimits()):
        self.limits = limits
        super().__init__(
            url,
            channel=channel,
            write_only=write_only,
            connection_options={
                "heartbeat": limits.heartbeat_seconds,
                "connect_timeout": limits.connect_timeout_seconds,
            },
            queue_options={
                "durable": True,
                "auto_delete": False,
                "queue_arguments": {
                    "x-expires": limits.listener_queue_expiry_ms,
                    "x-max-length": limits.listener_queue_length,
                    "x-overflow": "drop-head",
                },
            },
        )
        self.listener_queue_name = f"{channel}.{process_id or 'process'}.{uuid.uuid4().hex[:8]}"
        self._outbox: queue.Queue[dict] = queue.Queue(maxsize=limits.outbox_size)
        self._publisher_lock = threading.Lock()
        self._publisher: threading.Thread | None = None
        self.publisher_connected = False
        self.listener_bound = False
        self.dropped_messages = 0

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, data: dict) -> None:
        self._ensure_publisher()
        try:
            self._outbox.put_nowait(data)
        except queue.Full:
            self.dropped_messages += 1
            log.error("broker outbox full (%d messages): dropped a %s message",
                      self.limits.outbox_size, data.get("method"))

    def _ensure_publisher(self) -> None:
        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = threading.Thread(
                    target=self._run_publisher, name="broker-publisher", daemon=True)
                self._publisher.start()

    def _run_publisher(self) -> None:
        connection = producer = None
        retry_delay = 0.1
        while True:
            try:
                message = self._outbox.get(timeout=1)
            except queue.Empty:
                if connection is not None and not self._keep_alive(connection):
                    self.publisher_connected = False
                    producer = None
                    connection.release()
                    connection = None
                continue
            while True:  # until this message is published: order is kept
                try:
                    if producer is None:
                        connection = self._connection()
                        connection.ensure_connection(max_retries=1)
                        producer = connection.Producer(exchange=self._exchange())
                        if not self.publisher_connected:
                            log.info("broker publisher connected")
                        self.publisher_connected = True
                        retry_delay = 0.1
                    producer.publish(self.json.dumps(message))
                    break
                except Exception as exc:  # any failure: reconnect and try the same message again
                    if self.publisher_connected:
                        log.error("broker publish failed, %d messages waiting: %s",
                                  self._outbox.qsize() + 1, exc)
                    self.publisher_connected = False
                    producer = None
                    if connection is not None:
                        connection.release()
                        connection = None
                    time.sleep(retry_delay)
                    retry_delay = min(retry_delay * 2, self.limits.retry_max_seconds)
            self._outbox.task_done()

    @staticmethod
    def _keep_alive(connection: kombu.Connection) -> bool:
        """Read the broker's heartbeats and send ours on an idle connection; False if it is dead."""
        try:
            try:
                connection.drain_events(timeout=0.01)
            except socket.timeout:
                pass
            connection.heartbeat_check()
            return True
        except Exception as exc:
            log.error("broker publisher connection lost while idle: %s", exc)
            return False

    def flush(self, timeout: float) -> bool:
        """Wait until everything emitted so far is published; False if it took longer."""
        deadline = time.monotonic() + timeout
        while self._outbox.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- listening ----------------------------------------------------------------------------

    def start_listening(self) -> None:
        """Start the listener now instead of on the first client connect."""
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()

    def _queue(self) -> kombu.Queue:
        return kombu.Queue(self.listener_queue_name, self._exchange(), **self.queue_options)

    def _listen(self):
        retry_delay = 0.1
        while True:
            try:
                with self._connection() as connection:
                    with connection.SimpleQueue(self._queue()) as listener:
                        self.listener_bound = True
                        log.info("broker listener bound to queue %s", self.listener_queue_name)
                        retry_delay = 0.1
                        while True:
                            try:
                                message = listener.get(block=True, timeout=1)
                            except listener.Empty:
                                connection.heartbeat_check()
                                continue
                            message.ack()
                            yield message.payload
            except Exception as exc:  # any failure: bind the same queue again
                if self.listener_bound:
                    log.error("broker listener lost its connection: %s", exc)
                self.listener_bound = False
                time.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, self.limits.retry_max_seconds)

    def status(self) -> dict:
        return {
            "publisher_connected": self.publisher_connected,
            "listener_bound": self.listener_bound,
            "outbox": self._outbox.qsize(),
            "dropped_messages": self.dropped_messages,
        }


def create_queue_manager(settings: Settings, *, write_only: bool) -> QueueManager:
    return QueueManager(
        settings.amqp_url.get_secret_value(),
        settings.socketio_channel,
        write_only=write_only,
        process_id=settings.replica_id,
    )


def create_emitter(settings: Settings) -> QueueManager:
    """The write-only emitter a process outside the web replicas uses to reach their clients.

    Create one per process and keep it: each one holds a broker connection.
    """
    return create_queue_manager(settings, write_only=True)
