"""gevent-websocket (and gevent's pywsgi under it): the WebSocket that caps a message at its frame
header and writes through the direct writer once the session has one, and the request handler that
refuses foreign origins, the half-open cap's and the drain's new sessions before the upgrade.

`apply()` (web/upstream/__init__.py) rebinds `geventwebsocket.handler.WebSocket` to CappedWebSocket
(the handler instantiates that module-level name for every upgrade); ReplicaWebSocketHandler is
the `wsgi_handler` of web/gunicorn_worker.py's ReplicaWorker.
"""

from __future__ import annotations

import socket as stdlib_socket
import struct

import gevent
from geventwebsocket import handler as gws_handler
from geventwebsocket.exceptions import ProtocolError
from geventwebsocket.websocket import Header, WebSocket, WebSocketError

from common.library_contract import Contract
from web.limits import ClientLimits, refuse_new_session
from web.upstream.transport import SocketReader, frame_header, unmask

CONTRACT = Contract(
    read_against={"gevent-websocket": "0.10.1", "gevent": "26.9.0"},
    members={
        "geventwebsocket.handler.WebSocket": None,  # rebound to CappedWebSocket
        "geventwebsocket.websocket.WebSocket.read_frame": "(self)",
        "geventwebsocket.websocket.WebSocket.read_message": "(self)",
        "geventwebsocket.websocket.WebSocket.receive": "(self)",
        "geventwebsocket.websocket.WebSocket.close": "(self, code=1000, message=b'')",
        "geventwebsocket.websocket.WebSocket.send_frame": "(self, message, opcode)",
        "geventwebsocket.websocket.WebSocket.validate_utf8": "(self, payload)",
        "geventwebsocket.websocket.Header.decode_header": "(stream)",
        "geventwebsocket.websocket.Stream": None,  # its read slot, replaced by SocketReader.read
        "geventwebsocket.handler.WebSocketHandler.upgrade_websocket": "(self)",
        "geventwebsocket.handler.WebSocketHandler.run_websocket": "(self)",  # replaced
        "gevent.pywsgi.WSGIHandler.__init__": "(self, sock, address, server, rfile=None)",
    },
    instance_attributes={
        # what CappedWebSocket reads of itself (set by WebSocket.__init__)
        "geventwebsocket.websocket.WebSocket": ("stream", "raw_read", "raw_write", "environ",
                                                "handler", "closed"),
    },
)

HALF_OPEN_REFUSAL = (b'{"error": "this replica holds too many sessions that have not connected; '
                     b'retry shortly"}')
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # engine.io's own default, for a WebSocket outside our apps


