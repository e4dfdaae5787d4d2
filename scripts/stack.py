"""The native stack: `make run` in the foreground, and the stacks of the tests and the load test.

It starts, each in its own process group (scripts/supervisor.py runs them):
  * RabbitMQ, a private broker in a temporary directory (unless --amqp-url names one), on
    127.0.0.1:--amqp-port (5673; a free port instead, said so, when that one is taken),
  * --replicas web replicas (gunicorn, one gevent-websocket worker each) on free loopback ports,
  * --workers worker processes,
  * nginx on 127.0.0.1:--port, from nginx/socketio.conf.template.
Whatever exits unexpectedly (a replica SIGKILLed, the worker crashing) is restarted after a short
backoff, with a line on stderr. Ctrl-C or SIGTERM stops everything it started and removes the
temporary directory.

What runs is a `ServiceSet`: how to describe a replica, a worker and nginx as `Service`s. `APP` is
this project's; loadtest/baseline/stack.py's `BASELINE` is the plain Flask-SocketIO recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scripts import nginx_defaults
from scripts.supervisor import (
    ROOT,
    STOP_TIMEOUT,
    MissingDependency,
    Process,
    Service,
    StartupFailed,
    Supervisor,
    announce_on_stderr,
    free_port,
    port_is_free,
    render,
    wait_for_http,
    wait_for_port,
    wait_ready,
)

__all__ = [  # what the tests, the load test and bench import from here
    "APP", "NGINX_DIR", "ROOT", "STOP_TIMEOUT", "MissingDependency", "Process", "Replica",
    "Service", "ServiceSet", "Stack", "StartupFailed", "Supervisor", "check_installed",
    "free_port", "main", "nginx_binary", "nginx_service", "push_help", "render",
    "wait_for_broker",
    "wait_for_http",
]

NGINX_DIR = ROOT / "nginx"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's, without its su wrapper
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"  # likewise: it runs as us, with our cookie
# `make run`'s private RabbitMQ: a fixed port, so that the AMQP_URL it prints stays true from one
# run to the next; next to the standard 5672, which a RabbitMQ of the system's own may hold.
DEFAULT_AMQP_PORT = 5673
SYSTEM_BIN_DIRS = "/usr/sbin:/sbin"  # where Debian puts nginx; not on every user's PATH


def nginx_binary() -> str | None:
    """nginx's path, found on PATH or where Debian installs it."""
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:{SYSTEM_BIN_DIRS}")


