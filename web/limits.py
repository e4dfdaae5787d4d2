"""Hostile input and per-client limits: no client gets in from a foreign origin, and none can hurt
the others by sending too much, too fast, garbage, or by not reading.

This module is policy only: what each limit is, how it is decided, how an offence is counted and
logged. Where the libraries have no hook to apply a limit, web/upstream/ applies it, asking the
`ClientLimits` of the replica's app.

Every limit is a setting (common/settings.py), counted in `socketio_limit_exceeded_total{limit}`
and logged once per offending connection (never once per packet):

  origin           a handshake whose Origin is not allowed (CORS_ALLOWED_ORIGINS; empty: same
                   origin)
                   -> 400, before a session exists
  message_size     a WebSocket message above MAX_MESSAGE_BYTES, refused at the frame header (and
                   across fragments) before its payload is read -> close code 1009; binary
                   attachments of one Socket.IO packet count together
  event_rate       more than EVENT_BURST messages at once or EVENT_RATE_PER_SECOND sustained
                   -> disconnected (a CLOSE packet: well-behaved clients do not reconnect at once)
  outgoing_buffer  more than MAX_OUTGOING_PACKETS / MAX_OUTGOING_BYTES queued for a client that
                   does not read -> its transport is dropped
  malformed        undecodable Engine.IO or Socket.IO packets -> dropped (polling: 400), one warning
                   line per connection; `socketio_packets_dropped_total` counts each packet
  event_name       an event named like Socket.IO's own (connect, disconnect, ...), "*", or longer
                   than 100 characters -> refused before any handler runs
  rooms            joining more than MAX_ROOMS_PER_CONNECTION rooms (per namespace) -> refused
  fanout_size      data above MAX_FANOUT_BYTES sent to many (a broadcast, a room) -> refused
  pending_acks     more than MAX_PENDING_ACKS server-to-client calls awaiting this client's answer
                   -> the oldest forgotten; any is forgotten after ACK_TIMEOUT_SECONDS
  handshake_timeout  an Engine.IO session that has connected no Socket.IO namespace within
                   HANDSHAKE_TIMEOUT_SECONDS -> closed (until then it holds a session, its
                   environ and, on polling, a queue)
  half_open_sessions  a new handshake while the replica holds MAX_HALF_OPEN_SESSIONS such
                   sessions -> 503 with a JSON reason (nginx tries the next replica), logged once
                   per client address
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import threading
import time
from collections.abc import Callable

from engineio import packet as eio_packet

from common import metrics
from common.settings import Settings

log = logging.getLogger(__name__)

ORIGIN = "origin"
MESSAGE_SIZE = "message_size"
EVENT_RATE = "event_rate"
OUTGOING_BUFFER = "outgoing_buffer"
MALFORMED = "malformed"
EVENT_NAME = "event_name"
ROOMS = "rooms"
FANOUT = "fanout_size"
PENDING_ACKS = "pending_acks"
HANDSHAKE_TIMEOUT = "handshake_timeout"
HALF_OPEN_SESSIONS = "half_open_sessions"

SESSION_PATH = "/socket.io/"

# A client event must be named like an application's event: not like one Socket.IO itself uses
# (python-socketio would run the connect or disconnect handler with the client's arguments), not
# the catch-all handler's "*", and short (a name is logged and echoed in the error answer).
MAX_EVENT_NAME_CHARS = 100


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `take()` is False when none is left."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float | None = None):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class OnceEach:
    """Remembers the last `size` keys, so that each offender is logged once, in bounded memory."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lock = threading.Lock()

    def first(self, key: str) -> bool:
        with self.lock:
            if key in self.seen:
                return False
            self.seen[key] = None
            if len(self.seen) > self.size:
                self.seen.popitem(last=False)
            return True


def client_address(environ: dict) -> str:
    """The client's address as nginx saw it (X-Real-IP), else the peer's."""
    return environ.get("HTTP_X_REAL_IP") or environ.get("REMOTE_ADDR") or "?"


# -- Origins ---------------------------------------------------------------------------------------

