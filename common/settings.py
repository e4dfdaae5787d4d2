"""The one place configuration is read from the environment.

`load_settings()` parses the environment once into a typed, validated `Settings` object that is
passed down to everything else; no other module reads `os.environ`.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
import socket
import struct
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.contract import RESERVED_EVENTS, Event

log = logging.getLogger(__name__)

# Development defaults for the secrets: refused when APP_ENV=production.
DEV_SECRET_KEY = "dev-secret-key-not-for-production"
DEV_API_KEY = "dev-api-key-not-for-production"
DEV_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
MIN_SECRET_LENGTH = 32


def _own_address() -> str:
    """The IP address others reach this host at: the one its default route leaves from.

    (/etc/hosts lists a container's addresses in no fixed order when it is on several networks.)
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1; connect() on UDP sends nothing
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


DOCKER_DNS = ("127.0.0.11", 53)


def _address_in_hosts_file() -> str | None:
    """A container's address as /etc/hosts gives it for its own hostname."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return None


def container_name(address: str, dns: tuple[str, int] = DOCKER_DNS,
                   timeout: float = 2.0) -> str | None:
    """The name Docker's DNS gives `address` (a PTR answer "proj-web-1.proj_front" ->
    "proj-web-1"), or None. Asked of the DNS server itself: the resolver reads /etc/hosts first,
    where a container's own address names its id."""
    labels = [*reversed(address.split(".")), "in-addr", "arpa"]
    question = b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"
    query_id = os.getpid() & 0xFFFF
    query = struct.pack(">6H", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack(">2H", 12, 1)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver:
            resolver.settimeout(timeout)
            resolver.sendto(query, dns)
            reply = resolver.recv(2048)
        reply_id, flags, _, answers = struct.unpack(">4H", reply[:8])
        if reply_id != query_id or flags & 0x000F or not answers:
            return None
        offset = 12 + len(question) + 4  # the answer, after the header and the question
        while reply[offset] and reply[offset] & 0xC0 != 0xC0:  # its name: labels...
            offset += reply[offset] + 1
        offset += 2 if reply[offset] & 0xC0 == 0xC0 else 1  # ...ending in a pointer or a zero
        offset += 10  # type, class, TTL, data length; the data is the name
        return reply[offset + 1:offset + 1 + reply[offset]].decode() or None
    except (OSError, IndexError, struct.error, UnicodeDecodeError):
        return None


class Settings(BaseSettings):
    """Every setting of the stack. Each field is read from the upper-cased environment variable."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    app_env: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Broker. The channel is the fan-out exchange every replica and the worker share.
    # A RabbitMQ cluster: every node's URL, separated by ';' (each process starts at a random one
    # and fails over to the others; the job queues become quorum queues, see common/jobs.py).
    amqp_url: SecretStr = SecretStr(DEV_AMQP_URL)
    socketio_channel: str = "flask-socketio"
    # A replica's queue outlives a broker disconnection (nothing published meanwhile is lost)
    # until it has had no consumer for this long; then it is deleted, and the loss is counted.
    broker_queue_expiry_seconds: float = Field(30.0, ge=1)
    # Connection state recovery (Socket.IO 4.6+ clients that ask for it, docs/design.md): a client
    # that reconnects within this many seconds, to any replica, gets back its sid, its rooms and
    # every event it missed; 0 switches it off. Missed events live in a RabbitMQ stream kept this
    # long (plus a minute).
    recovery_window_seconds: float = Field(120.0, ge=0, le=86_400)
    # Recent events each replica keeps in memory for recoveries; older ones are read back from the
    # stream.
    recovery_memory_events: int = Field(10_000, ge=100)
    # ... and at most this many bytes of them (as published): one client sending itself large
    # messages must not make every replica hold thousands of them.
    recovery_memory_bytes: int = Field(16_000_000, ge=1_000_000)

    # Secrets.
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    api_key: SecretStr = SecretStr(DEV_API_KEY)

    # This web process. The replica address is where nginx reaches it; it is embedded in every
    # Engine.IO session id so nginx can route a session's requests back here (see nginx/).
    web_host: str = "0.0.0.0"
    web_port: int = Field(5000, ge=1, le=65535)
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    replica_address: str = ""
    # Containers: REPLICA_ID defaults to the container's name as `docker compose ps` shows it,
    # asked from Docker's DNS (/etc/hosts would give the container id).
    replica_id_from_dns: bool = False
    max_clients_per_replica: int = Field(10_000, ge=1)
    # On SIGTERM a replica stops taking new sessions and asks its clients to reconnect elsewhere,
    # spread over this many seconds, before gunicorn's graceful shutdown.
    drain_seconds: float = Field(5.0, ge=0, le=60)

    # Engine.IO / Socket.IO.
    cors_allowed_origins: Annotated[list[str], NoDecode] = []  # empty: same origin only
    ping_interval: int = Field(25, ge=1)
    ping_timeout: int = Field(20, ge=1)
    # Limits per client (web/limits.py). A message (an event with its binary attachments) above
    # MAX_MESSAGE_BYTES closes the connection (WebSocket close code 1009, polling 400).
    max_message_bytes: int = Field(1_000_000, ge=1024)
    # Messages a client may send: EVENT_BURST at once, EVENT_RATE_PER_SECOND sustained; beyond
    # that it is disconnected. Far above what the demo page and the load test send.
    event_rate_per_second: float = Field(50.0, gt=0)
    event_burst: int = Field(100, ge=1)
    # What may wait to be sent to one client that does not read; beyond either, it is dropped.
    max_outgoing_packets: int = Field(10_000, ge=16)
    max_outgoing_bytes: int = Field(8_000_000, ge=1024)
    # State a client can make a replica keep: rooms it joined itself (per namespace), and
    # server-to-client calls waiting for its acknowledgement (the oldest is forgotten beyond the
    # count, any is forgotten after the timeout; a late answer is then ignored).
    max_rooms_per_connection: int = Field(50, ge=1)
    # What a client may have sent to many at once (my_broadcast_event, my_room_event): one such
    # message costs every recipient's connection its size, so it is capped far below a message.
    max_fanout_bytes: int = Field(16_384, ge=256)
    max_pending_acks: int = Field(100, ge=1)
    ack_timeout_seconds: float = Field(60.0, gt=0)
    # Half-open sessions: an Engine.IO session that has connected no Socket.IO namespace yet
    # (clients do it right after the handshake) is closed after HANDSHAKE_TIMEOUT_SECONDS, and a
    # replica holds at most MAX_HALF_OPEN_SESSIONS of them: beyond, new handshakes get a 503.
    handshake_timeout_seconds: float = Field(10.0, gt=0, le=300)
    max_half_open_sessions: int = Field(2_000, ge=1)

    # Demo login: POST /api/demo/token issues a token for any user name. Anyone can then act as
    # anyone, so it is on by default only in development.
    demo_login: bool | None = None

    # HTTP API: the events POST /api/emit may send (Socket.IO's reserved names are refused).
    api_emit_events: Annotated[list[str], NoDecode] = [Event.NOTIFICATION, Event.MY_RESPONSE]
    # The Socket.IO Admin UI (/admin/ and the `/admin` namespace on every replica): off unless a
    # password is set.
    admin_ui_username: str = "admin"
    admin_ui_password: SecretStr | None = None

    # Worker and jobs.
    # Seconds before each retry of a failed job; after the last one, the dead-letter queue.
    job_retry_delays: Annotated[list[float], NoDecode] = [1.0, 5.0, 25.0]
    server_event_interval: float = Field(10.0, ge=0)  # the periodic broadcast; 0 switches it off
    health_host: str = "0.0.0.0"
    worker_health_port: int = Field(8001, ge=0, le=65535)  # /healthz, /readyz, /metrics; 0: off

    @field_validator("job_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(delay) for delay in value.split(",") if delay.strip()]
        return value

    @field_validator("api_emit_events")
    @classmethod
    def _no_reserved_events(cls, events: list[str]) -> list[str]:
        reserved = sorted(set(events) & RESERVED_EVENTS)
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: reserved by Socket.IO, not emittable")
        return events

    @field_validator("amqp_url")
    @classmethod
    def _spread_over_nodes(cls, value: SecretStr) -> SecretStr:
        return SecretStr(spread_amqp_urls(value.get_secret_value()))

    @field_validator("cors_allowed_origins", "api_emit_events", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _no_wildcard_origin(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError("'*' would disable the origin check; list the allowed origins")
        return origins

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        if not self.replica_address:
            object.__setattr__(self, "replica_address", f"{_own_address()}:{self.web_port}")
        if self.replica_id_from_dns and "replica_id" not in self.model_fields_set:
            address = self.replica_host or _own_address()
            if address.startswith("127."):  # no default route (the worker, on an internal network)
                address = _address_in_hosts_file()
            name = container_name(address) if address else None
            if name:
                object.__setattr__(self, "replica_id", name)
        host, _, port = self.replica_address.rpartition(":")
        try:
            socket.inet_aton(host)
        except OSError:
            raise ValueError(
                f"REPLICA_ADDRESS must be IPv4:port, got {self.replica_address!r}") from None
        if not port.isdigit():
            raise ValueError(f"REPLICA_ADDRESS must be IPv4:port, got {self.replica_address!r}")
        if self.max_outgoing_bytes < self.max_message_bytes:
            raise ValueError("MAX_OUTGOING_BYTES must be at least MAX_MESSAGE_BYTES, or one "
                             "allowed message would drop every client it is sent to")
        if self.app_env == "production":
            self._refuse_development_secrets()
        return self

    def _refuse_development_secrets(self) -> None:
        for name, value, placeholder in (
            ("SECRET_KEY", self.secret_key, DEV_SECRET_KEY),
            ("API_KEY", self.api_key, DEV_API_KEY),
        ):
            secret = value.get_secret_value()
            if secret == placeholder or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"{name} must be set to a random value of at least {MIN_SECRET_LENGTH} "
                    "characters when APP_ENV=production"
                )
        admin_password = self.admin_ui_password.get_secret_value() if self.admin_ui_password else ""
        if admin_password and len(admin_password) < MIN_SECRET_LENGTH:
            raise ValueError(f"ADMIN_UI_PASSWORD must be at least {MIN_SECRET_LENGTH} characters "
                             "when APP_ENV=production")
        if "guest:guest@" in self.amqp_url.get_secret_value():
            raise ValueError("AMQP_URL must not use the guest account when APP_ENV=production")

    @property
    def demo_login_enabled(self) -> bool:
        return self.app_env == "development" if self.demo_login is None else self.demo_login

    @property
    def admin_ui_enabled(self) -> bool:
        return bool(self.admin_ui_password and self.admin_ui_password.get_secret_value())

    @property
    def replica_host(self) -> str:
        return self.replica_address.rpartition(":")[0]


def spread_amqp_urls(amqp_url: str, rng: random.Random | None = None) -> str:
    """Check a ';'-separated list of broker URLs and rotate it to start at a random node.

    Kombu connects to the first URL and fails over to the next ones in turn; starting each process
    at a random node spreads the connections (and the replicas' listener queues) over a cluster.
    One URL comes back unchanged.
    """
    if ";" not in amqp_url:
        return amqp_url
    urls = [url.strip() for url in amqp_url.split(";")]
    for url in urls:
        if "://" not in url:
            shown = url.rpartition("@")[2] or "an empty entry"  # never echo a password
            raise ValueError(f"AMQP_URL: each ';'-separated entry must be a URL, got {shown!r}")
    start = (rng or random).randrange(len(urls))
    return ";".join(urls[start:] + urls[:start])


# Besides its clients' sockets (two each while long-polling: the pending GET and a POST), a replica
# holds its broker connections, log files and libraries.
REPLICA_SPARE_OPEN_FILES = 256


def open_files_for_clients(clients: int) -> int:
    """The open-file limit a replica needs for MAX_CLIENTS_PER_REPLICA = `clients`."""
    return 2 * clients + REPLICA_SPARE_OPEN_FILES


def clients_within_open_files(limit: int) -> int:
    """The most clients a replica can hold under an open-file limit of `limit`."""
    return max(1, (limit - REPLICA_SPARE_OPEN_FILES) // 2)


def warn_about_unknown_variables(environ: dict[str, str]) -> list[str]:
    """Warn about variables that look like a misspelt setting (AMPQ_URL for AMQP_URL)."""
    known = {name.upper() for name in Settings.model_fields}
    warnings = []
    for name in environ:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            warnings.append(
                f"environment variable {name} is not a setting; did you mean {close[0]}?")
    for warning in warnings:
        log.warning(warning)
    return warnings


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; keyword overrides are for tests and entry points."""
    warn_about_unknown_variables(dict(os.environ))
    return Settings(**overrides)
