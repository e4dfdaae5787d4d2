"""python-socketio's Admin UI instrumentation, bent to a cluster of replicas and to the registry.

Upstream's InstrumentedServer patches the server, its manager and engine.io's Socket class, and in
development mode reports every emit (an `event_sent` per recipient) and every client event (with
its whole payload) through the message queue, whether or not anyone watches. Here:

* it patches nothing: web/upstream/install.py's wrappers call `event_triggered`, `emitted`,
  `raw_connection`, `pinged`, and the transport counts bytes through `TransportMeter`;
* reports travel as records between replicas (common/broker.py's records exchange), never through
  the Socket.IO exchange, so they stay out of the recovery log and out of stock listeners;
* they are made only while an admin is connected to some replica (each replica with an admin
  renews a lease every WATCH_RENEW_SECONDS), at most REPORTS_PER_SECOND per replica, and a
  payload above MAX_REPORTED_BYTES is shown as its size, not republished;
* when an admin connects, every replica lists its sockets to it, and the server stats name every
  namespace (upstream's skip the class-based ones, /chat here).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from socketio.admin import HOSTNAME, PID, EventBuffer, InstrumentedServer
from socketio.exceptions import ConnectionRefusedError

from common.library_contract import Contract
from web.limits import TokenBucket
from web.upstream.registry import ReplicaHooks

CONTRACT = Contract(
    read_against={"python-socketio": "5.18.1", "python-engineio": "4.15.1"},
    members={
        "socketio.admin.InstrumentedServer.__init__": "(self, sio, auth=None, mode='development', "
                                                     "read_only=False, server_id=None, "
                                                     "namespace='/admin', "
                                                     "server_stats_interval=2)",
        "socketio.admin.InstrumentedServer.instrument": "(self)",  # replaced
        "socketio.admin.InstrumentedServer.uninstrument": "(self)",  # replaced
        "socketio.admin.InstrumentedServer.admin_connect": "(self, sid, environ, "
                                                           "client_auth)",  # replaced
        "socketio.admin.InstrumentedServer.admin_emit": "(self, _, namespace, room_filter, "
                                                        "event, *data)",
        "socketio.admin.InstrumentedServer.serialize_socket": "(self, sid, namespace, "
                                                              "eio_sid=None)",  # replaced
        "socketio.admin.EventBuffer.push": "(self, type, count=1)",
        "socketio.admin.EventBuffer.get_and_clear": "(self)",
        "socketio.admin.HOSTNAME": None,
        "socketio.admin.PID": None,
        "engineio.server.Server._get_socket": "(self, sid)",
    },
    instance_attributes={
        "socketio.admin.InstrumentedServer": ("sio", "auth", "admin_namespace", "read_only",
                                              "server_id", "mode", "server_stats_interval",
                                              "event_buffer"),
        "socketio.server.Server": ("handlers", "namespace_handlers", "environ"),
    },
)

log = logging.getLogger(__name__)

REPORT_KEY = "admin_report"  # records: events for the admins ({"event", "args" or "many", "to"})
WATCH_KEY = "admin_watch"  # records: an admin watches (a lease of WATCH_LEASE_SECONDS)
LIST_KEY = "admin_list_sockets"  # records: list your sockets to this admin ({"to"})
WATCH_LEASE_SECONDS = 30.0
WATCH_RENEW_SECONDS = 10.0
REPORTS_PER_SECOND = 100.0  # per replica; beyond it reports are dropped (counted in the log)
MAX_REPORTED_BYTES = 1024  # an event's data above this is reported as its size
SOCKETS_PER_RECORD = 200  # a replica's socket list goes out in records of at most this many


def now_iso(seconds: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC).isoformat()


def bounded(data) -> object:
    """`data` as reported: itself when small and plain JSON, else a note of what it was. Binary
    data (the /echo namespace takes bytes) is never passed on: records are JSON, and a record
    the publisher cannot encode must not reach it."""
    try:
        size = len(json.dumps(data))
    except (TypeError, ValueError, RecursionError):
        return "[binary or not JSON, not shown]"
    return data if size <= MAX_REPORTED_BYTES else f"[{size} bytes, not shown]"


class TransportMeter:
    """Packets and bytes in and out of every session, for the UI's aggregated events: counted
    per packet (two additions), handed to the event buffer once per stats interval."""

    __slots__ = ("packets_out", "bytes_out", "packets_in", "bytes_in")

    def __init__(self):
        self.packets_out = self.bytes_out = self.packets_in = self.bytes_in = 0

    def sent(self, size: int) -> None:
        self.packets_out += 1
        self.bytes_out += size

    def received(self, size: int) -> None:
        self.packets_in += 1
        self.bytes_in += size

    def move_to(self, buffer: EventBuffer) -> None:
        for name, count in (("packetsOut", self.packets_out), ("bytesOut", self.bytes_out),
                            ("packetsIn", self.packets_in), ("bytesIn", self.bytes_in)):
            if count:
                buffer.push(name, count)
        self.packets_out = self.bytes_out = self.packets_in = self.bytes_in = 0


class AdminReports(InstrumentedServer):
    """The Admin UI's side of one replica. `publish_record(key, body)` reaches the other
    replicas (None: one process, nothing to reach)."""

    def __init__(self, sio, hooks: ReplicaHooks, *, auth, server_id: str, namespace: str,
                 publish_record: Callable[[str, dict], None] | None,
                 clock: Callable[[], float] = time.monotonic):
        self.hooks = hooks
        self.publish_record = publish_record
        self.clock = clock
        self.connected_at: dict[str, float] = {}  # sid -> when it connected (shown as "issued")
        self.local_admins: set[str] = set()
        self.watched_until = float("-inf")  # another replica's admin watches until then
        self.bucket = TokenBucket(rate=REPORTS_PER_SECOND, burst=int(2 * REPORTS_PER_SECOND),
                                  now=clock())
        self.dropped = 0
        self.stats_running = False
        super().__init__(sio, auth=auth, mode="development", server_id=server_id,
                         namespace=namespace)
        self.meter = TransportMeter()
        self.renewing = False
        hooks.admin = self
        hooks.on_room_change(self.room_changed)
        for key, taker in ((REPORT_KEY, self.take_report), (WATCH_KEY, self.take_watch),
                           (LIST_KEY, self.take_list_request)):
            hooks.take_records(key, taker)

    def instrument(self):
        """Upstream's handlers on the admin namespace; the rest comes through the registry."""
        namespace = self.admin_namespace
        self.sio.on("connect", self.admin_connect, namespace=namespace)
        self.sio.on("disconnect", self.admin_disconnected, namespace=namespace)
        self.sio.on("emit", self.admin_emit, namespace=namespace)

    def uninstrument(self):
        self.hooks.admin = None
        self.hooks.transport_meter = None

    # -- who watches ----------------------------------------------------------------------------

    def watching(self) -> bool:
        return bool(self.local_admins) or self.clock() < self.watched_until

    def admin_connect(self, sid, environ, client_auth):
        """Upstream's, with its answers sent to this replica's admin only (upstream emits them
        through the message queue), then every other replica's sockets."""
        if not self.authenticated(client_auth):
            raise ConnectionRefusedError("authentication failed")
        self.local_admins.add(sid)
        if not self.renewing:
            self.renewing = True
            self.sio.start_background_task(self.renew_watch)
        self.start_stats()
        self.sio.start_background_task(self.introduce, sid)

    def authenticated(self, client_auth) -> bool:
        if isinstance(self.auth, dict):
            return client_auth == self.auth
        if isinstance(self.auth, list):
            return client_auth in self.auth
        return bool(self.auth(client_auth))

    def introduce(self, admin_sid: str) -> None:
        self.sio.sleep(0.1)  # upstream's pause: the UI handles events once connected
        features = ["AGGREGATED_EVENTS", "ALL_EVENTS"]
        if not self.read_only:
            features += ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        self.show("config", ({"supportedFeatures": features},), admin_sid)
        # `all_sockets` replaces the UI's list: this replica's first, then the others add theirs.
        self.show("all_sockets", (list(self.local_sockets()),), admin_sid)
        self._publish(LIST_KEY, {"to": admin_sid})

    def admin_disconnected(self, sid, *reason):
        self.local_admins.discard(sid)

    def renew_watch(self) -> None:
        """While this replica has an admin, the others keep reporting."""
        try:
            while self.local_admins:
                self._publish(WATCH_KEY, {"seconds": WATCH_LEASE_SECONDS})
                self.sio.sleep(WATCH_RENEW_SECONDS)
        finally:
            self.renewing = False

    def take_watch(self, key: str, body: dict, sender: str) -> None:
        seconds = min(float(body.get("seconds", 0)), WATCH_LEASE_SECONDS)
        self.watched_until = max(self.watched_until, self.clock() + seconds)
        self.start_stats()

    def start_stats(self) -> None:
        if not self.stats_running:
            self.stats_running = True
            self.hooks.transport_meter = self.meter
            self.sio.start_background_task(self.report_stats)

    def report_stats(self) -> None:
        """Upstream's server_stats every `server_stats_interval`, while someone watches."""
        started = time.time()
        try:
            while self.watching():
                self.sio.sleep(self.server_stats_interval)
                self.show_everywhere("server_stats", (self.server_stats(started),))
        finally:
            self.stats_running = False
            self.hooks.transport_meter = None
            self.event_buffer.get_and_clear()

    def server_stats(self, started: float) -> dict:
        sockets = self.sio.eio.sockets
        manager = self.sio.manager
        namespaces = sorted(set(self.sio.handlers) | set(self.sio.namespace_handlers))
        if self.dropped:
            log.warning("admin UI: %d reports over %g/s not sent", self.dropped,
                        REPORTS_PER_SECOND)
            self.dropped = 0
        return {
            "serverId": self.server_id, "hostname": HOSTNAME, "pid": PID,
            "uptime": time.time() - started,
            "clientsCount": len(sockets),
            "pollingClientsCount": sum(1 for s in list(sockets.values()) if not s.upgraded),
            "aggregatedEvents": self.aggregated_events(),
            "namespaces": [{"name": namespace,
                            "socketsCount": len(manager.rooms.get(namespace, {}).get(None, ()))}
                           for namespace in namespaces],
        }

    def aggregated_events(self) -> list:
        self.meter.move_to(self.event_buffer)
        return self.event_buffer.get_and_clear()

    # -- the sockets list -----------------------------------------------------------------------

    def take_list_request(self, key: str, body: dict, sender: str) -> None:
        admin_sid = body.get("to")
        if not isinstance(admin_sid, str):
            return
        sockets = list(self.local_sockets())
        now = now_iso()
        for start in range(0, len(sockets), SOCKETS_PER_RECORD):
            self._publish(REPORT_KEY, {"event": "socket_connected", "to": admin_sid, "many": [
                [serialized, now] for serialized in sockets[start:start + SOCKETS_PER_RECORD]]})

    def local_sockets(self):
        manager = self.sio.manager
        for namespace in list(manager.get_namespaces()):
            if namespace == self.admin_namespace:
                continue
            for sid, eio_sid in list(manager.get_participants(namespace, None)):
                yield self.serialize_socket(sid, namespace, eio_sid)

    def serialize_socket(self, sid, namespace, eio_sid=None):
        """Upstream's, from the connection times kept here and the trimmed environ."""
        if eio_sid is None:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, namespace)
        try:
            socket = self.sio.eio._get_socket(eio_sid)
            upgraded = socket.upgraded
        except KeyError:
            upgraded = False
        environ = self.sio.environ.get(eio_sid, {})
        connected = self.connected_at.get(sid, 0)
        return {
            "id": sid, "clientId": eio_sid, "nsp": namespace, "data": {},
            "transport": "websocket" if upgraded else "polling",
            "handshake": {
                "address": environ.get("REMOTE_ADDR", ""),
                "headers": {key[5:].lower(): value for key, value in environ.items()
                            if key.startswith("HTTP_")},
                "query": {key: value[0] if len(value) == 1 else value
                          for key, value in parse_qs(environ.get("QUERY_STRING", "")).items()},
                "secure": environ.get("wsgi.url_scheme", "") == "https",
                "url": environ.get("PATH_INFO", ""),
                "issued": connected * 1000,
                "time": now_iso(connected) if connected else "",
            },
            "rooms": self.sio.manager.get_rooms(sid, namespace),
        }

    # -- what happens, reported (called by web/upstream/install.py's wrappers) ----------------

    def raw_connection(self) -> None:
        if self.watching():
            self.event_buffer.push("rawConnection")

    def raw_disconnection(self) -> None:
        if self.watching():
            self.event_buffer.push("rawDisconnection")

    def connected(self, sid: str, namespace: str) -> None:
        """A connection its namespace accepted (refused ones are never remembered: python-socketio
        sends no disconnect for them)."""
        if namespace == self.admin_namespace:
            return
        self.connected_at[sid] = time.time()
        if self.watching() and self.allowed():
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, namespace)
            self.show_everywhere("socket_connected",
                                 (self.serialize_socket(sid, namespace, eio_sid), now_iso()))

    def event_triggered(self, event: str, namespace: str, args: tuple) -> None:
        """A client event or a disconnect (connects: `connected`)."""
        if namespace == self.admin_namespace or not args or event == "connect":
            return
        sid = args[0]
        if event == "disconnect":
            self.connected_at.pop(sid, None)
            if self.watching() and self.allowed():
                reason = args[1] if len(args) > 1 else None
                self.show_everywhere("socket_disconnected", (namespace, sid, reason, now_iso()))
        elif self.watching() and self.allowed():
            # The whole of what the client sent is bounded at once, not each argument.
            self.show_everywhere("event_received",
                                 (namespace, sid, [event, bounded(list(args[1:]))], now_iso()))

    def emitted(self, event: str, data, namespace: str, room, skip_sid) -> None:
        """One `event_sent` per local recipient, as upstream reports, until the rate is spent:
        a broadcast to thousands stops at the first report the bucket refuses."""
        if namespace == self.admin_namespace or not self.watching():
            return
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        shown = [event, bounded(list(data) if isinstance(data, tuple) else data)]
        now = now_iso()
        for sid, _ in self.sio.manager.get_participants(namespace, room):
            if sid in skipped:
                continue
            if not self.allowed():
                return
            self.show_everywhere("event_sent", (namespace, sid, shown, now))

    def pinged(self, eio_sid: str) -> None:
        """Upstream refreshes each socket on every PING (its `_send_ping` patch)."""
        if not self.watching():
            return
        manager = self.sio.manager
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid and namespace != self.admin_namespace and self.allowed():
                self.show_everywhere("socket_connected",
                                     (self.serialize_socket(sid, namespace, eio_sid), now_iso()))

    def room_changed(self, sid, namespace, room, eio_sid, entered) -> None:
        if room is None or room == sid or namespace == self.admin_namespace or \
                not self.watching() or not self.allowed():
            return
        self.show_everywhere("room_joined" if entered else "room_left",
                             (namespace, room, sid, now_iso()))

    # -- reports ---------------------------------------------------------------------------------

    def allowed(self) -> bool:
        """One report within REPORTS_PER_SECOND; the others are counted and logged with the
        next stats."""
        if self.bucket.take(self.clock()):
            return True
        self.dropped += 1
        return False

    def show_everywhere(self, event: str, args: tuple) -> None:
        """Send `event` to the admins of every replica. Callers take from the rate bucket first,
        before they build anything."""
        self.show(event, args, None)
        self._publish(REPORT_KEY, {"event": event, "args": list(args), "to": None})

    def take_report(self, key: str, body: dict, sender: str) -> None:
        """Another replica's report: one event (`args`) or several of one name (`many`)."""
        event, to = body.get("event"), body.get("to")
        if not isinstance(event, str) or not self.local_admins:
            return
        many = body.get("many") if isinstance(body.get("many"), list) else [body.get("args")]
        for args in many:
            if isinstance(args, list):
                self.show(event, tuple(args), to if isinstance(to, str) else None)

    def show(self, event: str, args: tuple, to: str | None) -> None:
        """To this replica's admins only."""
        if self.local_admins and (to is None or to in self.local_admins):
            self.sio.emit(event, args, to=to, namespace=self.admin_namespace, ignore_queue=True)

    def _publish(self, key: str, body: dict) -> None:
        if self.publish_record is not None:
            self.publish_record(key, body)
