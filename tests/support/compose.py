"""docker-compose.yml on a real engine, driven through the compose CLI, for the compose tests.

The stack runs under a test-only project name on a free 127.0.0.1 port, so it never touches a stack
started with `make up`.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from scripts.stack import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
REPLICAS = 3
SERVICES = ("rabbitmq", "web", "worker", "nginx")
LOG_LINES_SHOWN = 60
HOW_TO_GET_AN_ENGINE = (
    "Start Docker (with the compose v2 plugin or docker-compose >= 1.27), or on a Debian machine "
    "without one, as root: eval \"$(../shared/tools/container-engine up)\" from the repository "
    "(it starts dockerd, builds stand-in base images and prints PYTHON_IMAGE, NGINX_IMAGE, "
    "RABBITMQ_IMAGE and COMPOSE); .ci/run does exactly this.")


class ComposeError(RuntimeError):
    pass


class ComposeStack:
    """One compose project of docker-compose.yml, driven through the compose CLI."""

    def __init__(self, compose: list[str], project: str):
        self.compose = compose
        self.project = project
        self.http_port = free_port()
        self.api_key = secrets.token_hex(32)
        self.env = {
            **os.environ,
            "SECRET_KEY": secrets.token_hex(32),
            "API_KEY": self.api_key,
            "RABBITMQ_USER": "app",
            "RABBITMQ_PASSWORD": secrets.token_hex(16),
            "HTTP_PORT": str(self.http_port),
            "RABBITMQ_MANAGEMENT_PORT": str(free_port()),
            # Its own tag: a test run never replaces the image of a stack started with `make up`.
            "APP_IMAGE": "flask-realtime-stack:compose-test",
            # Every test client reaches nginx from Docker's gateway address: the documented
            # override of the per-address limits for a load generator behind one address.
            "NGINX_CONN_PER_ADDRESS": "20000",
            "NGINX_NEW_SESSION_RATE": "1000r/s",
            "NGINX_NEW_SESSION_BURST": "5000",
        }
        self.down_done = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        command = [*self.compose, "-p", self.project, *args]
        try:
            result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"`{shlex.join(command)}` took more than {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise ComposeError(f"`{shlex.join(command)}` exited with {result.returncode}:\n"
                               f"{result.stdout[-3000:]}{result.stderr[-6000:]}")
        return result.stdout

    def up(self, *options: str, replicas: int) -> None:
        # --no-recreate: scaling must not restart the containers that already serve clients.
        self.run("up", "-d", "--no-build", "--no-recreate", "--scale", f"web={replicas}",
                 *options, timeout=300)

    def container_ids(self, service: str) -> list[str]:
        return self.run("ps", "-q", service, timeout=60).split()

    def inspect(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        result = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True)
        return json.loads(result.stdout or "[]")

    def health(self, service: str) -> dict[str, str]:
        """Container name -> health status ("healthy", "starting", ...) or state without one."""
        return {c["Name"].lstrip("/"): (c["State"].get("Health") or {}).get("Status")
                or c["State"]["Status"] for c in self.inspect(self.container_ids(service))}

    def wait_healthy(self, service: str, count: int = 1, timeout: float = 120) -> float:
        """Seconds until `count` containers of `service` are healthy; ComposeError otherwise."""
        states: dict[str, str] = {}

        def all_healthy() -> bool:
            states.clear()
            states.update(self.health(service))
            return len(states) == count and all(state == "healthy" for state in states.values())

        try:
            return wait_until(all_healthy, timeout, interval=1)
        except AssertionError:
            raise ComposeError(f"{service}: expected {count} healthy containers within "
                               f"{timeout:.0f}s, got {states}") from None

    def web_replicas(self) -> dict[str, str]:
        """Container name (= the replica id, REPLICA_ID_FROM_DNS) -> hostname, of running web."""
        return {c["Name"].lstrip("/"): c["Config"]["Hostname"]
                for c in self.inspect(self.container_ids("web")) if c["State"]["Running"]}

    def resources(self) -> dict[str, set[str]]:
        """Everything of this project on the engine: containers, networks, volumes."""
        label = f"label=com.docker.compose.project={self.project}"
        containers = set(_docker("ps", "-aq", "--filter", label).split())
        networks = set(_docker("network", "ls", "-q", "--filter", label).split())
        volumes = set(_docker("volume", "ls", "-q", "--filter", label).split())
        for container in self.inspect(sorted(containers)):
            # Anonymous volumes (the rabbitmq image's VOLUME) carry no compose label.
            volumes |= {m["Name"] for m in container.get("Mounts", []) if m["Type"] == "volume"}
            networks |= {n["NetworkID"] for n in container["NetworkSettings"]["Networks"].values()}
        return {"containers": containers, "networks": networks, "volumes": volumes}

    def logs(self, *services: str, tail: int | None = None) -> str:
        lines = ["--tail", str(tail)] if tail else []
        return self.run("logs", "--no-color", "--timestamps", *lines, *services, timeout=120,
                        check=False)

    def down(self) -> None:
        if not self.down_done:
            self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180)
            self.down_done = True


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def compose_command() -> list[str]:
    """$COMPOSE, else compose v2, else v1; fails the tests with how to get one."""
    if shutil.which("docker") is None:
        pytest.fail(f"the docker CLI is not installed. {HOW_TO_GET_AN_ENGINE}", pytrace=False)
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers (`docker info`: {info.stderr.strip()[-300:]}). "
                    f"{HOW_TO_GET_AN_ENGINE}", pytrace=False)
    candidates = [os.environ["COMPOSE"]] if os.environ.get("COMPOSE") else [
        "docker compose", "docker-compose"]
    for candidate in candidates:
        command = shlex.split(candidate)
        if shutil.which(command[0]) and subprocess.run(
                [*command, "version"], capture_output=True).returncode == 0:
            return command
    pytest.fail(f"no working compose CLI (tried {candidates}). {HOW_TO_GET_AN_ENGINE}",
                pytrace=False)


FAILED = pytest.StashKey[bool]()
LOGS = pytest.StashKey[str]()
TIMINGS = pytest.StashKey[dict]()
COMPOSE_USED = pytest.StashKey[str]()


def keep_logs(config: pytest.Config, stack: ComposeStack) -> str:
    """Save the whole log in test-artifacts/ and show each service's last lines after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"compose-{stack.project}.log"
    path.write_text(stack.logs())
    tails = "\n".join(stack.logs(service, tail=LOG_LINES_SHOWN) for service in SERVICES)
    config.stash[LOGS] = (f"(the last {LOG_LINES_SHOWN} lines of each service; all of it in "
                          f"{path.relative_to(ROOT)})\n{tails}")
    return tails


def notify_everyone(url: str, api_key: str) -> tuple[dict, dict]:
    """POST /api/notifications to everyone, with a text no other test sends; the data sent and
    the 202's body (its `id`)."""
    data = {"text": f"notification-{uuid.uuid4().hex}"}
    response = requests.post(f"{url}/api/notifications", json={"to": "all", "data": data},
                             headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert response.status_code == 202, response.text
    return data, response.json()
