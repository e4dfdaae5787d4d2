"""The registry of hooks (web/upstream/registry.py, install.py): what features register is
dispatched whatever the order of registering and installing, each record reaches the taker of its
key, and the broker manager hands records to the registry (the real listener: tests/integration)."""

from __future__ import annotations

import logging

import pytest
import socketio

from common.broker import RECORD_METHOD, QueueManager
from web.upstream import ReplicaHooks, hooks_of, install


def bare_server() -> socketio.Server:
    server = socketio.Server(async_mode="threading")
    server.register_namespace(socketio.Namespace("/"))
    return server


@pytest.mark.parametrize("install_first", [True, False])
def test_room_listeners_hear_every_change_whatever_the_order(install_first):
    server, hooks, heard = bare_server(), ReplicaHooks(), []
    if install_first:
        install(server, hooks)
    hooks.on_room_change(lambda *change: heard.append(change))
    if not install_first:
        install(server, hooks)

    manager = server.manager
    manager.basic_enter_room("sid-1", "/", "lobby", eio_sid="eio-1")
    manager.basic_leave_room("sid-1", "/", "lobby")
    manager.basic_leave_room("sid-1", "/", "never-joined")  # no change, not reported

    assert heard == [("sid-1", "/", "lobby", "eio-1", True),
                     ("sid-1", "/", "lobby", "eio-1", False)]
    assert hooks_of(server) is hooks and hooks_of(server.eio) is hooks
    with pytest.raises(RuntimeError, match="already"):
        install(server, ReplicaHooks())  # would wrap every method a second time


def test_session_ids_carry_the_prefix_unless_recovery_gives_one_back():
    server = bare_server()
    hooks = ReplicaHooks(session_id_prefix="r7.")
    install(server, hooks)
    assert server.eio.generate_id().startswith("r7.")

    class GivesBack:
        def forced_sid(self):
            return "the-old-sid"

    hooks.recovery = GivesBack()
    assert server.eio.generate_id() == "the-old-sid"


def test_records_reach_the_taker_of_their_key_and_a_key_has_one_taker(caplog):
    hooks, taken = ReplicaHooks(), []
    hooks.take_records("presence", lambda key, body, sender: taken.append((key, body, sender)))
    with pytest.raises(ValueError, match="already"):
        hooks.take_records("presence", lambda *_: None)

    hooks.take_record("presence", {"seq": 1}, "replica-b")
    with caplog.at_level(logging.WARNING):
        hooks.take_record("nobody-takes-this", {}, "replica-b")

    assert taken == [("presence", {"seq": 1}, "replica-b")]
    assert "no taker" in caplog.text


def taken_by(manager: QueueManager, record: dict) -> list:
    """What the manager's listener hands the registry of one record from the broker."""
    taken = []
    manager.on_record = lambda key, body, sender: taken.append((key, body, sender))
    manager._take_record(record)
    return taken


def test_the_manager_skips_its_own_records_unless_asked_and_drops_malformed_ones(caplog):
    manager = QueueManager("memory://", "unit-channel")
    own = {"method": RECORD_METHOD, "key": "presence", "body": {}, "host_id": manager.host_id}
    other = {**own, "host_id": "another-replica"}
    control = {**own, "key": "replica_control", "include_sender": True}

    assert taken_by(manager, own) == []
    assert taken_by(manager, other) == [("presence", {}, "another-replica")]
    assert taken_by(manager, control) == [("replica_control", {}, manager.host_id)]
    with caplog.at_level(logging.ERROR):
        assert taken_by(manager, {**other, "body": "not a dict"}) == []
    assert "malformed record" in caplog.text


def test_records_are_published_to_their_own_exchange_not_the_socketio_one():
    manager = QueueManager("memory://", "unit-channel")
    queue = manager.listener_queue()
    exchanges = {binding.exchange.name for binding in queue.bindings}
    assert exchanges == {"unit-channel", "unit-channel.replicas", "unit-channel.routed"}
    assert manager.records_exchange().type == "fanout"
    assert manager.fanout_exchange().durable is False  # as stock emitters declare it
