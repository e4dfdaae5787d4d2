"""The systems `make bench` compares, each started natively on free loopback ports:

  stack   this project (scripts/stack.py): its nginx, N web replicas, a private RabbitMQ, no worker;
          connection state recovery on (the default), the clients not asking for it;
  stack-recovering   the same, every client asking for recovery (its events come through the
          replica's recovery log, each with its offset);
  stack-no-recovery  the same, recovery off (RECOVERY_WINDOW_SECONDS=0): what the log costs;
  recipe  Flask-SocketIO's documented recipe (loadtest/baseline/: stock KombuManager, one
          GeventWebSocketWorker per replica), but behind bench/nginx.conf.template (least_conn);
  node    socket.io 4 + @socket.io/redis-adapter (bench/peer/server.mjs), N Node processes, a
          private redis-server, behind the same nginx as the recipe;
  node-sharded  the same with the adapter's createShardedAdapter (Redis 7 sharded pub/sub,
          subscriptionMode "dynamic": a process subscribes to a room's channel while it has a
          member there), the rooms scenarios' Node peer.

The rooms scenarios also start a publisher process beside the system (`publisher_command`):
bench/publisher.py for this stack and the recipe, bench/peer/publisher.mjs for Node.

Each is a scripts/stack.py `Stack` (its own service set): `url`, `start()`, `stop()`, `run_dir`,
`processes`; `groups(stack)` gives the root pids of its web processes, nginx and broker, whose CPU
and memory the runner reads from /proc (children included).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.baseline.stack import baseline_replica
from scripts.stack import (
    ROOT,
    MissingDependency,
    Process,
    Replica,
    Service,
    ServiceSet,
    Stack,
    StartupFailed,
    check_installed,
    free_port,
    nginx_service,
)

BENCH_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf.template"
PEER_SERVER = BENCH_DIR / "peer" / "server.mjs"
PEER_PUBLISHER = BENCH_DIR / "peer" / "publisher.mjs"
SYSTEMS = ("stack", "stack-recovering", "stack-no-recovery", "recipe", "node", "node-sharded")
# What each kind of scenario measures unless --systems says otherwise.
DEFAULT_SYSTEMS = {
    "fanout": ("stack", "stack-recovering", "stack-no-recovery", "recipe", "node"),
    "idle": ("stack", "stack-recovering", "stack-no-recovery", "recipe", "node"),
    "rooms": ("stack", "recipe", "node-sharded"),
}
CLIENTS_ASK_FOR_RECOVERY = frozenset({"stack-recovering"})


def missing_programs(systems: tuple[str, ...] | list[str] = SYSTEMS) -> list[str]:
    """What `make bench` needs (for `systems`) and this machine lacks, each with the command that
    installs it."""
    missing = []
    try:
        check_installed(need_rabbitmq=True)
    except MissingDependency as exc:
        missing.append(str(exc))
    if redis_binary() is None:
        missing.append("redis-server: sudo apt-get install -y redis-server")
    elif "node-sharded" in systems and redis_major() < 7:
        missing.append("redis-server 7 or later (node-sharded uses sharded pub/sub; Debian "
                       "bookworm's redis-server is 7.0): sudo apt-get install -y redis-server")
    if shutil.which("node") is None:
        missing.append("node: sudo apt-get install -y nodejs npm (Node.js 18 or later)")
    elif not (ROOT / "node_modules" / "socket.io" / "package.json").exists() or not (
            ROOT / "node_modules" / "@socket.io" / "redis-adapter").exists():
        missing.append("the pinned Node packages (socket.io, @socket.io/redis-adapter, redis, "
                       "socket.io-client): make install (npm ci)")
    return missing


def redis_binary() -> str | None:
    return shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/bin:/usr/sbin")


def redis_major() -> int:
    """redis-server's major version ("Redis server v=7.0.15 sha=..." -> 7); 0 if unknown."""
    try:
        done = subprocess.run([redis_binary() or "redis-server", "--version"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(r"v=(\d+)\.", done.stdout)
    return int(found.group(1)) if found else 0


def bench_env(clients_per_replica: int, rate: float) -> dict[str, str]:
    """Settings for the stack and the recipe under the benchmark's load."""
    return {
        "APP_ENV": "development",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": secrets.token_hex(32),
        "API_KEY": secrets.token_hex(32),
        "SERVER_EVENT_INTERVAL": "0",
        "DRAIN_SECONDS": "0",
        # gunicorn's worker_connections; the stack's default (10,000) already holds idle-10k.
        "MAX_CLIENTS_PER_REPLICA": str(max(10_000, clients_per_replica + 500)),
        # One client sends every broadcast: keep the stack's per-client limit above the rate.
        "EVENT_RATE_PER_SECOND": str(max(50.0, 2 * rate)),
        "EVENT_BURST": str(max(100, int(4 * rate))),
    }


def process_kind(name: str) -> str | None:
    if name.startswith(("web-", "baseline-", "node-")):
        return "web"
    if name == "nginx":
        return "nginx"
    if name in ("rabbitmq", "epmd", "redis"):
        return "broker"
    return None


def groups(stack: Stack) -> dict[str, list[int]]:
    """kind (web, nginx, broker) -> the root pids of the stack's processes of that kind."""
    found: dict[str, list[int]] = {}
    for process in stack.processes:
        kind = process_kind(process.name)
        if kind:
            found.setdefault(kind, []).append(process.popen.pid)
    return found


def least_conn_nginx(stack: Stack) -> Service:
    return nginx_service(stack, {NGINX_TEMPLATE: "nginx.conf"}, "/readyz")


# The recipe's replicas (loadtest/baseline/) behind the least_conn nginx.
RECIPE = ServiceSet(replica=baseline_replica, nginx=least_conn_nginx, worker=None,
                    replica_prefix="baseline")


def node_replica(stack: Stack, replica: Replica) -> Service:
    return Service(replica.replica_id,
                   ["node", str(PEER_SERVER), str(replica.port), stack.extra_env["REDIS_URL"],
                    replica.replica_id, stack.extra_env.get("REDIS_ADAPTER", "classic")],
                   ready_url=f"{replica.url}/readyz", ready_timeout=20)


NODE = ServiceSet(replica=node_replica, nginx=least_conn_nginx, worker=None, replica_prefix="node")


@dataclass
class NodeStack(Stack):
    """The Node peer: a private redis-server first, then the Node processes and nginx. amqp_url
    is set (unused) so that no RabbitMQ starts."""

    services: ServiceSet = NODE
    amqp_url: str | None = ""
    workers: int = 0

    def start(self) -> Stack:
        port = int(self.extra_env["REDIS_URL"].rsplit(":", 1)[1])
        try:
            self.supervisor.run(Service(
                "redis", [redis_binary() or "redis-server", "--port", str(port), "--bind",
                          "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                          "--dir", str(self.run_dir)],
                ready=lambda process: wait_for_redis(port, process, 15), stop_last=True))
        except BaseException:
            self.stop()
            raise
        return super().start()


def wait_for_redis(port: int, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise StartupFailed(f"redis-server on port {port} not ready after {timeout:.0f}s")


def make_system(name: str, replicas: int, clients_per_replica: int, rate: float) -> Stack:
    """A system by name, not started yet; the caller starts and stops it."""
    options = {"port": free_port(), "replicas": replicas, "log_to_files": True}
    if name in ("node", "node-sharded"):
        return NodeStack(extra_env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                                    "REDIS_ADAPTER": "sharded" if name == "node-sharded"
                                    else "classic"}, **options)
    env = bench_env(clients_per_replica, rate)
    if name == "recipe":
        options["services"] = RECIPE
    elif name == "stack-no-recovery":
        env["RECOVERY_WINDOW_SECONDS"] = "0"
    return Stack(workers=0, extra_env=env, **options)


def publisher_command(name: str, system: Stack) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the rooms publisher of a started system: a process beside
    the web processes that emits to rooms through the system's own broker, as a backend does."""
    if isinstance(system, NodeStack):
        config = {"redisUrl": system.extra_env["REDIS_URL"],
                  "adapter": system.extra_env.get("REDIS_ADAPTER", "classic")}
        return ["node", str(PEER_PUBLISHER), json.dumps(config)], dict(os.environ)
    if system.services is RECIPE:
        return ([sys.executable, "-m", "bench.publisher",
                 json.dumps({"kind": "recipe", "url": system.amqp_url})], dict(os.environ))
    # The stack's emitter reads its settings from the environment: the replicas' (the supervisor
    # gives every service extra_env on top of ours, and each replica its AMQP_URL).
    return ([sys.executable, "-m", "bench.publisher", json.dumps({"kind": "stack"})],
            {**os.environ, **system.extra_env, "AMQP_URL": system.amqp_url or "",
             "REPLICA_ID": "bench-publisher", "PYTHONUNBUFFERED": "1"})


__all__ = ["CLIENTS_ASK_FOR_RECOVERY", "DEFAULT_SYSTEMS", "SYSTEMS", "MissingDependency",
           "StartupFailed", "groups", "make_system", "missing_programs", "publisher_command"]
