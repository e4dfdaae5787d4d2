"""Consuming the job queue: run, then acknowledge; retry with backoff; dead-letter what fails."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import kombu
from kombu.mixins import ConsumerMixin
from pydantic import ValidationError

from common import metrics
from common.jobs import dead_letter_queue, jobs_queue, now_ms, queue_kind
from worker.jobs import JOBS, Emitter, JobContext
from worker.retry import DeadLetter, decide, retry_queue

log = logging.getLogger(__name__)


def progress_level(job: dict) -> int:
    """The level of a job's "started" and "done" lines: DEBUG for a routine (periodic) job."""
    return logging.DEBUG if JOBS[job["name"]].routine else logging.INFO


FLUSH_TIMEOUT = 10.0  # how long a finished job waits for its events to reach the broker


class StopConsuming(Exception):
    """Asked to stop while the broker is unreachable."""


class PoisonMessage(Exception):
    """A message that can never succeed: not a job, an unknown job, or invalid arguments."""


def parse_job(body: Any) -> dict:
    """The job in a message body, with its attempt number (1 when absent); PoisonMessage if none."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) \
            or not isinstance(body.get("name"), str) or not isinstance(body.get("args"), dict):
        raise PoisonMessage("not a job: expected {id, name, args, attempt}")
    if body["name"] not in JOBS:
        raise PoisonMessage(f"unknown job {body['name']!r}")
    attempt = body.get("attempt", 1)
    if type(attempt) is not int or attempt < 1:
        raise PoisonMessage(f"attempt must be a whole number from 1, got {attempt!r}")
    return {**body, "attempt": attempt}


class FlushingEmitter(Emitter, Protocol):
    """The worker's emitter (common.broker's write-only QueueManager), or a fake in tests."""

    def flush(self, timeout: float) -> bool:
        """Wait until everything emitted so far is on the broker; False if it took longer."""


class JobCancelled(Exception):
    """The job's broker connection was lost: its message goes to another worker, so stop here."""


class CancellableEmitter:
    """The emitter of one running job, cut off once the job's message is no longer ours.

    When the connection that delivered a job drops (its broker node went away), RabbitMQ hands the
    job to another worker. This worker's copy keeps running on its thread, but its next emit raises
    JobCancelled, so the two copies do not both run to completion at once.
    """

    def __init__(self, emitter: Emitter):
        self._emitter = emitter
        self.cancelled = False

    def emit(self, *args, **kwargs) -> None:
        if self.cancelled:
            raise JobCancelled("the job's broker connection was lost; another worker runs it")
        self._emitter.emit(*args, **kwargs)


@dataclass
class RunningJob:
    job: dict
    message: kombu.Message
    future: Future
    emitter: CancellableEmitter | None = None


