"""The one seam to the libraries: every override of a library internal lives here.

The replica's limits (policy in web/limits.py), its session routing and its event metrics need
behaviour that python-engineio, python-socketio, Flask-SocketIO and gevent-websocket offer no hook
for. Each override is a named subclass, installed by one rebinding of the module-level name the
library instantiates, once per process by `apply()` (idempotent; `create_app()` calls it). Values
that belong to one app (its limits) are read from the server or app instance at run time, never
written into classes, so two apps in one process keep their own settings.

Read against these versions; tests/unit/test_upstream_contract.py compares them with the installed
ones and checks that every member below still exists with the same signature, so an upgrade fails
in seconds, naming this module to re-read:

  python-engineio 4.15.1
    engineio.socket.Socket               rebound to LimitedSocket (Server._handle_connect builds
                                         each session through the module-level `socket.Socket`)
      receive(pkt) send(pkt) poll() handle_post_request(environ) _websocket_handler(ws)
      close(wait, abort, reason) schedule_ping() (and what _send_ping does, in ping_now);
      attributes queue, closing, closed, sid, server, upgraded, connected, upgrading, last_ping
    engineio.server.Server.generate_id() overridden per instance (the session-id prefix)
    engineio.server.Server attribute _async (per instance: its "websocket" wrapper class, built
                                         as before and called through its bound __call__)
    engineio.async_drivers.gevent.WebSocketWSGI.__call__(environ, start_response); attribute
                                         environ (emptied once the session runs on WebSocket
                                         but for what Server.handle_request() reads once the
                                         WebSocket ends: BaseServer._cors_headers(environ))
  python-socketio 5.18.1
    socketio.Server._handle_eio_message(eio_sid, data)  wrapped per instance (message guard)
    socketio.Server._handle_event(eio_sid, namespace, id, data)  wrapped per instance (event names)
    socketio.Server._handle_eio_connect(eio_sid, environ)  wrapped per instance and as the
                                         Engine.IO connect handler (the environ kept, trimmed)
    socketio.Server._send_packet(eio_sid, pkt)  to answer a refused event's ack
    socketio.pubsub_manager.PubSubManager._publish(data)  (publish_to_replicas) and
      _handle_disconnect(message)  wrapped per instance (take_control_messages: our messages
      between replicas travel as `disconnect` messages, see control_message)
    socketio.base_manager.BaseManager._generate_ack_id(sid, callback)  wrapped per instance;
      attribute callbacks ({sid: {0: counter, id: callback}})
    connection state recovery (web/recovery.py), wrapped per instance by install_recovery:
      socketio.Server._handle_connect(eio_sid, namespace, data)  (the pid, the sid given back)
      socketio.Server._send_packet  (the CONNECT answer gets its pid)
      socketio.Server._send_eio_packet(eio_sid, eio_pkt)  (the fast path leaves recovering
                                         clients to the log); Server._handle_disconnect(eio_sid,
                                         namespace, reason=None) (the reason)
      engineio.server.Server.generate_id  (BaseManager.pre_connect(eio_sid, namespace) takes the
                                         sid from it: a recovered client's comes back)
      socketio.base_manager.BaseManager.basic_enter_room(sid, namespace, room, eio_sid=None)
      basic_leave_room(sid, namespace, room) (both through watch_rooms)
      basic_disconnect(sid, namespace, **kwargs)
      get_rooms(sid, namespace); attribute rooms ({namespace: {room: bidict(sid: eio_sid)}})
      socketio.packet.Packet.reconstruct_binary(data, attachments)
    presence (web/presence.py): basic_enter_room and basic_leave_room wrapped per instance
      (watch_rooms); emit_here writes one encoded packet to a room's local members with
      _send_eio_packet (recovery's unwrapped one), built with attribute Server.packet_class
    socketio.Server._binary_packet       binary packets waiting for their attachments
    socketio.Server.manager_initialized  set to start the client manager with the replica
  Flask-SocketIO 5.7.0
    flask_socketio.SocketIO._handle_event(handler, message, namespace, sid, *args)  (then drops
      the "werkzeug.request" werkzeug leaves in the session's environ, found through
      socketio.base_manager.BaseManager.eio_sid_from_sid(sid, namespace))
    flask_socketio.Namespace.trigger_event(event, *args)  (AnsweringNamespace)
  gevent-websocket 0.10.1
    geventwebsocket.handler.WebSocket    rebound to CappedWebSocket (the handler instantiates the
                                         module-level name for every upgrade)
      read_frame() receive() close(code, message) send_frame(message, opcode)
      validate_utf8(payload) (skipped: read_message() decodes strictly);
      attributes stream, raw_read, raw_write, environ, handler, closed; Header.decode_header
    geventwebsocket.handler.WebSocketHandler.upgrade_websocket()  (ReplicaWebSocketHandler, the
                                         handler class of web/gunicorn_worker.py's ReplicaWorker)
      and run_websocket() (replaced: upstream's, without server.clients, the app called inline);
      geventwebsocket.websocket.Stream (its read slot, replaced by SocketReader.read)
    engineio's WebSocket wrapper `_sock` (gevent-websocket's WebSocket) -> .handler.socket
  gevent 26.9.0
    gevent.pywsgi.WSGIHandler.__init__(sock, address, server, rfile=None)  (the read buffer);
      attributes rfile, socket, environ, application, headers, response_headers, websocket:
      once upgraded, nothing reads headers or response_headers, and a closed rfile makes
      handle_one_request() end the connection after the WebSocket
"""

from __future__ import annotations

import collections
import logging
import os
import socket as stdlib_socket
import struct
import threading
import time

import engineio.socket
import flask_socketio
import gevent
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from geventwebsocket import handler as gws_handler
from geventwebsocket.exceptions import ProtocolError
from geventwebsocket.websocket import Header, WebSocket, WebSocketError
from socketio import packet as socketio_packet

