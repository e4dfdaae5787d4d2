"""The replica's own WebSocket transport code. It overrides nothing and reads no library member:
the direct frame writer, the frame builder, the unmask and the socket reader that the overrides in
engineio_session.py and gevent_websocket.py use."""

from __future__ import annotations

import collections
import os
import struct

import gevent

from common.library_contract import Contract

CONTRACT = Contract(read_against={}, members={})  # reads no library member


class WebSocketWriter:
    """Writes one WebSocket client's frames from the greenlet that sends them.

    A frame is written with one non-blocking write(2): the kernel takes it whole unless the
    client has stopped reading. Whatever it does not take, and every frame after it, waits in
    `backlog`, written in order by a greenlet that exists only while there is a backlog, which
    coalesces what accumulated into one write. `pending_*` is what the outgoing cap counts.
    """

    __slots__ = ("socket", "fileno", "backlog", "pending_frames", "pending_bytes", "flusher",
                 "websocket_to_close", "broken")

    def __init__(self, socket):
        self.socket = socket  # gevent's socket: its sendall() blocks only the flusher greenlet
        self.fileno = socket.fileno()
        self.backlog: collections.deque[bytes] | None = None  # made when first needed: ~600 B
        self.pending_frames = 0
        self.pending_bytes = 0
        self.flusher: gevent.Greenlet | None = None
        self.websocket_to_close = None
        self.broken = False

    def write(self, frame: bytes) -> None:
        if self.broken:
            return
        if self.flusher is None:
            try:
                written = os.write(self.fileno, frame)
            except BlockingIOError:
                written = 0
            except OSError:  # the client is gone; its reader notices and ends the session
                self.broken = True
                return
            if written == len(frame):
                return
            frame = frame[written:]
            if self.backlog is None:
                self.backlog = collections.deque()
            self.flusher = gevent.spawn(self.flush)
        self.backlog.append(frame)
        self.pending_frames += 1
        self.pending_bytes += len(frame)

    def flush(self) -> None:
        try:
            while self.backlog:
                frames = b"".join(self.backlog) if len(self.backlog) > 1 else self.backlog[0]
                count = len(self.backlog)
                self.backlog.clear()
                self.socket.sendall(frames)
                self.pending_frames -= count
                self.pending_bytes -= len(frames)
        except OSError:
            self.broken = True
            self.backlog.clear()
            self.pending_frames = self.pending_bytes = 0
        finally:
            self.flusher = None
        if self.websocket_to_close is not None:
            self.websocket_to_close.close()

    def close_when_flushed(self, websocket) -> None:
        """Close the WebSocket (a close frame) once every frame before it is written."""
        if self.flusher is None:
            websocket.close()
        else:
            self.websocket_to_close = websocket

    def wait_flushed(self, timeout: float) -> None:
        flusher = self.flusher
        if flusher is not None:
            flusher.join(timeout)


_last_frame: tuple[object, bytes] = (None, b"")


def websocket_frame(pkt) -> bytes:
    """The WebSocket frame of an Engine.IO packet; built once for all recipients of a broadcast
    (python-socketio sends them one packet object in a row, so the last one is remembered)."""
    global _last_frame
    last = _last_frame
    if last[0] is pkt:
        return last[1]
    encoded = pkt.encode()
    if isinstance(encoded, str):
        payload, opcode = encoded.encode(), 0x1
    else:
        payload, opcode = bytes(encoded), 0x2
    frame = frame_header(opcode, len(payload)) + payload
    _last_frame = (pkt, frame)
    return frame


def frame_header(opcode: int, length: int) -> bytes:
    """The header of a final, unmasked (server-to-client) WebSocket frame."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)



def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask as one big integer: C speed instead of a Python loop per byte."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little")



class SocketReader:
    """Reads exactly the bytes asked for from a (gevent) socket, in Python. A read of a few
    bytes (a frame header) asks the kernel for up to READ_AHEAD, so that a small message takes
    one system call; what was read ahead is kept for the next read, nothing otherwise."""

    READ_AHEAD = 256
    __slots__ = ("socket", "pending")

    def __init__(self, socket, pending: bytes = b""):
        self.socket = socket
        self.pending = pending

    def read(self, size: int) -> bytes:
        data = self.pending
        if len(data) >= size:
            self.pending = data[size:]
            return data[:size]
        chunks = [data]
        have = len(data)
        while have < size:
            chunk = self.socket.recv(max(size - have, self.READ_AHEAD))
            if not chunk:  # the peer closed: a short read, as from a file
                break
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self.pending = data[size:]
        return data[:size]
