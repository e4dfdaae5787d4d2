"""HTTP routes of a replica: health and readiness probes, metrics, the Socket.IO Admin UI."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from web.extensions import (
    current_drain,
    current_job_queue,
    current_queue_manager,
    current_settings,
)

log = logging.getLogger(__name__)

blueprint = Blueprint("web", __name__)

# @socket.io/admin-ui's built page, vendored by scripts/vendor_admin_ui.sh.
ADMIN_UI_DIR = Path(__file__).resolve().parent / "static" / "vendor" / "admin-ui"


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return {"status": "ok", "replica": current_settings().replica_id}


@blueprint.get("/readyz")
def readyz():
    """Readiness: 503 only when this replica cannot serve (draining); 200 otherwise, "degraded"
    naming what is missing. A replica whose broker is away still serves its own clients, so
    nothing may take it out for that (docs/operations.md#readiness)."""
    manager = current_queue_manager()
    recovery = current_app.extensions.get("recovery")
    bindings = current_app.extensions.get("room_bindings")
    body = assess_readiness(
        draining=current_drain().draining,
        broker={**manager.status(), "room_bindings": bindings.status() if bindings else None}
        if manager else None,
        jobs=current_job_queue().status(),
        recovery=recovery.status() if recovery is not None else None)
    return {**body, "replica": current_settings().replica_id}, (
        503 if body["status"] == NOT_READY else 200)


READY, DEGRADED, NOT_READY = "ready", "degraded", "not ready"
# Submissions are the only probe of the job queue: an older refusal says nothing about it now.
RECENT_REFUSAL_SECONDS = 60


def assess_readiness(draining: bool, broker: dict | None, jobs: dict,
                     recovery: dict | None) -> dict:
    """The readiness answer: `status`, and under `degraded` what is missing and what it costs.

    `broker` is QueueManager.status() (None: no message queue, a single process), `jobs`
    JobQueue.status(), `recovery` Recovery.status() (None: recovery is off)."""
    degraded = {}
    if broker is not None:
        if not broker["listener_bound"]:
            degraded["broker_listener"] = ("the broker listener is away: events from other "
                                           "replicas and the worker do not reach this replica's "
                                           "clients")
        if not broker["publisher_connected"]:
            degraded["broker_publisher"] = ("the broker publisher is away: this replica's events "
                                            "reach only its own clients; the API's emits are "
                                            "refused (503)")
        bindings = broker.get("room_bindings")
        if bindings is not None and not bindings["connected"]:
            degraded["room_bindings"] = ("the room bindings' broker connection is away: events "
                                         "to rooms new to this replica do not reach it yet")
        if broker["publisher_blocked"]:
            degraded["broker_blocked"] = ("the broker blocks this replica's publisher (a memory "
                                          "or disk alarm): its events to other replicas wait")
    if jobs["blocked"]:
        degraded["job_queue"] = ("the broker blocks job submissions (a memory or disk alarm): "
                                 "they are refused (503)")
    elif jobs["last_refusal"] and jobs["last_refusal_seconds_ago"] < RECENT_REFUSAL_SECONDS:
        degraded["job_queue"] = (f"the last job submission was refused "
                                 f"({jobs['last_refusal']}): the job queue may be unreachable")
    if recovery is not None and not recovery["ready"]:
        degraded["recovery"] = ("the recovery log reader is not ready: clients that ask for "
                                "recovery get a new session")
    status = NOT_READY if draining else DEGRADED if degraded else READY
    body = {"status": status, "draining": draining, "degraded": degraded, "jobs": jobs}
    if broker is not None:
        body["broker"] = broker
    if recovery is not None:
        body["recovery"] = recovery
    return body


@blueprint.get("/metrics")
def prometheus_metrics():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@blueprint.get("/admin/")
@blueprint.get("/admin/<path:filename>")
def admin_ui(filename: str = "index.html"):
    """The Socket.IO Admin UI, behind HTTP Basic with ADMIN_UI_USERNAME / ADMIN_UI_PASSWORD
    (the same credentials its `/admin` namespace asks for); not found unless configured."""
    settings = current_settings()
    if not settings.admin_ui_enabled:
        abort(404)
    given = request.authorization
    expected = settings.admin_ui_password.get_secret_value()
    # Both compared in constant time, and both always: the answer does not tell which was wrong.
    user_ok = hmac.compare_digest(
        (given.username if given else "").encode(), settings.admin_ui_username.encode())
    password_ok = hmac.compare_digest(
        ((given.password or "") if given else "").encode(), expected.encode())
    if not (user_ok and password_ok):
        if given:
            log.warning("admin UI: wrong credentials from %s", request.remote_addr)
        response = jsonify(error="the admin UI needs ADMIN_UI_USERNAME and ADMIN_UI_PASSWORD",
                           status=401)
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="Socket.IO Admin UI"'
        return response
    return send_from_directory(ADMIN_UI_DIR, filename)


@blueprint.app_errorhandler(HTTPException)
def http_error_as_json(exc: HTTPException):
    """Errors are JSON, like every other answer of this service."""
    return jsonify(error=exc.description, status=exc.code), exc.code
