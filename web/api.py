"""The HTTP API: push notifications from any backend, and the demo login."""

from __future__ import annotations

import hmac
import logging
import uuid

from flask import Blueprint, abort, jsonify, make_response, request
from pydantic import ValidationError

from common.auth import issue_token
from common.jobs import EnqueueFailed, Job, NotificationRequest, now_ms
from web.errors import describe
from web.extensions import current_job_queue, current_settings

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
