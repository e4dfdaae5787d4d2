"""The replica's shared objects, for handler modules to import without importing the app factory.

`socketio` is created unbound and bound to the app in `create_app()` (web/app.py); the
`current_*` accessors find the app's collaborators while a request or event is handled.
"""

from __future__ import annotations

from flask import current_app

from common.broker import QueueManager
from common.job_queue import JobQueue
from common.settings import Settings
from web.drain import Drain
from web.limits import ClientLimits
from web.presence import ClusterView
from web.upstream.flask_socketio import ReplicaSocketIO

socketio = ReplicaSocketIO()


def current_settings() -> Settings:
    return current_app.config["SETTINGS"]


def current_drain() -> Drain:
    return current_app.extensions["drain"]


def current_client_limits() -> ClientLimits:
    return current_app.extensions["client_limits"]


def current_job_queue() -> JobQueue:
    return current_app.extensions["job_queue"]


def current_presence() -> ClusterView:
    """Who is connected, per room and across replicas (web/presence.py)."""
    return current_app.extensions["presence"].current_view()


def current_queue_manager() -> QueueManager | None:
    manager = socketio.server.manager
    return manager if isinstance(manager, QueueManager) else None
