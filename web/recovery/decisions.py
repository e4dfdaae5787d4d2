"""Connection state recovery's decisions, without I/O: which emits are replayed, to whom, when a
session left and which of its records counts; the session states, and why a recovery is refused.
"""

from __future__ import annotations

CONNECTED, GONE, ENDED = "connected", "gone", "ended"
ROOMS = "recovery_rooms"  # a log entry: a client's rooms from here on


class LogNotReadable(Exception):
    """A CONNECT that asked for recovery while the log could not be read (the broker is away):
    its session was closed, so that the client tries again with its pid; nothing more is done
    with it."""


class RecoveryUnavailable(Exception):
    """Why a client that came back with a pid gets a new session (logged once): its session is
    unknown or too old, or the log no longer holds what it missed (retention, a failed read)."""


def replayable(message: dict) -> bool:
    """Events that get an offset: emits without a callback (an ack cannot be restored elsewhere,
    as in the reference server)."""
    return (isinstance(message, dict) and message.get("method") == "emit"
            and message.get("callback") is None and isinstance(message.get("event"), str))


def addressed_to(message: dict, sid: str, rooms, namespace: str) -> bool:
    """Whether an emit of the log reaches a client with this sid and rooms (the sid is a room)."""
    if (message.get("namespace") or "/") != namespace:
        return False
    skip = message.get("skip_sid")
    if skip == sid or (isinstance(skip, list) and sid in skip):
        return False
    room = message.get("room")
    if room is None:
        return True
    wanted = room if isinstance(room, list) else [room]
    return any(r == sid or r in rooms for r in wanted)


def parse_offset(value) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        return int(value)
    return None


def left_at(record: dict, replica_heartbeats: dict) -> float:
    """When the session's client left. A session still recorded as connected left when its
    replica was last heard of: only its client knows the pid, so a client that comes back with it
    has lost that connection, even if its replica (killed, cut off) has not noticed yet."""
    if record.get("state") == GONE:
        return record.get("at", 0.0)
    return max(replica_heartbeats.get(record.get("replica"), 0.0), record.get("at", 0.0))


def supersedes(record: dict, known: dict | None) -> bool:
    """Each (re)connection of a pid is one generation further: a late record of an older one (the
    replica that lost the client noticing after it was recovered elsewhere) changes nothing."""
    return known is None or record.get("generation", 0) >= known.get("generation", 0)


def namespace_of(encoded: str) -> str:
    """The namespace of an encoded Socket.IO packet (`2/chat,[...]`, `51-/chat,[...]`)."""
    start = encoded.index("-") + 1 if encoded[:1] in ("5", "6") else 1
    if encoded[start:start + 1] == "/":
        end = encoded.find(",", start)
        return encoded[start:end] if end > 0 else encoded[start:]
    return "/"