class OriginCheck:
    """engine.io's `cors_allowed_origins` as a callable (a documented form): refusals are counted.

    An empty allow-list means same origin, decided exactly as engine.io does (scheme://Host, or the
    X-Forwarded-Proto/-Host that nginx sets, overwriting whatever a client sent). A request without
    an Origin header is not a browser's cross-site request and is not checked (engine.io's rule).
    """

    def __init__(self, allowed: list[str]):
        self.allowed = frozenset(allowed)
        self.logged = OnceEach(1000)

    def __call__(self, origin: str | None, environ: dict | None = None) -> bool:
        if not origin:
            return False  # engine.io asks without an Origin only to build CORS headers
        if origin in (self.allowed or self.same_origins(environ or {})):
            return True
        metrics.LIMIT_EXCEEDED.labels(ORIGIN).inc()
        if self.logged.first(origin):
            log.warning("refused a handshake from origin %r (client %s); allowed: %s", origin,
                        client_address(environ or {}), sorted(self.allowed) or "same origin")
        return False

    def refuses_upgrade(self, environ: dict) -> bool:
        """True for a WebSocket upgrade from a browser page of a foreign origin."""
        origin = environ.get("HTTP_ORIGIN")
        return bool(origin) and environ.get("HTTP_UPGRADE", "").lower() == "websocket" \
            and not self(origin, environ)

    @staticmethod
    def same_origins(environ: dict) -> set[str]:
        if "HTTP_HOST" not in environ:
            return set()
        scheme = environ.get("wsgi.url_scheme", "http")
        origins = {f"{scheme}://{environ['HTTP_HOST']}"}
        if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
            forwarded_scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
            forwarded_host = environ.get("HTTP_X_FORWARDED_HOST",
                                         environ["HTTP_HOST"]).split(",")[0].strip()
            origins.add(f"{forwarded_scheme}://{forwarded_host}")
        return origins


# -- Half-open sessions ----------------------------------------------------------------------------

def opens_session(environ: dict) -> bool:
    """Whether a request is an Engine.IO handshake (a Socket.IO request without a session id)."""
    return environ.get("PATH_INFO", "").startswith(SESSION_PATH) \
        and "sid=" not in environ.get("QUERY_STRING", "")


def refuse_new_session(start_response, body: bytes) -> list[bytes]:
    """A new session refused with a 503, a JSON reason and Retry-After: nginx takes it as the cue
    to try the next replica (for new sessions only; nginx/socketio.conf.template)."""
    start_response("503 Service Unavailable", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        ("Retry-After", "1")])
    return [body]


