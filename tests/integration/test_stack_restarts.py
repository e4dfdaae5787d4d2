"""`make run` restarts what dies: a SIGKILLed replica and a SIGKILLed worker of a native stack with
restarts on (as `make run` runs it) come back on their own, ready, and say so."""

from __future__ import annotations

import os
import signal

import requests

from scripts.stack import broker_connected
from tests.support.stack import STACK_ENV, running_stack
from tests.support.waiting import wait_until


def ready(url: str, accept=lambda readiness: True) -> bool:
    try:
        response = requests.get(f"{url}/readyz", timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == 200 and accept(response.json())


def test_a_killed_replica_and_worker_are_restarted_and_ready_again():
    said: list[str] = []
    with running_stack("restarting stack", replicas=2, workers=1, extra_env=STACK_ENV,
                       restart=True, notice=said.append) as native:
        victim, worker = native.web[0], native.worker_processes[0]
        killed = {victim.process.popen.pid, worker.popen.pid}
        for process in (victim.process, worker):
            os.killpg(process.popen.pid, signal.SIGKILL)

        wait_until(lambda: ready(victim.url, broker_connected), timeout=60,
                   what=f"{victim.replica_id} to be ready again")
        wait_until(lambda: ready(native.worker_health_url(1)), timeout=60,
                   what="worker-1 to be ready again")
        assert not killed & {victim.process.popen.pid, worker.popen.pid}
        assert any(line.startswith(f"{victim.replica_id} killed by SIGKILL") for line in said)
        assert any(line.startswith("worker-1 killed by SIGKILL") for line in said)
        assert f"{victim.replica_id} restarted (pid {victim.process.popen.pid})" in said
        assert requests.get(f"{native.url}/healthz", timeout=5).status_code == 200  # via nginx
