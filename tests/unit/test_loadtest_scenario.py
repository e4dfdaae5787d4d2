"""The load test's knobs are defined once (loadtest/scenario.py): what the runner parses is what
Locust is handed and what the results record."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from loadtest import scenario
from loadtest.run import parse_args


def locust_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    scenario.add_locust_options(parser.add_argument_group("lt"))
    return parser


def test_runner_values_reach_locust_unchanged():
    args = parse_args(["--clients", "30", "--duration", "8", "--echo-rate", "2",
                       "--scenario", "chat", "--transports", "polling"])
    knobs = scenario.resolve(args)
    options = locust_parser().parse_args(scenario.locust_arguments(knobs))
    received = scenario.from_locust_options(options)
    assert received == {name: value for name, value in knobs.items() if name in received}
    assert received["duration"] == 8 and received["echo_rate"] == 2
    assert received["broadcast_rate"] == scenario.SCENARIOS["chat"]["broadcast_rate"]
    assert received["transports"] == "polling"


def test_the_record_names_the_scenario_and_every_recorded_knob():
    args = parse_args(["--notify-rate", "0"])
    knobs = scenario.resolve(args)  # also names the scenario when the command line did not
    record = scenario.recorded(args.scenario, knobs)
    assert record["name"] == scenario.DEFAULT_SCENARIO
    assert record["notify_rate"] == 0
    assert {k.recorded_as for k in scenario.KNOBS if k.recorded_as} <= set(record)


def test_compare_baseline_defaults_to_a_scenario_without_notifications():
    args = parse_args(["--compare-baseline"])
    assert scenario.resolve(args)["notify_rate"] == 0
    assert args.scenario == scenario.COMPARE_SCENARIO


def test_locust_defaults_are_the_runner_defaults():
    options = vars(locust_parser().parse_args([]))
    for knob in scenario.KNOBS:
        if knob.locust and not knob.rate:
            assert options["lt_" + knob.locust] == knob.default


def test_the_makefile_passes_every_runner_knob():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = re.search(r"^LOADTEST_KNOBS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert listed, "Makefile: no LOADTEST_KNOBS"
    names = set(listed.group(1).replace("\\", " ").split())
    assert names == {"SCENARIO"} | {k.name.upper() for k in scenario.KNOBS if k.runner}
