"""HTTP routes of a replica: health and readiness probes (and, later, the API and the page)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from web.extensions import current_drain, current_queue_manager, current_settings

blueprint = Blueprint("web", __name__)


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
    return body, 200 if ready else 503


@blueprint.get("/metrics")
def prometheus_metrics():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@blueprint.app_errorhandler(HTTPException)
def http_error_as_json(exc: HTTPException):
    """Errors are JSON, like every other answer of this service."""
    return jsonify(error=exc.description, status=exc.code), exc.code
