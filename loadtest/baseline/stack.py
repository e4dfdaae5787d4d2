"""The plain Flask-SocketIO docs recipe as a list of services: a private RabbitMQ, N baseline
replicas, nginx with ip_hash, no worker.

Run by scripts/stack.py's supervisor like the project's own stack (own process groups, SIGTERM then
SIGKILL, private RabbitMQ in a temporary directory); only the service descriptions differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.stack import ROOT, Replica, Service, ServiceSet, Stack, nginx_service

BASELINE_DIR = Path(__file__).resolve().parent


def baseline_replica(stack: Stack, replica: Replica) -> Service:
    return Service(
        replica.replica_id,
        [sys.executable, "-m", "gunicorn", "-c", str(BASELINE_DIR / "gunicorn.conf.py"),
         "loadtest.baseline.app:app"],
        {"AMQP_URL": stack.amqp_url or "", "WEB_PORT": str(replica.port),
         "REPLICA_ID": replica.replica_id, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        ready_url=f"{replica.url}/readyz")


def baseline_nginx(stack: Stack) -> Service:
    return nginx_service(stack, {BASELINE_DIR / "nginx.conf.template": "nginx.conf"}, "/readyz")


BASELINE = ServiceSet(replica=baseline_replica, nginx=baseline_nginx, worker=None,
                      replica_prefix="baseline")


def BaselineStack(**options) -> Stack:
    """A `Stack` that runs the baseline recipe (the name of the class this used to be)."""
    return Stack(services=BASELINE, **options)
