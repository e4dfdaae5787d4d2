"""The containers' nginx runs with the native limits: the image's own main config (1,024
connections) capped the compose stack near 500 clients."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ("worker_processes", "worker_rlimit_nofile", "worker_connections")


def limits(path: Path) -> dict[str, str]:
    text = path.read_text()
    return {name: re.search(rf"^\s*{name}\s+(\S+);", text, re.M).group(1) for name in LIMITS}


def test_container_main_config_has_the_native_limits():
    native = limits(ROOT / "nginx" / "native.conf.template")
    assert limits(ROOT / "nginx" / "container.conf") == native
    assert int(native["worker_connections"]) >= 2 * 10_000  # a client and its upstream each


def test_compose_mounts_it_and_the_upstream_refresher():
    compose = (ROOT / "docker-compose.yml").read_text()
    nginx = compose.split("\n  nginx:\n", 1)[1]
    assert "- ./nginx/container.conf:/etc/nginx/nginx.conf:ro" in nginx
    assert "- ./nginx/refresh-upstream.sh:/docker-entrypoint.d/" in nginx
