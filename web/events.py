"""Main namespace handlers: the Flask-SocketIO example app's contract, plus identity and errors.

Replace these with your own; web/chat.py and web/echo.py show the other registration styles.
"""

from __future__ import annotations

import logging
import os

from engineio import Server as EngineIOServer
from flask import request, session
from flask_socketio import (
    ConnectionRefusedError,
    close_room,
    disconnect,
    emit,
    join_room,
    leave_room,
    rooms,
    send,
)

from common import metrics, strict_json
from common.auth import InvalidToken, user_from_token
from common.contract import (
    MAIN_NAMESPACE,
    DataPayload,
    Event,
    RoomDataPayload,
    RoomPayload,
    StartJobPayload,
    is_reserved_room,
    user_room,
)
from common.jobs import Job
from web.errors import BadRequest, report_error
from web.extensions import current_client_limits, current_job_queue, current_settings, socketio
from web.limits import FANOUT

log = logging.getLogger(__name__)


def _next_count() -> int:
    """How many events this connection has sent, as the example app reports in `my_response`."""
    session["receive_count"] = session.get("receive_count", 0) + 1
    return session["receive_count"]


@socketio.on("connect")
def on_connect(auth=None):
    """Anonymous without a token; with a valid JWT the connection joins its user's room."""
    if auth is not None and not isinstance(auth, dict):
        metrics.CONNECTS.labels("refused").inc()
        raise ConnectionRefusedError("auth must be an object like {\"token\": \"<jwt>\"}")
    token = (auth or {}).get("token")
    user_id = None
    if token is not None:
        try:
            user_id = user_from_token(current_settings().secret_key.get_secret_value(), token)
        except InvalidToken as exc:
            log.info("refused connection %s: %s", request.sid, exc)
            metrics.CONNECTS.labels("refused").inc()
            raise ConnectionRefusedError(str(exc)) from None
        join_room(user_room(user_id))
    session["user_id"] = user_id
    metrics.CONNECTS.labels("accepted").inc()
    emit(Event.MY_RESPONSE, {"data": "Connected", "count": 0})


# The reasons python-socketio gives; anything else is counted as "other", so no text from outside
# ever becomes a metric label.
DISCONNECT_REASONS = frozenset(value for name, value in vars(EngineIOServer.reason).items()
                               if name.isupper())


@socketio.on("disconnect")
def on_disconnect(reason=None):
    metrics.DISCONNECTS.labels(reason if reason in DISCONNECT_REASONS else "other").inc()


@socketio.on(Event.MESSAGE)
def on_message(message):
    send(message)


@socketio.on(Event.JSON)
def on_json(data):
    send(data, json=True)


@socketio.on(Event.MY_EVENT)
def on_my_event(payload):
    data = DataPayload.model_validate(payload).data
    emit(Event.MY_RESPONSE, {"data": data, "count": _next_count()})


@socketio.on(Event.MY_BROADCAST_EVENT)
def on_my_broadcast_event(payload):
    data = DataPayload.model_validate(payload).data
    refuse_large_fanout(data)
    emit(Event.MY_RESPONSE, {"data": data, "count": _next_count()}, broadcast=True)


@socketio.on(Event.JOIN)
def on_join(payload):
    room = RoomPayload.model_validate(payload).room
    if is_reserved_room(room):
        raise BadRequest(f"room {room!r} belongs to a connection or a user and cannot be joined")
    refuse_too_many_rooms(room)
    join_room(room)
    emit(Event.MY_RESPONSE, {"data": "In rooms: " + ", ".join(rooms()), "count": _next_count()})


def refuse_large_fanout(data) -> None:
    """What a client sends to many is capped (MAX_FANOUT_BYTES): a message within
    MAX_MESSAGE_BYTES, broadcast, would cost every recipient that much and fill the outgoing
    buffers of normal readers until they are cut as slow readers."""
    size = len(strict_json.dumps(data).encode())
    limit = current_settings().max_fanout_bytes
    if size > limit:
        current_client_limits().offence(FANOUT, request.sid, f"{size} bytes to many; refused")
        raise BadRequest(f"data sent to many is at most {limit} bytes (this was {size})")


