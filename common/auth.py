"""User identity: HS256 JWTs signed with SECRET_KEY, claim `sub` = the user id."""

from __future__ import annotations

import time

import jwt

ALGORITHM = "HS256"  # pinned: a token naming another algorithm is refused


class InvalidToken(Exception):
    """The token was given but cannot be trusted; the message says why."""


def issue_token(secret: str, user_id: str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl_seconds}, secret,
                      algorithm=ALGORITHM)


def user_from_token(secret: str, token: object) -> str:
    """The user id a valid token names; InvalidToken with the reason otherwise."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("token must be a non-empty string")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("token signature is invalid") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"token is invalid: {exc}") from None
    return str(claims["sub"])
