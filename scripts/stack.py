"""Run the whole stack natively, in the foreground: `make run` (and the integration tests' fixture).

It starts, each in its own process group:
  * RabbitMQ, a private broker in a temporary directory (unless --amqp-url names one),
  * --replicas web replicas (gunicorn, one gevent-websocket worker each) on free loopback ports,
  * --workers worker processes (when the worker package provides its entry point),
  * nginx on 127.0.0.1:--port, from nginx/socketio.conf.template.
Ctrl-C or SIGTERM stops everything it started and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "nginx"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's, without its su wrapper
STOP_TIMEOUT = 12.0  # every process gets this long after SIGTERM before SIGKILL


class MissingDependency(RuntimeError):
    """A program the stack needs is not installed; the message says how to install it."""


class StartupFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, process: Process | None = None) -> None:
    """Wait until `url` answers 200, or fail early if the process serving it exits."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise StartupFailed(f"{process.name} exited with {process.popen.returncode}"
                                f"{process.log_hint()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise StartupFailed(f"{url} not ready after {timeout:.0f}s: {last_error}")


def render(template: Path, destination: Path, values: dict[str, str]) -> None:
    """Fill ${NGINX_*} placeholders and leave nginx's own $variables alone (like envsubst)."""
    destination.write_text(string.Template(template.read_text()).safe_substitute(values))


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path | None
    stop_signal: int = signal.SIGTERM
    signal_group: bool = False  # RabbitMQ's script does not pass SIGTERM on to the VM

    def log_hint(self) -> str:
        if self.log_path and self.log_path.exists():
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            return f"; last lines of {self.log_path}:\n    " + "\n    ".join(tail)
        return ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        try:
            if self.signal_group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Replica:
    index: int
    port: int
    process: Process | None = None

    @property
    def replica_id(self) -> str:
        return f"web-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    replicas: int = 3
    port: int = 8080
    amqp_url: str | None = None
    workers: int = 1
    log_to_files: bool = False  # tests: one log file per process instead of the terminal
    extra_env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda message: None  # `make run` prints each step
    # Per-replica overrides by index, e.g. {1: {"AMQP_URL": <a fault proxy in front of RabbitMQ>}}.
    replica_env_overrides: dict[int, dict[str, str]] = field(default_factory=dict)
    # nginx template values to override (the NGINX_* limits, for tests).
    nginx_overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="realtime-stack-"))
        # Started as root, nginx's workers run as `nobody` and must reach their temp directories
        # (polling POSTs above 16 KB are buffered in body/; mkdtemp's 0700 made them fail 500).
        self.run_dir.chmod(0o711)
        self.processes: list[Process] = []
        self.web: list[Replica] = []
        self.worker_processes: list[Process] = []
        self.worker_health_ports: dict[int, int] = {}
        self.broker: Process | None = None
        self._broker_command: tuple[list[str], dict[str, str]] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- starting -----------------------------------------------------------------------------

    def start(self) -> Stack:
        try:
            check_installed(need_rabbitmq=self.amqp_url is None)
            if self.amqp_url is None:
                self.progress(f"starting a private RabbitMQ in {self.run_dir}")
                self.amqp_url = self.start_private_broker()
            for index in range(1, self.replicas + 1):
                self.web.append(Replica(index=index, port=free_port()))
            self.progress(f"starting {self.replicas} web replicas on ports "
                          f"{', '.join(str(replica.port) for replica in self.web)}")
            for replica in self.web:
                self.start_replica(replica, wait=False)
            for replica in self.web:
                wait_for_http(f"{replica.url}/readyz", 30, replica.process)
            if self.workers:
                self.progress(f"starting {self.workers} worker(s)")
            self._start_workers()
            self.progress(f"starting nginx on {self.url}")
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None,
               to_file: bool = False, **process_options) -> Process:
        log_path = self.run_dir / f"{name}.log" if self.log_to_files or to_file else None
        output = open(log_path, "ab") if log_path else None
        popen = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **self.extra_env, **(env or {})},
            stdout=output, stderr=subprocess.STDOUT if output else None,
            stdin=subprocess.DEVNULL, start_new_session=True)
        if output:
            output.close()
        process = Process(name, popen, log_path, **process_options)
        self.processes.append(process)
        return process

    def start_private_broker(self) -> str:
        home = self.run_dir / "rabbitmq"
        home.mkdir()
        amqp_port, dist_port, epmd_port = free_port(), free_port(), free_port()
        (home / "enabled_plugins").write_text("[].\n")
        # loopback_users = none lets the guest account in, which is safe: it listens on loopback only.
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\nloopback_users = none\n")
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
        # Our own epmd, so that nothing is left running after the stack stops.
        self._spawn("epmd", ["epmd", "-port", str(epmd_port)], to_file=True)
        self._broker_command = ([RABBITMQ_SERVER], env)
        url = f"amqp://guest:guest@127.0.0.1:{amqp_port}//"
        self.start_broker(url)
        return url

    def start_broker(self, url: str | None = None) -> None:
        """(Re)start the private broker with the same ports and data: durable queues survive."""
        command, env = self._broker_command
        # Its start-up alone is a hundred lines: to a file, even when the rest goes to the terminal.
        self.broker = self._spawn("rabbitmq", command, env, to_file=True, signal_group=True)
        wait_for_broker(url or self.amqp_url, 60, self.broker)

    def stop_broker(self) -> None:
        self.broker.send(signal.SIGTERM)
        try:
            self.broker.popen.wait(timeout=STOP_TIMEOUT)
        finally:
            self.broker.kill_group()
            self.broker.popen.wait()
            self.processes.remove(self.broker)

    def replica_env(self, replica: Replica) -> dict[str, str]:
        return {
            "AMQP_URL": self.amqp_url or "",
            "REPLICA_ID": replica.replica_id,
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(replica.port),
            "REPLICA_ADDRESS": f"127.0.0.1:{replica.port}",
            "PYTHONUNBUFFERED": "1",
            **self.replica_env_overrides.get(replica.index, {}),
        }

    def start_replica(self, replica: Replica, wait: bool = True) -> None:
        replica.process = self._spawn(
            replica.replica_id,
            [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "web.wsgi:app"],
            self.replica_env(replica))
        if wait:
            wait_for_http(f"{replica.url}/readyz", 30, replica.process)

    def _start_workers(self) -> None:
        if not (ROOT / "worker" / "__main__.py").exists():
            return
        for index in range(1, self.workers + 1):
            self.worker_processes.append(self.start_worker(index, wait=False))
        for index, process in enumerate(self.worker_processes, start=1):
            wait_for_http(f"{self.worker_health_url(index)}/readyz", 30, process)

    def worker_health_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.worker_health_ports[index]}"

    def start_worker(self, index: int, wait: bool = True) -> Process:
        port = self.worker_health_ports.setdefault(index, free_port())
        process = self._spawn(
            f"worker-{index}", [sys.executable, "-m", "worker"],
            {"AMQP_URL": self.amqp_url or "", "REPLICA_ID": f"worker-{index}",
             "HEALTH_HOST": "127.0.0.1", "WORKER_HEALTH_PORT": str(port),
             "PYTHONUNBUFFERED": "1"})
        if wait:
            wait_for_http(f"{self.worker_health_url(index)}/readyz", 30, process)
        return process

    def nginx_values(self) -> dict[str, str]:
        return {
            "NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "NGINX_UPSTREAM_SERVERS": " ".join(
                f"server 127.0.0.1:{replica.port};" for replica in self.web),
            "NGINX_WEB_BACKEND": "web_replicas",
            "NGINX_RESOLVER": "",
            "NGINX_REPLICA_NETWORKS": "127.0.0.0/8 1;",
            "NGINX_REPLICA_PORTS": "|".join(str(replica.port) for replica in self.web),
            "NGINX_RUN_DIR": str(self.run_dir),
            # A little above the replicas' MAX_MESSAGE_BYTES: engine.io answers bodies up to there.
            "NGINX_MAX_BODY": f"{self.max_message_bytes() // 1024 + 16}k",
            # Per client address. High: the load test opens thousands of clients from 127.0.0.1
            # (up to 2 connections each while polling) at 150 new sessions a second.
            "NGINX_CONN_PER_ADDRESS": "10000",
            "NGINX_NEW_SESSION_RATE": "500r/s",
            "NGINX_NEW_SESSION_BURST": "2000",
            **self.nginx_overrides,
        }

    def max_message_bytes(self) -> int:
        from common.settings import Settings  # the setting's default, unless the stack sets it

        default = Settings.model_fields["max_message_bytes"].default
        return int(self.extra_env.get("MAX_MESSAGE_BYTES", default))

    nginx_ready_path = "/healthz"  # asked through nginx once it runs

    def render_nginx_config(self) -> None:
        """Write run_dir/nginx.conf (and what it includes) from the templates."""
        values = self.nginx_values()
        render(NGINX_DIR / "socketio.conf.template", self.run_dir / "socketio.conf", values)
        render(NGINX_DIR / "native.conf.template", self.run_dir / "nginx.conf", values)

    def _start_nginx(self) -> None:
        self.render_nginx_config()
        nginx = [nginx_binary(), "-p", str(self.run_dir), "-c", str(self.run_dir / "nginx.conf")]
        check = subprocess.run([*nginx, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise StartupFailed(f"nginx rejected its configuration:\n{check.stderr}")
        process = self._spawn("nginx", nginx)
        wait_for_http(f"{self.url}{self.nginx_ready_path}", 15, process)

    # -- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM everything, the broker last (the others finish their work through it); SIGKILL
        whatever is left after STOP_TIMEOUT; clean up."""
        deadline = time.monotonic() + STOP_TIMEOUT
        broker_side = [p for p in self.processes if p.name in ("rabbitmq", "epmd")]
        for group in ([p for p in self.processes if p not in broker_side], broker_side):
            for process in reversed(group):
                if process.running():
                    process.send(process.stop_signal)
            for process in group:
                try:
                    process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for process in self.processes:  # also the children a process group leader left behind
            process.kill_group()
            process.popen.wait()
        self.processes.clear()
        if not self.log_to_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def failed_processes(self) -> list[Process]:
        return [p for p in self.processes if not p.running()]


def wait_for_broker(url: str, timeout: float, process: Process | None = None) -> None:
    import kombu  # only the broker check needs it; keeps `--help` instant

    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.running():
            raise StartupFailed(f"{process.name} exited with {process.popen.returncode}"
                                f"{process.log_hint()}")
        try:
            with kombu.Connection(url, connect_timeout=1) as connection:
                connection.ensure_connection(max_retries=1)
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StartupFailed(f"RabbitMQ at {url} not reachable after {timeout:.0f}s: {exc}")
            time.sleep(0.3)


SYSTEM_BIN_DIRS = "/usr/sbin:/sbin"  # where Debian puts nginx; not on every user's PATH


def nginx_binary() -> str | None:
    """nginx's path, found on PATH or where Debian installs it."""
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:{SYSTEM_BIN_DIRS}")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--amqp-url", default="",
                        help="a running RabbitMQ; empty starts a private one")
    args = parser.parse_args(argv)

    stack = Stack(replicas=args.replicas, port=args.port, workers=args.workers,
                  amqp_url=args.amqp_url or None)
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
              f"RabbitMQ {broker})\n  Ctrl-C stops it.\n", flush=True)
        while not state["stopping"]:
            for process in stack.failed_processes():
                print(f"{process.name} exited with {process.popen.returncode}", file=sys.stderr)
                stack.processes.remove(process)
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
