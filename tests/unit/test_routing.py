"""Routing by room without RabbitMQ: the routing keys of common/routing.py, what QueueManager
publishes with them, and web/room_bindings.py's bindings kept on a fake channel
(tests/support/fakes.py's BindingBroker) that records every bind, unbind and confirming round
trip in order. The routing itself (which queue gets what) is RabbitMQ's:
tests/integration/test_room_routing.py proves it against the real stack."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from common import routing
from common.broker import BrokerLimits
from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event, session_id_prefix
from tests.support.fakes import BindingBroker, FakeBroker, ManagerOnFakeBroker
from tests.support.metrics import local_metric
from tests.support.waiting import wait_until
from web import room_bindings
from web.room_bindings import RoomBindings

OWN = session_id_prefix("10.0.0.7:5000")  # this replica's sids start with it
OTHER = session_id_prefix("10.0.0.8:5000")
OWN_SID = f"{OWN}aaaaaaaaaaaaaaaaaaaa"
FOREIGN_SID = f"{OTHER}bbbbbbbbbbbbbbbbbbbb"  # a recovered session keeps its sid
# What RabbitMQ takes as a routing key: at most 255 bytes; `#` and `*` are wildcards in a
# binding key, so a room key must hold neither; dots separate its words.
VALID_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
ROOM_KEY = re.compile(r"^room\.[0-9a-f]{20}$")
FAST_RETRIES = BrokerLimits(retry_max_seconds=0.05)


def emit(room=None, namespace=MAIN_NAMESPACE) -> dict:
    return {"method": "emit", "event": Event.MY_RESPONSE, "data": [{}], "namespace": namespace,
            "room": room, "skip_sid": None, "callback": None, "host_id": "h1"}


# -- routing keys --------------------------------------------------------------------------------

def test_an_emit_to_everyone_goes_to_every_replica():
    assert routing.routing_keys(emit()) == [routing.BROADCAST_KEY]
    assert routing.routing_keys({**emit(), "namespace": None}) == [routing.BROADCAST_KEY]


def test_an_emit_to_a_room_goes_to_its_key_only():
    keys = routing.routing_keys(emit("lobby"))
    assert keys == [routing.room_key(MAIN_NAMESPACE, "lobby")]
    assert ROOM_KEY.match(keys[0])
    # The namespace is part of the room: /chat's lobby is another room.
    assert routing.routing_keys(emit("lobby", CHAT_NAMESPACE)) != keys
    # python-socketio writes the main namespace as "/"; a message without one means the same.
    assert routing.room_key(None, "lobby") == routing.room_key("/", "lobby")


def test_an_emit_to_several_rooms_has_each_key_once_in_order():
    keys = routing.routing_keys(emit(["a", "b", "a", FOREIGN_SID]))
    assert keys == [routing.room_key("/", "a"), routing.room_key("/", "b"),
                    routing.room_key("/", FOREIGN_SID), routing.replica_key(OTHER)]
    assert routing.routing_keys(emit(["a"])) == [routing.room_key("/", "a")]


def test_an_emit_to_a_sid_goes_to_its_replica_and_to_wherever_it_was_recovered():
    # Its replica is bound to its own key for good; another replica that recovered the session
    # binds the sid's room key while it has it.
    assert routing.routing_keys(emit(OWN_SID)) == [routing.room_key("/", OWN_SID),
                                                   routing.replica_key(OWN)]
    assert routing.replica_key(OWN) == "replica.10_0_0_7_5000"


@pytest.mark.parametrize("method", ["disconnect", "enter_room", "leave_room"])
def test_what_acts_on_a_sid_goes_where_the_sid_is(method):
    message = {"method": method, "sid": FOREIGN_SID, "room": "lobby", "namespace": "/chat",
               "host_id": "h1"}
    assert routing.routing_keys(message) == [routing.room_key("/chat", FOREIGN_SID),
                                             routing.replica_key(OTHER)]


def test_closing_a_room_goes_to_its_members_replicas():
    message = {"method": "close_room", "room": "lobby", "namespace": "/", "host_id": "h1"}
    assert routing.routing_keys(message) == [routing.room_key("/", "lobby")]


def test_a_callback_goes_to_the_manager_that_asked():
    message = {"method": "callback", "host_id": "0123abcd", "sid": OWN_SID, "namespace": "/",
               "id": 1, "args": []}
    assert routing.routing_keys(message) == ["host.0123abcd"]


@pytest.mark.parametrize("message", [
    {"method": "a_method_of_a_newer_python_socketio", "host_id": "h1"},
    {"host_id": "h1"},
    {},
])
def test_a_method_it_does_not_know_goes_to_everyone_as_before(message):
    assert routing.routing_keys(message) == [routing.BROADCAST_KEY]


HOSTILE_ROOMS = [
    "x" * 100_000,
    "a.b.c",
    "#",
    "*",
    "lobby.#",
    "*.*",
    "room.0123456789abcdef0123",  # shaped like a key
    "",
    " ",
    "\x00",
    "ünïcødé 🎉 ルーム",
    "\ud800",  # a lone surrogate: what a JSON \ud800 escape decodes to
    "\udfff lone low",
    "10.0.0.7.5000.",  # a sid prefix with nothing after
    42,  # not a string: python-socketio takes any hashable
]


@pytest.mark.parametrize("room", HOSTILE_ROOMS, ids=lambda room: repr(room)[:30])
def test_any_room_name_is_a_valid_bounded_key(room):
    key = routing.room_key(MAIN_NAMESPACE, room)
    assert ROOM_KEY.match(key), key
    assert VALID_KEY.match(key) and len(key.encode()) <= 255
    assert key == routing.room_key(MAIN_NAMESPACE, room)  # the same on every replica
    assert routing.routing_keys(emit(room))[0] == key


def test_distinct_rooms_have_distinct_keys():
    keys = {routing.room_key(ns, room) for ns in ("/", "/chat")
            for room in HOSTILE_ROOMS + ["x" * 99_999, "\udc00", "a.b.d"]}
    assert len(keys) == 2 * (len(HOSTILE_ROOMS) + 3)


def test_a_replica_binds_the_rooms_it_has_members_of_but_not_its_own_sids():
    assert routing.bound_key("/", "lobby", OWN) == routing.room_key("/", "lobby")
    assert routing.bound_key("/", OWN_SID, OWN) is None  # its replica key covers it
    assert routing.bound_key("/", FOREIGN_SID, OWN) == routing.room_key("/", FOREIGN_SID)
    assert routing.bound_key("/", None, OWN) is None  # the namespace: the broadcast key
    # A process without a session prefix (a write-only emitter) has no own sids.
    assert routing.bound_key("/", OWN_SID, "") == routing.room_key("/", OWN_SID)
    # Whatever is bound is what an emit to that room is published with.
    for room in ("lobby", FOREIGN_SID):
        assert routing.bound_key("/", room, OWN) in routing.routing_keys(emit(room))


# -- what the manager publishes ------------------------------------------------------------------

@pytest.fixture
def broker():
    fake = FakeBroker()
    yield fake
    fake.close()


def test_the_manager_publishes_to_the_routed_exchange_with_the_other_keys_in_cc(broker):
    manager = ManagerOnFakeBroker(broker, limits=FAST_RETRIES, write_only=True)
    manager.emit(Event.MY_RESPONSE, {"n": 1}, namespace="/", room="lobby")
    manager.emit(Event.MY_RESPONSE, {"n": 2}, namespace="/", room=["a", "b", FOREIGN_SID])
    manager.emit(Event.MY_RESPONSE, {"n": 3}, namespace="/")
    broker.wait_published(3)
    bodies = [json.loads(body) for body in broker.published]
    assert [body["data"][0]["n"] for body in bodies] == [1, 2, 3]  # stock messages, unchanged
    first, several, everyone = broker.publish_options
    assert first["routing_key"] == routing.room_key("/", "lobby") and not first.get("headers")
    assert several["routing_key"] == routing.room_key("/", "a")
    more = [routing.room_key("/", "b"), routing.room_key("/", FOREIGN_SID),
            routing.replica_key(OTHER)]
    # CC routes them; a stream drops CC, so the recovery log reads them from the other header
    assert several["headers"] == {"CC": more, routing.ROUTING_KEYS_HEADER: more}
    assert everyone["routing_key"] == routing.BROADCAST_KEY
    exchange = manager.routed_exchange()
    assert (exchange.name, exchange.type, exchange.durable) == (
        "unit-channel.routed", "topic", True)


def test_the_listener_queue_stands_bound_to_everyone_its_replica_and_its_host():
    manager = ManagerOnFakeBroker(FakeBroker(), session_prefix=OWN)
    routed = {binding.routing_key for binding in manager.listener_queue().bindings
              if binding.exchange.name == "unit-channel.routed"}
    assert routed == {routing.BROADCAST_KEY, routing.replica_key(OWN),
                      routing.host_key(manager.host_id)}
    # The recovery log gets every routed message, and every stock emitter's.
    logged = {(b.exchange.name, b.routing_key) for b in manager.logged_queue("log").bindings}
    assert logged == {("unit-channel", ""), ("unit-channel.routed", "#")}


# -- the room bindings (web/room_bindings.py) on a fake channel ----------------------------------

class Clock:
    """The bindings' clock for their delays; the test moves it."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Replica:
    """A replica's manager (the real QueueManager) on a BindingBroker, its RoomBindings kept by
    their real greenlet (a thread here), and its rooms changed as web/upstream/install.py's hooks
    change them: the manager first, then the bindings."""

    def __init__(self, broker: BindingBroker, *, unbinds_per_second: int = 200):
        self.broker = broker
        self.manager = ManagerOnFakeBroker(broker, limits=FAST_RETRIES, session_prefix=OWN)
        self.clock = Clock()
        self.bindings = RoomBindings(self.manager, clock=self.clock,
                                     unbinds_per_second=unbinds_per_second)
        threading.Thread(target=self.bindings.run, daemon=True).start()
        wait_until(lambda: self.bindings.connected, timeout=5, what="the bindings connected")

    def listener_bound(self) -> None:
        self.manager._set_listener_bound(True)  # what its listener does once it consumes

    def join(self, sid: str, room, namespace: str = MAIN_NAMESPACE) -> None:
        self.manager.basic_enter_room(sid, namespace, room, eio_sid=f"eio-{sid}")
        self.bindings.room_changed(sid, namespace, room, f"eio-{sid}", True)

    def leave(self, sid: str, room, namespace: str = MAIN_NAMESPACE) -> None:
        self.manager.basic_leave_room(sid, namespace, room)
        self.bindings.room_changed(sid, namespace, room, f"eio-{sid}", False)

    def later(self, seconds: float) -> None:
        """The clock moves on, and the bindings' greenlet looks at it now rather than within
        its one-second wait."""
        self.clock.now += seconds
        with self.bindings.changed:
            self.bindings.changed.notify_all()


