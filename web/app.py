"""The app factory of a web replica.

`create_app()` reads as the list of what a replica is made of. The shared `socketio` object and
the `current_*` accessors live in web/extensions.py; every override of a library internal lives in
the web/upstream/ package, and the features that need one register with the server's
ReplicaHooks, installed once at the end; event handlers register themselves on `socketio` when
their modules are imported (see `register_handlers`).
"""

from __future__ import annotations

import logging

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from common import metrics, strict_json
from common.broker import QueueManager, create_queue_manager
from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, session_id_prefix, user_room
from common.job_queue import JobQueue
from common.settings import Settings, load_settings
from web import replica_control, upstream
from web.admin import add_admin_ui
from web.drain import Drain
from web.extensions import socketio
from web.limits import ClientLimits, OriginCheck
from web.presence import PRESENCE_KEY, Presence
from web.recovery import Recovery
from web.room_bindings import RoomBindings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, async_mode: str = "gevent",
               use_message_queue: bool = True, job_queue: JobQueue | None = None) -> Flask:
    """Build the app. Unit tests pass `async_mode="threading", use_message_queue=False` and, to
    see what would be enqueued, a fake `job_queue` (anything with `enqueue(name, args, id)`)."""
    settings = settings or load_settings()
    upstream.apply()
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    app.config["SECRET_KEY"] = settings.secret_key.get_secret_value()
    app.config["SETTINGS"] = settings
    app.extensions["job_queue"] = job_queue or JobQueue(settings.amqp_url.get_secret_value())
    queue_manager = create_queue_manager(settings, write_only=False) if use_message_queue else None
    register_handlers()
    hooks = bind_socketio(app, settings, async_mode, queue_manager)
    add_room_bindings(app, queue_manager, hooks)
    add_recovery(app, settings, queue_manager, hooks)
    add_presence(app, settings, queue_manager, hooks)
    replica_control.take_control_records(socketio.server, hooks)
    add_drain(app)
    register_blueprints(app)
    if settings.admin_ui_enabled:
        add_admin_ui(socketio.server, hooks, settings)
    upstream.install(socketio.server, hooks)  # every library hook, for all of the above
    if queue_manager is not None:  # both broker connections now, not on the first client
        queue_manager.on_record = hooks.take_record
        upstream.start_client_manager(socketio.server)  # the listener
        queue_manager.start_publisher()
    log.info("replica %s ready at %s (async mode %s)", settings.replica_id,
             settings.replica_address, socketio.async_mode)
    return app


def bind_socketio(app: Flask, settings: Settings, async_mode: str,
                  queue_manager: QueueManager | None) -> upstream.ReplicaHooks:
    """Bind `socketio` to the app; the server's hooks, with this replica's limits and session
    routing."""
    origin_check = OriginCheck(settings.cors_allowed_origins)
    socketio.init_app(
        app,
        async_mode=async_mode,
        # An allow-list (empty: same origin only; '*' is refused by the settings), as a callable
        # so that refusals are counted and logged (web/limits.py).
        cors_allowed_origins=origin_check,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_message_bytes,
        json=strict_json,  # no NaN/Infinity either way, UTF-8 unescaped (common/strict_json.py)
        logger=False,
        engineio_logger=False,
        **({"client_manager": queue_manager} if queue_manager is not None else {}),
    )
    server = socketio.server

    def environ_of(sid: str) -> dict:
        # The engine.io layer knows a connection by its Engine.IO sid, the handlers by its
        # Socket.IO sid in one namespace (request.sid): either names the same environ.
        if sid in server.environ:
            return server.environ[sid]
        return next((environ for namespace in list(server.manager.get_namespaces())
                     if (environ := server.get_environ(sid, namespace))), {})

    limits = ClientLimits(settings, origin_check, environ_of)
    app.extensions["client_limits"] = limits
    eio = server.eio
    metrics.CONNECTED_CLIENTS.set_function(lambda: len(eio.sockets))
    # nginx reads the replica's address from the `sid` query argument and sends the session's
    # later requests (long-polling, the WebSocket upgrade) to the replica that owns it, without
    # cookies or client-IP hashing. See nginx/socketio.conf.template.
    return upstream.ReplicaHooks(
        limits=limits, session_id_prefix=session_id_prefix(settings.replica_address))


