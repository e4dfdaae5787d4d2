"""Routing by room (docs/design.md, "Routing by room") against the real stack: a private
RabbitMQ, 3 replicas behind nginx, the worker, real python-socketio clients.

What each replica's listener queue gets is read from its own /metrics (`broker_receives_total`,
at the replica's address) before and after a burst of events: a replica with a recipient gets
every event of the burst, one without gets only what it gets anyway, whatever the burst
(records between replicas and the worker's server_event: about 2 a second, measured; bounded
below at 5 a second). Which bindings a replica's queue has is read from RabbitMQ itself
(rabbitmqctl). The unit tier (tests/unit/test_routing.py) has the routing keys and the
bindings' bookkeeping; this proves that RabbitMQ routes what the stack publishes as designed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

import flask_socketio
import pytest
import requests

from common import routing
from common.broker import QueueManager, create_emitter
from common.contract import EMIT_BATCH_MAX, MAIN_NAMESPACE, Event
from common.settings import Settings, load_settings
from scripts.stack import Replica, Stack
from tests.support.clients import RecordingClient, RecoveringClient, on_replicas
from tests.support.metrics import read_metric
from tests.support.stack import (
    api_headers,
    listener_queue,
    restart_replica,
    routed_bindings,
)
from tests.support.waiting import wait_until
from web.room_bindings import UNBIND_AFTER_SECONDS

BURST = 200  # events per burst: far more than a replica receives meanwhile anyway
NOISE_PER_SECOND = 5  # what a replica's queue receives anyway: records, the worker's broadcast
NOISE_FLOOR = 10
REPLICAS = {"web-1", "web-2", "web-3"}


# -- helpers -----------------------------------------------------------------------------------

def stack_settings(stack: Stack) -> Settings:
    """The settings the stack's processes read (the test's environment and the stack's own)."""
    own = {name.lower(): value for name, value in stack.extra_env.items()
           if name.lower() in Settings.model_fields}
    return load_settings(**{**own, "amqp_url": stack.amqp_url})


@pytest.fixture(scope="module")
def emitter(stack) -> QueueManager:
    """The stack's own emitter (common.broker.create_emitter), as a backend process uses it."""
    manager = create_emitter(stack_settings(stack))
    manager.start_publisher()
    wait_until(lambda: manager.publisher_connected, timeout=10, what="the emitter connected")
    return manager


def replica_named(stack: Stack, replica_id: str) -> Replica:
    return next(replica for replica in stack.web if replica.replica_id == replica_id)


class BrokerReceives:
    """What each replica's listener queue receives from now on (its broker_receives_total)."""

    def __init__(self, stack: Stack, replicas: Iterable[Replica] | None = None):
        self.replicas = list(replicas if replicas is not None else stack.web)
        self.started = time.monotonic()
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        return {replica.replica_id: read_metric(replica.url, "broker_receives_total")
                for replica in self.replicas}

    def growth(self) -> dict[str, float]:
        after = self._read()
        return {name: after[name] - before for name, before in self.before.items()}

    def noise(self) -> float:
        """The most a replica's queue receives meanwhile without a recipient of the events."""
        allowed = NOISE_FLOOR + NOISE_PER_SECOND * (time.monotonic() - self.started)
        assert allowed < BURST / 2, (f"the burst took too long ({allowed:.0f} receives allowed "
                                     "anyway): the counters cannot tell routed from not")
        return allowed

    def assert_routed(self, growth: dict[str, float], to: set[str], events: int) -> None:
        noise = self.noise()
        for name, grown in growth.items():
            if name in to:
                assert grown >= events, f"{name} received {grown} of {events} events: {growth}"
            else:
                assert grown <= noise, (f"{name} has no recipient yet received {grown} messages "
                                        f"(at most {noise:.0f} expected anyway): {growth}")


def data_of(payload):
    """A my_response's data, whether it came alone or with a recovery offset after it."""
    payload = payload[0] if isinstance(payload, list) else payload
    return payload.get("data") if isinstance(payload, dict) else None


def texts_of(client: RecordingClient, marker: str) -> list[str]:
    return [data for data in map(data_of, client.events(Event.MY_RESPONSE))
            if isinstance(data, str) and data.startswith(marker)]


def offsets_of(client: RecordingClient, marker: str) -> list[int]:
    return [int(payload[1]) for payload in client.events(Event.MY_RESPONSE)
            if str(data_of(payload)).startswith(marker)]


def assert_got_once_in_order(client: RecordingClient, marker: str, texts: list[str],
                             timeout: float = 15) -> None:
    wait_until(lambda: len(texts_of(client, marker)) >= len(texts), timeout=timeout,
               what=f"{len(texts)} events marked {marker!r} ({len(texts_of(client, marker))} "
                    "so far)")
    time.sleep(0.3)  # anything sent twice would be here by now
    assert texts_of(client, marker) == texts


