"""deploy/swarm/stack.yml on a one-node Docker Swarm, end to end (make test-swarm).

Swarm needs an engine that manages iptables (overlay networks carry no traffic between tasks
otherwise: "No route to host"). An engine that cannot run it FAILS the tests with the reason and
how to get one, before anything is changed on it. The fixture joins the engine to a swarm of its
own (`docker swarm init`) only if it is in none, and leaves it again at the end; the stack and its
image carry a test-only name.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from scripts.stack import free_port
from tests.support.compose import ARTIFACTS, HOW_TO_GET_AN_ENGINE, ROOT, compose_command
from tests.support.engine_tiers import only_when_named
from tests.support.waiting import wait_until

pytest_ignore_collect = only_when_named(Path(__file__).parent)

STACK_FILE = "deploy/swarm/stack.yml"
IMAGE = "flask-realtime-stack:swarm-test"
BROKER_LABELS = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
SERVICES = (*BROKER_LABELS, "web", "worker", "nginx")
HOW_TO_GET_SWARM = (
    "On a machine using ../shared/tools/container-engine: stop the engine it started "
    "(../shared/tools/container-engine down, or down --force if you did not start it and nobody "
    "else uses it), then `export CONTAINER_ENGINE_IPTABLES=1; eval \"$(../shared/tools/"
    "container-engine up)\"` and run make test-swarm again; .ci/run does this. Elsewhere: a Docker "
    "engine with its default --iptables=true.")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited with {result.returncode}: "
                             f"{result.stderr.strip()[-2000:]}")
    return result


def why_swarm_cannot_run() -> str | None:
    """The reason this engine cannot run a swarm's overlay networks, read without changing it."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dockerd") and b"--iptables=false" in argv:
            return (f"the Docker engine here runs without iptables management (pid {proc.name}: "
                    f"{b' '.join(argv).decode(errors='replace')}). Swarm's overlay networks then "
                    "carry no traffic between tasks: every connection from nginx to a web task, "
                    "or from a replica to RabbitMQ, fails with 'No route to host' (DNS still "
                    "answers, which hides the cause).")
    return None


