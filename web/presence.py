"""Presence: who is connected, per room and across the cluster, as every replica sees it.

Each replica knows its own connections from python-socketio's rooms (the registry's room
listeners, web/upstream/registry.py, report every enter and leave): a connection is in its
namespace's room `None`, a signed-in one also in `user:<id>`, and in the rooms it joined. At most
every FLUSH_SECONDS it publishes what changed to every replica (common/broker.py's records), as
`[namespace, sid, user, rooms]` (or `[namespace, sid]`: gone), and every replica applies every
replica's records, its own included, to one `ClusterView`. A record is a connection's whole state,
so applying one twice or late changes nothing; each message carries its sender's sequence number,
and a replica that missed one (its listener was away), or has just started, asks every replica
for its full list. A replica publishes at least every HEARTBEAT_SECONDS; one not heard of for
EXPIRY_SECONDS is gone (killed, cut off), and its connections leave.

Signed-in users are listed by id, the others counted. The members of a room on each replica get a
`presence` event when users come or go (a user's first connection in, its last out) or the
anonymous count changes: at most one per room per message applied, however fast clients join and
leave, and none for the whole namespace (every client's connect would be everyone's event). The
HTTP API (web/api.py) answers from the view: GET /api/presence, GET /api/users/<id>/connections.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

from common.contract import Event, is_reserved_room, user_room
from web.upstream import emit_here

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0
EXPIRY_SECONDS = 3 * HEARTBEAT_SECONDS + 1
PRESENCE_KEY = "presence"  # the key of its records between replicas (QueueManager.publish_record)
# What one message may carry, about: a full list of 10,000 connections in 50 long rooms each is
# far beyond a broker's message size limit (16 MiB on RabbitMQ 4), so lists go in parts.
MAX_MESSAGE_BYTES = 256 * 1024

USER_ROOM_PREFIX = user_room("")
Key = tuple[str, str | None]  # (namespace, room); room None: the whole namespace


@dataclass
class RoomPresence:
    users: collections.Counter = field(default_factory=collections.Counter)  # id -> connections
    anonymous: int = 0

    def summary(self, max_users: int | None = None) -> dict:
        """Users by id (the first `max_users`, sorted; `more_users` counts the others)."""
        users = sorted(self.users)
        listed = users if max_users is None else users[:max_users]
        return {"users": listed, "anonymous": self.anonymous,
                "connections": sum(self.users.values()) + self.anonymous,
                **({"more_users": len(users) - len(listed)} if max_users is not None else {})}


@dataclass
class ReplicaState:
    id: str  # its broker manager's host_id
    name: str  # its REPLICA_ID, for people
    seq: int
    heard_at: float
    connections: dict[tuple[str, str], tuple[str | None, tuple[str, ...]]] = field(
        default_factory=dict)  # (namespace, sid) -> (user, rooms)
    listing: set[tuple[str, str]] | None = None  # the connections of a full list being received


class Changes:
    """What applying records did to the rooms: users that came or went, rooms whose anonymous
    count changed. A user who came and went within one message did neither, and a count that
    went down and up again did not change."""

    def __init__(self) -> None:
        self.joined: dict[Key, set[str]] = collections.defaultdict(set)
        self.left: dict[Key, set[str]] = collections.defaultdict(set)
        self.anonymous: collections.Counter[Key] = collections.Counter()  # net step per room

    def user(self, key: Key, user: str, came: bool) -> None:
        gone, arrived = (self.left, self.joined) if came else (self.joined, self.left)
        if user in gone[key]:
            gone[key].discard(user)
        else:
            arrived[key].add(user)

    def events(self, view: ClusterView) -> list[tuple[str, str, dict]]:
        """(namespace, room, payload) of each room's `presence` event; none for namespaces."""
        keys = {key for key in (*self.joined, *self.left, *self.anonymous) if key[1] is not None}
        events = []
        for key in sorted(keys):
            joined, left = self.joined.get(key, set()), self.left.get(key, set())
            if not joined and not left and not self.anonymous[key]:
                continue
            now = view.room(*key)
            events.append((key[0], key[1], {
                "room": key[1], "joined": sorted(joined), "left": sorted(left),
                "users": len(now.users), "anonymous": now.anonymous}))
        return events