from common import metrics
from common.contract import RESERVED_EVENTS, Event
from web.limits import (
    EVENT_NAME,
    EVENT_RATE,
    MAX_EVENT_NAME_CHARS,
    MESSAGE_SIZE,
    OUTGOING_BUFFER,
    PENDING_ACKS,
    ClientLimits,
    engineio_frame_error,
    event_name_problem,
    packet_size,
    refuse_new_session,
)

log = logging.getLogger(__name__)

VERSIONS_READ = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "flask-socketio": "5.7.0",
    "gevent-websocket": "0.10.1",
    "gevent": "26.9.0",
}

# Every library member the overrides below rely on, with the signature it had when read (None for
# an attribute or a class). tests/unit/test_upstream_contract.py checks each against the installed
# library.
MEMBERS_READ = {
    "engineio.socket.Socket.receive": "(self, pkt)",
    "engineio.socket.Socket.send": "(self, pkt)",
    "engineio.socket.Socket.poll": "(self)",
    "engineio.socket.Socket.handle_post_request": "(self, environ)",
    "engineio.socket.Socket._websocket_handler": "(self, ws)",
    "engineio.socket.Socket.close": "(self, wait=True, abort=False, reason=None)",
    "engineio.socket.Socket.schedule_ping": "(self)",
    "engineio.socket.Socket._send_ping": "(self)",
    "engineio.server.Server.generate_id": "(self)",
    "engineio.base_server.BaseServer._cors_headers": "(self, environ)",
    "socketio.server.Server._handle_eio_message": "(self, eio_sid, data)",
    "socketio.server.Server._handle_event": "(self, eio_sid, namespace, id, data)",
    "socketio.server.Server._send_packet": "(self, eio_sid, pkt)",
    "socketio.server.Server._handle_eio_connect": "(self, eio_sid, environ)",
    "socketio.base_manager.BaseManager.eio_sid_from_sid": "(self, sid, namespace)",
    "engineio.async_drivers.gevent.WebSocketWSGI.__call__": "(self, environ, start_response)",
    "geventwebsocket.handler.WebSocketHandler.run_websocket": "(self)",
    "geventwebsocket.websocket.Stream": None,
    "socketio.base_manager.BaseManager._generate_ack_id": "(self, sid, callback)",
    "socketio.server.Server._handle_connect": "(self, eio_sid, namespace, data)",
    "socketio.server.Server._send_eio_packet": "(self, eio_sid, eio_pkt)",
    "socketio.server.Server._handle_disconnect": "(self, eio_sid, namespace, reason=None)",
    "socketio.base_manager.BaseManager.pre_connect": "(self, eio_sid, namespace)",
    "socketio.base_manager.BaseManager.basic_enter_room": "(self, sid, namespace, room, "
                                                          "eio_sid=None)",
    "socketio.base_manager.BaseManager.basic_leave_room": "(self, sid, namespace, room)",
    "socketio.base_manager.BaseManager.basic_disconnect": "(self, sid, namespace, **kwargs)",
    "socketio.base_manager.BaseManager.get_rooms": "(self, sid, namespace)",
    "socketio.packet.Packet.reconstruct_binary": "(data, attachments)",
    "socketio.pubsub_manager.PubSubManager._publish": "(self, data)",
    "socketio.pubsub_manager.PubSubManager._handle_disconnect": "(self, message)",
    "geventwebsocket.websocket.WebSocket.validate_utf8": "(self, payload)",
    "geventwebsocket.websocket.WebSocket.read_message": "(self)",
    "flask_socketio.SocketIO._handle_event": "(self, handler, message, namespace, sid, *args)",
    "flask_socketio.Namespace.trigger_event": "(self, event, *args)",
    "geventwebsocket.websocket.WebSocket.read_frame": "(self)",
    "geventwebsocket.websocket.WebSocket.receive": "(self)",
    "geventwebsocket.websocket.WebSocket.close": "(self, code=1000, message=b'')",
    "geventwebsocket.websocket.WebSocket.send_frame": "(self, message, opcode)",
    "geventwebsocket.websocket.Header.decode_header": "(stream)",
    "geventwebsocket.handler.WebSocketHandler.upgrade_websocket": "(self)",
    "geventwebsocket.handler.WebSocket": None,
    "gevent.pywsgi.WSGIHandler.__init__": "(self, sock, address, server, rfile=None)",
}
# Attributes of instances (not visible on the classes), found by building one in the test.
INSTANCE_ATTRIBUTES_READ = {
    "engineio.socket.Socket": ("queue", "closing", "closed", "sid", "server", "upgraded",
                               "connected", "upgrading", "last_ping"),
    "socketio.server.Server": ("_binary_packet", "manager_initialized", "manager", "eio",
                               "packet_class"),
    "socketio.base_manager.BaseManager": ("callbacks", "rooms"),
    "engineio.server.Server": ("_async",),
}

HALF_OPEN_REFUSAL = (b'{"error": "this replica holds too many sessions that have not connected; '
                     b'retry shortly"}')
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # engine.io's own default, for a WebSocket outside our apps


def apply() -> None:
    """Install the subclasses below in the libraries, once per process."""
    engineio.socket.Socket = LimitedSocket
    gws_handler.WebSocket = CappedWebSocket


def client_limits_of(application) -> ClientLimits | None:
    """The limits of the Flask app that serves a connection (None for any other WSGI app)."""
    return getattr(application, "extensions", {}).get("client_limits")


