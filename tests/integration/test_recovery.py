"""Connection state recovery with the official JavaScript client (tests/js/recovery_check.mjs).

Its own stack: replicas are killed and drained, the broker is restarted, and the recovery window
is short enough to wait out. The replicas keep fewer events in memory than the client misses, so
a recovery reads the rest back from the RabbitMQ stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from common.auth import issue_token
from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event
from scripts.stack import ROOT
from tests.support.clients import RecordingClient
from tests.support.metrics import replica_metric
from tests.support.node import node_or_fail
from tests.support.stack import STACK_ENV, recovery_ready, restart_replica, running_stack
from tests.support.waiting import wait_until

SCRIPT = ROOT / "tests" / "js" / "recovery_check.mjs"
WINDOW_SECONDS = 10
MEMORY_EVENTS = 100  # fewer than the 130 the client misses while it is away
DRAIN_SECONDS = 2
BROKER_OUTAGE_SECONDS = 5


@pytest.fixture(scope="module")
def recovery_stack():
    with running_stack("recovery stack", replicas=3, workers=1,
                       extra_env={**STACK_ENV, "SERVER_EVENT_INTERVAL": "0",
                                  "RECOVERY_WINDOW_SECONDS": str(WINDOW_SECONDS),
                                  "RECOVERY_MEMORY_EVENTS": str(MEMORY_EVENTS),
                                  "DRAIN_SECONDS": str(DRAIN_SECONDS)}) as stack:
        yield stack


def run_recovery_check(stack, unique: str, mode: str, cut, *, namespace: str = MAIN_NAMESPACE,
                       while_away=lambda: None, **options) -> dict:
    """Runs the script; `cut(replica_id)` is called when client A is ready to be cut off, and
    `while_away()` once the script goes on sending."""
    node = node_or_fail()
    user = f"recovery-user-{unique}"
    config = {
        "url": stack.url, "apiUrl": f"{stack.url}/api", "apiKey": STACK_ENV["API_KEY"],
        "marker": unique, "user": user, "token": issue_token(STACK_ENV["SECRET_KEY"], user),
        "mode": mode, "namespace": namespace, "mainNamespace": MAIN_NAMESPACE,
        "chatNamespace": CHAT_NAMESPACE, "timeoutMs": 10000,
        "reconnectDelayMs": (WINDOW_SECONDS + 3) * 1000 if mode == "window" else 1500,
        "events": {"myResponse": Event.MY_RESPONSE, "myBroadcastEvent": Event.MY_BROADCAST_EVENT,
                   "join": Event.JOIN, "myRoomEvent": Event.MY_ROOM_EVENT,
                   "serverInfo": Event.SERVER_INFO, "chatJoin": Event.CHAT_JOIN,
                   "chatSay": Event.CHAT_SAY, "chatMessage": Event.CHAT_MESSAGE,
                   "notification": Event.NOTIFICATION},
        **options,
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
            while_away()
            out, err = script.communicate(timeout=100)
        finally:
            if script.poll() is None:
                script.kill()
    assert script.returncode == 0, f"recovery_check.mjs exited {script.returncode}:\n{err}{out}"
    return json.loads(out.strip().splitlines()[-1])


def replica_named(stack, replica_id: str):
    return next(r for r in stack.web if r.replica_id == replica_id)


def restart(stack, replica) -> None:
    restart_replica(stack, replica, exit_timeout=DRAIN_SECONDS + 15)


def assert_recovered_everything_elsewhere(result: dict) -> list[str]:
    """A was recovered on another replica with every event sent to it, its room, its user or
    everyone (by B, the API and the worker), each once and in order; returns what it received."""
    assert result["firstPid"], "the CONNECT answer carried no pid"
    assert result["after"]["replica"] != result["before"]["replica"]
    assert result["recovered"] is True
    assert result["sameId"] is True
    received = [item["data"] for item in result["received"]]
    sent = result["sent"]
    everything = sent["a"] + sent["b"] + sent["api"] + sent["worker"]
    assert sorted(received) == sorted(everything), (
        f"missing {sorted(set(everything) - set(received))}, "
        f"twice {sorted({d for d in received if received.count(d) > 1})}")
    # In order: each sender's events as it sent them, and the log's offsets always increasing.
    for sender in ("b", "api"):
        assert [d for d in received if d in set(sent[sender])] == sent[sender]
    offsets = [int(item["offset"]) for item in result["received"]]
    assert offsets == sorted(set(offsets))
    return received


def test_killed_replica_client_recovers_everything_it_missed_on_another_replica(
        recovery_stack, unique, clients):
    killed = []
    room = f"recovery-{unique}"
    bystander = RecordingClient(recovery_stack.url, auth={
        "token": issue_token(STACK_ENV["SECRET_KEY"], f"recovery-user-{unique}")})

    def kill_replica(replica_id: str) -> None:
        victim = replica_named(recovery_stack, replica_id)
        os.killpg(victim.process.popen.pid, signal.SIGKILL)
        killed.append(victim)
        # A python-socketio client of the same user in the same room, which does not ask for
        # recovery, on a replica that stays.
        clients.append(bystander.connect())
        bystander.sio.emit(Event.JOIN, {"room": room})
        bystander.wait_for(Event.MY_RESPONSE, lambda r: room in str(r.get("data")))

    try:
        result = run_recovery_check(recovery_stack, unique, "kill", kill_replica)
    finally:
        for victim in killed:
            restart(recovery_stack, victim)

    received = assert_recovered_everything_elsewhere(result)
    # More than its replica kept in memory: the oldest came back from the stream.
    index = recovery_stack.web.index(replica_named(recovery_stack, result["after"]["replica"])) + 1
    assert replica_metric(recovery_stack, "socketio_recovery_read_back_entries_total",
                          replica=index) > 0
    # The client that did not ask got the same events (all but the one sent before it joined) as
    # before recovery existed: each once, the payload its only argument.
    sent = result["sent"]
    payloads = [p for p in bystander.events(Event.MY_RESPONSE)
                if str(p.get("data") if isinstance(p, dict) else p).startswith(unique)]
    assert all(isinstance(p, dict) for p in payloads), "an offset reached a client that did not ask"
    assert [p["data"] for p in payloads if p["data"] in set(sent["b"])] == sent["b"][1:]
    assert [p["data"] for p in payloads if p["data"] in set(sent["api"])] == sent["api"]
    assert len(payloads) == len(sent["b"]) - 1 + len(sent["api"])
    print(f"\nrecovered on {result['after']['replica']} after {result['awayMs']} ms away, "
          f"{len(received)} events, each once and in order")


def test_chat_client_recovers_its_room_and_messages(recovery_stack, unique):
    killed = []

    def kill_replica(replica_id: str) -> None:
        victim = replica_named(recovery_stack, replica_id)
        os.killpg(victim.process.popen.pid, signal.SIGKILL)
        killed.append(victim)

    try:
        result = run_recovery_check(recovery_stack, unique, "kill", kill_replica,
                                    namespace=CHAT_NAMESPACE)
    finally:
        for victim in killed:
            restart(recovery_stack, victim)

    # Every chat message and API event sent to its room or to everyone on /chat, once and in
    # order, and it is still in the room: it hears B after it is back, and may talk there.
    received = assert_recovered_everything_elsewhere(result)
    assert result["aSaid"] == {"ok": True}
    print(f"\n/chat: recovered on {result['after']['replica']} after {result['awayMs']} ms away, "
          f"{len(received)} events, each once and in order")


def test_broker_restart_while_its_replica_is_killed_client_recovers_everything(
        recovery_stack, unique, clients):
    """RabbitMQ stops, A's replica is killed while it is down, and A reconnects to another
    replica before the broker is back: the log and the sessions are on disk, the surviving
    replicas hold what their clients send meanwhile in their outboxes, and the API answers 503
    until it can publish (the script tries again). Once the broker is back, A has everything, and
    so has a python-socketio client that asked for recovery and stayed connected throughout."""
    killed = []
    outage = {}
    room, user = f"recovery-{unique}", f"recovery-user-{unique}"

    def stop_broker_and_kill_replica(replica_id: str) -> None:
        for _ in range(6):  # on a replica that stays (new sessions go round-robin)
            stayer = RecordingClient(recovery_stack.url, auth={
                "recover": True, "token": issue_token(STACK_ENV["SECRET_KEY"], user)}).connect()
            clients.append(stayer)
            if stayer.info()["replica"] != replica_id:
                break
        stayer.sio.emit(Event.JOIN, {"room": room})
        stayer.wait_for(Event.MY_RESPONSE, lambda r: room in str(r))
        outage["stayer"] = stayer
        recovery_stack.stop_broker()
        outage["from"] = time.monotonic()
        victim = replica_named(recovery_stack, replica_id)
        os.killpg(victim.process.popen.pid, signal.SIGKILL)
        killed.append(victim)

    def start_broker_later() -> None:
        time.sleep(BROKER_OUTAGE_SECONDS)  # A reconnects (1.5 s) and B sends meanwhile
        outage["restart_at"] = time.time()
        recovery_stack.start_broker()
        outage["seconds"] = time.monotonic() - outage["from"]

    try:
        result = run_recovery_check(recovery_stack, unique, "broker",
                                    stop_broker_and_kill_replica, while_away=start_broker_later,
                                    apiRetryMs=60000, everythingMs=30000)
    finally:
        if "from" in outage and "seconds" not in outage:
            recovery_stack.start_broker()
        for victim in killed:
            restart(recovery_stack, victim)
        for replica in recovery_stack.web:  # the next tests need every log reader back
            wait_until(lambda url=replica.url: recovery_ready(url), timeout=30,
                       what=f"{replica.replica_id}'s recovery log reader to be back")

    received = assert_recovered_everything_elsewhere(result)
    if result["backAt"] / 1000 >= outage["restart_at"]:
        # Served from memory during the outage only where the log was being read: a replica with
        # no recovery-capable client had stopped reading it (docs/design.md, "Routing by room"),
        # so it closed A's session for A to try again, and served it once the broker was back.
        log = (recovery_stack.run_dir / f"{result['after']['replica']}.log").read_text()
        assert "the recovery log is not readable" in log, "A was not back before the broker"
    # The one that stayed: every event after it joined, once, in order, each with its offset.
    sent = result["sent"]
    got = [(payload["data"], offset) for payload, offset in outage["stayer"].events(
        Event.MY_RESPONSE) if str(payload.get("data")).startswith(unique)] + [
        (payload["data"]["text"], offset) for payload, offset in outage["stayer"].events(
            Event.NOTIFICATION) if str(payload["data"].get("text")).startswith(unique)]
    from_b = sent["b"][1:]  # b0 went out before it joined
    assert sorted(d for d, _ in got) == sorted(from_b + sent["api"] + sent["worker"])
    for expected in (from_b, sent["api"]):
        assert [d for d, _ in got if d in set(expected)] == expected
    assert all(offset.isdigit() for _, offset in got)
    print(f"\nbroker down {outage['seconds']:.1f}s, replica killed meanwhile: recovered on "
          f"{result['after']['replica']} after {result['awayMs']} ms away, {len(received)} "
          "events, each once and in order")


def test_drained_replica_client_recovers_everything_on_another_replica(recovery_stack, unique):
    drained = []

    def drain_replica(replica_id: str) -> None:
        victim = replica_named(recovery_stack, replica_id)
        victim.process.send(signal.SIGTERM)  # it hands its clients to the others, then exits
        drained.append(victim)

    try:
        result = run_recovery_check(recovery_stack, unique, "drain", drain_replica)
        victim = drained[0]
        wait_until(lambda: not victim.process.running(), timeout=DRAIN_SECONDS + 15,
                   what="the drained replica to exit")
        assert victim.process.popen.returncode == 0
    finally:
        for victim in drained:
            restart(recovery_stack, victim)

    received = assert_recovered_everything_elsewhere(result)
    print(f"\ndrained: recovered on {result['after']['replica']} after {result['awayMs']} ms "
          f"away, {len(received)} events, each once and in order")


def test_past_the_window_a_new_session(recovery_stack, unique):
    result = run_recovery_check(recovery_stack, unique, "window", lambda replica_id: None)
    assert result["awayMs"] > WINDOW_SECONDS * 1000
    assert result["recovered"] is False
    assert result["sameId"] is False
    assert result["after"]["sid"] != result["before"]["sid"]
