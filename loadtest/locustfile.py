"""Locust users that are real python-socketio clients, talking to the stack through nginx.

Run by loadtest/run.py (`make loadtest`), or by hand, alone or distributed over machines:

    locust -f loadtest/locustfile.py --headless -u 1501 -r 150 -H http://127.0.0.1:8080 \\
        --lt-steady 40 --lt-results out.json SocketIOClient BroadcastSender NotificationSender
    # multi-machine: the same with --master --expect-workers N on one machine, and
    #   locust -f loadtest/locustfile.py --worker --master-host <master> on the others
    #   (the same --lt-* options on each; then: python -m loadtest.report out.json)

Every process records what its clients did; workers ship it to the master with their stats
reports (report_to_master / worker_report), and the master writes one results file at the end.
See loadtest/analysis.py for what is counted as expected, received and latency.
"""

# Locust monkey-patches with gevent when it is imported, before this file is. Importing it first
# here too keeps that true if this module is ever imported on its own: socketio's client (threads,
# queues, websocket-client's and requests' sockets) must run on gevent's patched primitives.
import locust  # noqa: I001  (must stay first)

import json
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import gevent
import locust.runners
import requests
import socketio
from gevent.event import Event as Flag
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.contract import MAIN_NAMESPACE, Event  # noqa: E402
from loadtest import analysis, scenario  # noqa: E402

# Workers report every second instead of every 3 s, so the master's progress line and the
# end-of-run results are fresh (the drain phase waits for the last reports).
locust.runners.WORKER_REPORT_INTERVAL = 1.0

TRANSPORT_MODES = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": ["polling", "websocket"],  # what browsers do: start polling, then upgrade
}


@events.init_command_line_parser.add_listener
def _options(parser):
    group = parser.add_argument_group("Socket.IO load test (loadtest/locustfile.py)")
    group.add_argument("--lt-run-id", default="", help="tags this run's messages")
    group.add_argument("--lt-results", default="", help="where the master writes the results JSON")
    group.add_argument("--lt-api-key", default=os.environ.get("LOADTEST_API_KEY", ""),
                       help="Bearer key for the notifications API (or LOADTEST_API_KEY)")
    scenario.add_locust_options(group)  # the knobs: --lt-steady, --lt-transports, the rates...


# -- what one process records ------------------------------------------------------------------

class Recorder:
    """This process's raw records since the last report (all greenlets share one OS thread)."""

    def __init__(self):
        self.clients: dict[str, dict] = {}
        self.dirty: set[str] = set()
        self.received: dict[str, list[tuple[str, float]]] = defaultdict(list)  # (id, at)
        self.messages: list[dict] = []
        # Every receipt's latency, for the live progress line only: the results take the
        # latencies of the counted deliveries from `received` (analysis.delivered_samples).
        self.samples: list[tuple[float, float, str]] = []
        self.lags: list[tuple[float, float]] = []  # (time, ms this process's loop was late)
        self.counts: Counter = Counter()  # send failures and client-library events, by cause
        self.connecting = 0

    def client(self, cid: str, **fields) -> dict:
        record = self.clients.setdefault(cid, {"cid": cid})
        record.update(fields)
        self.dirty.add(cid)
        return record

    def drain(self) -> dict:
        delta = {
            "clients": [self.clients[cid] for cid in self.dirty],
            "received": dict(self.received),
            "messages": self.messages,
            "samples": self.samples,
            "lags": self.lags,
            "counts": dict(self.counts),
        }
        self.dirty = set()
        self.received = defaultdict(list)
        self.messages = []
        self.samples = []
        self.lags = []
        self.counts = Counter()
        return delta


