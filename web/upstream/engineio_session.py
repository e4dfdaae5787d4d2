"""python-engineio: one session (LimitedSocket: the replica's per-client limits and the direct
WebSocket writer), the ping timetable that replaces a greenlet per session, and what a session
lets go of once it runs on WebSocket.

`apply()` (web/upstream/__init__.py) rebinds `engineio.socket.Socket` to LimitedSocket:
`Server._handle_connect` builds each session through that module-level name. A session finds its
server's hooks (limits, ping scheduler, the Admin UI's meter) in web/upstream/registry.py.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import engineio.socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from common.library_contract import Contract
from web.limits import (
    EVENT_RATE,
    MESSAGE_SIZE,
    OUTGOING_BUFFER,
    ClientLimits,
    engineio_frame_error,
    packet_size,
)
from web.upstream.gevent_websocket import CappedWebSocket
from web.upstream.registry import ReplicaHooks, hooks_of
from web.upstream.transport import WebSocketWriter, websocket_frame

CONTRACT = Contract(
    read_against={"python-engineio": "4.15.1"},
    members={
        "engineio.socket.Socket": None,  # rebound to LimitedSocket
        "engineio.socket.Socket.receive": "(self, pkt)",
        "engineio.socket.Socket.send": "(self, pkt)",
        "engineio.socket.Socket.poll": "(self)",
        "engineio.socket.Socket.handle_post_request": "(self, environ)",
        "engineio.socket.Socket._websocket_handler": "(self, ws)",
        "engineio.socket.Socket.close": "(self, wait=True, abort=False, reason=None)",
        "engineio.socket.Socket.schedule_ping": "(self)",
        "engineio.socket.Socket._send_ping": "(self)",  # what ping_now does after its sleep
        "engineio.socket.Socket.check_ping_timeout": "(self)",
        # read with no default when the upgrade request returns (see release_handshake_environ)
        "engineio.base_server.BaseServer._cors_headers": "(self, environ)",
        "engineio.server.Server.get_queue_empty_exception": "(self)",
        "engineio.server.Server.start_background_task": "(self, target, *args, **kwargs)",
        "engineio.server.Server.sleep": "(self, seconds=0)",
        "engineio.async_drivers.gevent.WebSocketWSGI.__call__": "(self, environ, start_response)",
    },
    instance_attributes={
        "engineio.socket.Socket": ("queue", "closing", "closed", "sid", "server", "upgraded",
                                   "connected", "upgrading", "last_ping"),
        "engineio.server.Server": ("ping_interval", "ping_timeout", "max_http_buffer_size",
                                   "reason", "logger"),
        # engine.io's WebSocket wrapper: the handshake's environ, and gevent-websocket's
        # WebSocket as `_sock`
        "engineio.async_drivers.gevent.WebSocketWSGI": ("environ", "_sock"),
    },
)

log = logging.getLogger(__name__)

ENVIRON_LOGGED = ("REMOTE_ADDR", "HTTP_X_REAL_IP", "QUERY_STRING")  # by web/limits.py


class LimitedSocket(engineio.socket.Socket):
    """engine.io's session with the replica's per-client limits (rate, outgoing cap, malformed
    packets) and, once the client is on WebSocket, a direct write path (`WebSocketWriter`).

    Upstream queues every packet and a writer greenlet per client wakes for each one, waits on
    its queue with a new gevent Timeout per wait, and lets gevent-websocket build and write a
    frame per client: about half of a replica's CPU under fan-out. Here a WebSocket client's
    packets are written from the greenlet that sends them, one non-blocking write of a frame
    built once per broadcast; only what the kernel does not take is queued, in order. Polling
    clients, and a client until its upgrade completes, keep upstream's queue.

    A session of a server the replica did not install its hooks on (web/upstream/registry.py)
    behaves exactly as upstream.
    """

    def __init__(self, server, sid):
        super().__init__(server, sid)
        self.hooks: ReplicaHooks | None = hooks_of(server)
        self.limits: ClientLimits | None = self.hooks.limits if self.hooks is not None else None
        self.event_bucket = self.limits.event_bucket() if self.limits is not None else None
        self.outgoing_bytes = 0  # queued for this client and not yet handed to its transport
        self.dropping = False  # over the outgoing cap: being cut off
        self.transport_ws = None  # engine.io's WebSocket wrapper that carries the session
        self.writer: WebSocketWriter | None = None  # the direct path, once on WebSocket

    def receive(self, pkt):
        # Every packet counts, not only MESSAGEs: a flood of NOOPs or PONGs costs as much.
        limits = self.limits
        if limits is not None:
            if self.closing or self.closed:
                raise eio_exceptions.SocketIsClosedError()
            if not self.event_bucket.take():
                limits.offence(EVENT_RATE, self.sid,
                               f"more than {limits.event_burst} messages at once or "
                               f"{limits.event_rate:g}/s sustained; disconnected")
                # A CLOSE packet (well-behaved clients then do not reconnect at once), and the
                # error ends engine.io's read loop now: a reader whose socket always has data
                # never yields, so it must stop reading rather than drop what it reads.
                self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT)
                raise eio_exceptions.SocketIsClosedError()
        return super().receive(pkt)

    def send(self, pkt):
        writer = self.writer
        if writer is not None:
            if self.dropping or not self.check_ping_timeout():
                return None
            frame = websocket_frame(pkt)
            writer.write(frame)
            meter = self.hooks.transport_meter
            if meter is not None:  # the Admin UI's packets and bytes out, while it watches
                meter.sent(len(frame))
            if not self.closing and self.limits.outgoing_exceeded(writer.pending_frames,
                                                                  writer.pending_bytes):
                self.cut_slow_reader(writer.pending_frames, writer.pending_bytes)
            return None
        limits = self.limits
        if limits is None or self.closing or self.closed:
            return super().send(pkt)
        if self.dropping:
            return None
        self.outgoing_bytes += packet_size(pkt)
        if limits.outgoing_exceeded(self.queue.qsize(), self.outgoing_bytes):
            self.cut_slow_reader(self.queue.qsize(), self.outgoing_bytes)
            return None
        return super().send(pkt)

    def cut_slow_reader(self, packets: int, queued_bytes: int) -> None:
        self.dropping = True
        self.limits.offence(OUTGOING_BUFFER, self.sid, f"{packets} packets, {queued_bytes} bytes "
                            "waiting: not reading; dropped")
        # Not here: send() runs inside someone else's emit; closing triggers handlers.
        self.server.start_background_task(self.drop_slow_reader)

    def poll(self):
        packets = super().poll()
        if self.outgoing_bytes:
            self.outgoing_bytes = max(0, self.outgoing_bytes - sum(map(packet_size, packets)))
        return packets

    def close(self, wait=True, abort=False, reason=None):
        writer = self.writer
        if writer is None:
            return super().close(wait=wait, abort=abort, reason=reason)
        # Nothing polls the queue on the direct path, so upstream's wait (queue.join()) would
        # never end: wait for the writer instead. The CLOSE packet, if any, goes out through it.
        super().close(wait=False, abort=abort, reason=reason)
        writer.close_when_flushed(self.transport_ws)
        if wait:
            writer.wait_flushed(self.server.ping_timeout)

    def handle_post_request(self, environ):
        limits = self.limits
        if limits is None:
            return super().handle_post_request(environ)
        meter = self.hooks.transport_meter
        if meter is not None:  # the Admin UI's packets and bytes in, while it watches
            meter.received(int(environ.get("CONTENT_LENGTH") or 0))
        # Upstream answers an EngineIOError with 400 after a disconnect that waits for the client
        # to poll its CLOSE packet (up to the ping timeout, holding the request); other errors
        # (undecodable bodies) it logs with a traceback and answers 200. Here both end the session
        # at once and answer 400.
        try:
            return super().handle_post_request(environ)
        except eio_exceptions.EngineIOError as exc:
            if isinstance(exc, eio_exceptions.ContentTooLongError):
                limits.offence(MESSAGE_SIZE, self.sid, f"a polling body above "
                               f"{limits.max_message_bytes} bytes; disconnected")
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
            limits.malformed(self.sid, "engine.io", exc)
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise eio_exceptions.UnknownPacketError(str(exc)) from exc

    def _websocket_handler(self, ws):
        """Upstream's WebSocket session (the upgrade handshake, then the read loop), with every
        message checked before engine.io decodes it and the direct writer instead of the writer
        greenlet."""
        limits = self.limits
        if limits is None:
            return super()._websocket_handler(ws)

        def wait():
            data = ws.wait()
            meter = self.hooks.transport_meter
            if meter is not None:  # the Admin UI's packets and bytes in, while it watches
                meter.received(len(data or ""))
            if data and len(data) > self.server.max_http_buffer_size:
                raise ValueError("packet is too large")
            problem = engineio_frame_error(data)
            if problem is None:
                return data
            limits.malformed(self.sid, "engine.io", problem)
            return None  # taken as the client closing

        # A client may open two WebSockets for one session while upgrading: the first whose
        # upgrade completes carries the session. Upstream refuses any upgrade request once the
        # session is upgraded (Server.handle_request, Socket._upgrade_websocket); one that was
        # already waiting here when the other completed is refused at its next step, so it never
        # replaces the writer and transport_ws that close() and drop_slow_reader() act on.
        if self.connected:  # an upgrade from polling: the probe, then the UPGRADE packet
            self.upgrading = True  # upstream holds polling sends meanwhile
            probe = wait()
            probe = probe and eio_packet.Packet(encoded_packet=probe)
            if self.upgraded or not probe or probe.packet_type != eio_packet.PING or \
                    probe.data != "probe":
                self.upgrading = False
                return []
            ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            upgrade = wait()
            if self.upgraded or upgrade is None or \
                    eio_packet.Packet(encoded_packet=upgrade).packet_type != eio_packet.UPGRADE:
                self.upgrading = False
                return []
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        # From now on packets go straight to the WebSocket; what was queued before goes first.
        # No greenlet switch happens between taking the queue and installing the writer.
        writer = WebSocketWriter(ws._sock.handler.socket)
        if isinstance(ws._sock, CappedWebSocket):
            ws._sock.writer = writer
        for pkt in self.take_queued():
            writer.write(websocket_frame(pkt))
        self.writer = writer
        self.transport_ws = ws
        self.queue = NO_QUEUE  # ~2.5 KB per connection that nothing reads any more
        release_handshake_environ(ws)
        if self.closed:
            writer.close_when_flushed(ws)

        while True:
            try:
                data = wait()
            except Exception as exc:
                if not self.closed:
                    self.server.logger.info('%s: Unexpected error "%s", closing connection',
                                            self.sid, exc)
                break
            if data is None:  # the client closed
                break
            try:
                self.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
                break
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        writer.wait_flushed(self.server.ping_timeout)
        return []

    def schedule_ping(self):
        scheduler = self.hooks.ping_scheduler if self.hooks is not None else None
        if scheduler is None:
            return super().schedule_ping()
        if self.last_ping:  # upstream's rule: one PING in flight at a time
            self.last_ping = None
            scheduler.schedule(self)

    def ping_now(self) -> None:
        """What upstream's `_send_ping` does after its sleep, and what the Admin UI's
        instrumentation adds to it (its per-ping refresh of the session)."""
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.send(eio_packet.Packet(eio_packet.PING))
            self.hooks.pinged(self.sid)

    def take_queued(self) -> list:
        """Everything queued for this client, without blocking (a None ends the session)."""
        packets = []
        empty = self.server.get_queue_empty_exception()
        while True:
            try:
                pkt = self.queue.get(block=False)
            except empty:
                return packets
            self.queue.task_done()
            if pkt is not None:
                packets.append(pkt)

    def drop_slow_reader(self) -> None:
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
        websocket = getattr(self.transport_ws, "_sock", None)
        if isinstance(websocket, CappedWebSocket):
            websocket.abort()


# When the WebSocket ends, engine.io's Server.handle_request() returns from the upgrade request:
# it builds that request's (unsent) HTTP answer from Flask-SocketIO's copy of its environ, and
# BaseServer._cors_headers() reads REQUEST_METHOD there without a default (a KeyError traceback
# for every upgraded session that ended). Every other key it reads with .get() or `in`; without
# HTTP_ORIGIN it does not ask the origin check, which could not decide without the Host headers.
ENVIRON_READ_WHEN_WEBSOCKET_ENDS = ("REQUEST_METHOD",)


def release_handshake_environ(ws) -> None:
    """The upgrade request's environ is held, until the WebSocket ends, by the frames under the
    read loop: gevent's original and Flask-SocketIO's copy of it (python-socketio keeps its own
    trimmed one). They are emptied in place but for what is read of them later: the keys its size
    limit logs (web/limits.py's websocket_too_big) in the WebSocket's, engine.io's at the end in
    Flask-SocketIO's."""
    websocket = getattr(ws, "_sock", None)
    environ = getattr(ws, "environ", None)
    if not isinstance(websocket, CappedWebSocket) or environ is None:
        return
    original = websocket.environ
    websocket.environ = {key: environ[key] for key in ENVIRON_LOGGED if key in environ}
    read_at_the_end = {key: environ[key] for key in ENVIRON_READ_WHEN_WEBSOCKET_ENDS
                       if key in environ}
    for handshake_environ in (environ, original):
        if handshake_environ is not None:
            handshake_environ.clear()
    environ.update(read_at_the_end)


class _NoQueue:
    """A session's queue once its direct writer owns the WebSocket: upstream still puts a None
    in it on close (to wake a writer greenlet that no longer exists) and nothing else uses it
    (polling requests of an upgraded session are answered NOOP without reading the queue)."""

    def put(self, item) -> None:
        pass

    def qsize(self) -> int:
        return 0

    def join(self) -> None:
        pass


NO_QUEUE = _NoQueue()


class PingScheduler:
    """Sends each session's PING when it is due, from one greenlet per server.

    Upstream spawns a greenlet per session for every ping cycle, which sleeps through the ping
    interval holding its stack: about 6 KB per connection, and a spawn per client every 25 s.
    Every wait is `ping_interval` long, so sessions become due in the order they were scheduled:
    a deque is the whole timetable.
    """

    SLACK = 0.05  # PINGs due this close together go out in one wake-up

    def __init__(self, server):
        self.server = server
        self.due: collections.deque[tuple[float, LimitedSocket]] = collections.deque()
        self.lock = threading.Lock()
        self.running = False

    def schedule(self, session: LimitedSocket) -> None:
        with self.lock:
            self.due.append((time.monotonic() + self.server.ping_interval, session))
            if self.running:
                return
            self.running = True
        self.server.start_background_task(self.run)

    def run(self) -> None:
        while True:
            with self.lock:
                if not self.due:
                    self.running = False
                    return
                wait = self.due[0][0] - time.monotonic()
            if wait > 0:
                self.server.sleep(wait)
                continue
            horizon = time.monotonic() + self.SLACK
            while self.due and self.due[0][0] <= horizon:
                _, session = self.due.popleft()
                try:
                    session.ping_now()
                except Exception:  # one broken session must not stop everyone's pings
                    log.exception("ping of %s failed", session.sid)




def inline_websocket_wrapper(eio_async: dict):
    """engine.io calls its WebSocket wrapper object (`ws(environ, start_response)`), and every call
    of an object's `__call__` is one more C-level interpreter frame under the session's blocking
    read, which greenlet saves to the heap for every idle connection. A bound method is called
    inline by CPython 3.11."""
    wrapper_class = eio_async["websocket"]

    def websocket(handler, server):
        return wrapper_class(handler, server).__call__

    return websocket
