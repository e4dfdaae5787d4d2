"""The job queue: job names, queue topology, job arguments, and `JobQueue.enqueue()`.

Jobs are JSON messages on a durable RabbitMQ queue, persistent, consumed by the worker (worker/),
which acknowledges a job only after it finished. A failed job goes to a retry queue whose
messages expire back into the job queue (backoff without a timer in the worker); after the last
retry, or at once for a message that can never succeed (a poison message), it is parked in the
dead-letter queue with its error.

With one broker node the queues are classic; when AMQP_URL lists several nodes (a cluster) the job,
retry and dead-letter queues are quorum queues, replicated on every node, so a job survives the loss
of any one of them (docs/deployment.md). The kind follows the URL list, so a single-node stack keeps
exactly the queues it always declared (redeclaring a queue as another kind fails with
PRECONDITION_FAILED).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import kombu
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from common.contract import RoomTarget, Target, UserTarget  # noqa: F401 (part of this API too)

QueueKind = Literal["classic", "quorum"]

JOBS_EXCHANGE = kombu.Exchange("jobs", type="direct", durable=True)
# Declared exclusively by the worker that runs the scheduler: one scheduler at a time.
SCHEDULER_LOCK_QUEUE = "jobs.scheduler-lock"


def queue_kind(connection: kombu.Connection) -> QueueKind:
    """Quorum queues when the connection fails over between several nodes, classic otherwise."""
    return "quorum" if len(getattr(connection, "alt", None) or ()) > 1 else "classic"


def _arguments(kind: QueueKind, **arguments: object) -> dict[str, object]:
    return {**arguments, "x-queue-type": "quorum"} if kind == "quorum" else arguments


def jobs_queue(kind: QueueKind = "classic") -> kombu.Queue:
    return kombu.Queue("jobs", JOBS_EXCHANGE, routing_key="jobs", durable=True,
                       queue_arguments=_arguments(kind) or None)


def dead_letter_queue(kind: QueueKind = "classic") -> kombu.Queue:
    return kombu.Queue("jobs.dead", durable=True, queue_arguments=_arguments(kind) or None)


JOBS_QUEUE = jobs_queue()
DEAD_LETTER_QUEUE = dead_letter_queue()


class Job:
    """Job names; worker/jobs.py registers a function for each."""

    NOTIFY = "notify"
    LONG_TASK = "long_task"
    SERVER_EVENT = "server_event"


def retry_queue(delay_seconds: float, kind: QueueKind = "classic") -> kombu.Queue:
    """A queue whose messages wait `delay_seconds`, then expire back into the job queue."""
    delay_ms = int(delay_seconds * 1000)
    return kombu.Queue(f"jobs.retry.{delay_ms}ms", durable=True, queue_arguments=_arguments(
        kind,
        **{"x-message-ttl": delay_ms,
           "x-dead-letter-exchange": JOBS_EXCHANGE.name,
           "x-dead-letter-routing-key": JOBS_QUEUE.routing_key}))


# -- what to do with a job that failed -------------------------------------------------------

@dataclass(frozen=True)
class Retry:
    """Run the job again as attempt `attempt`, after `delay` seconds in a retry queue."""

    delay: float
    attempt: int


@dataclass(frozen=True)
class DeadLetter:
    """Park the job in the dead-letter queue with `reason`; it will not run again."""

    reason: str


def decide(attempt: int, retry_delays: Sequence[float], error: BaseException) -> Retry | DeadLetter:
    """The fate of a job whose attempt number `attempt` (1 for the first run) raised `error`.

    Attempt n is retried after retry_delays[n - 1]; once every delay has been used, the job is
    dead-lettered. No I/O: the consumer carries the decision out.
    """
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {attempt}")
    if attempt > len(retry_delays):
        return DeadLetter(f"failed after {attempt} attempts: {error!r}")
    return Retry(delay=retry_delays[attempt - 1], attempt=attempt + 1)


# -- job arguments ---------------------------------------------------------------------------

class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotificationRequest(Args):
    """The body of POST /api/notifications."""

    to: Target
    data: dict[str, Any]


class NotifyArgs(NotificationRequest):
    created_at: int  # ms since the epoch, when the notification was accepted


class LongTaskArgs(Args):
    room: StrictStr = Field(min_length=1, max_length=200)  # who sees the progress
    steps: int = Field(default=10, ge=1, le=100)
    step_seconds: float = Field(default=0.5, ge=0, le=10)
    # Simulated failures, to see retries and the dead-letter queue at work.
    fail_at_step: int | None = Field(default=None, ge=1)
    fail_attempts: int = Field(default=0, ge=0)  # fail only the first N attempts; 0 = every one


class ServerEventArgs(Args):
    count: int = Field(ge=0)


def now_ms() -> int:
    return int(time.time() * 1000)


def job_message(name: str, args: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
    return {"id": job_id or uuid.uuid4().hex, "name": name, "args": args, "attempt": 1,
            "enqueued_at": now_ms()}


class EnqueueFailed(RuntimeError):
    """The broker did not take the job (it is unreachable); nothing was enqueued."""


class JobQueue:
    """Enqueues jobs from any process: web handlers, scripts, other services.

    Create one per process and keep it. Publishing is serialized, so greenlets and threads may
    share it, and bounded: an unreachable broker raises EnqueueFailed within about a second
    instead of blocking the caller.
    """

    def __init__(self, amqp_url: str, connect_timeout: float = 0.4):
        # With several nodes (a cluster), one connection attempt per node before giving up.
        self._attempts = amqp_url.count(";") + 1
        # transport_options bound the implicit connect of Producer()/default_channel too.
        self._connection = kombu.Connection(amqp_url, connect_timeout=connect_timeout,
                                            transport_options={
                                                "max_retries": self._attempts,
                                                "connect_retries_timeout":
                                                    connect_timeout * self._attempts,
                                                "interval_start": 0.1,
                                                "interval_step": 0.2, "interval_max": 0.2})
        self._lock = threading.Lock()
        self._queue = jobs_queue(queue_kind(self._connection))

    def enqueue(self, name: str, args: dict[str, Any], job_id: str | None = None) -> str:
        message = job_message(name, args, job_id)
        with self._lock:
            try:
                producer = self._connection.Producer()
                # One reconnection, quickly: a request handler waits at most about a second.
                publish = self._connection.ensure(producer, producer.publish,
                                                  max_retries=self._attempts,
                                                  interval_start=0.1, interval_step=0.2)
                publish(message, exchange=JOBS_EXCHANGE, routing_key=JOBS_QUEUE.routing_key,
                        declare=[self._queue], serializer="json", delivery_mode="persistent")
            except Exception as exc:
                self._connection.release()
                raise EnqueueFailed(f"job queue unreachable: {exc}") from exc
        return message["id"]

    def close(self) -> None:
        self._connection.release()