def install_limits(sio_server, limits: ClientLimits) -> None:
    """Make this Socket.IO server's sessions and messages obey `limits`."""
    sio_server.eio.client_limits = limits
    sio_server.eio.ping_scheduler = PingScheduler(sio_server.eio)
    handle = sio_server._handle_eio_message
    sio_server.eio.on("message", lambda eio_sid, data: _guarded_message(
        sio_server, limits, handle, eio_sid, data))
    sio_server._handle_event = EventNameCheck(sio_server, limits)
    manager = sio_server.manager
    manager._generate_ack_id = BoundedAcks(manager, limits)
    keep_trimmed_environ(sio_server)
    watch = HandshakeWatch(sio_server, limits)
    sio_server.eio.handshake_watch = watch
    limits.still_half_open = watch.still_half_open
    eio_async = sio_server.eio._async
    if "websocket" in eio_async:
        sio_server.eio._async = {**eio_async, "websocket": inline_websocket_wrapper(eio_async)}


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


ENVIRON_LOGGED = ("REMOTE_ADDR", "HTTP_X_REAL_IP", "QUERY_STRING")  # by web/limits.py


def trimmed_environ(environ: dict) -> dict:
    return {key: value for key, value in environ.items() if key in KEPT_ENVIRON_KEYS}


def keep_trimmed_environ(sio_server) -> None:
    """python-socketio keeps every session's WSGI environ (`server.environ[eio_sid]`) until it
    ends: 2 to 3 KB of headers and server objects per connection, of which only KEPT_ENVIRON_KEYS
    are read later. It keeps those. (The Admin UI wraps `_handle_eio_connect` and calls the
    instance's, so both the Engine.IO handler and the instance attribute are replaced.)"""
    handle_eio_connect = sio_server._handle_eio_connect

    def connect(eio_sid, environ):
        watch = getattr(sio_server.eio, "handshake_watch", None)
        if watch is not None:
            watch.opened(eio_sid)
        return handle_eio_connect(eio_sid, trimmed_environ(environ))

    sio_server._handle_eio_connect = connect
    sio_server.eio.on("connect", connect)


def inline_websocket_wrapper(eio_async: dict):
    """engine.io calls its WebSocket wrapper object (`ws(environ, start_response)`), and every call
    of an object's `__call__` is one more C-level interpreter frame under the session's blocking
    read, which greenlet saves to the heap for every idle connection. A bound method is called
    inline by CPython 3.11."""
    wrapper_class = eio_async["websocket"]

    def websocket(handler, server):
        return wrapper_class(handler, server).__call__

    return websocket


def publish_to_replicas(manager, message: dict) -> bool:
    """Put a manager message on the fan-out exchange, for every replica's listener (this one's
    too); False when there is no message queue (one process: nothing to reach)."""
    publish = getattr(manager, "_publish", None)
    if publish is None:
        return False
    publish(message)
    return True


# Messages between replicas of our own (web/api.py's replica control, web/presence.py's records)
# ride the fan-out exchange as python-socketio `disconnect` messages that carry their body under
# a key of their own instead of a sid: its listener hands every `disconnect` message (except the
# sender's own, by host_id) to `_handle_disconnect`, where `take_control_messages` takes them.

def control_message(key: str, body: dict, host_id: str, namespace: str = "/") -> dict:
    return {"method": "disconnect", "sid": None, "namespace": namespace, key: body,
            "host_id": host_id}


def take_control_messages(manager, key: str, act) -> None:
    """Let `act` take the control messages carrying `key`; every other one goes on to
    python-socketio (or to the taker installed before)."""
    handle = getattr(manager, "_handle_disconnect", None)
    if handle is None:
        return  # no message queue: control is carried out locally

    def handle_disconnect(message: dict) -> None:
        if isinstance(message.get(key), dict):
            act(message)
        else:
            handle(message)

    manager._handle_disconnect = handle_disconnect


def prefix_session_ids(eio_server, prefix: str) -> None:
    """Engine.IO session ids start with `prefix`, which nginx routes by (see web/__init__.py)."""
    random_id = eio_server.generate_id
    eio_server.generate_id = lambda: prefix + random_id()


def install_recovery(sio_server, recovery) -> None:
    """Connection state recovery (policy in web/recovery.py): the pid in the CONNECT answer, the
    sid given back, the fast path leaving recovery-capable clients to the log greenlet, and the
    rooms and disconnects it must know of."""
    handle_connect = sio_server._handle_connect
    send_packet = sio_server._send_packet
    send_eio_packet = sio_server._send_eio_packet
    handle_disconnect = sio_server._handle_disconnect
    generate_id = sio_server.eio.generate_id
    manager = sio_server.manager
    basic_disconnect = manager.basic_disconnect
    recovery.send_eio_packet = send_eio_packet
    sio_server.send_outside_recovery_log = send_eio_packet  # emit_here's writer

    def connect(eio_sid, namespace, data):
        ns = namespace or "/"
        if not recovery.wants(ns, data):
            return handle_connect(eio_sid, namespace, data)
        client = recovery.begin(eio_sid, ns, data)
        try:
            return handle_connect(eio_sid, namespace, data)
        finally:
            recovery.end(client)

    def answer(eio_sid, pkt):
        if pkt.packet_type == socketio_packet.CONNECT and recovery.connecting and isinstance(
                pkt.data, dict):
            client = recovery.connecting.get((eio_sid, pkt.namespace or "/"))
            if client is not None and not client.answered:
                client.answered = True

                def send_answer(extra: dict) -> None:
                    pkt.data = {**pkt.data, **extra}
                    send_packet(eio_sid, pkt)

                return recovery.answered(client, pkt.data["sid"], send_answer)
        return send_packet(eio_sid, pkt)

    def send_eio(eio_sid, eio_pkt):
        if recovery.eio_sids and recovery.served_by_log(eio_sid, eio_pkt.data):
            return None
        return send_eio_packet(eio_sid, eio_pkt)

    def disconnect(eio_sid, namespace, reason=None):
        ns = namespace or "/"
        sid = manager.sid_from_eio_sid(eio_sid, ns)
        if sid is not None and recovery.is_tracked(sid, ns):
            recovery.disconnecting(sid, ns, reason)
        return handle_disconnect(eio_sid, namespace, reason)

    def room_changed(sid, namespace, room, eio_sid, entered):
        if recovery.is_tracked(sid, namespace):
            recovery.rooms_changed(sid, namespace)

    def disconnect_sid(sid, namespace, **kwargs):
        if recovery.is_tracked(sid, namespace):  # forgotten first: the leaves below are silent
            recovery.disconnected(sid, namespace, manager.get_rooms(sid, namespace))
        return basic_disconnect(sid, namespace, **kwargs)

    sio_server._handle_connect = connect
    sio_server._send_packet = answer
    sio_server._send_eio_packet = send_eio
    sio_server._handle_disconnect = disconnect
    sio_server.eio.generate_id = lambda: recovery.forced_sid() or generate_id()
    watch_rooms(sio_server, room_changed)
    manager.basic_disconnect = disconnect_sid