def join(client: RecordingClient, room: str) -> None:
    """Join with an ack: answered after the handler, so after its join_room returned."""
    client.sio.call(Event.JOIN, {"room": room}, timeout=10)


def api_emit(base_url: str, messages: list[dict]) -> None:
    for first in range(0, len(messages), EMIT_BATCH_MAX):
        answer = requests.post(f"{base_url}/api/emit", json=messages[first:first + EMIT_BATCH_MAX],
                               headers=api_headers(), timeout=10)
        assert answer.status_code == 202, answer.text


def emit_all(emitter: QueueManager, texts: list[str], room=None) -> None:
    for text in texts:
        emitter.emit(Event.MY_RESPONSE, {"data": text}, namespace=MAIN_NAMESPACE, room=room)
    assert emitter.flush(10), "the emitter did not publish its events"


def bound_keys(stack: Stack, replica: Replica) -> set[str]:
    queue = listener_queue(replica.url)
    exchange = routing.routed_exchange_name(stack_settings(stack).socketio_channel)
    return {key for name, key in routed_bindings(stack, exchange) if name == queue}


# -- a room's events reach the replicas with a member, and only them ---------------------------

@pytest.mark.parametrize("publisher", ["emitter", "api"])
def test_room_events_reach_only_the_replicas_that_have_a_member(stack, clients, unique, emitter,
                                                                publisher):
    placed = on_replicas(stack.url, clients, REPLICAS)
    room = f"routed-{unique}"
    members = [placed["web-1"], placed["web-2"]]
    for member in members:
        join(member, room)
    outsider = placed["web-3"]  # connected, not a member

    receives = BrokerReceives(stack)
    texts = [f"{unique} {n}" for n in range(BURST)]
    if publisher == "emitter":
        emit_all(emitter, texts, room=room)
    else:  # through the API of the replica without a member: it publishes and gets none back
        api_emit(replica_named(stack, "web-3").url, [
            {"event": Event.MY_RESPONSE, "data": {"data": text}, "to": {"room": room}}
            for text in texts])
    for member in members:
        assert_got_once_in_order(member, unique, texts)

    receives.assert_routed(receives.growth(), to={"web-1", "web-2"}, events=BURST)
    assert texts_of(outsider, unique) == []


# -- a join is acknowledged once its room's events reach the replica -------------------------

FRESH_ROOMS = 30


def test_an_event_published_right_after_a_join_is_acknowledged_reaches_the_member(
        stack, clients, unique, emitter):
    """Each room is new to the member's replica: its join waits for the binding. The event is
    published the moment the ack arrives, alternately from another process (the emitter) and
    from another replica (a client there sends it to the room)."""
    placed = on_replicas(stack.url, clients, {"web-1", "web-2"})
    member, sender = placed["web-1"], placed["web-2"]
    member_url = replica_named(stack, "web-1").url
    binds = read_metric(member_url, "broker_binding_operations_total", 'operation="bind"')
    waits = read_metric(member_url, "broker_binding_wait_seconds_count")

    texts = []
    for n in range(FRESH_ROOMS):
        room, text = f"fresh-{unique}-{n}", f"{unique} {n}"
        join(member, room)
        if n % 2:
            sender.sio.emit(Event.MY_ROOM_EVENT, {"room": room, "data": text})
        else:
            emitter.emit(Event.MY_RESPONSE, {"data": text}, namespace=MAIN_NAMESPACE, room=room)
        texts.append(text)

    # Each once; from two publishers, in no order between them.
    wait_until(lambda: len(texts_of(member, unique)) >= len(texts), timeout=15,
               what=f"an event in each of the {FRESH_ROOMS} rooms joined "
                    f"(got {sorted(texts_of(member, unique))})")
    time.sleep(0.3)
    assert sorted(texts_of(member, unique)) == sorted(texts)
    assert texts_of(sender, unique) == []
    assert read_metric(member_url, "broker_binding_operations_total",
                       'operation="bind"') >= binds + FRESH_ROOMS
    assert read_metric(member_url, "broker_binding_wait_seconds_count") >= waits + FRESH_ROOMS


# -- after the last member leaves --------------------------------------------------------------