class SwarmStack:
    def __init__(self):
        self.name = f"rtswarm{uuid.uuid4().hex[:6]}"
        self.http_port = free_port()
        self.api_key = secrets.token_hex(32)
        self.env = {**os.environ, "APP_IMAGE": IMAGE, "SECRET_KEY": secrets.token_hex(32),
                    "API_KEY": self.api_key, "RABBITMQ_USER": "app",
                    "RABBITMQ_PASSWORD": secrets.token_hex(16),
                    "RABBITMQ_ERLANG_COOKIE": secrets.token_hex(24),
                    "HTTP_PORT": str(self.http_port)}
        self.swarm_created = False
        self.node = ""
        self.removed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def running_tasks(self, service: str) -> list[dict]:
        """The running containers of a service on this node, healthy or not, with their health."""
        ids = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name="
                     f"{self.service(service)}").stdout.split()
        if not ids:
            return []
        return json.loads(docker("inspect", *ids).stdout)

    def healthy(self, service: str) -> int:
        return sum(1 for c in self.running_tasks(service)
                   if (c["State"].get("Health") or {}).get("Status") == "healthy")

    def wait_healthy(self, service: str, count: int, timeout: float = 240) -> None:
        try:
            wait_until(lambda: self.healthy(service) == count
                       and len(self.running_tasks(service)) == count, timeout, interval=2)
        except AssertionError:
            tasks = docker("service", "ps", "--no-trunc", self.service(service),
                           check=False).stdout
            raise AssertionError(f"{service}: expected {count} healthy tasks within "
                                 f"{timeout:.0f}s; tasks:\n{tasks[-3000:]}") from None

    def web_replicas(self) -> dict[str, str]:
        """Replica id (REPLICA_ID: web.<slot>.<task id>) -> container id."""
        return {next(e.split("=", 1)[1] for e in c["Config"]["Env"]
                     if e.startswith("REPLICA_ID=")): c["Id"]
                for c in self.running_tasks("web")}

    def up(self) -> None:
        if docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "active":
            docker("swarm", "init", "--advertise-addr", "127.0.0.1")
            self.swarm_created = True
        self.node = docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        for label in BROKER_LABELS:
            docker("node", "update", "--label-add", f"{label}=true", self.node)
        build = subprocess.run(
            ["docker", "build", "-q", "--network", "host", "-t", IMAGE, "--build-arg",
             f"PYTHON_IMAGE={os.environ.get('PYTHON_IMAGE', 'python:3.11-slim-bookworm')}", "."],
            cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert build.returncode == 0, build.stderr[-3000:]
        deploy = subprocess.run(["docker", "stack", "deploy", "-c", STACK_FILE, self.name],
                                cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=300)
        assert deploy.returncode == 0, deploy.stderr[-3000:]

    def logs(self, service: str, tail: str = "80") -> str:
        return docker("service", "logs", "--no-trunc", "--tail", tail, self.service(service),
                      check=False, timeout=60).stdout

    def keep_logs(self) -> Path:
        """Every task's whole log and every service's task history, in test-artifacts/."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"swarm-{self.name}.log"
        path.write_text("\n".join(
            f"--- {service}\n" + docker("service", "ps", "--no-trunc", self.service(service),
                                         check=False).stdout + self.logs(service, tail="all")
            for service in SERVICES))
        return path

    def down(self) -> None:
        if self.removed:
            return
        self.removed = True
        docker("stack", "rm", self.name, check=False)
        wait_until(lambda: not docker("ps", "-aq", "--filter",
                                      f"label=com.docker.stack.namespace={self.name}").stdout.split(),
                   90, interval=2)
        # Networks and volumes go after their containers.
        wait_until(lambda: not docker("network", "ls", "-q", "--filter",
                                      f"label=com.docker.stack.namespace={self.name}").stdout.split(),
                   60, interval=2)
        volumes = docker("volume", "ls", "-q", "--filter",
                         f"label=com.docker.stack.namespace={self.name}").stdout.split()
        if volumes:
            docker("volume", "rm", *volumes, check=False)
        if self.swarm_created:
            docker("swarm", "leave", "--force", check=False)
        elif self.node:
            for label in BROKER_LABELS:
                docker("node", "update", "--label-rm", label, self.node, check=False)


@pytest.fixture(scope="session")
def swarm_stack():
    compose_command()  # no engine at all: FAILED with how to get one
    reason = why_swarm_cannot_run()
    if reason:
        pytest.fail(f"Docker Swarm cannot run on this engine: {reason}\n{HOW_TO_GET_SWARM}",
                    pytrace=False)
    stack = SwarmStack()
    atexit.register(stack.down)
    started = time.monotonic()
    try:
        stack.up()
        for service, count in (("rabbitmq-1", 1), ("rabbitmq-2", 1), ("rabbitmq-3", 1),
                               ("web", 3), ("worker", 2), ("nginx", 1)):
            stack.wait_healthy(service, count)
        wait_until(lambda: _answers(f"{stack.url}/healthz"), 60)
    except AssertionError as exc:
        logs = "\n".join(f"--- {s}\n{stack.logs(s)[-3000:]}" for s in ("web", "nginx",
                                                                          "rabbitmq-2"))
        kept = stack.keep_logs()
        stack.down()
        pytest.fail(f"the swarm stack did not start: {exc}\n{logs}\n(all of every service's log "
                    f"in {kept.relative_to(ROOT)})\n{HOW_TO_GET_AN_ENGINE}", pytrace=False)
    print(f"\nswarm stack up in {time.monotonic() - started:.0f}s")
    try:
        yield stack
    finally:
        stack.down()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False
