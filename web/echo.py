"""The /echo namespace: plain functions registered with `on_event`, a playground for payload types.

Its errors have no handler of their own, so they reach `on_error_default` (web/events.py).
"""

from __future__ import annotations

import math
from numbers import Real

from common.contract import ECHO_NAMESPACE, Event
from web.errors import BadRequest
from web.extensions import socketio


def echo(*args):
    """Ack with the arguments unchanged: str, bytes, int, JSON, several of them (a tuple)."""
    return args


def sum_numbers(*numbers):
    """Ack with the sum of numeric arguments; anything else is a clear error."""
    if not numbers or not all(isinstance(n, Real) and not isinstance(n, bool) for n in numbers):
        raise BadRequest("sum takes one or more numbers")
    total = sum(numbers)
    if not math.isfinite(total):  # two floats near 1e308 overflow; JSON has no Infinity
        raise BadRequest("the sum is too large for a JSON number")
    return total


socketio.on_event(Event.ECHO, echo, namespace=ECHO_NAMESPACE)
socketio.on_event(Event.SUM, sum_numbers, namespace=ECHO_NAMESPACE)


@socketio.on("*", namespace=ECHO_NAMESPACE)
def unknown_echo_event(event, *args):
    raise BadRequest(f"unknown event {event!r}")