def watch_rooms(sio_server, on_change) -> None:
    """Call `on_change(sid, namespace, room, eio_sid, entered)` after every room enter and leave
    of this replica's manager (recovery's room views, web/presence.py). A connection enters its
    namespace's room None on connect and leaves every room on disconnect, so this sees
    connections come and go too; a leave of a room the sid was not in is no change."""
    manager = sio_server.manager
    basic_enter_room = manager.basic_enter_room
    basic_leave_room = manager.basic_leave_room

    def enter_room(sid, namespace, room, eio_sid=None):
        basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        on_change(sid, namespace, room, manager.rooms[namespace][room].get(sid), True)

    def leave_room(sid, namespace, room):
        eio_sid = manager.rooms.get(namespace, {}).get(room, {}).get(sid)
        basic_leave_room(sid, namespace, room)
        if eio_sid is not None:
            on_change(sid, namespace, room, eio_sid, False)

    manager.basic_enter_room = enter_room
    manager.basic_leave_room = leave_room


def emit_here(sio_server, event: str, data, namespace: str, room: str) -> None:
    """Emit to this replica's own members of `room` only (each replica sends its own copy),
    recovery-capable clients included: outside the recovery log, so without an offset."""
    members = list(sio_server.manager.get_participants(namespace, room))
    if not members:
        return
    pkt = sio_server.packet_class(socketio_packet.EVENT, namespace=namespace, data=[event, data])
    eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())
    send = getattr(sio_server, "send_outside_recovery_log", sio_server._send_eio_packet)
    for _, eio_sid in members:
        send(eio_sid, eio_pkt)


def start_client_manager(sio_server) -> None:
    """Start the client manager (the broker listener) now, not on the replica's first connect."""
    if not sio_server.manager_initialized:
        sio_server.manager_initialized = True
        sio_server.manager.initialize()


# -- Flask-SocketIO --------------------------------------------------------------------------------

class ReplicaSocketIO(flask_socketio.SocketIO):
    """Flask-SocketIO with one place that sees every client event, for metrics and to drop what
    an event's request context leaves in the session's environ."""

    def _handle_event(self, handler, message, namespace, sid, *args):
        if message not in ("connect", "disconnect"):
            metrics.EVENTS_RECEIVED.labels(namespace or "/").inc()
        try:
            return super()._handle_event(handler, message, namespace, sid, *args)
        finally:
            # werkzeug's Request puts itself in the environ it reads (populate_request), so the
            # session's kept environ would hold its last event's request for as long as it lives.
            environ = self.server.environ.get(self.server.manager.eio_sid_from_sid(sid, namespace))
            if environ is not None:
                environ.pop("werkzeug.request", None)


class AnsweringNamespace(flask_socketio.Namespace):
    """A class-based namespace that answers events it has no `on_<event>` method for.

    Flask-SocketIO drops them silently; here they go to `unknown_event()` through the normal
    dispatch (so the namespace's error handler answers the client), as '/' does with its
    catch-all handler.
    """

    def trigger_event(self, event, *args):
        if event in ("connect", "disconnect") or hasattr(self, f"on_{event or ''}"):
            return super().trigger_event(event, *args)
        return self.socketio._handle_event(self.unknown_event, event, self.namespace, *args)

    def unknown_event(self, *args):
        raise NotImplementedError


# -- python-socketio: undecodable messages ---------------------------------------------------------

def _guarded_message(sio_server, limits: ClientLimits, handle, eio_sid: str, data) -> None:
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
            sio_server.eio.handshake_watch.check(eio_sid)
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


class BoundedAcks:
    """Stands in for the client manager's `_generate_ack_id`: upstream keeps the callback of a
    server-to-client call (and whatever it holds) until the client answers, which a hostile
    client never does. Here a connection has at most MAX_PENDING_ACKS waiting, each for at most
    ACK_TIMEOUT_SECONDS; a late answer then finds nothing and is ignored (upstream's rule)."""

    def __init__(self, manager, limits: ClientLimits):
        self.manager = manager
        self.limits = limits
        self.generate = manager._generate_ack_id

    def __call__(self, sid: str, callback) -> int:
        ack_id = self.generate(sid, PendingAck(callback))
        pending = self.manager.callbacks[sid]  # {0: the id counter, id: callback, ...}, in order
        if len(pending) <= 2:
            return ack_id
        horizon = time.monotonic() - self.limits.ack_timeout
        waiting = [key for key in pending if key]
        expired = [key for key in waiting if pending[key].issued < horizon]
        excess = waiting[:max(0, len(waiting) - self.limits.max_pending_acks)]
        for key in set(expired) | set(excess):
            del pending[key]
        if excess:
            self.limits.offence(PENDING_ACKS, sid, f"{len(waiting)} calls unanswered; forgot the "
                                f"oldest {len(excess)}")
        return ack_id