class HalfOpenSessions:
    """Engine.IO sessions that have connected no Socket.IO namespace yet, each with the time it
    must have done so by. Every session gets the same timeout, so the oldest is always due first.
    `still_half_open(sid)` is asked of the server: whether the session exists and still has no
    namespace (a session that ended or connected since is forgotten)."""

    def __init__(self, timeout: float, cap: int):
        self.timeout = timeout
        self.cap = cap
        self.deadlines: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.deadlines)

    def opened(self, sid: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.deadlines[sid] = now + self.timeout

    def settled(self, sid: str) -> None:
        """The session connected a namespace (or ended)."""
        with self.lock:
            self.deadlines.pop(sid, None)

    def full(self, still_half_open: Callable[[str], bool]) -> bool:
        """Whether a new session would exceed the cap; at the cap, what settled is forgotten
        first (a session's own connect normally reports it, but not every way out does)."""
        if len(self.deadlines) < self.cap:
            return False
        with self.lock:
            for sid in [sid for sid in self.deadlines if not still_half_open(sid)]:
                del self.deadlines[sid]
            return len(self.deadlines) >= self.cap

    def next_deadline(self) -> float | None:
        with self.lock:
            return next(iter(self.deadlines.values()), None)

    def expired(self, now: float | None = None) -> list[str]:
        """The sessions past their deadline, forgotten here; the caller closes those still
        half-open."""
        now = time.monotonic() if now is None else now
        due = []
        with self.lock:
            while self.deadlines:
                sid, deadline = next(iter(self.deadlines.items()))
                if deadline > now:
                    break
                del self.deadlines[sid]
                due.append(sid)
        return due


# -- Per-connection limits -------------------------------------------------------------------------

def engineio_frame_error(data) -> str | None:
    """Why engine.io's Packet(encoded_packet=data) would raise on this WebSocket message, if so.

    Mirrors engine.io's decode: bytes always decode; text must be non-empty and start with a digit
    (the packet type) or 'b' followed by base64. Checked because engine.io decodes WebSocket
    messages outside any try block, so a bad one would end the connection with a traceback.
    """
    if not isinstance(data, str):
        return None
    if not data:
        return "empty packet"
    if data[0] == "b":
        try:
            base64.b64decode(data[1:])
        except (binascii.Error, ValueError) as exc:
            return f"bad base64: {exc}"
        return None
    try:
        int(data[0])
    except ValueError:
        return f"packet type {data[0]!r} is not a number"
    if data[1:2] in ("[", "{"):  # engine.io parses this as JSON; deep nesting raises RecursionError
        try:
            eio_packet.Packet(encoded_packet=data)
        except (ValueError, RecursionError) as exc:
            return f"undecodable: {type(exc).__name__}"
    return None


def event_name_problem(data, reserved: frozenset[str]) -> str | None:
    """Why a client's EVENT packet (its data: [name, *args]) may not reach a handler, if so."""
    name = data[0] if isinstance(data, list) and data else None
    if not isinstance(name, str):
        return "an event needs a name"
    if len(name) > MAX_EVENT_NAME_CHARS:
        return f"event names are at most {MAX_EVENT_NAME_CHARS} characters"
    if name in reserved or name == "*":
        return f"{name!r} is reserved for Socket.IO itself"
    return None


def packet_size(pkt) -> int:
    """What an Engine.IO packet counts against the outgoing cap."""
    data = pkt.data
    return len(data) if isinstance(data, (str, bytes, bytearray)) else 64


class ClientLimits:
    """The limits of one replica's clients, and how an offence against them is reported.

    One per app (`app.extensions["client_limits"]`, also at the engine.io server's `client_limits`),
    so two apps in one process keep their own settings.
    """

    def __init__(self, settings: Settings, origin_check: OriginCheck,
                 environ_of: Callable[[str], dict]):
        self.event_rate = settings.event_rate_per_second
        self.event_burst = settings.event_burst
        self.max_message_bytes = settings.max_message_bytes
        self.max_outgoing_packets = settings.max_outgoing_packets
        self.max_outgoing_bytes = settings.max_outgoing_bytes
        self.max_rooms = settings.max_rooms_per_connection
        self.max_pending_acks = settings.max_pending_acks
        self.ack_timeout = settings.ack_timeout_seconds
        self.origin_check = origin_check
        self.environ_of = environ_of
        self.logged = OnceEach()
        self.half_open = HalfOpenSessions(settings.handshake_timeout_seconds,
                                          settings.max_half_open_sessions)
        # Whether a session exists and has connected no namespace: the server knows (set by
        # web/upstream/install.py).
        self.still_half_open: Callable[[str], bool] = lambda sid: True

    def event_bucket(self) -> TokenBucket:
        return TokenBucket(self.event_rate, self.event_burst)

    def may_join(self, sid: str, joined: int) -> bool:
        """Whether a connection that joined `joined` rooms itself may join one more."""
        if joined < self.max_rooms:
            return True
        self.offence(ROOMS, sid, f"already in {joined} rooms; refused another")
        return False

    def outgoing_exceeded(self, packets: int, queued_bytes: int) -> bool:
        return packets >= self.max_outgoing_packets or queued_bytes > self.max_outgoing_bytes

    def offence(self, limit: str, sid: str, detail: str) -> None:
        """Count an offending connection and log it once."""
        metrics.LIMIT_EXCEEDED.labels(limit).inc()
        if self.logged.first(f"{limit}:{sid}"):
            log.warning("%s limit: %s from client %s; %s", limit.replace("_", " "), sid,
                        client_address(self.environ_of(sid)), detail)

    def malformed(self, sid: str, kind: str, exc: BaseException | str) -> None:
        """Count a dropped packet; log the first one of each connection."""
        metrics.PACKETS_DROPPED.labels(kind).inc()
        if self.logged.first(f"{MALFORMED}:{sid}"):
            metrics.LIMIT_EXCEEDED.labels(MALFORMED).inc()
            log.warning("malformed %s packet from %s (client %s), dropped: %s", kind, sid,
                        client_address(self.environ_of(sid)), str(exc)[:200])

    def handshake_refused(self, environ: dict) -> bool:
        """Whether a new session must be refused: the replica holds MAX_HALF_OPEN_SESSIONS
        sessions that connected no namespace. Logged once per client address."""
        if not opens_session(environ) or not self.half_open.full(self.still_half_open):
            return False
        metrics.LIMIT_EXCEEDED.labels(HALF_OPEN_SESSIONS).inc()
        address = client_address(environ)
        if self.logged.first(f"{HALF_OPEN_SESSIONS}:{address}"):
            log.warning("half open sessions limit: %d sessions have connected no namespace; "
                        "refused a new one from client %s (503)", self.half_open.cap, address)
        return True

    def handshake_timed_out(self, sid: str) -> None:
        self.offence(HANDSHAKE_TIMEOUT, sid, f"no namespace connected within "
                     f"{self.half_open.timeout:g} s; closed")

    def websocket_too_big(self, environ: dict, size: int) -> None:
        """A WebSocket message over the cap, found at its frame header (no session known yet)."""
        metrics.LIMIT_EXCEEDED.labels(MESSAGE_SIZE).inc()
        log.warning("message size limit: a WebSocket message of %d+ bytes from client %s (%s); "
                    "closed with 1009", size, client_address(environ),
                    environ.get("QUERY_STRING", "")[:120])
