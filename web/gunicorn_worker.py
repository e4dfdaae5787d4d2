"""The replica's gunicorn worker: gevent-websocket's worker, plus the origin check before the
WebSocket upgrade and the drain on SIGTERM.

gunicorn imports the worker class in its master process, before the worker monkey-patches, so this
module imports nothing but the workers it extends; the app's modules are imported in the worker.
"""

from __future__ import annotations

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker

from common.library_contract import Contract

CONTRACT = Contract(
    read_against={"gunicorn": "27.0.1", "gevent-websocket": "0.10.1"},
    members={
        "geventwebsocket.gunicorn.workers.GeventWebSocketWorker": None,
        "gunicorn.workers.base.Worker.load_wsgi": "(self)",
        "gunicorn.workers.base.Worker.handle_exit": "(self, sig, frame)",
    },
    instance_attributes={
        # the app load_wsgi built, and the request handler class gevent's server uses
        "gunicorn.workers.base.Worker": ("wsgi",),
        "geventwebsocket.gunicorn.workers.GeventWebSocketWorker": ("wsgi_handler",),
    },
)


class ReplicaWorker(GeventWebSocketWorker):
    """`worker_class` in web/gunicorn.conf.py; gevent-websocket's own worker is built the same way
    (`GeventWebSocketWorker(GeventPyWSGIWorker)` with its `wsgi_handler`)."""

    def load_wsgi(self):
        super().load_wsgi()  # imports web.wsgi, which builds the app (after monkey-patching)
        from web.upstream import ReplicaWebSocketHandler
        self.wsgi_handler = ReplicaWebSocketHandler

    def handle_exit(self, sig, frame):
        """SIGTERM: drain the clients to the other replicas, then gunicorn's graceful shutdown."""
        import gevent

        drain = self.wsgi.extensions["drain"]
        if drain.draining:
            return
        seconds = self.wsgi.config["SETTINGS"].drain_seconds

        def drain_then_exit():
            drain.run(seconds)
            super(ReplicaWorker, self).handle_exit(sig, frame)

        gevent.spawn(drain_then_exit)
