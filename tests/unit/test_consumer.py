"""The job consumer (worker/consumer.py) on kombu's in-memory transport with a fake emitter: a job
is acknowledged only once it finished and its events are out; a failed one goes to its retry
queue or, at the end, to the dead-letter queue; poison is parked at once."""

from __future__ import annotations

from concurrent.futures import wait

import pytest

from common.contract import Event
from common.jobs import DEAD_LETTER_QUEUE, JOBS_QUEUE, Job, job_message
from tests.support.fakes import FakeEmitter, MemoryJobBroker
from tests.support.metrics import local_metric
from worker.consumer import JobConsumer
from worker.retry import retry_queue

RETRY_DELAYS = [0.2, 0.5]


@pytest.fixture
def broker():
    memory = MemoryJobBroker(RETRY_DELAYS)
    yield memory
    memory.close()


@pytest.fixture
def emitter():
    return FakeEmitter()


@pytest.fixture
def consumer(broker, emitter):
    job_consumer = JobConsumer(broker.connection, emitter, RETRY_DELAYS)
    yield job_consumer
    job_consumer._runner.shutdown(wait=True)


def settle(consumer: JobConsumer) -> None:
    """Let the running job finish, then let the consumer settle it (its next loop iteration)."""
    if consumer.running is not None:
        wait([consumer.running.future], timeout=5)
    consumer.on_iteration()
    assert consumer.running is None


def jobs_counted(name: str, outcome: str) -> float:
    return local_metric("jobs_total", f'job="{name}",outcome="{outcome}"')


def long_task(room: str = "r1", **args) -> dict:
    return job_message(Job.LONG_TASK, {"room": room, "steps": 2, "step_seconds": 0, **args})


def test_a_finished_job_is_acknowledged_after_its_events(broker, emitter, consumer):
    done_before = jobs_counted(Job.LONG_TASK, "done")
    message = broker.deliver(long_task())

    consumer.on_job(message.payload, message)
    assert not message.acknowledged  # running: a crash now leaves it to another worker
    settle(consumer)

    assert message.acknowledged and broker.take(JOBS_QUEUE) == []
    assert len(emitter.events(Event.JOB_DONE)) == 1
    assert jobs_counted(Job.LONG_TASK, "done") == done_before + 1


def test_a_job_whose_events_did_not_reach_the_broker_is_handed_out_again(broker, consumer,
                                                                         emitter):
    emitter.flushed = False
    job = long_task()
    message = broker.deliver(job)

    consumer.on_job(message.payload, message)
    settle(consumer)

    assert broker.take(JOBS_QUEUE) == [job]  # requeued, not acknowledged


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0.2), (2, 0.5)])
def test_a_failed_attempt_goes_to_its_retry_queue_with_the_next_attempt_number(
        broker, consumer, attempt, delay):
    retried_before = jobs_counted(Job.LONG_TASK, "retried")
    job = {**long_task(fail_at_step=1), "attempt": attempt}
    message = broker.deliver(job)

    consumer.on_job(message.payload, message)
    settle(consumer)

    assert broker.take(retry_queue(delay)) == [{**job, "attempt": attempt + 1}]
    other_delays = [other for other in RETRY_DELAYS if other != delay]
    assert all(broker.take(retry_queue(other)) == [] for other in other_delays)
    assert broker.take(DEAD_LETTER_QUEUE) == []
    assert message.acknowledged  # after the retry was published, never before
    assert jobs_counted(Job.LONG_TASK, "retried") == retried_before + 1


def test_the_last_failed_attempt_is_dead_lettered_with_its_error(broker, consumer):
    failed_before = jobs_counted(Job.LONG_TASK, "failed")
    job = {**long_task(fail_at_step=1), "attempt": len(RETRY_DELAYS) + 1}
    message = broker.deliver(job)

    consumer.on_job(message.payload, message)
    settle(consumer)

    (parked,) = broker.take(DEAD_LETTER_QUEUE)
    assert parked["job"] == job
    assert parked["error"].startswith("failed after 3 attempts: SimulatedFailure(")
    assert isinstance(parked["dead_at"], int)
    assert all(broker.take(retry_queue(delay)) == [] for delay in RETRY_DELAYS)
    assert message.acknowledged
    assert jobs_counted(Job.LONG_TASK, "failed") == failed_before + 1


@pytest.mark.parametrize("body", [
    pytest.param({"hello": "world"}, id="not-a-job"),
    pytest.param(job_message("no_such_job", {}), id="unknown-job"),
    pytest.param(job_message(Job.LONG_TASK, {"steps": 2}), id="invalid-arguments"),
    pytest.param({**long_task(), "attempt": "1"}, id="invalid-attempt"),
])
def test_poison_is_dead_lettered_at_once_without_running(broker, consumer, emitter, body):
    poison_before = jobs_counted("unknown", "poison")
    message = broker.deliver(body)

    consumer.on_job(message.payload, message)

    assert consumer.running is None and emitter.emitted == []
    (parked,) = broker.take(DEAD_LETTER_QUEUE)
    assert parked["job"] == body and parked["error"].startswith("poison message: ")
    assert message.acknowledged
    assert jobs_counted("unknown", "poison") == poison_before + 1


def test_a_message_that_cannot_be_decoded_is_dead_lettered_as_text(broker, consumer):
    message = broker.deliver(b"\xff{not json", content_type="application/json",
                             content_encoding="binary")

    consumer.on_undecodable(message, ValueError("not JSON"))

    (parked,) = broker.take(DEAD_LETTER_QUEUE)
    assert parked["job"] == "\ufffd{not json"
    assert parked["error"] == "poison message: undecodable: not JSON"
    assert message.acknowledged


def test_stop_waits_for_the_running_job_to_be_settled(broker, consumer):
    message = broker.deliver(long_task())
    consumer.on_job(message.payload, message)

    consumer.request_stop()
    assert not consumer.should_stop  # a job is running
    settle(consumer)
    consumer.on_iteration()

    assert message.acknowledged and consumer.should_stop


def test_stop_when_idle_is_immediate(consumer):
    consumer.request_stop()

    assert consumer.should_stop


@pytest.mark.parametrize(("job", "level"), [
    (job_message(Job.SERVER_EVENT, {"count": 1}), "DEBUG"),  # every few seconds: not on screen
    (long_task(), "INFO"),
])
def test_a_periodic_job_logs_its_runs_at_debug_and_others_at_info(broker, consumer, caplog, job,
                                                                  level):
    caplog.set_level("DEBUG", logger="worker.consumer")
    message = broker.deliver(job)

    consumer.on_job(message.payload, message)
    settle(consumer)

    lines = [r for r in caplog.records if r.getMessage().startswith(f"job {job['name']} ")]
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in lines] == ["started", "done"]
    assert {r.levelname for r in lines} == {level}