class ClusterView:
    """Every replica's connections as its records say, indexed by room and by user. No I/O."""

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaState] = {}
        self.rooms: dict[Key, RoomPresence] = {}
        self.by_user: dict[str, set[tuple[str, str, str]]] = {}  # user -> (replica, ns, sid)

    def room(self, namespace: str, room: str | None = None) -> RoomPresence:
        return self.rooms.get((namespace, room)) or RoomPresence()

    def connections_of(self, user: str) -> list[dict]:
        return sorted(({"sid": sid, "namespace": namespace, "replica": self.replicas[replica].name}
                       for replica, namespace, sid in self.by_user.get(user, ())),
                      key=lambda each: (each["namespace"], each["sid"]))

    def apply(self, replica: str, message: dict, now: float, changes: Changes) -> bool:
        """Apply one replica's message; whether the view of it may have a gap (ask for a full
        list). A full list comes in `parts` messages in a row; its last one removes what was
        known of that replica and none of them listed."""
        state = self.replicas.get(replica)
        seq = message["seq"]
        full, part, parts = message.get("full"), message.get("part", 0), message.get("parts", 1)
        follows = state is not None and seq == state.seq + 1
        gap = not follows and not (full and part == 0)
        if state is None:
            state = ReplicaState(replica, message.get("name", replica), seq, now)
            self.replicas[replica] = state
        if full and part == 0:
            state.listing = set()
        elif full and (gap or state.listing is None):
            state.listing = None  # a part is missing: the list cannot remove anything
        state.seq, state.heard_at = seq, now
        for record in message["records"]:
            connection = (record[2], tuple(record[3])) if len(record) == 4 else None
            self._set(state, record[0], record[1], connection, changes)
            if full and state.listing is not None:
                state.listing.add((record[0], record[1]))
        if full and part == parts - 1 and state.listing is not None:
            for namespace, sid in [key for key in state.connections if key not in state.listing]:
                self._set(state, namespace, sid, None, changes)
            state.listing = None
        return gap

    def expire(self, now: float, changes: Changes, keep: str) -> list[str]:
        """Forget the replicas not heard of for EXPIRY_SECONDS (their connections leave); the
        names of those forgotten."""
        gone = [state for replica, state in self.replicas.items()
                if replica != keep and now - state.heard_at > EXPIRY_SECONDS]
        for state in gone:
            for namespace, sid in list(state.connections):
                self._set(state, namespace, sid, None, changes)
            del self.replicas[state.id]
        return [state.name for state in gone]

    def _set(self, state: ReplicaState, namespace: str, sid: str,
             connection: tuple[str | None, tuple[str, ...]] | None, changes: Changes) -> None:
        where = (state.id, namespace, sid)
        old = state.connections.pop((namespace, sid), None)
        if connection is not None:
            state.connections[(namespace, sid)] = connection
        if old is not None and connection is not None and old[0] == connection[0]:
            # The same connection as the same user: only the rooms it entered or left change.
            # A record repeated (a re-join, a full list) then touches no room and tells no one.
            before, after = set(old[1]), set(connection[1])
            self._count(namespace, connection[0], before - after, -1, changes)
            self._count(namespace, connection[0], after - before, +1, changes)
            return
        if old is not None:
            self._count(namespace, old[0], (None, *old[1]), -1, changes)
            self._index_user(where, old[0], present=False)
        if connection is not None:
            self._count(namespace, connection[0], (None, *connection[1]), +1, changes)
            self._index_user(where, connection[0], present=True)

    def _count(self, namespace: str, user: str | None, rooms, step: int,
               changes: Changes) -> None:
        for room in rooms:
            key = (namespace, room)
            presence = self.rooms.setdefault(key, RoomPresence())
            if user is None:
                presence.anonymous += step
                changes.anonymous[key] += step
            else:
                presence.users[user] += step
                count = presence.users[user]
                if (step > 0 and count == 1) or (step < 0 and count == 0):
                    changes.user(key, user, came=step > 0)  # its first connection, or its last
                if count == 0:
                    del presence.users[user]
            if not presence.users and not presence.anonymous:
                del self.rooms[key]

    def _index_user(self, where: tuple[str, str, str], user: str | None, present: bool) -> None:
        if user is None:
            return
        connections = self.by_user.setdefault(user, set())
        if present:
            connections.add(where)
        else:
            connections.discard(where)
            if not connections:
                del self.by_user[user]


class LocalConnection:
    __slots__ = ("eio_sid", "rooms")

    def __init__(self, eio_sid: str):
        self.eio_sid = eio_sid
        self.rooms: set[str] | None = None  # the rooms it joined (not its sid's, not a user's)


