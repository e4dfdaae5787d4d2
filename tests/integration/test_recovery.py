"""Connection state recovery with the official JavaScript client (tests/js/recovery_check.mjs).

Its own stack: a replica is killed, and the recovery window is short enough to wait out. The
replicas keep fewer events in memory than the client misses, so the recovery reads the rest back
from the RabbitMQ stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from common.auth import issue_token
from common.contract import MAIN_NAMESPACE, Event
from scripts.stack import ROOT
from tests.integration.test_js_client import node_or_fail
from tests.support.metrics import replica_metric
from tests.support.stack import STACK_ENV, running_stack

SCRIPT = ROOT / "tests" / "js" / "recovery_check.mjs"
WINDOW_SECONDS = 10
MEMORY_EVENTS = 100  # fewer than the 130 the client misses while it is away


@pytest.fixture(scope="module")
def recovery_stack():
    with running_stack("recovery stack", replicas=3, workers=1,
                       extra_env={**STACK_ENV, "SERVER_EVENT_INTERVAL": "0",
                                  "RECOVERY_WINDOW_SECONDS": str(WINDOW_SECONDS),
                                  "RECOVERY_MEMORY_EVENTS": str(MEMORY_EVENTS)}) as stack:
        yield stack


def run_recovery_check(stack, unique: str, mode: str, cut) -> dict:
    """Runs the script; `cut(replica_id)` is called when client A is ready to be cut off."""
    node = node_or_fail()
    user = f"recovery-user-{unique}"
    config = {
        "url": stack.url, "apiUrl": f"{stack.url}/api", "apiKey": STACK_ENV["API_KEY"],
        "marker": unique, "user": user, "token": issue_token(STACK_ENV["SECRET_KEY"], user),
        "mode": mode, "namespace": MAIN_NAMESPACE, "timeoutMs": 10000,
        "reconnectDelayMs": 1500 if mode == "kill" else (WINDOW_SECONDS + 3) * 1000,
        "events": {"myResponse": Event.MY_RESPONSE, "myBroadcastEvent": Event.MY_BROADCAST_EVENT,
                   "join": Event.JOIN, "myRoomEvent": Event.MY_ROOM_EVENT,
                   "serverInfo": Event.SERVER_INFO},
    }
    with subprocess.Popen([node, str(SCRIPT), json.dumps(config)], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as script:
        try:
            ready = json.loads(script.stdout.readline() or "{}")
            assert ready.get("phase") == "ready", f"recovery_check.mjs: {script.stderr.read()}"
            cut(ready["replica"])
            script.stdin.write("go\n")
            script.stdin.flush()
            out, err = script.communicate(timeout=90)
        finally:
            if script.poll() is None:
                script.kill()
    assert script.returncode == 0, f"recovery_check.mjs exited {script.returncode}:\n{err}{out}"
    return json.loads(out.strip().splitlines()[-1])


def test_killed_replica_client_recovers_everything_it_missed_on_another_replica(
        recovery_stack, unique):
    killed = []

    def kill_replica(replica_id: str) -> None:
        victim = next(r for r in recovery_stack.web if r.replica_id == replica_id)
        os.killpg(victim.process.popen.pid, signal.SIGKILL)
        killed.append(victim)

    try:
        result = run_recovery_check(recovery_stack, unique, "kill", kill_replica)
    finally:
        for victim in killed:
            recovery_stack.start_replica(victim)

    assert result["firstPid"], "the CONNECT answer carried no pid"
    assert result["after"]["replica"] != result["before"]["replica"]
    assert result["recovered"] is True
    assert result["sameId"] is True
    received = [item["data"] for item in result["received"]]
    sent = result["sent"]
    # Every event sent to it, its room, its user or everyone, once.
    assert sorted(received) == sorted(sent["b"] + sent["api"]), (
        f"missing {sorted(set(sent['b'] + sent['api']) - set(received))}, "
        f"twice {sorted({d for d in received if received.count(d) > 1})}")
    # In order: each sender's events as it sent them, and the log's offsets always increasing.
    assert [d for d in received if d in set(sent["b"])] == sent["b"]
    assert [d for d in received if d in set(sent["api"])] == sent["api"]
    offsets = [int(item["offset"]) for item in result["received"]]
    assert offsets == sorted(set(offsets))
    # More than its replica kept in memory: the oldest came back from the stream.
    index = next(i for i, r in enumerate(recovery_stack.web, 1)
                 if r.replica_id == result["after"]["replica"])
    assert replica_metric(recovery_stack, "socketio_recovery_read_back_entries_total",
                          replica=index) > 0
    print(f"\nrecovered on {result['after']['replica']} after {result['awayMs']} ms away, "
          f"{len(received)} events, each once and in order")


def test_past_the_window_a_new_session(recovery_stack, unique):
    result = run_recovery_check(recovery_stack, unique, "window", lambda replica_id: None)
    assert result["awayMs"] > WINDOW_SECONDS * 1000
    assert result["recovered"] is False
    assert result["sameId"] is False
    assert result["after"]["sid"] != result["before"]["sid"]
