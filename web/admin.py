"""The Socket.IO Admin UI (namespace /admin, page /admin/), only if ADMIN_UI_PASSWORD is set.

python-socketio's instrumentation, bent to a cluster in web/upstream/admin_ui.py (every replica's
sockets and events, reported only while an admin watches); here its credentials, and its actions
(join, leave, disconnect a selection) carried out on every replica (web/replica_control.py) where
upstream's act on the replica the UI is connected to only.
"""

from __future__ import annotations

import hmac
import logging

from common.broker import QueueManager
from common.contract import ADMIN_NAMESPACE
from common.settings import Settings
from web.replica_control import DISCONNECT_ROOM, ENTER_ROOM, LEAVE_ROOM, control_every_replica
from web.upstream import ReplicaHooks
from web.upstream.admin_ui import AdminReports

log = logging.getLogger(__name__)


def add_admin_ui(server, hooks: ReplicaHooks, settings: Settings) -> AdminReports:
    username = settings.admin_ui_username.encode()
    password = settings.admin_ui_password.get_secret_value().encode()

    def authenticate(auth) -> bool:
        if not isinstance(auth, dict):
            return False
        given_user = str(auth.get("username", "")).encode()
        given_password = str(auth.get("password", "")).encode()
        return (hmac.compare_digest(given_user, username)
                & hmac.compare_digest(given_password, password))

    manager = server.manager
    admin = AdminReports(
        server, hooks, auth=authenticate, server_id=settings.replica_id,
        namespace=ADMIN_NAMESPACE,
        publish_record=manager.publish_record if isinstance(manager, QueueManager) else None)

    def on_disconnect(_, namespace, close, room_filter=None):
        control_every_replica(server, DISCONNECT_ROOM, namespace, room=room_filter)

    def on_join(_, namespace, room, room_filter=None):
        control_every_replica(server, ENTER_ROOM, namespace, room=room, room_filter=room_filter)

    def on_leave(_, namespace, room, room_filter=None):
        control_every_replica(server, LEAVE_ROOM, namespace, room=room, room_filter=room_filter)

    server.on("_disconnect", on_disconnect, namespace=ADMIN_NAMESPACE)
    server.on("join", on_join, namespace=ADMIN_NAMESPACE)
    server.on("leave", on_leave, namespace=ADMIN_NAMESPACE)
    log.info("Socket.IO Admin UI on: namespace %s, page /admin/", ADMIN_NAMESPACE)
    return admin