def test_after_its_last_member_leaves_a_replica_gets_nothing_and_is_unbound_after_the_delay(
        stack, clients, unique, emitter):
    placed = on_replicas(stack.url, clients, {"web-1", "web-2"})
    leaver, stayer = placed["web-1"], placed["web-2"]
    left_replica = replica_named(stack, "web-1")
    room = f"left-{unique}"
    key = routing.room_key(MAIN_NAMESPACE, room)
    for client in (leaver, stayer):
        join(client, room)
    assert key in bound_keys(stack, left_replica)

    leaver.sio.call(Event.LEAVE, {"room": room}, timeout=10)
    left_at = time.monotonic()
    assert key in bound_keys(stack, left_replica), "unbound at once: a rejoin would pay for it"
    early = [f"{unique} early {n}" for n in range(20)]
    emit_all(emitter, early, room=room)  # while still bound: dropped there, no member
    assert_got_once_in_order(stayer, f"{unique} early", early)
    assert texts_of(leaver, unique) == []

    wait_until(lambda: key not in bound_keys(stack, left_replica),
               timeout=UNBIND_AFTER_SECONDS + 10, interval=0.5,
               what=f"{room} unbound from {left_replica.replica_id}'s queue")
    assert time.monotonic() - left_at >= UNBIND_AFTER_SECONDS - 1
    assert key in bound_keys(stack, replica_named(stack, "web-2"))  # it still has a member

    receives = BrokerReceives(stack, [left_replica, replica_named(stack, "web-2")])
    late = [f"{unique} late {n}" for n in range(BURST)]
    emit_all(emitter, late, room=room)
    assert_got_once_in_order(stayer, f"{unique} late", late)
    receives.assert_routed(receives.growth(), to={"web-2"}, events=BURST)
    assert texts_of(leaver, unique) == []


# -- the slow path: a stock Flask-SocketIO emitter ---------------------------------------------

def test_a_stock_flask_socketio_emitter_still_reaches_members_through_every_replica(
        stack, clients, unique):
    placed = on_replicas(stack.url, clients, REPLICAS)
    room = f"stock-{unique}"
    members = [placed["web-1"], placed["web-2"]]
    for member in members:
        join(member, room)
    stock = flask_socketio.SocketIO(message_queue=stack.amqp_url,
                                    channel=stack_settings(stack).socketio_channel)

    receives = BrokerReceives(stack)
    texts = [f"{unique} {n}" for n in range(BURST)]
    try:
        for text in texts:
            stock.emit(Event.MY_RESPONSE, {"data": text}, to=room, namespace=MAIN_NAMESPACE)
    finally:
        stock.server.manager.publisher_connection.release()
    for member in members:
        assert_got_once_in_order(member, unique, texts)
    # The channel's fan-out exchange: every replica receives and decodes each one.
    receives.assert_routed(receives.growth(), to=REPLICAS, events=BURST)
    assert texts_of(placed["web-3"], unique) == []


# -- an emit to one sid ------------------------------------------------------------------------

def test_an_emit_to_a_sid_reaches_that_client_and_only_its_replica_receives_it(
        stack, clients, unique, emitter):
    placed = on_replicas(stack.url, clients, REPLICAS)
    target, sender = placed["web-1"], placed["web-2"]
    sid = target.info()["sid"]

    receives = BrokerReceives(stack)
    from_emitter = [f"{unique} emitter {n}" for n in range(BURST)]
    emit_all(emitter, from_emitter, room=sid)
    # A direct message from a client on another replica (a sid room is one, web/events.py).
    from_client = [f"{unique} client {n}" for n in range(20)]
    for text in from_client:
        sender.sio.emit(Event.MY_ROOM_EVENT, {"room": sid, "data": text})
    assert_got_once_in_order(target, f"{unique} emitter", from_emitter)
    assert_got_once_in_order(target, f"{unique} client", from_client)

    receives.assert_routed(receives.growth(), to={"web-1"}, events=BURST + len(from_client))
    for other in ("web-2", "web-3"):
        assert texts_of(placed[other], unique) == []


# -- broadcasts --------------------------------------------------------------------------------

