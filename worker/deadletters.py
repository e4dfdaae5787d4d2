"""The dead-letter queue, `jobs.dead`, from the command line: list, show, requeue, purge.

Each entry is what the consumer parks there: {"job": the job message (or the undecodable body as
text), "error", "dead_at" (ms)}. An entry is named by its job's id; a poison message that has none
by a hash of its body. Browsing takes every message without acknowledging it and closes the
channel afterwards, which gives back to the queue whatever was not acknowledged: so `list` and
`show` change nothing, and a worker consuming `jobs` is never disturbed (it does not read
`jobs.dead`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu

from common.jobs import (
    DEAD_LETTER_QUEUE,
    JOBS_EXCHANGE,
    JOBS_QUEUE,
    dead_letter_queue,
    jobs_queue,
    queue_kind,
)

BROWSE_LIMIT = 10_000  # messages looked at in one command


def entry_id(entry: Any) -> str:
    job = entry.get("job") if isinstance(entry, dict) else None
    if isinstance(job, dict) and isinstance(job.get("id"), str):
        return job["id"]
    raw = json.dumps(entry, sort_keys=True) if not isinstance(entry, str) else entry
    return "poison-" + hashlib.sha1(raw.encode()).hexdigest()[:12]


def describe(entry: Any) -> str:
    """One line: id, job name, attempts, when, error."""
    if not isinstance(entry, dict):
        return f"{entry_id(entry)}  (not a dead-letter entry)"
    job = entry.get("job")
    name = job.get("name", "?") if isinstance(job, dict) else "(undecodable)"
    attempt = job.get("attempt", "?") if isinstance(job, dict) else "-"
    dead_at = entry.get("dead_at")
    when = "?"
    if isinstance(dead_at, int):
        when = datetime.datetime.fromtimestamp(dead_at / 1000, datetime.UTC).isoformat(
            timespec="seconds")
    return f"{entry_id(entry)}  {name}  attempt {attempt}  {when}  {entry.get('error', '')}"


def requeued_job(entry: Any) -> dict:
    """The job message to put back into `jobs`: a first attempt again. ValueError for a poison
    message, which can never run."""
    job = entry.get("job") if isinstance(entry, dict) else None
    if not (isinstance(job, dict) and {"id", "name", "args"} <= job.keys()):
        raise ValueError(f"{entry_id(entry)} is not a job (a poison message cannot run again); "
                         "purge it instead")
    return {**job, "attempt": 1}


def _decode(message: kombu.Message) -> Any:
    try:
        return json.loads(message.body)
    except (TypeError, ValueError):
        body = message.body
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


@contextmanager
def browsing(amqp_url: str) -> Iterator[tuple[kombu.Connection, list[tuple[kombu.Message, Any]]]]:
    """Every dead letter, taken unacknowledged; closing the channel returns the unacknowledged."""
    with kombu.Connection(amqp_url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            # On a cluster (several URLs) the queue is a quorum queue: declared as the worker does.
            queue = dead_letter_queue(queue_kind(connection))(channel)
            queue.declare()
            taken = []
            while len(taken) < BROWSE_LIMIT:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                taken.append((message, _decode(message)))
            yield connection, taken
        finally:
            channel.close()


def _select(taken, ident: str | None, every: bool):
    if every:
        return taken
    chosen = [(message, entry) for message, entry in taken if entry_id(entry) == ident]
    if not chosen:
        raise LookupError(f"no dead letter {ident!r} in {DEAD_LETTER_QUEUE.name}")
    return chosen


def run(amqp_url: str, action: str, ident: str | None = None, every: bool = False) -> int:
    """`python -m worker dead ...`; the exit status."""
    if action in ("show", "requeue", "purge") and not (ident or every):
        print(f"{action} needs an id (see `dead list`) or --all", file=sys.stderr)
        return 2
    with browsing(amqp_url) as (connection, taken):
        if action == "list":
            for _, entry in taken:
                print(describe(entry))
            print(f"{len(taken)} dead letter(s) in {DEAD_LETTER_QUEUE.name}", file=sys.stderr)
            return 0
        try:
            chosen = _select(taken, ident, every)
        except LookupError as exc:
            print(exc, file=sys.stderr)
            return 1
        if action == "show":
            for _, entry in chosen:
                print(json.dumps(entry, indent=2, sort_keys=True))
            return 0
        producer = kombu.Producer(chosen[0][0].channel) if chosen else None
        done = 0
        for message, entry in chosen:
            if action == "requeue":
                try:
                    job = requeued_job(entry)
                except ValueError as exc:
                    print(exc, file=sys.stderr)
                    continue
                producer.publish(job, exchange=JOBS_EXCHANGE, routing_key=JOBS_QUEUE.routing_key,
                                 declare=[jobs_queue(queue_kind(connection))],
                                 serializer="json",
                                 delivery_mode="persistent")
            message.ack()
            done += 1
            print(entry_id(entry))
        verb = "requeued" if action == "requeue" else "purged"
        print(f"{done} dead letter(s) {verb}", file=sys.stderr)
        return 0 if done == len(chosen) else 1
