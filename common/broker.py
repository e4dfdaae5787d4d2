"""The RabbitMQ message queue that ties the web replicas and the worker together.

`QueueManager` is python-socketio's `KombuManager` with the traps of the stock one removed, and
wire-compatible with it (same JSON messages; every replica still listens on the channel's fan-out
exchange), so any Flask-SocketIO emitter on the same channel still reaches our clients:

* it publishes to a topic exchange beside the channel's, routed by room (common/routing.py): a
  replica receives the events it has a recipient for, not every event of the cluster;

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

import collections
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import kombu
import socketio
from amqp.exceptions import ChannelError, NotFound

from common import metrics, routing, strict_json
from common.backoff import Backoff
from common.contract import session_id_prefix
from common.library_contract import Contract
from common.settings import Settings

# What QueueManager reads of python-socketio's KombuManager (tests/unit/test_upstream_contract.py).
CONTRACT = Contract(
    read_against={"python-socketio": "5.18.1", "kombu": "5.7.0"},
    members={
        "socketio.kombu_manager.KombuManager.__init__": (
            "(self, url='amqp://guest:guest@localhost:5672//', channel='socketio', "
            "write_only=False, logger=None, json=None, connection_options=None, "
            "exchange_options=None, queue_options=None, producer_options=None)"),
        # the two hooks python-socketio documents for a pub/sub manager, both replaced
        "socketio.pubsub_manager.PubSubManager._publish": "(self, data)",
        "socketio.pubsub_manager.PubSubManager._listen": "(self)",
        # what hands each message `_listen` yields to the manager (records never reach it)
        "socketio.pubsub_manager.PubSubManager._thread": "(self)",
        "socketio.pubsub_manager.PubSubManager.emit": "(self, event, data, namespace=None, "
                                                      "room=None, skip_sid=None, callback=None, "
                                                      "to=None, **kwargs)",
        "kombu.Connection.ensure_connection": "(self, *args, **kwargs)",
        "kombu.Connection.heartbeat_check": "(self, rate=2)",
        "kombu.Connection.drain_events": "(self, **kwargs)",
        "kombu.Connection.collect": "(self, socket_timeout=None)",
        "kombu.binding": None,
    },
    instance_attributes={
        "socketio.kombu_manager.KombuManager": ("url", "channel", "connection_options",
                                                "queue_options", "json", "host_id",
                                                "write_only"),
    },
)

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE = kombu.Exchange("")  # routes to the queue named by the routing key
RECORD_METHOD = "replica_record"  # a message between replicas of our own (see `publish_record`)
TO_RECORDS = "records"  # the outbox's route for records (see `Route`)

# Where the publisher sends a message of its outbox: a tuple of routing keys, to the routed
# exchange (common/routing.py); TO_RECORDS, to the records exchange; any other string, to the
# queue of that name.
Route = tuple[str, ...] | str


@dataclass(frozen=True)
class BrokerLimits:
    """Bounds on what the broker path may buffer or wait for."""

    outbox_size: int = 10_000  # messages waiting to be published by this process
    listener_queue_length: int = 10_000  # messages kept for a replica whose listener is away
    listener_queue_expiry_ms: int = 30_000  # a dead replica's queue is deleted after this
    heartbeat_seconds: int = 5  # a dead or frozen broker is noticed within about 2x this
    connect_timeout_seconds: float = 2.0
    retry_max_seconds: float = 2.0
    queues_start_seconds: float = 10.0  # the most a (re)connected publisher waits for its queues


class QueueManager(socketio.KombuManager):
    """A KombuManager whose emits never block and whose listener survives reconnects.

    It overrides only the hooks python-socketio documents for a pub/sub manager (`_publish`,
    `_listen`) and uses none of KombuManager's private helpers: every broker connection comes from
    `connect_to_broker()`, the one seam the unit tests replace with a fake broker
    (tests/support/fakes.py).
    """

    name = "rabbitmq"

    def __init__(self, url: str, channel: str, *, write_only: bool = False,
                 process_id: str = "", session_prefix: str = "",
                 limits: BrokerLimits = BrokerLimits()):
        self.limits = limits
        # What this replica's session ids start with: emits to them are routed to it by that
        # prefix (common/routing.py), without a binding per connection.
        self.session_prefix = session_prefix
        super().__init__(
            url,
            channel=channel,
            write_only=write_only,
            json=strict_json,  # the codec of every Socket.IO packet of the stack
            connection_options={
                "heartbeat": limits.heartbeat_seconds,
                "connect_timeout": limits.connect_timeout_seconds,
                # Bounds every blocking AMQP call (declare, consume, a write to a peer that stopped
                # reading), so a frozen broker is noticed even outside the heartbeat checks.
                "transport_options": {"read_timeout": 2 * limits.heartbeat_seconds,
                                      "write_timeout": 2 * limits.heartbeat_seconds},
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
        # (queued at, the message as JSON, its route)
        self._outbox: queue.Queue[tuple[float, str, Route]] = queue.Queue(
            maxsize=limits.outbox_size)
        self._publisher_lock = threading.Lock()
        self._publisher: threading.Thread | None = None
        self.publisher_connected = False
        # RabbitMQ's reason while it blocks the publisher (a memory or disk alarm): what is
        # published meanwhile waits in the connection until the alarm clears.
        self.publisher_blocked: str | None = None
        self.listener_bound = False
        # Takes every record from another replica (or from this one, if it asked): the web
        # replica's ReplicaHooks.take_record (web/upstream/registry.py).
        self.on_record: Callable[[str, dict, str], None] | None = None
        # Called each time the listener's queue is (re)declared and consumed: the room bindings
        # (web/room_bindings.py) bind it again, in case it is a new queue.
        self.on_listener_bound: Callable[[], None] | None = None
        self._queues_to_await: list[tuple[kombu.Queue, bool]] = []  # see `await_queue`

    # -- publishing ---------------------------------------------------------------------------

    def emit(self, *args, **kwargs):
        metrics.EVENTS_EMITTED.inc()
        return super().emit(*args, **kwargs)

    def _publish(self, data: dict) -> None:
        """python-socketio's messages go to the replicas with a recipient (common/routing.py)."""
        self._put_in_outbox(data, tuple(routing.routing_keys(data)))

    def publish_record(self, key: str, body: dict, *, include_sender: bool = False) -> None:
        """Send a record to every replica's listener (this one's too with `include_sender`),
        through the records exchange: presence, replica control, the Admin UI's reports. Never
        blocks. They are not Socket.IO messages: python-socketio would not know their method,
        and on the Socket.IO exchange they would fill the recovery log."""
        self._put_in_outbox({"method": RECORD_METHOD, "key": key, "body": body,
                             "host_id": self.host_id, "include_sender": include_sender},
                            TO_RECORDS)

    def publish_to_queue(self, queue_name: str, data: dict) -> None:
        """Publish `data` to one queue (through the default exchange), after everything queued
        for publishing before it; never blocks (the session records of web/recovery/)."""
        self._put_in_outbox(data, queue_name)

    def _put_in_outbox(self, data: dict, route: Route) -> None:
        # Encoded here, in the sender's greenlet: a message that is not JSON fails its sender
        # alone, never the publisher (which takes any failure for a lost connection and retries).
        try:
            body = self.json.dumps(data)
        except (TypeError, ValueError, RecursionError) as exc:
            metrics.QUEUE_LOST.labels("unencodable").inc()
            log.error("dropped a %s message that is not JSON: %s", data.get("method"), exc)
            return
        self.start_publisher()
        try:
            self._outbox.put_nowait((time.monotonic(), body, route))
            metrics.QUEUE_OUTBOX.inc()
        except queue.Full:
            metrics.QUEUE_LOST.labels("outbox_full").inc()
            log.error("broker outbox full (%d messages): dropped a %s message; other replicas "
                      "will not see it", self.limits.outbox_size, data.get("method"))

    def start_publisher(self) -> None:
        """Start the publisher thread; it connects at once, so the first emits find it ready."""
        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = threading.Thread(
                    target=self._run_publisher, name="broker-publisher", daemon=True)
                self._publisher.start()

    def _run_publisher(self) -> None:
        connection = producer = None
        backoff = Backoff(most=self.limits.retry_max_seconds)
        message = None
        next_keep_alive = 0.0
        while True:
            try:
                if producer is None:
                    connection = self.connect_to_broker(
                        on_blocked=self._on_publisher_blocked,
                        on_unblocked=self._on_publisher_unblocked)
                    connection.ensure_connection(max_retries=1)
                    self._await_queues(connection)
                    producer = connection.Producer(exchange=self.routed_exchange())
                    self._set_publisher_connected(True)
                    backoff.reset()
                if message is None:
                    with contextlib.suppress(queue.Empty):
                        message = self._outbox.get(timeout=1)
                # Every second, busy or idle: a publisher that never paused never read the
                # broker's heartbeats, so a frozen broker went unnoticed while it kept publishing.
                if time.monotonic() >= next_keep_alive:
                    self.keep_alive(connection)
                    next_keep_alive = time.monotonic() + 1
                if message is None:
                    continue
                queued_at, body, route = message
                if isinstance(route, tuple):
                    # the other keys in CC: one publish, each queue gets it once (common/routing.py)
                    more = list(route[1:])
                    producer.publish(body, routing_key=route[0], headers={
                        "CC": more, routing.ROUTING_KEYS_HEADER: more} if more else None)
                    kind = "socketio"
                elif route == TO_RECORDS:
                    records = self.records_exchange()
                    producer.publish(body, exchange=records, declare=[records])
                    kind = "records"
                else:
                    producer.publish(body, exchange=DEFAULT_EXCHANGE, routing_key=route)
                    kind = "queue"
                metrics.QUEUE_PUBLISHES.labels(kind).inc()
                metrics.EMIT_LATENCY.observe(time.monotonic() - queued_at)
                metrics.QUEUE_OUTBOX.dec()
                self._outbox.task_done()
                message = None
            except Exception as exc:  # any failure: reconnect; the message is kept, order too
                if message is not None:
                    metrics.QUEUE_PUBLISH_FAILURES.inc()
                if self.publisher_connected:
                    log.error("broker publisher lost its connection (%d messages waiting): %s",
                              self._outbox.qsize() + (message is not None), exc)
                self._set_publisher_connected(False)
                self._on_publisher_unblocked()  # a new connection is blocked only once it publishes
                producer = None
                if connection is not None:
                    drop_connection(connection)
                    connection = None
                backoff.wait()

    def await_queue(self, queue: kombu.Queue, *, create: bool = True) -> None:
        """A durable queue that must receive what this process publishes (the streams of
        web/recovery/): each (re)connected publisher declares it and binds it to its exchanges
        before it publishes anything; with `create` False, only if it exists already."""
        self._queues_to_await.append((queue, create))

    def _await_queues(self, connection: kombu.Connection) -> None:
        """After a broker restart the fan-out exchange (not durable) is new and bound to nothing
        until someone binds a queue to it again, and RabbitMQ takes connections before it has
        started its streams: whatever is published meanwhile misses those queues without a word.
        So the queues of `await_queue` are declared and bound first, tried again while they are
        not started (NOT_FOUND, "home node ... is down"), for at most `queues_start_seconds`."""
        deadline = time.monotonic() + self.limits.queues_start_seconds
        for wanted, create in self._queues_to_await:
            while True:
                channel = connection.channel()  # a failed declare closes its channel
                try:
                    queue = wanted(channel)
                    if create:
                        queue.declare()
                    else:
                        queue.queue_declare(passive=True)
                        if queue.exchange is not None and queue.exchange.name:
                            queue.exchange.declare()
                            queue.queue_bind()
                        for binding in queue.bindings:
                            binding.declare(channel)
                            binding.bind(queue)
                    break
                except ChannelError as exc:
                    if not create and isinstance(exc, NotFound) and "no queue" in str(exc):
                        break  # nobody made it: nothing to feed
                    if time.monotonic() >= deadline:
                        log.error("broker queue %s is not available (%s): publishing without it",
                                  wanted.name, exc)
                        return
                    time.sleep(0.1)
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()

    def _set_publisher_connected(self, connected: bool) -> None:
        if connected and not self.publisher_connected:
            log.info("broker publisher connected")
            metrics.QUEUE_RECONNECTS.labels("publisher").inc()
        self.publisher_connected = connected
        metrics.BROKER_CONNECTED.labels("publisher").set(int(connected))

    def _on_publisher_blocked(self, reason: str) -> None:
        self.publisher_blocked = reason or "no reason given"
        metrics.BROKER_PUBLISHER_BLOCKED.labels("fanout").set(1)
        log.warning("the broker blocks the publisher (%s): emits wait until the alarm clears",
                    self.publisher_blocked)

    def _on_publisher_unblocked(self) -> None:
        if self.publisher_blocked:
            log.info("the publisher is no longer blocked")
        self.publisher_blocked = None
        metrics.BROKER_PUBLISHER_BLOCKED.labels("fanout").set(0)

    @staticmethod
    def keep_alive(connection: kombu.Connection) -> None:
        """Read the broker's heartbeats and send ours, on a connection that otherwise only
        writes (the publisher, the room bindings: every second, busy or idle); raise if the
        connection is dead."""
        try:
            connection.drain_events(timeout=0.01)
        except TimeoutError:
            pass
        connection.heartbeat_check()

    def flush(self, timeout: float) -> bool:
        """Wait until everything emitted so far is published; False if it took longer."""
        deadline = time.monotonic() + timeout
        while self._outbox.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- listening ----------------------------------------------------------------------------

    def connect_to_broker(self, **transport_options) -> kombu.Connection:
        """A new connection; `transport_options` add to the manager's (the publisher's
        connection.blocked callbacks)."""
        options = self.connection_options
        return kombu.Connection(self.url, **{**options, "transport_options": {
            **options["transport_options"], **transport_options}})

    @contextlib.contextmanager
    def broker_connection(self) -> Iterator[kombu.Connection]:
        """A new connection for a `with` block: closed when the block ends, dropped when it
        raised (see `drop_connection`)."""
        connection = self.connect_to_broker()
        try:
            yield connection
        except BaseException:
            drop_connection(connection)
            raise
        connection.release()

    def fanout_exchange(self) -> kombu.Exchange:
        """The exchange of the channel, declared exactly as python-socketio's KombuManager does
        (a non-durable fanout named after the channel), so stock emitters stay compatible."""
        return kombu.Exchange(self.channel, type="fanout", durable=False)

    def routed_exchange(self) -> kombu.Exchange:
        """The exchange the stack's own publishers use: a durable topic exchange beside the
        channel's, which routes each message to the replicas with a recipient (common/routing.py).
        Durable, so that the replicas' bindings to it survive a broker restart."""
        return kombu.Exchange(routing.routed_exchange_name(self.channel), type="topic",
                              durable=True)

    def records_exchange(self) -> kombu.Exchange:
        """The exchange of the records between replicas (`publish_record`): a fanout of its
        own beside the channel's, which stock emitters and the recovery log keep using."""
        return kombu.Exchange(f"{self.channel}.replicas", type="fanout", durable=True)

    def listener_queue(self) -> kombu.Queue:
        """The replica's queue and its standing bindings: stock emitters (the channel's fan-out,
        every replica gets their events), records, and the routed keys of everything that is for
        this replica whatever its rooms. Its room bindings come and go (web/room_bindings.py)."""
        routed = self.routed_exchange()
        keys = [routing.BROADCAST_KEY, routing.host_key(self.host_id)]
        if self.session_prefix:
            keys.append(routing.replica_key(self.session_prefix))
        return kombu.Queue(self.listener_queue_name, bindings=[
            kombu.binding(self.fanout_exchange()), kombu.binding(self.records_exchange()),
            *(kombu.binding(routed, routing_key=key) for key in keys)],
            **self.queue_options)

    def logged_queue(self, name: str, **options) -> kombu.Queue:
        """A queue that gets every Socket.IO message of the channel, from stock emitters and
        from the stack's own publishers (the recovery log)."""
        return kombu.Queue(name, bindings=[
            kombu.binding(self.fanout_exchange()),
            kombu.binding(self.routed_exchange(), routing_key=routing.EVERY_KEY)], **options)

    def _listen(self):
        backoff = Backoff(most=self.limits.retry_max_seconds)
        ever_bound = False
        while True:
            try:
                with self.broker_connection() as connection:
                    if ever_bound:
                        self._check_queue_survived(connection)
                    received: collections.deque[kombu.Message] = collections.deque()
                    # The stock KombuManager and Flask-SocketIO emitters publish JSON text.
                    consumer = connection.Consumer(
                        self.listener_queue(), accept=["text/plain", "application/json"],
                        callbacks=[lambda _, m, received=received: received.append(m)],
                        on_decode_error=self._drop_undecodable)
                    with consumer:  # declared and consuming: only now is the replica reachable
                        self._set_listener_bound(True)
                        ever_bound = True
                        backoff.reset()
                        last_check = time.monotonic()
                        while True:
                            try:
                                connection.drain_events(timeout=1)
                            except TimeoutError:
                                pass
                            if time.monotonic() - last_check >= 1:
                                connection.heartbeat_check()  # raises on a dead or frozen broker
                                last_check = time.monotonic()
                            while received:
                                message = received.popleft()
                                message.ack()
                                metrics.QUEUE_RECEIVES.inc()
                                decoded = self._decode(message.payload)
                                if decoded is None:
                                    continue
                                if decoded["method"] == RECORD_METHOD:
                                    self._take_record(decoded)
                                else:
                                    yield decoded
            except Exception as exc:  # any failure: bind the same queue again
                if self.listener_bound:
                    log.error("broker listener lost its connection: %s", exc)
                self._set_listener_bound(False)
                backoff.wait()

    def _take_record(self, message: dict) -> None:
        sender = message.get("host_id")
        if self.on_record is None or (sender == self.host_id and
                                      not message.get("include_sender")):
            return
        key, body = message.get("key"), message.get("body")
        if not isinstance(key, str) or not isinstance(body, dict):
            log.error("dropped a malformed record from replica %s", sender)
            return
        try:
            self.on_record(key, body, str(sender))
        except Exception:  # one bad record must not stop the listener
            log.exception("record %r from replica %s failed", key[:50], sender)

    def _drop_undecodable(self, message: kombu.Message, exc: Exception) -> None:
        message.ack()
        metrics.QUEUE_LOST.labels("undecodable").inc()
        log.error("dropped a message from the fan-out exchange that is not JSON: %s", exc)

    def _decode(self, payload: object) -> dict | None:
        try:
            data = self.json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        except ValueError as exc:
            data, error = None, exc
        else:
            error = None if isinstance(data, dict) and "method" in data else "not a manager message"
        if error is not None:
            metrics.QUEUE_LOST.labels("undecodable").inc()
            log.error("dropped a message from the fan-out exchange: %s", error)
            return None
        return data

    def _check_queue_survived(self, connection: kombu.Connection) -> None:
        """After an outage longer than the queue's expiry, what was published meanwhile is lost.

        In a cluster the queue lives on one node: while that node stops or is down the queue
        cannot be declared again (NOT_FOUND, but not "no queue": "home node ... is down", "process
        is stopped"), so the listener moves to a new queue on the node it reached, and whatever the
        old queue held or missed is lost for this replica.
        """
        channel = connection.channel()  # a failed passive declare closes its channel: a spare one
        try:
            channel.queue_declare(queue=self.listener_queue_name, passive=True)
        except NotFound as exc:
            if "no queue" not in str(exc):
                metrics.QUEUE_LOST.labels("listener_queue_node_down").inc()
                old_name = self.listener_queue_name
                self.listener_queue_name = f"{old_name.rpartition('.')[0]}.{uuid.uuid4().hex[:8]}"
                log.error("broker listener queue %s is on a node that is down (%s): moving to %s; "
                          "events published meanwhile did not reach this replica",
                          old_name, exc, self.listener_queue_name)
            else:
                metrics.QUEUE_LOST.labels("listener_queue_expired").inc()
                log.error("broker listener queue %s expired while disconnected: events published "
                          "during the outage did not reach this replica", self.listener_queue_name)
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def _set_listener_bound(self, bound: bool) -> None:
        if bound and not self.listener_bound:
            log.info("broker listener bound to queue %s", self.listener_queue_name)
            metrics.QUEUE_RECONNECTS.labels("listener").inc()
            if self.on_listener_bound is not None:
                self.on_listener_bound()
        self.listener_bound = bound
        metrics.BROKER_CONNECTED.labels("listener").set(int(bound))

    def status(self) -> dict:
        return {
            "publisher_connected": self.publisher_connected,
            "publisher_blocked": self.publisher_blocked is not None,
            "listener_bound": self.listener_bound,
            "listener_queue": self.listener_queue_name,
            "outbox": self._outbox.qsize(),
        }


