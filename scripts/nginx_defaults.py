"""The defaults of nginx's own limits, the NGINX_* variables of nginx/socketio.conf.template.

The one source of these values: scripts/stack.py renders the template with NATIVE,
docker-compose.yml repeats CONTAINERS as its `${NGINX_...:-default}` fallbacks (compose cannot
import Python; tests/unit/test_nginx_defaults.py fails when the two differ), and
docs/configuration.md is generated from both (scripts/configuration_doc.py).
"""

from __future__ import annotations


def max_body(max_message_bytes: int) -> str:
    """NGINX_MAX_BODY: a little above the replicas' MAX_MESSAGE_BYTES, which engine.io answers
    itself (400); nginx refuses what is far above it (413) without passing it on."""
    return f"{max_message_bytes // 1024 + 16}k"


def _default_max_message_bytes() -> int:
    from common.settings import Settings

    return Settings.model_fields["max_message_bytes"].default


# variable -> what it limits (docs/configuration.md's "meaning" column)
MEANINGS = {
    "NGINX_MAX_BODY":
        "polling POST bodies; a little above `MAX_MESSAGE_BYTES` (raise both together)",
    "NGINX_CONN_PER_ADDRESS": "open connections per client address (429 beyond)",
    "NGINX_NEW_SESSION_RATE": "new Socket.IO sessions per client address (429 beyond)",
    "NGINX_NEW_SESSION_BURST": "new sessions allowed at once above that rate (429 beyond)",
}

# Containers: every client may appear with one address behind Docker's port publishing, and many
# real users can share one NAT address, so these stay well above one user's needs.
CONTAINERS = {
    "NGINX_MAX_BODY": max_body(_default_max_message_bytes()),
    "NGINX_CONN_PER_ADDRESS": "1000",
    "NGINX_NEW_SESSION_RATE": "50r/s",
    "NGINX_NEW_SESSION_BURST": "500",
}

# Native runs (`make run`, the tests, the load test): high on purpose, the load test opens thousands
# of clients from 127.0.0.1 (up to 2 connections each while polling) at 150 new sessions a second.
NATIVE = {
    **CONTAINERS,
    "NGINX_CONN_PER_ADDRESS": "10000",
    "NGINX_NEW_SESSION_RATE": "500r/s",
    "NGINX_NEW_SESSION_BURST": "2000",
}

# nginx/native.conf.template's open-file limit and connections; nginx/container.conf has the same
# (tests/unit/test_nginx_main_config.py). A native run lowers both to the hard open-file limit it
# inherits (scripts/stack.py), where nginx could not raise it and would warn on every start.
OPEN_FILES = 65536
WORKER_CONNECTIONS = 32768
