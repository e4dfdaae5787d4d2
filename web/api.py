"""The HTTP API: push events and notifications from any backend, disconnect a user, and the demo
login. Every answer is JSON; bad input is a 4xx with a message, logged once."""

from __future__ import annotations

import hmac
import json
import logging
import uuid

from flask import Blueprint, abort, jsonify, make_response, request
from pydantic import ValidationError

from common.auth import issue_token
from common.contract import (
    APP_NAMESPACES,
    EMIT_BATCH_MAX,
    MAIN_NAMESPACE,
    DisconnectRequest,
    EmitRequest,
    is_reserved_room,
    user_room,
)
from common.jobs import EnqueueFailed, Job, NotificationRequest, now_ms
from web.errors import describe
from web.extensions import current_job_queue, current_queue_manager, current_settings, socketio

log = logging.getLogger(__name__)

blueprint = Blueprint("api", __name__, url_prefix="/api")


def _fail(status: int, message: str, **headers: str):
    """Abort with a JSON error, logged once."""
    log.warning("%s %s from %s -> %d: %s", request.method, request.path, request.remote_addr,
                status, message)
    abort(make_response(jsonify(error=message), status, headers))


def _require_api_key() -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    expected = current_settings().api_key.get_secret_value()
    # compare_digest: the time taken does not tell how much of a guessed key was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), expected.encode()):
        _fail(401, "missing or wrong API key: send Authorization: Bearer <API_KEY>",
              **{"WWW-Authenticate": "Bearer"})


def _json_object() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        _fail(400, "the body must be a JSON object (Content-Type: application/json)")
    return body


@blueprint.post("/notifications")
def create_notification():
    """Queue a `notification` for everyone, a user or a room; the worker delivers it."""
    _require_api_key()
    try:
        notification = NotificationRequest.model_validate(_json_object())
    except ValidationError as exc:
        _fail(400, f"invalid notification: {describe(exc)}")
    notification_id = uuid.uuid4().hex  # also the job id: clients drop duplicates by it
    try:
        current_job_queue().enqueue(
            Job.NOTIFY, {**notification.model_dump(), "created_at": now_ms()}, notification_id)
    except EnqueueFailed as exc:
        log.error("notification not queued: %s", exc)
        return {"error": "the job queue is unavailable; try again shortly"}, 503
    return {"id": notification_id}, 202


def _strict_json():
    """The body as JSON, refusing NaN and Infinity: Python reads them, browsers' JSON.parse does
    not, and socket.io-client drops its connection on them."""
    limit = current_settings().max_message_bytes
    if len(request.get_data()) > limit:
        _fail(413, f"the body is larger than MAX_MESSAGE_BYTES ({limit} bytes)")
    if not request.is_json:
        _fail(415, "send JSON (Content-Type: application/json)")

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(request.get_data(), parse_constant=refuse)
    except ValueError as exc:
        _fail(400, f"the body is not valid JSON: {exc}")


def _target_room(message: EmitRequest) -> str | None:
    """The room `to` names (None: everyone). A room the server reserves (a user's, a
    connection's own sid) is reachable only through its proper form, {"user": id}."""
    if message.to == "all":
        return None
    if hasattr(message.to, "user"):
        return user_room(message.to.user)
    if is_reserved_room(message.to.room):
        _fail(403, f"room {message.to.room!r} is reserved: use {{\"user\": id}} for a user; a "
                   "connection's own room is not reachable")
    return message.to.room


def _checked(body: object, where: str) -> tuple[EmitRequest, str | None]:
    try:
        message = EmitRequest.model_validate(body)
    except ValidationError as exc:
        _fail(400, f"invalid message{where}: {describe(exc)}")
    allowed = current_settings().api_emit_events
    if message.event not in allowed:
        _fail(403, f"event {message.event!r}{where} is not in API_EMIT_EVENTS "
                   f"({', '.join(allowed)})")
    if message.namespace not in APP_NAMESPACES:
        _fail(400, f"namespace {message.namespace!r}{where} is not one of "
                   f"{', '.join(APP_NAMESPACES)}")
    return message, _target_room(message)


def _require_publisher() -> None:
    manager = current_queue_manager()
    if manager is not None and not manager.status()["publisher_connected"]:
        _fail(503, "the message queue is unavailable; nothing was sent, try again shortly")


