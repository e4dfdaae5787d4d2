"""Which replicas a message between replicas is for: the routing keys of the routed exchange.

Every message the stack publishes for the replicas (python-socketio's emit, disconnect, room and
callback messages) goes to one topic exchange, `<channel>.routed`, with the keys of its
recipients; each replica's listener queue is bound there with the keys it has recipients for
(docs/design.md, "Routing by room"):

* `all`: an emit to a whole namespace. Every replica is bound to it.
* `replica.<address>`: a connection of that replica. A session id starts with its replica's
  address (common/contract.py's `session_id_prefix`), so an emit to a sid needs no binding per
  connection.
* `room.<digest>`: a room of a namespace, or the sid of a connection that moved to another
  replica (a recovered session keeps its sid). A replica is bound to it while it has a member
  (web/room_bindings.py). The digest keeps any room name a valid, bounded routing key.
* `host.<host id>`: the answer to a server-to-client call, for the manager that made it.

A message for several rooms carries the other keys in RabbitMQ's `CC` header (sender-selected
distribution): one publish, and each queue gets it once however many of its keys match.
"""

from __future__ import annotations

import hashlib

from common.contract import session_replica

BROADCAST_KEY = "all"
NOBODY_KEY = "nobody"  # bound by no replica
# The keys after the first, as RabbitMQ's `CC` header routes them and as the recovery log reads
# them: a stream drops `CC` (it is routing information), so they travel twice.
ROUTING_KEYS_HEADER = "x-more-routing-keys"
EVERY_KEY = "#"  # what the recovery log is bound with: it logs every routed message


def routed_exchange_name(channel: str) -> str:
    return f"{channel}.routed"


def room_key(namespace: str | None, room: object) -> str:
    """The key of a room of a namespace; any room name, hostile ones too (a bounded digest)."""
    digest = hashlib.blake2b(f"{namespace or '/'}\0{room}".encode(errors="surrogatepass"),
                             digest_size=10)
    return f"room.{digest.hexdigest()}"


def replica_key(session_prefix: str) -> str:
    """The key of the connections of a replica, from its session id prefix ("10.0.0.7.5000.")."""
    return f"replica.{session_prefix.strip('.').replace('.', '_')}"


def host_key(host_id: str) -> str:
    return f"host.{host_id}"


def keys_of_room(namespace: str | None, room: object) -> list[str]:
    """Where an emit to `room` goes: its room key and, for a sid, its replica's key."""
    keys = [room_key(namespace, room)]
    replica = session_replica(room) if isinstance(room, str) else None
    if replica is not None:
        keys.append(replica_key(replica))
    return keys


def routing_keys(message: dict) -> list[str]:
    """The keys of a manager message (python-socketio's pub/sub methods), the first one first."""
    method, namespace = message.get("method"), message.get("namespace")
    if method == "callback":
        return [host_key(str(message.get("host_id")))]
    if method in ("disconnect", "enter_room", "leave_room"):
        return keys_of_room(namespace, message.get("sid"))
    if method in ("emit", "close_room"):
        room = message.get("room")
        if room is None:
            return [BROADCAST_KEY]
        rooms = room if isinstance(room, list) else [room]
        keys = dict.fromkeys(key for r in rooms for key in keys_of_room(namespace, r))
        return list(keys) or [NOBODY_KEY]  # an empty list of rooms: nobody (the log keeps it)
    return [BROADCAST_KEY]  # a method of a newer python-socketio: everyone, as before


def bound_key(namespace: str, room: object, own_prefix: str) -> str | None:
    """The key a replica binds while it has a member of `room`; None: its standing bindings
    cover it (a whole namespace, or a sid of its own)."""
    if room is None:
        return None
    if own_prefix and isinstance(room, str) and session_replica(room) == own_prefix:
        return None
    return room_key(namespace, room)
