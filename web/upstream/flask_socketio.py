"""Flask-SocketIO: one place that sees every client event (metrics, and what an event's request
context leaves behind), and class-based namespaces that answer unknown events."""

from __future__ import annotations

import flask_socketio

from common import metrics
from common.library_contract import Contract

CONTRACT = Contract(
    read_against={"flask-socketio": "5.7.0", "python-socketio": "5.18.1"},
    members={
        "flask_socketio.SocketIO._handle_event": "(self, handler, message, namespace, sid, "
                                                 "*args)",
        "flask_socketio.Namespace.trigger_event": "(self, event, *args)",
        "socketio.base_manager.BaseManager.eio_sid_from_sid": "(self, sid, namespace)",
    },
    instance_attributes={
        "flask_socketio.SocketIO": ("server",),
        "socketio.server.Server": ("environ", "manager"),
    },
)


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

