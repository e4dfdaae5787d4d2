"""The rooms scenarios of `make bench` in small, so that they cannot rot: rooms-local-3 with 3 rooms
of 4 clients, 40 events/s for 4 s, against the rooms scenarios' default systems (this stack, the
Flask-SocketIO recipe, Node with the sharded Redis adapter), through the real runner
(bench/run.py). A program the benchmark needs and this machine lacks fails the test with the
command that installs it; nothing is skipped. Where the clients land is a pure function, tested
without services."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import parse_scenario, room_plan
from bench.systems import DEFAULT_SYSTEMS, missing_programs

ROOT = Path(__file__).resolve().parents[2]
ROOMS, ROOM_CLIENTS, RATE, DURATION = 3, 4, 40, 4
MEMBERS = ROOMS * ROOM_CLIENTS


def options(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{"rooms": 10, "room_clients": 20, "room_rate": 200.0,
                                 "duration": 20.0, **changes})


def test_local_puts_every_member_on_the_first_replica_and_one_bystander_on_each():
    scenario = parse_scenario("rooms-local-6", options())
    assert (scenario["kind"], scenario["placement"], scenario["replicas"]) == ("rooms", "local", 6)
    assert scenario["clients"] == 10 * 20 + 6 and scenario["messages"] == 4000
    plan = room_plan(scenario)
    bystanders = [t for t in plan if t["room"] is None]
    assert sorted(t["replica"] for t in bystanders) == list(range(6))
    members = [t for t in plan if t["room"] is not None]
    assert len(members) == 200 and {t["replica"] for t in members} == {0}
    assert all(t["room"] == f"bench-room-{t['roomIndex']}" for t in members)


def test_spread_puts_members_of_every_room_on_every_replica_about_evenly():
    plan = room_plan(parse_scenario("rooms-spread-12", options()))
    members = [t for t in plan if t["room"] is not None]
    for room in range(10):
        assert {t["replica"] for t in members if t["roomIndex"] == room} == set(range(12))
    per_replica = [sum(1 for t in members if t["replica"] == r) for r in range(12)]
    assert sum(per_replica) == 200 and max(per_replica) - min(per_replica) <= 1


def test_room_names_never_look_like_a_socket_id_to_the_sharded_adapter():
    # @socket.io/redis-adapter's sharded adapter takes any 20-character room for a socket id.
    plan = room_plan(parse_scenario("rooms-local-3", options(rooms=1000)))
    assert all(len(t["room"]) != 20 for t in plan if t["room"])


@pytest.mark.parametrize(("name", "changes", "why"), [
    ("rooms-spread-12", {"room_clients": 5}, "cannot have a member on each of 12"),
    ("rooms-local-1", {}, "2 replicas or more"),
    ("rooms-everywhere-3", {}, "unknown scenario"),
])
def test_impossible_rooms_scenarios_are_refused_with_the_reason(name, changes, why):
    with pytest.raises(SystemExit, match=why):
        parse_scenario(name, options(**changes))


@pytest.mark.timeout(300)
def test_small_rooms_bench_delivers_to_members_only_and_measures_every_replica(tmp_path):
    systems = DEFAULT_SYSTEMS["rooms"]
    missing = missing_programs(systems)
    if missing:
        pytest.fail("make bench cannot run here; install what is missing:\n  "
                    + "\n  ".join(missing), pytrace=False)
    results, table = tmp_path / "bench.json", tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scenarios", "rooms-local-3", "--rooms", str(ROOMS),
         "--room-clients", str(ROOM_CLIENTS), "--room-rate", str(RATE), "--duration",
         str(DURATION), "--warmup", "1", "--idle-seconds", "2", "--drain", "15", "--no-docs",
         "--output", str(results), "--markdown", str(table)],
        cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]

    (scenario,) = json.loads(results.read_text())["scenarios"]
    assert scenario["kind"] == "rooms" and scenario["placement"] == "local"
    measured = {system["system"]: system for system in scenario["systems"]}
    assert list(measured) == list(systems)
    for name, system in measured.items():
        assert "error" not in system, (name, system)
        assert system["connected"] == MEMBERS + 3 and system["joined"] == MEMBERS, (name, system)
        assert system["delivery_ratio"] == 1.0, (name, system)
        assert system["received"] == RATE * DURATION * ROOM_CLIENTS, name
        assert system["misrouted"] == 0 and system["duplicates"] == 0, (name, system)
        assert 0 <= system["latency_ms"]["p50"] <= system["latency_ms"]["p99"], name
        replicas = system["per_replica"]
        assert [r["members"] for r in replicas] == [MEMBERS, 0, 0], (name, replicas)
        assert all(r["us_per_event"] is not None and r["idle_ms_per_s"] is not None
                   for r in replicas), (name, replicas)
        # The member replica wrote every event to its clients: it cannot have used no CPU.
        assert replicas[0]["cpu_seconds"] > 0 and replicas[0]["us_per_event_raw"] > 0, name
        assert system["events_in_window"] > 0 and system["deliveries_in_window"] > 0, name
        assert system["kept_up"] > 0.5, (name, system["kept_up"])  # a few events at the edges
        for key in ("non_member_us_per_event", "member_us_per_event"):
            assert set(system[key]) == {"mean", "max"}, (name, key, system[key])
        assert system["cluster_web_us_per_delivery"] is not None, name
        assert system["broker_us_per_event_raw"] is not None, name
    # The recipe's replicas all read every event from RabbitMQ's fanout exchange, members or not:
    # the replicas' processes are the ones measured.
    assert all(r["cpu_seconds"] > 0 for r in measured["recipe"]["per_replica"])

    markdown = table.read_text()
    assert f"#### rooms: {ROOMS} rooms of {ROOM_CLIENTS} clients, {RATE} events/s" in markdown
    for title in ("this stack", "Flask-SocketIO recipe", "Node socket.io + sharded Redis adapter"):
        assert f"| rooms-local-3 | {title} | 1.0000 |" in markdown, markdown
