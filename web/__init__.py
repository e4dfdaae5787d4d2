"""The web replica: a Flask app serving Socket.IO with Flask-SocketIO in gevent mode.

`socketio` is created unbound and bound to an app in `create_app()`; event handlers register
themselves on it when their modules are imported (see the bottom of this file).
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from flask_socketio import SocketIO

from common import metrics
from common.broker import QueueManager, create_queue_manager
from common.contract import session_id_prefix
from common.jobs import JobQueue
from common.settings import Settings, load_settings
from web.drain import Drain
from web.limits import OriginCheck, install as install_limits

log = logging.getLogger(__name__)


class ReplicaSocketIO(SocketIO):
    """Flask-SocketIO with one place that sees every client event, for metrics."""

    def _handle_event(self, handler, message, namespace, sid, *args):
        if message not in ("connect", "disconnect"):
            metrics.EVENTS_RECEIVED.labels(namespace or "/").inc()
        return super()._handle_event(handler, message, namespace, sid, *args)


socketio = ReplicaSocketIO()


def create_app(settings: Settings | None = None, *, async_mode: str = "gevent",
               use_message_queue: bool = True) -> Flask:
    """Build the app. Unit tests pass `async_mode="threading", use_message_queue=False`."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = settings.secret_key.get_secret_value()
    app.config["SETTINGS"] = settings
    app.extensions["job_queue"] = JobQueue(settings.amqp_url.get_secret_value())

    options = {}
    queue_manager = None
    if use_message_queue:
        queue_manager = create_queue_manager(settings, write_only=False)
        options["client_manager"] = queue_manager
    socketio.init_app(
        app,
        async_mode=async_mode,
        # An allow-list (empty: same origin only; '*' is refused by the settings), as a callable
        # so that refusals are counted and logged (web/limits.py).
        cors_allowed_origins=OriginCheck(settings.cors_allowed_origins),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_message_bytes,
        logger=False,
        engineio_logger=False,
        **options,
    )
    route_sessions_to_this_replica(socketio, settings.replica_address)
    install_limits(socketio.server, settings)
    eio = socketio.server.eio
    metrics.CONNECTED_CLIENTS.set_function(lambda: len(eio.sockets))
    drain = Drain(socketio)
    app.extensions["drain"] = drain
    app.wsgi_app = drain.refuse_new_sessions_while_draining(app.wsgi_app)

    from web.api import blueprint as api_blueprint
    from web.page import blueprint as page_blueprint
    from web.routes import blueprint as routes_blueprint
    for blueprint in (routes_blueprint, page_blueprint, api_blueprint):
        app.register_blueprint(blueprint)

    if queue_manager is not None:
        queue_manager.start_listening()
    log.info("replica %s ready at %s (async mode %s)", settings.replica_id,
             settings.replica_address, socketio.async_mode)
    return app


def route_sessions_to_this_replica(sio: SocketIO, replica_address: str) -> None:
    """Prefix every Engine.IO session id with this replica's address ("10.0.0.7.5000.<random>").

    nginx reads the prefix from the `sid` query argument and sends the session's later requests
    (long-polling, the WebSocket upgrade) to the replica that owns the session, without cookies or
    client-IP hashing. See nginx/socketio.conf.template.
    """
    prefix = session_id_prefix(replica_address)
    random_id = sio.server.eio.generate_id
    sio.server.eio.generate_id = lambda: prefix + random_id()


def current_settings() -> Settings:
    return current_app.config["SETTINGS"]


def current_drain() -> Drain:
    return current_app.extensions["drain"]


def current_job_queue() -> JobQueue:
    return current_app.extensions["job_queue"]


def current_queue_manager() -> QueueManager | None:
    manager = socketio.server.manager
    return manager if isinstance(manager, QueueManager) else None


# Importing the handler modules registers them on `socketio`.
from web import chat, echo, events  # noqa: E402,F401