def key(room, namespace: str = MAIN_NAMESPACE) -> str:
    return routing.room_key(namespace, room)


@pytest.fixture
def binding_broker():
    fake = BindingBroker()
    yield fake
    fake.close()  # the bindings' thread parks at its next broker call


@pytest.fixture
def replica(binding_broker):
    replica = Replica(binding_broker)
    replica.listener_bound()
    return replica


def joined_in_thread(replica: Replica, sid: str, room) -> threading.Thread:
    joining = threading.Thread(target=replica.join, args=(sid, room), daemon=True)
    joining.start()
    return joining


def test_a_join_to_a_new_room_returns_once_the_broker_confirmed_its_binding(
        replica, binding_broker):
    waits_before = local_metric("broker_binding_wait_seconds_count")
    binding_broker.answering.clear()  # RabbitMQ has not answered yet
    joining = joined_in_thread(replica, "s1", "lobby")
    binding_broker.wait_for("bind", 1)
    joining.join(0.3)
    assert joining.is_alive(), "the join returned before its binding was confirmed"
    binding_broker.answering.set()
    joining.join(5)
    assert not joining.is_alive()
    assert binding_broker.operations == [("bind", key("lobby")),
                                         ("confirm", replica.manager.listener_queue_name)]
    assert local_metric("broker_binding_wait_seconds_count") == waits_before + 1
    assert replica.bindings.status() == {"connected": True, "room_bindings": 1,
                                         "binds_waiting": 0, "idle": 0}


