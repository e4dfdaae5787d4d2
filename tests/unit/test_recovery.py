"""Connection state recovery (web/recovery/): its decisions, and its hooks in a real
python-socketio server whose Engine.IO sends are recorded (no network, no broker)."""

from __future__ import annotations

import json
import threading

import pytest
import socketio

from common.broker import QueueManager
from common.routing import routing_keys
from web import upstream
from web.recovery import Recovery, clients
from web.recovery.clients import PAUSE_AFTER_SECONDS
from web.recovery.decisions import (
    CONNECTED,
    ENDED,
    GONE,
    addressed_to,
    left_at,
    namespace_of,
    parse_offset,
    replayable,
    supersedes,
)


def emit(room=None, *, namespace="/", skip_sid=None, callback=None, event="my_response", data=None):
    return {"method": "emit", "event": event, "data": [data or {"data": "x"}], "binary": False,
            "namespace": namespace, "room": room, "skip_sid": skip_sid, "callback": callback,
            "host_id": "h"}


def test_what_is_replayed():
    assert replayable(emit())
    assert not replayable(emit(callback=["sid", "/", 1]))  # an ack cannot be restored elsewhere
    assert not replayable({"method": "enter_room", "sid": "s", "room": "r"})
    assert not replayable(None)


@pytest.mark.parametrize("message, expected", [
    (emit(), True),  # everyone
    (emit(room="sid-1"), True),  # itself
    (emit(room="r1"), True),
    (emit(room=["x", "r1"]), True),
    (emit(room="r2"), False),
    (emit(namespace="/chat"), False),
    (emit(skip_sid="sid-1"), False),
    (emit(room="r1", skip_sid=["other", "sid-1"]), False),
])
def test_addressed_to(message, expected):
    assert addressed_to(message, "sid-1", {"r1"}, "/") is expected


@pytest.mark.parametrize("encoded, namespace", [
    ('2["a",1]', "/"), ('2/chat,["a"]', "/chat"), ('51-/chat,["a",{"_placeholder":true}]', "/chat"),
    ('51-["a",{"_placeholder":true,"num":0}]', "/"), ('2/chat', "/chat"),
])
def test_namespace_of_an_encoded_packet(encoded, namespace):
    assert namespace_of(encoded) == namespace


def test_offsets_are_what_the_server_gave():
    assert parse_offset("42") == 42
    for bad in (None, 42, "", "-1", "4.2", "1" * 25, "abc"):
        assert parse_offset(bad) is None


def test_when_a_session_left():
    assert left_at({"state": GONE, "at": 10.0, "replica": "a"}, {"a": 50.0}) == 10.0
    # Still recorded as connected: its replica's last heartbeat (a killed replica stops them).
    assert left_at({"state": CONNECTED, "at": 10.0, "replica": "a"}, {"a": 50.0}) == 50.0
    assert left_at({"state": CONNECTED, "at": 10.0, "replica": "b"}, {"a": 50.0}) == 10.0


def test_a_late_record_of_an_older_connection_changes_nothing():
    assert supersedes({"generation": 2}, {"generation": 1})
    assert supersedes({"generation": 2}, None)
    assert not supersedes({"generation": 1, "state": GONE}, {"generation": 2})


# -- the hooks in a real python-socketio server --------------------------------------------------

class RecordingManager(socketio.Manager):
    """python-socketio's in-process manager with what Recovery uses of common.broker's."""

    channel = "test"
    host_id = "0123456789abcdef"
    records: list

    def publish_to_queue(self, queue_name, data):
        self.records.append(data)

    fanout_exchange = QueueManager.fanout_exchange
    routed_exchange = QueueManager.routed_exchange
    logged_queue = QueueManager.logged_queue

    def await_queue(self, queue, create=True):
        pass  # no publisher here: what is published is recorded at once


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def replica():
    manager = RecordingManager()
    manager.records = []
    server = socketio.Server(client_manager=manager, async_mode="threading")
    server.register_namespace(socketio.Namespace("/"))
    server.manager_initialized = True
    server.manager.initialize()
    sent: list[tuple[str, str]] = []  # (eio_sid, encoded Socket.IO packet)
    server.eio.send = lambda eio_sid, data: sent.append((eio_sid, data))
    server.eio.send_packet = lambda eio_sid, pkt: sent.append((eio_sid, pkt.data))
    clock = Clock()
    recovery = Recovery(server, manager, window_seconds=120, memory_events=100,
                        namespaces=("/",), replica_id="web-1", clock=clock)
    hooks = upstream.ReplicaHooks()
    hooks.use_recovery(recovery)
    upstream.install(server, hooks)
    recovery.logged(0, {"method": "recovery_mark"})
    return server, recovery, sent, clock


def connect(server, eio_sid, auth):
    server._handle_eio_connect(eio_sid, {})
    server._handle_connect(eio_sid, "/", auth)


def events_to(sent, eio_sid):
    return [json.loads(data[1:]) for sid, data in sent if sid == eio_sid and data[0] == "2"]


