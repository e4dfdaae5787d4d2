"""Thousands of lean Socket.IO clients from one process: raw WebSocket over asyncio, no threads.

A python-socketio client costs a few threads and about a megabyte; this one is a coroutine and
two buffers, so one test process holds 5,000 of them. Each one opens an Engine.IO session over
WebSocket (no polling), connects the main namespace, answers pings, and reports which replica
holds it (the session id starts with the replica's address) or why it failed: the HTTP status,
a timeout, a refused or reset connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

HANDSHAKE_TIMEOUT = 20.0
_SID_REPLICA = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})\.(\d{1,5})\.")


@dataclass
class Outcome:
    """What a crowd of clients met: connected per replica (its address), failures per cause."""

    replicas: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    dropped: int = 0  # connected, then closed by the other side while held
    seconds: float = 0.0

    @property
    def connected(self) -> int:
        return sum(self.replicas.values())

    def server_errors(self) -> int:
        return sum(count for cause, count in self.failures.items() if cause.startswith("HTTP 5"))


def _frame(text: str) -> bytes:
    """A masked text frame, as a client must send."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


class LeanClient:
    """One WebSocket Engine.IO session with the main namespace connected."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.replica: str | None = None  # "ip:port" from the session id
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        """Raises ConnectionError("HTTP 429") etc., asyncio.TimeoutError or OSError."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        if status != "101":
            raise ConnectionError(f"HTTP {status}")
        opcode, payload = await _read_frame(self.reader)
        if not payload.startswith(b"0"):
            raise ConnectionError(f"unexpected first packet {payload[:40]!r}")
        sid = json.loads(payload[1:])["sid"]
        match = _SID_REPLICA.match(sid)
        self.replica = f"{match.group(1)}:{match.group(2)}" if match else "unknown"
        self.writer.write(_frame("40"))
        while True:  # until the namespace's CONNECT answer
            opcode, payload = await _read_frame(self.reader)
            if payload.startswith(b"40"):
                return
            if payload.startswith(b"44"):
                raise ConnectionError(f"refused: {payload[2:80]!r}")

    async def hold(self, seconds: float) -> bool:
        """Answer pings for `seconds`; False if the server closed the connection meanwhile."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    opcode, payload = await asyncio.wait_for(_read_frame(self.reader), left)
                except TimeoutError:
                    return True
                if opcode == 0x8:
                    return False
                if payload == b"2":
                    self.writer.write(_frame("3"))
            return True
        except (OSError, asyncio.IncompleteReadError):
            return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ConnectionError) and str(exc).startswith(("HTTP ", "refused", "unexp")):
        return str(exc).split(":")[0] if str(exc).startswith("refused") else str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError)):
        return "connection reset"
    return type(exc).__name__


async def _crowd(host: str, port: int, count: int, rate: float, hold: float) -> Outcome:
    outcome = Outcome()
    clients: list[LeanClient] = []
    started = time.monotonic()

    async def one(index: int) -> None:
        await asyncio.sleep(index / rate)
        client = LeanClient(host, port)
        try:
            await asyncio.wait_for(client.connect(), HANDSHAKE_TIMEOUT)
        except Exception as exc:  # every failure is counted by its cause
            outcome.failures[_cause(exc)] += 1
            client.close()
            return
        outcome.replicas[client.replica] += 1
        clients.append(client)

    await asyncio.gather(*(one(index) for index in range(count)))
    outcome.seconds = time.monotonic() - started
    if hold > 0:
        held = await asyncio.gather(*(client.hold(hold) for client in clients))
        outcome.dropped = held.count(False)
    for client in clients:
        client.close()
    await asyncio.sleep(0.1)
    return outcome


def connect_crowd(url: str, count: int, rate: float = 500.0, hold: float = 0.0) -> Outcome:
    """Open `count` clients against `url` at `rate` per second, keep them all `hold` seconds
    (answering pings), close them; what they met."""
    host, port = re.match(r"^https?://([^:/]+):(\d+)", url).groups()
    return asyncio.run(_crowd(host, int(port), count, rate, hold))


def within_of_even(counts: list[int], tolerance: float) -> bool:
    """Every count within `tolerance` (0.15: 15%) of an even share."""
    even = sum(counts) / len(counts)
    return all(abs(count - even) <= tolerance * even for count in counts)