def open_files_limit() -> int | None:
    """The hard open-file limit every process started here inherits; None: unlimited. Each
    process raises its soft limit itself; only root could raise this one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else hard


def check_installed(need_rabbitmq: bool) -> None:
    missing = []
    if nginx_binary() is None:
        missing.append("nginx")
    if need_rabbitmq and not Path(RABBITMQ_SERVER).exists():
        missing.append("rabbitmq-server")
    if missing:
        raise MissingDependency(
            f"{' and '.join(missing)} not installed. On Debian or Ubuntu: "
            f"sudo apt-get install -y {' '.join(missing)}"
            + ("  (or point --amqp-url / AMQP_URL at a running RabbitMQ)"
               if "rabbitmq-server" in missing else ""))


def wait_for_broker(url: str, timeout: float, process: Process | None = None) -> None:
    import kombu  # only the broker check needs it; keeps `--help` instant

    def probe() -> None:
        with kombu.Connection(url, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1)

    wait_ready(probe, timeout, process, what=f"RabbitMQ at {url} not reachable",
               errors=(Exception,), interval=0.3)


@dataclass
class Replica:
    index: int
    port: int
    process: Process | None = None
    prefix: str = "web"

    @property
    def replica_id(self) -> str:
        return f"{self.prefix}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# -- the services ----------------------------------------------------------------------------------

def broker_port(wanted: int | None, notice: Callable[[str], None]) -> int:
    """The private broker's AMQP port: `wanted` unless something listens there (then a free one,
    with a notice that says so), a free one when None."""
    if wanted is None:
        return free_port()
    if port_is_free(wanted):
        return wanted
    port = free_port()
    notice(f"note: port {wanted} is taken (another RabbitMQ, or another `make run`?), so this "
           f"run's RabbitMQ is on {port}: the AMQP_URL below differs from the usual one. Pick "
           f"another fixed port with `make run AMQP_PORT=...`.")
    return port


def private_broker(run_dir: Path, amqp_port: int) -> tuple[list[Service], str]:
    """A RabbitMQ of its own (and its own epmd) on loopback: AMQP on `amqp_port`, the others on
    free ports; its AMQP URL."""
    home = run_dir / "rabbitmq"
    home.mkdir(exist_ok=True)
    dist_port, epmd_port = free_port(), free_port()
    (home / "enabled_plugins").write_text("[].\n")
    # loopback_users = none lets the guest account in, which is safe: it listens on loopback only.
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\nloopback_users = none\n")
    url = f"amqp://guest:guest@127.0.0.1:{amqp_port}//"
    env = {
        "HOME": str(home),  # the Erlang cookie goes here
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"rabbit-{amqp_port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
    }
    # Its own epmd, so that nothing is left running after the stack stops. Start-up chatter (a
    # hundred lines) goes to files, even when the rest goes to the terminal.
    # RabbitMQ fails at once ("nodistribution") if its epmd does not listen yet.
    epmd = Service("epmd", ["epmd", "-port", str(epmd_port)], log_to_file=True, stop_last=True,
                   ready=lambda process: wait_for_port(epmd_port, 10, process))
    rabbitmq = Service("rabbitmq", [RABBITMQ_SERVER], env, log_to_file=True, signal_group=True,
                       stop_last=True,
                       ready=lambda process: wait_for_broker(url, 60, process))
    return [epmd, rabbitmq], url


def app_replica(stack: Stack, replica: Replica) -> Service:
    return Service(
        replica.replica_id,
        [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "web.wsgi:app"],
        {
            "AMQP_URL": stack.amqp_url or "",
            "REPLICA_ID": replica.replica_id,
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(replica.port),
            "REPLICA_ADDRESS": f"127.0.0.1:{replica.port}",
            "PYTHONUNBUFFERED": "1",
            **stack.clients_within_open_files(),
            **stack.replica_env_overrides.get(replica.index, {}),
        },
        ready_url=f"{replica.url}/readyz", ready_json=broker_connected)


def broker_connected(readiness: dict) -> bool:
    """A replica's /readyz says both broker connections are up. /readyz answers 200 without them
    (the replica serves its own clients); a stack starts with its broker running, so it waits for
    them: a replica that cannot reach the broker is a start-up failure here."""
    broker = readiness.get("broker") or {}
    return bool(broker.get("listener_bound") and broker.get("publisher_connected"))


def app_worker(stack: Stack, index: int) -> Service:
    port = stack.worker_health_ports.setdefault(index, free_port())
    return Service(
        f"worker-{index}", [sys.executable, "-m", "worker"],
        {"AMQP_URL": stack.amqp_url or "", "REPLICA_ID": f"worker-{index}",
         "HEALTH_HOST": "127.0.0.1", "WORKER_HEALTH_PORT": str(port), "PYTHONUNBUFFERED": "1"},
        ready_url=f"{stack.worker_health_url(index)}/readyz")


def nginx_service(stack: Stack, templates: dict[Path, str], ready_path: str) -> Service:
    """nginx with its configuration rendered from `templates` (template -> file in run_dir) and
    checked by `nginx -t` before it starts; ready when `ready_path` answers through it."""
    conf = stack.run_dir / "nginx.conf"
    command = [nginx_binary() or "nginx", "-p", str(stack.run_dir), "-c", str(conf)]

    def write_and_check_config() -> None:
        values = stack.nginx_values()
        for template, name in templates.items():
            render(template, stack.run_dir / name, values)
        check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise StartupFailed(f"nginx rejected its configuration:\n{check.stderr}")

    return Service("nginx", command, setup=write_and_check_config,
                   ready_url=f"{stack.url}{ready_path}", ready_timeout=15)


def app_nginx(stack: Stack) -> Service:
    return nginx_service(stack, {NGINX_DIR / "socketio.conf.template": "socketio.conf",
                                 NGINX_DIR / "native.conf.template": "nginx.conf"}, "/healthz")


@dataclass(frozen=True)
class ServiceSet:
    """What a stack runs besides the broker: each role's service description."""

    replica: Callable[[Stack, Replica], Service]
    nginx: Callable[[Stack], Service]
    worker: Callable[[Stack, int], Service] | None = None  # None: no background worker
    replica_prefix: str = "web"


