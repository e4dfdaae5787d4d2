"""Connection state recovery across replicas: Socket.IO 4.6+'s, on the wire.

A client that asks for it (CONNECT auth `{"recover": true}`, which the official client keeps
sending on every reconnect) gets a private session id, `pid`, in the CONNECT answer, and every
event it is sent carries the event's offset in the recovery log as its last argument. When its
transport is lost (its replica died or drained, its network dropped), the official client
reconnects with `{pid, offset}` in its CONNECT auth. Within RECOVERY_WINDOW_SECONDS, on any
replica, it gets back its sid and its rooms, then every event sent meanwhile to it, its rooms or
everyone, in order and once, then the live ones; its `socket.recovered` is true. Otherwise it is a
new session (a new pid: `recovered` false).

Where things live (docs/design.md, "Connection state recovery"):

* the log: a RabbitMQ stream bound to the fan-out exchange, so every emit of every replica, of
  the worker and of any stock emitter is appended in one order; its offsets are the ones clients
  see. Each replica reads it from one greenlet (`run`) and delivers to its recovering-capable
  clients from there, in log order, with the offset appended. Everyone else is served by the fast
  path exactly as before; the two never both write the same event to one client.
* the sessions: a second stream of small records (pid, sid, namespace, rooms, replica, state),
  written on connect, room change and disconnect, refreshed every half window, and the replicas'
  heartbeats; every replica reads it whole and keeps the index in memory. A session whose replica
  stopped sending heartbeats (SIGKILL) counts as disconnected at its last one.
* recent events: the last RECOVERY_MEMORY_EVENTS log entries in memory, so most recoveries read
  nothing back from the broker.

The library hooks (the CONNECT answer, the fast path's skip, the forced sid, room and disconnect
bookkeeping) are installed by web/upstream.py's `install_recovery`; this module holds the policy.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import kombu
from engineio import packet as eio_packet
from socketio import packet as socketio_packet

from common import metrics
from common.backoff import Backoff
from common.broker import recovery_log_name

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

CONNECTED, GONE, ENDED = "connected", "gone", "ended"
ROOMS = "recovery_rooms"  # a log entry: a client's rooms from here on


class Acks:
    """Stream deliveries acknowledged a batch at a time (one `multiple` ack per channel): an ack
    per event was a write(2) per event, about 5 % of a replica's CPU under a steady fan-out."""

    def __init__(self) -> None:
        self.last: dict[int, object] = {}  # channel id -> its last delivery not acked yet
        self.count = 0

    def later(self, message) -> None:
        self.last[id(message.channel)] = message
        self.count += 1

    def send(self) -> None:
        for message in self.last.values():
            message.ack(multiple=True)
        self.last.clear()
        self.count = 0


class RecoveryUnavailable(Exception):
    """Why a client that came back with a pid gets a new session (logged once): its session is
    unknown or too old, or the log no longer holds what it missed (retention, a failed read)."""


@dataclass(eq=False)
class Client:
    """A recovery-capable connection of this replica (one namespace of one Engine.IO session)."""

    pid: str
    namespace: str
    eio_sid: str
    start: int  # replay what the log holds after this offset: the entries up to `read_until`
    read_until: int = -1  # (from memory or the stream), then those logged while it connects
    missed: list = field(default_factory=list)  # (offset, message)
    rooms: list = field(default_factory=list)  # the rooms to restore (a recovery)
    recovered: bool = False
    answered: bool = False
    sid: str | None = None
    since: int = -1  # everything addressed to it up to this offset was sent to it
    view: frozenset = frozenset()  # its rooms as of the log entry being delivered
    generation: int = 1


# -- pure decisions ----------------------------------------------------------------------------

def replayable(message: dict) -> bool:
    """Events that get an offset: emits without a callback (an ack cannot be restored elsewhere,
    as in the reference server)."""
    return (isinstance(message, dict) and message.get("method") == "emit"
            and message.get("callback") is None and isinstance(message.get("event"), str))


def addressed_to(message: dict, sid: str, rooms, namespace: str) -> bool:
    """Whether an emit of the log reaches a client with this sid and rooms (the sid is a room)."""
    if (message.get("namespace") or "/") != namespace:
        return False
    skip = message.get("skip_sid")
    if skip == sid or (isinstance(skip, list) and sid in skip):
        return False
    room = message.get("room")
    if room is None:
        return True
    wanted = room if isinstance(room, list) else [room]
    return any(r == sid or r in rooms for r in wanted)


def parse_offset(value) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        return int(value)
    return None


