"""Job functions, registered in one place by name. Add yours with `@job(name, ArgsModel)`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from common.contract import MAIN_NAMESPACE, Event, RoomTarget, UserTarget, user_room
from common.jobs import Job, LongTaskArgs, NotifyArgs, ServerEventArgs, now_ms


class Emitter(Protocol):
    """How a job reaches clients: common.broker's write-only QueueManager, or a fake in tests."""

    def emit(self, event: str, data: Any, namespace: str | None = None,
             room: str | None = None) -> None: ...


@dataclass(frozen=True)
class JobContext:
    """What a running job knows about itself and how it reaches clients."""

    job_id: str
    attempt: int
    emitter: Emitter

    def emit(self, event: str, data: Any, room: str | None = None) -> None:
        """Send to a room (a user's room, a named room, a connection's sid) or, with None, all."""
        self.emitter.emit(event, data, namespace=MAIN_NAMESPACE, room=room)


@dataclass(frozen=True)
class JobFunction:
    run: Callable[[JobContext, Any], Any]
    args_model: type[BaseModel]
    # A periodic job: its start and success are logged at DEBUG, so that one every few seconds
    # does not bury what else the log says; its failures and retries are logged as any job's.
    routine: bool = False


JOBS: dict[str, JobFunction] = {}


def job(name: str, args_model: type[BaseModel], routine: bool = False):
    def register(run: Callable[[JobContext, Any], Any]):
        JOBS[name] = JobFunction(run, args_model, routine)
        return run
    return register


class SimulatedFailure(RuntimeError):
    pass


@job(Job.NOTIFY, NotifyArgs)
def notify(ctx: JobContext, args: NotifyArgs) -> None:
    """Deliver a `notification` to everyone, one user's connections, or a room."""
    if isinstance(args.to, UserTarget):
        room = user_room(args.to.user)
    elif isinstance(args.to, RoomTarget):
        room = args.to.room
    else:
        room = None
    # The id is the job's: a redelivered job sends the same id, and clients drop the duplicate.
    ctx.emit(Event.NOTIFICATION, {"id": ctx.job_id, "data": args.data,
                                  "created_at": args.created_at}, room)


@job(Job.LONG_TASK, LongTaskArgs)
def long_task(ctx: JobContext, args: LongTaskArgs) -> dict:
    """Simulated multi-step work reporting `job_progress` after each step, then `job_done`."""
    for step in range(1, args.steps + 1):
        time.sleep(args.step_seconds)
        failing = args.fail_attempts == 0 or ctx.attempt <= args.fail_attempts
        if step == args.fail_at_step and failing:
            raise SimulatedFailure(f"simulated failure at step {step} (attempt {ctx.attempt})")
        ctx.emit(Event.JOB_PROGRESS, {"job_id": ctx.job_id, "step": step, "steps": args.steps,
                                      "percent": round(100 * step / args.steps)}, args.room)
    result = {"steps": args.steps, "attempt": ctx.attempt}
    ctx.emit(Event.JOB_DONE, {"job_id": ctx.job_id, "result": result}, args.room)
    return result


@job(Job.SERVER_EVENT, ServerEventArgs, routine=True)
def server_event(ctx: JobContext, args: ServerEventArgs) -> None:
    """The example app's "Server generated event", broadcast on an interval by the scheduler."""
    ctx.emit(Event.SERVER_EVENT, {"data": "Server generated event", "count": args.count,
                                  "sent_at": now_ms()})
