"""Runs services described as data: what to start, with which environment, and how to tell it is up.

A `Service` is a description (name, command, environment, readiness check); a `Supervisor` starts
descriptions in their own process groups, waits for each to be ready, and stops them all: SIGTERM,
the `stop_last` ones (the broker) after the others, then SIGKILL for whatever outlived the timeout.
Nothing here knows what the services are; scripts/stack.py and loadtest/baseline/ list them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 12.0  # every process gets this long after SIGTERM before SIGKILL


class MissingDependency(RuntimeError):
    """A program the stack needs is not installed; the message says how to install it."""


class StartupFailed(RuntimeError):
    pass


def ephemeral_ports() -> range:
    """The range the kernel picks outgoing connections' local ports from."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, for a service about to listen on it. It is chosen below the
    ephemeral range: a port the kernel handed out (bind to port 0) can be taken again, between
    here and the service's own bind, as the local port of any outgoing connection (a replica's
    broker connection, a test's client), and the service then fails to start."""
    ephemeral = ephemeral_ports()
    candidates = range(10_000, ephemeral.start) if ephemeral.start > 11_000 else range(0)
    for _ in range(200):
        port = random.choice(candidates) if candidates else 0
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


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
    stop_last: bool = False

    def log_hint(self) -> str:
        if self.log_path and self.log_path.exists():
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            return f"; last lines of {self.log_path}:\n    " + "\n    ".join(tail)
        return ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.running():
            raise StartupFailed(f"{self.name} exited with {self.popen.returncode}{self.log_hint()}")

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


def wait_ready(probe: Callable[[], object], timeout: float, process: Process | None, *,
               what: str, errors: tuple[type[BaseException], ...], interval: float) -> None:
    """Call `probe` until it returns None (ready) or `timeout` has passed; it returns, or raises
    one of `errors`, why not yet. Fails at once if `process`, the one being waited for, exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            process.check_alive()
        try:
            problem = probe()
        except errors as exc:
            problem = exc
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise StartupFailed(f"{what} after {timeout:.0f}s: {problem}") from (
                problem if isinstance(problem, BaseException) else None)
        time.sleep(interval)


def wait_for_port(port: int, timeout: float, process: Process | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    def probe() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return None

    wait_ready(probe, timeout, process, what=f"nothing listens on port {port}",
               errors=(OSError,), interval=0.05)


def wait_for_http(url: str, timeout: float, process: Process | None = None,
                  accept: Callable[[object], bool] | None = None) -> None:
    """Wait until `url` answers 200 (and, with `accept`, a JSON body it accepts), or fail early if
    the process serving it exits."""
    def probe() -> object:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                return f"answered {response.status}"
            if accept is None:
                return None
            body = json.loads(response.read())
            return None if accept(body) else f"answered {body}"

    wait_ready(probe, timeout, process, what=f"{url} not ready",
               errors=(urllib.error.URLError, OSError, ValueError), interval=0.1)


@dataclass
class Service:
    """One process to run. Readiness: `ready_url` answers 200, or `ready(process)` returns."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    ready_json: Callable[[object], bool] | None = None  # what ready_url must answer besides 200
    ready: Callable[[Process], None] | None = None
    ready_timeout: float = 30.0
    setup: Callable[[], None] | None = None  # runs before the spawn (a config file to write)
    log_to_file: bool = False  # even when the others log to the terminal (start-up chatter)
    signal_group: bool = False
    stop_last: bool = False  # the others finish their work through it (the broker)

    def wait_ready(self, process: Process) -> None:
        if self.ready_url:
            wait_for_http(self.ready_url, self.ready_timeout, process, self.ready_json)
        if self.ready:
            self.ready(process)


class Supervisor:
    """Owns the processes of the services it started; `processes` is theirs, in start order."""

    def __init__(self, run_dir: Path, log_to_files: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.log_to_files = log_to_files  # one log file per process instead of the terminal
        self.env = env or {}  # on top of os.environ, under each service's own
        self.processes: list[Process] = []

    def spawn(self, service: Service) -> Process:
        if service.setup:
            service.setup()
        log_path = (self.run_dir / f"{service.name}.log"
                    if self.log_to_files or service.log_to_file else None)
        output = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child keeps it)
        popen = subprocess.Popen(
            service.command, cwd=ROOT, env={**os.environ, **self.env, **service.env},
            stdout=output, stderr=subprocess.STDOUT if output else None,
            stdin=subprocess.DEVNULL, start_new_session=True)
        if output:
            output.close()
        process = Process(service.name, popen, log_path, signal_group=service.signal_group,
                          stop_last=service.stop_last)
        self.processes.append(process)
        return process

    def run(self, *services: Service) -> list[Process]:
        """Start the services together, then wait until each is ready."""
        processes = [self.spawn(service) for service in services]
        for service, process in zip(services, processes, strict=True):
            service.wait_ready(process)
        return processes

    def stop_one(self, process: Process, timeout: float = STOP_TIMEOUT) -> None:
        process.send(process.stop_signal)
        try:
            process.popen.wait(timeout=timeout)
        finally:
            process.kill_group()
            process.popen.wait()
            if process in self.processes:
                self.processes.remove(process)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM everything, the `stop_last` ones last; SIGKILL what is left after `timeout`."""
        deadline = time.monotonic() + timeout
        last = [p for p in self.processes if p.stop_last]
        for group in ([p for p in self.processes if p not in last], last):
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

    def failed(self) -> list[Process]:
        return [p for p in self.processes if not p.running()]