def client_limits_of(application) -> ClientLimits | None:
    """The limits of the Flask app that serves a connection (None for any other WSGI app)."""
    return getattr(application, "extensions", {}).get("client_limits")


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
    """

    __slots__ = ("message_bytes", "writer")

    @property
    def limits(self) -> ClientLimits | None:
        return client_limits_of(getattr(self.handler, "application", None))

    @property
    def max_message_bytes(self) -> int:
        limits = self.limits
        return limits.max_message_bytes if limits is not None else DEFAULT_MAX_MESSAGE_BYTES

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

    def validate_utf8(self, payload):
        # Upstream checks every text frame, then the whole message, with a pure-Python validator
        # (about 0.37 ms of CPU per KB without the wsaccel accelerator): a client within its rate
        # limit could take the replica's CPU with large messages. `read_message()` decodes the
        # whole message with bytes.decode('utf-8') anyway, strict and in C, and closes with 1007
        # on invalid UTF-8; the message size is capped before any payload is read.
        pass

    def send_frame(self, message, opcode):
        # Once the session writes directly (WebSocketWriter), the frames gevent-websocket writes
        # itself (a PONG, the close frame) join the same ordered stream instead of cutting into
        # a frame being written.
        writer = getattr(self, "writer", None)
        if writer is None:
            return super().send_frame(message, opcode)
        if self.closed:
            raise WebSocketError("Socket is dead")
        if isinstance(message, str):
            message = message.encode()
        writer.write(frame_header(opcode, len(message)) + bytes(message))
        return None

    def receive(self):
        try:
            return super().receive()
        except MessageTooBig as exc:
            limits = self.limits
            if limits is not None:
                limits.websocket_too_big(self.environ or {}, exc.args[0])
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



class ReplicaWebSocketHandler(gws_handler.WebSocketHandler):
    """gevent-websocket's request handler, refusing a foreign Origin, and new sessions while the
    replica drains (web/drain.py), before the WebSocket upgrade.

    gevent-websocket answers 101 Switching Protocols before the WSGI app runs, so engine.io's
    origin check comes too late for WebSocket handshakes: its 400 goes nowhere and the foreign
    page holds an open socket. The drain's 503 likewise: the client got a socket that closed
    before the handshake, and the official client then waits its whole connect timeout.
    """

    # gevent's default read buffer is 8 KB per connection, allocated up front and kept for the
    # life of a WebSocket. A WebSocket reads a 2-byte header, then a payload of known length
    # (read straight into its own buffer when larger); HTTP requests parse fine with less.
    READ_BUFFER_BYTES = 256

    def __init__(self, sock, address, server, rfile=None):
        if rfile is None:
            rfile = sock.makefile("rb", self.READ_BUFFER_BYTES)
        super().__init__(sock, address, server, rfile)

    def run_websocket(self):
        """gevent-websocket's, with less kept per connection for the life of the WebSocket: the
        request's parsed headers (an email.message.Message, about 2 KB) and the 101 answer's
        header list are not read after the upgrade, and nothing reads `server.clients` (which
        upstream fills for every WebSocket). The app is called through its `__call__` method:
        CPython 3.11 runs that inline, where calling the app object adds a C-level interpreter
        frame that greenlet saves for every idle connection."""
        self.headers = None
        self.response_headers = []
        try:
            list(self.application.__call__(self.environ, lambda s, h, e=None: []))
        finally:
            if not self.websocket.closed:
                self.websocket.close()
            self.environ.update({"wsgi.websocket": None})
            self.websocket = None

    def upgrade_websocket(self):
        limits = client_limits_of(self.application)
        if limits is not None and limits.origin_check.refuses_upgrade(self.environ):
            body = b'"Not an accepted origin."'
            self.start_response("400 Bad Request", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))])
            return [body]
        # Every request passes here first, polling or not: a new session refused here (the
        # half-open cap) is answered before gevent-websocket's 101, so the client gets the 503.
        if limits is not None and limits.handshake_refused(self.environ):
            return refuse_new_session(self.start_response, HALF_OPEN_REFUSAL)
        drain = getattr(self.application, "extensions", {}).get("drain")
        if drain is not None and drain.refuses(self.environ):  # nginx tries the next replica
            return drain.refuse(self.start_response)
        result = super().upgrade_websocket()
        websocket = getattr(self, "websocket", None)
        if websocket is not None:
            # The WebSocket reads its socket itself, not through the request's buffered reader:
            # that one (C code) calls back into Python for every read, one more C-level
            # interpreter frame under the blocking read of every idle connection.
            reader = SocketReader(self.socket, self.unread_input())
            websocket.stream.read = websocket.raw_read = reader.read
            # Frees its buffer; once the WebSocket ends, pywsgi sees it closed and reads no
            # further request from this connection.
            self.rfile.close()
        return result

    def unread_input(self) -> bytes:
        """What the request's read buffer holds beyond the request, taken without waiting."""
        timeout = self.socket.gettimeout()
        self.socket.settimeout(0.0)
        try:
            pending = self.rfile.peek()  # on an empty buffer: one non-blocking read
        finally:
            self.socket.settimeout(timeout)
        if pending:
            self.rfile.read(len(pending))
        return pending


