"""The stack's one JSON codec, for Socket.IO packets, the broker and the HTTP API.

Strict: Python's json reads and writes NaN and Infinity, which JavaScript's JSON.parse rejects;
one such value re-broadcast would make every socket.io-client drop its connection. Here reading
them is a ValueError (the packet or request is refused) and so is writing them.

UTF-8 as is: the default `ensure_ascii` escapes every non-ASCII character as \\uXXXX, so a message
of accented text grows up to 6x between what a client sent and what every recipient is sent.

Also engine.io's guard: integers of more than 100 digits are refused (int() of a huge literal
costs quadratic time). And a depth bound: data nested deeper than MAX_DEPTH arrays and objects is
refused. Deep data decodes (up to the decoder's own recursion limit), then breaks whatever
recurses over it later: python-socketio's binary check on emit, pydantic, a handler.
"""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))

MAX_DEPTH = 32  # arrays and objects inside each other; the stack's own messages use under 10


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(digits: str) -> int:
    if len(digits) > 100:
        raise ValueError("integer too large")
    return int(digits)


def dumps(obj: Any, **options: Any) -> str:
    """`json.dumps` for the stack; python-socketio passes `separators`, which is already ours."""
    if set(options) - {"separators"}:
        return json.dumps(obj, **{"separators": (",", ":"), **options, "allow_nan": False,
                                  "ensure_ascii": False})
    return _encoder.encode(obj)


def loads(text: str | bytes, **options: Any) -> Any:
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                           **options)
    except RecursionError as exc:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from exc
    # Only text with more brackets than the bound can nest that deep: counted in C, so the walk
    # below runs for few messages.
    opening = (b"[", b"{") if isinstance(text, (bytes, bytearray)) else ("[", "{")
    if text.count(opening[0]) + text.count(opening[1]) > MAX_DEPTH and \
            nested_deeper_than(value, MAX_DEPTH):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` holds more than `limit` arrays and objects inside each other (walked
    without recursion)."""
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, (dict, list)))
    return False
