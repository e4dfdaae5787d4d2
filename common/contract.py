"""The event contract: every namespace, event name and payload shape, defined once.

The web replicas, the worker, the demo page's tests and the load tests import these names; no
event name is spelt as a string literal anywhere else. Payloads are validated with pydantic, so a
malformed payload becomes one clear error for its sender instead of a traceback.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

# Namespaces.
MAIN_NAMESPACE = "/"
CHAT_NAMESPACE = "/chat"
ECHO_NAMESPACE = "/echo"
ADMIN_NAMESPACE = "/admin"  # the Socket.IO Admin UI's, only when ADMIN_UI_PASSWORD is set


class Event:
    """Socket.IO event names, grouped by who sends them."""

    # Client -> server, main namespace (compatible with Flask-SocketIO's example app).
    MY_EVENT = "my_event"
    MY_BROADCAST_EVENT = "my_broadcast_event"
    JOIN = "join"
    LEAVE = "leave"
    CLOSE_ROOM = "close_room"
    MY_ROOM_EVENT = "my_room_event"
    MY_PING = "my_ping"
    DISCONNECT_REQUEST = "disconnect_request"
    SERVER_INFO = "server_info"
    ASK_CLIENT = "ask_client"  # the server asks the client something and waits for its ack
    START_JOB = "start_job"  # starts a `long_task` job for this connection (ack: {"job_id"})

    # Server -> client, main namespace.
    MY_RESPONSE = "my_response"
    CLIENT_QUESTION = "client_question"
    ERROR_RESPONSE = "error_response"

    # Server -> client, pushed by the worker through the message queue.
    NOTIFICATION = "notification"  # {"id", "data", "created_at" (ms since the epoch)}
    JOB_PROGRESS = "job_progress"  # {"job_id", "step", "steps", "percent"}
    JOB_DONE = "job_done"  # {"job_id", "result"}
    SERVER_EVENT = "server_event"  # {"data", "count", "sent_at"}: the periodic broadcast

    # Unnamed events, both directions (`send()`).
    MESSAGE = "message"
    JSON = "json"

    # Chat namespace.
    CHAT_JOIN = "join"
    CHAT_SAY = "say"
    CHAT_MESSAGE = "chat_message"

    # Server -> members of a room, any namespace (web/presence.py): users came or went.
    PRESENCE = "presence"  # {"room", "joined": [ids], "left": [ids], "users", "anonymous"}

    # Echo namespace: acks carry the arguments back unchanged (several arguments -> a tuple).
    ECHO = "echo"
    SUM = "sum"


class UserTarget(BaseModel):
    """`to` of a notification or an API emit: every connection of one user."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    user: StrictStr = Field(min_length=1, max_length=200)


class RoomTarget(BaseModel):
    """`to`: every member of one room."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    room: StrictStr = Field(min_length=1, max_length=200)


Target = Literal["all"] | UserTarget | RoomTarget


class Payload(BaseModel):
    """Base for client payloads: unknown keys are ignored, types are not coerced."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class DataPayload(Payload):
    data: Any


class RoomPayload(Payload):
    room: StrictStr = Field(min_length=1, max_length=200)


class RoomDataPayload(RoomPayload):
    data: Any


CHAT_DEFAULT_NAME = "anonymous"  # who talks in /chat without having given a name


class ChatJoinPayload(RoomPayload):
    name: StrictStr = Field(default=CHAT_DEFAULT_NAME, min_length=1, max_length=50)


class ChatSayPayload(Payload):
    room: StrictStr = Field(min_length=1, max_length=200)
    text: StrictStr = Field(min_length=1, max_length=2000)


class StartJobPayload(Payload):
    steps: StrictInt = Field(default=10, ge=1, le=100)


def user_room(user_id: str) -> str:
    """The room every connection of an authenticated user joins, on whichever replica it is."""
    return f"user:{user_id}"


def session_id_prefix(replica_address: str) -> str:
    """What every Engine.IO session id of a replica starts with: "10.0.0.7:5000" -> "10.0.0.7.5000."

    nginx routes a session's requests by it (nginx/socketio.conf.template); a session id is also
    the connection's own room, which `is_reserved_room` recognizes by the same shape.
    """
    return replica_address.replace(":", ".") + "."


_SESSION_ROOM = re.compile(r"^\d{1,3}(\.\d{1,3}){3}\.\d{1,5}\.")


def session_replica(room: str) -> str | None:
    """The `session_id_prefix` of the replica a session id was made by (None: not a sid)."""
    match = _SESSION_ROOM.match(room)
    return match.group(0) if match else None


def is_reserved_room(room: str) -> bool:
    """A room that belongs to one connection (its sid) or one user: no client may join or close
    it."""
    return room.startswith(user_room("")) or bool(_SESSION_ROOM.match(room))


# Event names Socket.IO itself uses on either side: never sent on behalf of an application (the
# JavaScript client would treat a `disconnect` event as its own connection's).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener", "__disconnect_final"})

# Namespaces the HTTP API may emit to (not the admin UI's).
APP_NAMESPACES = (MAIN_NAMESPACE, CHAT_NAMESPACE, ECHO_NAMESPACE)
EMIT_BATCH_MAX = 100  # messages in one POST /api/emit


class EmitRequest(BaseModel):
    """One message of POST /api/emit: `event` with `data` to everyone, a user or a room."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: StrictStr = Field(min_length=1, max_length=100)
    data: Any = None
    to: Target = "all"
    namespace: StrictStr = MAIN_NAMESPACE


class DisconnectRequest(BaseModel):
    """The body of POST /api/disconnect: every connection of this user, on every replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: StrictStr = Field(min_length=1, max_length=200)
