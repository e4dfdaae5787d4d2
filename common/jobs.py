"""The job contract: job names, queue topology, job arguments and the message shape.

What both the processes that submit jobs (web, scripts) and the worker that runs them must agree
on. Jobs are JSON messages on a durable RabbitMQ queue, persistent, consumed by the worker
(worker/), which acknowledges a job only after it finished. Submitting one with publisher confirms
is common/job_queue.py's `JobQueue`; what happens to a job that failed (retries, the dead-letter
queue) is the worker's, worker/retry.py.

With one broker node the queues are classic; when AMQP_URL lists several nodes (a cluster) the job,
retry and dead-letter queues are quorum queues, replicated on every node, so a job survives the loss
of any one of them (docs/deployment.md). The kind follows the URL list, so a single-node stack keeps
exactly the queues it always declared (redeclaring a queue as another kind fails with
PRECONDITION_FAILED).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import kombu
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from common.contract import Target

QueueKind = Literal["classic", "quorum"]

JOBS_EXCHANGE = kombu.Exchange("jobs", type="direct", durable=True)


def queue_kind(connection: kombu.Connection) -> QueueKind:
    """Quorum queues when the connection fails over between several nodes, classic otherwise."""
    return "quorum" if len(getattr(connection, "alt", None) or ()) > 1 else "classic"


def queue_arguments(kind: QueueKind, **arguments: object) -> dict[str, object]:
    """`arguments` for a job queue of this kind (every queue of the job path has the same kind)."""
    return {**arguments, "x-queue-type": "quorum"} if kind == "quorum" else arguments


def jobs_queue(kind: QueueKind = "classic") -> kombu.Queue:
    return kombu.Queue("jobs", JOBS_EXCHANGE, routing_key="jobs", durable=True,
                       queue_arguments=queue_arguments(kind) or None)


def dead_letter_queue(kind: QueueKind = "classic") -> kombu.Queue:
    return kombu.Queue("jobs.dead", durable=True, queue_arguments=queue_arguments(kind) or None)


JOBS_QUEUE = jobs_queue()
DEAD_LETTER_QUEUE = dead_letter_queue()


class Job:
    """Job names; worker/jobs.py registers a function for each."""

    NOTIFY = "notify"
    LONG_TASK = "long_task"
    SERVER_EVENT = "server_event"


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


# -- the message -----------------------------------------------------------------------------

def now_ms() -> int:
    return int(time.time() * 1000)


def job_message(name: str, args: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
    return {"id": job_id or uuid.uuid4().hex, "name": name, "args": args, "attempt": 1,
            "enqueued_at": now_ms()}
