"""HTTP routes of a replica: health and readiness probes, metrics, the Socket.IO Admin UI."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from web.extensions import current_drain, current_queue_manager, current_settings

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
    """Readiness: not draining, and both broker connections are up: the listener (events of
    other replicas reach this one's clients) and the publisher (this one's reach theirs)."""
    manager = current_queue_manager()
    broker = manager.status() if manager else {"listener_bound": True, "publisher_connected": True}
    draining = current_drain().draining
    ready = broker["listener_bound"] and broker["publisher_connected"] and not draining
    body = {"status": "ready" if ready else "not ready", "draining": draining,
            "replica": current_settings().replica_id, "broker": broker}
    recovery = current_app.extensions.get("recovery")
    if recovery is not None:
        # Shown, not required: without its streams a replica still serves every client, only
        # the clients that ask for recovery get a new session instead (degraded, not down).
        body["recovery"] = recovery.status()
    return body, 200 if ready else 503


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
