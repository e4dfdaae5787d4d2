"""Hostile clients for the soak test: a handful of threads that keep doing, in bounded loops, what
the limits refuse, each reconnecting when it is cut off.

Run as a process of its own, so that its CPU is never counted as the healthy clients' latency in
the test's process:

    python -m tests.support.hostile URL SECONDS MARKER USER OUT_JSON [ATTACKS]

MARKER is put into every string a client chooses (event names, rooms, origins, namespaces,
transports, data sent to a user's room), so the test can check that none of it became a metric
label or reached a healthy client; USER is a healthy client's user, whose room is attacked. OUT_JSON
receives what each attack met, counted by kind ({"counts": {...}, "errors": [...]}). ATTACKS, a
comma-separated list of the functions below (flood,fanout,...), runs only those.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import requests
import websocket

from common.contract import CHAT_NAMESPACE, Event, user_room

OPEN = "/socket.io/?EIO=4&transport=polling"
MAX_MESSAGE_BYTES = 1_000_000  # the stack's default MAX_MESSAGE_BYTES
MAX_FANOUT_BYTES = 16_384  # the stack's default MAX_FANOUT_BYTES
RESERVED_NAMES = ("connect", "disconnect", "connect_error", "disconnecting", "*",
                  "__disconnect_final")
# What the server answers, by kind: the first matching fragment of an error's text names it.
ERROR_KINDS = (
    ("is reserved for Socket.IO", "reserved event name"),
    ("event names are at most", "long event name"),
    ("cannot be joined", "reserved room join"),
    ("cannot be closed", "reserved room close"),
    ("only the backend sends there", "send to a user's room"),
    ("rooms per connection", "room cap"),
    ("sign in to start a job", "anonymous start_job"),
    ("data sent to many is at most", "fanout size"),
    ("unknown event", "unknown event"),
    ("before talking in it", "chat say before join"),
)


class Tally:
    """Counts by kind, shared by the attack threads; the first few unexpected errors kept."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.counts[kind] += count

    def error(self, attack: str, exc: BaseException) -> None:
        self(f"{attack}: {type(exc).__name__}")
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(f"{attack}: {exc!r}"[:300])


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket" + query


class Refused(Exception):
    """A namespace CONNECT answered with an error."""


