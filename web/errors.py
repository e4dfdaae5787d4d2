"""Turning a handler's failure into one clear error for its sender and one log line."""

from __future__ import annotations

import logging

from flask import request
from flask_socketio import emit
from pydantic import ValidationError

from common import metrics
from common.contract import Event
from common.job_queue import EnqueueFailed
from web.extensions import current_client_limits

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """The client sent something the handler cannot act on; the message is safe to show."""


def describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or 'payload'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    )


def report_error(exc: BaseException) -> dict:
    """Tell the sender what went wrong (as the ack and as an `error_response` event); log it once.

    Client mistakes are counted in `socketio_events_refused_total{reason}` and logged as one
    warning line per connection (a client may send a bad event 50 times a second without being
    cut off; a line for each would let it fill the logs); anything else is a bug and gets one
    traceback.
    """
    event = request.event["message"] if getattr(request, "event", None) else None
    if event == "*":  # the catch-all handler: its first argument is the event's real name
        event = request.event["args"][0]
    if isinstance(exc, ValidationError):
        message, reason = f"invalid payload: {describe(exc)}", "invalid_payload"
    elif isinstance(exc, (BadRequest, TypeError)):
        message, reason = str(exc), "bad_request"
    elif isinstance(exc, EnqueueFailed):
        log.error("%r from %s: %s", event, request.sid, exc)
        message, reason = exc.public_message, "job_queue"
    else:
        log.exception("handler for %r on %s failed", event, request.namespace)
        message, reason = "internal error", "internal_error"
    metrics.EVENTS_REFUSED.labels(reason).inc()
    if reason in ("invalid_payload", "bad_request") and \
            current_client_limits().logged.first(f"bad_event:{request.sid}"):
        log.warning("bad %r event from %s on %s: %s (further ones from this connection are "
                    "counted, not logged)", event, request.sid, request.namespace, message)
    error = {"event": event, "error": message}
    emit(Event.ERROR_RESPONSE, error)
    return error
