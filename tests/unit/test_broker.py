"""The broker manager (common/broker.py) without a broker: the publisher and its outbox against a
fake connection, and the listener's handling of what arrives from the fan-out exchange.

The publisher runs in its real thread; only the connection it gets from `connect_to_broker()`
is fake.
"""

from __future__ import annotations

import json

import kombu
import pytest

from common.broker import BrokerLimits
from common.contract import MAIN_NAMESPACE, Event
from tests.support.fakes import FakeBroker, ManagerOnFakeBroker
from tests.support.metrics import local_metric
from tests.support.waiting import wait_until

FAST_RETRIES = BrokerLimits(retry_max_seconds=0.05)
OUTBOX_FULL = 'where="outbox_full"'
FANOUT = 'connection="fanout"'
UNDECODABLE = 'where="undecodable"'


@pytest.fixture
def broker():
    fake = FakeBroker()
    yield fake
    fake.close()


@pytest.fixture
def unreachable_broker():
    fake = FakeBroker(reachable=False)
    yield fake
    fake.close()


def manager_on(broker: FakeBroker, limits: BrokerLimits = FAST_RETRIES) -> ManagerOnFakeBroker:
    return ManagerOnFakeBroker(broker, limits=limits, write_only=True)


def emit_numbered(manager: ManagerOnFakeBroker, count: int) -> None:
    for number in range(count):
        manager.emit(Event.MY_RESPONSE, {"n": number}, namespace=MAIN_NAMESPACE)


def numbers(published: list[str]) -> list[int]:
    """The numbers of the emits whose messages the broker took, in the order it took them."""
    return [json.loads(body)["data"][0]["n"] for body in published]


# -- the publisher ---------------------------------------------------------------------------------

def test_messages_are_published_in_the_order_they_were_emitted(broker):
    manager = manager_on(broker)

    emit_numbered(manager, 200)

    assert numbers(broker.wait_published(200)) == list(range(200))
    assert manager.flush(timeout=5)
    assert manager.status()["outbox"] == 0


def test_published_message_is_what_a_stock_kombu_manager_reads(broker):
    manager = manager_on(broker)

    manager.emit(Event.NOTIFICATION, {"id": "n1"}, namespace=MAIN_NAMESPACE, room="user:alice")

    (body,) = broker.wait_published(1)
    message = json.loads(body)
    assert message["method"] == "emit" and message["event"] == Event.NOTIFICATION
    assert message["data"] == [{"id": "n1"}] and message["room"] == "user:alice"


@pytest.mark.parametrize("failing_attempt", [1, 3, 5])
def test_publish_failing_on_a_dropped_connection_reconnects_and_keeps_the_message(broker,
                                                                                failing_attempt):
    broker.fail_attempts = {failing_attempt}
    failures_before = local_metric("broker_publish_failures_total")
    reconnects_before = local_metric("broker_reconnects_total", 'connection="publisher"')
    manager = manager_on(broker)

    emit_numbered(manager, 5)

    assert numbers(broker.wait_published(5)) == [0, 1, 2, 3, 4]  # none lost, none reordered
    assert broker.attempts == 6  # the failed one was published again, once
    assert local_metric("broker_publish_failures_total") == failures_before + 1
    # Connected, lost, connected again; the dead connection was dropped, without a goodbye that
    # a frozen broker would not answer.
    assert local_metric("broker_reconnects_total",
                        'connection="publisher"') == reconnects_before + 2
    assert [(c.dropped, c.released) for c in broker.connections] == [(True, False), (False, False)]
    assert manager.flush(timeout=5)


def test_emits_during_an_outage_are_published_in_order_once_the_broker_is_back(
        unreachable_broker):
    manager = manager_on(unreachable_broker)

    emit_numbered(manager, 10)

    assert not manager.flush(timeout=0.3)  # emit() returned at once; nothing went out
    assert unreachable_broker.published == []
    assert not manager.publisher_connected
    unreachable_broker.reachable.set()
    assert numbers(unreachable_broker.wait_published(10)) == list(range(10))
    wait_until(lambda: manager.publisher_connected, timeout=5)


def test_a_resource_alarm_shows_in_status_and_the_gauge_until_it_clears(broker):
    manager = manager_on(broker)
    manager.start_publisher()
    wait_until(lambda: manager.publisher_connected, timeout=5)

    broker.block("low on memory")
    assert manager.status()["publisher_blocked"] and manager.publisher_blocked == "low on memory"
    assert local_metric("broker_publisher_blocked", FANOUT) == 1
    broker.unblock()
    assert not manager.status()["publisher_blocked"]
    assert local_metric("broker_publisher_blocked", FANOUT) == 0