@blueprint.post("/emit")
def emit_events():
    """Emit one message ({event, data, to, namespace}) or a batch (a JSON array of them) to the
    clients on every replica. Each is checked before any is sent: a batch goes out whole or not
    at all."""
    _require_api_key()
    body = _strict_json()
    if isinstance(body, list):
        if not 1 <= len(body) <= EMIT_BATCH_MAX:
            _fail(400, f"a batch holds 1 to {EMIT_BATCH_MAX} messages, got {len(body)}")
        messages = [_checked(item, f" [{index}]") for index, item in enumerate(body)]
    elif isinstance(body, dict):
        messages = [_checked(body, "")]
    else:
        _fail(400, "the body must be a message object or an array of them")
    _require_publisher()
    for message, room in messages:
        socketio.emit(message.event, message.data, to=room, namespace=message.namespace)
    return {"emitted": len(messages)}, 202


@blueprint.post("/disconnect")
def disconnect_user():
    """Disconnect every connection of a user, on every replica; its clients do not reconnect by
    themselves (Socket.IO's "io server disconnect")."""
    _require_api_key()
    try:
        request_ = DisconnectRequest.model_validate(_strict_json())
    except ValidationError as exc:
        _fail(400, f"invalid request: {describe(exc)}")
    _require_publisher()
    room = user_room(request_.user)
    manager = current_queue_manager()
    if manager is None:  # a single process (unit tests): nothing to tell
        disconnect_room_members(socketio.server, room)
    else:
        manager._publish(disconnect_room_message(room))
    log.info("disconnecting user %r on every replica", request_.user)
    return {"user": request_.user}, 202


# -- disconnecting a room's members on every replica -------------------------------------------
#
# python-socketio's managers can disconnect one sid on any replica, but nothing names every
# connection of a user across replicas. A replica's listener gets one more kind of `disconnect`
# message, carrying a room instead of a sid (`DISCONNECT_ROOM_KEY`); every replica, the sender's
# included, disconnects its own members of that room. Relies on `PubSubManager._handle_disconnect
# (self, message)` and `_publish(data)` (python-socketio 5.18; checked by
# tests/unit/test_api_emit.py). A replica without the hook ignores it (its sid is None).

DISCONNECT_ROOM_KEY = "disconnect_room"
_ANY_HOST = "http-api"  # not any replica's host_id, so the sender's listener acts on it too


def disconnect_room_message(room: str) -> dict:
    return {"method": "disconnect", "sid": None, "namespace": MAIN_NAMESPACE,
            DISCONNECT_ROOM_KEY: room, "host_id": _ANY_HOST}


def disconnect_room_members(server, room: str) -> int:
    """Disconnect, from every namespace, this replica's connections in `room` of the main
    namespace; how many."""
    manager = server.manager
    members = list(manager.get_participants(MAIN_NAMESPACE, room))
    for _, eio_sid in members:
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None:
                server.disconnect(sid, namespace=namespace, ignore_queue=True)
    if members:
        log.info("disconnected %d connection(s) of room %s", len(members), room)
    return len(members)


def _accept_room_disconnects(manager) -> None:
    handle = manager._handle_disconnect

    def handle_disconnect(message: dict) -> None:
        room = message.get(DISCONNECT_ROOM_KEY)
        if isinstance(room, str):
            disconnect_room_members(manager.server, room)
        else:
            handle(message)

    manager._handle_disconnect = handle_disconnect


@blueprint.record_once
def _install_room_disconnects(state) -> None:
    manager = socketio.server.manager if socketio.server is not None else None
    if hasattr(manager, "_handle_disconnect"):
        _accept_room_disconnects(manager)


@blueprint.post("/demo/token")
def demo_token():
    """A token for any user name: the demo's stand-in for a real login."""
    settings = current_settings()
    if not settings.demo_login_enabled:
        _fail(403, "demo login is off (DEMO_LOGIN=false or APP_ENV=production)")
    user = _json_object().get("user")
    if not isinstance(user, str) or not 1 <= len(user) <= 50:
        _fail(400, "user must be a string of 1 to 50 characters")
    return {"token": issue_token(settings.secret_key.get_secret_value(), user), "user": user}
