"""Runs the baseline natively: a private RabbitMQ, N baseline replicas, nginx with ip_hash.

Reuses scripts/stack.py's process handling (own process groups, SIGTERM then SIGKILL, private
RabbitMQ in a temporary directory); only what runs differs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.stack import ROOT, Replica, Stack, StartupFailed, render, wait_for_http

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

    def _start_nginx(self) -> None:
        values = self.nginx_values()
        render(BASELINE_DIR / "nginx.conf.template", self.run_dir / "nginx.conf", values)
        nginx = ["nginx", "-p", str(self.run_dir), "-c", str(self.run_dir / "nginx.conf")]
        check = subprocess.run([*nginx, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise StartupFailed(f"nginx rejected the baseline configuration:\n{check.stderr}")
        process = self._spawn("nginx", nginx)
        wait_for_http(f"{self.url}/readyz", 15, process)
