"""`create_app()` takes its job queue as a collaborator: `start_job` and the notifications API,
tested with a fake queue that records what would be enqueued (or fails as a broker outage would)."""

from __future__ import annotations

import pytest

from common.contract import Event, user_room
from common.job_queue import REFUSAL_MESSAGES, EnqueueFailed
from common.jobs import Job
from tests.support.app import TestClient, unit_settings
from web.app import create_app
from web.extensions import socketio

API_KEY = "unit-test-api-key-0123456789abcdef-0123"


class FakeJobQueue:
    """What `web` needs of common.job_queue.JobQueue: `enqueue(name, args, job_id)` -> its id."""

    def __init__(self, fail: bool = False):
        self.enqueued: list[tuple[str, dict, str]] = []
        self.fail = fail
        self.reason = "unreachable"  # why it fails, when it does

    def enqueue(self, name: str, args: dict, job_id: str | None = None) -> str:
        if self.fail:
            raise EnqueueFailed(f"broker {self.reason}", self.reason)
        job_id = job_id or f"job-{len(self.enqueued) + 1}"
        self.enqueued.append((name, args, job_id))
        return job_id


@pytest.fixture
def jobs():
    return FakeJobQueue()


@pytest.fixture
def app_with(jobs):
    return create_app(unit_settings(api_key=API_KEY), async_mode="threading",
                      use_message_queue=False, job_queue=jobs)


def test_anonymous_clients_cannot_start_jobs(app_with, jobs):
    client = TestClient(app_with, socketio)
    answer = client.emit(Event.START_JOB, {"steps": 3}, callback=True)
    assert answer == {"event": Event.START_JOB, "error": "sign in to start a job"}
    assert jobs.enqueued == []
    client.disconnect()


def signed_in(app) -> TestClient:
    token = app.test_client().post("/api/demo/token", json={"user": "ada"}).get_json()["token"]
    return TestClient(app, socketio, auth={"token": token})


def test_start_job_of_a_signed_in_user_reports_to_the_users_room(app_with, jobs):
    client = signed_in(app_with)
    answer = client.emit(Event.START_JOB, {}, callback=True)
    [(name, args, job_id)] = jobs.enqueued
    assert answer == {"job_id": job_id}
    assert name == Job.LONG_TASK and args == {"room": user_room("ada"), "steps": 10}
    client.disconnect()


def test_start_job_while_the_queue_is_down_answers_an_error(app_with, jobs):
    jobs.fail = True
    client = signed_in(app_with)
    answer = client.emit(Event.START_JOB, {"steps": 2}, callback=True)
    assert answer == {"event": Event.START_JOB,
                      "error": "the job queue is unavailable; try again shortly"}
    assert client.is_connected()
    client.disconnect()


def test_the_api_enqueues_one_notify_job_per_notification(app_with, jobs):
    body = {"to": {"user": "ada"}, "data": {"title": "hello"}}
    answer = app_with.test_client().post("/api/notifications", json=body,
                                         headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 202
    [(name, args, job_id)] = jobs.enqueued
    assert name == Job.NOTIFY and job_id == answer.get_json()["id"]
    assert args["to"] == {"user": "ada"} and args["data"] == {"title": "hello"}
    assert isinstance(args["created_at"], int)


def test_the_api_answers_503_when_the_queue_is_down(app_with, jobs):
    jobs.fail = True
    answer = app_with.test_client().post(
        "/api/notifications", json={"to": "all", "data": {}},
        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 503 and "unavailable" in answer.get_json()["error"]
    assert answer.get_json()["reason"] == "unreachable" and answer.headers["Retry-After"]


@pytest.mark.parametrize("reason", REFUSAL_MESSAGES)
def test_each_refusal_is_a_503_saying_why_without_the_brokers_details(app_with, jobs, reason):
    jobs.fail, jobs.reason = True, reason
    answer = app_with.test_client().post(
        "/api/notifications", json={"to": "all", "data": {}},
        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 503
    assert answer.get_json() == {"error": REFUSAL_MESSAGES[reason], "reason": reason}


def test_start_job_during_a_resource_alarm_says_so(app_with, jobs):
    jobs.fail, jobs.reason = True, "blocked"
    client = signed_in(app_with)
    answer = client.emit(Event.START_JOB, {"steps": 2}, callback=True)
    assert answer == {"event": Event.START_JOB, "error": REFUSAL_MESSAGES["blocked"]}
    client.disconnect()


def test_the_api_refuses_a_wrong_key_without_enqueueing(app_with, jobs):
    answer = app_with.test_client().post("/api/notifications", json={"to": "all", "data": {}},
                                         headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and jobs.enqueued == []
