"""Readiness: 503 only when a replica cannot serve (draining); broker trouble is "degraded", 200,
naming what is missing, so that nothing takes a replica out while it still serves its clients."""

from __future__ import annotations

import pytest

from tests.support.app import unit_settings
from web.app import create_app
from web.extensions import current_drain
from web.routes import RECENT_REFUSAL_SECONDS, assess_readiness

BROKER_UP = {"listener_bound": True, "publisher_connected": True, "publisher_blocked": False,
             "listener_queue": "q", "outbox": 0}
JOBS_OK = {"blocked": False, "last_refusal": None, "last_refusal_seconds_ago": None}


def test_everything_up_is_ready():
    body = assess_readiness(draining=False, broker=BROKER_UP, jobs=JOBS_OK,
                            recovery={"ready": True})
    assert body["status"] == "ready" and body["degraded"] == {}


def test_a_broker_away_degrades_and_names_both_connections():
    broker = {**BROKER_UP, "listener_bound": False, "publisher_connected": False}
    body = assess_readiness(draining=False, broker=broker, jobs=JOBS_OK, recovery=None)
    assert body["status"] == "degraded"
    assert set(body["degraded"]) == {"broker_listener", "broker_publisher"}
    assert body["broker"] == broker


def test_a_resource_alarm_degrades_the_fanout_and_the_job_queue():
    body = assess_readiness(draining=False, broker={**BROKER_UP, "publisher_blocked": True},
                            jobs={**JOBS_OK, "blocked": True}, recovery=None)
    assert body["status"] == "degraded"
    assert set(body["degraded"]) == {"broker_blocked", "job_queue"}
    assert "memory or disk" in body["degraded"]["job_queue"]


@pytest.mark.parametrize(("seconds_ago", "degraded"), [
    (1.0, True), (RECENT_REFUSAL_SECONDS + 1, False)])
def test_only_a_recent_refused_submission_degrades(seconds_ago, degraded):
    jobs = {"blocked": False, "last_refusal": "unreachable",
            "last_refusal_seconds_ago": seconds_ago}
    body = assess_readiness(draining=False, broker=BROKER_UP, jobs=jobs, recovery=None)
    assert ("job_queue" in body["degraded"]) is degraded
    assert body["jobs"] == jobs  # shown either way


def test_a_recovery_reader_not_ready_degrades():
    body = assess_readiness(draining=False, broker=BROKER_UP, jobs=JOBS_OK,
                            recovery={"ready": False})
    assert body["status"] == "degraded" and set(body["degraded"]) == {"recovery"}


def test_draining_is_not_ready_whatever_else():
    body = assess_readiness(draining=True, broker=BROKER_UP, jobs=JOBS_OK, recovery=None)
    assert body["status"] == "not ready" and body["draining"]


def test_the_route_answers_200_until_the_replica_drains():
    app = create_app(unit_settings(), async_mode="threading", use_message_queue=False)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    assert ready.get_json()["replica"] == "unit-1"
    with app.app_context():
        current_drain().draining = True
    try:
        draining = client.get("/readyz")
    finally:
        with app.app_context():
            current_drain().draining = False
    assert draining.status_code == 503 and draining.get_json()["status"] == "not ready"