def test_a_join_to_a_bound_room_waits_for_nothing(replica, binding_broker):
    replica.join("s1", "lobby")
    binding_broker.answering.clear()  # a round trip now would hang the join below
    started = time.monotonic()
    replica.join("s2", "lobby")
    assert time.monotonic() - started < 0.5
    assert binding_broker.keys("bind") == [key("lobby")]
    binding_broker.answering.set()


def test_joins_queued_meanwhile_are_bound_together_and_confirmed_once(replica, binding_broker):
    binding_broker.answering.clear()
    first = joined_in_thread(replica, "s1", "room-0")
    binding_broker.wait_for("bind", 1)  # its round trip is under way
    others = [joined_in_thread(replica, f"s{n}", f"room-{n}") for n in range(1, 6)]
    wait_until(lambda: replica.bindings.status()["binds_waiting"] == 5, timeout=5,
               what="the other joins queued")
    binding_broker.answering.set()
    for joining in [first, *others]:
        joining.join(5)
        assert not joining.is_alive()
    assert sorted(binding_broker.keys("bind")) == sorted(key(f"room-{n}") for n in range(6))
    assert len(binding_broker.keys("confirm")) == 2  # one round trip each batch


def test_own_sids_and_namespaces_need_no_binding_a_foreign_sid_does(replica, binding_broker):
    replica.join(OWN_SID, None)  # a connection enters its namespace's room...
    replica.join(OWN_SID, OWN_SID)  # ...and its own sid's
    assert binding_broker.operations == []
    # A session recovered here from another replica keeps its sid: it is bound like a room.
    replica.join(FOREIGN_SID, FOREIGN_SID)
    assert binding_broker.keys("bind") == [key(FOREIGN_SID)]


