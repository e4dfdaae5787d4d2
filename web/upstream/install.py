"""`install()`: each library method the replica bends on one server, wrapped once.

Every wrapper dispatches to the server's ReplicaHooks (web/upstream/registry.py) at the time of
the call: recovery, presence, the replica-control records and the Admin UI register there, in
any order, before or after this runs. Only the limits are read here, once: they are the hooks'
constructor argument.
"""

from __future__ import annotations

from socketio import packet as socketio_packet

from common.library_contract import Contract
from web.recovery.decisions import LogNotReadable
from web.upstream.engineio_session import PingScheduler, inline_websocket_wrapper
from web.upstream.registry import ReplicaHooks, register
from web.upstream.socketio_manager import BoundedAcks
from web.upstream.socketio_server import (
    EventNameCheck,
    HandshakeWatch,
    guarded_message,
    trimmed_environ,
)

CONTRACT = Contract(
    read_against={"python-socketio": "5.18.1", "python-engineio": "4.15.1"},
    members={
        "engineio.server.Server.generate_id": "(self)",
        "engineio.server.Server.on": "(self, event, handler=None)",
        "engineio.server.Server._ok": "(self, packets=None, headers=None, jsonp_index=None)",
        "socketio.server.Server._handle_eio_connect": "(self, eio_sid, environ)",
        "socketio.server.Server._handle_eio_disconnect": "(self, eio_sid, reason)",
        "socketio.server.Server._handle_eio_message": "(self, eio_sid, data)",
        "socketio.server.Server._handle_event": "(self, eio_sid, namespace, id, data)",
        "socketio.server.Server._handle_connect": "(self, eio_sid, namespace, data)",
        "socketio.server.Server._handle_disconnect": "(self, eio_sid, namespace, reason=None)",
        "socketio.server.Server._send_packet": "(self, eio_sid, pkt)",
        "socketio.server.Server._send_eio_packet": "(self, eio_sid, eio_pkt)",
        "socketio.server.Server._trigger_event": "(self, event, namespace, *args)",
        # the sid a connection gets comes from generate_id (a recovered client's comes back)
        "socketio.base_manager.BaseManager._generate_ack_id": "(self, sid, callback)",
        "socketio.base_manager.BaseManager.pre_connect": "(self, eio_sid, namespace)",
        "socketio.base_manager.BaseManager.basic_enter_room": "(self, sid, namespace, room, "
                                                              "eio_sid=None)",
        "socketio.base_manager.BaseManager.basic_leave_room": "(self, sid, namespace, room)",
        "socketio.base_manager.BaseManager.basic_disconnect": "(self, sid, namespace, **kwargs)",
        "socketio.base_manager.BaseManager.get_rooms": "(self, sid, namespace)",
        # the manager's emit: one process's, and the message queue's (its subclass)
        "socketio.manager.Manager.emit": "(self, event, data, namespace, room=None, "
                                         "skip_sid=None, callback=None, to=None, **kwargs)",
        "socketio.pubsub_manager.PubSubManager.emit": "(self, event, data, namespace=None, "
                                                      "room=None, skip_sid=None, callback=None, "
                                                      "to=None, **kwargs)",
    },
    instance_attributes={
        # {namespace: {room: bidict(sid: eio_sid)}}
        "socketio.base_manager.BaseManager": ("rooms",),
        "engineio.server.Server": ("_async",),  # its "websocket" wrapper class
    },
)


def install(sio_server, hooks: ReplicaHooks) -> None:
    """Make `sio_server` (and its Engine.IO server and client manager) dispatch to `hooks`."""
    register(sio_server, hooks)
    _install_sessions(sio_server, hooks)
    if hooks.limits is not None:
        _install_limits(sio_server, hooks)
    _install_connections(sio_server, hooks)
    _install_rooms(sio_server.manager, hooks)
    _install_admin_reports(sio_server, hooks)


def _install_sessions(sio_server, hooks: ReplicaHooks) -> None:
    """Session ids (nginx's routing prefix, or a recovered client's own), the environ kept per
    session, and the half-open watch of each new session."""
    eio = sio_server.eio
    random_id = eio.generate_id

    def generate_id() -> str:
        recovery = hooks.recovery
        forced = recovery.forced_sid() if recovery is not None else None
        return forced or hooks.session_id_prefix + random_id()

    handle_eio_connect = sio_server._handle_eio_connect
    handle_eio_disconnect = sio_server._handle_eio_disconnect

    def eio_connect(eio_sid, environ):
        if hooks.handshake_watch is not None:
            hooks.handshake_watch.opened(eio_sid)
        if hooks.admin is not None:
            hooks.admin.raw_connection()
        return handle_eio_connect(eio_sid, trimmed_environ(environ))

    def eio_disconnect(eio_sid, reason):
        if hooks.admin is not None:
            hooks.admin.raw_disconnection()
        return handle_eio_disconnect(eio_sid, reason)

    eio.generate_id = generate_id
    # Engine.IO calls its handlers; the instance attributes are for whoever calls the server's.
    sio_server._handle_eio_connect = eio_connect
    sio_server._handle_eio_disconnect = eio_disconnect
    eio.on("connect", eio_connect)
    eio.on("disconnect", eio_disconnect)


def _install_limits(sio_server, hooks: ReplicaHooks) -> None:
    limits = hooks.limits
    eio = sio_server.eio
    hooks.ping_scheduler = PingScheduler(eio)
    hooks.handshake_watch = watch = HandshakeWatch(sio_server, limits)
    limits.still_half_open = watch.still_half_open
    handle_message = sio_server._handle_eio_message
    eio.on("message", lambda eio_sid, data: guarded_message(
        sio_server, limits, handle_message, eio_sid, data))
    sio_server._handle_event = EventNameCheck(sio_server, limits)
    sio_server.manager._generate_ack_id = BoundedAcks(sio_server.manager, limits)
    eio_async = eio._async
    if "websocket" in eio_async:
        eio._async = {**eio_async, "websocket": inline_websocket_wrapper(eio_async)}