class Aggregate:
    """The master's merged view of every process's records."""

    def __init__(self):
        self.clients: dict[str, dict] = {}
        self.received: dict[str, dict[str, float]] = defaultdict(dict)  # cid -> {id: at}
        self.messages: dict[str, dict] = {}
        self.samples: list[tuple[float, float, str]] = []
        self.lags: list[tuple[float, float]] = []
        self.counts: Counter = Counter()
        self._printed_samples = 0

    def merge(self, delta: dict) -> None:
        for record in delta.get("clients", ()):
            self.clients[record["cid"]] = dict(record)
        for cid, receipts in delta.get("received", {}).items():
            self.received[cid].update(receipts)  # (id, receive time) pairs
        for message in delta.get("messages", ()):
            self.messages[message["id"]] = message
        self.samples.extend(tuple(s) for s in delta.get("samples", ()))
        self.lags.extend(tuple(lag) for lag in delta.get("lags", ()))
        self.counts.update(delta.get("counts") or {})

    def connect_settled(self) -> bool:
        return all(c.get("connected") or c.get("error") for c in self.clients.values())


class Phases:
    """When the run's phases began, as wall-clock seconds (time.time()), in this process."""

    def __init__(self):
        self.test_start: float | None = None
        self.spawned = Flag()
        self.steady = Flag()
        self.spawn_complete: float | None = None
        self.all_connected: float | None = None
        self.steady_start: float | None = None
        self.steady_end: float | None = None
        self.end: float | None = None

    def in_steady(self) -> bool:
        return (self.steady.is_set() and self.steady_end is not None
                and time.time() < self.steady_end)


RECORDER = Recorder()
AGGREGATE = Aggregate()
PHASES = Phases()
OPTIONS = None  # parsed options, set on init
ROLE = "local"


def _now_ms() -> float:
    return time.time() * 1000.0


LAG_TICK = 0.1  # s


def _watch_loop_lag():
    """How late this process's event loop wakes up: a generator that cannot keep up (CPU-starved,
    or too many clients per process) delays every receive time it records."""
    while True:
        before = time.perf_counter()
        gevent.sleep(LAG_TICK)
        RECORDER.lags.append((time.time(), (time.perf_counter() - before - LAG_TICK) * 1000))


# What python-engineio's client logs at ERROR when its writer had nothing to send for
# max(ping interval, ping timeout) + 5 s: no PING came from the server to answer, so the client
# stops writing (and will miss the next PONG). Counted, and reported, instead of one line each.
WRITER_GAVE_UP = "packet queue is empty, aborting"
WRITER_GAVE_UP_CAUSE = "client writer gave up: no PING from the server for 30 s"


