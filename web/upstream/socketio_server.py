"""python-socketio's Server: what the replica checks of every client message and event, the
half-open sessions it closes, the session environ it keeps, and writing to a room's local members.

web/upstream/install.py installs these on one server; the members they read are below.
"""

from __future__ import annotations

import logging
import threading
import time

from engineio import packet as eio_packet
from socketio import packet as socketio_packet

from common.contract import RESERVED_EVENTS, Event
from common.library_contract import Contract
from web.limits import (
    EVENT_NAME,
    MAX_EVENT_NAME_CHARS,
    MESSAGE_SIZE,
    ClientLimits,
    event_name_problem,
)
from web.upstream.registry import hooks_of

CONTRACT = Contract(
    read_against={"python-socketio": "5.18.1", "python-engineio": "4.15.1"},
    members={
        "socketio.server.Server._handle_eio_message": "(self, eio_sid, data)",
        "socketio.server.Server._handle_event": "(self, eio_sid, namespace, id, data)",
        "socketio.server.Server._send_packet": "(self, eio_sid, pkt)",
        "socketio.server.Server._send_eio_packet": "(self, eio_sid, eio_pkt)",
        "socketio.server.Server.emit": "(self, event, data=None, to=None, room=None, "
                                       "skip_sid=None, namespace=None, callback=None, "
                                       "ignore_queue=False)",
        "socketio.base_manager.BaseManager.get_participants": "(self, namespace, room)",
        "socketio.base_manager.BaseManager.get_namespaces": "(self)",
        "socketio.base_manager.BaseManager.sid_from_eio_sid": "(self, eio_sid, namespace)",
        "socketio.base_manager.BaseManager.initialize": "(self)",
        "engineio.server.Server.disconnect": "(self, sid=None)",
    },
    instance_attributes={
        "socketio.server.Server": ("_binary_packet", "manager_initialized", "manager", "eio",
                                   "packet_class", "environ"),
        "engineio.server.Server": ("sockets", "reason"),
    },
)

log = logging.getLogger(__name__)

# What is read of a session's WSGI environ after its handshake: Flask-SocketIO builds each event's
# request context from it (werkzeug's Request and URL adapter), web/limits.py logs the client's
# address, the Admin UI shows the address, query and URL. Everything else (the WebSocket key and
# version, Accept*, the user agent, cookies: Socket.IO sessions start empty and on_connect fills
# them) is read only during the handshake.
KEPT_ENVIRON_KEYS = frozenset({
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REMOTE_ADDR", "HTTP_HOST", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "wsgi.url_scheme", "flask.app",
})


def trimmed_environ(environ: dict) -> dict:
    """python-socketio keeps every session's WSGI environ (`server.environ[eio_sid]`) until it
    ends: 2 to 3 KB of headers and server objects per connection, of which only
    KEPT_ENVIRON_KEYS are read later."""
    return {key: value for key, value in environ.items() if key in KEPT_ENVIRON_KEYS}


def emit_here(sio_server, event: str, data, namespace: str, room: str) -> None:
    """Emit to this replica's own members of `room` only (each replica sends its own copy),
    recovery-capable clients included: outside the recovery log, so without an offset."""
    members = list(sio_server.manager.get_participants(namespace, room))
    if not members:
        return
    pkt = sio_server.packet_class(socketio_packet.EVENT, namespace=namespace, data=[event, data])
    eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())
    hooks = hooks_of(sio_server)
    # Without recovery nothing skips a packet: the server's writer as it is now (a test client
    # replaces it).
    send = hooks.send_unlogged if hooks is not None and hooks.recovery is not None else \
        sio_server._send_eio_packet
    for _, eio_sid in members:
        send(eio_sid, eio_pkt)


def start_client_manager(sio_server) -> None:
    """Start the client manager (the broker listener) now, not on the replica's first connect."""
    if not sio_server.manager_initialized:
        sio_server.manager_initialized = True
        sio_server.manager.initialize()


# -- every client message and event ------------------------------------------------------------

