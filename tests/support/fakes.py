"""Stand-ins for the broker and the emitter, so the unit tier runs the broker manager, the consumer
and the jobs without a network or a RabbitMQ.

- `FakeEmitter`: what a job emits, recorded; `flush()` answers as told.
- `FakeBroker`: the broker behind `QueueManager.connect_to_broker()` (its factory of broker
  connections, the seam `ManagerOnFakeBroker` replaces): records every publish in order,
  fails the publish attempts it is told to, like a connection dropped mid-publish, and can be
  unreachable, or have queues that are not started yet (a restarted RabbitMQ's streams).
- `BindingBroker`: a FakeBroker whose channels record the room bindings of the routed exchange
  (web/room_bindings.py), in order, and can hold the confirming round trip open.
- `MemoryJobBroker`: kombu's in-memory transport, for the consumer: real kombu messages,
  producers and queues (ack, requeue, publish to a declared queue), no network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kombu
from amqp.exceptions import NotFound

from common.broker import BrokerLimits, QueueManager
from common.jobs import DEAD_LETTER_QUEUE, JOBS_EXCHANGE, JOBS_QUEUE
from worker.retry import retry_queue


@dataclass(frozen=True)
class Emitted:
    event: str
    data: Any
    namespace: str | None
    room: str | None


class FakeEmitter:
    """The worker's emitter (worker.jobs.Emitter plus flush), recording instead of publishing."""

    def __init__(self, flushed: bool = True):
        self.emitted: list[Emitted] = []
        self.flushed = flushed  # what flush() answers: False = the broker did not take them

    def emit(self, event: str, data: Any, namespace: str | None = None,
             room: str | None = None) -> None:
        self.emitted.append(Emitted(event, data, namespace, room))

    def flush(self, timeout: float) -> bool:
        return self.flushed

    def events(self, name: str) -> list[Emitted]:
        return [emitted for emitted in self.emitted if emitted.event == name]


class BrokerDown(ConnectionError):
    pass


class FakeBroker:
    """Plays RabbitMQ for a QueueManager's publisher (see ManagerOnFakeBroker)."""

    def __init__(self, fail_attempts: set[int] | frozenset[int] = frozenset(),
                 reachable: bool = True):
        self.published: list[str] = []  # message bodies, in the order the broker took them
        self.publish_options: list[dict] = []  # each taken message's routing key, headers, ...
        self.attempts = 0  # publish attempts, failed ones included
        self.fail_attempts = set(fail_attempts)  # numbers (from 1) of the attempts that fail
        self.connections: list[FakeConnection] = []
        self.reachable = threading.Event()
        if reachable:
            self.reachable.set()
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._took = threading.Condition(self._lock)
        self.queues_started = threading.Event()  # cleared: declares fail as a restarted stream's
        self.queues_started.set()
        self.bindings: list[tuple[str, str]] = []  # (queue, exchange), in the order bound
        self.missing_queues: set[str] = set()  # a passive declare of these: "no queue"

    def connect(self, **transport_options) -> FakeConnection:
        connection = FakeConnection(self, transport_options)
        self.connections.append(connection)
        return connection

    def block(self, reason: str) -> None:
        """A resource alarm: RabbitMQ sends connection.blocked; py-amqp calls `on_blocked`."""
        for connection in self.connections:
            if on_blocked := connection.transport_options.get("on_blocked"):
                on_blocked(reason)

    def unblock(self) -> None:
        for connection in self.connections:
            if on_unblocked := connection.transport_options.get("on_unblocked"):
                on_unblocked()

    def publish(self, body: str, options: dict | None = None) -> None:
        with self._lock:
            self.attempts += 1
            if self.attempts in self.fail_attempts:
                raise BrokerDown(f"connection reset during publish attempt {self.attempts}")
            self.published.append(body)
            self.publish_options.append(options or {})
            self._took.notify_all()

    def wait_published(self, count: int, timeout: float = 5) -> list[str]:
        with self._took:
            if not self._took.wait_for(lambda: len(self.published) >= count, timeout):
                raise AssertionError(f"the broker took {len(self.published)} of {count} messages "
                                     f"within {timeout}s")
            return list(self.published)

    def check(self) -> None:
        """Raise as a dead connection does; once closed, park the caller for good."""
        if self.closed.is_set():
            threading.Event().wait()  # the test is over: the publisher thread stops here
        if not self.reachable.wait(0.05):
            raise BrokerDown("connection refused")

    def close(self) -> None:
        """End of the test: the publisher thread parks at its next broker call."""
        self.closed.set()


class FakeConnection:
    """The part of kombu.Connection the publisher uses."""

    def __init__(self, broker: FakeBroker, transport_options: dict | None = None):
        self.broker = broker
        self.transport_options = transport_options or {}
        self.released = False  # closed with AMQP's goodbye
        self.dropped = False  # let go of without it, as a failed one is

    def ensure_connection(self, max_retries: int | None = None) -> FakeConnection:
        self.broker.check()
        return self

    def Producer(self, exchange: kombu.Exchange | None = None) -> FakeProducer:
        return FakeProducer(self.broker, exchange)

    def channel(self) -> FakeChannel:
        return FakeChannel(self.broker)

    def drain_events(self, timeout: float | None = None) -> None:
        self.broker.check()
        raise TimeoutError()  # nothing to read: a healthy idle connection

    def heartbeat_check(self) -> None:
        self.broker.check()

    def release(self) -> None:
        self.released = True

    def collect(self) -> None:
        self.dropped = True