def test_a_client_that_asks_gets_a_pid_and_offsets_others_do_not(replica):
    server, recovery, sent, _ = replica
    connect(server, "e1", {"recover": True})
    connect(server, "e2", None)
    answer = next(json.loads(data[1:]) for sid, data in sent if sid == "e1" and data[0] == "0")
    assert answer["pid"] and answer["sid"]
    assert not any("pid" in data for sid, data in sent if sid == "e2")

    server.emit("my_response", {"n": 1})  # the fast path: only the client that did not ask
    recovery.logged(1, emit(data={"n": 1}))  # the log: only the one that asked, with its offset
    assert events_to(sent, "e1") == [["my_response", {"n": 1}, "1"]]
    assert events_to(sent, "e2") == [["my_response", {"n": 1}]]


def test_reconnecting_within_the_window_gets_sid_rooms_and_missed_events_once(replica):
    server, recovery, sent, clock = replica
    connect(server, "e1", {"recover": True})
    answer = next(json.loads(data[1:]) for sid, data in sent if sid == "e1" and data[0] == "0")
    sid, pid = answer["sid"], answer["pid"]
    server.enter_room(sid, "room-a", namespace="/")
    recovery.logged(1, emit(room="room-a", data={"n": 1}))
    server._handle_eio_disconnect("e1", server.reason.TRANSPORT_CLOSE)
    assert recovery.sessions[pid]["state"] == GONE
    assert set(recovery.sessions[pid]["rooms"]) == {"room-a", sid}  # in the manager's order

    recovery.logged(2, emit(room="room-a", data={"n": 2}))
    recovery.logged(3, emit(room="elsewhere", data={"n": 3}))
    recovery.logged(4, emit(data={"n": 4}))
    clock.now += 60
    connect(server, "e9", {"recover": True, "pid": pid, "offset": "1"})
    answer = next(json.loads(data[1:]) for s, data in sent if s == "e9" and data[0] == "0")
    assert answer == {"sid": sid, "pid": pid}  # the client sees `recovered`
    assert events_to(sent, "e9") == [["my_response", {"n": 2}, "2"],
                                     ["my_response", {"n": 4}, "4"]]
    assert "room-a" in server.rooms(sid, namespace="/")
    recovery.logged(5, emit(room="room-a", data={"n": 5}))
    assert events_to(sent, "e9")[-1] == ["my_response", {"n": 5}, "5"]


def test_past_the_window_or_an_unknown_pid_is_a_new_session(replica):
    server, recovery, sent, clock = replica
    connect(server, "e1", {"recover": True})
    answer = next(json.loads(data[1:]) for sid, data in sent if sid == "e1" and data[0] == "0")
    server._handle_eio_disconnect("e1", server.reason.TRANSPORT_CLOSE)
    clock.now += 121
    connect(server, "e2", {"recover": True, "pid": answer["pid"], "offset": "0"})
    connect(server, "e3", {"recover": True, "pid": "made-up", "offset": "0"})
    for eio_sid in ("e2", "e3"):
        new = next(json.loads(data[1:]) for s, data in sent if s == eio_sid and data[0] == "0")
        assert new["pid"] != answer["pid"] and new["sid"] != answer["sid"]


def test_leaving_on_purpose_is_not_recoverable(replica):
    server, recovery, sent, _ = replica
    connect(server, "e1", {"recover": True})
    answer = next(json.loads(data[1:]) for sid, data in sent if sid == "e1" and data[0] == "0")
    server._handle_eio_disconnect("e1", server.reason.CLIENT_DISCONNECT)
    assert answer["pid"] not in recovery.sessions
    assert recovery.manager.records[-1]["state"] == ENDED


def test_an_emit_to_a_room_just_before_leaving_it_still_arrives(replica):
    """Room changes reach the log greenlet in log order, after the emits published before them
    (the demo's close_room: "Room ... is closing", then everyone leaves)."""
    server, recovery, sent, _ = replica
    connect(server, "e1", {"recover": True})
    sid = next(json.loads(data[1:]) for s, data in sent if s == "e1" and data[0] == "0")["sid"]
    server.enter_room(sid, "room-a", namespace="/")
    joined = recovery.manager.records[-1]
    assert joined["method"] == "recovery_rooms" and "room-a" in joined["rooms"]
    recovery.logged(1, joined)
    server.leave_room(sid, "room-a", namespace="/")  # applied here at once...
    left = recovery.manager.records[-1]
    recovery.logged(2, emit(room="room-a", data={"n": "closing"}))  # ...published before it
    recovery.logged(3, left)
    recovery.logged(4, emit(room="room-a", data={"n": "after"}))
    assert events_to(sent, "e1") == [["my_response", {"n": "closing"}, "2"]]