def _install_connections(sio_server, hooks: ReplicaHooks) -> None:
    """Connection state recovery (policy in web/recovery/): the pid in the CONNECT answer, the
    sid given back, the fast path leaving recovery-capable clients to the log greenlet, and the
    disconnects it must know of."""
    handle_connect = sio_server._handle_connect
    send_packet = sio_server._send_packet
    send_eio_packet = sio_server._send_eio_packet
    handle_disconnect = sio_server._handle_disconnect
    manager = sio_server.manager
    basic_disconnect = manager.basic_disconnect
    hooks.raw_send_eio_packet = send_eio_packet

    def connect(eio_sid, namespace, data):
        recovery = hooks.recovery
        ns = namespace or "/"
        try:
            if recovery is None or not recovery.wants(eio_sid, ns, data):
                return handle_connect(eio_sid, namespace, data)
        except LogNotReadable:
            return None  # its session is closed: the client tries again
        client = recovery.begin(eio_sid, ns, data)
        try:
            return handle_connect(eio_sid, namespace, data)
        finally:
            recovery.end(client)

    def answer(eio_sid, pkt):
        recovery = hooks.recovery
        if recovery is not None and pkt.packet_type == socketio_packet.CONNECT and \
                recovery.connecting and isinstance(pkt.data, dict):
            client = recovery.connecting.get((eio_sid, pkt.namespace or "/"))
            if client is not None and not client.answered:
                client.answered = True

                def send_answer(extra: dict) -> None:
                    pkt.data = {**pkt.data, **extra}
                    send_packet(eio_sid, pkt)

                return recovery.answered(client, pkt.data["sid"], send_answer)
        return send_packet(eio_sid, pkt)

    def send_eio(eio_sid, eio_pkt):
        recovery = hooks.recovery
        if recovery is not None and recovery.eio_sids and recovery.served_by_log(
                eio_sid, eio_pkt.data):
            return None
        return send_eio_packet(eio_sid, eio_pkt)

    def disconnect(eio_sid, namespace, reason=None):
        recovery = hooks.recovery
        if recovery is not None:
            ns = namespace or "/"
            sid = manager.sid_from_eio_sid(eio_sid, ns)
            if sid is not None and recovery.is_tracked(sid, ns):
                recovery.disconnecting(sid, ns, reason)
        return handle_disconnect(eio_sid, namespace, reason)

    def disconnect_sid(sid, namespace, **kwargs):
        recovery = hooks.recovery
        if recovery is not None and recovery.is_tracked(sid, namespace):
            # forgotten first: the leaves below are silent
            recovery.disconnected(sid, namespace, manager.get_rooms(sid, namespace))
        return basic_disconnect(sid, namespace, **kwargs)

    sio_server._handle_connect = connect
    sio_server._send_packet = answer
    sio_server._send_eio_packet = send_eio
    sio_server._handle_disconnect = disconnect
    manager.basic_disconnect = disconnect_sid


def _install_rooms(manager, hooks: ReplicaHooks) -> None:
    """Every room enter and leave of the manager, to the hooks' room listeners."""
    basic_enter_room = manager.basic_enter_room
    basic_leave_room = manager.basic_leave_room

    def enter_room(sid, namespace, room, eio_sid=None):
        basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if hooks.room_listeners:
            hooks.rooms_changed(sid, namespace, room, manager.rooms[namespace][room].get(sid),
                                True)

    def leave_room(sid, namespace, room):
        eio_sid = manager.rooms.get(namespace, {}).get(room, {}).get(sid)
        basic_leave_room(sid, namespace, room)
        if eio_sid is not None and hooks.room_listeners:
            hooks.rooms_changed(sid, namespace, room, eio_sid, False)

    manager.basic_enter_room = enter_room
    manager.basic_leave_room = leave_room


def _install_admin_reports(sio_server, hooks: ReplicaHooks) -> None:
    """What the Admin UI reports (web/upstream/admin_ui.py): client events and emits, and the
    polling transport's packets out. Each costs one attribute read while the UI is off."""
    trigger_event = sio_server._trigger_event
    manager = sio_server.manager
    manager_emit = manager.emit
    eio = sio_server.eio
    http_ok = eio._ok

    def trigger(event, namespace, *args):
        admin = hooks.admin
        if admin is None:
            return trigger_event(event, namespace, *args)
        if event != "connect":
            admin.event_triggered(event, namespace, args)
            return trigger_event(event, namespace, *args)
        # A refused connect (False, or ConnectionRefusedError) is not reported, nor remembered:
        # python-socketio sends no disconnect for it.
        result = trigger_event(event, namespace, *args)
        if result is not False:
            admin.connected(args[0], namespace)
        return result

    def emit(event, data, namespace, room=None, skip_sid=None, callback=None,  # noqa: PLR0917
             **kwargs):
        result = manager_emit(event, data, namespace, room=room, skip_sid=skip_sid,
                              callback=callback, **kwargs)
        admin = hooks.admin
        if admin is not None:
            admin.emitted(event, data, namespace, room, skip_sid)
        return result

    def ok(packets=None, headers=None, jsonp_index=None):
        response = http_ok(packets=packets, headers=headers, jsonp_index=jsonp_index)
        meter = hooks.transport_meter
        if meter is not None:
            meter.sent(len(response["response"]))
        return response

    sio_server._trigger_event = trigger
    manager.emit = emit
    eio._ok = ok
