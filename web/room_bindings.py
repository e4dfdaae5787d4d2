"""The rooms this replica's listener queue is bound to: routing by room (common/routing.py).

While the replica has a member of a room, its queue is bound to the room's key on the routed
exchange, so an event to that room reaches it and events to other rooms do not. The bindings are
kept by one greenlet on a connection of its own (`run`):

* a join waits until its room is bound (`room_changed`), so that every event published to the
  room after the join is acknowledged reaches the member; joins to a room that is bound already,
  the common case, wait for nothing. Binds that queue up meanwhile go to the broker together, as
  one round trip;
* a room whose last member left stays bound for UNBIND_AFTER_SECONDS (a room left and joined
  again costs the broker nothing), then is unbound, at most UNBINDS_PER_SECOND a second: join
  and leave churn costs the broker a bounded number of binding operations. Events to it that
  arrive meanwhile find no member and are dropped by the manager, as before;
* when the listener's queue is declared again (a new connection; a new queue after an outage),
  every binding is made again.

A client served by the recovery log (web/recovery/) gets its events from the log, not from this
queue, so its joins do not wait (a recovery that restores its rooms must not yield).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from common import metrics, routing
from common.backoff import Backoff

log = logging.getLogger(__name__)

BIND_WAIT_SECONDS = 5.0  # the most a join waits for its binding (the broker is away)
UNBIND_AFTER_SECONDS = 10.0
UNBINDS_PER_SECOND = 200
BATCH = 500  # binds sent before one round trip confirms them
UNBINDS_PER_ROUND = 20  # unbinds (a round trip each) between two rounds of binds


class RoomBindings:
    """The room keys of one replica's listener queue (common/broker.py's QueueManager)."""

    def __init__(self, queue_manager, *, clock: Callable[[], float] = time.monotonic,
                 unbind_after: float = UNBIND_AFTER_SECONDS,
                 unbinds_per_second: int = UNBINDS_PER_SECOND):
        self.broker = queue_manager  # common/broker.py's QueueManager, this replica's
        self.clock = clock
        self.unbind_after = unbind_after
        self.unbinds_per_second = unbinds_per_second
        # Whether a member's join must wait for its room's binding (False: the recovery log
        # serves it); web/app.py sets it when recovery is on.
        self.waits_for: Callable[[str | None, str], bool] = lambda eio_sid, namespace: True
        self.bound: set[str] = set()  # keys bound on the broker
        self.to_bind: set[str] = set()
        self.idle_since: dict[str, float] = {}  # bound keys without a member here, since when
        self.changed = threading.Condition()
        self.connected = False
        queue_manager.on_listener_bound = self.bind_again

    # -- what the replica's rooms ask (a RoomListener of web/upstream/registry.py) --------------

    def room_changed(self, sid: str, namespace: str, room, eio_sid: str | None,
                     entered: bool) -> None:
        key = routing.bound_key(namespace, room, self.broker.session_prefix)
        if key is None:
            return
        if not entered:
            # The manager is the Socket.IO server's: {namespace: {room: {sid: eio_sid}}}.
            if not self.broker.rooms.get(namespace, {}).get(room):  # its last member left
                with self.changed:
                    # Bound, waiting, or being bound right now (neither yet): unbound later.
                    self.idle_since[key] = self.clock()
            return
        with self.changed:
            self.idle_since.pop(key, None)
            if key in self.bound:
                return
            self.to_bind.add(key)
            self.changed.notify_all()
        if self.waits_for(eio_sid, namespace):
            self._wait_bound(key, room)

    def _wait_bound(self, key: str, room) -> None:
        started = time.monotonic()
        deadline = started + BIND_WAIT_SECONDS
        with self.changed:
            while key not in self.bound:
                if not (self.connected and self.broker.listener_bound):
                    return  # nothing reaches the replica now: waiting would only hold the join
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("room %.50r is not bound yet after %.0fs (the broker is away?): "
                              "its events reach this replica once it is", room, BIND_WAIT_SECONDS)
                    return
                self.changed.wait(left)
        metrics.BINDING_WAITS.observe(time.monotonic() - started)

    def bind_again(self) -> None:
        """The listener's queue was declared again: it may be a new one, with none of them."""
        with self.changed:
            self.to_bind |= self.bound
            self.bound.clear()
            self.changed.notify_all()

    # -- the greenlet that talks to the broker --------------------------------------------------

    def run(self) -> None:
        """Keep the bindings for good (web/app.py starts it), on a connection of its own."""
        backoff = Backoff(most=self.broker.limits.retry_max_seconds)
        while True:
            try:
                with self.broker.broker_connection() as connection:
                    channel = connection.channel()
                    self.broker.routed_exchange()(channel).declare()
                    self.connected = True
                    backoff.reset()
                    self._serve(connection, channel)
            except Exception as exc:
                if self.connected:
                    log.error("room bindings lost their broker connection: %s", exc)
                self.connected = False
                backoff.wait()

    def _serve(self, connection, channel) -> None:
        next_sweep = next_heartbeat = 0.0
        unbinding: list[str] = []  # due, a few per round so that joins never wait for them all
        while True:
            with self.changed:
                if not (self.to_bind or unbinding) or not self.broker.listener_bound:
                    self.changed.wait(1.0)
                binds = set(list(self.to_bind)[:BATCH]) if self.broker.listener_bound else set()
                self.to_bind -= binds
            now = self.clock()
            if now >= next_sweep and self.broker.listener_bound:
                unbinding += self._due_unbinds(now)
                next_sweep = now + 1.0
            unbinds, unbinding = unbinding[:UNBINDS_PER_ROUND], unbinding[UNBINDS_PER_ROUND:]
            if binds or unbinds:
                self._apply(channel, binds, unbinds)
            if time.monotonic() >= next_heartbeat:  # read the broker's heartbeats, send ours
                self.broker.keep_alive(connection)
                next_heartbeat = time.monotonic() + 1.0

    def _due_unbinds(self, now: float) -> list[str]:
        with self.changed:
            due = [key for key, since in self.idle_since.items()
                   if now - since >= self.unbind_after][:self.unbinds_per_second]
            for key in due:
                del self.idle_since[key]
                # From here a join to it waits again: the unbind below may come first.
                self.bound.discard(key)
            return due

    def _apply(self, channel, binds: set[str], unbinds: list[str]) -> None:
        """The binds first (the joins wait for them), then the unbinds of keys nobody joined
        again meanwhile. A key joined again after this takes its bind to the next round, after
        its unbind: a channel's methods are handled in order."""
        queue, exchange = self.broker.listener_queue_name, self.broker.routed_exchange().name
        with self.changed:
            unbinds = [key for key in unbinds if key not in binds and key not in self.bound
                       and key not in self.to_bind]
        try:
            if binds:
                for key in binds:
                    channel.queue_bind(queue=queue, exchange=exchange, routing_key=key,
                                       nowait=True)
                # Answered once every bind above is done: a channel's methods are handled in order.
                channel.queue_declare(queue=queue, passive=True)
            with self.changed:
                if queue == self.broker.listener_queue_name:
                    self.bound |= binds
                else:  # the listener moved to a new queue meanwhile: bind them there
                    self.to_bind |= binds
                metrics.ROOM_BINDINGS.set(len(self.bound))
                self.changed.notify_all()
            metrics.BINDING_OPERATIONS.labels("bind").inc(len(binds))
            binds = set()
            for key in unbinds:  # (AMQP's unbind has no no-wait: one round trip each)
                channel.queue_unbind(queue=queue, exchange=exchange, routing_key=key)
            metrics.BINDING_OPERATIONS.labels("unbind").inc(len(unbinds))
        except BaseException:
            with self.changed:  # all tried again on the next connection
                self.to_bind |= binds
                for key in unbinds:
                    if key not in self.to_bind:
                        self.idle_since.setdefault(key, 0.0)
            raise

    def status(self) -> dict:
        return {"connected": self.connected, "room_bindings": len(self.bound),
                "binds_waiting": len(self.to_bind), "idle": len(self.idle_since)}