def test_a_broadcast_reaches_every_client_on_every_replica_once(stack, clients, unique, emitter):
    """Clients that asked for connection state recovery too: they are served from the recovery
    log, which passes over entries for none of its clients' rooms."""
    plain = on_replicas(stack.url, clients, REPLICAS)
    recovering = on_replicas(stack.url, clients, REPLICAS, auth={"recover": True})
    everyone = [*plain.values(), *recovering.values()]

    receives = BrokerReceives(stack)
    from_emitter = [f"{unique} emitter {n}" for n in range(BURST // 2)]
    emit_all(emitter, from_emitter)
    from_api = [f"{unique} api {n}" for n in range(BURST // 2)]
    api_emit(stack.url, [{"event": Event.MY_RESPONSE, "data": {"data": text}, "to": "all"}
                         for text in from_api])
    from_client = [f"{unique} client {n}" for n in range(10)]
    for text in from_client:
        plain["web-3"].sio.emit(Event.MY_BROADCAST_EVENT, {"data": text})

    for client in everyone:
        assert_got_once_in_order(client, f"{unique} emitter", from_emitter)
        assert_got_once_in_order(client, f"{unique} api", from_api)
        assert_got_once_in_order(client, f"{unique} client", from_client)
    receives.assert_routed(receives.growth(), to=REPLICAS,
                           events=len(from_emitter) + len(from_api) + len(from_client))
    for client in recovering.values():  # each with its offset in the log, increasing
        offsets = offsets_of(client, unique)
        assert offsets == sorted(set(offsets))
        # and the worker's periodic broadcast too (SERVER_EVENT_INTERVAL=2 in the test stack)
        client.wait_for(Event.SERVER_EVENT, timeout=10)


# -- connection state recovery moves a session to another replica ---------------------------



MISSED = 30
LIVE = BURST // 2


@pytest.mark.parametrize("cut", ["replica_killed", "transport_cut"])
def test_a_recovered_session_gets_what_it_missed_then_its_sid_and_rooms_live_on_its_new_replica(
        stack, clients, unique, emitter, cut):
    """A client that asked for recovery loses its replica (SIGKILL) or its transport, and comes
    back on another replica with its pid: it gets every event sent meanwhile to its room, its
    sid and everyone, once and in order; then the live ones. Its sid was made by the old
    replica, so events to it are published with the old replica's key: the new replica must
    bind the sid like a room, and a server-side join through the emitter, which goes where the
    sid is, must reach it there."""
    room, other_room = f"recovering-{unique}", f"joined-later-{unique}"
    client = RecoveringClient(stack.url).connect()
    clients.append(client)
    info = client.info()
    sid, old = info["sid"], replica_named(stack, info["replica"])
    new, control = (replica for replica in stack.web if replica is not old)
    join(client, room)
    # Served by the log, it is a member for the log once its room change is logged: its
    # replica logs it before the answer to the join, which then comes through the log.
    client.wait_for(Event.MY_RESPONSE, lambda payload: room in str(data_of(payload)))
    emit_all(emitter, [f"{unique} before"], room=room)  # an offset to come back with
    client.wait_for(Event.MY_RESPONSE, lambda payload: data_of(payload) == f"{unique} before")
    assert client.answer.get("pid") and client.offset

    killed = cut == "replica_killed"
    if killed:
        os.killpg(old.process.popen.pid, signal.SIGKILL)
    else:
        client.cut_transport()
    try:
        wait_until(lambda: not client.sio.connected, timeout=15, what="the client cut off")
        missed = []
        for n in range(MISSED):
            text = f"{unique} missed {n}"
            emitter.emit(Event.MY_RESPONSE, {"data": text}, namespace=MAIN_NAMESPACE,
                         room=(room, sid, None)[n % 3])
            missed.append(text)
        assert emitter.flush(10)

        back = client.resumed_at(new.url)  # straight to another replica, not through nginx
        clients.append(back)
        assert back.answer == {"sid": sid, "pid": client.answer["pid"]}, "not recovered"
        assert back.info()["replica"] == new.replica_id
        assert_got_once_in_order(back, f"{unique} missed", missed)
        missed_offsets = offsets_of(back, f"{unique} missed")
        assert missed_offsets == sorted(set(missed_offsets))
        assert missed_offsets[0] > int(client.offset)

        # Live: to its sid and its room. Only the new replica (and the old one, if it still
        # runs: the sid's replica key is its own) receives them; the third one none.
        assert routing.room_key(MAIN_NAMESPACE, sid) in bound_keys(stack, new)
        receives = BrokerReceives(stack, [new, control])
        live = [f"{unique} live {n}" for n in range(LIVE)]
        for n, text in enumerate(live):
            emitter.emit(Event.MY_RESPONSE, {"data": text}, namespace=MAIN_NAMESPACE,
                         room=sid if n % 2 else room)
        assert emitter.flush(10)
        assert_got_once_in_order(back, f"{unique} live", live)
        receives.assert_routed(receives.growth(), to={new.replica_id}, events=LIVE)

        # A server-side join of the sid (another process's) goes where the sid is: the new
        # replica gets it through the sid's binding, and the room's events follow.
        emitter.enter_room(sid, MAIN_NAMESPACE, other_room)
        probes = []

        def probe_arrived() -> bool:
            probes.append(f"{unique} probe {len(probes)}")
            emitter.emit(Event.MY_RESPONSE, {"data": probes[-1]}, namespace=MAIN_NAMESPACE,
                         room=other_room)
            time.sleep(0.2)
            return bool(texts_of(back, f"{unique} probe"))

        wait_until(probe_arrived, timeout=10, what=f"the sid joined to {other_room} on "
                                                   f"{new.replica_id}")
        after_join = [f"{unique} joined {n}" for n in range(20)]
        emit_all(emitter, after_join, room=other_room)
        assert_got_once_in_order(back, f"{unique} joined", after_join)
        offsets = offsets_of(back, unique)
        assert offsets == sorted(set(offsets)), "an event twice or out of log order"
    finally:
        if killed:
            restart_replica(stack, old, exit_timeout=15)
