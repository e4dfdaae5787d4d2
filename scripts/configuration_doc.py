"""Writes docs/configuration.md from the settings model (common/settings.py) and nginx's defaults
(scripts/nginx_defaults.py): `python -m scripts.configuration_doc` (`--check` only compares).

Names and defaults come from the model; what each setting means is written here, one entry per
setting. tests/unit/test_configuration_doc.py fails when the file and the model disagree, or when a
setting has no entry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from common.settings import Settings
from scripts import nginx_defaults
from scripts.stack import DEFAULT_AMQP_PORT

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"

# (settings shown in one row, what they mean, the default in words where the value says little)
ROWS: list[tuple[tuple[str, ...], str, str | None]] = [
    (("app_env",), "`production` refuses the development secrets below and the guest account",
     None),
    (("amqp_url",), "RabbitMQ. `make run` starts a private one when unset", None),
    (("secret_key",), "signs Flask sessions and the users' JWTs; ≥ 32 chars in production",
     "development placeholder"),
    (("api_key",), "bearer key of the HTTP API (`/api/...`); ≥ 32 chars in production",
     "development placeholder"),
    (("socketio_channel",), "the fan-out exchange; the same for every replica and the worker",
     None),
    (("cors_allowed_origins",), "comma-separated origins; `*` is refused",
     "empty: same origin only"),
    (("ping_interval", "ping_timeout"),
     "Engine.IO heartbeat, seconds (nginx's timeouts are above their sum)", None),
    (("max_message_bytes",), ("largest message (an event with its binary attachments); a "
     "WebSocket message is refused at its frame header (close 1009), a polling body with 400"),
     None),
    (("event_rate_per_second", "event_burst"), ("packets a client may send, sustained / at once; "
     "beyond that it is disconnected"), None),
    (("max_outgoing_packets", "max_outgoing_bytes"), ("what may wait for one client that does not "
     "read; beyond either it is dropped"), None),
    (("max_rooms_per_connection",), "rooms a connection may join itself, per namespace", None),
    (("max_fanout_bytes",), ("data a client may send to many at once (a broadcast, a room "
     "event), JSON-encoded"), None),
    (("max_pending_acks", "ack_timeout_seconds"), ("server-to-client calls waiting for one "
     "client's answer: beyond the count the oldest is forgotten, after the timeout any is"), None),
    (("handshake_timeout_seconds", "max_half_open_sessions"), ("a session that has connected no "
     "Socket.IO namespace within the timeout is closed; beyond the count of such sessions per "
     "replica, new handshakes get a 503 with a JSON reason"), None),
    (("max_clients_per_replica",), ("gunicorn `worker_connections`; the open-file limit is raised "
     "to match. Unset, a native stack (`make run`) lowers it to what a lower hard limit "
     "(`ulimit -Hn`) allows, and says so once"), None),
    (("web_host", "web_port"), "where a replica listens", None),
    (("replica_id",), "the replica's name in logs and `server_info`", "`<hostname>-<pid>`"),
    (("replica_id_from_dns",), ("containers: `REPLICA_ID` defaults to the container's name as "
     "`docker compose ps` shows it, from Docker's DNS"), None),
    (("replica_address",), "where nginx reaches this replica; embedded in session ids",
     "own IP:`WEB_PORT`"),
    (("demo_login",), "`POST /api/demo/token` hands out a token for any user name",
     "on in development"),
    (("api_emit_events",), ("comma-separated events `POST /api/emit` may send; Socket.IO's "
     "reserved names are refused"), None),
    (("admin_ui_username", "admin_ui_password"), ("the Socket.IO Admin UI at `/admin/`: off "
     "unless the password is set (≥ 32 chars in production)"), "`admin` / unset: off"),
    (("job_retry_delays",), "seconds before each retry of a failed job", None),
    (("server_event_interval",), ("seconds between periodic `server_event` broadcasts; `0` "
     "switches it off"), None),
    (("drain_seconds",), "on SIGTERM, clients are moved to other replicas over this long", None),
    (("broker_queue_expiry_seconds",), ("a replica's broker queue outlives a disconnection this "
     "long"), None),
    (("recovery_window_seconds",), ("a client that asks for connection state recovery and "
     "reconnects within this long gets back its sid, rooms and missed events (`0`: off)"), None),
    (("recovery_memory_events",), ("recent events each replica keeps in memory for recoveries "
     "(older ones are read from the stream)"), None),
    (("recovery_memory_bytes",), ("at most this many bytes of them (as published): past it, "
     "the oldest are read from the stream instead"), None),
    (("worker_health_port", "health_host"), ("the worker's `/healthz`, `/readyz`, `/metrics` "
     "(`0`: off)"), None),
    (("log_level",), "", None),  # empty: its choices, from the model
]

HEADER = """\
# Configuration

