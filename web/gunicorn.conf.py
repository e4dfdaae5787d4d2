"""gunicorn settings for one web replica. Scale by running more replicas, never more workers."""

import logging
import math
import resource

from common.settings import load_settings, open_files_for_clients

_settings = load_settings()

bind = f"{_settings.web_host}:{_settings.web_port}"
# One worker: a Socket.IO session (its long-polling requests, rooms, acks) lives in one process.
workers = 1
# gevent-websocket's worker (engine.io requires it for WebSocket upgrades), plus the origin check
# before the upgrade and the drain on SIGTERM.
worker_class = "web.gunicorn_worker.ReplicaWorker"
# gunicorn's default of 1000 would cap the replica at 1000 clients.
worker_connections = _settings.max_clients_per_replica
preload_app = False  # the worker must monkey-patch before the app (and Kombu) is imported
# Covers the drain (clients asked to move, spread over DRAIN_SECONDS) and the requests left after.
graceful_timeout = math.ceil(_settings.drain_seconds) + 10
keepalive = 75
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = f"web-{_settings.replica_id}"
control_socket_disable = True  # gunicorn 27's control socket is not used; it wants a writable $HOME


def on_starting(server):
    """Each client holds a socket (two while polling); make sure the process may open them."""
    wanted = open_files_for_clients(_settings.max_clients_per_replica)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logging.getLogger("gunicorn.error").warning(
            "open-file limit %d is below the %d that %d clients need; raise `ulimit -n`",
            hard, wanted, _settings.max_clients_per_replica)

