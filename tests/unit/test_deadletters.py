"""The dead-letter CLI's decisions, without a broker: naming, describing, what a requeue sends."""

from __future__ import annotations

import pytest

from common.jobs import Job, job_message
from worker import deadletters


def test_an_entry_is_named_by_its_job_id_and_a_poison_one_by_its_content():
    job = job_message(Job.NOTIFY, {"to": "all", "data": {}}, "abc")
    assert deadletters.entry_id({"job": job, "error": "e"}) == "abc"
    poison = {"job": "not json", "error": "poison", "dead_at": 1}
    assert deadletters.entry_id(poison) == deadletters.entry_id(dict(poison))
    assert deadletters.entry_id(poison).startswith("poison-")
    assert deadletters.entry_id({**poison, "dead_at": 2}) != deadletters.entry_id(poison)


def test_describe_is_one_line_with_name_attempt_time_and_error():
    job = {**job_message(Job.LONG_TASK, {"room": "r"}, "j1"), "attempt": 3}
    line = deadletters.describe({"job": job, "error": "boom", "dead_at": 0})
    assert line == "j1  long_task  attempt 3  1970-01-01T00:00:00+00:00  boom"
    assert "(not a dead-letter entry)" in deadletters.describe("garbage")


def test_a_requeued_job_is_a_first_attempt_and_poison_cannot_be_requeued():
    job = {**job_message(Job.LONG_TASK, {"room": "r"}, "j1"), "attempt": 3}
    assert deadletters.requeued_job({"job": job}) == {**job, "attempt": 1}
    with pytest.raises(ValueError, match="purge it instead"):
        deadletters.requeued_job({"job": "not json"})
