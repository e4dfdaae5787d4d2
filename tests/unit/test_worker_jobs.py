"""The job functions (worker/jobs.py) against a fake emitter: what each one sends, to whom."""

from __future__ import annotations

import pytest

from common.contract import MAIN_NAMESPACE, Event, user_room
from common.jobs import Job
from tests.support.fakes import FakeEmitter
from worker.jobs import JOBS, JobContext, SimulatedFailure


def run(name: str, args: dict, attempt: int = 1, job_id: str = "job-1",
        emitter: FakeEmitter | None = None) -> FakeEmitter:
    """Run job `name` as the consumer does (arguments validated by its model); what it emitted."""
    emitter = emitter or FakeEmitter()
    function = JOBS[name]
    function.run(JobContext(job_id=job_id, attempt=attempt, emitter=emitter),
                 function.args_model.model_validate(args))
    return emitter


def test_every_job_name_has_a_function_and_every_function_a_name():
    names = {value for name, value in vars(Job).items() if name.isupper()}
    assert names, "Job lists no job names"
    assert set(JOBS) == names


@pytest.mark.parametrize(("to", "room"), [
    ("all", None),
    ({"user": "alice"}, user_room("alice")),
    ({"room": "lobby"}, "lobby"),
])
def test_notify_sends_one_notification_with_the_jobs_id(to, room):
    emitter = run(Job.NOTIFY, {"to": to, "data": {"text": "hi"}, "created_at": 123},
                  job_id="n-42")

    (sent,) = emitter.emitted
    assert sent.event == Event.NOTIFICATION and sent.namespace == MAIN_NAMESPACE
    assert sent.room == room
    # The id is the job's, so a redelivered job's duplicate is dropped by the clients.
    assert sent.data == {"id": "n-42", "data": {"text": "hi"}, "created_at": 123}


def test_long_task_reports_each_step_then_done_to_its_room():
    emitter = run(Job.LONG_TASK, {"room": "r1", "steps": 4, "step_seconds": 0}, attempt=2)

    progress = emitter.events(Event.JOB_PROGRESS)
    assert [sent.data["percent"] for sent in progress] == [25, 50, 75, 100]
    assert [sent.data["step"] for sent in progress] == [1, 2, 3, 4]
    (done,) = emitter.events(Event.JOB_DONE)
    assert done.data == {"job_id": "job-1", "result": {"steps": 4, "attempt": 2}}
    assert {sent.room for sent in emitter.emitted} == {"r1"}
    assert emitter.emitted[-1] == done


def test_long_task_failing_at_a_step_reports_the_steps_before_it_and_not_done():
    emitter = FakeEmitter()
    with pytest.raises(SimulatedFailure, match="step 3"):
        run(Job.LONG_TASK, {"room": "r1", "steps": 5, "step_seconds": 0, "fail_at_step": 3},
            emitter=emitter)

    assert [sent.data["step"] for sent in emitter.events(Event.JOB_PROGRESS)] == [1, 2]
    assert emitter.events(Event.JOB_DONE) == []


@pytest.mark.parametrize(("attempt", "fails"), [(1, True), (2, True), (3, False)])
def test_long_task_fail_attempts_fails_only_the_first_attempts(attempt, fails):
    args = {"room": "r1", "steps": 2, "step_seconds": 0, "fail_at_step": 1, "fail_attempts": 2}
    if fails:
        with pytest.raises(SimulatedFailure):
            run(Job.LONG_TASK, args, attempt=attempt)
    else:
        assert len(run(Job.LONG_TASK, args, attempt=attempt).events(Event.JOB_DONE)) == 1


def test_server_event_is_broadcast_with_its_count():
    emitter = run(Job.SERVER_EVENT, {"count": 7})

    (sent,) = emitter.emitted
    assert sent.event == Event.SERVER_EVENT and sent.room is None
    assert sent.data["count"] == 7 and sent.data["data"] == "Server generated event"
    assert isinstance(sent.data["sent_at"], int)
