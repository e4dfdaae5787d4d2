"""This replica's recovery-capable clients: the handshake, their rooms and disconnects as the
log sees them, and delivering the log to them.

`Recovery` is what web/upstream/install.py's hooks call (the CONNECT handshake, the fast
path's skip, room changes, disconnects) and what web/recovery/streams.py feeds, in log order: each
entry of the recovery log (`logged`), each session record (`on_record`). Nothing here talks to the
broker but through the manager's outbox and the streams' `read_back`.
"""

from __future__ import annotations

import base64
import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engineio import packet as eio_packet
from socketio import packet as socketio_packet

from common import metrics, routing
from web.recovery.decisions import (
    CONNECTED,
    ENDED,
    GONE,
    ROOMS,
    LogNotReadable,
    RecoveryUnavailable,
    addressed_to,
    left_at,
    namespace_of,
    parse_offset,
    replayable,
    supersedes,
)
from web.recovery.streams import HEARTBEAT_SECONDS, RecoveryStreams

log = logging.getLogger(__name__)

# With no recovery-capable client here, the log is only remembered: it is read in batches this
# far apart (web/recovery/streams.py's `_drain`), and a client that comes back with a later
# offset waits for the reader to reach it, at most CATCH_UP_SECONDS. After PAUSE_AFTER_SECONDS
# of that the log is not read at all; the first client that asks for recovery starts it again
# at the log's end, waiting at most START_SECONDS for it.
IDLE_PACE_SECONDS = 0.1
CATCH_UP_SECONDS = 2.0
PAUSE_AFTER_SECONDS = 10.0
MAX_PID_LENGTH, MAX_CAME_BACK = 64, 10_000  # pids remembered as come back (pruned with sessions)
START_SECONDS = 5.0  # then the session is closed, and the client tries again (a broker outage)


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