class Presence:
    """This replica's side: its connections, what it publishes, the events to its clients."""

    def __init__(self, server, manager, *, namespaces, replica_name: str,
                 clock=time.monotonic):
        self.server = server
        self.manager = manager  # None: one process, no broker (the view is this replica's)
        self.namespaces = frozenset(namespaces)
        self.me = getattr(manager, "host_id", None) or "this-replica"
        self.replica_name = replica_name
        self.clock = clock
        self.view = ClusterView()
        self.local: dict[tuple[str, str], LocalConnection] = {}  # (namespace, sid)
        self.users: dict[str, str] = {}  # eio_sid -> the user its main-namespace token proved
        self.dirty: set[tuple[str, str]] = set()
        self.seq = 0
        self.last_sent = float("-inf")
        self.last_flush = float("-inf")
        self.send_full = True  # the first message lists everything, and asks the others for theirs
        self.ask_for_full = True

    # -- this replica's connections (ReplicaHooks.on_room_change, web/upstream/registry.py) ---

    def room_changed(self, sid: str, namespace: str, room, eio_sid: str | None,
                     entered: bool) -> None:
        if namespace not in self.namespaces or room == sid:
            return
        key = (namespace, sid)
        if room is None:
            if entered:
                self.local[key] = LocalConnection(eio_sid)
            else:
                self.local.pop(key, None)
        elif room.startswith(USER_ROOM_PREFIX):
            if eio_sid is not None:
                self._user_changed(eio_sid, room[len(USER_ROOM_PREFIX):] if entered else None)
            return
        elif is_reserved_room(room) or key not in self.local:
            return
        else:
            connection = self.local[key]
            if entered:
                connection.rooms = connection.rooms or set()
                connection.rooms.add(room)
            elif connection.rooms:
                connection.rooms.discard(room)
        self.dirty.add(key)

    def _user_changed(self, eio_sid: str, user: str | None) -> None:
        """A user's room joined or left: every namespace of that connection is that user's."""
        if user is None:
            self.users.pop(eio_sid, None)
        else:
            self.users[eio_sid] = user
        for namespace in self.namespaces:
            sid = self.server.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and (namespace, sid) in self.local:
                self.dirty.add((namespace, sid))

    def _record(self, key: tuple[str, str]) -> list:
        connection = self.local.get(key)
        if connection is None:
            return list(key)
        return [*key, self.users.get(connection.eio_sid), sorted(connection.rooms or ())]

    def current_view(self) -> ClusterView:
        """The view, for a reader; without a broker (one process, no greenlet) flushed first."""
        if self.manager is None:
            self.flush()
        return self.view

    # -- the messages ---------------------------------------------------------------------------

    def run(self) -> None:
        """The replica's presence greenlet."""
        while True:
            self.server.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                log.exception("presence update failed; retrying")

    def flush(self) -> None:
        now = self.clock()
        changes = Changes()
        if self.dirty or self.send_full or now - self.last_sent >= HEARTBEAT_SECONDS:
            if self.send_full:
                keys, self.dirty = list(self.local), set()
            else:
                keys, self.dirty = sorted(self.dirty), set()
            parts = in_parts([self._record(key) for key in keys])
            for index, records in enumerate(parts):
                self.seq += 1
                message = {"seq": self.seq, "name": self.replica_name, "full": self.send_full,
                           "part": index, "parts": len(parts),
                           "sync": self.ask_for_full and index == 0, "records": records}
                self.view.apply(self.me, message, now, changes)
                if self.manager is not None:
                    self.manager.publish_record(PRESENCE_KEY, message)
            self.send_full = self.ask_for_full = False
            self.last_sent = now
        # A replica that was itself stalled (CPU, a pause) has not read what the others sent
        # meanwhile: it would forget them all and tell its clients their users left, then came
        # back. It waits one flush for its listener to catch up.
        stalled = now - self.last_flush > FLUSH_SECONDS + HEARTBEAT_SECONDS
        self.last_flush = now
        for replica in [] if stalled else self.view.expire(now, changes, keep=self.me):
            log.warning("presence: replica %s not heard of for %.0f s; its connections left",
                        replica, EXPIRY_SECONDS)
        self.deliver(changes)

    def receive(self, key: str, body: dict, replica: str) -> None:
        """Another replica's record (this replica's own are applied when sent, and not
        delivered back to it)."""
        try:
            changes = Changes()
            if self.view.apply(replica, body, self.clock(), changes):
                self.ask_for_full = True
            if body.get("sync"):
                self.send_full = True
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("presence: dropped a malformed message from %s: %r", replica, exc)
            return
        self.deliver(changes)

    def deliver(self, changes: Changes) -> None:
        for namespace, room, payload in changes.events(self.view):
            emit_here(self.server, Event.PRESENCE, payload, namespace, room)


def in_parts(records: list[list]) -> list[list[list]]:
    """Records in runs of at most about MAX_MESSAGE_BYTES of JSON each (at least one run)."""
    parts: list[list[list]] = [[]]
    size = 0
    for record in records:
        record_size = 16 + sum(len(item) + 3 for item in record[:3] if item) + sum(
            len(room) + 3 for room in (record[3] if len(record) == 4 else ()))
        if parts[-1] and size + record_size > MAX_MESSAGE_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(record)
        size += record_size
    return parts
