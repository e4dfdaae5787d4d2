"""Hostile clients against a real replica behind nginx: foreign origins, huge messages, floods,
garbage packets and clients that stop reading. Each limit holds and the other clients keep working.

One replica (so the offender and the healthy clients share it), no worker; small outgoing-buffer
limits so a slow reader is caught in seconds. Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import threading
import time
import uuid

import pytest
import requests
import websocket

from common.contract import Event
from scripts.stack import NGINX_DIR, Stack, free_port, nginx_binary, render
from tests.support.clients import RecordingClient
from tests.support.memory import memory_mb, replica_pid
from tests.support.metrics import replica_metric
from tests.support.stack import STACK_ENV, api_headers, running_stack

MAX_MESSAGE_BYTES = 1_000_000
EVENT_RATE, EVENT_BURST = 50, 100
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def hostile():
    with running_stack("hostile stack", replicas=1, workers=0, extra_env={
        **STACK_ENV, "SERVER_EVENT_INTERVAL": "0", "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "EVENT_RATE_PER_SECOND": str(EVENT_RATE), "EVENT_BURST": str(EVENT_BURST),
        "MAX_OUTGOING_PACKETS": "2000", "MAX_OUTGOING_BYTES": "2000000",
        # The slow-reader test fills a reader's outgoing buffer with 100 KB room messages.
        "MAX_FANOUT_BYTES": "200000"}) as stack:
        yield stack


# -- helpers ---------------------------------------------------------------------------------------

def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket" + query


def raw_socketio(base: str, **options) -> websocket.WebSocket:
    """A raw WebSocket with a Socket.IO session on the main namespace (open + CONNECT read)."""
    ws = websocket.create_connection(ws_url(base), timeout=10, **options)
    assert ws.recv().startswith("0{")  # Engine.IO OPEN
    ws.send("40")
    received = [ws.recv() for _ in range(2)]  # CONNECT's answer and the connect handler's emit
    assert any(message.startswith("40") for message in received), received
    return ws


def close_code(ws: websocket.WebSocket, timeout: float = 10) -> int | None:
    """Read until the server's close frame (its status code) or EOF (None)."""
    ws.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = ws.recv_frame()
        except (websocket.WebSocketException, OSError):
            return None
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
    raise AssertionError("the server did not close the connection")


def limit_count(stack: Stack, limit: str) -> float:
    return replica_metric(stack, "socketio_limit_exceeded_total", f'limit="{limit}"')


def replica_log(stack: Stack) -> str:
    return stack.web[0].process.log_path.read_text(errors="replace")


def ping_latencies(client: RecordingClient, seconds: float) -> list[float]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert client.sio.call(Event.MY_PING, {"t": started}, timeout=10) == {"t": started}
        samples.append(time.monotonic() - started)
        time.sleep(0.05)  # 20 a second: well under EVENT_RATE_PER_SECOND
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def still_served(stack: Stack, clients: list) -> None:
    client = RecordingClient(stack.url).connect()
    clients.append(client)
    assert client.sio.call(Event.MY_PING, {"ok": 1}, timeout=5) == {"ok": 1}


# -- 1. origins ------------------------------------------------------------------------------------

def test_foreign_origin_is_refused_on_both_transports(hostile):
    refused_before = limit_count(hostile, "origin")
    polling = f"{hostile.url}/socket.io/?EIO=4&transport=polling"
    foreign = requests.get(polling, headers={"Origin": EVIL}, timeout=5)
    assert foreign.status_code == 400, foreign.text
    assert "Access-Control-Allow-Origin" not in foreign.headers
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(hostile.url), origin=EVIL, timeout=5)
    assert refused.value.status_code == 400

    # The page's own origin (what a browser on it sends) and no Origin at all are let in.
    own = requests.get(polling, headers={"Origin": hostile.url}, timeout=5)
    assert own.status_code == 200 and own.text.startswith("0{")
    ws = websocket.create_connection(ws_url(hostile.url), origin=hostile.url, timeout=5)
    assert ws.recv().startswith("0{")
    ws.close()
    assert limit_count(hostile, "origin") == refused_before + 2
    assert replica_log(hostile).count(f"refused a handshake from origin '{EVIL}'") == 1


# -- 2. sizes --------------------------------------------------------------------------------------