class RawSession:
    """A raw WebSocket with a Socket.IO session on one namespace, reading and answering what the
    server sends, and counting the errors it answers by kind."""

    def __init__(self, base: str, tally: Tally, namespace: str = "/", **options):
        self.tally = tally
        self.ws = websocket.create_connection(ws_url(base), timeout=10, **options)
        opened = self.ws.recv()
        self.sid = json.loads(opened[1:])["sid"]
        self.alive = True
        self.connect(namespace)

    def connect(self, namespace: str) -> None:
        prefix = self.prefix(namespace)
        self.ws.send("40" + prefix)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self.ws.recv()
            if message.startswith("40" + prefix):
                return
            if message.startswith("44" + prefix):
                raise Refused(message[:200])
        raise TimeoutError(f"no CONNECT answer on {namespace}")

    @staticmethod
    def prefix(namespace: str) -> str:
        return "" if namespace == "/" else namespace + ","

    def emit(self, event: str, *args, namespace: str = "/", ack: int | None = None) -> None:
        self.send(f"42{self.prefix(namespace)}{'' if ack is None else ack}"
                  + json.dumps([event, *args]))

    def send(self, message: str | bytes) -> None:
        opcode = websocket.ABNF.OPCODE_BINARY if isinstance(message, bytes) else \
            websocket.ABNF.OPCODE_TEXT
        try:
            self.ws.send(message, opcode=opcode)
        except (websocket.WebSocketException, OSError):
            self.alive = False

    def pump(self, seconds: float) -> bool:
        """Read for `seconds`, answering pings and counting errors; False once the server closed
        the connection."""
        deadline = time.monotonic() + seconds
        while self.alive and (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(max(left, 0.001))
            try:
                frame = self.ws.recv_frame()
            except websocket.WebSocketTimeoutException:
                break
            except (websocket.WebSocketException, OSError):
                self.alive = False
                break
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
                self.tally(f"closed by the server: {code}")
                self.alive = False
                break
            if frame.opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            self.read(frame.data.decode("utf-8", "replace"))
        return self.alive

    def read(self, message: str) -> None:
        if message == "2":
            self.send("3")
        elif message == "1":
            self.tally("engine.io close packet")
        elif message.startswith("41"):
            self.tally("disconnected by the server")
        elif "client_question" in message[:60]:
            self.tally("server-to-client call left unanswered")
        elif '"error"' in message:
            for fragment, kind in ERROR_KINDS:
                if fragment in message:
                    self.tally(kind)
                    return
            self.tally("other error answer")

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass


def connect_or_count(base: str, tally: Tally, attack: str, **options) -> RawSession | None:
    try:
        return RawSession(base, tally, **options)
    except websocket.WebSocketBadStatusException as exc:
        tally(f"{attack}: handshake HTTP {exc.status_code}")
    except Refused:
        tally(f"{attack}: namespace refused")
    except (websocket.WebSocketException, OSError, TimeoutError, ValueError) as exc:
        tally.error(attack, exc)
    time.sleep(0.5)
    return None


def rounds_on_a_session(base: str, tally: Tally, deadline: float,
                        attack: str) -> Iterator[tuple[int, RawSession]]:
    """Numbered rounds until `deadline` (at most 100,000), each with a live session: a new one
    whenever the server ended the last."""
    session = None
    try:
        for round_ in range(100_000):
            if time.monotonic() > deadline:
                return
            if session is None or not session.alive:
                if session is not None:
                    session.close()
                session = connect_or_count(base, tally, attack)
                continue
            yield round_, session
    finally:
        if session is not None:
            session.close()


def polling_session(base: str) -> str:
    """A long-polling session connected to the main namespace; the URL its requests go to."""
    sid = json.loads(requests.get(base + OPEN, timeout=10).text[1:])["sid"]
    url = f"{base}{OPEN}&sid={sid}"
    requests.post(url, data="40", timeout=10)
    return url


def fresh_sessions(base: str, tally: Tally, deadline: float, attack: str) -> Iterator[RawSession]:
    """A new session for each round until `deadline` (at most 10,000 rounds), closed after it."""
    for _ in range(10_000):
        if time.monotonic() > deadline:
            return
        session = connect_or_count(base, tally, attack)
        if session is None:
            continue
        try:
            yield session
        finally:
            session.close()


# -- the attacks: each loops until `deadline`, a bounded number of times ---------------------------

def flood(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """Events far beyond EVENT_BURST as fast as possible: cut off, reconnect a second later."""
    message = "42" + json.dumps([Event.MY_PING, {"flood": "f" * 100}])
    for session in fresh_sessions(base, tally, deadline, "flood"):
        for _ in range(400):
            session.send(message)
            if not session.alive:
                break
        session.pump(3)
        tally("flood: cut off" if not session.alive else "flood: still connected")
        session.close()
        time.sleep(1)


def nasty_payloads(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """NaN and Infinity, deep nesting, huge numbers, long and reserved event names, names and
    reasons meant to become metric labels; about 30 messages a second (under the event rate)."""
    nested = "[" * 3000 + "]" * 3000
    messages = [
        '42["my_event",{"data":NaN}]',
        '42["my_broadcast_event",{"data":Infinity}]',
        '42["my_ping",-Infinity]',
        f'42["my_event",{{"data":{nested}}}]',
        f"4{nested}",
        '42["my_event",{"data":1' + "0" * 5000 + "}]",
        "42" + json.dumps(["x" * 100_000]),
        "42" + json.dumps([f"{marker}_event_name", 1]),
        "42" + json.dumps(["disconnect", f"{marker} reason"]),
        *("42" + json.dumps([name, f"{marker} label"]) for name in RESERVED_NAMES),
    ]
    for round_, session in rounds_on_a_session(base, tally, deadline, "nasty payloads"):
        index = round_ % len(messages)
        session.send(messages[index])
        tally("nasty payload sent")
        if not session.pump(1 / 30):
            tally(f"nasty payloads: connection ended after message #{index}")


def rooms_and_acks(base: str, tally: Tally, deadline: float, marker: str, user: str) -> None:
    """Room joins beyond the cap, reserved rooms on / and /chat, sends to a user's room, anonymous
    start_job, and server-to-client calls never answered; about 20 messages a second."""
    forged_sid_room = "127.0.0.1.5001.someone-else"
    for session in fresh_sessions(base, tally, deadline, "rooms"):
        steps = [
            *((Event.JOIN, {"room": f"{marker}-room-{i}"}) for i in range(60)),
            (Event.JOIN, {"room": user_room(user)}),
            (Event.JOIN, {"room": forged_sid_room}),
            (Event.CLOSE_ROOM, {"room": user_room(user)}),
            (Event.MY_ROOM_EVENT, {"room": user_room(user), "data": f"{marker} to a user's room"}),
            (Event.START_JOB, {"steps": 100}),
            *((Event.ASK_CLIENT, {"data": f"{marker} unanswered"}) for _ in range(150)),
        ]
        for event, payload in steps:
            if time.monotonic() > deadline:
                break
            session.emit(event, payload)
            if not session.pump(0.05):
                break
        if session.alive:
            chat_reserved_rooms(session, tally, user)
        session.pump(1)


def chat_reserved_rooms(session: RawSession, tally: Tally, user: str) -> None:
    try:
        session.connect(CHAT_NAMESPACE)
    except (Refused, TimeoutError, websocket.WebSocketException, OSError) as exc:
        tally.error("chat", exc)
        return
    for ack, room in enumerate((user_room(user), "127.0.0.1.5001.someone-else")):
        session.emit(Event.CHAT_JOIN, {"room": room, "name": "m"}, namespace=CHAT_NAMESPACE,
                     ack=ack)
        session.pump(0.05)
    session.emit(Event.CHAT_SAY, {"room": user_room(user), "text": "hi"},
                 namespace=CHAT_NAMESPACE, ack=9)
    session.pump(0.1)


def fanout(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """Non-ASCII broadcasts just under MAX_FANOUT_BYTES (2 bytes a character, which an escaping
    encoder would turn into 6), and some just over it; two a second."""
    within = "é" * ((MAX_FANOUT_BYTES - 100) // 2)
    over = "é" * (MAX_FANOUT_BYTES // 2 + 100)
    for round_, session in rounds_on_a_session(base, tally, deadline, "fanout"):
        big = round_ % 4 == 3
        session.emit(Event.MY_BROADCAST_EVENT, {"data": over if big else within})
        tally("fanout: over the cap sent" if big else "fanout: within the cap sent")
        session.pump(0.5)


def oversize(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """Messages above MAX_MESSAGE_BYTES over WebSocket and long-polling, every few seconds."""
    for round_ in range(10_000):
        if time.monotonic() > deadline:
            return
        if round_ % 2 == 0:
            session = connect_or_count(base, tally, "oversize")
            if session is not None:
                session.send("42" + json.dumps([Event.MY_EVENT, {"data": "o" * 1_500_000}]))
                session.pump(5)
                session.close()
        else:
            try:
                url = polling_session(base)
                for size in (MAX_MESSAGE_BYTES + 100, 3_000_000):
                    status = requests.post(url, data="4" + "x" * size, timeout=10).status_code
                    tally(f"oversize polling body: HTTP {status}")
            except (requests.RequestException, ValueError, KeyError) as exc:
                tally.error("oversize polling", exc)
        time.sleep(2)


def http_tricks(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """Half-open handshakes (polling sessions never used again), `SID=` and forged `sid=` routing,
    labels in the query and the Origin, the operations endpoints, and bursts of sessions from one
    address; a few requests a second."""
    tricks = [
        ("half-open handshake", OPEN, {}),
        ("SID= handshake", f"{OPEN}&SID=10.9.9.9.5000.forged", {}),
        ("forged sid", f"{OPEN}&sid=10.9.9.9.5000.forged", {}),
        ("transport label", f"/socket.io/?EIO=4&transport={marker}", {}),
        ("protocol label", f"/socket.io/?EIO={marker}&transport=polling", {}),
        ("foreign origin", OPEN, {"Origin": f"http://{marker}.example"}),
        ("public /metrics", "/metrics", {}),
        ("public /readyz", "/readyz", {}),
    ]
    with requests.Session() as http:
        for round_ in range(100_000):
            if time.monotonic() > deadline:
                return
            name, path, headers = tricks[round_ % len(tricks)]
            try:
                status = http.get(base + path, headers=headers, timeout=10).status_code
                tally(f"{name}: HTTP {status}")
            except requests.RequestException as exc:
                tally.error(name, exc)
            if round_ % 200 == 199:
                sessions_from_one_address(base, tally, marker)
            time.sleep(0.1)


def sessions_from_one_address(base: str, tally: Tally, marker: str, count: int = 40) -> None:
    sockets = []
    for _ in range(count):
        try:
            sockets.append(websocket.create_connection(ws_url(base), timeout=10))
            tally("many sessions: opened")
        except websocket.WebSocketBadStatusException as exc:
            tally(f"many sessions: HTTP {exc.status_code}")
        except (websocket.WebSocketException, OSError) as exc:
            tally.error("many sessions", exc)
    time.sleep(2)
    for ws in sockets:
        ws.close()


def slow_headers(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """A few connections that send their request headers a byte a second, then give up."""
    host, port = base.removeprefix("http://").split(":")
    for _ in range(1000):
        if time.monotonic() > deadline:
            return
        sockets = []
        for _ in range(4):
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(f"GET {OPEN} HTTP/1.1\r\nHost: {host}\r\n".encode())
                sockets.append(sock)
            except OSError as exc:
                tally.error("slow headers", exc)
        for _ in range(15):
            if time.monotonic() > deadline:
                break
            for sock in sockets:
                try:
                    sock.sendall(b"X")
                except OSError:
                    tally("slow headers: closed by nginx")
            time.sleep(1)
        tally("slow headers: held", len(sockets))
        for sock in sockets:
            sock.close()


def fuzz(base: str, tally: Tally, deadline: float, marker: str) -> None:
    """Random and mutated packets over WebSocket and long-polling (seeded, so a run repeats)."""
    rng = random.Random(1234)
    valid = ['42["my_event",{"data":"x"}]', '42["join",{"room":"r"}]', "40/chat,",
             '42/chat,1["say",{"room":"r","text":"t"}]', '43["x"]', "3", "2probe"]

    def mutated() -> str | bytes:
        choice = rng.random()
        if choice < 0.2:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        if choice < 0.4:
            return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 64)))
        text = list(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            text[rng.randrange(len(text))] = chr(rng.randrange(32, 127))
        return "".join(text)

    for round_ in range(10_000):
        if time.monotonic() > deadline:
            return
        if round_ % 3 == 2:
            try:
                url = polling_session(base)
                body = mutated()
                status = requests.post(url, data=body if isinstance(body, bytes)
                                       else body.encode("utf-8", "surrogatepass"),
                                       timeout=10).status_code
                tally(f"fuzzed polling body: HTTP {status}")
            except (requests.RequestException, ValueError, KeyError) as exc:
                tally.error("fuzz polling", exc)
            time.sleep(0.5)
            continue
        session = connect_or_count(base, tally, "fuzz")
        if session is None:
            continue
        for _ in range(30):
            session.send(mutated())
            tally("fuzzed message sent")
            if not session.pump(0.05):
                break
        session.close()


ATTACKS = {attack.__name__: attack for attack in (
    flood, nasty_payloads, rooms_and_acks, fanout, oversize, http_tricks, slow_headers, fuzz)}


def run(base: str, seconds: float, marker: str, user: str, names: list[str]) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds

    def guarded(attack: Callable) -> None:
        try:
            if attack is rooms_and_acks:
                attack(base, tally, deadline, marker, user)
            else:
                attack(base, tally, deadline, marker)
        except Exception as exc:  # an attack that broke is reported, the others go on
            tally.error(attack.__name__, exc)

    threads = [threading.Thread(target=guarded, args=(ATTACKS[name],), daemon=True)
               for name in names or ATTACKS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0) + 30)
    return tally


def main(argv: list[str]) -> int:
    base, seconds, marker, user, out, *selection = argv
    names = [name for name in ",".join(selection).split(",") if name]
    unknown = sorted(set(names) - set(ATTACKS))
    if unknown:
        sys.exit(f"unknown attacks {unknown}; known: {sorted(ATTACKS)}")
    tally = run(base, float(seconds), marker, user, names)
    with open(out, "w") as output:
        json.dump({"counts": dict(sorted(tally.counts.items())), "errors": tally.errors},
                  output, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