class _CountWriterGiveUps(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == WRITER_GAVE_UP:
            RECORDER.counts[WRITER_GAVE_UP_CAUSE] += 1
            return False
        return True


logging.getLogger("engineio.client").addFilter(_CountWriterGiveUps())


def _fire(environment, name: str, started: float, exc: Exception | None = None, kind="sio"):
    environment.events.request.fire(
        request_type=kind, name=name, response_time=(time.time() - started) * 1000.0,
        response_length=0, exception=exc, context={})


def _pick_transport(mix: str) -> str:
    weights = {}
    for part in mix.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in TRANSPORT_MODES:
            raise ValueError(f"unknown transport {name!r} in {mix!r} "
                             f"(use {', '.join(TRANSPORT_MODES)})")
        weights[name] = float(weight or 1)
    return random.choices(list(weights), weights=list(weights.values()))[0]


# -- the users ---------------------------------------------------------------------------------

class SocketIOClient(User):
    """One Socket.IO connection: connects, asks server_info, joins a room, pings and chats."""

    weight = 1

    def on_start(self):
        options = self.environment.parsed_options
        self.cid = uuid.uuid4().hex[:12]
        self.run_id = options.lt_run_id
        self.seen: set[str] = set()
        self.closing = False
        mode = _pick_transport(options.lt_transports)
        self.room = None
        if options.lt_room_size > 0:
            rooms = max(1, round(self.environment.parsed_options.num_users / options.lt_room_size))
            self.room = f"lt-{self.run_id}-room-{random.randrange(rooms)}"
        self.sio = socketio.Client(reconnection=False, request_timeout=15, handle_sigint=False)
        self.sio.on(Event.MY_RESPONSE, self._on_response, namespace=MAIN_NAMESPACE)
        self.sio.on(Event.NOTIFICATION, self._on_notification, namespace=MAIN_NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=MAIN_NAMESPACE)
        started = time.time()
        RECORDER.client(self.cid, mode=mode, start=started, room=self.room)
        RECORDER.connecting += 1
        try:
            self.sio.connect(self.host, transports=TRANSPORT_MODES[mode],
                             namespaces=[MAIN_NAMESPACE], wait_timeout=20)
        except Exception as exc:  # refused, timed out, reset: one failed connect
            RECORDER.client(self.cid, error=f"connect: {type(exc).__name__}: {exc}")
            _fire(self.environment, f"connect {mode}", started, exc)
            self.sio = None
            return
        finally:
            RECORDER.connecting -= 1
        connected = time.time()
        RECORDER.client(self.cid, connected=connected, connect_ms=(connected - started) * 1000)
        _fire(self.environment, f"connect {mode}", started)
        self._ask(Event.SERVER_INFO, None, self._record_server_info)
        if self.room:
            self._ask(Event.JOIN, {"room": self.room},
                      lambda _: RECORDER.client(self.cid, joined=time.time()))

    def _ask(self, event: str, payload, on_answer) -> None:
        started = time.time()
        try:
            answer = self.sio.call(event, payload, timeout=15) if payload is not None else \
                self.sio.call(event, timeout=15)
        except Exception as exc:
            RECORDER.client(self.cid, error=f"{event}: {type(exc).__name__}: {exc}")
            _fire(self.environment, event, started, exc)
            return
        _fire(self.environment, event, started)
        on_answer(answer)

    def _record_server_info(self, info) -> None:
        info = info if isinstance(info, dict) else {}
        RECORDER.client(self.cid, replica=info.get("replica"), transport=info.get("transport"))

    def _receive(self, data, kind_hint: str) -> None:
        if not isinstance(data, dict) or data.get("lt") != self.run_id:
            return
        now = _now_ms()
        mid, kind = data.get("id"), data.get("k", kind_hint)
        if mid in self.seen:
            record = RECORDER.client(self.cid)
            dups = record.setdefault("dups", {})
            dups[kind] = dups.get(kind, 0) + 1
            return
        self.seen.add(mid)
        RECORDER.received[self.cid].append((mid, now / 1000.0))
        RECORDER.samples.append((now / 1000.0, now - float(data.get("t", now)), kind))

    def _on_response(self, payload=None):
        if isinstance(payload, dict):
            self._receive(payload.get("data"), "broadcast")

    def _on_notification(self, payload=None):
        if isinstance(payload, dict):
            self._receive(payload.get("data"), "notify")

    def _on_disconnect(self, reason=None):
        RECORDER.client(self.cid, closed=time.time(), stopping=self.closing,
                        close_reason=str(reason))

    def on_stop(self):
        sio = getattr(self, "sio", None)
        if sio is None:
            return
        self.closing = True
        # Bounded: a polling client's disconnect can wait on its pending long-poll.
        gevent.spawn(sio.disconnect).join(timeout=3)

    # Chat and echo, as a Poisson process per client, during the steady phase only.
    def wait_time(self):
        options = self.environment.parsed_options
        rate = options.lt_echo_rate + (options.lt_room_rate if self.room else 0.0)
        if not PHASES.in_steady() or rate <= 0:
            return 0.5
        return random.expovariate(rate)

    @task
    def chat_or_ping(self):
        if self.sio is None or not self.sio.connected or not PHASES.in_steady():
            return
        options = self.environment.parsed_options
        room_rate = options.lt_room_rate if self.room else 0.0
        total = options.lt_echo_rate + room_rate
        if total <= 0:
            return
        if random.random() < room_rate / total:
            self._send_room_message()
        else:
            self._ping()

    def _send_room_message(self):
        mid = uuid.uuid4().hex[:16]
        sent = time.time()
        data = {"lt": self.run_id, "id": mid, "t": sent * 1000, "k": "room"}
        try:
            self.sio.emit(Event.MY_ROOM_EVENT, {"room": self.room, "data": data})
        except Exception as exc:
            _fire(self.environment, Event.MY_ROOM_EVENT, sent, exc)
            return
        RECORDER.messages.append({"id": mid, "k": "room", "room": self.room, "t": sent})
        _fire(self.environment, Event.MY_ROOM_EVENT, sent)

    def _ping(self):
        started = time.time()
        try:
            answer = self.sio.call(Event.MY_PING, {"lt": self.run_id, "t": started * 1000},
                                   timeout=10)
            latency = _now_ms() - float(answer["t"])
        except Exception as exc:
            _fire(self.environment, Event.MY_PING, started, exc)
            return
        RECORDER.samples.append((time.time(), latency, analysis.ECHO_KIND))
        _fire(self.environment, Event.MY_PING, started)


def _paced(rate: float):
    """Yield at `rate` per second during the steady phase; catches up without bursts."""
    PHASES.steady.wait()
    interval = 1.0 / rate
    next_at = time.time()
    while PHASES.in_steady():
        delay = next_at - time.time()
        if delay > 0:
            gevent.sleep(delay)
            if not PHASES.in_steady():
                return
        yield
        next_at = max(next_at + interval, time.time() - interval)


class BroadcastSender(SocketIOClient):
    """One client that emits my_broadcast_event at --lt-broadcast-rate; it also receives."""

    fixed_count = 1

    def wait_time(self):
        return 0.5

    @task
    def chat_or_ping(self):
        rate = self.environment.parsed_options.lt_broadcast_rate
        if self.sio is None or rate <= 0:
            return
        for _ in _paced(rate):
            mid = uuid.uuid4().hex[:16]
            sent = time.time()
            data = {"lt": self.run_id, "id": mid, "t": sent * 1000, "k": "broadcast"}
            try:
                self.sio.emit(Event.MY_BROADCAST_EVENT, {"data": data})
            except Exception as exc:
                RECORDER.counts[f"never sent (broadcast): {analysis.error_cause(str(exc))}"] += 1
                _fire(self.environment, Event.MY_BROADCAST_EVENT, sent, exc)
                continue
            RECORDER.messages.append({"id": mid, "k": "broadcast", "t": sent})
            _fire(self.environment, Event.MY_BROADCAST_EVENT, sent)


class NotificationSender(User):
    """A backend POSTing notifications for everyone at --lt-notify-rate; not a Socket.IO client."""

    fixed_count = 1

    def wait_time(self):
        return 0.5

    @task
    def notify(self):
        options = self.environment.parsed_options
        if options.lt_notify_rate <= 0:
            return
        session = requests.Session()
        headers = {"Authorization": f"Bearer {options.lt_api_key}"}
        url = self.host.rstrip("/") + "/api/notifications"
        for _ in _paced(options.lt_notify_rate):
            mid = uuid.uuid4().hex[:16]
            sent = time.time()
            body = {"to": "all", "data": {"lt": options.lt_run_id, "id": mid, "t": sent * 1000,
                                          "k": "notify"}}
            try:
                response = session.post(url, json=body, headers=headers, timeout=5)
                if response.status_code != 202:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:100]}")
            except Exception as exc:
                RECORDER.counts[f"never sent (notify): {analysis.error_cause(str(exc))}"] += 1
                _fire(self.environment, "POST /api/notifications", sent, exc, kind="http")
                continue
            RECORDER.messages.append({"id": mid, "k": "notify", "t": sent})
            _fire(self.environment, "POST /api/notifications", sent, kind="http")


