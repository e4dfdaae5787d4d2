"""The load test's knobs, defined once.

Each `Knob` generates an option of the runner (`python -m loadtest.run --clients ...`, so also the
Makefile's CLIENTS=...), an `--lt-*` option of Locust (loadtest/locustfile.py) and a key of the
parameters recorded in the results JSON. A named scenario (`SCENARIOS`) is a set of rates; a rate
given on the command line overrides the scenario's.

Imported by the runner (.venv) and by Locust (.venv-loadtest): the standard library only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

# Rates: broadcast and notify are messages/s for the whole run (each reaches every client);
# room_rate and echo_rate are per client per second.
SCENARIOS: dict[str, dict[str, float]] = {
    "connect": {},
    "broadcast": {"broadcast_rate": 2.0},
    "notify": {"notify_rate": 2.0},
    "rooms": {"room_size": 10, "room_rate": 0.1},
    "echo": {"echo_rate": 0.5},
    # About 2,000 deliveries/s at 1,500 clients: below what 2 cores shared with the generator
    # saturate at (about 3,500/s), so latencies are not mostly queueing.
    "chat": {"broadcast_rate": 1.0, "room_size": 10, "room_rate": 1 / 30, "echo_rate": 1 / 15},
    "mixed": {"broadcast_rate": 0.5, "notify_rate": 0.5, "room_size": 10, "room_rate": 1 / 30,
              "echo_rate": 1 / 15},
}
DEFAULT_SCENARIO = "mixed"
# The docs recipe has no worker and no notifications API: --compare-baseline defaults to this one.
COMPARE_SCENARIO = "chat"


@dataclass(frozen=True)
class Knob:
    name: str
    type: type
    default: Any
    help: str
    runner: bool = True  # an option of loadtest/run.py: --<name>
    locust: str | None = None  # Locust's option: --lt-<locust>; None: Locust does not take it
    recorded_as: str | None = None  # its key in the results' "scenario"; None: not recorded
    rate: bool = False  # part of a named scenario; the command line overrides it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def locust_flag(self) -> str:
        return "--lt-" + self.locust.replace("_", "-")


def _rate(name: str, type_: type, help_: str) -> Knob:
    return Knob(name, type_, type_(0), help_, locust=name, recorded_as=name, rate=True)


KNOBS: tuple[Knob, ...] = (
    Knob("clients", int, 1500, "Socket.IO clients", recorded_as="clients"),
    Knob("spawn_rate", float, 150.0, "connects per second", recorded_as="spawn_rate"),
    Knob("duration", float, 40.0, "seconds of steady traffic after the connect storm",
         locust="steady", recorded_as="duration_s"),
    Knob("drain", float, 4.0, "seconds after the last send for deliveries to arrive",
         locust="drain", recorded_as="drain_s"),
    Knob("settle_max", float, 15.0, "at most this long to wait for connects still in progress",
         locust="settle_max", recorded_as="settle_max_s"),
    Knob("transports", str, "websocket:80,polling:10,upgrade:10",
         "client transport mix (weights): websocket, polling, upgrade",
         locust="transports", recorded_as="transports"),
    Knob("processes", int, 2, "Locust worker processes (>1: Locust's master and forked workers; "
         "1: one process)", recorded_as="locust_processes"),
    Knob("progress", float, 2.0, "seconds between progress lines", runner=False,
         locust="progress"),
    _rate("broadcast_rate", float, "my_broadcast_event per second (one sending client)"),
    _rate("notify_rate", float, "POST /api/notifications per second (to all)"),
    _rate("room_size", int, "clients per room; 0: no rooms"),
    _rate("room_rate", float, "my_room_event per second per client"),
    _rate("echo_rate", float, "my_ping round trips per second per client"),
)
RATE_KEYS = tuple(knob.name for knob in KNOBS if knob.rate)


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    """The runner's options: the scenario's name and every runner knob."""
    parser.add_argument("--scenario", default=None, choices=sorted(SCENARIOS),
                        help=f"named rates (default: {DEFAULT_SCENARIO}; with --compare-baseline "
                             f"{COMPARE_SCENARIO})")
    for knob in KNOBS:
        if not knob.runner:
            continue
        if knob.rate:
            parser.add_argument(knob.flag, type=knob.type, default=None,
                                help=f"{knob.help}; overrides the scenario's value")
        else:
            parser.add_argument(knob.flag, type=knob.type, default=knob.default,
                                help=f"{knob.help} (default: {knob.default})")


def add_locust_options(group) -> None:
    """Locust's --lt-* options (an argument group of Locust's parser)."""
    for knob in KNOBS:
        if knob.locust:
            group.add_argument(knob.locust_flag, type=knob.type, default=knob.default,
                               help=knob.help)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Every knob's value for this run: the command line, else the scenario's rate, else the
    default. Also picks the scenario when none was named."""
    if args.scenario is None:
        args.scenario = COMPARE_SCENARIO if getattr(args, "compare_baseline", False) \
            else DEFAULT_SCENARIO
    rates = SCENARIOS[args.scenario]
    values = {}
    for knob in KNOBS:
        given = getattr(args, knob.name, None) if knob.runner else None
        if given is None:
            given = rates.get(knob.name, knob.default)
        values[knob.name] = knob.type(given)
    return values


def locust_arguments(values: dict[str, Any]) -> list[str]:
    """The --lt-* arguments that hand these values to Locust."""
    arguments = []
    for knob in KNOBS:
        if knob.locust:
            arguments += [knob.locust_flag, str(values[knob.name])]
    return arguments


def recorded(name: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a run as the results JSON records them."""
    record = {"name": name} if name else {}
    for knob in KNOBS:
        if knob.recorded_as and knob.name in values:
            record[knob.recorded_as] = values[knob.name]
    return record


def from_locust_options(options) -> dict[str, Any]:
    """The knob values Locust received, by knob name (options: Locust's parsed options)."""
    return {knob.name: getattr(options, "lt_" + knob.locust)
            for knob in KNOBS if knob.locust}
