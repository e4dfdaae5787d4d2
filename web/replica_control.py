"""Acting on the connections of every replica.

python-socketio's managers can emit to a room and disconnect or move one sid on any replica, but
nothing acts on every member of a room across replicas (a user's connections for
`POST /api/disconnect`; the Admin UI's "disconnect", "join" and "leave" for a selection). So a
replica sends a record carrying CONTROL_KEY {"action", "namespace", ...} to every replica, itself
included (common/broker.py's `publish_record`), and each acts on its own connections.
"""

from __future__ import annotations

import logging

from common.broker import QueueManager
from common.contract import MAIN_NAMESPACE
from web.upstream import ReplicaHooks

log = logging.getLogger(__name__)

CONTROL_KEY = "replica_control"
DISCONNECT_ROOM, ENTER_ROOM, LEAVE_ROOM = "disconnect_room", "enter_room", "leave_room"


def control_every_replica(server, action: str, namespace: str, **details) -> None:
    """Do `action` on every replica (through the broker), or here when there is no broker."""
    control = {"action": action, "namespace": namespace, **details}
    manager = server.manager
    if isinstance(manager, QueueManager):
        manager.publish_record(CONTROL_KEY, control, include_sender=True)
    else:
        act(server, control)


def take_control_records(server, hooks: ReplicaHooks) -> None:
    hooks.take_records(CONTROL_KEY, lambda key, control, sender: act(server, control))


def disconnect_room_members(server, room: str, namespace: str = MAIN_NAMESPACE,
                            whole_connection: bool = False) -> int:
    """Disconnect this replica's members of `room` in `namespace` (with `whole_connection`, from
    every namespace of their connection); how many."""
    manager = server.manager
    members = list(manager.get_participants(namespace, room))
    for sid, eio_sid in members:
        namespaces = list(manager.get_namespaces()) if whole_connection else [namespace]
        for each in namespaces:
            each_sid = sid if each == namespace else manager.sid_from_eio_sid(eio_sid, each)
            if each_sid is not None:
                server.disconnect(each_sid, namespace=each, ignore_queue=True)
    if members:
        log.info("disconnected %d connection(s) of room %s", len(members), room)
    return len(members)


def act(server, control: dict) -> None:
    namespace = control.get("namespace") or MAIN_NAMESPACE
    action = control.get("action")
    manager = server.manager
    if action == DISCONNECT_ROOM:
        disconnect_room_members(server, control["room"], namespace,
                                bool(control.get("whole_connection")))
    elif action in (ENTER_ROOM, LEAVE_ROOM):
        for sid, _ in list(manager.get_participants(namespace, control.get("room_filter"))):
            if action == ENTER_ROOM:
                manager.basic_enter_room(sid, namespace, control["room"])
            else:
                manager.basic_leave_room(sid, namespace, control["room"])
    else:
        log.warning("unknown replica control %r ignored", str(action)[:50])