def test_a_room_is_unbound_only_after_the_delay_and_rejoining_within_it_costs_nothing(
        replica, binding_broker):
    replica.join("s1", "lobby")
    replica.join("s2", "lobby")
    replica.leave("s1", "lobby")
    assert replica.bindings.status()["idle"] == 0  # a member is left
    replica.leave("s2", "lobby")
    assert replica.bindings.status()["idle"] == 1

    replica.later(room_bindings.UNBIND_AFTER_SECONDS - 1)
    replica.join("s3", "lobby")  # back within the delay: still bound, nothing to do
    replica.leave("s3", "lobby")
    replica.later(room_bindings.UNBIND_AFTER_SECONDS - 1)
    time.sleep(0.2)
    assert binding_broker.keys("unbind") == []
    assert binding_broker.keys("bind") == [key("lobby")]

    replica.later(1)  # the delay has now passed since the last member left
    binding_broker.wait_for("unbind", 1)
    assert binding_broker.keys("unbind") == [key("lobby")]
    wait_until(lambda: replica.bindings.status()["room_bindings"] == 0, timeout=5,
               what="the gauge of bound rooms back to 0")
    assert local_metric("broker_room_bindings") == 0

    # A join after the unbind waits for a new binding.
    replica.join("s4", "lobby")
    assert binding_broker.keys("bind") == [key("lobby"), key("lobby")]