def guarded_message(sio_server, limits: ClientLimits, handle, eio_sid: str, data) -> None:
    """Socket.IO packets that do not decode are dropped with one warning per connection.

    Upstream raises from `_handle_eio_message`, and engine.io logs a traceback for every such
    message. Binary attachments that would add up to more than MAX_MESSAGE_BYTES end the session.
    """
    waiting_for_attachments = sio_server._binary_packet
    pending = waiting_for_attachments.get(eio_sid)
    if pending is not None and not isinstance(data, (bytes, bytearray)):
        # Attachments are binary; a text message means the announced ones never came.
        # Upstream would take this message for an attachment and lose it.
        waiting_for_attachments.pop(eio_sid, None)
        limits.malformed(eio_sid, "socket.io", "binary packet without its attachments")
        pending = None
    if pending is not None:
        total = len(data) + sum(len(a) for a in pending.attachments)
        if total > limits.max_message_bytes:
            waiting_for_attachments.pop(eio_sid, None)
            limits.offence(MESSAGE_SIZE, eio_sid, f"binary attachments above "
                           f"{limits.max_message_bytes} bytes; disconnected")
            sio_server.eio.disconnect(eio_sid)
            return
    try:
        handle(eio_sid, data)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        waiting_for_attachments.pop(eio_sid, None)
        limits.malformed(eio_sid, "socket.io", exc)
        return
    finally:
        if eio_sid in limits.half_open.deadlines:
            hooks_of(sio_server).handshake_watch.check(eio_sid)
    waiting = waiting_for_attachments.get(eio_sid)
    if waiting is not None and (waiting.attachment_count < 1 or waiting.data is None):
        # Upstream would wait for attachments that were never announced and take the next
        # message for one.
        waiting_for_attachments.pop(eio_sid, None)
        limits.malformed(eio_sid, "socket.io", "binary packet without attachments")


class EventNameCheck:
    """Stands in for the server's `_handle_event`: a client EVENT reaches its handler only if its
    name may be used (web/limits.py); otherwise the sender gets the error as the ack (if it asked
    for one) and as an error_response."""

    def __init__(self, sio_server, limits: ClientLimits):
        self.server = sio_server
        self.limits = limits
        self.handle_event = sio_server._handle_event

    def __call__(self, eio_sid: str, namespace, ack_id, data) -> None:
        problem = event_name_problem(data, RESERVED_EVENTS)
        if problem is None:
            return self.handle_event(eio_sid, namespace, ack_id, data)
        self.limits.offence(EVENT_NAME, eio_sid, f"{problem}; refused")
        name = data[0] if isinstance(data, list) and data and isinstance(data[0], str) else None
        error = {"event": name[:MAX_EVENT_NAME_CHARS] if name else None, "error": problem}
        namespace = namespace or "/"
        if ack_id is not None:
            self.server._send_packet(eio_sid, self.server.packet_class(
                socketio_packet.ACK, namespace=namespace, data=[error], id=ack_id))
        sid = self.server.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None:
            self.server.emit(Event.ERROR_RESPONSE, error, to=sid, namespace=namespace)
        return None


# -- half-open sessions ----------------------------------------------------------------------

class HandshakeWatch:
    """Closes the sessions that connect no Socket.IO namespace within HANDSHAKE_TIMEOUT_SECONDS
    (the policy: web/limits.py's HalfOpenSessions), from one greenlet per server that wakes when
    the oldest is due, like PingScheduler."""

    def __init__(self, sio_server, limits: ClientLimits):
        self.sio_server = sio_server
        self.limits = limits
        self.half_open = limits.half_open
        self.lock = threading.Lock()
        self.running = False

    def opened(self, eio_sid: str) -> None:
        self.half_open.opened(eio_sid)
        with self.lock:
            if self.running:
                return
            self.running = True
        self.sio_server.eio.start_background_task(self.run)

    def still_half_open(self, eio_sid: str) -> bool:
        if eio_sid not in self.sio_server.eio.sockets:
            return False
        manager = self.sio_server.manager
        return all(manager.sid_from_eio_sid(eio_sid, namespace) is None
                   for namespace in list(manager.get_namespaces()))

    def check(self, eio_sid: str) -> None:
        """After a message of a half-open session: forgotten here once it connected a namespace."""
        if not self.still_half_open(eio_sid):
            self.half_open.settled(eio_sid)

    def run(self) -> None:
        while True:
            with self.lock:
                deadline = self.half_open.next_deadline()
                if deadline is None:
                    self.running = False
                    return
            wait = deadline - time.monotonic()
            if wait > 0:
                self.sio_server.eio.sleep(wait)
                continue
            for eio_sid in self.half_open.expired():
                if self.still_half_open(eio_sid):
                    try:
                        self.close(eio_sid)
                    except Exception:  # one broken session must not stop the watch
                        log.exception("closing half-open session %s failed", eio_sid)

    def close(self, eio_sid: str) -> None:
        eio = self.sio_server.eio
        session = eio.sockets.get(eio_sid)
        if session is None:
            return
        self.limits.handshake_timed_out(eio_sid)
        # Not eio.disconnect(): it waits until a polling client fetches its CLOSE packet, which
        # a client that never connected a namespace may never do.
        session.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
        eio.sockets.pop(eio_sid, None)
