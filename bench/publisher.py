"""The rooms publisher of `make bench` for this stack and the Flask-SocketIO recipe: a process
outside the web replicas (a backend, like the worker) that emits `my_response` to rooms through
the message queue. bench/peer/publisher.mjs is the same program for the Node peer.

    python -m bench.publisher '{"kind": "stack"}'      # settings from the environment
    python -m bench.publisher '{"kind": "recipe", "url": "amqp://..."}'

stack: the stack's own emitter, `common.broker.create_emitter(load_settings())`, with the
replicas' environment (AMQP_URL, SOCKETIO_CHANNEL, RECOVERY_WINDOW_SECONDS...), as the worker makes
it. recipe: python-socketio's documented write-only emitter, a stock `socketio.KombuManager`, on
Flask-SocketIO's channel (`flask-socketio`: python-socketio's own default, `socketio`, is another
exchange, where the recipe's replicas would never see the events).

It speaks JSON lines on stdout, like bench/generator.mjs: {"event": "ready"} once an event has gone
through the broker connection (to a room nobody joined), then it waits for one command on stdin:
    {"cmd": "go", "start": <epoch ms>, "messages": M, "intervalMs": I, "rooms": [names],
     "window": [<epoch ms>, <epoch ms>]}
sends event k (k = 0..M-1) at start + k*I to rooms[k % len(rooms)] as {"data": {"i": k, "t": <send
time, epoch ms>}}, waits until everything is published and prints {"event": "done", "sent",
"inWindow" (sent inside the window), "maxLagMs" (latest send after its time), "cpuSeconds"}.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from common.contract import MAIN_NAMESPACE, Event

RECIPE_CHANNEL = "flask-socketio"  # Flask-SocketIO's default channel, the recipe's
WARM_UP_ROOM = "bench-warm-up"  # nobody joins it
FLUSH_SECONDS = 30.0


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")  # one write: a line is never split
    sys.stdout.flush()


def stack_emit() -> tuple[Callable[[str, dict], None], Callable[[], bool]]:
    from common.broker import create_emitter
    from common.settings import load_settings

    emitter = create_emitter(load_settings())

    def emit(room: str, payload: dict) -> None:
        emitter.emit(Event.MY_RESPONSE, payload, namespace=MAIN_NAMESPACE, room=room)

    return emit, lambda: emitter.flush(FLUSH_SECONDS)


def recipe_emit(url: str) -> tuple[Callable[[str, dict], None], Callable[[], bool]]:
    import socketio

    manager = socketio.KombuManager(url, channel=RECIPE_CHANNEL, write_only=True)

    def emit(room: str, payload: dict) -> None:
        manager.emit(Event.MY_RESPONSE, payload, namespace=MAIN_NAMESPACE, room=room)

    return emit, lambda: True  # its emit returns once published


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def send(emit: Callable[[str, dict], None], command: dict[str, Any]) -> dict[str, Any]:
    rooms, interval = command["rooms"], command["intervalMs"]
    window_start, window_end = command["window"]
    sent = in_window = 0
    max_lag = 0.0
    while sent < command["messages"]:
        due = command["start"] + sent * interval
        wait = due - time.time() * 1000
        if wait > 0:
            time.sleep(wait / 1000)
        at = time.time() * 1000
        max_lag = max(max_lag, at - due)
        in_window += window_start <= at <= window_end
        emit(rooms[sent % len(rooms)], {"data": {"i": sent, "t": at}})
        sent += 1
    return {"sent": sent, "inWindow": in_window, "maxLagMs": round(max_lag, 1)}


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s bench-publisher %(name)s: %(message)s")
    config = json.loads(argv[0])
    if config["kind"] == "stack":
        emit, flush = stack_emit()
    elif config["kind"] == "recipe":
        emit, flush = recipe_emit(config["url"])
    else:
        raise SystemExit(f"unknown publisher kind {config['kind']!r}: stack or recipe")
    emit(WARM_UP_ROOM, {"data": "warm-up"})
    if not flush():
        raise SystemExit(f"the warm-up event was not published within {FLUSH_SECONDS:g}s")
    say({"event": "ready"})
    command = json.loads(sys.stdin.readline())
    before = cpu_seconds()
    report = send(emit, command)
    published = flush()
    say({"event": "done", **report, "published": published,
         "cpuSeconds": round(cpu_seconds() - before, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
