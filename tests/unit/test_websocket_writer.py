"""The direct WebSocket write path (web/upstream/): frames built once, written in order whatever
the kernel takes, the backlog counted for the outgoing cap, a dead peer never raising into the
sender. On a real socket pair, under gevent, without a server."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

import gevent
import gevent.socket
import pytest
from engineio import packet as eio_packet
from geventwebsocket.websocket import WebSocket

from web.upstream.gevent_websocket import CappedWebSocket
from web.upstream.transport import WebSocketWriter, websocket_frame


def decode_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in `data`."""
    frames, at = [], 0
    while at < len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,), at = struct.unpack("!H", data[at:at + 2]), at + 2
        elif length == 127:
            (length,), at = struct.unpack("!Q", data[at:at + 8]), at + 8
        frames.append((opcode, data[at:at + length]))
        at += length
    return frames


@pytest.fixture
def pair():
    server, client = gevent.socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield server, client
    server.close()
    client.close()


def read_all(sock, size: int, chunk_pause: float = 0.0) -> bytes:
    received = bytearray()
    while len(received) < size:
        data = sock.recv(65536)
        if not data:
            break
        received += data
        gevent.sleep(chunk_pause)
    return bytes(received)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_frames_carry_every_payload_size(size):
    text = "x" * max(0, size - 1)  # "4" + text: the Engine.IO MESSAGE packet
    [(opcode, payload)] = decode_frames(websocket_frame(eio_packet.Packet(eio_packet.MESSAGE,
                                                                          text)))
    assert opcode == 0x1 and payload == ("4" + text).encode()


def test_binary_packets_get_binary_frames_and_non_ascii_stays_utf8():
    [(opcode, payload)] = decode_frames(websocket_frame(
        eio_packet.Packet(eio_packet.MESSAGE, b"\x00\x01")))
    assert opcode == 0x2 and payload == b"\x00\x01"  # Engine.IO 4: binary goes raw
    [(_, payload)] = decode_frames(websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, "é")))
    assert payload == "4é".encode()  # 3 bytes, not the 6 of a \\u escape


def test_one_packet_sent_to_many_is_encoded_once():
    pkt = eio_packet.Packet(eio_packet.MESSAGE, "broadcast")
    assert websocket_frame(pkt) is websocket_frame(pkt)
    other = eio_packet.Packet(eio_packet.MESSAGE, "broadcast")
    assert websocket_frame(other) is not websocket_frame(pkt)


def test_an_idle_client_takes_the_frame_at_once(pair):
    server, client = pair
    writer = WebSocketWriter(server)
    writer.write(b"hello")
    assert writer.flusher is None and writer.pending_bytes == 0
    assert client.recv(100) == b"hello"


def test_a_client_reading_slowly_gets_every_frame_in_order(pair):
    server, client = pair
    writer = WebSocketWriter(server)
    frames = [websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, f"{i:05d}" * 100))
              for i in range(300)]
    expected = b"".join(frames)
    reader = gevent.spawn(read_all, client, len(expected), 0.001)
    peak = 0
    for frame in frames:
        writer.write(frame)
        peak = max(peak, writer.pending_bytes)
        if len(frame) % 7 == 0:
            gevent.sleep(0)
    assert peak > 0, "the kernel took everything: the backlog path was not exercised"
    assert reader.get(timeout=10) == expected
    writer.wait_flushed(5)
    assert (writer.pending_frames, writer.pending_bytes, writer.flusher) == (0, 0, None)


def test_the_backlog_is_what_the_outgoing_cap_sees(pair):
    server, _client = pair  # never reads
    writer = WebSocketWriter(server)
    for _ in range(100):
        writer.write(b"y" * 1000)
    gevent.sleep(0.01)  # the flusher writes what fits, then waits
    assert writer.flusher is not None
    assert 0 < writer.pending_bytes < 100_000 and writer.pending_frames >= 1


def test_a_dead_client_never_raises_into_the_sender(pair):
    server, client = pair
    writer = WebSocketWriter(server)
    client.close()
    for _ in range(50):
        writer.write(b"z" * 10_000)
    gevent.sleep(0.01)
    assert writer.broken and writer.pending_bytes == 0


def test_the_websocket_is_closed_after_what_was_written_before(pair):
    server, client = pair
    writer = WebSocketWriter(server)
    closed: list[int] = []

    class Closing:
        def close(self):
            closed.append(writer.pending_bytes)

    for _ in range(50):
        writer.write(b"w" * 2000)
    writer.close_when_flushed(Closing())
    assert closed == []
    assert len(read_all(client, 100_000)) == 100_000
    writer.wait_flushed(5)
    assert closed == [0]


def test_frames_gevent_websocket_writes_itself_queue_behind_the_backlog(pair):
    server, client = pair
    writer = WebSocketWriter(server)
    unused_stream = SimpleNamespace(read=None, write=None)  # every write goes through the writer
    websocket = CappedWebSocket({}, unused_stream, handler=None)
    websocket.writer = writer
    data = [b"d" * 3000 for _ in range(40)]
    for frame in data:
        writer.write(frame)
    websocket.send_frame(b"pong", WebSocket.OPCODE_PONG)  # answering a client's PING
    websocket.close(1000, "bye")
    received = read_all(client, 120_000 + 6 + 7)
    assert received[:120_000] == b"".join(data)
    assert decode_frames(received[120_000:]) == [(0xA, b"pong"), (0x8, b"\x03\xe8bye")]