def drop_connection(connection: kombu.Connection) -> None:
    """Let go of a connection that failed, without AMQP's goodbye: closing a connection sends
    connection.close and waits for close-ok, and a frozen broker never answers, so that wait
    took a read timeout (10 s), on top of the heartbeat check's 10 s to notice the freeze,
    before the failure was reported and a new connection tried."""
    with contextlib.suppress(Exception):
        connection.collect()


def create_queue_manager(settings: Settings, *, write_only: bool) -> QueueManager:
    return QueueManager(
        settings.amqp_url.get_secret_value(),
        settings.socketio_channel,
        write_only=write_only,
        process_id=settings.replica_id,
        session_prefix="" if write_only else session_id_prefix(settings.replica_address),
        limits=BrokerLimits(
            listener_queue_expiry_ms=int(settings.broker_queue_expiry_seconds * 1000)),
    )


def recovery_log_name(channel: str) -> str:
    """The stream every emit of the channel is logged to, for connection state recovery
    (web/recovery/streams.py declares it)."""
    return f"{channel}.recovery-log"


def create_emitter(settings: Settings) -> QueueManager:
    """The write-only emitter a process outside the web replicas uses to reach their clients.

    Create one per process and keep it: each one holds a broker connection.
    """
    emitter = create_queue_manager(settings, write_only=True)
    if settings.recovery_window_seconds:  # clients that asked for recovery read only the log
        emitter.await_queue(emitter.logged_queue(recovery_log_name(settings.socketio_channel)),
                            create=False)
    return emitter