class FakeChannel:
    """The part of an AMQP channel that declaring a kombu.Queue uses."""

    def __init__(self, broker: FakeBroker):
        self.broker = broker

    def prepare_queue_arguments(self, arguments: dict, **options) -> dict:
        return arguments

    def exchange_declare(self, **options) -> None:
        self.broker.check()

    def queue_declare(self, queue: str = "", passive: bool = False,
                      **options) -> tuple[str, int, int]:
        self.broker.check()
        if passive and queue in self.broker.missing_queues:
            raise NotFound(f"NOT_FOUND - no queue '{queue}' in vhost '/'")
        if not self.broker.queues_started.is_set():
            raise NotFound(f"home node of durable queue '{queue}' is down or inaccessible")
        return queue, 0, 0

    def queue_bind(self, queue: str, exchange: str = "", **options) -> None:
        self.broker.bindings.append((queue, exchange))

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, broker: FakeBroker, exchange: kombu.Exchange | None):
        self.broker = broker
        self.exchange = exchange

    def publish(self, body: str, **options) -> None:
        self.broker.check()
        self.broker.publish(body, options)


class BindingBroker(FakeBroker):
    """A FakeBroker that keeps what the room bindings did on its channels: ("bind", key),
    ("unbind", key) and ("confirm", queue) (the passive declare that answers once every method
    before it on the channel is done), in order. While `answering` is clear, that confirming
    round trip waits, as if RabbitMQ had not answered yet; `failing` makes the next bind raise,
    like a connection lost mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[str, str]] = []
        self.answering = threading.Event()
        self.answering.set()
        self.failing = threading.Event()
        self.changed = threading.Condition()

    def connect(self, **transport_options) -> FakeConnection:
        connection = BindingConnection(self, transport_options)
        self.connections.append(connection)
        return connection

    def record(self, operation: str, subject: str) -> None:
        with self.changed:
            self.operations.append((operation, subject))
            self.changed.notify_all()

    def keys(self, operation: str) -> list[str]:
        return [subject for done, subject in self.operations if done == operation]

    def wait_for(self, operation: str, count: int, timeout: float = 5) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.keys(operation)) >= count, timeout):
                raise AssertionError(f"{len(self.keys(operation))} {operation} operations of "
                                     f"{count} within {timeout}s: {self.operations}")


class BindingConnection(FakeConnection):
    def channel(self) -> BindingChannel:
        return BindingChannel(self.broker)


class BindingChannel(FakeChannel):
    broker: BindingBroker

    def queue_bind(self, queue: str, exchange: str = "", routing_key: str = "",
                   **options) -> None:
        self.broker.check()
        if self.broker.failing.is_set():
            self.broker.failing.clear()
            raise BrokerDown("connection reset during queue.bind")
        self.broker.record("bind", routing_key)

    def queue_unbind(self, queue: str, exchange: str = "", routing_key: str = "",
                     **options) -> None:
        self.broker.check()
        self.broker.record("unbind", routing_key)

    def queue_declare(self, queue: str = "", passive: bool = False,
                      **options) -> tuple[str, int, int]:
        if passive:
            self.broker.answering.wait()
            self.broker.record("confirm", queue)
        return super().queue_declare(queue=queue, passive=passive, **options)


DEFAULT_LIMITS = BrokerLimits()


class ManagerOnFakeBroker(QueueManager):
    """The real QueueManager, connected to a FakeBroker instead of RabbitMQ."""

    def __init__(self, broker: FakeBroker, limits: BrokerLimits = DEFAULT_LIMITS, **options):
        self.broker = broker  # before super().__init__(), which makes a first connection
        super().__init__("memory://", "unit-channel", limits=limits, **options)

    def connect_to_broker(self, **transport_options) -> FakeConnection:
        return self.broker.connect(**transport_options)


class MemoryJobBroker:
    """The job queues on kombu's in-memory transport, which is process-wide: the queues a test
    uses (the job queue, the dead-letter queue, the retry queues of `retry_delays`) start empty
    and are emptied again by close()."""

    def __init__(self, retry_delays: Sequence[float] = ()):
        self.connection = kombu.Connection("memory://")
        self.channel = self.connection.channel()
        self._queues = [JOBS_QUEUE, DEAD_LETTER_QUEUE, *map(retry_queue, retry_delays)]
        self._purge()

    def deliver(self, body: Any, **publish_options) -> kombu.Message:
        """Enqueue `body` on the job queue and receive it, unacknowledged, as the worker does."""
        options = {"serializer": "json", **publish_options}
        kombu.Producer(self.channel).publish(body, exchange=JOBS_EXCHANGE,
                                             routing_key=JOBS_QUEUE.routing_key,
                                             declare=[JOBS_QUEUE], **options)
        message = JOBS_QUEUE(self.channel).get(no_ack=False, accept=["json"])
        assert message is not None
        return message

    def take(self, queue: kombu.Queue) -> list[Any]:
        """Every message waiting in `queue`, decoded and acknowledged."""
        bound = queue(self.channel)
        taken = []
        while (message := bound.get(no_ack=True, accept=["json"])) is not None:
            taken.append(message.payload)
        return taken

    def _purge(self) -> None:
        for queue in self._queues:
            queue(self.channel).declare()
            queue(self.channel).purge()

    def close(self) -> None:
        self._purge()
        self.connection.release()
