"""Turning a handler's failure into one clear error for its sender and one log line."""

from __future__ import annotations

import logging

from flask import request
from flask_socketio import emit
from pydantic import ValidationError

from common.contract import Event
from common.jobs import EnqueueFailed

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

    Client mistakes are logged as one warning line; anything else is a bug and gets one traceback.
    """
    event = request.event["message"] if getattr(request, "event", None) else None
    if event == "*":  # the catch-all handler: its first argument is the event's real name
        event = request.event["args"][0]
    if isinstance(exc, ValidationError):
        message = f"invalid payload: {describe(exc)}"
    elif isinstance(exc, (BadRequest, TypeError)):
        message = str(exc)
    elif isinstance(exc, EnqueueFailed):
        log.error("%r from %s: %s", event, request.sid, exc)
        message = exc.public_message
    else:
        log.exception("handler for %r on %s failed", event, request.namespace)
        message = "internal error"
    if isinstance(exc, (ValidationError, BadRequest, TypeError)):
        log.warning("bad %r event from %s on %s: %s", event, request.sid, request.namespace,
                    message)
    error = {"event": event, "error": message}
    emit(Event.ERROR_RESPONSE, error)
    return error
