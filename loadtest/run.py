"""The load-test runner: `make loadtest`, `make loadtest-compare`.

    python -m loadtest.run [--url URL [--pid KIND:PID ...]] [--scenario NAME] [--clients N]
                           [--spawn-rate R] [--duration S] [--transports MIX] [--replicas N]
                           [--processes N] [--compare-baseline]

The knobs, their defaults and the named scenarios are defined once, in loadtest/scenario.py
(`--help` lists them); Locust's --lt-* options and the recorded parameters come from there too.

Without --url it starts the native stack itself (scripts/stack.py: private RabbitMQ, REPLICAS
gunicorn replicas, the worker, nginx); with --compare-baseline also the plain Flask-SocketIO recipe
(loadtest/baseline/), and runs the same scenario against both, one after the other, in this run.
Locust (from .venv-loadtest) drives real python-socketio clients; this process samples the
server processes' CPU and memory from /proc meanwhile. Results: loadtest-results/<stamp>.json, an
HTML report beside it, and a summary table on the terminal.

This runner runs in the app's .venv (it starts the stack with the app's own locked versions);
Locust and matplotlib live in .venv-loadtest and run as subprocesses.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtest import analysis, procstats, scenario, summary

ROOT = Path(__file__).resolve().parent.parent
LOADTEST_PYTHON = Path(os.environ.get("LOADTEST_PYTHON",
                                      ROOT / ".venv-loadtest" / "bin" / "python"))
RESULTS_DIR = ROOT / "loadtest-results"

# The kinds of server process whose CPU is measured, by the name scripts/stack.py gives them.
KINDS = ("web", "nginx", "rabbitmq", "worker")


def process_kind(name: str) -> str | None:
    if name.startswith(("web-", "baseline-")):
        return "web"
    if name == "nginx":
        return "nginx"
    if name in ("rabbitmq", "epmd"):
        return "rabbitmq"
    if name.startswith("worker-"):
        return "worker"
    return None


@dataclass
class Target:
    label: str
    url: str
    groups: dict[str, list[int]] = field(default_factory=dict)  # kind -> root pids
    api_key: str = ""
    replicas: int | None = None
    stack: Any = None
    notes: list[str] = field(default_factory=list)


# -- stacks ----------------------------------------------------------------------------------------

def stack_env(clients: int, share: float) -> dict[str, str]:
    """Settings for a stack under load: room for the clients, no periodic broadcast, quick stop."""
    per_replica = min(9800, max(1000, math.ceil(clients * share) + 200))
    return {
        "APP_ENV": "development",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": secrets.token_hex(32),
        "API_KEY": secrets.token_hex(32),
        "SERVER_EVENT_INTERVAL": "0",  # the worker's periodic broadcast would add to the counts
        "DRAIN_SECONDS": "0",
        # gunicorn's worker_connections: one replica must hold its share of the clients.
        "MAX_CLIENTS_PER_REPLICA": str(per_replica),
    }


def start_stacks(args, clients: int) -> list[Target]:
    from loadtest.baseline.stack import BASELINE
    from scripts.stack import APP, Stack, free_port

    wanted: list[tuple[str, Any]] = [("stack", APP)]
    if args.compare_baseline:
        wanted.append(("baseline", BASELINE))
    targets: list[Target] = []
    errors: list[BaseException] = []

    def start(label: str, services) -> None:
        # Round-robin spreads the stack's clients; ip_hash puts the baseline's all on one replica.
        env = stack_env(clients, 1.5 / args.replicas if label == "stack" else 1.0)
        stack = Stack(replicas=args.replicas, port=free_port(), workers=1, log_to_files=True,
                      extra_env=env, services=services)
        try:
            started = time.monotonic()
            stack.start()
            print(f"loadtest: {label} up at {stack.url} in {time.monotonic() - started:.1f}s "
                  f"(logs: {stack.run_dir})", flush=True)
        except BaseException as exc:
            errors.append(exc)
            return
        groups: dict[str, list[int]] = {}
        for process in stack.processes:
            kind = process_kind(process.name)
            if kind:
                groups.setdefault(kind, []).append(process.popen.pid)
        targets.append(Target(label, stack.url, groups, env["API_KEY"], args.replicas, stack))

    threads = [threading.Thread(target=start, args=item) for item in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        stop_stacks(targets, keep_logs=True)
        raise errors[0]
    targets.sort(key=lambda t: [w[0] for w in wanted].index(t.label))
    return targets


def stop_stacks(targets: list[Target], keep_logs: bool) -> None:
    threads = [threading.Thread(target=t.stack.stop) for t in targets if t.stack is not None]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for target in targets:
        if target.stack is not None and not keep_logs:
            shutil.rmtree(target.stack.run_dir, ignore_errors=True)


def external_target(args) -> Target:
    groups: dict[str, list[int]] = {}
    for item in args.pid:
        kind, _, pid = item.partition(":")
        if kind not in KINDS or not pid.isdigit():
            raise SystemExit(f"--pid wants KIND:PID with KIND in {', '.join(KINDS)}, got {item!r}")
        groups.setdefault(kind, []).append(int(pid))
    target = Target("external", args.url.rstrip("/"), groups,
                    args.api_key or os.environ.get("API_KEY", ""))
    # This runner cannot change the limits of a stack it did not start: say so up front.
    target.notes.append(
        "external stack: its nginx limits connections and new sessions per client address, and "
        "every client of this generator has one; unless the target raised them (the "
        "NGINX_CONN_PER_ADDRESS / NGINX_NEW_SESSION_* override in docs/operations.md), expect 429s")
    if not groups:
        target.notes.append("server CPU and memory not measured: pass --pid KIND:PID for the "
                            "server's processes (web, nginx, rabbitmq, worker) to measure them")
    return target


def check_loopback(url: str, allow_remote: bool) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        loopback = False
    if not loopback and not allow_remote:
        raise SystemExit(f"refusing to load {host!r}: not a loopback address. Load only servers "
                         "you run; pass --allow-remote for your own test hosts.")


# -- one scenario against one target -----------------------------------------------------------

def locust_command(knobs: dict[str, Any], target: Target, results: Path,
                   run_id: str) -> tuple[list[str], float]:
    classes = ["SocketIOClient"]
    if knobs["broadcast_rate"]:
        classes.append("BroadcastSender")
    if knobs["notify_rate"]:
        classes.append("NotificationSender")
    users = knobs["clients"] + (1 if "NotificationSender" in classes else 0)
    spawn_seconds = users / knobs["spawn_rate"]
    cap = math.ceil(2 * spawn_seconds + knobs["settle_max"] + knobs["duration"] + knobs["drain"]
                    + 30)
    command = [
        str(LOADTEST_PYTHON), "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "-u", str(users), "-r", str(knobs["spawn_rate"]), "-H", target.url,
        "-t", f"{cap}s", "--stop-timeout", "5", "--only-summary", "--loglevel", "WARNING",
        "--exit-code-on-error", "0",
        "--lt-run-id", run_id, "--lt-results", str(results),
        *scenario.locust_arguments(knobs),
    ]
    if knobs["processes"] > 1:
        command += ["--processes", str(knobs["processes"])]
    command += classes
    return command, cap + 60


def run_scenario(args, knobs: dict[str, Any], target: Target, stamp: str) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    locust_results = RESULTS_DIR / f"{stamp}-{target.label}.locust.json"
    command, timeout = locust_command(knobs, target, locust_results, run_id)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOADTEST_API_KEY": target.api_key,
           "PYTHONUNBUFFERED": "1"}
    print(f"\nloadtest: {target.label}: {summary.plain(knobs['clients'])} clients at "
          f"{summary.plain(knobs['spawn_rate'])}/s, {summary.plain(knobs['duration'])}s steady, "
          f"scenario {args.scenario} -> {target.url}", flush=True)
    started = time.time()
    popen = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    sampler = procstats.Sampler({**target.groups, "generator": [popen.pid]}).start()
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        target.notes.append(f"Locust did not finish within {timeout:.0f}s and was killed")
    except KeyboardInterrupt:
        target.notes.append("interrupted")
        raise
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        samples = sampler.stop()
    if not locust_results.exists():
        raise SystemExit(f"Locust wrote no results ({locust_results}); "
                         f"exit code {popen.returncode}")
    locust_doc = json.loads(locust_results.read_text())
    locust_results.unlink()
    return assemble(target, locust_doc, samples, started)


def assemble(target: Target, locust_doc: dict, samples: list[dict], started: float) -> dict:
    phases = locust_doc["phases"]
    t0 = phases["test_start"] or started
    connected = locust_doc["clients"]["connected"]
    deliveries = locust_doc["throughput"]["steady_deliveries"]
    steady = (phases["steady_start"], phases["steady_end"])
    storm = (phases["test_start"], phases["all_connected"] or phases["steady_start"])
    server: dict[str, Any] = {}
    kinds = [k for k in KINDS if k in target.groups]
    if kinds and steady[0]:
        cpu_steady = {k: procstats.cpu_between(samples, k, *steady) for k in kinds}
        cpu_storm = {k: procstats.cpu_between(samples, k, *storm) for k in kinds}
        cpu_steady["total"] = sum(v or 0 for v in cpu_steady.values())
        cpu_storm["total"] = sum(v or 0 for v in cpu_storm.values())
        steady_len = steady[1] - steady[0]
        server["cpu_seconds_steady"] = _rounded(cpu_steady, 3)
        server["cores_used_steady"] = _rounded({k: v / steady_len for k, v in cpu_steady.items()
                                                if v is not None}, 3)
        server["cpu_seconds_per_1000_deliveries"] = (
            _rounded({k: v / deliveries * 1000 for k, v in cpu_steady.items() if v is not None}, 4)
            if deliveries else None)
        server["cpu_seconds_connect_storm"] = _rounded(cpu_storm, 3)
        server["cpu_seconds_per_1000_connects"] = (
            _rounded({k: v / connected * 1000 for k, v in cpu_storm.items() if v is not None}, 3)
            if connected else None)
        if "web" in kinds and samples:
            before = procstats.value_at(samples, phases["test_start"], "rss", "web")
            after = procstats.value_at(samples, phases["steady_start"], "rss", "web")
            server["memory"] = {
                "web_rss_before_mib": round(before / 2**20, 1),
                "web_rss_connected_mib": round(after / 2**20, 1),
                "web_kib_per_connection": round((after - before) / 1024 / connected, 2)
                if connected else None,
            }
        server["cpu_series"] = {k: procstats.cpu_rate_series(samples, k, t0) for k in kinds}
    generator: dict[str, Any] = {}
    if steady[0]:
        generator_cpu = procstats.cpu_between(samples, "generator", *steady)
        generator = {
            "cpu_seconds_steady": round(generator_cpu or 0, 3),
            "cores_steady": round((generator_cpu or 0) / (steady[1] - steady[0]), 3),
            "busiest_process_cores_steady": procstats.busiest_process(samples, "generator",
                                                                      *steady),
            "busiest_process_cores_connect": procstats.busiest_process(samples, "generator",
                                                                       *storm),
            "processes": len(samples[-1]["procs"].get("generator", {})) if samples else None,
            "cpu_series": procstats.cpu_rate_series(samples, "generator", t0),
        }
        busiest = max(generator["busiest_process_cores_steady"] or 0,
                      generator["busiest_process_cores_connect"] or 0)
        generator["saturated"] = busiest >= 0.9
        if generator["saturated"]:
            target.notes.append(
                f"{target.label}: a load-generator process used {busiest:.0%} of a core: the "
                "generator may be the bottleneck, read latencies and rates as lower bounds "
                "(more --processes, or Locust workers on other machines)")
    if steady[0] and deliveries and generator:
        generator["cpu_seconds_per_1000_deliveries"] = round(
            generator["cpu_seconds_steady"] / deliveries * 1000, 4)
        server_total = (server.get("cpu_seconds_per_1000_deliveries") or {}).get("total")
        if server_total:
            # Above 1 the generator pays more per delivery than the stack it measures.
            generator["cpu_vs_server"] = round(
                generator["cpu_seconds_per_1000_deliveries"] / server_total, 2)
    ratio = locust_doc["delivery"].get("ratio")
    if ratio is not None and ratio < 1:
        missing = locust_doc["delivery"]["expected"] - locust_doc["delivery"]["received"]
        causes = "; ".join(f"{n:,} {cause}" for cause, n in
                           (locust_doc["delivery"].get("missing_by_cause") or {}).items())
        target.notes.append(f"{target.label}: {missing:,} expected deliveries missing: {causes}")
    for cause, n in (locust_doc.get("events_by_cause") or {}).items():
        target.notes.append(f"{target.label}: {n:,} x {cause}")
    run = {
        "label": target.label,
        "url": target.url,
        "replicas": target.replicas,
        "locust": locust_doc,
        "server": server,
        "generator": generator,
        "machine": procstats.machine_between(samples, *steady) if steady[0] else {},
        "notes": target.notes,
    }
    run["verdict"] = analysis.verdict(run, os.cpu_count() or 1)
    if run["verdict"]["machine_bound_evidence"]:
        target.notes.append(f"{target.label}: machine-bound, not meaningful: "
                            + "; ".join(run["verdict"]["machine_bound_evidence"]))
    if "HTTP 429" in (locust_doc["clients"].get("errors_by_cause") or {}):
        target.notes.append(
            f"{target.label}: nginx's per-address limits answered 429 (every client of this "
            "generator has one address): raise NGINX_CONN_PER_ADDRESS, NGINX_NEW_SESSION_RATE "
            "and NGINX_NEW_SESSION_BURST on the target (docs/operations.md)")
    return run


def _rounded(values: dict[str, float | None], digits: int) -> dict[str, float | None]:
    return {k: (round(v, digits) if v is not None else None) for k, v in values.items()}


# -- the whole run ------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg(),
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)}


def raise_open_files_limit(clients: int) -> None:
    """Locust holds a socket per client (two while polling): inherit a limit that allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < 2 * clients + 1000:
        print(f"loadtest: warning: open-file limit {hard} is low for {clients} clients; "
              "raise `ulimit -n`", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="load this stack instead of starting one")
    parser.add_argument("--pid", action="append", default=[], metavar="KIND:PID",
                        help="with --url: a server process to measure (web, nginx, rabbitmq, "
                             "worker); repeat it")
    parser.add_argument("--api-key", default="", help="with --url: the notifications API key "
                        "(default: $API_KEY)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --url that is not a loopback address (your own test hosts)")
    scenario.add_runner_options(parser)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--compare-baseline", action="store_true",
                        help="run the same scenario against the plain Flask-SocketIO recipe too")
    parser.add_argument("--output", default="",
                        help="results file (default: loadtest-results/<stamp>.json)")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML report")
    parser.add_argument("--keep-logs", action="store_true", help="keep the stacks' log directories")
    args = parser.parse_args(argv)
    if args.url and args.compare_baseline:
        parser.error("--compare-baseline starts both stacks itself; drop --url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not LOADTEST_PYTHON.exists():
        print(f"error: {LOADTEST_PYTHON} is missing; run `make .venv-loadtest/.installed` "
              "(or `make loadtest`, which installs it)", file=sys.stderr)
        return 1
    knobs = scenario.resolve(args)
    if args.compare_baseline and knobs["notify_rate"]:
        print("error: the baseline recipe has no worker or notifications API; compare with a "
              "scenario without notifications (e.g. --scenario chat) or --notify-rate 0",
              file=sys.stderr)
        return 1
    raise_open_files_limit(knobs["clients"])
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(args.output) if args.output else RESULTS_DIR / f"{stamp}-{args.scenario}.json"
    doc: dict[str, Any] = {
        "kind": "socketio-loadtest",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "loadtest.run",
                             *(argv or sys.argv[1:])]),
        "machine": machine(),
        "scenario": {**scenario.recorded(args.scenario, knobs),
                     "replicas": None if args.url else args.replicas},
        "runs": [],
    }
    wall = time.monotonic()
    targets: list[Target] = []
    try:
        if args.url:
            check_loopback(args.url, args.allow_remote)
            targets = [external_target(args)]
            if knobs["notify_rate"] and not targets[0].api_key:
                print("error: this scenario posts notifications, which need the target's API key:"
                      " pass --api-key or set API_KEY (make loadtest URL=... API_KEY=...), or "
                      "--notify-rate 0", file=sys.stderr)
                return 2
        else:
            targets = start_stacks(args, knobs["clients"])
        for target in targets:
            doc["runs"].append(run_scenario(args, knobs, target, stamp))
    finally:
        if not args.url:
            stop_stacks(targets, keep_logs=args.keep_logs)
    doc["wall_seconds"] = round(time.monotonic() - wall, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=1))
    print(f"\nloadtest: results: {output}")
    if not args.no_html:
        report = subprocess.run([str(LOADTEST_PYTHON), "-m", "loadtest.report", str(output)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if report.returncode != 0:
            print("loadtest: warning: the HTML report failed", file=sys.stderr)
    print()
    print(summary.render_text(doc))
    print(f"\nloadtest: {doc['wall_seconds']}s wall-clock; {doc['machine']['cores']} cores; "
          f"load average at start {doc['machine']['load_average_at_start'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
