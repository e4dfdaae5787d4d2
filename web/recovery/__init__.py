"""Connection state recovery across replicas: Socket.IO 4.6+'s, on the wire.

A client that asks for it (CONNECT auth `{"recover": true}`, which the official client keeps
sending on every reconnect) gets a private session id, `pid`, in the CONNECT answer, and every
event it is sent carries the event's offset in the recovery log as its last argument. When its
transport is lost (its replica died or drained, its network dropped), the official client
reconnects with `{pid, offset}` in its CONNECT auth. Within RECOVERY_WINDOW_SECONDS, on any
replica, it gets back its sid and its rooms, then every event sent meanwhile to it, its rooms or
everyone, in order and once, then the live ones; its `socket.recovered` is true. Otherwise it is a
new session (a new pid: `recovered` false).

Where things live (docs/design.md, "Connection state recovery"):

* the log: a RabbitMQ stream bound to the fan-out exchange, so every emit of every replica, of
  the worker and of any stock emitter is appended in one order; its offsets are the ones clients
  see. Each replica reads it from one greenlet (`run`) and delivers to its recovering-capable
  clients from there, in log order, with the offset appended. Everyone else is served by the fast
  path exactly as before; the two never both write the same event to one client.
* the sessions: a second stream of small records (pid, sid, namespace, rooms, replica, state),
  written on connect, room change and disconnect, refreshed every half window, and the replicas'
  heartbeats; every replica reads it whole and keeps the index in memory. A session whose replica
  stopped sending heartbeats (SIGKILL) counts as disconnected at its last one.
* recent events: the last RECOVERY_MEMORY_EVENTS log entries in memory, so most recoveries read
  nothing back from the broker.

The library hooks (the CONNECT answer, the fast path's skip, the forced sid, room and disconnect
bookkeeping) are installed by web/upstream/install.py; this package holds the rest:

* web/recovery/clients.py: `Recovery`, the handshake and the delivery to this replica's clients;
* web/recovery/streams.py: reading the two streams, and reading the log back;
* web/recovery/decisions.py: the pure decisions both use.
"""

from web.recovery.clients import Recovery

__all__ = ["Recovery"]