class JobConsumer(ConsumerMixin):
    """One job at a time (prefetch 1); the message is acknowledged only after the job finished.

    A worker killed mid-job never acknowledged it, so RabbitMQ hands it to another worker.
    """

    def __init__(self, connection: kombu.Connection, emitter: FlushingEmitter,
                 retry_delays: list[float]):
        self.connection = connection
        self.emitter = emitter
        self.retry_delays = retry_delays
        self.consuming = False
        self.running: RunningJob | None = None
        self.stopping = False
        kind = queue_kind(connection)
        self.jobs_queue, self.dead_letter_queue = jobs_queue(kind), dead_letter_queue(kind)
        self.queue_kind = kind
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.consuming = True
        log.info("consuming %s (%s queue)", self.jobs_queue.name, self.queue_kind)

    def on_connection_error(self, exc, interval):
        self.consuming = False
        if self.stopping:  # no job to finish and no broker to finish it with: stop now
            raise StopConsuming() from exc
        log.error("job queue connection lost (%s); retrying in %.1fs", exc, interval)

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[self.jobs_queue], callbacks=[self.on_job], accept=["json"],
                         prefetch_count=1, on_decode_error=self.on_undecodable)]

    def on_job(self, body: Any, message: kombu.Message) -> None:
        try:
            job = parse_job(body)
            function = JOBS[job["name"]]
            args = function.args_model.model_validate(job["args"])
        except (PoisonMessage, ValidationError) as exc:
            self._dead_letter(message, body, f"poison message: {exc}", "poison")
            return
        attempt = job["attempt"]
        emitter = CancellableEmitter(self.emitter)
        context = JobContext(job_id=job["id"], attempt=attempt, emitter=emitter)
        redelivered = " (redelivered)" if message.delivery_info.get("redelivered") else ""
        log.log(progress_level(job), "job %s %s attempt %d started%s", job["name"], job["id"],
                attempt, redelivered)
        # The job runs on its own thread so this one keeps the broker connection's heartbeats
        # going however long the job takes; prefetch 1 means no other job arrives meanwhile.
        self.running = RunningJob(job, message, self._runner.submit(self._run, function, context,
                                                                    args, job["name"]), emitter)

    def _run(self, function, context: JobContext, args, name: str) -> bool:
        """Run the job, then wait until its events are on the broker. False: not published."""
        started = time.monotonic()
        try:
            function.run(context, args)
        finally:
            metrics.JOB_DURATION.labels(name).observe(time.monotonic() - started)
        return self.emitter.flush(FLUSH_TIMEOUT)

    def request_stop(self) -> None:
        """Stop once the running job (if any) is finished and settled."""
        self.stopping = True
        if self.running is None:
            self.should_stop = True

    def on_iteration(self) -> None:
        """Between broker reads: settle the running job once it has finished."""
        running = self.running
        if running is None or not running.future.done():
            if running is None and self.stopping:
                self.should_stop = True
            return
        self.running = None
        job, message = running.job, running.message
        try:
            published = running.future.result()
        except Exception as exc:
            self._retry_or_dead_letter(message, job, exc)
            return
        if not published:
            # Not acknowledged: the broker will hand the job out again once it is back.
            log.error("job %s %s: events not published within %.0fs; leaving it unacknowledged",
                      job["name"], job["id"], FLUSH_TIMEOUT)
            message.requeue()
            return
        message.ack()
        metrics.JOBS.labels(job["name"], "done").inc()
        log.log(progress_level(job), "job %s %s done", job["name"], job["id"])

    def on_connection_revived(self) -> None:
        # A job that was running when the connection dropped will be redelivered; its message
        # belongs to the dead channel and can no longer be acknowledged.
        if self.running is not None:
            log.warning("job %s %s outlived its broker connection; it will run again",
                        self.running.job["name"], self.running.job["id"])
            if self.running.emitter is not None:
                self.running.emitter.cancelled = True
            self.running = None

    def on_undecodable(self, message: kombu.Message, exc: Exception) -> None:
        self._dead_letter(message, message.body, f"poison message: undecodable: {exc}", "poison")

    def _retry_or_dead_letter(self, message: kombu.Message, job: dict, exc: Exception) -> None:
        decision = decide(job["attempt"], self.retry_delays, exc)
        if isinstance(decision, DeadLetter):
            self._dead_letter(message, job, decision.reason, "failed", job["name"])
            return
        self._publish(message, {**job, "attempt": decision.attempt},
                      retry_queue(decision.delay, self.queue_kind))
        message.ack()
        metrics.JOBS.labels(job["name"], "retried").inc()
        log.warning("job %s %s attempt %d failed (%r); retrying in %.1fs",
                    job["name"], job["id"], job["attempt"], exc, decision.delay)

    def _dead_letter(self, message: kombu.Message, body: Any, error: str, outcome: str,
                     job_name: str = "unknown") -> None:
        if isinstance(body, (bytes, bytearray)):
            body = body.decode("utf-8", errors="replace")
        self._publish(message, {"job": body, "error": error, "dead_at": now_ms()},
                      self.dead_letter_queue)
        message.ack()
        metrics.JOBS.labels(job_name, outcome).inc()
        log.error("job parked in %s: %s", self.dead_letter_queue.name, error)

    def _publish(self, message: kombu.Message, body: Any, queue: kombu.Queue) -> None:
        # On the consuming channel, before the ack: a crash in between re-runs the job rather than
        # losing it.
        producer = kombu.Producer(message.channel)
        producer.publish(json.dumps(body), routing_key=queue.name, exchange="", declare=[queue],
                         content_type="application/json", content_encoding="utf-8",
                         delivery_mode="persistent")
