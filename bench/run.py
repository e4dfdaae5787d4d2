"""`make bench`: this stack, the Flask-SocketIO recipe and a Node socket.io peer, side by side.

    python -m bench.run [--scenarios fanout-10,fanout-20,idle-10k] [--systems stack,recipe,node]
                        [--clients 1500] [--rate R] [--duration 20] [--warmup 4]
                        [--replicas 3] [--generators 2] [--connect-rate 500]
                        [--rooms 10] [--room-clients 20] [--room-rate 100] [--idle-seconds 6]
                        [--output FILE] [--markdown FILE] [--docs docs/benchmarks.md]
                        [--section NAME | --no-docs]

Scenarios: `fanout-R` (CLIENTS WebSocket clients, one of them broadcasts R messages/s to all for
DURATION seconds) and `idle-N` (N idle WebSocket clients on ONE replica, `idle-10k` = 10,000, then
one broadcast to all). `--rate R` replaces the fan-out scenarios by `fanout-R`.
`rooms-local-N` and `rooms-spread-N`: N replicas, ROOMS rooms of ROOM_CLIENTS WebSocket clients
each, connected straight to their replica's port (no nginx, so that placement is exact) and
joined with the app's `join` event, plus one client in no room on every replica; a publisher
process beside the system (a backend: bench/publisher.py, bench/peer/publisher.mjs) emits
ROOM_RATE `my_response` events/s for DURATION seconds, round-robin over the rooms. local: every
member of every room is on replica 1; spread: every room has members on every replica. Per
replica: CPU per event over the steady window less its CPU while idle (every client in, nothing
sent: the lower of IDLE_SECONDS just before and IDLE_SECONDS just after). Systems by default:
stack, recipe, node-sharded for rooms, the others for fanout and idle (--systems applies to all).

For each scenario, each system in turn is started alone (bench/systems.py), loaded by Node
processes running bench/generator.mjs (the official socket.io-client, WebSocket transport only),
measured and stopped. Per system: delivery ratio, latency percentiles (receipt time minus the send
time in the payload), CPU seconds per 1,000 deliveries of the web processes and of the whole server
(web + nginx + broker) over the steady window (the sending time after WARMUP, deliveries received
in it; utime+stime from /proc of each process and its children, loadtest/procstats.py), RSS growth
of the web processes per connection, and the ratios against the recipe. Results: a JSON file in
bench/results/, a markdown table, and the generated section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.systems import (
    CLIENTS_ASK_FOR_RECOVERY,
    DEFAULT_SYSTEMS,
    SYSTEMS,
    MissingDependency,
    StartupFailed,
    groups,
    make_system,
    missing_programs,
    publisher_command,
)
from loadtest import procstats

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = Path(__file__).resolve().parent / "generator.mjs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
SOURCE_ADDRESSES = [f"127.0.0.{n}" for n in range(1, 9)]  # all of 127.0.0.0/8 is loopback
DEFAULT_SCENARIOS = "fanout-10,fanout-20,idle-10k"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_scenario(name: str, args) -> dict[str, Any]:
    fanout = re.fullmatch(r"fanout-(\d+(?:\.\d+)?)", name)
    idle = re.fullmatch(r"idle-(\d+)(k?)", name)
    rooms = re.fullmatch(r"rooms-(local|spread)-(\d+)", name)
    if rooms:
        placement, replicas = rooms.group(1), int(rooms.group(2))
        if replicas < 2:
            raise SystemExit(f"{name}: rooms scenarios need 2 replicas or more")
        if args.rooms < 1 or args.room_clients < 1 or args.room_rate <= 0:
            raise SystemExit("--rooms and --room-clients must be 1 or more, --room-rate above 0")
        if placement == "spread" and args.room_clients < replicas:
            raise SystemExit(f"{name}: a room of {args.room_clients} clients cannot have a member "
                             f"on each of {replicas} replicas (--room-clients)")
        return {"name": name, "kind": "rooms", "placement": placement, "replicas": replicas,
                "rooms": args.rooms, "room_clients": args.room_clients,
                "clients": args.rooms * args.room_clients + replicas, "rate": args.room_rate,
                "duration": args.duration,
                "messages": max(1, round(args.room_rate * args.duration))}
    if fanout:
        rate = float(fanout.group(1))
        return {"name": name, "kind": "fanout", "clients": args.clients, "rate": rate,
                "duration": args.duration, "replicas": args.replicas,
                "messages": max(1, round(rate * args.duration))}
    if idle:
        clients = int(idle.group(1)) * (1000 if idle.group(2) else 1)
        return {"name": name, "kind": "idle", "clients": clients, "rate": 0.0, "duration": 0.0,
                "replicas": 1, "messages": 1}
    raise SystemExit(f"unknown scenario {name!r}: fanout-<rate>, idle-<clients> (e.g. idle-10k) "
                     "or rooms-<local|spread>-<replicas> (e.g. rooms-local-3)")


def raise_open_files(sockets: int) -> None:
    """The generators and the servers inherit this process's limit; `sockets`: the most that one
    process needs (nginx holds two per client, the web process of idle-10k one)."""
    wanted = max(65536, sockets + 4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((wanted, max(hard, wanted)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sockets + 1024:
        progress(f"warning: open-file limit {soft} is low for {sockets} sockets (ulimit -n)")


def machine_facts() -> dict[str, Any]:
    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "?"

    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    from bench.systems import redis_binary
    from scripts.stack import nginx_binary

    return {
        "cores": os.cpu_count(), "cpu": cpu_model, "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "node": version(["node", "--version"]),
        "nginx": version([nginx_binary() or "nginx", "-v"]).replace("nginx version: ", ""),
        "redis": version([redis_binary() or "redis-server", "--version"]).split(" sha=")[0],
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- one system under one scenario ----------------------------------------------------------------

def rss(pids: dict[str, list[int]], group: str) -> int:
    table = procstats.read_all()
    return sum(table[pid][2] for pid in procstats.descendants(pids.get(group, []), table))


class MachineSampler(threading.Thread):
    """The whole machine's busy CPU seconds from /proc/stat, every 0.5 s, in procstats' sample
    format (group "machine"): what other processes used besides the measured ones."""

    def __init__(self) -> None:
        super().__init__(name="machine-cpu", daemon=True)
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def sample(self) -> None:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        busy = (user + nice + system + irq + softirq + steal) / procstats.TICKS
        self.samples.append({"t": time.time(), "cpu": {"machine": busy}})

    def run(self) -> None:
        self.sample()
        while not self.stopping.wait(0.5):
            self.sample()

    def stop(self) -> list[dict[str, Any]]:
        self.stopping.set()
        self.join(timeout=5)
        self.sample()
        return self.samples


class LineProcess:
    """A helper process that talks JSON lines (bench/generator.mjs, the rooms publishers); a thread
    reads its lines so waits can time out."""

    role = "helper"

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, start_new_session=True)
        self.pid = self.popen.pid
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        self.popen.stdin.write(json.dumps(message) + "\n")
        self.popen.stdin.flush()

    def wait_for(self, event: str, deadline: float) -> dict[str, Any]:
        """The process's next `event` line; fails at the deadline or when it exits first."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no '{event}' from the {self.role} in time") from None
            if line is None:
                raise RuntimeError(f"the {self.role} exited ({self.popen.wait()}) before '{event}'")
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("event") == event:
                return message

    def finish(self, timeout: float = 15) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.close()  # what a rooms generator waits for before it exits
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()


