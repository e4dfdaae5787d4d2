"""The seam to the libraries: every override of a library internal lives in this package, one
module per library it bends (as python-engineio keeps one module per server library among its
async drivers). Each module starts with its CONTRACT: the members it reads and the versions they
were read at (common/library_contract.py; tests/unit/test_upstream_contract.py checks them).

  registry.py          ReplicaHooks: what the replica keeps per server and who listens to what
  install.py           install(): each library method bent on one server, wrapped once, dispatching
                       to the server's ReplicaHooks
  engineio_session.py  python-engineio: LimitedSocket (per-client limits, the direct WebSocket
                       writer), PingScheduler (one greenlet for every session's PING)
  socketio_server.py   python-socketio's Server: the message guard, event-name check, half-open
                       watch, the environ kept per session, emit_here
  socketio_manager.py  python-socketio's client manager: server-to-client calls bounded
  flask_socketio.py    Flask-SocketIO: ReplicaSocketIO (event metrics), AnsweringNamespace
  gevent_websocket.py  gevent-websocket and gevent's pywsgi: CappedWebSocket (size cap at the frame
                       header), ReplicaWebSocketHandler (refusals before the upgrade)
  admin_ui.py          python-socketio's Admin UI instrumentation, through the registry instead of
                       class patches, reporting only while an admin watches
  transport.py         the replica's own transport code, overriding nothing: the frame writer, the
                       frame builder, the socket reader

Outside the package, web/gunicorn_worker.py bends gunicorn (its worker class) and common/broker.py
python-socketio's KombuManager; both carry a CONTRACT too.

`apply()` installs the two subclasses the libraries instantiate by a module-level name, once per
process; `install(server, hooks)` bends one server. Values that belong to one app live in its
ReplicaHooks, never in classes, so two apps in one process keep their own settings.
"""

from __future__ import annotations

import engineio.socket
from geventwebsocket import handler as gws_handler

from web.upstream.engineio_session import LimitedSocket
from web.upstream.gevent_websocket import CappedWebSocket, ReplicaWebSocketHandler
from web.upstream.install import install
from web.upstream.registry import ReplicaHooks, hooks_of
from web.upstream.socketio_server import emit_here, start_client_manager

__all__ = ["ReplicaHooks", "ReplicaWebSocketHandler", "apply", "emit_here", "hooks_of", "install",
           "start_client_manager"]


def apply() -> None:
    """Install the subclasses the libraries instantiate by module-level name, once per process
    (idempotent)."""
    engineio.socket.Socket = LimitedSocket
    gws_handler.WebSocket = CappedWebSocket