class PendingAck:
    __slots__ = ("callback", "issued")

    def __init__(self, callback):
        self.callback = callback
        self.issued = time.monotonic()

    def __call__(self, *args):
        return self.callback(*args)


# -- python-engineio: one session ---------------------------------------------------------------

class LimitedSocket(engineio.socket.Socket):
    """engine.io's session with the replica's per-client limits (rate, outgoing cap, malformed
    packets) and, once the client is on WebSocket, a direct write path (`WebSocketWriter`).

    Upstream queues every packet and a writer greenlet per client wakes for each one, waits on
    its queue with a new gevent Timeout per wait, and lets gevent-websocket build and write a
    frame per client: about half of a replica's CPU under fan-out. Here a WebSocket client's
    packets are written from the greenlet that sends them, one non-blocking write of a frame
    built once per broadcast; only what the kernel does not take is queued, in order. Polling
    clients, and a client until its upgrade completes, keep upstream's queue.

    A session of a server without `client_limits` behaves exactly as upstream.
    """

    def __init__(self, server, sid):
        super().__init__(server, sid)
        self.limits: ClientLimits | None = getattr(server, "client_limits", None)
        self.event_bucket = self.limits.event_bucket() if self.limits is not None else None
        self.outgoing_bytes = 0  # queued for this client and not yet handed to its transport
        self.dropping = False  # over the outgoing cap: being cut off
        self.transport_ws = None  # engine.io's WebSocket wrapper that carries the session
        self.writer: WebSocketWriter | None = None  # the direct path, once on WebSocket

    def receive(self, pkt):
        # Every packet counts, not only MESSAGEs: a flood of NOOPs or PONGs costs as much.
        limits = self.limits
        if limits is not None:
            if self.closing or self.closed:
                raise eio_exceptions.SocketIsClosedError()
            if not self.event_bucket.take():
                limits.offence(EVENT_RATE, self.sid,
                               f"more than {limits.event_burst} messages at once or "
                               f"{limits.event_rate:g}/s sustained; disconnected")
                # A CLOSE packet (well-behaved clients then do not reconnect at once), and the
                # error ends engine.io's read loop now: a reader whose socket always has data
                # never yields, so it must stop reading rather than drop what it reads.
                self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT)
                raise eio_exceptions.SocketIsClosedError()
        return super().receive(pkt)

    def send(self, pkt):
        writer = self.writer
        if writer is not None:
            if self.dropping or not self.check_ping_timeout():
                return None
            writer.write(websocket_frame(pkt))
            if not self.closing and self.limits.outgoing_exceeded(writer.pending_frames,
                                                                  writer.pending_bytes):
                self.cut_slow_reader(writer.pending_frames, writer.pending_bytes)
            return None
        limits = self.limits
        if limits is None or self.closing or self.closed:
            return super().send(pkt)
        if self.dropping:
            return None
        self.outgoing_bytes += packet_size(pkt)
        if limits.outgoing_exceeded(self.queue.qsize(), self.outgoing_bytes):
            self.cut_slow_reader(self.queue.qsize(), self.outgoing_bytes)
            return None
        return super().send(pkt)

    def cut_slow_reader(self, packets: int, queued_bytes: int) -> None:
        self.dropping = True
        self.limits.offence(OUTGOING_BUFFER, self.sid, f"{packets} packets, {queued_bytes} bytes "
                            "waiting: not reading; dropped")
        # Not here: send() runs inside someone else's emit; closing triggers handlers.
        self.server.start_background_task(self.drop_slow_reader)

    def poll(self):
        packets = super().poll()
        if self.outgoing_bytes:
            self.outgoing_bytes = max(0, self.outgoing_bytes - sum(map(packet_size, packets)))
        return packets

    def close(self, wait=True, abort=False, reason=None):
        writer = self.writer
        if writer is None:
            return super().close(wait=wait, abort=abort, reason=reason)
        # Nothing polls the queue on the direct path, so upstream's wait (queue.join()) would
        # never end: wait for the writer instead. The CLOSE packet, if any, goes out through it.
        super().close(wait=False, abort=abort, reason=reason)
        writer.close_when_flushed(self.transport_ws)
        if wait:
            writer.wait_flushed(self.server.ping_timeout)

    def handle_post_request(self, environ):
        limits = self.limits
        if limits is None:
            return super().handle_post_request(environ)
        # Upstream answers an EngineIOError with 400 after a disconnect that waits for the client
        # to poll its CLOSE packet (up to the ping timeout, holding the request); other errors
        # (undecodable bodies) it logs with a traceback and answers 200. Here both end the session
        # at once and answer 400.
        try:
            return super().handle_post_request(environ)
        except eio_exceptions.EngineIOError as exc:
            if isinstance(exc, eio_exceptions.ContentTooLongError):
                limits.offence(MESSAGE_SIZE, self.sid, f"a polling body above "
                               f"{limits.max_message_bytes} bytes; disconnected")
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
            limits.malformed(self.sid, "engine.io", exc)
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise eio_exceptions.UnknownPacketError(str(exc)) from exc

    def _websocket_handler(self, ws):
        """Upstream's WebSocket session (the upgrade handshake, then the read loop), with every
        message checked before engine.io decodes it and the direct writer instead of the writer
        greenlet."""
        limits = self.limits
        if limits is None:
            return super()._websocket_handler(ws)

        def wait():
            data = ws.wait()
            if data and len(data) > self.server.max_http_buffer_size:
                raise ValueError("packet is too large")
            problem = engineio_frame_error(data)
            if problem is None:
                return data
            limits.malformed(self.sid, "engine.io", problem)
            return None  # taken as the client closing

        # A client may open two WebSockets for one session while upgrading: the first whose
        # upgrade completes carries the session. Upstream refuses any upgrade request once the
        # session is upgraded (Server.handle_request, Socket._upgrade_websocket); one that was
        # already waiting here when the other completed is refused at its next step, so it never
        # replaces the writer and transport_ws that close() and drop_slow_reader() act on.
        if self.connected:  # an upgrade from polling: the probe, then the UPGRADE packet
            self.upgrading = True  # upstream holds polling sends meanwhile
            probe = wait()
            probe = probe and eio_packet.Packet(encoded_packet=probe)
            if self.upgraded or not probe or probe.packet_type != eio_packet.PING or \
                    probe.data != "probe":
                self.upgrading = False
                return []
            ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            upgrade = wait()
            if self.upgraded or upgrade is None or \
                    eio_packet.Packet(encoded_packet=upgrade).packet_type != eio_packet.UPGRADE:
                self.upgrading = False
                return []
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        # From now on packets go straight to the WebSocket; what was queued before goes first.
        # No greenlet switch happens between taking the queue and installing the writer.
        writer = WebSocketWriter(ws._sock.handler.socket)
        if isinstance(ws._sock, CappedWebSocket):
            ws._sock.writer = writer
        for pkt in self.take_queued():
            writer.write(websocket_frame(pkt))
        self.writer = writer
        self.transport_ws = ws
        self.queue = NO_QUEUE  # ~2.5 KB per connection that nothing reads any more
        release_handshake_environ(ws)
        if self.closed:
            writer.close_when_flushed(ws)

        while True:
            try:
                data = wait()
            except Exception as exc:
                if not self.closed:
                    self.server.logger.info('%s: Unexpected error "%s", closing connection',
                                            self.sid, exc)
                break
            if data is None:  # the client closed
                break
            try:
                self.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
                break
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        writer.wait_flushed(self.server.ping_timeout)
        return []

    def schedule_ping(self):
        scheduler = getattr(self.server, "ping_scheduler", None)
        if scheduler is None:
            return super().schedule_ping()
        if self.last_ping:  # upstream's rule: one PING in flight at a time
            self.last_ping = None
            scheduler.schedule(self)

    def ping_now(self) -> None:
        """What upstream's `_send_ping` does after its sleep."""
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.send(eio_packet.Packet(eio_packet.PING))

    def take_queued(self) -> list:
        """Everything queued for this client, without blocking (a None ends the session)."""
        packets = []
        empty = self.server.get_queue_empty_exception()
        while True:
            try:
                pkt = self.queue.get(block=False)
            except empty:
                return packets
            self.queue.task_done()
            if pkt is not None:
                packets.append(pkt)

    def drop_slow_reader(self) -> None:
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
        websocket = getattr(self.transport_ws, "_sock", None)
        if isinstance(websocket, CappedWebSocket):
            websocket.abort()


