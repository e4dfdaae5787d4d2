"""Submitting jobs with publisher confirms: `JobQueue.enqueue()` and its `EnqueueFailed`.

Any process may submit jobs (web handlers, the worker's scheduler, scripts); the job's shape and
queues are common/jobs.py's. A submission is bounded: it returns the job's id only once RabbitMQ
confirmed it, and otherwise raises EnqueueFailed with a reason a client may be told, instead of
blocking its caller while the broker is away or blocks publishers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions

from common import metrics
from common.jobs import JOBS_EXCHANGE, JOBS_QUEUE, job_message, jobs_queue, queue_kind

log = logging.getLogger(__name__)


class EnqueueFailed(RuntimeError):
    """The broker did not take the job. `reason` is one of REFUSAL_REASONS (a metric label):

    - "unreachable": no connection to the broker, or it does not answer; nothing was queued;
    - "blocked": RabbitMQ blocks publishers (a memory or disk alarm); nothing was queued;
    - "refused": the broker refused the job (a nack or a channel error); nothing was queued;
    - "busy": other submissions held it up longer than the bound; nothing was queued;
    - "timeout": no confirm within the bound. The job may still be queued: retrying can run it
      twice (jobs carry their id; notifications are dropped by id on the clients).
    """

    def __init__(self, message: str, reason: str = "unreachable"):
        super().__init__(message)
        self.reason = reason

    @property
    def public_message(self) -> str:
        """What a client may be told (the exception's own text names the broker's details)."""
        return REFUSAL_MESSAGES[self.reason]


REFUSAL_MESSAGES = {
    "unreachable": "the job queue is unavailable; try again shortly",
    "blocked": "the job queue takes no jobs for now (the broker is short of memory or disk); "
               "try again later",
    "refused": "the job queue refused the job; try again shortly",
    "busy": "the job queue is busy; try again shortly",
    "timeout": "the job queue did not confirm the job in time; it may still run",
}
# Nothing is bound to it: a message published there is dropped, and confirmed at once while the
# broker takes publishes. See JobQueue._check_broker_takes_publishes.
PUBLISH_CHECK_ROUTING_KEY = "jobs.publish-check"
# Raised by py-amqp and kombu when a connection is missing, lost or refused.
_CONNECTION_ERRORS = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.ConnectionError,
                      amqp.exceptions.RecoverableConnectionError)
# Raised when the broker refuses a publish: a nack, a channel error (after _CONNECTION_ERRORS, which
# are AMQPErrors too).
_REFUSALS = (amqp.exceptions.MessageNacked, amqp.exceptions.AMQPError)


class JobQueue:
    """Enqueues jobs from any process: web handlers, scripts, other services.

    Create one per process and keep it. Publishing is serialized, so greenlets and threads may
    share it, and bounded: `enqueue()` returns the job id only once RabbitMQ confirmed the job
    (publisher confirms), and raises EnqueueFailed when the broker is unreachable, refuses, or
    blocks publishers during a resource alarm, instead of blocking the caller: after at most
    `timeout` seconds of waiting for other submissions and for the broker's confirms, plus one
    connection attempt per node (`connect_timeout` each) when it has to connect.
    """

    def __init__(self, amqp_url: str, connect_timeout: float = 0.4, timeout: float = 1.0):
        # With several nodes (a cluster), one connection attempt per node before giving up.
        self._attempts = amqp_url.count(";") + 1
        self._timeout = timeout
        # transport_options bound the implicit connect of Producer()/default_channel too.
        self._connection = kombu.Connection(amqp_url, connect_timeout=connect_timeout,
                                            transport_options={
                                                "max_retries": self._attempts,
                                                "connect_retries_timeout":
                                                    connect_timeout * self._attempts,
                                                "interval_start": 0.1,
                                                "interval_step": 0.2, "interval_max": 0.2,
                                                "confirm_publish": True,
                                                "on_blocked": self._on_blocked,
                                                "on_unblocked": self._on_unblocked})
        self._lock = threading.Lock()
        self._queue = jobs_queue(queue_kind(self._connection))
        self._blocked: str | None = None  # RabbitMQ's reason while it blocks this connection
        self._was_blocked = False  # the connection may hold an unconfirmed publish: replace it
        # The reason the last submission was refused, and when (monotonic); None once one is taken.
        self._last_refusal: tuple[str, float] | None = None

    def enqueue(self, name: str, args: dict[str, Any], job_id: str | None = None) -> str:
        message = job_message(name, args, job_id)
        started = time.monotonic()
        deadline = started + self._timeout
        # Another submission may be waiting for its confirm: wait for it within the same bound.
        if not self._lock.acquire(timeout=self._timeout):
            raise self._refused(self._reason_while_waiting(started),
                                "other job submissions are still waiting for the broker; "
                                "nothing was queued")
        try:
            self._read_broker_notices()
            if self._blocked:
                raise self._blocked_refusal()
            self._check_broker_takes_publishes(deadline)
            try:
                self._publish(message, deadline, exchange=JOBS_EXCHANGE,
                              routing_key=JOBS_QUEUE.routing_key, declare=[self._queue],
                              delivery_mode="persistent")
            except (TimeoutError, *_CONNECTION_ERRORS) as exc:
                self._drop_connection()
                raise self._refused("timeout", f"the broker did not confirm job "
                                               f"{message['id']} ({exc!r}); it may still be "
                                               "queued") from exc
            except _REFUSALS as exc:
                self._drop_connection()
                raise self._refused("refused", f"the broker refused the job: {exc!r}") from exc
        finally:
            self._lock.release()
        self._last_refusal = None
        return message["id"]

    def status(self) -> dict[str, Any]:
        """For readiness: whether the broker blocks this process's job submissions, and why and
        how long ago the last submission was refused (None: it was taken, or none was made)."""
        if self._lock.acquire(blocking=False):  # never waits behind a submission
            try:
                self._read_broker_notices()
            finally:
                self._lock.release()
        refusal = self._last_refusal
        return {"blocked": self._blocked is not None,
                "last_refusal": refusal and refusal[0],
                "last_refusal_seconds_ago": refusal and round(time.monotonic() - refusal[1], 1)}

    def close(self) -> None:
        self._drop_connection()

    # -- the broker's side ------------------------------------------------------------------------

    def _publish(self, body: Any, deadline: float, **options: Any) -> None:
        """Publish `body` and wait for RabbitMQ's confirm, both until `deadline` (monotonic)."""
        # Never 0: py-amqp takes a confirm timeout of 0 for none, and would wait for good.
        left = max(deadline - time.monotonic(), 0.05)
        self._connection.Producer().publish(body, serializer="json", timeout=left,
                                            confirm_timeout=left, **options)

    def _check_broker_takes_publishes(self, deadline: float) -> None:
        """Publish a message nobody receives and wait for its confirm.

        RabbitMQ tells a connection that it is blocked (connection.blocked) only after it
        published during an alarm, and it still takes that publish into its socket buffer: it
        would be queued once the alarm clears even though its submitter gave up. This message
        is the one that finds out, so a job is published only when the broker takes publishes.
        On a connection left over from an earlier broker (a restart), it also fails first and
        is retried once on a new connection.
        """
        reused = self._connection.connected
        for attempt in (1, 2):
            try:
                self._publish({}, deadline, exchange="", routing_key=PUBLISH_CHECK_ROUTING_KEY)
                return
            except TimeoutError as exc:
                if self._blocked:  # the connection is kept: its connection.unblocked ends it
                    raise self._blocked_refusal() from exc
                self._drop_connection()
                raise self._refused("unreachable", f"the broker did not answer within "
                                                   f"{self._timeout}s; nothing was queued") from exc
            except _CONNECTION_ERRORS as exc:
                self._drop_connection()
                if attempt == 2 or not reused:
                    raise self._refused("unreachable",
                                        f"job queue unreachable: {exc!r}") from exc
            except _REFUSALS as exc:
                self._drop_connection()
                raise self._refused("refused", f"the broker refused a publish: {exc!r}") from exc

    def _read_broker_notices(self) -> None:
        """Read what the broker sent meanwhile (connection.blocked / unblocked), without waiting."""
        if self._connection.connected:
            try:
                self._connection.drain_events(timeout=0)
            except TimeoutError:
                pass
            except Exception:  # a dead connection: the next submission makes a new one
                self._drop_connection()
        if self._was_blocked and not self._blocked:
            self._drop_connection()

    def _on_blocked(self, reason: str) -> None:
        self._blocked = reason or "no reason given"
        self._was_blocked = True
        metrics.BROKER_PUBLISHER_BLOCKED.labels("jobs").set(1)
        log.warning("the broker blocks job submissions: %s", self._blocked)

    def _on_unblocked(self) -> None:
        self._blocked = None
        metrics.BROKER_PUBLISHER_BLOCKED.labels("jobs").set(0)
        log.info("the broker takes job submissions again")

    def _drop_connection(self) -> None:
        """Close without the AMQP close handshake, which a blocked broker would not answer."""
        self._connection.collect()
        self._blocked = None
        self._was_blocked = False
        metrics.BROKER_PUBLISHER_BLOCKED.labels("jobs").set(0)

    def _reason_while_waiting(self, since: float) -> str:
        """Why a submission that waited in vain behind others is refused: what the broker did to
        one of them meanwhile (it is not this one's fault), or "busy"."""
        refusal = self._last_refusal
        if refusal and refusal[1] >= since and refusal[0] != "timeout":
            return refusal[0]
        return "busy"

    def _blocked_refusal(self) -> EnqueueFailed:
        return self._refused("blocked", f"the broker blocks publishers ({self._blocked}): a "
                                        "resource alarm; nothing was queued")

    def _refused(self, reason: str, message: str) -> EnqueueFailed:
        self._last_refusal = (reason, time.monotonic())
        metrics.JOB_SUBMISSIONS_REFUSED.labels(reason).inc()
        return EnqueueFailed(message, reason)
