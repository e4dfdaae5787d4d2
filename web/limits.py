"""Hostile input and per-client limits: no client gets in from a foreign origin, and none can hurt
the others by sending too much, too fast, garbage, or by not reading.

Every limit is a setting (common/settings.py), counted in `socketio_limit_exceeded_total{limit}`
and logged once per offending connection (never once per packet):

  origin           a handshake whose Origin is not allowed (CORS_ALLOWED_ORIGINS; empty: same origin)
                   -> 400, before a session exists
  message_size     a WebSocket message above MAX_MESSAGE_BYTES, refused at the frame header (and
                   across fragments) before its payload is read -> close code 1009; binary
                   attachments of one Socket.IO packet count together
  event_rate       more than EVENT_BURST messages at once or EVENT_RATE_PER_SECOND sustained
                   -> disconnected (a CLOSE packet, so well-behaved clients do not reconnect at once)
  outgoing_buffer  more than MAX_OUTGOING_PACKETS / MAX_OUTGOING_BYTES queued for a client that
                   does not read -> its transport is dropped
  malformed        undecodable Engine.IO or Socket.IO packets -> dropped (polling: 400), one warning
                   line per connection; `socketio_packets_dropped_total` counts each packet

The upstream libraries have no hooks for most of this, so `install()` patches them in this one
module, each patch small and saying why; nothing else in the project reaches into their internals.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import socket as stdlib_socket
import struct
import threading
import time
from typing import Callable

import engineio.socket
import gevent
from engineio import exceptions as eio_exceptions
from geventwebsocket import handler as gws_handler
from geventwebsocket.exceptions import ProtocolError
from geventwebsocket.websocket import Header, WebSocket, WebSocketError

from common import metrics
from common.settings import Settings

log = logging.getLogger(__name__)

ORIGIN = "origin"
MESSAGE_SIZE = "message_size"
EVENT_RATE = "event_rate"
OUTGOING_BUFFER = "outgoing_buffer"
MALFORMED = "malformed"

CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1


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


# -- Origins ---------------------------------------------------------------------------------------

class OriginCheck:
    """engine.io's `cors_allowed_origins` as a callable (a documented form), so refusals are counted.

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


class OriginCheckingWebSocketHandler(gws_handler.WebSocketHandler):
    """gevent-websocket's request handler, refusing a foreign Origin before the WebSocket upgrade.

    gevent-websocket answers 101 Switching Protocols before the WSGI app runs, so engine.io's
    origin check comes too late for WebSocket handshakes: its 400 goes nowhere and the foreign
    page holds an open socket. gunicorn.conf.py makes the worker use this handler.
    """

    origin_check: OriginCheck | None = None  # set by install()

    def upgrade_websocket(self):
        origin = self.environ.get("HTTP_ORIGIN")
        if (self.origin_check is not None and origin
                and self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
                and not self.origin_check(origin, self.environ)):
            body = b'"Not an accepted origin."'
            self.start_response("400 Bad Request", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))])
            return [body]
        return super().upgrade_websocket()


def client_address(environ: dict) -> str:
    """The client's address as nginx saw it (X-Real-IP), else the peer's."""
    return environ.get("HTTP_X_REAL_IP") or environ.get("REMOTE_ADDR") or "?"


# -- Message size at the WebSocket frame header -----------------------------------------------------

class MessageTooBig(Exception):
    """Deliberately not a socket.error: WebSocket.receive() would turn that into a plain close."""