# When the WebSocket ends, engine.io's Server.handle_request() returns from the upgrade request:
# it builds that request's (unsent) HTTP answer from Flask-SocketIO's copy of its environ, and
# BaseServer._cors_headers() reads REQUEST_METHOD there without a default (a KeyError traceback
# for every upgraded session that ended). Every other key it reads with .get() or `in`; without
# HTTP_ORIGIN it does not ask the origin check, which could not decide without the Host headers.
ENVIRON_READ_WHEN_WEBSOCKET_ENDS = ("REQUEST_METHOD",)


def release_handshake_environ(ws) -> None:
    """The upgrade request's environ is held, until the WebSocket ends, by the frames under the
    read loop: gevent's original and Flask-SocketIO's copy of it (python-socketio keeps its own
    trimmed one). They are emptied in place but for what is read of them later: the keys its size
    limit logs (web/limits.py's websocket_too_big) in the WebSocket's, engine.io's at the end in
    Flask-SocketIO's."""
    websocket = getattr(ws, "_sock", None)
    environ = getattr(ws, "environ", None)
    if not isinstance(websocket, CappedWebSocket) or environ is None:
        return
    original = websocket.environ
    websocket.environ = {key: environ[key] for key in ENVIRON_LOGGED if key in environ}
    read_at_the_end = {key: environ[key] for key in ENVIRON_READ_WHEN_WEBSOCKET_ENDS
                       if key in environ}
    for handshake_environ in (environ, original):
        if handshake_environ is not None:
            handshake_environ.clear()
    environ.update(read_at_the_end)


class _NoQueue:
    """A session's queue once its direct writer owns the WebSocket: upstream still puts a None
    in it on close (to wake a writer greenlet that no longer exists) and nothing else uses it
    (polling requests of an upgraded session are answered NOOP without reading the queue)."""

    def put(self, item) -> None:
        pass

    def qsize(self) -> int:
        return 0

    def join(self) -> None:
        pass


NO_QUEUE = _NoQueue()


class PingScheduler:
    """Sends each session's PING when it is due, from one greenlet per server.

    Upstream spawns a greenlet per session for every ping cycle, which sleeps through the ping
    interval holding its stack: about 6 KB per connection, and a spawn per client every 25 s.
    Every wait is `ping_interval` long, so sessions become due in the order they were scheduled:
    a deque is the whole timetable.
    """

    SLACK = 0.05  # PINGs due this close together go out in one wake-up

    def __init__(self, server):
        self.server = server
        self.due: collections.deque[tuple[float, LimitedSocket]] = collections.deque()
        self.lock = threading.Lock()
        self.running = False

    def schedule(self, session: LimitedSocket) -> None:
        with self.lock:
            self.due.append((time.monotonic() + self.server.ping_interval, session))
            if self.running:
                return
            self.running = True
        self.server.start_background_task(self.run)

    def run(self) -> None:
        while True:
            with self.lock:
                if not self.due:
                    self.running = False
                    return
                wait = self.due[0][0] - time.monotonic()
            if wait > 0:
                self.server.sleep(wait)
                continue
            horizon = time.monotonic() + self.SLACK
            while self.due and self.due[0][0] <= horizon:
                _, session = self.due.popleft()
                try:
                    session.ping_now()
                except Exception:  # one broken session must not stop everyone's pings
                    log.exception("ping of %s failed", session.sid)


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


