"""The stack's one JSON codec, for Socket.IO packets, the broker and the HTTP API.

Strict: Python's json reads and writes NaN and Infinity, which JavaScript's JSON.parse rejects;
one such value re-broadcast would make every socket.io-client drop its connection. Here reading
them is a ValueError (the packet or request is refused) and so is writing them.

UTF-8 as is: the default `ensure_ascii` escapes every non-ASCII character as \\uXXXX, so a message
of accented text grows up to 6x between what a client sent and what every recipient is sent.

Also engine.io's guard: integers of more than 100 digits are refused (int() of a huge literal
costs quadratic time).
"""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


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
    return json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int, **options)
