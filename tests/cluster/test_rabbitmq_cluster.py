"""The stack on a three-node RabbitMQ cluster: quorum job queues, and one node stopped under load.

The tests share one stack (tests/cluster/conftest.py) and run in this order: the cluster and its
queues, then one node stopped while clients broadcast and jobs run, then the node back.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import pytest

from common.contract import Event
from tests.cluster.conftest import NODES
from tests.support.clients import RecordingClient, connect_many
from tests.support.metrics import sample
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)

CLIENTS = 24
BROADCAST_INTERVAL = 0.1  # seconds between two broadcasts of the load
BEFORE_STOP = 3.0  # seconds of load before the node is stopped
AFTER_STOP = 12.0  # seconds of load after it
FANOUT_BACK_WITHIN = 5.0  # every broadcast sent this long after the stop must reach every client
JOBS = 12
JOB_STEPS = 4  # 0.5 s each (the long_task default): 2 s per job, 2 workers


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def container(stack, service: str) -> str:
    (cid,) = stack.container_ids(service)
    return cid


def rabbitmqctl(stack, node: str, *args: str) -> str:
    return docker("exec", container(stack, node), "rabbitmqctl", "-q", *args)


def running_nodes(stack, via: str) -> set[str]:
    status = json.loads(rabbitmqctl(stack, via, "cluster_status", "--formatter", "json"))
    return set(status["running_nodes"])


def queues(stack, via: str) -> dict[str, dict]:
    return {q["name"]: q for q in json.loads(rabbitmqctl(
        stack, via, "list_queues", "name", "type", "leader", "members", "online",
        "--formatter", "json"))}


def queue_nodes(stack, via: str) -> dict[str, str]:
    """Classic queue name -> the node its process runs on (a classic queue lives on one node;
    quorum queues and the recovery streams are replicated and have no single pid)."""
    lines = rabbitmqctl(stack, via, "list_queues", "name", "pid", "--no-table-headers")
    nodes = {}
    for name, pid in (line.split("\t") for line in lines.splitlines() if "\t" in line):
        node = re.match(r"<(rabbit@[^.]+)\.", pid)
        if node is not None:
            nodes[name] = node.group(1)
    return nodes


def inside(container_name: str, path: str) -> str:
    """GET a replica's own port from inside its container (it is not published)."""
    return docker("exec", container_name, "python", "-c",
                  "import urllib.request; print(urllib.request.urlopen("
                  f"'http://127.0.0.1:5000{path}', timeout=5).read().decode())")


def replica_containers(stack) -> dict[str, str]:
    """Replica id (as server_info and the fan-out queue names show it) -> web container."""
    return {json.loads(inside(name, "/healthz"))["replica"]: name
            for name in stack.web_replicas().values()}


