"""nginx's limits have one source, scripts/nginx_defaults.py: docker-compose.yml's fallbacks and
the template's header must say the same, and the body cap must follow MAX_MESSAGE_BYTES."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.settings import Settings
from scripts import nginx_defaults

ROOT = Path(__file__).resolve().parents[2]


def compose_fallbacks() -> dict[str, str]:
    """`NAME: ${NAME:-default}` in docker-compose.yml's nginx environment."""
    text = (ROOT / "docker-compose.yml").read_text()
    return dict(re.findall(r"^\s+(NGINX_\w+): \$\{\1:-([^}]*)\}\s*$", text, re.MULTILINE))


@pytest.mark.parametrize("name", sorted(nginx_defaults.CONTAINERS))
def test_compose_falls_back_to_the_container_defaults(name):
    fallbacks = compose_fallbacks()
    assert name in fallbacks, f"docker-compose.yml has no ${{{name}:-...}} for nginx"
    assert fallbacks[name] == nginx_defaults.CONTAINERS[name], (
        f"docker-compose.yml's {name} default {fallbacks[name]!r} differs from "
        f"scripts/nginx_defaults.py's {nginx_defaults.CONTAINERS[name]!r}")


@pytest.mark.parametrize("name", sorted(nginx_defaults.CONTAINERS))
def test_the_template_header_documents_both_defaults(name):
    header = (ROOT / "nginx" / "socketio.conf.template").read_text()
    line = re.search(rf"^#\s+{name}\s.*?(\S+)\s*\|\s*(\S+)\s*$", header, re.MULTILINE)
    assert line, f"nginx/socketio.conf.template's header does not document {name}"
    assert line.groups() == (nginx_defaults.NATIVE[name], nginx_defaults.CONTAINERS[name])


def test_the_body_cap_sits_a_little_above_the_largest_message():
    largest = Settings.model_fields["max_message_bytes"].default
    cap = int(nginx_defaults.CONTAINERS["NGINX_MAX_BODY"].removesuffix("k")) * 1024
    assert largest < cap <= largest + 32 * 1024


def test_every_default_is_documented():
    assert set(nginx_defaults.MEANINGS) == set(nginx_defaults.NATIVE) == set(
        nginx_defaults.CONTAINERS)