class CappedWebSocket(WebSocket):
    """gevent-websocket's WebSocket that refuses an oversized message at its frame header.

    Upstream `read_frame()` reads a whole frame (`raw_read(header.length)`, up to 2**63 bytes)
    and `read_message()` concatenates fragments without limit, all before engine.io's own
    `max_http_buffer_size` check sees the message: one 100 MB message costs the replica hundreds
    of MB and, because upstream unmasks byte by byte in Python, stalls every client for a minute.
    Here the length in each data frame's header is checked, and summed over the fragments of a
    message, before any payload is read; the connection is then closed with 1009.
    Installed by `install()` as the class gevent-websocket's handler instantiates.
    """

    __slots__ = ("message_bytes",)
    max_message_bytes = 1_000_000
    on_too_big: Callable[[CappedWebSocket, int], None] = staticmethod(lambda ws, size: None)

    def read_frame(self):
        # A greenlet reading a socket that always has data never blocks, so never lets the others
        # run: a client sending as fast as it can would stall the replica. Yield once per frame.
        gevent.sleep(0)
        header = Header.decode_header(self.stream)
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_bytes = 0  # a new message (a TEXT in mid-message is refused upstream)
        if header.opcode in (self.OPCODE_CONTINUATION, self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_bytes = getattr(self, "message_bytes", 0) + header.length
            if self.message_bytes > self.max_message_bytes:
                raise MessageTooBig(self.message_bytes)
        # The rest is upstream's read_frame(), with a fast unmask.
        if header.flags:
            raise ProtocolError("reserved bits set")  # -> close 1002
        if not header.length:
            return header, b""
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = unmask(payload, header.mask)
        return header, payload

    def receive(self):
        try:
            return super().receive()
        except MessageTooBig as exc:
            self.on_too_big(self, exc.args[0])
            self.close(CLOSE_MESSAGE_TOO_BIG, f"message above {self.max_message_bytes} bytes")
            return None

    def close(self, code=1000, message=""):
        # Upstream's close() never puts the status code in the close frame; this one does.
        if self.closed:
            return
        try:
            reason = message if isinstance(message, bytes) else str(message or "").encode()
            self.send_frame(struct.pack("!H", code) + reason[:123], self.OPCODE_CLOSE)
        except WebSocketError:
            pass  # the peer is gone; closing anyway
        finally:
            self.closed = True
            self.stream = self.raw_write = self.raw_read = self.environ = None

    def abort(self) -> None:
        """Drop the TCP connection now: unblocks a writer stuck on a peer that does not read."""
        try:
            self.handler.socket.shutdown(stdlib_socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask as one big integer: C speed instead of a Python loop per byte."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little")


# -- Per-connection limits in engine.io -------------------------------------------------------------

class ClientLimits:
    """The limits of one replica's clients; engine.io's Socket finds it at `server.client_limits`."""

    def __init__(self, settings: Settings, environ_of: Callable[[str], dict]):
        self.event_rate = settings.event_rate_per_second
        self.event_burst = settings.event_burst
        self.max_message_bytes = settings.max_message_bytes
        self.max_outgoing_packets = settings.max_outgoing_packets
        self.max_outgoing_bytes = settings.max_outgoing_bytes
        self.environ_of = environ_of
        self.logged = OnceEach()

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


def _limits(sock) -> ClientLimits | None:
    return getattr(sock.server, "client_limits", None)


def _size(pkt) -> int:
    data = pkt.data
    return len(data) if isinstance(data, (str, bytes, bytearray)) else 64


def _engineio_frame_error(data) -> str | None:
    """Why engine.io's Packet(encoded_packet=data) would raise on this WebSocket message, if it would.

    Mirrors engine.io's decode: bytes always decode; text must be non-empty and start with a digit
    (the packet type) or 'b' followed by base64. Checked here because engine.io decodes WebSocket
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
            engineio.packet.Packet(encoded_packet=data)
        except (ValueError, RecursionError) as exc:
            return f"undecodable: {type(exc).__name__}"
    return None


_original = {}


def _patch_engineio_socket() -> None:
    """Wrap five methods of engine.io's Socket, once per process; each is a no-op for a server
    without `client_limits` (so other engine.io servers in the process behave as upstream)."""
    cls = engineio.socket.Socket
    if _original:
        return
    for name in ("receive", "send", "poll", "handle_post_request", "_websocket_handler"):
        _original[name] = getattr(cls, name)

    def receive(self, pkt):
        # Every packet counts, not only MESSAGEs: a flood of NOOPs or PONGs costs as much.
        limits = _limits(self)
        if limits is not None:
            if self.closing or self.closed:
                raise eio_exceptions.SocketIsClosedError()
            bucket = self.__dict__.get("event_bucket")
            if bucket is None:
                bucket = self.event_bucket = TokenBucket(limits.event_rate, limits.event_burst)
            if not bucket.take():
                limits.offence(EVENT_RATE, self.sid,
                               f"more than {limits.event_burst} messages at once or "
                               f"{limits.event_rate:g}/s sustained; disconnected")
                # A CLOSE packet (well-behaved clients then do not reconnect at once), and the
                # error ends engine.io's read loop now: a reader whose socket always has data
                # never yields, so it must stop reading rather than drop what it reads.
                self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT)
                raise eio_exceptions.SocketIsClosedError()
        return _original["receive"](self, pkt)

    def send(self, pkt):
        limits = _limits(self)
        if limits is None or self.closing or self.closed:
            return _original["send"](self, pkt)
        if self.__dict__.get("dropping"):
            return None
        queued = self.__dict__.get("outgoing_bytes", 0) + _size(pkt)
        self.outgoing_bytes = queued
        if self.queue.qsize() >= limits.max_outgoing_packets or queued > limits.max_outgoing_bytes:
            self.dropping = True
            limits.offence(OUTGOING_BUFFER, self.sid,
                           f"{self.queue.qsize()} packets, {queued} bytes waiting: not reading; "
                           "dropped")
            # Not here: send() runs inside someone else's emit; closing triggers handlers.
            self.server.start_background_task(_drop_slow_reader, self)
            return None
        return _original["send"](self, pkt)

    def poll(self):
        packets = _original["poll"](self)
        if "outgoing_bytes" in self.__dict__:
            self.outgoing_bytes = max(0, self.outgoing_bytes - sum(_size(p) for p in packets))
        return packets

    def handle_post_request(self, environ):
        limits = _limits(self)
        if limits is None:
            return _original["handle_post_request"](self, environ)
        # Upstream answers an EngineIOError with 400 after a disconnect that waits for the client
        # to poll its CLOSE packet (up to the ping timeout, holding the request); other errors
        # (undecodable bodies) it logs with a traceback and answers 200. Here both end the session
        # at once and answer 400.
        try:
            return _original["handle_post_request"](self, environ)
        except eio_exceptions.EngineIOError as exc:
            if isinstance(exc, eio_exceptions.ContentTooLongError):
                limits.offence(MESSAGE_SIZE, self.sid, f"a polling body above "
                               f"{limits.max_message_bytes} bytes; disconnected")
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
            limits.malformed(self.sid, "engine.io", exc)
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise eio_exceptions.UnknownPacketError(str(exc))

    def _websocket_handler(self, ws):
        limits = _limits(self)
        if limits is not None:
            self.transport_ws = ws
            wait = ws.wait

            def checked_wait():
                data = wait()
                problem = _engineio_frame_error(data)
                if problem is None:
                    return data
                limits.malformed(self.sid, "engine.io", problem)
                return None  # engine.io takes it as the client closing

            ws.wait = checked_wait
        return _original["_websocket_handler"](self, ws)

    for function in (receive, send, poll, handle_post_request, _websocket_handler):
        function.__wrapped__ = _original[function.__name__]
        setattr(cls, function.__name__, function)


def _drop_slow_reader(sock) -> None:
    sock.close(wait=False, abort=True, reason=sock.server.reason.TRANSPORT_ERROR)
    websocket = getattr(getattr(sock, "transport_ws", None), "_sock", None)
    if isinstance(websocket, CappedWebSocket):
        websocket.abort()


def _guard_socketio_messages(sio_server, limits: ClientLimits) -> None:
    """Socket.IO packets that do not decode are dropped with one warning per connection.

    Upstream raises from `_handle_eio_message`, and engine.io logs a traceback for every such
    message. Binary attachments that would add up to more than MAX_MESSAGE_BYTES end the session.
    """
    handle = sio_server._handle_eio_message

    def on_message(eio_sid, data):
        pending = sio_server._binary_packet.get(eio_sid)
        if pending is not None and not isinstance(data, (bytes, bytearray)):
            # Attachments are binary; a text message means the announced ones never came.
            # Upstream would take this message for an attachment and lose it.
            sio_server._binary_packet.pop(eio_sid, None)
            limits.malformed(eio_sid, "socket.io", "binary packet without its attachments")
            pending = None
        if pending is not None:
            total = len(data) + sum(len(a) for a in pending.attachments)
            if total > limits.max_message_bytes:
                sio_server._binary_packet.pop(eio_sid, None)
                limits.offence(MESSAGE_SIZE, eio_sid,
                               f"binary attachments above {limits.max_message_bytes} bytes; "
                               "disconnected")
                sio_server.eio.disconnect(eio_sid)
                return
        try:
            handle(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            sio_server._binary_packet.pop(eio_sid, None)
            limits.malformed(eio_sid, "socket.io", exc)
            return
        waiting = sio_server._binary_packet.get(eio_sid)
        if waiting is not None and (waiting.attachment_count < 1 or waiting.data is None):
            # Upstream would wait for attachments that were never announced and take the next
            # message for one.
            sio_server._binary_packet.pop(eio_sid, None)
            limits.malformed(eio_sid, "socket.io", "binary packet without attachments")

    sio_server.eio.on("message", on_message)


def install(sio_server, settings: Settings) -> ClientLimits:
    """Apply every limit to this replica's Socket.IO server (python-socketio `Server`)."""
    eio = sio_server.eio
    limits = ClientLimits(settings, lambda sid: sio_server.environ.get(sid) or {})
    eio.client_limits = limits
    if isinstance(eio.cors_allowed_origins, OriginCheck):
        OriginCheckingWebSocketHandler.origin_check = eio.cors_allowed_origins
    _patch_engineio_socket()
    _guard_socketio_messages(sio_server, limits)

    # gevent-websocket's handler instantiates the module-level name `WebSocket` for every upgrade.
    CappedWebSocket.max_message_bytes = settings.max_message_bytes

    def too_big(ws, size):
        sid = (ws.environ or {}).get("QUERY_STRING", "")
        metrics.LIMIT_EXCEEDED.labels(MESSAGE_SIZE).inc()
        log.warning("message size limit: a WebSocket message of %d+ bytes from client %s (%s); "
                    "closed with 1009", size, client_address(ws.environ or {}), sid[:120])

    CappedWebSocket.on_too_big = staticmethod(too_big)
    gws_handler.WebSocket = CappedWebSocket
    return limits