def left_at(record: dict, replica_heartbeats: dict) -> float:
    """When the session's client left. A session still recorded as connected left when its
    replica was last heard of: only its client knows the pid, so a client that comes back with it
    has lost that connection, even if its replica (killed, cut off) has not noticed yet."""
    if record.get("state") == GONE:
        return record.get("at", 0.0)
    return max(replica_heartbeats.get(record.get("replica"), 0.0), record.get("at", 0.0))


def supersedes(record: dict, known: dict | None) -> bool:
    """Each (re)connection of a pid is one generation further: a late record of an older one (the
    replica that lost the client noticing after it was recovered elsewhere) changes nothing."""
    return known is None or record.get("generation", 0) >= known.get("generation", 0)


def namespace_of(encoded: str) -> str:
    """The namespace of an encoded Socket.IO packet (`2/chat,[...]`, `51-/chat,[...]`)."""
    start = encoded.index("-") + 1 if encoded[:1] in ("5", "6") else 1
    if encoded[start:start + 1] == "/":
        end = encoded.find(",", start)
        return encoded[start:end] if end > 0 else encoded[start:]
    return "/"


# -- the replica's side ------------------------------------------------------------------------

class Recovery:
    def __init__(self, server, manager, *, window_seconds: float, memory_events: int,
                 memory_bytes: int = 16_000_000,
                 namespaces, replica_id: str, restores_room=lambda room: True, clock=time.time):
        self.server = server
        self.manager = manager  # common.broker.QueueManager
        self.window = window_seconds
        self.namespaces = frozenset(namespaces)
        # Rooms a recovered session gets back; the others (a user's: its token decides) are the
        # connect handler's to join again.
        self.restores_room = restores_room
        self.replica = f"{replica_id}.{manager.host_id[:8]}"
        self.clock = clock
        self.log_name = recovery_log_name(manager.channel)
        self.sessions_name = f"{manager.channel}.recovery-sessions"
        self.checkpoint_seconds = max(5.0, window_seconds / 2)
        # Recent replayable entries, bounded in count and in bytes (their size as published).
        self.memory: collections.deque[tuple[int, dict]] = collections.deque()
        self.memory_sizes: collections.deque[int] = collections.deque()
        self.memory_bytes = 0
        self.memory_events_max, self.memory_bytes_max = memory_events, memory_bytes
        self.memory_from = -1  # memory holds every replayable entry after this offset
        self.position = -1  # the last log offset this replica handled (-1: none yet)
        self.sessions_position = -1
        self.sessions: dict[str, dict] = {}  # pid -> its latest record
        self.heartbeats: dict[str, float] = {}  # replica -> when last heard
        self.connecting: dict[tuple[str, str], Client] = {}  # (eio_sid, namespace)
        self.clients: dict[tuple[str, str], Client] = {}  # (eio_sid, namespace)
        self.by_sid: dict[str, dict[str, Client]] = {}  # namespace -> sid -> client
        # namespace -> room -> clients, in log order: a room change is applied when the log
        # greenlet reaches it, so an emit to a room just before leaving it still arrives.
        self.members: dict[str, dict[str, set[Client]]] = {}
        self.eio_sids: collections.Counter[str] = collections.Counter()  # the fast path skips
        self.forced_sids: dict[int, str] = {}  # thread/greenlet id -> the sid to give back
        self.disconnect_reasons: dict[tuple[str, str], str] = {}
        # The server's own (unwrapped) packet writer; web/upstream.py's install_recovery sets it.
        self.send_eio_packet: Callable[[str, object], None] | None = None
        self.bound = False
        # Whatever the publisher holds while the broker is away goes into the log, and the session
        # records into theirs, once it is back (common.broker's `_await_queues`).
        manager.await_queue(self.log_queue("next"))
        manager.await_queue(self.sessions_queue("first"))

    # -- the handshake (called by web/upstream.py's wrappers) ---------------------------------

    def wants(self, namespace: str, auth) -> bool:
        return (namespace in self.namespaces and isinstance(auth, dict)
                and auth.get("recover") is True and self.position >= 0)

    def begin(self, eio_sid: str, namespace: str, auth: dict) -> Client:
        """Before the app's connect handler: the session to restore, or a new one. From here on
        the log greenlet adds what it logs to `client.missed`; the fast path skips the client."""
        key = (eio_sid, namespace)
        client = Client(pid=secrets.token_urlsafe(16), namespace=namespace, eio_sid=eio_sid,
                        start=self.position, read_until=self.position)
        self.connecting[key] = client
        self.eio_sids[eio_sid] += 1
        try:
            restored = self.restorable(client, auth.get("pid"), auth.get("offset"))
        except RecoveryUnavailable as exc:
            log.info("connection state of %s not recovered: %s", eio_sid, exc)
            restored = None
        if restored is None:
            client.missed = [entry for entry in client.missed if entry[0] > client.read_until]
        else:
            self.forced_sids[threading.get_ident()] = client.sid
        return client

    def end(self, client: Client) -> None:
        """After the connect handler, answered or refused."""
        self.forced_sids.pop(threading.get_ident(), None)
        if self.connecting.pop((client.eio_sid, client.namespace), None) is not None:
            self._forget_eio_sid(client.eio_sid)

    def forced_sid(self) -> str | None:
        return self.forced_sids.pop(threading.get_ident(), None)

    def restorable(self, client: Client, pid, offset) -> Client | None:
        """Turns `client` into the session `pid` had, with what it missed up to now."""
        namespace = client.namespace
        if pid is None:
            return None  # a first connection
        record = self.sessions.get(pid) if isinstance(pid, str) else None
        if record is None or record.get("namespace") != namespace:
            raise RecoveryUnavailable("unknown session")
        away = self.clock() - left_at(record, self.heartbeats)
        if away > self.window:
            raise RecoveryUnavailable(f"away {away:.1f}s, longer than the window")
        if self.manager.is_connected(record["sid"], namespace):
            raise RecoveryUnavailable("its old connection is still open here (it will close)")
        start = record["since"] if offset is None else parse_offset(offset)
        if start is None:
            raise RecoveryUnavailable("not an offset")
        start = max(start, record["since"])
        if start > client.read_until:  # not one it was given, or this replica is behind
            raise RecoveryUnavailable(f"offset {start} is past this replica's log position "
                                      f"{client.read_until}")
        if start >= self.memory_from:  # all in memory (and nothing yields until it is copied)
            earlier = [entry for entry in self.memory if start < entry[0] <= client.read_until]
        else:
            earlier = self.read_back(start + 1, client.read_until)
        client.missed = earlier + client.missed  # those logged meanwhile come after
        client.pid, client.sid, client.start = pid, record["sid"], start
        client.rooms = list(record.get("rooms", ()))
        client.recovered, client.generation = True, record.get("generation", 0) + 1
        return client

    def answered(self, client: Client, sid: str, send_answer) -> None:
        """The CONNECT answer goes out now, with the pid; then the rooms, the missed events and
        the live ones. Nothing here yields, so the log greenlet cannot deliver in between."""
        last = self.position
        client.sid = sid
        send_answer({"pid": client.pid})
        manager, namespace = self.manager, client.namespace
        for room in client.rooms:
            if room is not None and room != sid and self.restores_room(room):
                manager.basic_enter_room(sid, namespace, room)
        rooms = set(manager.get_rooms(sid, namespace))
        sent = 0
        for offset, message in client.missed:
            if addressed_to(message, sid, rooms, namespace):
                self._send(client.eio_sid, self.packets(message, offset))
                sent += 1
        client.since, client.missed = last, []
        self._set_view(client, rooms)
        self.clients[(client.eio_sid, namespace)] = client
        self.by_sid.setdefault(namespace, {})[sid] = client
        self.eio_sids[client.eio_sid] += 1
        self._record(client, CONNECTED, sorted(rooms))
        if client.recovered:
            metrics.RECOVERIES.labels("recovered").inc()
            metrics.RECOVERY_REPLAYED.inc(sent)
            log.info("connection state of %s recovered: %d missed events", sid, sent)
        else:
            metrics.RECOVERIES.labels("new").inc()

    # -- the fast path's skip, rooms and disconnects (web/upstream.py) ------------------------

    def served_by_log(self, eio_sid: str, encoded) -> bool:
        """Whether the fast path leaves this packet to the log greenlet (it is for a
        recovery-capable client, or one being recovered, of its namespace)."""
        if eio_sid not in self.eio_sids:
            return False
        if not isinstance(encoded, str):  # a binary attachment: goes where its packet went
            return self._skipped == eio_sid
        key = (eio_sid, namespace_of(encoded))
        skip = key in self.clients or key in self.connecting
        self._skipped = eio_sid if skip else None
        return skip

    _skipped: str | None = None

    def rooms_changed(self, sid: str, namespace: str) -> None:
        client = self.by_sid.get(namespace, {}).get(sid)
        if client is not None:
            rooms = self.manager.get_rooms(sid, namespace)
            self._record(client, CONNECTED, rooms)
            # In the log after every emit this replica published before it (one outbox).
            self.manager.publish_to_queue(self.log_name, {
                "method": ROOMS, "namespace": namespace, "sid": sid, "rooms": rooms})

    def _set_view(self, client: Client, rooms) -> None:
        members = self.members.setdefault(client.namespace, {})
        new = frozenset(rooms)
        for room in client.view - new:
            holders = members.get(room)
            if holders is not None:
                holders.discard(client)
                if not holders:
                    del members[room]
        for room in new - client.view:
            members.setdefault(room, set()).add(client)
        client.view = new

    def _apply_rooms(self, message: dict) -> None:
        client = self.by_sid.get(message.get("namespace") or "/", {}).get(message.get("sid"))
        rooms = message.get("rooms")
        if client is not None and isinstance(rooms, list):
            self._set_view(client, [r for r in rooms if isinstance(r, str)])

    def disconnecting(self, sid: str, namespace: str, reason: str | None) -> None:
        self.disconnect_reasons[(namespace, sid)] = reason

    def disconnected(self, sid: str, namespace: str, rooms: list) -> None:
        reason = self.disconnect_reasons.pop((namespace, sid), None)
        client = self.by_sid.get(namespace, {}).pop(sid, None)
        if client is None:
            return
        self.clients.pop((client.eio_sid, namespace), None)
        self._set_view(client, ())
        self._forget_eio_sid(client.eio_sid)
        reasons = self.server.reason
        recoverable = reason in (reasons.TRANSPORT_CLOSE, reasons.TRANSPORT_ERROR,
                                 reasons.PING_TIMEOUT)
        self._record(client, GONE if recoverable else ENDED, rooms)

    def is_tracked(self, sid: str, namespace: str) -> bool:
        return sid in self.by_sid.get(namespace, ())

    def _forget_eio_sid(self, eio_sid: str) -> None:
        self.eio_sids[eio_sid] -= 1
        if self.eio_sids[eio_sid] <= 0:
            del self.eio_sids[eio_sid]

    def _record(self, client: Client, state: str, rooms) -> None:
        record = {"kind": "session", "pid": client.pid, "sid": client.sid,
                  "namespace": client.namespace, "rooms": [r for r in rooms if r is not None],
                  "since": client.since, "replica": self.replica, "state": state,
                  "generation": client.generation, "at": self.clock()}
        self.on_record(record)  # this replica knows at once; the others through the stream
        self.manager.publish_to_queue(self.sessions_name, record)

    # -- delivering from the log ----------------------------------------------------------

    def packets(self, message: dict, offset: int) -> list:
        """The Engine.IO packets of a logged emit, with its offset as the last argument."""
        args = message.get("data")
        args = list(args) if isinstance(args, list) else [args]
        if message.get("binary"):
            attachments = [base64.b64decode(a) for a in args[1:]]
            args = socketio_packet.Packet.reconstruct_binary(args[0], attachments)
            args = list(args) if isinstance(args, list) else [args]
        pkt = self.server.packet_class(socketio_packet.EVENT,
                                       namespace=message.get("namespace") or "/",
                                       data=[message["event"], *args, str(offset)])
        encoded = pkt.encode()
        encoded = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]

    def _send(self, eio_sid: str, packets: list) -> None:
        for p in packets:
            self.send_eio_packet(eio_sid, p)

    def logged(self, offset: int, message, size: int = 0) -> None:
        """One entry of the log, in order: remembered, and sent to this replica's clients."""
        if offset <= self.position:
            return  # already handled (a consumer that resumed)
        if self.position < 0:
            self.memory_from = offset - 1
        self.position = offset
        if isinstance(message, dict) and message.get("method") == ROOMS:
            self._apply_rooms(message)
            return
        if not replayable(message):
            return
        self.remember(offset, message, size)
        for client in self.connecting.values():
            client.missed.append((offset, message))
        targets = self.targets(message)
        if targets:
            packets = self.packets(message, offset)
            for client in targets:
                if offset > client.since:
                    self._send(client.eio_sid, packets)

    def remember(self, offset: int, message: dict, size: int) -> None:
        """Keep the entry in memory, forgetting the oldest beyond the count or the bytes allowed
        (a recovery that needs them reads them back from the stream)."""
        self.memory.append((offset, message))
        self.memory_sizes.append(size)
        self.memory_bytes += size
        while len(self.memory) > 1 and (len(self.memory) > self.memory_events_max
                                        or self.memory_bytes > self.memory_bytes_max):
            self.memory_from = self.memory.popleft()[0]
            self.memory_bytes -= self.memory_sizes.popleft()

    def targets(self, message: dict) -> list[Client]:
        namespace = message.get("namespace") or "/"
        clients = self.by_sid.get(namespace)
        if not clients:
            return []
        room = message.get("room")
        if room is None:
            chosen = list(clients.values())
        else:
            members = self.members.get(namespace, {})
            chosen = {client for r in (room if isinstance(room, list) else [room])
                      for client in members.get(r, ())}
        skip = message.get("skip_sid")
        if skip is None:
            return list(chosen)
        skip = set(skip) if isinstance(skip, list) else {skip}
        return [c for c in chosen if c.sid not in skip]

    def on_record(self, record) -> None:
        if not isinstance(record, dict):
            return
        if record.get("kind") == "replica":
            self.heartbeats[record.get("replica")] = record.get("at", 0.0)
        elif record.get("kind") == "session" and isinstance(record.get("pid"), str):
            if not supersedes(record, self.sessions.get(record["pid"])):
                return
            if record.get("state") == ENDED:
                self.sessions.pop(record["pid"], None)
            else:
                self.sessions[record["pid"]] = record

    def prune(self) -> None:
        now = self.clock()
        horizon = self.window + self.checkpoint_seconds + HEARTBEAT_SECONDS
        for pid in [pid for pid, r in self.sessions.items() if now - r.get("at", 0) > horizon]:
            del self.sessions[pid]

    # -- the streams --------------------------------------------------------------------------

    def log_queue(self, offset) -> kombu.Queue:
        return kombu.Queue(
            self.log_name, self.manager.fanout_exchange(), durable=True,
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

    def run(self) -> None:
        """The log greenlet: reads both streams for good, resuming where it stopped."""
        backoff = Backoff(most=self.manager.limits.retry_max_seconds)
        while True:
            try:
                self._consume()
            except Exception as exc:
                if self.bound:
                    log.error("recovery log reader lost its broker connection: %s", exc)
                self.bound = False
                backoff.wait()

    def _consume(self) -> None:
        entries: collections.deque = collections.deque()
        records: collections.deque = collections.deque()
        with self.manager.broker_connection() as connection:
            log_start = self.position + 1 if self.position >= 0 else "next"
            sessions_start = self.sessions_position + 1 if self.sessions_position >= 0 else "first"
            log_queue, sessions_queue = self.log_queue(log_start), self.sessions_queue(
                sessions_start)
            accept = ["text/plain", "application/json"]
            log_consumer = kombu.Consumer(connection.channel(), [log_queue], accept=accept,
                                          prefetch_count=PREFETCH,
                                          callbacks=[lambda _, m: entries.append(m)])
            sessions_consumer = kombu.Consumer(connection.channel(), [sessions_queue],
                                               accept=accept, prefetch_count=PREFETCH,
                                               callbacks=[lambda _, m: records.append(m)])
            with log_consumer, sessions_consumer:
                if self.position < 0:  # where "next" is: a mark of our own, read back
                    connection.Producer().publish(
                        self.manager.json.dumps({"method": "recovery_mark",
                                                 "replica": self.replica}),
                        exchange=kombu.Exchange(""), routing_key=self.log_name)
                self.bound = True
                log.info("recovery log reader bound to streams %s and %s", self.log_name,
                         self.sessions_name)
                next_heartbeat = next_checkpoint = next_ack = 0.0
                acks = Acks()
                while True:
                    try:
                        connection.drain_events(timeout=1)
                    except TimeoutError:
                        pass
                    while records:
                        message = records.popleft()
                        self.sessions_position = message.headers.get("x-stream-offset", -1)
                        acks.later(message)
                        self.on_record(self._decode(message))
                    while entries:
                        message = entries.popleft()
                        offset = message.headers.get("x-stream-offset")
                        acks.later(message)
                        if isinstance(offset, int):
                            self.logged(offset, self._decode(message), len(message.body))
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
                            self.checkpoint()
                        self.prune()
                        next_checkpoint = now + self.checkpoint_seconds

    def checkpoint(self) -> None:
        """Every connected session's record again, so that it outlives the stream's retention."""
        for client in list(self.clients.values()):
            self._record(client, CONNECTED, self.manager.get_rooms(client.sid, client.namespace))

    def _decode(self, message):
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

    def status(self) -> dict:
        return {"ready": self.bound and self.position >= 0, "position": self.position,
                "clients": len(self.clients), "sessions_known": len(self.sessions),
                "in_memory": len(self.memory),
                "in_memory_bytes": self.memory_bytes}
