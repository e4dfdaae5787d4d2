"""Connection state recovery's streams on the broker: reading them, and reading the log back.

Two RabbitMQ streams (web/recovery/__init__.py says what they hold): the recovery log, bound to
the fan-out exchange, and the sessions stream. Each replica reads both from one greenlet, for good,
resuming where it stopped after a lost connection, acknowledging a batch at a time; it announces
itself on the sessions stream every HEARTBEAT_SECONDS and has its sessions checkpointed every
half window. A recovery that needs entries no longer in memory reads them back from the log.
What is read goes to a `LogReader` (web/recovery/clients.py's Recovery), which decides.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import kombu

from common import metrics, routing
from common.backoff import Backoff
from common.broker import recovery_log_name
from web.recovery.decisions import RecoveryUnavailable, replayable

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
RETENTION_MARGIN_SECONDS = 60
LOG_MAX_BYTES = 500_000_000
LOG_SEGMENT_BYTES = 16_000_000
SESSIONS_MAX_BYTES = 100_000_000
SESSIONS_SEGMENT_BYTES = 4_000_000
PREFETCH = 1000
ACK_EVERY_SECONDS, ACK_EVERY_MESSAGES = 1.0, PREFETCH // 4  # well within the prefetch credit
READ_BACK_TIMEOUT_SECONDS = 5.0
IDLE_DRAIN_SECONDS = 0.5  # how often the sessions stream is read while the log is not


class Acks:
    """Stream deliveries acknowledged a batch at a time (one `multiple` ack per channel): an ack
    per event was a write(2) per event, about 5 % of a replica's CPU under a steady fan-out.
    Takes kombu's messages and py-amqp's alike (both have `channel` and `delivery_tag`)."""

    def __init__(self) -> None:
        self.last: dict[int, object] = {}  # channel id -> its last delivery not acked yet
        self.count = 0

    def later(self, message) -> None:
        self.last[id(message.channel)] = message
        self.count += 1

    def send(self) -> None:
        for message in self.last.values():
            message.channel.basic_ack(message.delivery_tag, multiple=True)
        self.last.clear()
        self.count = 0


class LogConsumer:
    """The consumer of the recovery log on the log greenlet's channel: started where the reader
    stopped, or at the log's end (a mark of our own read back says where that is); stopped while
    the replica has no use for the log (`LogReader.may_pause`)."""

    def __init__(self, streams: RecoveryStreams, connection, channel, entries) -> None:
        self.streams, self.connection, self.channel = streams, connection, channel
        self.entries = entries
        self.tag: str | None = None

    def start(self, reader: LogReader) -> None:
        start = reader.position + 1 if reader.position >= 0 else "next"
        self.tag = self.channel.basic_consume(queue=self.streams.log_name,
                                              callback=self.entries.append,
                                              arguments={"x-stream-offset": start})
        if reader.position < 0:  # where "next" is: a mark of our own, read back
            self.connection.Producer().publish(
                self.streams.manager.json.dumps({"method": "recovery_mark",
                                                 "replica": self.streams.replica}),
                exchange=kombu.Exchange(""), routing_key=self.streams.log_name)

    def stop(self) -> None:
        self.channel.basic_cancel(self.tag)  # deliveries sent before its answer still arrive
        self.tag = None


class LogReader(Protocol):
    """What the streams are read into (web/recovery/clients.py's Recovery)."""

    position: int  # the last log offset it handled (-1: none yet): reading resumes after it

    def pace(self) -> float:
        """0: deliver each entry as it comes; more: seconds the entries may gather first."""

    def live(self) -> bool:
        """Whether the log must be read now."""

    def may_pause(self) -> bool:
        """Whether it may stop reading the log for now (no client has any use for it)."""

    def paused(self) -> None:
        """It stopped reading: what it knows of the log is no longer current."""

    def log_entry(self, offset: int, keys: list[str] | None, body: bytes) -> None:
        """One entry of the log, in order, undecoded: its routing keys (None: not routed by
        room, from a stock emitter or a replica's own records) and its JSON body."""

    def on_record(self, record) -> None:
        """One record of the sessions stream, in order."""

    def checkpoint(self) -> None:
        """Record every connected session again (every `checkpoint_seconds`)."""

    def prune(self) -> None:
        """Forget the sessions too old to be recovered."""


class RecoveryStreams:
    """The recovery log and the sessions stream of one replica."""

    def __init__(self, manager, *, window_seconds: float, checkpoint_seconds: float,
                 replica: str, clock: Callable[[], float]):
        self.manager = manager  # common.broker.QueueManager
        self.window = window_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.replica = replica
        self.clock = clock
        self.log_name = recovery_log_name(manager.channel)
        self.sessions_name = f"{manager.channel}.recovery-sessions"
        self.sessions_position = -1
        self.bound = False
        self.wake = threading.Event()  # cuts a paced wait short (a client asks for the log)
        self.behind = False  # the last paced batch filled the prefetch: read on at once
        # Whatever the publisher holds while the broker is away goes into the log, and the session
        # records into theirs, once it is back (common.broker's `_await_queues`).
        manager.await_queue(self.log_queue("next"))
        manager.await_queue(self.sessions_queue("first"))

    def log_queue(self, offset) -> kombu.Queue:
        return self.manager.logged_queue(
            self.log_name, durable=True,
            queue_arguments={"x-queue-type": "stream",
                             "x-max-age": f"{int(self.window) + RETENTION_MARGIN_SECONDS}s",
                             "x-max-length-bytes": LOG_MAX_BYTES,
                             "x-stream-max-segment-size-bytes": LOG_SEGMENT_BYTES},
            consumer_arguments={"x-stream-offset": offset})

    def sessions_queue(self, offset) -> kombu.Queue:
        retention = int(self.window + self.checkpoint_seconds) + RETENTION_MARGIN_SECONDS
        return kombu.Queue(
            self.sessions_name, durable=True,
            queue_arguments={"x-queue-type": "stream", "x-max-age": f"{retention}s",
                             "x-max-length-bytes": SESSIONS_MAX_BYTES,
                             "x-stream-max-segment-size-bytes": SESSIONS_SEGMENT_BYTES},
            consumer_arguments={"x-stream-offset": offset})

    def run(self, reader: LogReader) -> None:
        """The log greenlet: reads both streams into `reader` for good, resuming where it
        stopped."""
        self.backoff = Backoff(most=self.manager.limits.retry_max_seconds)
        failed = False
        while True:
            try:
                self._consume(reader)
            except Exception as exc:
                if self.bound or not failed:  # said once, until it is bound again
                    log.error("recovery log reader %s: %s", "lost its broker connection"
                              if self.bound else "cannot bind its streams", exc)
                failed = not self.bound
                self.bound = False
                self.backoff.wait()

    def _consume(self, reader: LogReader) -> None:
        entries: collections.deque = collections.deque()
        records: collections.deque = collections.deque()
        with self.manager.broker_connection() as connection:
            sessions_start = self.sessions_position + 1 if self.sessions_position >= 0 else "first"
            accept = ["text/plain", "application/json"]
            # The log is consumed with py-amqp's own messages, not kombu's: most entries are for
            # none of this replica's clients (routed by room, common/routing.py) and are kept
            # as they came, undecoded; a kombu message per entry cost more than the rest.
            log_channel = connection.channel()
            log_channel.auto_decode = False  # bodies as they came (bytes): most stay undecoded
            self.log_queue("next")(log_channel).declare()
            log_channel.basic_qos(0, PREFETCH, False)
            tail = LogConsumer(self, connection, log_channel, entries)
            if reader.live():
                tail.start(reader)
            else:  # what it knew of the log stopped being current with the connection
                reader.paused()
            routed = routing.routed_exchange_name(self.manager.channel)
            sessions_consumer = kombu.Consumer(connection.channel(),
                                               [self.sessions_queue(sessions_start)],
                                               accept=accept, prefetch_count=PREFETCH,
                                               callbacks=[lambda _, m: records.append(m)])
            with sessions_consumer:
                self.bound = True
                self.backoff.reset()  # the next outage starts from the shortest pause again
                log.info("recovery log reader bound to streams %s and %s", self.log_name,
                         self.sessions_name)
                next_heartbeat = next_checkpoint = next_ack = 0.0
                acks = Acks()
                while True:
                    self._drain(connection, reader.pace() if tail.tag else IDLE_DRAIN_SECONDS,
                                entries, records)
                    while records:
                        message = records.popleft()
                        self.sessions_position = message.headers.get("x-stream-offset", -1)
                        acks.later(message)
                        reader.on_record(self._decode(message))
                    while entries:
                        message = entries.popleft()
                        headers = message.properties.get("application_headers") or {}
                        offset = headers.get("x-stream-offset")
                        acks.later(message)
                        if isinstance(offset, int) and tail.tag:
                            reader.log_entry(offset, entry_keys(message, headers, routed),
                                             message.body)
                    if tail.tag and reader.may_pause():
                        tail.stop()  # what it sent before it stopped was passed over above
                        reader.paused()
                    elif not tail.tag and reader.live():
                        tail.start(reader)
                    now = time.monotonic()
                    if now >= next_ack or acks.count >= ACK_EVERY_MESSAGES:
                        acks.send()
                        next_ack = now + ACK_EVERY_SECONDS
                    if now >= next_heartbeat:
                        connection.heartbeat_check()
                        self.manager.publish_to_queue(self.sessions_name, {
                            "kind": "replica", "replica": self.replica, "at": self.clock()})
                        next_heartbeat = now + HEARTBEAT_SECONDS
                    if now >= next_checkpoint:
                        if next_checkpoint:
                            reader.checkpoint()
                        reader.prune()
                        next_checkpoint = now + self.checkpoint_seconds

    def _drain(self, connection, pace: float, entries, records) -> None:
        """Read what the broker sent: at once (waiting up to a second for something), or, with
        a `pace`, after letting entries gather for that long (or until `wake`), all of them in
        one go (without the pause while a batch fills the prefetch: the reader is behind). A
        replica woken for each entry paid a wake-up of gevent's hub per event, more than the
        entry itself, for entries none of its clients wanted."""
        try:
            if not pace:
                connection.drain_events(timeout=1)
                return
            if not self.behind:
                self.wake.wait(pace)
                self.wake.clear()
            self.behind = False
            while len(entries) + len(records) < PREFETCH:
                connection.drain_events(timeout=0.001)
            self.behind = True
        except TimeoutError:
            pass

    def _decode(self, message):  # a kombu message
        try:
            payload = message.payload
            return self.manager.json.loads(payload) if isinstance(payload, (str, bytes)) \
                else payload
        except ValueError:
            return None

    def read_back(self, first: int, last: int) -> list[tuple[int, dict]]:
        """The replayable entries of the log from offset `first` to `last`, from the stream."""
        entries: list[tuple[int, dict]] = []
        seen = [first - 1]
        deadline = time.monotonic() + READ_BACK_TIMEOUT_SECONDS

        def take(_, message):
            offset = message.headers.get("x-stream-offset")
            message.ack()
            if not isinstance(offset, int) or offset < first or offset > last:
                return
            if offset != seen[0] + 1:
                raise RecoveryUnavailable(f"the log starts after offset {first}")
            seen[0] = offset
            data = self._decode(message)
            if replayable(data):
                entries.append((offset, data))

        try:
            with self.manager.broker_connection() as connection:
                consumer = kombu.Consumer(connection.channel(), [self.log_queue(first)],
                                          accept=["text/plain", "application/json"],
                                          prefetch_count=PREFETCH, callbacks=[take])
                with consumer:
                    while seen[0] < last:
                        if time.monotonic() > deadline:
                            raise RecoveryUnavailable("reading the log back took too long")
                        with contextlib.suppress(TimeoutError):
                            connection.drain_events(timeout=0.5)
        except RecoveryUnavailable:
            raise
        except Exception as exc:
            raise RecoveryUnavailable(f"reading the log back failed: {exc}") from exc
        metrics.RECOVERY_READ_BACK.inc(last - first + 1)
        return entries


def entry_keys(message, headers: dict, routed_exchange: str) -> list[str] | None:
    """The routing keys a log entry was published with (common/routing.py), read without
    decoding its body; None if it did not come through the routed exchange. A stream drops the
    `CC` header that routed the other keys: they are in `ROUTING_KEYS_HEADER` too."""
    if message.delivery_info.get("exchange") != routed_exchange:
        return None
    more = headers.get(routing.ROUTING_KEYS_HEADER)
    return [message.delivery_info.get("routing_key"), *(more if isinstance(more, list) else ())]
