"""gunicorn for one baseline replica with the worker class Flask-SocketIO's docs use for gevent."""

import os
import resource

bind = f"127.0.0.1:{os.environ['WEB_PORT']}"
workers = 1
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
# ip_hash sends every client of one host to one replica: it must hold the whole load test.
worker_connections = int(os.environ.get("MAX_CLIENTS_PER_REPLICA", "8000"))
preload_app = False
accesslog = None
errorlog = "-"
loglevel = "warning"
graceful_timeout = 3


def on_starting(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * worker_connections + 256
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