def test_three_nodes_and_quorum_job_queues_replicated_on_each(cluster_stack):
    assert running_nodes(cluster_stack, NODES[0]) == {f"rabbit@{node}" for node in NODES}
    # A job that can never run is dead-lettered: that declares jobs.dead as the worker does.
    docker("exec", cluster_stack.container_ids("worker")[0], "python", "-c",
        "import os; from common.job_queue import JobQueue; "
        "JobQueue(os.environ['AMQP_URL']).enqueue('no-such-job', {})")
    wait_until(lambda: "jobs.dead" in queues(cluster_stack, NODES[0]), 20)
    found = queues(cluster_stack, NODES[0])
    for name in ("jobs", "jobs.dead"):
        assert found[name]["type"] == "quorum", found[name]
        assert sorted(found[name]["members"]) == sorted(f"rabbit@{node}" for node in NODES)
    # The dead-letter command declares the queues as the worker does (no PRECONDITION_FAILED).
    listed = subprocess.run(["docker", "exec", cluster_stack.container_ids("worker")[0], "python",
                             "-m", "worker", "dead", "list"], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0 and "no-such-job" in listed.stdout, listed.stderr[-2000:]


class Load:
    """Clients on every replica; one of them broadcasts a numbered message every 100 ms."""

    def __init__(self, stack, opened: list[RecordingClient]):
        self.stack = stack
        self.marker = uuid.uuid4().hex[:8]
        self.clients = connect_many(stack.url, CLIENTS)
        opened.extend(self.clients)
        self.replica_of = {client: client.info()["replica"] for client in self.clients}
        self.sent: dict[int, float] = {}  # sequence number -> time sent (monotonic)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._broadcast, daemon=True)

    def _broadcast(self) -> None:
        sender, number = self.clients[0], 0
        while not self.stop.is_set() and number < 10_000:
            self.sent[number] = time.monotonic()
            sender.sio.emit(Event.MY_BROADCAST_EVENT, {"data": f"{self.marker}:{number}"})
            number += 1
            time.sleep(BROADCAST_INTERVAL)

    def received(self, client: RecordingClient) -> set[int]:
        prefix = f"{self.marker}:"
        return {int(p["data"][len(prefix):]) for p in client.events(Event.MY_RESPONSE)
                if isinstance(p.get("data"), str) and p["data"].startswith(prefix)}


def enqueue_long_tasks(stack, room: str, count: int) -> list[str]:
    """Queue `count` long_task jobs reporting to `room`, from inside a worker container."""
    script = ("import os, sys; from common.job_queue import JobQueue; "
              "queue = JobQueue(os.environ['AMQP_URL']); "
              f"print(' '.join(queue.enqueue('long_task', {{'room': {room!r}, "
              f"'steps': {JOB_STEPS}}}) for _ in range({count})))")
    return docker("exec", stack.container_ids("worker")[0], "python", "-c", script).split()


def worker_runs(stack) -> dict[str, list[tuple[str, str, float, float | None]]]:
    """Job id -> [(worker container, outcome, started, ended)] from the workers' logs."""
    runs: dict[str, list] = defaultdict(list)
    for worker in stack.container_ids("worker"):
        started: dict[str, float] = {}
        for line in docker("logs", "--timestamps", worker).splitlines():
            match = re.match(r"(\S+) .* job long_task (\w+) (?:attempt \d+ )?(started|done)", line)
            if not match:
                continue
            stamp = _seconds(match.group(1))
            job_id, what = match.group(2), match.group(3)
            if what == "started":
                started[job_id] = stamp
            else:
                runs[job_id].append((worker[:12], "done", started.pop(job_id, stamp), stamp))
        for job_id, stamp in started.items():
            runs[job_id].append((worker[:12], "unfinished", stamp, None))
    return runs


def _seconds(docker_timestamp: str) -> float:
    hms = docker_timestamp.split("T")[1].rstrip("Z")
    hours, minutes, seconds = hms.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_a_node_stopped_under_load_loses_no_job_and_fan_out_is_back_within_5s(
        cluster_stack, clients, capsys):
    stack = cluster_stack
    load = Load(stack, clients)
    replicas = replica_containers(stack)
    assert set(load.replica_of.values()) == set(replicas)

    # The node to stop: the one holding the most replicas' fan-out queues (the case that costs
    # messages), the job queue's leader if it is a tie.
    where = queue_nodes(stack, NODES[0])
    leader = queues(stack, NODES[0])["jobs"]["leader"]
    listener_nodes = {name: node for name, node in where.items()
                      if name.startswith("flask-socketio.")}
    victim = max((f"rabbit@{n}" for n in NODES), key=lambda node: (
        sum(1 for n in listener_nodes.values() if n == node), node == leader))
    victim_service = victim.split("@")[1]
    survivor = next(n for n in NODES if n != victim_service)
    replicas_on_victim = {replica for replica in replicas for name, node in listener_nodes.items()
                          if node == victim and name.startswith(f"flask-socketio.{replica}.")}

    # Jobs, from a client whose replica's fan-out queue is not on the stopped node.
    job_client = next((c for c in load.clients if load.replica_of[c] not in replicas_on_victim),
                      load.clients[0])
    room = f"cluster-jobs-{load.marker}"
    job_client.sio.emit(Event.JOIN, {"room": room})
    time.sleep(0.5)
    job_ids = enqueue_long_tasks(stack, room, JOBS)
    load.thread.start()
    time.sleep(BEFORE_STOP)
    victim_container = container(stack, victim_service)
    stopped_at = time.monotonic()
    docker("stop", "-t", "30", victim_container)
    stop_took = time.monotonic() - stopped_at
    time.sleep(max(0.0, AFTER_STOP - stop_took))
    load.stop.set()
    load.thread.join(10)
    time.sleep(3)  # the last broadcasts arrive

    # Fan-out: what each client missed, per replica, against what each replica counted.
    sent = dict(load.sent)
    missed_by_replica: dict[str, set[int]] = defaultdict(set)
    late_misses = []
    for client in load.clients:
        missing = set(sent) - load.received(client)
        missed_by_replica[load.replica_of[client]] |= missing
        late_misses += [n for n in missing if sent[n] >= stopped_at + FANOUT_BACK_WITHIN]
    counted = {}
    for replica, name in replicas.items():
        exposition = inside(name, "/metrics")
        counted[replica] = {where: sample(exposition, "broker_messages_lost_total",
                                           f'where="{where}"')
                             for where in ("listener_queue_node_down", "listener_queue_expired",
                                           "outbox_full")}
    gaps = {replica: (min(m), max(m), len(m)) for replica, m in missed_by_replica.items() if m}

    # Jobs: every one finished (logged `done`, acknowledged), none by two workers at once.
    wait_until(lambda: all(any(run[1] == "done" for run in worker_runs(stack).get(job, []))
                           for job in job_ids), 60)
    runs = worker_runs(stack)
    overlapping = []
    for job in job_ids:
        done = sorted((run for run in runs[job] if run[1] == "done"), key=lambda run: run[2])
        overlapping += [(job, a, b) for a, b in zip(done, done[1:], strict=False)
                        if b[2] < a[3]]
    done_twice = [job for job in job_ids if sum(run[1] == "done" for run in runs[job]) > 1]
    job_done_events = defaultdict(int)
    for payload in job_client.events(Event.JOB_DONE):
        job_done_events[payload["job_id"]] += 1

    with capsys.disabled():
        print(f"\n  stopped {victim} (job queue leader: {leader}) in {stop_took:.1f}s; "
              f"fan-out queues on it: {sorted(replicas_on_victim) or 'none'}")
        print(f"  broadcasts sent: {len(sent)} to {CLIENTS} clients; missed per replica "
              f"(first, last, count): {gaps or 'none'}")
        for replica, numbers in missed_by_replica.items():
            if numbers:
                first, last = (f(sent[n] for n in numbers) - stopped_at for f in (min, max))
                print(f"    {replica}: missed broadcasts sent {first:+.1f}s to {last:+.1f}s "
                      f"after the stop")
        print(f"  counted by the replicas: {counted}")
        print(f"  jobs: {len(job_ids)} done; run twice (one after the other): {len(done_twice)}; "
              f"job_done events per job: {sorted(set(job_done_events.values()))}")

    assert not late_misses, (
        f"broadcasts sent more than {FANOUT_BACK_WITHIN:.0f}s after the stop were missed: "
        f"{sorted(set(late_misses))[:20]}")
    for replica, numbers in missed_by_replica.items():
        if numbers:
            assert sum(counted[replica].values()) >= 1, (
                f"{replica} missed {len(numbers)} broadcasts and counted no loss: {counted}")
    assert not overlapping, f"jobs run to completion by two workers at once: {overlapping}"
    assert all(job_done_events[job] >= 1 for job in job_ids), (
        f"jobs without job_done at their client: "
        f"{[job for job in job_ids if not job_done_events[job]]}")

    # The node comes back and rejoins; the quorum queues get their third member back online.
    docker("start", victim_container)
    stack.wait_healthy(victim_service, 1, timeout=180)
    wait_until(lambda: running_nodes(stack, survivor) == {f"rabbit@{n}" for n in NODES}, 60)
    wait_until(lambda: len(queues(stack, survivor)["jobs"]["online"]) == len(NODES), 60)