# -- phases, reporting and results --------------------------------------------------------------

@events.init.add_listener
def _on_init(environment, **_):
    global ROLE
    runner = environment.runner
    ROLE = ("master" if isinstance(runner, MasterRunner)
            else "worker" if isinstance(runner, WorkerRunner) else "local")
    if ROLE == "worker":
        runner.environment.events.report_to_master.add_listener(
            lambda client_id, data: data.__setitem__("loadtest", RECORDER.drain()))
    if ROLE == "master":
        runner.environment.events.worker_report.add_listener(
            lambda client_id, data: AGGREGATE.merge(data.get("loadtest") or {}))


@events.test_start.add_listener
def _on_test_start(environment, **_):
    PHASES.test_start = time.time()
    if ROLE != "master":  # the processes that run clients
        gevent.spawn(_watch_loop_lag)
    if ROLE == "local":
        gevent.spawn(_pump)
    if ROLE != "worker":
        gevent.spawn(_conduct, environment)
        gevent.spawn(_progress, environment)
    else:
        gevent.spawn(_follow_locally, environment)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count, **_):
    if PHASES.spawn_complete is None:
        PHASES.spawn_complete = time.time()
    PHASES.spawned.set()


def _pump():
    """Local mode: the process is its own master."""
    while True:
        AGGREGATE.merge(RECORDER.drain())
        gevent.sleep(0.25)


