"""Runs the baseline natively: a private RabbitMQ, N baseline replicas, nginx with ip_hash.

Reuses scripts/stack.py's process handling (own process groups, SIGTERM then SIGKILL, private
RabbitMQ in a temporary directory); only what runs differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.stack import ROOT, Replica, Stack, render, wait_for_http

BASELINE_DIR = Path(__file__).resolve().parent


class BaselineStack(Stack):
    """`Stack` with the baseline app, no worker, and the ip_hash nginx."""

    def start_replica(self, replica: Replica, wait: bool = True) -> None:
        replica.process = self._spawn(
            f"baseline-{replica.index}",
            [sys.executable, "-m", "gunicorn", "-c", str(BASELINE_DIR / "gunicorn.conf.py"),
             "loadtest.baseline.app:app"],
            {"AMQP_URL": self.amqp_url or "", "WEB_PORT": str(replica.port),
             "REPLICA_ID": f"baseline-{replica.index}", "PYTHONPATH": str(ROOT),
             "PYTHONUNBUFFERED": "1"})
        if wait:
            wait_for_http(f"{replica.url}/readyz", 30, replica.process)

    def _start_workers(self) -> None:
        pass  # the recipe has no background worker

    nginx_ready_path = "/readyz"

    def render_nginx_config(self) -> None:
        render(BASELINE_DIR / "nginx.conf.template", self.run_dir / "nginx.conf", self.nginx_values())
