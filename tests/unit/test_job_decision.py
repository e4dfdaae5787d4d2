"""What happens to a job that failed (worker.retry.decide) and which messages are jobs at all
(worker.consumer.parse_job): pure functions, tested exhaustively."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.jobs import Job, job_message
from worker.consumer import PoisonMessage, parse_job
from worker.retry import DeadLetter, Retry, decide

ERROR = RuntimeError("boom")
delays = st.lists(st.floats(min_value=0, max_value=3600, allow_nan=False), max_size=8)


@pytest.mark.parametrize(("attempt", "retry_delays", "expected"), [
    (1, [], DeadLetter("failed after 1 attempts: RuntimeError('boom')")),
    (1, [0.2], Retry(delay=0.2, attempt=2)),
    (2, [0.2], DeadLetter("failed after 2 attempts: RuntimeError('boom')")),
    (1, [0.2, 0.5], Retry(delay=0.2, attempt=2)),
    (2, [0.2, 0.5], Retry(delay=0.5, attempt=3)),
    (3, [0.2, 0.5], DeadLetter("failed after 3 attempts: RuntimeError('boom')")),
    (7, [0.2, 0.5], DeadLetter("failed after 7 attempts: RuntimeError('boom')")),
])
def test_decide(attempt, retry_delays, expected):
    assert decide(attempt, retry_delays, ERROR) == expected


@given(retry_delays=delays, attempt=st.integers(min_value=1, max_value=20))
def test_attempt_n_is_retried_after_the_nth_delay_until_the_delays_run_out(retry_delays, attempt):
    decision = decide(attempt, retry_delays, ERROR)

    if attempt <= len(retry_delays):
        assert decision == Retry(delay=retry_delays[attempt - 1], attempt=attempt + 1)
    else:
        assert isinstance(decision, DeadLetter)
        assert f"after {attempt} attempts" in decision.reason and repr(ERROR) in decision.reason


@given(retry_delays=delays)
def test_a_job_that_always_fails_waits_every_delay_once_in_order_then_is_dead_lettered(
        retry_delays):
    waited, attempt = [], 1
    while isinstance(decision := decide(attempt, retry_delays, ERROR), Retry):
        assert decision.attempt == attempt + 1
        waited.append(decision.delay)
        attempt = decision.attempt

    assert waited == retry_delays
    assert decision == DeadLetter(f"failed after {len(retry_delays) + 1} attempts: {ERROR!r}")


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_numbered_from_one(attempt):
    with pytest.raises(ValueError, match="numbered from 1"):
        decide(attempt, [0.2], ERROR)


# -- which messages are jobs -----------------------------------------------------------------------

def test_a_job_message_is_a_job_and_its_attempt_defaults_to_one():
    message = job_message(Job.NOTIFY, {"to": "all", "data": {}, "created_at": 0})
    assert parse_job(message) == message
    del message["attempt"]
    assert parse_job(message)["attempt"] == 1


@pytest.mark.parametrize(("body", "reason"), [
    pytest.param("a string", "not a job", id="not-a-dict"),
    pytest.param({"name": Job.NOTIFY, "args": {}}, "not a job", id="no-id"),
    pytest.param({"id": 1, "name": Job.NOTIFY, "args": {}}, "not a job", id="id-not-text"),
    pytest.param({"id": "j", "args": {}}, "not a job", id="no-name"),
    pytest.param({"id": "j", "name": Job.NOTIFY, "args": []}, "not a job", id="args-not-a-dict"),
    pytest.param({"id": "j", "name": "no_such_job", "args": {}}, "unknown job", id="unknown"),
    pytest.param({"id": "j", "name": Job.NOTIFY, "args": {}, "attempt": 0}, "attempt",
                 id="attempt-zero"),
    pytest.param({"id": "j", "name": Job.NOTIFY, "args": {}, "attempt": "2"}, "attempt",
                 id="attempt-text"),
    pytest.param({"id": "j", "name": Job.NOTIFY, "args": {}, "attempt": True}, "attempt",
                 id="attempt-bool"),
])
def test_what_is_not_a_runnable_job_is_poison(body, reason):
    with pytest.raises(PoisonMessage, match=reason):
        parse_job(body)
