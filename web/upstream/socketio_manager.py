"""python-socketio's client manager: the calls a server makes to a client (server-to-client
events with a callback), bounded per connection.

web/upstream/install.py installs BoundedAcks on one server's manager; the room and disconnect
wrappers are there too, dispatching to web/upstream/registry.py.
"""

from __future__ import annotations

import time

from common.library_contract import Contract
from web.limits import PENDING_ACKS, ClientLimits

CONTRACT = Contract(
    read_against={"python-socketio": "5.18.1"},
    members={
        "socketio.base_manager.BaseManager._generate_ack_id": "(self, sid, callback)",
    },
    instance_attributes={
        # {sid: {0: the id counter, id: callback, ...}}
        "socketio.base_manager.BaseManager": ("callbacks",),
    },
)


class BoundedAcks:
    """Stands in for the client manager's `_generate_ack_id`: upstream keeps the callback of a
    server-to-client call (and whatever it holds) until the client answers, which a hostile
    client never does. Here a connection has at most MAX_PENDING_ACKS waiting, each for at most
    ACK_TIMEOUT_SECONDS; a late answer then finds nothing and is ignored (upstream's rule)."""

    def __init__(self, manager, limits: ClientLimits):
        self.manager = manager
        self.limits = limits
        self.generate = manager._generate_ack_id

    def __call__(self, sid: str, callback) -> int:
        ack_id = self.generate(sid, PendingAck(callback))
        pending = self.manager.callbacks[sid]  # {0: the id counter, id: callback, ...}, in order
        if len(pending) <= 2:
            return ack_id
        horizon = time.monotonic() - self.limits.ack_timeout
        waiting = [key for key in pending if key]
        expired = [key for key in waiting if pending[key].issued < horizon]
        excess = waiting[:max(0, len(waiting) - self.limits.max_pending_acks)]
        for key in set(expired) | set(excess):
            del pending[key]
        if excess:
            self.limits.offence(PENDING_ACKS, sid, f"{len(waiting)} calls unanswered; forgot the "
                                f"oldest {len(excess)}")
        return ack_id


class PendingAck:
    __slots__ = ("callback", "issued")

    def __init__(self, callback):
        self.callback = callback
        self.issued = time.monotonic()

    def __call__(self, *args):
        return self.callback(*args)