<!-- Generated by `python -m scripts.configuration_doc` from common/settings.py and
     scripts/nginx_defaults.py; edit those, not this file. -->

Every setting is an environment variable, read once by `common/settings.py`. A variable that looks
like a misspelt setting (`AMPQ_URL`) is warned about.
"""

NGINX_INTRO = f"""\
`make run` takes `REPLICAS` (3), `PORT` (8080), `WORKERS` (1), `AMQP_URL` (a RabbitMQ of your
own; unset, it starts a private one) and `AMQP_PORT` ({DEFAULT_AMQP_PORT}: that private RabbitMQ's
port).

## nginx

nginx's own limits are template variables (`nginx/socketio.conf.template`), set by
`scripts/stack.py` (native) and `docker-compose.yml` (containers, overridable from `.env`). Both
sets of defaults are defined in `scripts/nginx_defaults.py`; a unit test keeps docker-compose.yml's
fallbacks equal to them.
"""

NGINX_OUTRO = """\
The native values are high on purpose: the load test opens thousands of clients from 127.0.0.1.
Behind Docker's port publishing every client may appear with one address; and many real users can
share one NAT address, so keep the per-address limits well above one user's needs.
"""


def shown(value: object) -> str:
    """A default as the environment variable would spell it."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(shown(item) for item in value)
    return str(value)


def default_of(name: str) -> str:
    default = Settings.model_fields[name].default
    if default is PydanticUndefined or default is None:
        raise ValueError(f"{name.upper()} has no plain default: describe it in ROWS")
    return f"`{shown(default)}`"


def choices_of(name: str) -> str:
    """`A`, `B` or `C` for a setting typed as a Literal."""
    options = [f"`{option}`" for option in get_args(Settings.model_fields[name].annotation)]
    return ", ".join(options[:-1]) + f" or {options[-1]}"


def settings_table() -> list[str]:
    described = [name for names, _, _ in ROWS for name in names]
    fields = set(Settings.model_fields)
    missing = sorted(fields - set(described))
    unknown = sorted(set(described) - fields)
    repeated = sorted({name for name in described if described.count(name) > 1})
    if missing or unknown or repeated:
        raise ValueError(f"scripts/configuration_doc.py ROWS: undescribed settings {missing}, "
                         f"no such settings {unknown}, described twice {repeated}")
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for names, written, in_words in ROWS:
        variables = " / ".join(f"`{name.upper()}`" for name in names)
        default = in_words or " / ".join(default_of(name) for name in names)
        meaning = written or " / ".join(choices_of(name) for name in names)
        lines.append(f"| {variables} | {default} | {meaning} |")
    return lines


def nginx_table() -> list[str]:
    lines = ["| variable | native / compose | meaning |", "|---|---|---|"]
    for name, meaning in nginx_defaults.MEANINGS.items():
        lines.append(f"| `{name}` | `{nginx_defaults.NATIVE[name]}` / "
                     f"`{nginx_defaults.CONTAINERS[name]}` | {meaning} |")
    return lines


def document() -> str:
    return "\n".join([HEADER, *settings_table(), "", NGINX_INTRO, *nginx_table(), "",
                      NGINX_OUTRO])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {DOC.relative_to(ROOT)} is not up to date")
    args = parser.parse_args(argv)
    wanted = document()
    if args.check:
        if not DOC.exists() or DOC.read_text() != wanted:
            print(f"{DOC.relative_to(ROOT)} is out of date: python -m scripts.configuration_doc",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