def refuse_too_many_rooms(room: str, namespace: str | None = None) -> None:
    """Each room a connection joins costs every replica a little; their number is capped."""
    joined = [r for r in rooms(namespace=namespace) if not is_reserved_room(r)]
    if room not in joined and not current_client_limits().may_join(request.sid, len(joined)):
        raise BadRequest(f"at most {len(joined)} rooms per connection; leave one first")


@socketio.on(Event.LEAVE)
def on_leave(payload):
    room = RoomPayload.model_validate(payload).room
    if is_reserved_room(room):
        # Leaving its user's room would hide a signed-in connection from POST /api/disconnect,
        # from its notifications and from presence, while it still acts as that user.
        raise BadRequest(f"room {room!r} belongs to a connection or a user and cannot be left")
    leave_room(room)
    emit(Event.MY_RESPONSE, {"data": "In rooms: " + ", ".join(rooms()), "count": _next_count()})


@socketio.on(Event.CLOSE_ROOM)
def on_close_room(payload):
    room = RoomPayload.model_validate(payload).room
    if is_reserved_room(room):
        raise BadRequest(f"room {room!r} belongs to a connection or a user and cannot be closed")
    emit(Event.MY_RESPONSE, {"data": f"Room {room} is closing.", "count": _next_count()}, to=room)
    close_room(room)


@socketio.on(Event.MY_ROOM_EVENT)
def on_my_room_event(payload):
    message = RoomDataPayload.model_validate(payload)
    if message.room.startswith(user_room("")):
        # A user's room carries what the backend sends that user (notifications, job progress);
        # a client writing there could pose as the backend. A sid room is a direct message.
        raise BadRequest(f"room {message.room!r} belongs to a user: only the backend sends there")
    refuse_large_fanout(message.data)
    emit(Event.MY_RESPONSE, {"data": message.data, "count": _next_count()}, to=message.room)


@socketio.on(Event.MY_PING)
def on_my_ping(payload=None):
    """The ack is the answer; it carries the client's payload back (a timestamp, for latency)."""
    return payload


@socketio.on(Event.DISCONNECT_REQUEST)
def on_disconnect_request():
    def disconnect_after_client_saw_it():
        disconnect()

    emit(Event.MY_RESPONSE, {"data": "Disconnected!", "count": _next_count()},
         callback=disconnect_after_client_saw_it)


@socketio.on(Event.ASK_CLIENT)
def on_ask_client(payload):
    """Emit to the client with a callback: the client's ack comes back to this replica."""
    question = DataPayload.model_validate(payload).data

    def client_answered(answer=None):
        emit(Event.MY_RESPONSE, {"data": {"question": question, "answer": answer},
                                 "count": _next_count()})

    emit(Event.CLIENT_QUESTION, {"data": question}, callback=client_answered)


@socketio.on(Event.START_JOB)
def on_start_job(payload=None):
    """Start a `long_task` (signed-in users only); its progress goes to the user's connections."""
    steps = StartJobPayload.model_validate(payload or {}).steps
    user_id = session.get("user_id")
    if not user_id:
        # The worker's queue is shared with the backend's notifications: anonymous clients
        # could otherwise fill it and hold those up behind their jobs.
        raise BadRequest("sign in to start a job")
    job_id = current_job_queue().enqueue(Job.LONG_TASK, {"room": user_room(user_id),
                                                         "steps": steps})
    return {"job_id": job_id}


def _transport(sid: str) -> str | None:
    try:
        return socketio.server.transport(sid)
    except KeyError:  # Flask-SocketIO's test client has no Engine.IO session
        return None


def server_info():
    """Which replica and transport this connection is on (registered with `on_event` below)."""
    settings = current_settings()
    return {
        "replica": settings.replica_id,
        "address": settings.replica_address,
        "pid": os.getpid(),
        "async_mode": socketio.async_mode,
        "transport": _transport(request.sid),
        "sid": request.sid,
        "user": session.get("user_id"),
    }


socketio.on_event(Event.SERVER_INFO, server_info, namespace=MAIN_NAMESPACE)


@socketio.on("*")
def on_unknown_event(event, *args):
    raise BadRequest(f"unknown event {event!r}")


@socketio.on_error(MAIN_NAMESPACE)
def on_main_error(exc):
    return report_error(exc)


@socketio.on_error_default
def on_any_other_error(exc):
    return report_error(exc)