def test_memory_keeps_recent_events_within_a_count_and_a_byte_budget(replica):
    server, _, _, _ = replica
    recovery = Recovery(server, server.manager, window_seconds=120, memory_events=5,
                        memory_bytes=1_000, namespaces=("/",), replica_id="web-2")
    recovery.logged(10, {"method": "recovery_mark"})

    for offset in range(11, 19):  # 8 small events: the count decides
        recovery.logged(offset, emit(data="x"), size=50)
    assert [offset for offset, _ in recovery.memory] == [14, 15, 16, 17, 18]
    assert recovery.memory_from == 13 and recovery.memory_bytes == 250

    recovery.logged(19, emit(data="big"), size=900)  # the bytes decide
    assert [offset for offset, _ in recovery.memory] == [17, 18, 19]
    assert recovery.memory_from == 16 and recovery.memory_bytes == 1_000

    recovery.logged(20, emit(data="huge"), size=5_000)  # one entry is always kept
    assert [offset for offset, _ in recovery.memory] == [20] and recovery.memory_from == 19


def routed(recovery, offset, message):
    """An entry as the log reader gets it from the routed exchange: its keys, its JSON body."""
    recovery.log_entry(offset, routing_keys(message), json.dumps(message).encode())


def test_entries_for_nobody_here_are_kept_undecoded_and_replayed_to_who_needs_them(replica):
    server, recovery, sent, clock = replica
    connect(server, "e1", {"recover": True})
    sid = next(json.loads(data[1:]) for s, data in sent if s == "e1" and data[0] == "0")["sid"]
    server.enter_room(sid, "room-a", namespace="/")
    recovery.logged(1, recovery.manager.records[-1])  # the room change, as the log has it

    routed(recovery, 2, emit(room="room-b", data={"n": 2}))  # nobody here is in room-b
    routed(recovery, 3, emit(data={"n": 3}))  # everyone
    routed(recovery, 4, emit(room="room-a", data={"n": 4}))
    routed(recovery, 5, emit(room=sid, data={"n": 5}))  # its own sid
    assert events_to(sent, "e1") == [["my_response", {"n": 3}, "3"],
                                     ["my_response", {"n": 4}, "4"],
                                     ["my_response", {"n": 5}, "5"]]
    assert isinstance(dict(recovery.memory)[2], bytes)  # passed over, kept as it came

    # A session of another replica, in room-b, comes back here: room-b's entry is replayed.
    recovery.on_record({"kind": "session", "pid": "p2", "sid": "10.0.0.9.5000.other",
                        "namespace": "/", "rooms": ["room-b", "10.0.0.9.5000.other"],
                        "since": 1, "replica": "web-9.x", "state": GONE, "generation": 1,
                        "at": clock.now})
    connect(server, "e2", {"recover": True, "pid": "p2", "offset": "1"})
    assert events_to(sent, "e2") == [["my_response", {"n": 2}, "2"],
                                     ["my_response", {"n": 3}, "3"]]


def test_with_no_recovering_client_the_log_is_read_in_batches(replica):
    server, recovery, sent, _ = replica
    assert recovery.pace() > 0
    connect(server, "e1", {"recover": True})
    assert recovery.pace() == 0


def test_a_replica_with_no_use_for_the_log_stops_reading_it_and_starts_again_when_asked(replica):
    server, recovery, sent, _ = replica
    recovery.logged(1, emit(data={"n": 1}))
    recovery.live_at -= PAUSE_AFTER_SECONDS + 1
    assert recovery.may_pause()
    recovery.paused()
    assert recovery.position == -1 and not recovery.memory and not recovery.status()["reading_log"]

    # A client asks for recovery: it waits for the reader to start again at the log's end.
    threading.Timer(0.05, lambda: recovery.logged(7, {"method": "recovery_mark"})).start()
    connect(server, "e1", {"recover": True})
    answer = next(json.loads(data[1:]) for s, data in sent if s == "e1" and data[0] == "0")
    assert answer["pid"] and recovery.position == 7 and recovery.memory_from == 6
    assert not recovery.may_pause()  # a client is here


def test_a_client_that_asks_while_the_log_cannot_be_read_is_closed_to_try_again(
        replica, monkeypatch):
    """A broker outage while the log was paused: the client is not handed a session without
    recovery (the official client would keep it); its session is closed, and its next try, once
    the log is read again, is counted from its first."""
    server, recovery, sent, clock = replica
    monkeypatch.setattr(clients, "START_SECONDS", 0.05)
    recovery.on_record({"kind": "session", "pid": "p1", "sid": "10.0.0.9.5000.x",
                        "namespace": "/", "rooms": ["10.0.0.9.5000.x"], "since": 0,
                        "replica": "web-9.x", "state": GONE, "generation": 1, "at": clock.now})
    recovery.paused()
    closed = []
    monkeypatch.setattr(server.eio, "disconnect", closed.append)
    connect(server, "e1", {"recover": True, "pid": "p1", "offset": "0"})
    assert closed == ["e1"] and not [s for s, data in sent if s == "e1"]

    clock.now += recovery.window + 1  # the broker took longer than the window to come back
    recovery.logged(1, {"method": "recovery_mark"})
    connect(server, "e2", {"recover": True, "pid": "p1", "offset": "0"})
    answer = next(json.loads(data[1:]) for s, data in sent if s == "e2" and data[0] == "0")
    assert answer == {"sid": "10.0.0.9.5000.x", "pid": "p1"}
