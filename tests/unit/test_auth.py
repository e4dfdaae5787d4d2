"""common/auth.py: HS256 JWTs; anything expired, forged or signed another way is refused."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from common.auth import ALGORITHM, InvalidToken, issue_token, user_from_token

SECRET = "auth-test-secret-key-" + "0123456789abcdef" * 4


def claims(**overrides) -> dict:
    now = int(time.time())
    values = {"sub": "alice", "iat": now, "exp": now + 60}
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def test_issued_token_names_its_user():
    token = issue_token(SECRET, "alice")

    assert user_from_token(SECRET, token) == "alice"
    assert jwt.get_unverified_header(token)["alg"] == ALGORITHM == "HS256"


def test_issued_token_expires_after_its_ttl():
    token = issue_token(SECRET, "alice", ttl_seconds=120)

    payload = jwt.decode(token, SECRET, algorithms=[ALGORITHM])
    assert payload["exp"] - payload["iat"] == 120


def test_expired_token_is_refused():
    token = issue_token(SECRET, "alice", ttl_seconds=-1)

    with pytest.raises(InvalidToken, match="token expired"):
        user_from_token(SECRET, token)


def test_token_signed_with_another_secret_is_refused():
    token = issue_token("some-other-secret-key-0123456789abcdef", "alice")

    with pytest.raises(InvalidToken, match="signature is invalid"):
        user_from_token(SECRET, token)


def test_tampered_claims_are_refused():
    header, payload, signature = issue_token(SECRET, "alice").split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()

    with pytest.raises(InvalidToken, match="signature is invalid"):
        user_from_token(SECRET, f"{header}.{forged_payload}.{signature}")


def test_unsigned_token_alg_none_is_refused():
    token = jwt.encode(claims(), key=None, algorithm="none")

    assert jwt.get_unverified_header(token)["alg"] == "none"
    with pytest.raises(InvalidToken, match="token is invalid"):
        user_from_token(SECRET, token)


def test_hand_made_alg_none_token_is_refused():
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims())}."

    with pytest.raises(InvalidToken):
        user_from_token(SECRET, token)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_token_signed_with_another_algorithm_is_refused(algorithm):
    # Same secret, valid signature for its own algorithm: still refused, the algorithm is pinned.
    token = jwt.encode(claims(), SECRET, algorithm=algorithm)

    with pytest.raises(InvalidToken, match="token is invalid"):
        user_from_token(SECRET, token)


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_token_without_required_claim_is_refused(missing):
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm=ALGORITHM)

    with pytest.raises(InvalidToken, match=missing):
        user_from_token(SECRET, token)


@pytest.mark.parametrize("token", [None, "", 42, b"bytes", ["a"], {"token": "x"}])
def test_token_that_is_not_a_non_empty_string_is_refused(token):
    with pytest.raises(InvalidToken, match="non-empty string"):
        user_from_token(SECRET, token)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "....."])
def test_malformed_token_is_refused(token):
    with pytest.raises(InvalidToken, match="token is invalid"):
        user_from_token(SECRET, token)