class WebSocketWriter:
    """Writes one WebSocket client's frames from the greenlet that sends them.

    A frame is written with one non-blocking write(2): the kernel takes it whole unless the
    client has stopped reading. Whatever it does not take, and every frame after it, waits in
    `backlog`, written in order by a greenlet that exists only while there is a backlog, which
    coalesces what accumulated into one write. `pending_*` is what the outgoing cap counts.
    """

    __slots__ = ("socket", "fileno", "backlog", "pending_frames", "pending_bytes", "flusher",
                 "websocket_to_close", "broken")

    def __init__(self, socket):
        self.socket = socket  # gevent's socket: its sendall() blocks only the flusher greenlet
        self.fileno = socket.fileno()
        self.backlog: collections.deque[bytes] | None = None  # made when first needed: ~600 B
        self.pending_frames = 0
        self.pending_bytes = 0
        self.flusher: gevent.Greenlet | None = None
        self.websocket_to_close = None
        self.broken = False

    def write(self, frame: bytes) -> None:
        if self.broken:
            return
        if self.flusher is None:
            try:
                written = os.write(self.fileno, frame)
            except BlockingIOError:
                written = 0
            except OSError:  # the client is gone; its reader notices and ends the session
                self.broken = True
                return
            if written == len(frame):
                return
            frame = frame[written:]
            if self.backlog is None:
                self.backlog = collections.deque()
            self.flusher = gevent.spawn(self.flush)
        self.backlog.append(frame)
        self.pending_frames += 1
        self.pending_bytes += len(frame)

    def flush(self) -> None:
        try:
            while self.backlog:
                frames = b"".join(self.backlog) if len(self.backlog) > 1 else self.backlog[0]
                count = len(self.backlog)
                self.backlog.clear()
                self.socket.sendall(frames)
                self.pending_frames -= count
                self.pending_bytes -= len(frames)
        except OSError:
            self.broken = True
            self.backlog.clear()
            self.pending_frames = self.pending_bytes = 0
        finally:
            self.flusher = None
        if self.websocket_to_close is not None:
            self.websocket_to_close.close()

    def close_when_flushed(self, websocket) -> None:
        """Close the WebSocket (a close frame) once every frame before it is written."""
        if self.flusher is None:
            websocket.close()
        else:
            self.websocket_to_close = websocket

    def wait_flushed(self, timeout: float) -> None:
        flusher = self.flusher
        if flusher is not None:
            flusher.join(timeout)


_last_frame: tuple[object, bytes] = (None, b"")


def websocket_frame(pkt) -> bytes:
    """The WebSocket frame of an Engine.IO packet; built once for all recipients of a broadcast
    (python-socketio sends them one packet object in a row, so the last one is remembered)."""
    global _last_frame
    last = _last_frame
    if last[0] is pkt:
        return last[1]
    encoded = pkt.encode()
    if isinstance(encoded, str):
        payload, opcode = encoded.encode(), 0x1
    else:
        payload, opcode = bytes(encoded), 0x2
    frame = frame_header(opcode, len(payload)) + payload
    _last_frame = (pkt, frame)
    return frame


