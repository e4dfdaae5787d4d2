"""`python -m worker` runs the worker; `python -m worker enqueue NAME '{json args}'` queues a job;
`python -m worker dead list|show|requeue|purge` looks after the dead-letter queue.

Examples:
    python -m worker enqueue notify '{"to": "all", "data": {"text": "hello"}}'
    python -m worker enqueue long_task '{"room": "lobby", "steps": 5}'
    python -m worker dead list
    python -m worker dead requeue <id>      # or --all
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import kombu
from pydantic import ValidationError

from common.broker import create_emitter
from common.job_queue import EnqueueFailed, JobQueue
from common.jobs import Job, now_ms
from common.logs import configure_logging
from common.settings import Settings, load_settings
from worker import deadletters
from worker.consumer import JobConsumer, StopConsuming
from worker.health import serve_health
from worker.jobs import JOBS
from worker.scheduler import Scheduler

log = logging.getLogger("worker")

HEARTBEAT_SECONDS = 5  # a dead or frozen broker is noticed within about 2x this


def run(settings: Settings) -> None:
    amqp_url = settings.amqp_url.get_secret_value()
    emitter = create_emitter(settings)  # one per process, kept for its lifetime
    jobs = JobQueue(amqp_url)
    consumer = JobConsumer(kombu.Connection(amqp_url, heartbeat=HEARTBEAT_SECONDS), emitter,
                           settings.job_retry_delays)

    def stop(signum, frame):
        log.info("stopping after the current job")
        consumer.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.worker_health_port:
        serve_health(settings.health_host, settings.worker_health_port, lambda: {
            "ready": consumer.consuming and not consumer.stopping,
            "consuming": consumer.consuming,
            "publisher_connected": emitter.publisher_connected,
        })
    emitter.start_publisher()
    if settings.server_event_interval > 0:
        Scheduler(amqp_url, jobs, settings.server_event_interval).start()
    log.info("worker %s consuming jobs: %s", settings.replica_id, ", ".join(sorted(JOBS)))
    # Short broker reads: a finished job is settled within this long (it runs on its own thread).
    try:
        consumer.run(safety_interval=0.02)
    except StopConsuming:
        pass
    emitter.flush(5)
    log.info("worker stopped")


def enqueue(settings: Settings, name: str, args_json: str) -> int:
    if name not in JOBS:
        print(f"unknown job {name!r}; jobs: {', '.join(sorted(JOBS))}", file=sys.stderr)
        return 2
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        print(f"arguments are not JSON: {exc}", file=sys.stderr)
        return 2
    if name == Job.NOTIFY and isinstance(args, dict):
        args.setdefault("created_at", now_ms())
    try:
        JOBS[name].args_model.model_validate(args)  # refuse here what the worker would dead-letter
        job_id = JobQueue(settings.amqp_url.get_secret_value()).enqueue(name, args)
    except (ValidationError, EnqueueFailed) as exc:
        print(f"not queued: {exc}", file=sys.stderr)
        return 1
    print(job_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    command = commands.add_parser("enqueue", help="queue a job and print its id")
    command.add_argument("name", help=", ".join(sorted(JOBS)))
    command.add_argument("args", nargs="?", default="{}", help="the job's arguments as JSON")
    dead = commands.add_parser("dead", help="list, show, requeue or purge jobs.dead")
    dead.add_argument("action", choices=["list", "show", "requeue", "purge"])
    dead.add_argument("id", nargs="?", help="a dead letter's id, as `list` prints it")
    dead.add_argument("--all", action="store_true", help="every dead letter")
    options = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings, "worker")
    if options.command == "enqueue":
        return enqueue(settings, options.name, options.args)
    if options.command == "dead":
        try:
            return deadletters.run(settings.amqp_url.get_secret_value(), options.action,
                                   options.id, options.all)
        except (OSError, kombu.exceptions.OperationalError) as exc:  # no traceback
            print(f"RabbitMQ unreachable at AMQP_URL: {exc}", file=sys.stderr)
            return 1
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
