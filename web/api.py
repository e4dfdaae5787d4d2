"""The HTTP API: push events and notifications from any backend, disconnect a user, and the demo
login. Every answer is JSON; bad input is a 4xx with a message, logged once."""

from __future__ import annotations

import hmac
import logging
import uuid

from flask import Blueprint, abort, jsonify, make_response, request
from pydantic import ValidationError

from common import strict_json
from common.auth import issue_token
from common.contract import (
    APP_NAMESPACES,
    CHAT_NAMESPACE,
    EMIT_BATCH_MAX,
    MAIN_NAMESPACE,
    DisconnectRequest,
    EmitRequest,
    is_reserved_room,
    user_room,
)
from common.job_queue import EnqueueFailed
from common.jobs import Job, NotificationRequest, now_ms
from web.errors import describe
from web.extensions import (
    current_job_queue,
    current_presence,
    current_queue_manager,
    current_settings,
    socketio,
)
from web.replica_control import DISCONNECT_ROOM, control_every_replica

log = logging.getLogger(__name__)

blueprint = Blueprint("api", __name__, url_prefix="/api")

# When a 503 (the broker is away or blocks publishers) suggests trying again.
RETRY_AFTER_SECONDS = "5"


MAX_LOGGED_PATH_CHARS = 200  # a path carries what a caller sent (a user id): not all of it


def _fail(status: int, message: str, **headers: str):
    """Abort with a JSON error, logged once."""
    log.warning("%s %s from %s -> %d: %s", request.method, request.path[:MAX_LOGGED_PATH_CHARS],
                request.remote_addr, status, message)
    abort(make_response(jsonify(error=message), status, headers))


def _require_api_key() -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    expected = current_settings().api_key.get_secret_value()
    # compare_digest: the time taken does not tell how much of a guessed key was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), expected.encode()):
        _fail(401, "missing or wrong API key: send Authorization: Bearer <API_KEY>",
              **{"WWW-Authenticate": "Bearer"})


def _decoded_body():
    """The body read by the stack's strict codec; a 400 saying why it is not JSON (NaN, nesting
    deeper than allowed, a syntax error)."""
    try:
        return strict_json.loads(request.get_data())
    except ValueError as exc:
        _fail(400, f"the body is not valid JSON: {exc}")


def _json_object() -> dict:
    body = _decoded_body() if request.is_json else None
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
        log.error("notification not taken (%s): %s", exc.reason, exc)
        return ({"error": exc.public_message, "reason": exc.reason}, 503,
                {"Retry-After": RETRY_AFTER_SECONDS})
    return {"id": notification_id}, 202


def _strict_json():
    """The body as JSON, read by the stack's strict codec: NaN and Infinity are refused (browsers'
    JSON.parse rejects them, and socket.io-client drops its connection on them)."""
    limit = current_settings().max_message_bytes
    if len(request.get_data()) > limit:
        _fail(413, f"the body is larger than MAX_MESSAGE_BYTES ({limit} bytes)")
    if not request.is_json:
        _fail(415, "send JSON (Content-Type: application/json)")
    return _decoded_body()


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
    if manager is None:
        return
    if not manager.publisher_connected:
        _fail(503, "the message queue is unavailable; nothing was sent, try again shortly",
              **{"Retry-After": RETRY_AFTER_SECONDS})
    if manager.publisher_blocked:
        _fail(503, "the message queue takes nothing for now (the broker is short of memory or "
                   "disk); nothing was sent, try again later",
              **{"Retry-After": RETRY_AFTER_SECONDS})


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
    themselves (Socket.IO's "io server disconnect").

    Each replica disconnects its own after the request has been answered, so no count of closed
    connections exists here: `connections` is how many of the user's connections (one per
    namespace, as GET /api/users/<id>/connections lists them) the presence view knew of, which
    lags connects and disconnects by about a second."""
    _require_api_key()
    try:
        request_ = DisconnectRequest.model_validate(_strict_json())
    except ValidationError as exc:
        _fail(400, f"invalid request: {describe(exc)}")
    _require_publisher()
    known = len(current_presence().connections_of(request_.user))
    control_every_replica(socketio.server, DISCONNECT_ROOM, room=user_room(request_.user),
                          namespace=MAIN_NAMESPACE, whole_connection=True)
    log.info("disconnecting user %r on every replica (%d connection(s) known)", request_.user,
             known)
    return {"user": request_.user, "connections": known}, 202


# -- presence (web/presence.py): what this replica's view of the cluster says ------------------

PRESENCE_NAMESPACES = (MAIN_NAMESPACE, CHAT_NAMESPACE)
MAX_ROOM_CHARS = 200


@blueprint.get("/presence")
def presence():
    """Who is connected: to a namespace (`?namespace=`, default /) or one of its rooms
    (`?room=`), on every replica: signed-in users by id, the others counted."""
    _require_api_key()
    namespace = request.args.get("namespace", MAIN_NAMESPACE)
    room = request.args.get("room")
    if namespace not in PRESENCE_NAMESPACES:
        _fail(400, f"namespace must be one of {', '.join(PRESENCE_NAMESPACES)}")
    if room is not None and not 1 <= len(room) <= MAX_ROOM_CHARS:
        _fail(400, f"room must be 1 to {MAX_ROOM_CHARS} characters")
    view = current_presence()
    return {"namespace": namespace, "room": room, **view.room(namespace, room).summary(),
            "replicas": len(view.replicas)}


@blueprint.get("/users/<user>/connections")
def user_connections(user: str):
    """Every connection of one user, on every replica."""
    _require_api_key()
    return {"user": user, "connections": current_presence().connections_of(user)}


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
