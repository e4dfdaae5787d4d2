"""The registry of one Socket.IO server's hooks: what the replica adds to the libraries, in one
typed object per server instead of attributes hung on library objects.

Features register here (recovery, presence, the replica-control messages, the Admin UI);
web/upstream/install.py wraps each library method once and dispatches to what is registered at
the time of the call, so the order in which features register does not matter. Library code that
the replica subclasses (LimitedSocket) finds its server's hooks with `hooks_of(server)`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from web.limits import ClientLimits
    from web.recovery import Recovery
    from web.upstream.admin_ui import AdminReports, TransportMeter
    from web.upstream.engineio_session import PingScheduler
    from web.upstream.socketio_server import HandshakeWatch

from common.library_contract import Contract

CONTRACT = Contract(read_against={}, members={})  # reads no library member

log = logging.getLogger(__name__)

MAX_UNKNOWN_KEYS = 100  # record keys remembered as logged


class RoomListener(Protocol):
    def __call__(self, sid: str, namespace: str, room: Any, eio_sid: str | None,
                 entered: bool) -> None: ...


@dataclass(eq=False)
class ReplicaHooks:
    """What the replica keeps per Socket.IO server, and who listens to what."""

    limits: ClientLimits | None = None  # None: a server without the replica's limits
    session_id_prefix: str = ""  # nginx routes a session by it (common/contract.py)
    recovery: Recovery | None = None  # connection state recovery, when on
    admin: AdminReports | None = None  # the Admin UI's reports, when it is enabled
    # Set by install(): one greenlet each per server, both driven by `limits`.
    ping_scheduler: PingScheduler | None = None
    handshake_watch: HandshakeWatch | None = None
    # Counts the Admin UI's packets and bytes; None unless an admin is watching (so free).
    transport_meter: TransportMeter | None = None
    room_listeners: list[RoomListener] = field(default_factory=list)
    record_takers: dict[str, Callable[[str, dict, str], None]] = field(default_factory=dict)
    # The server's own packet writer, before recovery's fast-path skip (set by install()).
    raw_send_eio_packet: Callable[[str, Any], None] | None = None
    # Record keys nobody here takes, each logged once (a replica of another version or setup).
    unknown_keys: set[str] = field(default_factory=set)

    # -- registration ------------------------------------------------------------------------

    def on_room_change(self, listener: RoomListener) -> None:
        """Call `listener(sid, namespace, room, eio_sid, entered)` after every room enter and
        leave of this replica's manager. A connection enters its namespace's room None on
        connect and leaves every room on disconnect, so this sees connections come and go too;
        a leave of a room the sid was not in is no change."""
        self.room_listeners.append(listener)

    def take_records(self, key: str, taker: Callable[[str, dict, str], None]) -> None:
        """Let `taker(key, body, sender)` take the records between replicas carrying `key`
        (common/broker.py's `publish_record`)."""
        if key in self.record_takers:
            raise ValueError(f"records {key!r} already have a taker")
        self.record_takers[key] = taker

    def use_recovery(self, recovery: Recovery) -> None:
        self.recovery = recovery
        recovery.send_eio_packet = self.send_unlogged

        def room_changed(sid, namespace, room, eio_sid, entered):
            if recovery.is_tracked(sid, namespace):
                recovery.rooms_changed(sid, namespace)

        self.on_room_change(room_changed)

    # -- dispatch -----------------------------------------------------------------------------

    def rooms_changed(self, sid: str, namespace: str, room, eio_sid: str | None,
                      entered: bool) -> None:
        for listener in self.room_listeners:
            listener(sid, namespace, room, eio_sid, entered)

    def take_record(self, key: str, body: dict, sender: str) -> None:
        taker = self.record_takers.get(key)
        if taker is None:
            if key not in self.unknown_keys and len(self.unknown_keys) < MAX_UNKNOWN_KEYS:
                self.unknown_keys.add(key)
                log.warning("records %r (from replica %s) have no taker here; ignored", key[:50],
                            sender)
            return
        taker(key, body, sender)

    def pinged(self, eio_sid: str) -> None:
        """A session's PING went out (web/upstream/engineio_session.py's ping_now)."""
        if self.admin is not None:
            self.admin.pinged(eio_sid)

    def send_unlogged(self, eio_sid: str, eio_pkt) -> None:
        """Write a packet to a session outside the recovery log: no offset, no skip."""
        self.raw_send_eio_packet(eio_sid, eio_pkt)


_HOOKS: weakref.WeakKeyDictionary[object, ReplicaHooks] = weakref.WeakKeyDictionary()


def register(sio_server, hooks: ReplicaHooks) -> None:
    """Make `hooks` the ones of `sio_server` and of its Engine.IO server, once: installing a
    server twice would wrap its methods twice."""
    if sio_server in _HOOKS:
        raise RuntimeError("this Socket.IO server has its hooks installed already")
    _HOOKS[sio_server] = hooks
    _HOOKS[sio_server.eio] = hooks


def hooks_of(server) -> ReplicaHooks | None:
    """The hooks of a Socket.IO or Engine.IO server (None: not a replica's server)."""
    return _HOOKS.get(server)