@pytest.mark.parametrize("create", [True, False])
def test_a_publisher_declares_and_binds_its_queues_before_it_publishes(broker, create):
    """A restarted RabbitMQ: its fan-out exchange bound to nothing yet, its streams not started
    (NOT_FOUND) for a moment; what waited in the outbox must reach them all the same."""
    broker.queues_started.clear()
    manager = manager_on(broker)
    manager.await_queue(kombu.Queue("unit-channel.log", manager.fanout_exchange(), durable=True),
                        create=create)

    emit_numbered(manager, 3)

    assert not manager.flush(timeout=0.3)
    assert broker.published == [] and broker.bindings == []
    broker.queues_started.set()
    assert numbers(broker.wait_published(3)) == [0, 1, 2]
    assert broker.bindings == [("unit-channel.log", "unit-channel")]


def test_a_queue_nobody_made_is_not_waited_for_nor_made(broker):
    """The worker binds the recovery log only if the replicas made it (recovery on)."""
    broker.queues_started.clear()
    broker.missing_queues.add("unit-channel.log")
    manager = manager_on(broker)
    manager.await_queue(kombu.Queue("unit-channel.log", manager.fanout_exchange()), create=False)

    emit_numbered(manager, 1)

    assert numbers(broker.wait_published(1, timeout=1)) == [0]
    assert broker.bindings == []


def test_a_queue_that_never_starts_delays_publishing_only_so_long(broker):
    broker.queues_started.clear()
    manager = manager_on(broker, BrokerLimits(retry_max_seconds=0.05, queues_start_seconds=0.3))
    manager.await_queue(kombu.Queue("unit-channel.log", manager.fanout_exchange()))

    emit_numbered(manager, 1)

    assert numbers(broker.wait_published(1, timeout=5)) == [0]


def test_full_outbox_drops_new_messages_and_counts_them(unreachable_broker):
    lost_before = local_metric("broker_messages_lost_total", OUTBOX_FULL)
    manager = manager_on(unreachable_broker,
                         BrokerLimits(outbox_size=3, retry_max_seconds=0.05))

    emit_numbered(manager, 5)

    assert local_metric("broker_messages_lost_total", OUTBOX_FULL) == lost_before + 2
    assert manager.status()["outbox"] == 3
    unreachable_broker.reachable.set()
    assert numbers(unreachable_broker.wait_published(3)) == [0, 1, 2]  # the oldest are kept
    assert manager.flush(timeout=5)
    assert len(unreachable_broker.published) == 3


# -- the listener ----------------------------------------------------------------------------------

MANAGER_MESSAGE = {"method": "emit", "event": Event.MY_RESPONSE, "data": ["hi"], "namespace": "/"}


@pytest.mark.parametrize("payload", [
    pytest.param(json.dumps(MANAGER_MESSAGE), id="text"),
    pytest.param(json.dumps(MANAGER_MESSAGE).encode(), id="bytes"),
    pytest.param(MANAGER_MESSAGE, id="decoded-by-kombu"),
])
def test_listener_decodes_manager_messages(broker, payload):
    dropped_before = local_metric("broker_messages_lost_total", UNDECODABLE)

    assert manager_on(broker)._decode(payload) == MANAGER_MESSAGE
    assert local_metric("broker_messages_lost_total", UNDECODABLE) == dropped_before


@pytest.mark.parametrize("payload", [
    pytest.param("{not json", id="not-json"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param("[1, 2]", id="json-list"),
    pytest.param('{"event": "x"}', id="no-method"),
    pytest.param(42, id="number"),
    pytest.param(None, id="none"),
])
def test_listener_drops_and_counts_what_is_not_a_manager_message(broker, payload):
    dropped_before = local_metric("broker_messages_lost_total", UNDECODABLE)

    assert manager_on(broker)._decode(payload) is None
    assert local_metric("broker_messages_lost_total", UNDECODABLE) == dropped_before + 1


class UndecodableMessage:
    acked = False

    def ack(self) -> None:
        self.acked = True


def test_listener_acks_and_counts_a_message_kombu_cannot_decode(broker):
    dropped_before = local_metric("broker_messages_lost_total", UNDECODABLE)
    message = UndecodableMessage()

    manager_on(broker)._drop_undecodable(message, ValueError("bad content type"))

    assert message.acked  # acknowledged, so the broker does not hand it out again and again
    assert local_metric("broker_messages_lost_total", UNDECODABLE) == dropped_before + 1