class StrictJSONProvider(DefaultJSONProvider):
    """Flask reads and writes JSON as strictly as Socket.IO does (common/strict_json.py): for a
    handler that calls `request.get_json()`, a body with NaN is not JSON (web/api.py reads its
    bodies with the codec itself, to say why)."""

    ensure_ascii = False

    def loads(self, s, **kwargs):
        return strict_json.loads(s, **kwargs)

    def dumps(self, obj, **kwargs):
        return super().dumps(obj, allow_nan=False, **kwargs)


def add_room_bindings(app: Flask, queue_manager: QueueManager | None,
                      hooks: upstream.ReplicaHooks) -> None:
    """Routing by room (web/room_bindings.py): this replica's queue is bound to the rooms it has
    members of, so it receives their events and not the others'."""
    if queue_manager is None:
        return
    bindings = RoomBindings(queue_manager)
    hooks.on_room_change(bindings.room_changed)
    app.extensions["room_bindings"] = bindings
    socketio.server.start_background_task(bindings.run)


def add_recovery(app: Flask, settings: Settings, queue_manager: QueueManager | None,
                 hooks: upstream.ReplicaHooks) -> None:
    """Connection state recovery for the clients that ask (web/recovery/); it needs the broker's
    streams, so one process without a message queue has none."""
    if queue_manager is None or not settings.recovery_window_seconds:
        return
    server = socketio.server
    recovery = Recovery(server, queue_manager, window_seconds=settings.recovery_window_seconds,
                        memory_events=settings.recovery_memory_events,
                        memory_bytes=settings.recovery_memory_bytes,
                        namespaces=(MAIN_NAMESPACE, CHAT_NAMESPACE),
                        replica_id=settings.replica_id,
                        # a user's room comes back only with a valid token (events.on_connect)
                        restores_room=lambda room: not room.startswith(user_room("")))
    hooks.use_recovery(recovery)
    app.extensions["recovery"] = recovery
    bindings = app.extensions.get("room_bindings")
    if bindings is not None:  # the log serves recovery-capable clients, not the queue
        bindings.waits_for = lambda eio_sid, namespace: not recovery.serves(eio_sid, namespace)
    server.start_background_task(recovery.run)


def add_presence(app: Flask, settings: Settings, queue_manager: QueueManager | None,
                 hooks: upstream.ReplicaHooks) -> None:
    """Who is connected, per room and across replicas (web/presence.py)."""
    server = socketio.server
    presence = Presence(server, queue_manager, namespaces=(MAIN_NAMESPACE, CHAT_NAMESPACE),
                        replica_name=settings.replica_id)
    hooks.on_room_change(presence.room_changed)
    app.extensions["presence"] = presence
    if queue_manager is not None:  # one process without it: the view is brought up to date
        hooks.take_records(PRESENCE_KEY, presence.receive)
        server.start_background_task(presence.run)  # when read (`Presence.current_view`)


def add_drain(app: Flask) -> None:
    """On SIGTERM (web/gunicorn_worker.py) the replica hands its clients to the others."""
    drain = Drain(socketio)
    app.extensions["drain"] = drain
    app.wsgi_app = drain.refuse_new_sessions_while_draining(app.wsgi_app)


def register_blueprints(app: Flask) -> None:
    from web.api import blueprint as api_blueprint
    from web.page import blueprint as page_blueprint
    from web.routes import blueprint as routes_blueprint
    for blueprint in (routes_blueprint, page_blueprint, api_blueprint):
        app.register_blueprint(blueprint)


def register_handlers() -> None:
    """Importing the handler modules registers them on `socketio` (once per process)."""
    from web import chat, echo, events  # noqa: F401