class Recovery:
    """Connection state recovery on this replica: the policy; its broker I/O is `streams`."""

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
        self.checkpoint_seconds = max(5.0, window_seconds / 2)
        # Recent entries, bounded in count and in bytes (their size as published): replayable
        # ones decoded, and those for none of this replica's clients as they came (JSON bytes).
        self.memory: collections.deque[tuple[int, dict | bytes]] = collections.deque()
        self.memory_sizes: collections.deque[int] = collections.deque()
        self.memory_bytes = 0
        self.memory_events_max, self.memory_bytes_max = memory_events, memory_bytes
        self.memory_from = -1  # memory holds every replayable entry after this offset
        self.position = -1  # the last log offset this replica handled (-1: none yet, or paused)
        self.log_wanted = 0  # handshakes waiting for the log to be read again
        self.live_at = time.monotonic()  # when the log was last of use here
        self.sessions: dict[str, dict] = {}  # pid -> its latest record
        self.heartbeats: dict[str, float] = {}  # replica -> when last heard
        self.connecting: dict[tuple[str, str], Client] = {}  # (eio_sid, namespace)
        self.clients: dict[tuple[str, str], Client] = {}  # (eio_sid, namespace)
        self.by_sid: dict[str, dict[str, Client]] = {}  # namespace -> sid -> client
        # namespace -> room -> clients, in log order: a room change is applied when the log
        # greenlet reaches it, so an emit to a room just before leaving it still arrives.
        self.members: dict[str, dict[str, set[Client]]] = {}
        # The routing keys of the rooms of those clients (common/routing.py), each counted once
        # per member (their own sids too): a log entry with none of them, and not to everyone,
        # is for nobody here and is not decoded.
        self.wanted_keys: collections.Counter[str] = collections.Counter()
        self.eio_sids: collections.Counter[str] = collections.Counter()  # the fast path skips
        self.forced_sids: dict[int, str] = {}  # thread/greenlet id -> the sid to give back
        # pid -> when its client first came back: a try the log was not readable for (a broker
        # outage) must not count against the window when the client tries again.
        self.came_back: dict[str, float] = {}
        self.disconnect_reasons: dict[tuple[str, str], str] = {}
        # The server's own (unwrapped) packet writer; ReplicaHooks.use_recovery
        # (web/upstream/registry.py) sets it.
        self.send_eio_packet: Callable[[str, object], None] | None = None
        self.streams = RecoveryStreams(manager, window_seconds=window_seconds,
                                       checkpoint_seconds=self.checkpoint_seconds,
                                       replica=self.replica, clock=clock)

    # -- the handshake (called by web/upstream/install.py's wrappers) --------------------------

    def wants(self, eio_sid: str, namespace: str, auth) -> bool:
        """Whether this CONNECT asks for recovery (it is then `begin`'s). With the log not being
        read (paused, or starting), it waits for it; if the log cannot be read (the broker is
        away), the session is closed so that the client tries again, keeping its pid."""
        if not (namespace in self.namespaces and isinstance(auth, dict)
                and auth.get("recover") is True):
            return False
        pid = auth.get("pid")
        # (its record may not be known yet: it left as the broker went away)
        if isinstance(pid, str) and len(pid) <= MAX_PID_LENGTH and \
                len(self.came_back) < MAX_CAME_BACK:
            self.came_back.setdefault(pid, self.clock())
        self._wait_for_log(lambda: self.position >= 0, START_SECONDS)
        if self.position < 0:
            log.warning("the recovery log is not readable within %.0fs (the broker is away?): "
                        "closing session %s so that its client tries again", START_SECONDS,
                        eio_sid)
            self.server.eio.disconnect(eio_sid)
            raise LogNotReadable(eio_sid)
        return True

    def begin(self, eio_sid: str, namespace: str, auth: dict) -> Client:
        """Before the app's connect handler: the session to restore, or a new one. From here on
        the log greenlet adds what it logs to `client.missed`; the fast path skips the client."""
        key = (eio_sid, namespace)
        # A reader that reads in batches (`pace`) may be behind what the client saw elsewhere.
        offset = parse_offset(auth.get("offset"))
        if offset is not None:
            self._wait_for_log(lambda: self.position >= offset, CATCH_UP_SECONDS)
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

    def _wait_for_log(self, reached: Callable[[], bool], seconds: float) -> None:
        """Wait, at most `seconds`, until the log reader has `reached` where a handshake needs
        it; meanwhile the log is live (read at once, started if paused, never paused)."""
        if reached():
            return
        self.log_wanted += 1
        self.streams.wake.set()
        try:
            deadline = time.monotonic() + seconds
            while not reached() and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            self.log_wanted -= 1

    # -- how the log is read (web/recovery/streams.py) ------------------------------------------

    def live(self) -> bool:
        return bool(self.clients or self.connecting or self.log_wanted)

    def pace(self) -> float:
        return 0.0 if self.live() else IDLE_PACE_SECONDS

    def may_pause(self) -> bool:
        now = time.monotonic()
        if self.live():
            self.live_at = now
            return False
        return now - self.live_at >= PAUSE_AFTER_SECONDS

    def paused(self) -> None:
        """The log is no longer read: what is remembered of it stops being current."""
        self.position = self.memory_from = -1
        self.memory.clear()
        self.memory_sizes.clear()
        self.memory_bytes = 0

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
        away = self.came_back.pop(pid, self.clock()) - left_at(record, self.heartbeats)
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
            earlier = self.remembered(start, client.read_until)
        else:
            earlier = self.streams.read_back(start + 1, client.read_until)
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

    # -- the fast path's skip, rooms and disconnects (web/upstream/install.py) -----------------

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

    def serves(self, eio_sid: str | None, namespace: str) -> bool:
        """Whether this connection's events come from the log (it is recovery-capable)."""
        key = (eio_sid, namespace)
        return key in self.clients or key in self.connecting

    def rooms_changed(self, sid: str, namespace: str) -> None:
        client = self.by_sid.get(namespace, {}).get(sid)
        if client is not None:
            rooms = self.manager.get_rooms(sid, namespace)
            self._record(client, CONNECTED, rooms)
            # In the log after every emit this replica published before it (one outbox).
            self.manager.publish_to_queue(self.streams.log_name, {
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
            key = routing.room_key(client.namespace, room)
            self.wanted_keys[key] -= 1
            if self.wanted_keys[key] <= 0:
                del self.wanted_keys[key]
        for room in new - client.view:
            members.setdefault(room, set()).add(client)
            self.wanted_keys[routing.room_key(client.namespace, room)] += 1
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
        self.manager.publish_to_queue(self.streams.sessions_name, record)

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

    def log_entry(self, offset: int, keys: list[str] | None, body: bytes) -> None:
        """One entry of the log as it came (web/recovery/streams.py): decoded only if one of
        its routing keys is wanted here, or while a client connects (it may be recovering any
        room); otherwise only remembered, for recoveries."""
        if keys is not None and not self.connecting and self.wanted_keys.keys().isdisjoint(keys) \
                and not (self.clients and routing.BROADCAST_KEY in keys):
            if self._advance(offset):
                self.remember(offset, body, len(body))
                metrics.RECOVERY_LOG_PASSED.inc()
            return
        try:
            message = self.manager.json.loads(body)
        except ValueError:
            message = None
        self.logged(offset, message, len(body))

    def _advance(self, offset: int) -> bool:
        """Move to `offset`; False if it was handled already (a consumer that resumed)."""
        if offset <= self.position:
            return False
        if self.position < 0:
            self.memory_from = offset - 1
        self.position = offset
        return True

    def logged(self, offset: int, message, size: int = 0) -> None:
        """One entry of the log, in order, decoded: remembered, and sent to this replica's
        clients."""
        if not self._advance(offset):
            return
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

    def remembered(self, start: int, until: int) -> list[tuple[int, dict]]:
        """The replayable entries in memory after `start`, up to `until`, decoded."""
        entries = []
        for offset, kept in self.memory:
            if start < offset <= until:
                try:
                    message = kept if isinstance(kept, dict) else self.manager.json.loads(kept)
                except ValueError:
                    continue
                if replayable(message):
                    entries.append((offset, message))
        return entries

    def remember(self, offset: int, message: dict | bytes, size: int) -> None:
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
        for pid in [pid for pid, at in self.came_back.items() if now - at > horizon]:
            del self.came_back[pid]

    def run(self) -> None:
        """The log greenlet (web/app.py starts it): reads the streams into this object for good."""
        self.streams.run(self)

    def checkpoint(self) -> None:
        """Every connected session's record again, so that it outlives the stream's retention."""
        for client in list(self.clients.values()):
            self._record(client, CONNECTED, self.manager.get_rooms(client.sid, client.namespace))

    def status(self) -> dict:
        reading = self.position >= 0
        return {"ready": self.streams.bound and (reading or not self.live()),
                "reading_log": reading, "position": self.position,
                "clients": len(self.clients), "sessions_known": len(self.sessions),
                "in_memory": len(self.memory),
                "in_memory_bytes": self.memory_bytes}