class Generator(LineProcess):
    """One bench/generator.mjs process."""

    role = "generator"

    def __init__(self, config: dict[str, Any]):
        super().__init__(["node", str(GENERATOR), json.dumps(config)])


class Publisher(LineProcess):
    """The rooms scenarios' publisher of a system (bench/systems.py's publisher_command)."""

    role = "publisher"


def measure(system_name: str, scenario: dict[str, Any], args) -> dict[str, Any]:
    label = f"[{scenario['name']}] {system_name}"
    clients, replicas = scenario["clients"], scenario["replicas"]
    result: dict[str, Any] = {"system": system_name, "replicas": replicas,
                              "load_before": [round(x, 2) for x in os.getloadavg()]}
    system = make_system(system_name, replicas, -(-clients // replicas), scenario["rate"])
    started = time.monotonic()
    system.start()
    generators: list[Generator] = []
    sampler, machine = None, None
    try:
        pids = groups(system)
        # idle: straight to the one web process. Through nginx each client costs it 2 sockets, and
        # 10,000 clients need more than a common hard open-file limit (20,000) allows a process.
        url = system.web[0].url if scenario["kind"] == "idle" else system.url
        result["through"] = "web process" if scenario["kind"] == "idle" else "nginx"
        progress(f"{label}: up in {time.monotonic() - started:.1f}s ({replicas} "
                 f"{'replica' if replicas == 1 else 'replicas'}), connecting {clients} clients "
                 f"to the {result['through']}")
        time.sleep(1.0)
        rss_before = rss(pids, "web")
        shares = [clients // args.generators + (1 if i < clients % args.generators else 0)
                  for i in range(args.generators)]
        connect_timeout_ms = 20_000
        connect_deadline = time.monotonic() + clients / args.connect_rate + 60
        for index, share in enumerate(s for s in shares if s > 0):
            generators.append(Generator({
                "url": url, "clients": share, "broadcaster": index == 0,
                "connectRate": args.connect_rate / args.generators,
                "addresses": SOURCE_ADDRESSES[index::args.generators],
                "connectTimeoutMs": connect_timeout_ms,
                "recover": system_name in CLIENTS_ASK_FOR_RECOVERY,
                # The first connections of a cold replica one at a time: the recipe's stock
                # KombuManager can hang clients of a burst of first emits (docs/benchmarks.md).
                "warm": 2 * replicas if index == 0 else 0}))
            if index == 0:
                generators[0].wait_for("warm", connect_deadline)
        sampler = procstats.Sampler({**pids, "generator": [g.pid for g in generators]},
                                    interval=0.5).start()
        machine = MachineSampler()
        machine.start()
        connected = [g.wait_for("connected", connect_deadline) for g in generators]
        result["connected"] = sum(c["connected"] for c in connected)
        result["connect_failed"] = sum(c["failed"] + c["pending"] for c in connected)
        result["connect_seconds"] = round(max(c["seconds"] for c in connected), 1)
        result["errors"] = report.merge_counts(c["errors"] for c in connected)
        time.sleep(args.settle if scenario["kind"] == "fanout" else max(args.settle, 5.0))
        rss_after = rss(pids, "web")
        result["web_rss_mib"] = round(rss_after / 2**20, 1)
        result["memory_per_connection_kib"] = (
            round((rss_after - rss_before) / 1024 / result["connected"], 1)
            if result["connected"] else None)
        failed = result["connect_failed"]
        progress(f"{label}: {result['connected']} connected in {result['connect_seconds']}s"
                 f"{f', {failed} did not' if failed else ''}; "
                 f"{result['memory_per_connection_kib']} KiB per connection; "
                 + (f"broadcasting {scenario['rate']:g}/s for {scenario['duration']:g}s"
                    if scenario["kind"] == "fanout" else "one broadcast to all"))

        now_ms = time.time() * 1000
        start_ms = now_ms + 500
        if scenario["kind"] == "fanout":
            interval_ms = 1000 / scenario["rate"]
            end_ms = start_ms + scenario["messages"] * interval_ms
            warmup = min(args.warmup, scenario["duration"] / 3)
            window = [start_ms + warmup * 1000, end_ms]
        else:
            interval_ms, end_ms = 1000.0, start_ms
            window = [start_ms, start_ms + 5000]
        deadline_ms = end_ms + args.drain * 1000
        command = {"cmd": "go", "start": start_ms, "messages": scenario["messages"],
                   "intervalMs": interval_ms, "window": window, "deadline": deadline_ms}
        for generator in generators:
            generator.send(command)
        done_deadline = time.monotonic() + (deadline_ms - now_ms) / 1000 + 30
        done = [g.wait_for("done", done_deadline) for g in generators]
        samples, sampler = sampler.stop(), None
        receipts = [d["lastReceipt"] for d in done if d["lastReceipt"]]
        if scenario["kind"] == "idle" and receipts:  # the broadcast: send to last receipt
            window = [window[0], max(window[0] + 1, *receipts)]
        result.update(report.summarize(done, samples, window, scenario, pids,
                                       machine_samples=machine.stop()))
        result["errors"] = report.merge_counts([result["errors"], *(d["errors"] for d in done)])
        progress(f"{label}: delivered {result['delivery_ratio']:.4f}, p50 "
                 f"{result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms; "
                 f"web CPU-s/1k {result['cpu_per_1000']['web']}")
    finally:
        if sampler is not None:
            sampler.stop()
        if machine is not None and machine.is_alive():
            machine.stop()
        for generator in generators:
            generator.finish()
        system.stop()
        if not args.keep_logs:
            shutil.rmtree(system.run_dir, ignore_errors=True)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


# -- rooms: events to rooms, members on one replica or on all --------------------------------------

def room_names(count: int) -> list[str]:
    # Never 20 characters long: the sharded Redis adapter takes such a room for a socket id and
    # publishes to it on the namespace's main channel, to every process.
    return [f"bench-room-{index}" for index in range(count)]


def room_plan(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Every client of a rooms scenario: {"replica": index from 0, "room": name or None,
    "roomIndex"}. First one client in no room on each replica (a replica serves someone, as in
    production, and the recipe's stock manager starts listening only at its first connect), then
    the members, member j of room r on replica 0 (local) or on replica (r * room_clients + j) %
    replicas (spread: room_clients >= replicas consecutive members cover every replica, and the
    replicas hold as many members as each other, give or take one)."""
    replicas, names = scenario["replicas"], room_names(scenario["rooms"])
    plan = [{"replica": index, "room": None, "roomIndex": -1} for index in range(replicas)]
    for member in range(scenario["room_clients"]):
        for index, name in enumerate(names):
            slot = index * scenario["room_clients"] + member
            replica = 0 if scenario["placement"] == "local" else slot % replicas
            plan.append({"replica": replica, "room": name, "roomIndex": index})
    return plan


def idle_window(seconds: float) -> list[float]:
    """[start, end] in epoch ms of `seconds` of waiting, a second after now (the last traffic
    settles)."""
    time.sleep(1.0)
    start = time.time() * 1000
    time.sleep(seconds)
    return [start, time.time() * 1000]


def measure_rooms(system_name: str, scenario: dict[str, Any], args) -> dict[str, Any]:
    label = f"[{scenario['name']}] {system_name}"
    replicas = scenario["replicas"]
    result: dict[str, Any] = {"system": system_name, "replicas": replicas,
                              "placement": scenario["placement"], "through": "web processes",
                              "load_before": [round(x, 2) for x in os.getloadavg()]}
    system = make_system(system_name, replicas, scenario["clients"], 0.0)
    started = time.monotonic()
    system.start()
    publisher: Publisher | None = None
    generators: list[Generator] = []
    sampler, machine = None, None
    completed = False
    try:
        pids = groups(system)
        replica_groups = [(f"replica-{replica.index}", replica.replica_id,
                           replica.process.popen.pid) for replica in system.web]
        command, env = publisher_command(system_name, system)
        publisher = Publisher(command, env)
        publisher.wait_for("ready", time.monotonic() + 90)
        plan = room_plan(scenario)
        members = [sum(1 for t in plan if t["replica"] == index and t["room"])
                   for index in range(replicas)]
        progress(f"{label}: up in {time.monotonic() - started:.1f}s ({replicas} replicas), "
                 f"publisher ready; connecting {len(plan)} clients straight to the replicas "
                 f"({', '.join(map(str, members))} room members, 1 more each)")
        targets = [{"url": system.web[t["replica"]].url, "room": t["room"],
                    "roomIndex": t["roomIndex"]} for t in plan]
        bystanders, in_rooms = targets[:replicas], targets[replicas:]
        shares = [(bystanders if index == 0 else []) + in_rooms[index::args.generators]
                  for index in range(args.generators)]
        connect_timeout_ms = 20_000
        connect_deadline = time.monotonic() + len(plan) / args.connect_rate + 60
        for index, share in enumerate(s for s in shares if s):
            generators.append(Generator({
                "targets": share, "roomCount": scenario["rooms"], "broadcaster": False,
                "connectRate": args.connect_rate / args.generators,
                "addresses": SOURCE_ADDRESSES[index::args.generators],
                "connectTimeoutMs": connect_timeout_ms,
                "recover": system_name in CLIENTS_ASK_FOR_RECOVERY,
                # Each replica's first connections one at a time (see measure()).
                "warm": min(len(share), 2 * replicas) if index == 0 else 0}))
            if index == 0:
                generators[0].wait_for("warm", connect_deadline)
        sampler = procstats.Sampler(
            {**pids, **{group: [pid] for group, _, pid in replica_groups},
             "generator": [g.pid for g in generators], "publisher": [publisher.pid]},
            interval=0.5).start()
        machine = MachineSampler()
        machine.start()
        connected = [g.wait_for("connected", connect_deadline) for g in generators]
        result["connected"] = sum(c["connected"] for c in connected)
        result["joined"] = sum(c["joined"] for c in connected)
        result["join_failed"] = sum(c["joinFailed"] for c in connected)
        result["connect_failed"] = sum(c["failed"] + c["pending"] for c in connected)
        result["connect_seconds"] = round(max(c["seconds"] for c in connected), 1)
        result["errors"] = report.merge_counts(c["errors"] for c in connected)
        # Idle: every client in, nothing sent. What each process uses then is subtracted from
        # its CPU in the window: what is left is the cost of the events. Measured before and
        # after the events, the lower taken: a process may still be busy after its start (a
        # Node process compiling, collecting) or after the events (catching up).
        idle_windows = [idle_window(args.idle_seconds)]
        failed = result["connect_failed"] + result["join_failed"]
        progress(f"{label}: {result['joined']} joined in {result['connect_seconds']}s"
                 f"{f', {failed} did not' if failed else ''}; {scenario['rate']:g} events/s to "
                 f"{scenario['rooms']} rooms for {scenario['duration']:g}s")

        now_ms = time.time() * 1000
        start_ms = now_ms + 500
        interval_ms = 1000 / scenario["rate"]
        end_ms = start_ms + scenario["messages"] * interval_ms
        warmup = min(args.warmup, scenario["duration"] / 3)
        window = [start_ms + warmup * 1000, end_ms]
        deadline_ms = end_ms + args.drain * 1000
        go = {"cmd": "go", "start": start_ms, "messages": scenario["messages"],
              "intervalMs": interval_ms, "window": window, "deadline": deadline_ms,
              "rooms": room_names(scenario["rooms"])}
        for process in (*generators, publisher):
            process.send(go)
        done_deadline = time.monotonic() + (deadline_ms - now_ms) / 1000 + 30
        published = publisher.wait_for("done", done_deadline)
        done = [g.wait_for("done", done_deadline) for g in generators]
        completed = True
        idle_windows.append(idle_window(args.idle_seconds))
        samples, sampler = sampler.stop(), None
        result.update(report.summarize_rooms(
            done, published, samples=samples, window=window, idle_windows=idle_windows,
            replicas=[(group, replica_id, count) for (group, replica_id, _), count
                      in zip(replica_groups, members, strict=True)],
            groups=pids, machine_samples=machine.stop()))
        result["errors"] = report.merge_counts([result["errors"], *(d["errors"] for d in done)])
        cost = result["non_member_us_per_event"] or result["member_us_per_event"]
        progress(f"{label}: delivered {result['delivery_ratio']:.4f}, p50 "
                 f"{result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms; "
                 f"{'replica without a member' if result['non_member_us_per_event'] else 'member'}"
                 f" CPU {cost['mean']} µs/event (mean)")
    finally:
        if sampler is not None:
            sampler.stop()
        if machine is not None and machine.is_alive():
            machine.stop()
        for process in (*generators, *([publisher] if publisher else [])):
            process.finish(15 if completed else 0)
        system.stop()
        if not args.keep_logs:
            shutil.rmtree(system.run_dir, ignore_errors=True)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


# -- the whole run --------------------------------------------------------------------------------

def stack_revision() -> str:
    """The commit the stack runs from, and whether its code differs from it."""
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--", "web", "common", "scripts", "nginx")
    return commit + (" with uncommitted changes" if dirty else "")


def shown_command(argv: list[str], revision: str | None) -> str:
    """The command as the docs show it: without this machine's paths."""
    shown, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in ("--docs", "--output", "--markdown", "--revision"):
            skip = True
        elif not item.startswith(("--docs=", "--output=", "--markdown=", "--revision=")):
            shown.append(item)
    if revision:
        shown += ["--stack-rev", revision]
    return " ".join(["python -m bench.run", *shown])


def run_at_revision(args, argv: list[str]) -> int:
    """The whole benchmark from an export of --stack-rev (with today's bench/), so that "this
    stack" is the stack of that commit; results and docs go where this checkout's would."""
    import tempfile

    commit = subprocess.run(["git", "rev-parse", "--short", f"{args.stack_rev}^{{commit}}"],
                            cwd=ROOT, capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--stack-rev: no such commit: {args.stack_rev}")
    revision = commit.stdout.strip()
    export = Path(tempfile.mkdtemp(prefix=f"bench-{revision}-"))
    try:
        archive = subprocess.Popen(["git", "archive", revision], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(export)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {revision} failed")
        shutil.rmtree(export / "bench", ignore_errors=True)
        shutil.copytree(ROOT / "bench", export / "bench",
                        ignore=shutil.ignore_patterns("results", "__pycache__"))
        (export / "node_modules").symlink_to(ROOT / "node_modules")
        output = args.output or RESULTS_DIR / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{revision}.json"
        rest, skip = [], False
        for item in argv:
            if skip or item == "--stack-rev":
                skip = not skip and item == "--stack-rev"
                continue
            if not item.startswith("--stack-rev="):
                rest.append(item)
        progress(f"this stack at {revision}: running from an export of that commit")
        return subprocess.run(
            [sys.executable, "-m", "bench.run", *rest, "--docs", str(args.docs.resolve()),
             "--output", str(output.resolve()), "--revision", revision], cwd=export).returncode
    finally:
        shutil.rmtree(export, ignore_errors=True)


def plot(results: Path, png: Path) -> None:
    """The run's figure, drawn by bench/plot.py with matplotlib from the load-test virtualenv."""
    python = ROOT / ".venv-loadtest" / "bin" / "python"
    if not python.exists():
        progress(f"no plot: {python.relative_to(ROOT)} is missing (make .venv-loadtest/.installed)")
        return
    subprocess.run([str(python), "-m", "bench.plot", str(results), str(png)], cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios",
                        help=f"default {DEFAULT_SCENARIOS}; with --rate alone: fanout-RATE")
    parser.add_argument("--systems", help=f"some of {', '.join(SYSTEMS)}; default: "
                        + "; ".join(f"{', '.join(names)} for {kind}"
                                    for kind, names in DEFAULT_SYSTEMS.items()))
    parser.add_argument("--clients", type=int, default=1500,
                        help="clients of the fan-out scenarios")
    parser.add_argument("--rate", type=float, help="broadcasts/s of the fan-out scenarios")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of broadcasting")
    parser.add_argument("--warmup", type=float, default=4.0,
                        help="seconds of broadcasting before the steady window opens")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="at most this long after the last send for the last receipts")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the last connect before memory is read")
    parser.add_argument("--replicas", type=int, default=3, help="of the fan-out scenarios")
    parser.add_argument("--generators", type=int, default=2, help="Node generator processes")
    parser.add_argument("--connect-rate", type=float, default=500.0, help="new clients per second")
    parser.add_argument("--rooms", type=int, default=10, help="rooms of the rooms scenarios")
    parser.add_argument("--room-clients", type=int, default=20,
                        help="members of each room in the rooms scenarios")
    parser.add_argument("--room-rate", type=float, default=100.0,
                        help="events/s of the rooms scenarios, round-robin over the rooms")
    parser.add_argument("--idle-seconds", type=float, default=6.0,
                        help="rooms: seconds of idle CPU measured before and after sending "
                        "(the lower is subtracted)")
    parser.add_argument("--output", type=Path, help="the JSON results (default bench/results/)")
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--section", default="",
                        help="update <!-- bench:SECTION:begin --> instead of <!-- bench:begin -->")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep each system's run directory")
    parser.add_argument("--stack-rev", help="measure this stack as of a commit (e.g. before a "
                        "change): the whole run goes from an export of it, with today's bench/")
    parser.add_argument("--revision", help=argparse.SUPPRESS)  # set by --stack-rev's run
    args = parser.parse_args(argv)
    if args.stack_rev:
        return run_at_revision(args, list(argv if argv is not None else sys.argv[1:]))

    names = [s for s in (args.scenarios or DEFAULT_SCENARIOS).split(",") if s]
    if args.rate is not None and not args.scenarios:
        names = [f"fanout-{args.rate:g}"]
    elif args.rate is not None:
        names = [f"fanout-{args.rate:g}"] + [n for n in names if not n.startswith("fanout-")]
    scenarios = [parse_scenario(name, args) for name in names]
    chosen = [s for s in (args.systems or "").split(",") if s]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown or (args.systems is not None and not chosen):
        raise SystemExit(f"--systems takes some of {', '.join(SYSTEMS)}; got {args.systems!r}")

    def systems_of(scenario: dict[str, Any]) -> list[str]:
        return chosen or list(DEFAULT_SYSTEMS[scenario["kind"]])

    missing = missing_programs(sorted({name for s in scenarios for name in systems_of(s)}))
    if missing:
        print("error: `make bench` needs what is missing here:\n  " + "\n  ".join(missing),
              file=sys.stderr)
        return 2
    raise_open_files(max(s["clients"] * (2 if s["kind"] == "fanout" else 1) for s in scenarios))

    started = datetime.now(UTC)
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": shown_command(argv if argv is not None else sys.argv[1:], args.revision),
        "stack_revision": args.revision or stack_revision(),
        "machine": machine_facts(), "generators": args.generators, "scenarios": [],
    }
    progress(f"{len(scenarios)} scenario(s), {sum(len(systems_of(s)) for s in scenarios)} runs of "
             f"a system; {doc['machine']['cores']} cores, load average "
             f"{doc['machine']['load_at_start']}")
    failed = False
    for scenario in scenarios:
        entry = {**scenario, "systems": []}
        doc["scenarios"].append(entry)
        for name in systems_of(scenario):
            try:
                entry["systems"].append((measure_rooms if scenario["kind"] == "rooms"
                                         else measure)(name, scenario, args))
            except (MissingDependency, StartupFailed, RuntimeError) as exc:
                failed = True
                progress(f"[{scenario['name']}] {name}: FAILED: {exc}")
                entry["systems"].append({"system": name, "error": str(exc)})
    doc["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    doc["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.add_ratios(doc)

    output = args.output or RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=1) + "\n")
    markdown = report.markdown(doc)
    if args.markdown:
        args.markdown.write_text(markdown)
    if not args.no_docs:
        report.update_docs(args.docs, markdown, args.section)
        plot(output, args.docs.with_name(f"benchmarks-{args.section or 'latest'}.png"))
    print(markdown)
    progress(f"results: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}"
             + ("" if args.no_docs else f"; updated {args.docs.name}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