def test_at_most_unbinds_per_second_are_sent_per_sweep(binding_broker):
    replica = Replica(binding_broker, unbinds_per_second=2)
    replica.listener_bound()
    rooms = [f"room-{n}" for n in range(5)]
    for room in rooms:
        replica.join("s1", room)
        replica.leave("s1", room)

    replica.later(room_bindings.UNBIND_AFTER_SECONDS)
    binding_broker.wait_for("unbind", 2)
    time.sleep(1.3)  # the greenlet wakes at least once more on its own: the clock did not move
    assert len(binding_broker.keys("unbind")) == 2
    replica.later(1)
    binding_broker.wait_for("unbind", 4)
    replica.later(1)
    binding_broker.wait_for("unbind", 5)
    assert sorted(binding_broker.keys("unbind")) == sorted(map(key, rooms))


def test_every_binding_is_made_again_when_the_listener_queue_is_declared_again(
        replica, binding_broker):
    for room in ("a", "b", FOREIGN_SID):
        replica.join(FOREIGN_SID if room == FOREIGN_SID else "s1", room)
    assert replica.manager.on_listener_bound == replica.bindings.bind_again
    replica.manager._set_listener_bound(False)  # the listener lost its connection...
    replica.listener_bound()  # ...and declared its queue again: it may be a new one
    binding_broker.wait_for("bind", 6)
    assert sorted(binding_broker.keys("bind")[3:]) == sorted([key("a"), key("b"),
                                                             key(FOREIGN_SID)])
    wait_until(lambda: replica.bindings.status()["room_bindings"] == 3, timeout=5,
               what="the three rooms bound again")


def test_while_the_listener_queue_is_not_bound_joins_do_not_wait_and_are_bound_later(
        binding_broker):
    """Nothing reaches the replica while its listener is away: waiting would only hold the
    join (every signed-in client's connect, for its user's room)."""
    replica = Replica(binding_broker)  # its listener has not declared the queue yet
    started = time.monotonic()
    replica.join("s1", "lobby")
    assert time.monotonic() - started < room_bindings.BIND_WAIT_SECONDS / 2
    assert binding_broker.operations == []  # no bind to a queue that may not exist
    replica.listener_bound()
    binding_broker.wait_for("confirm", 1)
    assert binding_broker.keys("bind") == [key("lobby")]


def test_a_bind_lost_with_its_connection_is_made_on_the_next_one(replica, binding_broker):
    binding_broker.failing.set()
    replica.join("s1", "lobby")  # waits through the reconnect (FAST_RETRIES)
    assert binding_broker.keys("bind") == [key("lobby")]
    assert len(binding_broker.connections) == 2
    assert replica.bindings.status()["room_bindings"] == 1


def test_a_join_after_its_room_was_picked_for_unbinding_is_bound_again_after_the_unbind(
        replica, binding_broker):
    replica.join("s1", "lobby")
    replica.leave("s1", "lobby")
    binding_broker.answering.clear()
    replica.later(room_bindings.UNBIND_AFTER_SECONDS)
    binding_broker.wait_for("unbind", 1)  # the unbind is under way, not yet confirmed
    joining = joined_in_thread(replica, "s2", "lobby")
    joining.join(0.3)
    assert joining.is_alive(), "the join did not wait for the room to be bound again"
    binding_broker.answering.set()
    joining.join(5)
    assert not joining.is_alive()
    assert [op for op in binding_broker.operations if op[0] != "confirm"] == [
        ("bind", key("lobby")), ("unbind", key("lobby")), ("bind", key("lobby"))]


def test_a_room_left_while_its_binding_is_under_way_is_still_unbound_later(
        replica, binding_broker):
    """A client served by the recovery log does not wait for its binding, and any client may
    leave (or drop) while its join waits: the room's last member is then gone before the bind
    is confirmed, and the binding must not stay for good."""
    replica.bindings.waits_for = lambda eio_sid, namespace: False
    binding_broker.answering.clear()
    replica.join("s1", "lobby")
    binding_broker.wait_for("bind", 1)  # sent, not yet confirmed
    replica.leave("s1", "lobby")
    binding_broker.answering.set()
    binding_broker.wait_for("confirm", 1)
    replica.later(room_bindings.UNBIND_AFTER_SECONDS)
    binding_broker.wait_for("unbind", 1)
    assert binding_broker.keys("unbind") == [key("lobby")]
