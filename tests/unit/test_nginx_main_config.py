"""The containers' nginx runs with the native limits: the image's own main config (1,024
connections) capped the compose stack near 500 clients."""

from __future__ import annotations

import re
import string
from pathlib import Path

from scripts import nginx_defaults

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ("worker_processes", "worker_rlimit_nofile", "worker_connections")


def limits(text: str) -> dict[str, str]:
    return {name: re.search(rf"^\s*{name}\s+(\S+);", text, re.M).group(1) for name in LIMITS}


def test_container_main_config_has_the_native_limits():
    # A native run renders them from scripts/nginx_defaults.py, lower only under a lower ulimit.
    native = limits(string.Template((ROOT / "nginx" / "native.conf.template").read_text())
                    .safe_substitute(NGINX_OPEN_FILES=nginx_defaults.OPEN_FILES,
                                     NGINX_WORKER_CONNECTIONS=nginx_defaults.WORKER_CONNECTIONS))
    assert limits((ROOT / "nginx" / "container.conf").read_text()) == native
    assert int(native["worker_connections"]) >= 2 * 10_000  # a client and its upstream each


def test_compose_mounts_it_and_the_upstream_refresher():
    compose = (ROOT / "docker-compose.yml").read_text()
    nginx = compose.split("\n  nginx:\n", 1)[1]
    assert "- ./nginx/container.conf:/etc/nginx/nginx.conf:ro" in nginx
    assert "- ./nginx/refresh-upstream.sh:/docker-entrypoint.d/" in nginx
