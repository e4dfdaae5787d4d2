"""Runs services described as data: what to start, with which environment, and how to tell it is up.

A `Service` is a description (name, command, environment, readiness check); a `Supervisor` starts
descriptions in their own process groups, waits for each to be ready, and stops them all: SIGTERM,
the `stop_last` ones (the broker) after the others, then SIGKILL for whatever outlived the timeout.
After `keep_running()` it also restarts, after a short backoff, any process that exits without
having been told to stop, as compose's `restart: unless-stopped` does (`make run` turns it on;
the tests' stacks leave it off, since they kill replicas on purpose and restart them themselves).
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
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 12.0  # every process gets this long after SIGTERM before SIGKILL
# Restarts after an unexpected exit wait 1 s, then twice as long for each exit that follows
# within RESTART_RESET_AFTER of a start, up to the maximum: a process that dies at once keeps
# being retried without filling the terminal. Docker's restart policy backs off the same way.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_RESET_AFTER = 10.0


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


def port_is_free(port: int) -> bool:
    """Whether a service could listen on 127.0.0.1:`port` now. SO_REUSEADDR, as servers set it:
    the connections a stopped server left in TIME_WAIT do not make its port look taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def render(template: Path, destination: Path, values: dict[str, str]) -> None:
    """Fill ${NGINX_*} placeholders and leave nginx's own $variables alone (like envsubst)."""
    destination.write_text(string.Template(template.read_text()).safe_substitute(values))


def restart_delay(quick_exits: int) -> float:
    """How long to wait before restarting a process that exited `quick_exits` times in a row
    soon after being started (1 for the first exit)."""
    return min(RESTART_MAX_DELAY, RESTART_FIRST_DELAY * 2 ** max(0, quick_exits - 1))


def exit_status(returncode: int | None) -> str:
    """'exited with 3', 'killed by SIGKILL': how a process ended, as a log line says it."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exited with {returncode}"


@dataclass
class Process:
    """A started service. A restart replaces `popen` in place, so whoever holds the Process (a
    stack's replica, a test) follows the new one."""

    name: str
    popen: subprocess.Popen
    log_path: Path | None
    stop_signal: int = signal.SIGTERM
    signal_group: bool = False  # RabbitMQ's script does not pass SIGTERM on to the VM
    stop_last: bool = False
    service: Service | None = None  # what to start again
    started_at: float = field(default_factory=time.monotonic)
    stopping: bool = False  # told to stop: its exit is expected, never restarted
    quick_exits: int = 0  # exits in a row soon after a start: the restart backoff grows with them
    restart_at: float | None = None  # when the pending restart is due

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


def announce_on_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Supervisor:
    """Owns the processes of the services it started; `processes` is theirs, in start order."""

    def __init__(self, run_dir: Path, log_to_files: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.log_to_files = log_to_files  # one log file per process instead of the terminal
        self.env = env or {}  # on top of os.environ, under each service's own
        self.processes: list[Process] = []
        # The restarter thread and the caller both change `processes` and the processes' state.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._restarter: threading.Thread | None = None

    def _popen(self, service: Service, log_path: Path | None) -> subprocess.Popen:
        if service.setup:
            service.setup()
        output = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child keeps it)
        try:
            return subprocess.Popen(
                service.command, cwd=ROOT, env={**os.environ, **self.env, **service.env},
                stdout=output, stderr=subprocess.STDOUT if output else None,
                stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if output:
                output.close()

    def spawn(self, service: Service) -> Process:
        log_path = (self.run_dir / f"{service.name}.log"
                    if self.log_to_files or service.log_to_file else None)
        process = Process(service.name, self._popen(service, log_path), log_path,
                          signal_group=service.signal_group, stop_last=service.stop_last,
                          service=service)
        with self._lock:
            self.processes.append(process)
        return process

    def run(self, *services: Service) -> list[Process]:
        """Start the services together, then wait until each is ready."""
        processes = [self.spawn(service) for service in services]
        for service, process in zip(services, processes, strict=True):
            service.wait_ready(process)
        return processes

    # -- restarting what exits unexpectedly ----------------------------------------------------

    def keep_running(self, announce: Callable[[str], None] = announce_on_stderr,
                     interval: float = 0.5) -> None:
        """From now on, restart each process that exits without having been told to stop (it
        crashed, ran out of memory, someone SIGKILLed it), saying so through `announce`."""
        if self._restarter is None:
            self._restarter = threading.Thread(target=self._restart_exited, args=(announce,
                                               interval), name="supervisor-restarts",
                                               daemon=True)
            self._restarter.start()

    def _restart_exited(self, announce: Callable[[str], None], interval: float) -> None:
        while not self._stopping.wait(interval):
            with self._lock:
                for process in self.processes:
                    if process.stopping or process.running() or self._stopping.is_set():
                        continue
                    now = time.monotonic()
                    if process.restart_at is None:
                        ran = now - process.started_at
                        process.quick_exits = (process.quick_exits + 1
                                               if ran < RESTART_RESET_AFTER else 1)
                        delay = restart_delay(process.quick_exits)
                        process.restart_at = now + delay
                        announce(f"{process.name} {exit_status(process.popen.returncode)} after "
                                 f"{ran:.0f}s; restarting it in {delay:g}s")
                    elif now >= process.restart_at:
                        self._restart(process, announce)

    def _restart(self, process: Process, announce: Callable[[str], None]) -> None:
        process.kill_group()  # what the dead one left behind (gunicorn's worker) holds its port
        process.popen.wait()
        process.restart_at = None
        process.started_at = time.monotonic()
        try:
            process.popen = self._popen(process.service, process.log_path)
        except (OSError, StartupFailed) as exc:  # counted as one more quick exit
            announce(f"{process.name} could not be restarted: {exc}")
            return
        announce(f"{process.name} restarted (pid {process.popen.pid})")

    # -- stopping -------------------------------------------------------------------------------

    def stop_one(self, process: Process, timeout: float = STOP_TIMEOUT) -> None:
        with self._lock:
            process.stopping = True
            process.send(process.stop_signal)
        try:
            process.popen.wait(timeout=timeout)
        finally:
            process.kill_group()
            process.popen.wait()
            with self._lock:
                if process in self.processes:
                    self.processes.remove(process)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM everything, the `stop_last` ones last; SIGKILL what is left after `timeout`."""
        self._stopping.set()
        if self._restarter is not None:
            self._restarter.join()  # it may be starting one again: let it finish, then stop it too
        with self._lock:
            for process in self.processes:
                process.stopping = True
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
