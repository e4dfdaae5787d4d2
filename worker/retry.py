"""What happens to a job that failed: run it again later, or park it in the dead-letter queue.

A failed job goes to a retry queue whose messages expire back into the job queue (backoff without
a timer in the worker); after the last retry, or at once for a message that can never succeed (a
poison message), it is parked in the dead-letter queue with its error. `decide` is the policy,
without I/O; worker/consumer.py carries it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kombu

from common.jobs import JOBS_EXCHANGE, JOBS_QUEUE, QueueKind, queue_arguments


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


def retry_queue(delay_seconds: float, kind: QueueKind = "classic") -> kombu.Queue:
    """A queue whose messages wait `delay_seconds`, then expire back into the job queue."""
    delay_ms = int(delay_seconds * 1000)
    return kombu.Queue(f"jobs.retry.{delay_ms}ms", durable=True, queue_arguments=queue_arguments(
        kind,
        **{"x-message-ttl": delay_ms,
           "x-dead-letter-exchange": JOBS_EXCHANGE.name,
           "x-dead-letter-routing-key": JOBS_QUEUE.routing_key}))
