"""Graceful drain: on SIGTERM a replica hands its clients to the others before it exits.

1. Readiness turns 503 and new Socket.IO sessions are answered 503, which nginx takes as a cue
   to try the next replica (`proxy_next_upstream ... http_503`, for new sessions only); requests
   of existing sessions still reach this replica (nginx routes them by the session id).
2. Connected clients lose their transport, a few at a time over DRAIN_SECONDS, so they
   reconnect by themselves (to another replica) without a stampede.
3. gunicorn's own graceful shutdown then finishes whatever requests are left.

web/gunicorn_worker.py's ReplicaWorker runs `Drain.run` on SIGTERM.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable

from flask_socketio import SocketIO

from web.limits import opens_session, refuse_new_session

log = logging.getLogger(__name__)

REFUSAL = json.dumps({"error": "this replica is shutting down; reconnect"}).encode()


class Drain:
    def __init__(self, sio: SocketIO, sleep: Callable[[float], None] | None = None):
        self.sio = sio
        self.draining = False
        self.sleep = sleep or sio.sleep  # gevent.sleep in a replica

    def refuses(self, environ) -> bool:
        """A new Socket.IO session while draining (the requests of a session carry its sid)."""
        return self.draining and opens_session(environ)

    @staticmethod
    def refuse(start_response) -> list[bytes]:
        return refuse_new_session(start_response, REFUSAL)

    def refuse_new_sessions_while_draining(self, wsgi_app):
        """Polling handshakes; WebSocket ones are refused before their upgrade
        (web/upstream/gevent_websocket.py's ReplicaWebSocketHandler), since gevent-websocket
        answers 101 before the app runs."""
        # A bound method, not the middleware object: CPython 3.11 calls it inline, without one
        # more C-level frame under every WebSocket's blocking read (see
        # web/upstream/engineio_session.py).
        call_app = wsgi_app if inspect.isroutine(wsgi_app) else wsgi_app.__call__

        def middleware(environ, start_response):
            if self.refuses(environ):
                return self.refuse(start_response)
            return call_app(environ, start_response)
        return middleware

    def run(self, seconds: float) -> None:
        """Disconnect every client, spread evenly over `seconds`."""
        started = time.monotonic()
        self.draining = True
        eio = self.sio.server.eio
        sids = list(eio.sockets)
        log.info("draining: asking %d clients to reconnect elsewhere over %.1fs", len(sids),
                 seconds)
        pause = seconds / len(sids) if sids else 0
        for sid in sids:
            socket = eio.sockets.get(sid)
            if socket is not None:
                # Drop the transport without a CLOSE packet: to every client library that reads
                # as a lost connection, so it reconnects by itself (a CLOSE packet would make
                # python-socketio clients give up).
                socket.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
                eio.sockets.pop(sid, None)
            self.sleep(pause)
        log.info("drained %d clients in %.1fs", len(sids), time.monotonic() - started)