def frame_header(opcode: int, length: int) -> bytes:
    """The header of a final, unmasked (server-to-client) WebSocket frame."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


# -- gevent-websocket ---------------------------------------------------------------------------

class MessageTooBig(Exception):
    """Deliberately not a socket.error: WebSocket.receive() would turn that into a plain close."""


class CappedWebSocket(WebSocket):
    """gevent-websocket's WebSocket that refuses an oversized message at its frame header.

    Upstream `read_frame()` reads a whole frame (`raw_read(header.length)`, up to 2**63 bytes)
    and `read_message()` concatenates fragments without limit, all before engine.io's own
    `max_http_buffer_size` check sees the message: one 100 MB message costs the replica hundreds
    of MB and, because upstream unmasks byte by byte in Python, stalls every client for a minute.
    Here the length in each data frame's header is checked, and summed over the fragments of a
    message, before any payload is read; the connection is then closed with 1009.
    """

    __slots__ = ("message_bytes", "writer")

    @property
    def limits(self) -> ClientLimits | None:
        return client_limits_of(getattr(self.handler, "application", None))

    @property
    def max_message_bytes(self) -> int:
        limits = self.limits
        return limits.max_message_bytes if limits is not None else DEFAULT_MAX_MESSAGE_BYTES

    def read_frame(self):
        # A greenlet reading a socket that always has data never blocks, so never lets the others
        # run: a client sending as fast as it can would stall the replica. Yield once per frame.
        gevent.sleep(0)
        header = Header.decode_header(self.stream)
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_bytes = 0  # a new message (a TEXT in mid-message is refused upstream)
        if header.opcode in (self.OPCODE_CONTINUATION, self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_bytes = getattr(self, "message_bytes", 0) + header.length
            if self.message_bytes > self.max_message_bytes:
                raise MessageTooBig(self.message_bytes)
        # The rest is upstream's read_frame(), with a fast unmask.
        if header.flags:
            raise ProtocolError("reserved bits set")  # -> close 1002
        if not header.length:
            return header, b""
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = unmask(payload, header.mask)
        return header, payload

    def validate_utf8(self, payload):
        # Upstream checks every text frame, then the whole message, with a pure-Python validator
        # (about 0.37 ms of CPU per KB without the wsaccel accelerator): a client within its rate
        # limit could take the replica's CPU with large messages. `read_message()` decodes the
        # whole message with bytes.decode('utf-8') anyway, strict and in C, and closes with 1007
        # on invalid UTF-8; the message size is capped before any payload is read.
        pass

    def send_frame(self, message, opcode):
        # Once the session writes directly (WebSocketWriter), the frames gevent-websocket writes
        # itself (a PONG, the close frame) join the same ordered stream instead of cutting into
        # a frame being written.
        writer = getattr(self, "writer", None)
        if writer is None:
            return super().send_frame(message, opcode)
        if self.closed:
            raise WebSocketError("Socket is dead")
        if isinstance(message, str):
            message = message.encode()
        writer.write(frame_header(opcode, len(message)) + bytes(message))
        return None

    def receive(self):
        try:
            return super().receive()
        except MessageTooBig as exc:
            limits = self.limits
            if limits is not None:
                limits.websocket_too_big(self.environ or {}, exc.args[0])
            self.close(CLOSE_MESSAGE_TOO_BIG, f"message above {self.max_message_bytes} bytes")
            return None

    def close(self, code=1000, message=""):
        # Upstream's close() never puts the status code in the close frame; this one does.
        if self.closed:
            return
        try:
            reason = message if isinstance(message, bytes) else str(message or "").encode()
            self.send_frame(struct.pack("!H", code) + reason[:123], self.OPCODE_CLOSE)
        except WebSocketError:
            pass  # the peer is gone; closing anyway
        finally:
            self.closed = True
            self.stream = self.raw_write = self.raw_read = self.environ = None

    def abort(self) -> None:
        """Drop the TCP connection now: unblocks a writer stuck on a peer that does not read."""
        try:
            self.handler.socket.shutdown(stdlib_socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask as one big integer: C speed instead of a Python loop per byte."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little")


class ReplicaWebSocketHandler(gws_handler.WebSocketHandler):
    """gevent-websocket's request handler, refusing a foreign Origin, and new sessions while the
    replica drains (web/drain.py), before the WebSocket upgrade.

    gevent-websocket answers 101 Switching Protocols before the WSGI app runs, so engine.io's
    origin check comes too late for WebSocket handshakes: its 400 goes nowhere and the foreign
    page holds an open socket. The drain's 503 likewise: the client got a socket that closed
    before the handshake, and the official client then waits its whole connect timeout.
    """

    # gevent's default read buffer is 8 KB per connection, allocated up front and kept for the
    # life of a WebSocket. A WebSocket reads a 2-byte header, then a payload of known length
    # (read straight into its own buffer when larger); HTTP requests parse fine with less.
    READ_BUFFER_BYTES = 256

    def __init__(self, sock, address, server, rfile=None):
        if rfile is None:
            rfile = sock.makefile("rb", self.READ_BUFFER_BYTES)
        super().__init__(sock, address, server, rfile)

    def run_websocket(self):
        """gevent-websocket's, with less kept per connection for the life of the WebSocket: the
        request's parsed headers (an email.message.Message, about 2 KB) and the 101 answer's
        header list are not read after the upgrade, and nothing reads `server.clients` (which
        upstream fills for every WebSocket). The app is called through its `__call__` method:
        CPython 3.11 runs that inline, where calling the app object adds a C-level interpreter
        frame that greenlet saves for every idle connection."""
        self.headers = None
        self.response_headers = []
        try:
            list(self.application.__call__(self.environ, lambda s, h, e=None: []))
        finally:
            if not self.websocket.closed:
                self.websocket.close()
            self.environ.update({"wsgi.websocket": None})
            self.websocket = None

    def upgrade_websocket(self):
        limits = client_limits_of(self.application)
        if limits is not None and limits.origin_check.refuses_upgrade(self.environ):
            body = b'"Not an accepted origin."'
            self.start_response("400 Bad Request", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))])
            return [body]
        # Every request passes here first, polling or not: a new session refused here (the
        # half-open cap) is answered before gevent-websocket's 101, so the client gets the 503.
        if limits is not None and limits.handshake_refused(self.environ):
            return refuse_new_session(self.start_response, HALF_OPEN_REFUSAL)
        drain = getattr(self.application, "extensions", {}).get("drain")
        if drain is not None and drain.refuses(self.environ):  # nginx tries the next replica
            return drain.refuse(self.start_response)
        result = super().upgrade_websocket()
        websocket = getattr(self, "websocket", None)
        if websocket is not None:
            # The WebSocket reads its socket itself, not through the request's buffered reader:
            # that one (C code) calls back into Python for every read, one more C-level
            # interpreter frame under the blocking read of every idle connection.
            reader = SocketReader(self.socket, self.unread_input())
            websocket.stream.read = websocket.raw_read = reader.read
            # Frees its buffer; once the WebSocket ends, pywsgi sees it closed and reads no
            # further request from this connection.
            self.rfile.close()
        return result

    def unread_input(self) -> bytes:
        """What the request's read buffer holds beyond the request, taken without waiting."""
        timeout = self.socket.gettimeout()
        self.socket.settimeout(0.0)
        try:
            pending = self.rfile.peek()  # on an empty buffer: one non-blocking read
        finally:
            self.socket.settimeout(timeout)
        if pending:
            self.rfile.read(len(pending))
        return pending


class SocketReader:
    """Reads exactly the bytes asked for from a (gevent) socket, in Python. A read of a few
    bytes (a frame header) asks the kernel for up to READ_AHEAD, so that a small message takes
    one system call; what was read ahead is kept for the next read, nothing otherwise."""

    READ_AHEAD = 256
    __slots__ = ("socket", "pending")

    def __init__(self, socket, pending: bytes = b""):
        self.socket = socket
        self.pending = pending

    def read(self, size: int) -> bytes:
        data = self.pending
        if len(data) >= size:
            self.pending = data[size:]
            return data[:size]
        chunks = [data]
        have = len(data)
        while have < size:
            chunk = self.socket.recv(max(size - have, self.READ_AHEAD))
            if not chunk:  # the peer closed: a short read, as from a file
                break
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self.pending = data[size:]
        return data[:size]