APP = ServiceSet(replica=app_replica, worker=app_worker, nginx=app_nginx)


# -- the stack -------------------------------------------------------------------------------------

@dataclass
class Stack:
    replicas: int = 3
    port: int = 8080
    amqp_url: str | None = None
    amqp_port: int | None = None  # the private broker's; None: a free port
    workers: int = 1
    log_to_files: bool = False  # tests: one log file per process instead of the terminal
    extra_env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda message: None  # `make run` prints each step
    # What the user should know even when nobody prints the steps: a fixed port taken, a restart.
    notice: Callable[[str], None] = announce_on_stderr
    # Restart whatever exits unexpectedly, as compose's `restart: unless-stopped` does (`make run`).
    # Off for the tests' stacks: they kill replicas on purpose and restart them themselves.
    restart: bool = False
    # Per-replica overrides by index, e.g. {1: {"AMQP_URL": <a fault proxy in front of RabbitMQ>}}.
    replica_env_overrides: dict[int, dict[str, str]] = field(default_factory=dict)
    # nginx template values to override (the NGINX_* limits, for tests).
    nginx_overrides: dict[str, str] = field(default_factory=dict)
    services: ServiceSet = APP

    def __post_init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="realtime-stack-"))
        # Started as root, nginx's workers run as `nobody` and must reach their temp directories
        # (polling POSTs above 16 KB are buffered in body/; mkdtemp's 0700 made them fail 500).
        self.run_dir.chmod(0o711)
        self.supervisor = Supervisor(self.run_dir, self.log_to_files, self.extra_env)
        self.web: list[Replica] = []
        self.worker_processes: list[Process] = []
        self.worker_health_ports: dict[int, int] = {}
        self.broker: Process | None = None
        self._broker_services: list[Service] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def processes(self) -> list[Process]:
        return self.supervisor.processes

    # -- the open-file limit ------------------------------------------------------------------

    def clients_within_open_files(self) -> dict[str, str]:
        """MAX_CLIENTS_PER_REPLICA lowered to what the open-file limit allows, unless it was set:
        each replica takes what it can hold instead of warning, every replica on every start,
        that it could not hold the default (open_files_note() says it once)."""
        from common.settings import Settings, clients_within_open_files, open_files_for_clients

        limit = open_files_limit()
        default = Settings.model_fields["max_clients_per_replica"].default
        chosen = self.extra_env.get("MAX_CLIENTS_PER_REPLICA") or os.environ.get(
            "MAX_CLIENTS_PER_REPLICA")
        if chosen or limit is None or limit >= open_files_for_clients(default):
            return {}
        return {"MAX_CLIENTS_PER_REPLICA": str(clients_within_open_files(limit))}

    def open_files_note(self) -> str | None:
        """One line when the open-file limit holds the stack below its defaults."""
        limit = open_files_limit()
        if limit is None or limit >= nginx_defaults.OPEN_FILES:
            return None
        replicas = self.clients_within_open_files().get("MAX_CLIENTS_PER_REPLICA")
        # nginx holds two connections per client: the client's and the one to its replica.
        return (f"note: the open-file limit (`ulimit -n`) is {limit:,}: nginx proxies at most "
                f"about {limit // 2:,} clients"
                + (f", each replica takes {int(replicas):,}" if replicas else "")
                + f". A hard limit of {nginx_defaults.OPEN_FILES:,} lifts this.")

    # -- starting -----------------------------------------------------------------------------

    def start(self) -> Stack:
        try:
            check_installed(need_rabbitmq=self.amqp_url is None)
            if note := self.open_files_note():
                self.notice(note)
            if self.amqp_url is None:
                self.progress(f"starting a private RabbitMQ in {self.run_dir}")
                self.amqp_url = self.start_private_broker()
            self.web = [Replica(index, free_port(), prefix=self.services.replica_prefix)
                        for index in range(1, self.replicas + 1)]
            self.progress(f"starting {self.replicas} web replicas on ports "
                          f"{', '.join(str(replica.port) for replica in self.web)}")
            processes = self.supervisor.run(*(self.services.replica(self, r) for r in self.web))
            for replica, process in zip(self.web, processes, strict=True):
                replica.process = process
            if self.workers and self.services.worker:
                self.progress(f"starting {self.workers} worker(s)")
                self.worker_processes = self.supervisor.run(
                    *(self.services.worker(self, i) for i in range(1, self.workers + 1)))
            self.progress(f"starting nginx on {self.url}")
            self.supervisor.run(self.services.nginx(self))
            if self.restart:
                self.supervisor.keep_running(self.notice)
        except BaseException:
            self.stop()
            raise
        return self

    def start_private_broker(self) -> str:
        """Start a private RabbitMQ; its URL (set it as amqp_url before start())."""
        self._broker_services, url = private_broker(
            self.run_dir, broker_port(self.amqp_port, self.notice))
        epmd, _ = self._broker_services
        self.supervisor.run(epmd)
        self.start_broker()
        return url

    def start_broker(self) -> None:
        """(Re)start the private broker with the same ports and data: durable queues survive."""
        (self.broker,) = self.supervisor.run(self._broker_services[-1])

    def stop_broker(self) -> None:
        self.supervisor.stop_one(self.broker)

    def rabbitmqctl(self, *args: str) -> str:
        """Run rabbitmqctl against the private broker (its node name, cookie and epmd); its output.
        Tests use it to raise and clear a resource alarm."""
        env = self._broker_services[-1].env
        result = subprocess.run([RABBITMQCTL, "-n", env["RABBITMQ_NODENAME"], *args],
                                env={**os.environ, **env}, capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def start_replica(self, replica: Replica, wait: bool = True) -> None:
        service = self.services.replica(self, replica)
        replica.process = (self.supervisor.run(service)[0] if wait
                           else self.supervisor.spawn(service))

    def worker_health_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.worker_health_ports[index]}"

    def start_worker(self, index: int, wait: bool = True) -> Process:
        service = self.services.worker(self, index)
        return self.supervisor.run(service)[0] if wait else self.supervisor.spawn(service)

    def nginx_values(self) -> dict[str, str]:
        # nginx can raise its soft open-file limit, not the hard one it inherits: stay within it.
        open_files = min(nginx_defaults.OPEN_FILES, open_files_limit() or nginx_defaults.OPEN_FILES)
        return {
            **nginx_defaults.NATIVE,
            "NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "NGINX_UPSTREAM_SERVERS": " ".join(
                f"server 127.0.0.1:{replica.port};" for replica in self.web),
            "NGINX_WEB_BACKEND": "web_replicas",
            "NGINX_RESOLVER": "",
            "NGINX_REPLICA_NETWORKS": "127.0.0.0/8 1;",
            "NGINX_REPLICA_PORTS": "|".join(str(replica.port) for replica in self.web),
            "NGINX_RUN_DIR": str(self.run_dir),
            "NGINX_OPEN_FILES": str(open_files),
            "NGINX_WORKER_CONNECTIONS": str(min(nginx_defaults.WORKER_CONNECTIONS, open_files)),
            **({"NGINX_MAX_BODY": nginx_defaults.max_body(
                int(self.extra_env["MAX_MESSAGE_BYTES"]))}
               if "MAX_MESSAGE_BYTES" in self.extra_env else {}),
            **self.nginx_overrides,
        }

    # -- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM everything, the broker last (the others finish their work through it); SIGKILL
        whatever is left after STOP_TIMEOUT; clean up."""
        self.supervisor.stop()
        if not self.log_to_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def push_help(stack: Stack) -> str:
    """What `make run` prints once the stack is up: where everything is, and one ready line for
    each way of pushing events from a backend (the README's "From your backend" shows them)."""
    import shlex

    from common.contract import Event
    from common.settings import DEV_API_KEY, Settings

    def setting(name: str, default: str) -> str:
        return stack.extra_env.get(name) or os.environ.get(name) or default

    api_url = f"{stack.url}/api"
    api_key = setting("API_KEY", DEV_API_KEY)
    channel = setting("SOCKETIO_CHANNEL", "flask-socketio")
    body = json.dumps({"event": Event.MY_RESPONSE, "data": {"data": "hi from curl"},
                       "to": "all"})
    curl = (f"curl -sS -X POST {api_url}/emit -H {shlex.quote(f'Authorization: Bearer {api_key}')}"
            f" -H 'Content-Type: application/json' -d {shlex.quote(body)}")
    quoted = json.dumps  # a JSON string of plain ASCII is a Python string literal too
    emitter = (f"from flask_socketio import SocketIO; SocketIO(message_queue="
               f"{quoted(stack.amqp_url)}, channel={quoted(channel)}).emit("
               f"{quoted(Event.MY_RESPONSE)}, {{\"data\": \"hi from Python\"}})")
    python = f"{shlex.quote(sys.executable)} -c {shlex.quote(emitter)}"
    exports = (f"export API_URL={api_url} API_KEY={shlex.quote(api_key)} "
               f"AMQP_URL={shlex.quote(stack.amqp_url or '')}")
    # The Admin UI is served only with a password set (docs/operations.md#admin-ui).
    admin_user = setting("ADMIN_UI_USERNAME", Settings.model_fields["admin_ui_username"].default)
    admin = [f"  Admin UI:  {stack.url}/admin/  (user {admin_user}, password ADMIN_UI_PASSWORD)"
             ] if setting("ADMIN_UI_PASSWORD", "") else []
    return "\n".join([
        f"  Page:      {stack.url}/",
        f"  API:       {api_url}  (API key: {api_key})",
        *admin,
        f"  AMQP URL:  {stack.amqp_url}",
        "",
        "  Push an event to every open page:",
        f"    {curl}",
        f"    {python}",
        "  For the README's examples (docs/events.md), in your shell:",
        f"    {exports}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--amqp-url", default="",
                        help="a running RabbitMQ; empty starts a private one")
    parser.add_argument("--amqp-port", type=int, default=DEFAULT_AMQP_PORT,
                        help="the private RabbitMQ's port (default: %(default)s; a free one, "
                             "said so, when that one is taken)")
    args = parser.parse_args(argv)

    stack = Stack(replicas=args.replicas, port=args.port, workers=args.workers,
                  amqp_url=args.amqp_url or None, amqp_port=args.amqp_port, restart=True)
    stack.progress = lambda message: print(f"  {message}...", file=sys.stderr, flush=True)
    state = {"started": False, "stopping": False}

    def request_stop(*_):
        state["stopping"] = True
        if not state["started"]:
            raise KeyboardInterrupt  # abandon the start; `finally` stops what already runs

    # SIGINT too: a shell starts background jobs with SIGINT ignored, which would leave Ctrl-C
    # (or `kill -INT`) without its KeyboardInterrupt.
    previous_handlers = {sig: signal.signal(sig, request_stop)
                         for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stack.start()
        state["started"] = True
        workers = f", {len(stack.worker_processes)} workers" if stack.worker_processes else ""
        broker = "private" if not args.amqp_url else "at --amqp-url"
        print(f"\n  The stack is up: {stack.url}  ({args.replicas} replicas{workers}, "
              f"RabbitMQ {broker})\n{push_help(stack)}\n  Ctrl-C stops it.\n", flush=True)
        while not state["stopping"]:  # the supervisor restarts whatever exits meanwhile
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (MissingDependency, StartupFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        stack.stop()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