def test_oversized_message_is_refused_at_the_frame_header(hostile, clients):
    # A header announcing 100 MB and not one byte of payload: the close comes anyway.
    ws = raw_socketio(hostile.url)
    mask = os.urandom(4)
    ws.sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 100_000_000) + mask)
    assert close_code(ws) == 1009
    ws.close()

    # Fragments that are each allowed but together are not.
    ws = raw_socketio(hostile.url)
    piece = "x" * (MAX_MESSAGE_BYTES // 2 + 1)
    ws.send_frame(websocket.ABNF.create_frame("42" + piece, websocket.ABNF.OPCODE_TEXT, fin=0))
    ws.send_frame(websocket.ABNF.create_frame(piece, websocket.ABNF.OPCODE_CONT, fin=0))
    assert close_code(ws) == 1009
    ws.close()

    # A message just under the limit still arrives.
    client = RecordingClient(hostile.url).connect()
    clients.append(client)
    big = "y" * (MAX_MESSAGE_BYTES - 1000)
    client.sio.emit(Event.MY_EVENT, {"data": big})
    client.wait_for(Event.MY_RESPONSE, lambda r: r["data"] == big, timeout=10)


def test_a_100_mb_message_costs_the_replica_no_memory(hostile, clients):
    pid = replica_pid(hostile.web[0])
    peak_before = memory_mb(pid, "VmHWM")
    healthy = RecordingClient(hostile.url).connect()
    clients.append(healthy)
    latencies: list[float] = []
    stop = threading.Event()

    def keep_pinging():
        while not stop.is_set():
            latencies.extend(ping_latencies(healthy, 0.2))

    pinger = threading.Thread(target=keep_pinging)
    pinger.start()
    try:
        ws = raw_socketio(hostile.url)
        started = time.monotonic()
        with pytest.raises((websocket.WebSocketException, OSError)):
            ws.send("42" + json.dumps([Event.MY_EVENT, {"data": "z" * 100_000_000}]))
            close_code(ws)  # only if the whole message went out: then the close must come
            raise OSError("the replica read a 100 MB message")
        refused_after = time.monotonic() - started
    finally:
        stop.set()
        pinger.join(timeout=30)
    peak_after = memory_mb(pid, "VmHWM")
    print(f"\n100 MB WebSocket message: replica peak RSS {peak_before:.0f} -> {peak_after:.0f} MB; "
          f"sender cut off after {refused_after:.2f}s; healthy client's my_ping max "
          f"{max(latencies) * 1000:.0f} ms over {len(latencies)} calls")
    assert peak_after - peak_before < 30, "the replica buffered the message"
    assert max(latencies) < 2.0
    still_served(hostile, clients)


def test_polling_bodies_above_the_cap(hostile):
    handshake = requests.get(f"{hostile.url}/socket.io/?EIO=4&transport=polling", timeout=5)
    sid = json.loads(handshake.text[1:])["sid"]
    url = f"{hostile.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    # Just above MAX_MESSAGE_BYTES: engine.io refuses it (and ends the session).
    assert requests.post(url, data="4" + "x" * MAX_MESSAGE_BYTES, timeout=10).status_code == 400
    # Far above: nginx refuses it without passing it on.
    assert requests.post(url, data="4" + "x" * 5_000_000, timeout=10).status_code == 413


def test_nginx_limits_per_client_address(hostile):
    """The template's per-address limits, rendered low into a second nginx on the same replica."""
    run_dir = hostile.run_dir / f"nginx-limits-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    port = free_port()
    values = {**hostile.nginx_values(), "NGINX_LISTEN": f"127.0.0.1:{port}",
              "NGINX_RUN_DIR": str(run_dir), "NGINX_CONN_PER_ADDRESS": "5",
              "NGINX_NEW_SESSION_RATE": "1r/s", "NGINX_NEW_SESSION_BURST": "10"}
    render(NGINX_DIR / "socketio.conf.template", run_dir / "socketio.conf", values)
    render(NGINX_DIR / "native.conf.template", run_dir / "nginx.conf", values)
    nginx = subprocess.Popen([nginx_binary(), "-p", str(run_dir),
                              "-c", str(run_dir / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    sockets: list[websocket.WebSocket] = []
    try:
        for _ in range(50):
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        statuses = []
        for _ in range(8):
            try:
                sockets.append(websocket.create_connection(ws_url(base), timeout=5))
                statuses.append(101)
            except websocket.WebSocketBadStatusException as exc:
                statuses.append(exc.status_code)
        assert statuses[:5] == [101] * 5 and set(statuses[5:]) == {429}, statuses
        for ws in sockets:
            ws.close()
        time.sleep(0.3)
        # 8 WebSocket sessions used 8 of the burst of 10 new sessions; the 11th is one too many.
        news = [requests.get(f"{base}/socket.io/?EIO=4&transport=polling", timeout=5).status_code
                for _ in range(4)]
        assert 200 in news and news[-1] == 429, news
        # A session's own requests are not new sessions.
        sid = json.loads(requests.get(f"{hostile.url}/socket.io/?EIO=4&transport=polling",
                                      timeout=5).text[1:])["sid"]
        own = requests.post(f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}", data="40",
                            timeout=5)
        assert own.status_code == 200, own.text
    finally:
        for ws in sockets:
            ws.close()
        nginx.terminate()
        nginx.wait(timeout=10)


# -- 3. floods -------------------------------------------------------------------------------------

def test_a_flooding_client_is_cut_off_and_the_others_do_not_notice(hostile, clients):
    healthy = [RecordingClient(hostile.url).connect() for _ in range(3)]
    clients.extend(healthy)
    offenders_before = limit_count(hostile, "event_rate")

    def measure(seconds: float) -> list[float]:
        results: list[list[float]] = [[] for _ in healthy]
        threads = [threading.Thread(target=lambda i=i: results[i].extend(
            ping_latencies(healthy[i], seconds))) for i in range(len(healthy))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [sample for result in results for sample in result]

    quiet = measure(2.0)

    flood = raw_socketio(hostile.url)
    sent = [0]
    flood_started = time.monotonic()
    closed_at: list[float] = []

    def send_as_fast_as_possible():
        message = "42" + json.dumps([Event.MY_PING, {"flood": "f" * 200}])
        try:
            while sent[0] < 200_000:
                flood.send(message)
                sent[0] += 1
        except (websocket.WebSocketException, OSError):
            pass

    def watch_for_close():
        close_code(flood, timeout=10)
        closed_at.append(time.monotonic())

    flooder = threading.Thread(target=send_as_fast_as_possible)
    watcher = threading.Thread(target=watch_for_close)
    flooder.start()
    watcher.start()
    during = measure(2.0)
    watcher.join(timeout=15)
    flooder.join(timeout=15)
    flood.close()

    assert closed_at, "the flooding client was not disconnected"
    cut_off = closed_at[0] - flood_started
    quiet_p99, during_p99 = p99(quiet), p99(during)
    print(f"\nflood: {sent[0]} messages sent, cut off after {cut_off * 1000:.0f} ms; healthy "
          f"my_ping p99 {quiet_p99 * 1000:.1f} ms quiet, {during_p99 * 1000:.1f} ms during "
          f"({len(quiet)} / {len(during)} calls)")
    assert cut_off < 1.0
    assert during_p99 < max(5 * quiet_p99, 0.1)
    assert limit_count(hostile, "event_rate") == offenders_before + 1
    assert replica_log(hostile).count("event rate limit:") == offenders_before + 1


# -- 4. malformed input ----------------------------------------------------------------------------

BAD_POLLING_BODIES = ["", "x", "9", "4", "b!!!notbase64", "d=", "4\x1e\x1e", "\xff\xfe",
                      "4" + "[" * 5000 + "]" * 5000, "42" + "[" * 5000 + "]" * 5000,
                      "4" + "2[" * 50, "42[\"my_event\"", "45-[\"my_event\",{\"_placeholder\":1}]"]
BAD_WEBSOCKET_MESSAGES: list[str | bytes] = [
    "x", "b%%%", "4", "9", "42", "42[", "42{}", "42[1,2]", "43[]", "45-[]", "4/nowhere,2[\"e\"]",
    "42[\"my_event\",{\"data\":" + "[" * 5000 + "]" * 5000 + "}]", "41", "40/echo,", b"\x00\x01",
    "4" + "[" * 5000 + "]" * 5000, "42[\"no_such_event\",1]", "42[\"join\",7]",
    "42[\"my_room_event\",{\"room\":[]}]",
]


def test_malformed_packets_are_dropped_quietly(hostile, clients):
    tracebacks_before = replica_log(hostile).count("Traceback")
    for body in BAD_POLLING_BODIES:
        sid = json.loads(requests.get(f"{hostile.url}/socket.io/?EIO=4&transport=polling",
                                      timeout=5).text[1:])["sid"]
        url = f"{hostile.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        requests.post(url, data="40", timeout=5)
        status = requests.post(url, data=body.encode("utf-8", "surrogateescape"),
                               timeout=5).status_code
        assert status in (200, 400), (body, status)
    for message in BAD_WEBSOCKET_MESSAGES:
        ws = raw_socketio(hostile.url)
        try:
            ws.send(message, opcode=websocket.ABNF.OPCODE_BINARY if isinstance(message, bytes)
                    else websocket.ABNF.OPCODE_TEXT)
            ws.send("42[\"my_ping\",\"after\"]")
        except (websocket.WebSocketException, OSError):
            pass  # the server may already have closed the connection
        ws.close()
    # Reserved bits and unknown opcodes at the WebSocket layer.
    for first_byte in (0xC1, 0x83):
        ws = raw_socketio(hostile.url)
        ws.sock.sendall(bytes([first_byte, 0x80]) + os.urandom(4))
        close_code(ws, timeout=5)
        ws.close()

    still_served(hostile, clients)
    client = clients[-1]
    client.sio.emit("no_such_event", {"x": 1})
    error = client.wait_for(Event.ERROR_RESPONSE, timeout=5)
    assert "no_such_event" in error["error"]
    time.sleep(0.5)
    log = replica_log(hostile)
    new_tracebacks = log.count("Traceback") - tracebacks_before
    dropped = {layer: replica_metric(hostile, "socketio_packets_dropped_total", f'layer="{layer}"')
               for layer in ("engine.io", "socket.io")}
    print(f"\nmalformed input: {len(BAD_POLLING_BODIES)} polling bodies, "
          f"{len(BAD_WEBSOCKET_MESSAGES)} WebSocket messages -> {new_tracebacks} tracebacks; "
          f"packets dropped: {dropped}")
    assert new_tracebacks <= 3, log[-5000:]
    assert hostile.web[0].process.running()


def test_deeply_nested_data_is_refused_everywhere_it_enters(hostile, clients):
    """The API through nginx: 400 naming the bound (at 900 levels a notification was accepted and
    dead-lettered by the worker; at 50,000 the API answered 500). A client event: dropped as
    undecodable, the client's session goes on."""
    for levels in (900, 50_000):
        data = "[" * levels + "1" + "]" * levels
        answer = requests.post(f"{hostile.url}/api/notifications", headers={
            **api_headers(), "Content-Type": "application/json"},
            data=f'{{"to": "all", "data": {{"deep": {data}}}}}', timeout=10)
        assert answer.status_code == 400, answer.text[:200]
        assert "nested deeper than 32 levels" in answer.json()["error"]
    client = RecordingClient(hostile.url, transports=["websocket"]).connect()
    clients.append(client)
    dropped = replica_metric(hostile, "socketio_packets_dropped_total", 'layer="socket.io"')
    nested = {"data": None}
    for _ in range(100):  # as deep as python-socketio's own client can send
        nested = {"data": nested}
    client.sio.emit(Event.MY_EVENT, nested)
    assert client.sio.call(Event.MY_PING, {"t": "after"}, timeout=5) is not None
    assert replica_metric(hostile, "socketio_packets_dropped_total",
                          'layer="socket.io"') == dropped + 1


# -- 5. slow readers -------------------------------------------------------------------------------

def test_a_client_that_stops_reading_is_dropped(hostile, clients, unique):
    room = f"slow-{unique}"
    pid = replica_pid(hostile.web[0])
    rss_before = memory_mb(pid, "VmRSS")
    dropped_before = limit_count(hostile, "outgoing_buffer")

    # Straight to the replica (nginx would buffer a few MB more), with a tiny receive buffer.
    slow = raw_socketio(hostile.web[0].url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    slow.send(f"42{json.dumps([Event.JOIN, {'room': room}])}")
    reader = RecordingClient(hostile.url).connect()
    sender = RecordingClient(hostile.url).connect()
    clients.extend([reader, sender])
    for client in (reader, sender):
        client.sio.emit(Event.JOIN, {"room": room})
        client.wait_for(Event.MY_RESPONSE, lambda r: room in str(r["data"]), timeout=5)

    chunk = "s" * 100_000
    sent_bytes = 0
    deadline = time.monotonic() + 20
    while limit_count(hostile, "outgoing_buffer") == dropped_before:
        assert time.monotonic() < deadline, "the slow reader was never dropped"
        sender.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": chunk})
        sent_bytes += len(chunk)
        time.sleep(1 / (EVENT_RATE * 0.8))  # under the sender's own event limit
    dropped_after = sent_bytes
    rss_after = memory_mb(pid, "VmRSS")

    # The dropped client's connection ends (EOF once its buffers are read).
    slow.settimeout(10)
    with pytest.raises((websocket.WebSocketException, OSError)):
        for _ in range(100_000):
            slow.recv()
    slow.close()
    marker = f"after-{unique}"
    sender.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": marker})
    reader.wait_for(Event.MY_RESPONSE, lambda r: r["data"] == marker, timeout=10)
    print(f"\nslow reader: dropped after {dropped_after / 1e6:.1f} MB were sent to its room; "
          f"replica RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert rss_after - rss_before < 50
    assert replica_log(hostile).count("outgoing buffer limit:") == dropped_before + 1
