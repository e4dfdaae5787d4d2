"""The periodic job: enqueue `server_event` every SERVER_EVENT_INTERVAL seconds.

Several workers may run; only one schedules. Leadership is an exclusive queue on the broker: it
belongs to one connection, so only one worker can declare it, and it disappears with that
worker's connection, letting another one take over.
"""

from __future__ import annotations

import logging
import threading

import kombu
from amqp.exceptions import ResourceLocked

from common.job_queue import JobQueue
from common.jobs import Job

log = logging.getLogger(__name__)

RETRY_LEADERSHIP_SECONDS = 5.0
# Declared exclusively by the worker that runs the scheduler: one scheduler at a time.
SCHEDULER_LOCK_QUEUE = "jobs.scheduler-lock"


class Scheduler(threading.Thread):
    def __init__(self, amqp_url: str, jobs: JobQueue, interval: float):
        super().__init__(name="scheduler", daemon=True)
        self.amqp_url = amqp_url
        self.jobs = jobs
        self.interval = interval
        self.count = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with kombu.Connection(self.amqp_url, heartbeat=10, connect_timeout=2) as connection:
                    channel = connection.channel()
                    channel.queue_declare(SCHEDULER_LOCK_QUEUE, exclusive=True, auto_delete=True)
                    log.info("this worker schedules server_event every %.1fs", self.interval)
                    self._lead(connection)
            except ResourceLocked:
                pass  # another worker schedules
            except Exception as exc:
                log.warning("scheduler: %s", exc)
            self.stopping.wait(RETRY_LEADERSHIP_SECONDS)

    def _lead(self, connection: kombu.Connection) -> None:
        next_run = 0.0
        while not self.stopping.is_set():
            try:
                connection.drain_events(timeout=1)  # keeps heartbeats flowing
            except TimeoutError:
                pass
            connection.heartbeat_check()
            next_run -= 1
            if next_run <= 0:
                self.count += 1
                self.jobs.enqueue(Job.SERVER_EVENT, {"count": self.count})
                next_run = self.interval
