"""HTTP routes of a replica: health and readiness probes (and, later, the API and the page)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from werkzeug.exceptions import HTTPException

from web import current_queue_manager, current_settings

blueprint = Blueprint("web", __name__)


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return {"status": "ok", "replica": current_settings().replica_id}


@blueprint.get("/readyz")
def readyz():
    """Readiness: the broker listener is bound, so cross-replica events reach this replica."""
    manager = current_queue_manager()
    broker = manager.status() if manager else {"listener_bound": True, "publisher_connected": True}
    ready = broker["listener_bound"]
    body = {"status": "ready" if ready else "not ready",
            "replica": current_settings().replica_id, "broker": broker}
    return body, 200 if ready else 503


@blueprint.app_errorhandler(HTTPException)
def http_error_as_json(exc: HTTPException):
    """Errors are JSON, like every other answer of this service."""
    return jsonify(error=exc.description, status=exc.code), exc.code