def _start_steady(environment) -> None:
    options = environment.parsed_options
    PHASES.steady_start = time.time()
    PHASES.steady_end = PHASES.steady_start + options.lt_steady
    PHASES.steady.set()


def _follow_locally(environment):
    """A worker: its senders start once its own connects settled after the master's spawn signal."""
    options = environment.parsed_options
    PHASES.spawned.wait()
    deadline = time.time() + options.lt_settle_max
    while RECORDER.connecting > 0 and time.time() < deadline:
        gevent.sleep(0.1)
    _start_steady(environment)


def _conduct(environment):
    """Master or local: spawn -> wait for connects -> steady traffic -> drain -> quit."""
    options = environment.parsed_options
    PHASES.spawned.wait()
    deadline = time.time() + options.lt_settle_max
    gevent.sleep(1.0 if ROLE == "master" else 0.0)  # workers' last connect records in flight
    while time.time() < deadline:
        settled = AGGREGATE.connect_settled() and (ROLE == "master" or RECORDER.connecting == 0)
        if settled and len(AGGREGATE.clients) >= _socket_users(environment):
            break
        gevent.sleep(0.1)
    PHASES.all_connected = time.time()
    _start_steady(environment)
    gevent.sleep(options.lt_steady + options.lt_drain)
    PHASES.end = time.time()
    environment.runner.quit()


def _socket_users(environment) -> int:
    options = environment.parsed_options
    senders = 1 if _user_class_selected(environment, "NotificationSender") else 0
    return max(0, options.num_users - senders)


def _user_class_selected(environment, name: str) -> bool:
    return any(cls.__name__ == name for cls in environment.user_classes)


def _progress(environment):
    options = environment.parsed_options
    last_t, last_n = time.time(), 0
    while True:
        gevent.sleep(options.lt_progress)
        now = time.time()
        new = AGGREGATE.samples[last_n:]
        last_n = len(AGGREGATE.samples)
        fanout = sorted(lat for _, lat, k in new if k in analysis.FANOUT_KINDS)
        echo = sorted(lat for _, lat, k in new if k == analysis.ECHO_KIND)
        clients = AGGREGATE.clients.values()
        live = [c for c in clients if c.get("connected") and not c.get("closed")]
        per_replica = defaultdict(int)
        for c in live:
            per_replica[c.get("replica") or "?"] += 1
        errors = sum(1 for c in clients if c.get("error"))
        phase = ("connecting" if not PHASES.steady.is_set()
                 else "steady" if PHASES.in_steady() else "draining")
        spread = " ".join(f"{r}:{n}" for r, n in sorted(per_replica.items()))
        line = (f"[{now - PHASES.test_start:5.1f}s {phase:10}] clients {len(live)}/"
                f"{_socket_users(environment)} err {errors} ({spread}) | "
                f"{len(fanout) / (now - last_t):7.0f} deliveries/s")
        if fanout:
            line += (f" | fan-out p50 {analysis.percentile(fanout, 50):.0f} "
                     f"p99 {analysis.percentile(fanout, 99):.0f} ms")
        if echo:
            line += f" | echo p99 {analysis.percentile(echo, 99):.0f} ms"
        print(line, flush=True)
        last_t = now


