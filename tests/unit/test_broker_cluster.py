"""A RabbitMQ cluster in AMQP_URL: the URL list, the queue kind that follows from it, and a job
cut off from its broker node."""

from __future__ import annotations

import random
import time
from concurrent.futures import wait

import kombu
import pytest
from pydantic import ValidationError

from common.contract import Event
from common.jobs import Job, dead_letter_queue, job_message, jobs_queue, queue_kind
from common.settings import Settings, spread_amqp_urls
from tests.support.fakes import FakeEmitter, MemoryJobBroker
from worker.consumer import JobCancelled, JobConsumer
from worker.retry import retry_queue

NODES = [f"amqp://app:secret@rabbitmq-{n}:5672//" for n in (1, 2, 3)]
CLUSTER_URL = ";".join(NODES)


def test_one_url_is_left_as_it_is():
    assert spread_amqp_urls(NODES[0]) == NODES[0]
    assert Settings(amqp_url=NODES[0]).amqp_url.get_secret_value() == NODES[0]


def test_a_url_list_is_rotated_to_a_random_start_keeping_its_order():
    starts = set()
    for seed in range(30):
        rotated = spread_amqp_urls(CLUSTER_URL, random.Random(seed)).split(";")
        assert sorted(rotated) == sorted(NODES)
        start = NODES.index(rotated[0])
        assert rotated == NODES[start:] + NODES[:start]
        starts.add(start)
    assert starts == {0, 1, 2}  # the processes of a stack spread over every node


def test_settings_keep_every_node():
    urls = Settings(amqp_url=f" {NODES[0]} ; {NODES[1]};{NODES[2]}").amqp_url.get_secret_value()
    assert sorted(urls.split(";")) == sorted(NODES)


def test_an_entry_that_is_no_url_is_refused_without_showing_a_password():
    with pytest.raises(ValidationError) as error:
        Settings(amqp_url=f"{NODES[0]};secret-password@rabbitmq-2")
    assert "rabbitmq-2" in str(error.value) and "secret-password" not in str(error.value)
    with pytest.raises(ValidationError, match="empty entry"):
        Settings(amqp_url=f"{NODES[0]};")


def test_the_guest_account_is_refused_on_any_node_in_production():
    with pytest.raises(ValidationError, match="guest"):
        Settings(app_env="production", secret_key="s" * 32, api_key="a" * 32,
                 amqp_url=f"{NODES[0]};amqp://guest:guest@rabbitmq-2:5672//")


def test_several_nodes_make_the_job_queues_quorum_queues_one_node_keeps_them_classic():
    assert queue_kind(kombu.Connection(NODES[0])) == "classic"
    assert queue_kind(kombu.Connection(CLUSTER_URL)) == "quorum"
    for make in (jobs_queue, dead_letter_queue, lambda kind: retry_queue(5, kind)):
        assert "x-queue-type" not in (make("classic").queue_arguments or {})
        assert make("quorum").queue_arguments["x-queue-type"] == "quorum"
    # A retry queue keeps its expiry back into the job queue either way.
    assert retry_queue(5, "quorum").queue_arguments["x-message-ttl"] == 5000


def test_a_job_whose_broker_connection_was_lost_stops_at_its_next_emit():
    """Its message goes back to the queue and to another worker: this copy must not finish too."""
    broker, emitter = MemoryJobBroker([0.1]), FakeEmitter()
    consumer = JobConsumer(broker.connection, emitter, [0.1])
    try:
        message = broker.deliver(job_message(Job.LONG_TASK, {"room": "r", "steps": 3,
                                                             "step_seconds": 0.3}))
        consumer.on_job(message.payload, message)
        running = consumer.running
        time.sleep(0.45)  # into the second step
        consumer.on_connection_revived()  # reconnected: the job was redelivered elsewhere
        wait([running.future], timeout=5)
        assert isinstance(running.future.exception(), JobCancelled)
        assert consumer.running is None and not message.acknowledged
        assert [e.data["step"] for e in emitter.events(Event.JOB_PROGRESS)] == [1]
        assert emitter.events(Event.JOB_DONE) == []  # the emit after the loss raised
    finally:
        consumer._runner.shutdown(wait=True)
        broker.close()