@events.quitting.add_listener
def _on_quitting(environment, **_):
    if ROLE == "worker":
        return
    options = environment.parsed_options
    if ROLE == "local":
        AGGREGATE.merge(RECORDER.drain())
    if not options.lt_results:
        return
    PHASES.end = PHASES.end or time.time()
    results = results_document(environment)
    path = Path(options.lt_results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"loadtest: Locust-side results written to {path}", flush=True)


def results_document(environment) -> dict:
    options = environment.parsed_options
    p = PHASES
    steady = (p.steady_start, p.steady_end) if p.steady_start else None
    clients = AGGREGATE.clients
    # Fan-out latencies of the counted deliveries only, so that their count is the delivery
    # table's `received`; echo round trips as measured.
    samples = analysis.delivered_samples(clients, AGGREGATE.received, AGGREGATE.messages) + [
        s for s in AGGREGATE.samples if s[2] == analysis.ECHO_KIND]
    steady_deliveries = sum(
        1 for t, _, k in samples
        if k in analysis.FANOUT_KINDS and steady and steady[0] <= t <= steady[1])
    all_deliveries = sum(1 for _, _, k in samples if k in analysis.FANOUT_KINDS)
    steady_seconds = (steady[1] - steady[0]) if steady else 0
    stats = []
    for (name, method), entry in sorted(environment.runner.stats.entries.items()):
        if not entry.num_requests and not entry.num_failures:
            continue
        stats.append({
            "type": method, "name": name, "requests": entry.num_requests,
            "failures": entry.num_failures, "avg_ms": round(entry.avg_response_time, 1),
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time or 0, 1)})
    return {
        "run_id": options.lt_run_id,
        "host": environment.host,
        "locust": {"role": ROLE, "version": locust.__version__, "users": options.num_users,
                   "spawn_rate": options.spawn_rate,
                   "user_classes": [cls.__name__ for cls in environment.user_classes],
                   "workers": (len(environment.runner.clients.all) if ROLE == "master" else 0),
                   "request_stats": stats},
        "config": scenario.recorded(None, scenario.from_locust_options(options)),
        "phases": {"test_start": p.test_start, "spawn_complete": p.spawn_complete,
                   "all_connected": p.all_connected, "steady_start": p.steady_start,
                   "steady_end": p.steady_end, "end": p.end},
        "clients": analysis.client_summary(clients, _socket_users(environment)),
        "delivery": analysis.delivery(clients, AGGREGATE.received, AGGREGATE.messages),
        "latency_ms": analysis.latency_summary(samples),
        "throughput": {
            "steady_deliveries": steady_deliveries,
            "all_deliveries": all_deliveries,
            "deliveries_per_s": (round(steady_deliveries / steady_seconds, 1)
                                 if steady_seconds else None),
            "echo_per_s": round(sum(1 for t, _, k in samples if k == analysis.ECHO_KIND and steady
                                    and steady[0] <= t <= steady[1]) / steady_seconds, 1)
            if steady_seconds else None,
            "messages_sent": len(AGGREGATE.messages),
        },
        "timeseries": analysis.timeseries(clients, samples, p.test_start, p.end),
        "generator": {
            "loop_lag_ms_steady": analysis.distribution(
                lag for t, lag in AGGREGATE.lags if steady and steady[0] <= t <= steady[1]),
            "loop_lag_ms_connect": analysis.distribution(
                lag for t, lag in AGGREGATE.lags if p.test_start <= t <= (p.all_connected or t)),
        },
        "events_by_cause": dict(AGGREGATE.counts.most_common()),
    }
