"""The compose stack at capacity and even: nginx with the native limits, new sessions spread
evenly over the replicas that exist now (also after scaling), thousands of clients with no 5xx,
replica ids that name the containers.

Runs before test_stack.py (file order) on the same stack, and leaves it at 3 replicas.
"""

from __future__ import annotations

import time

import pytest

from tests.support.clients import RecordingClient
from tests.support.compose import REPLICAS
from tests.support.waiting import wait_until
from tests.support.wsclients import connect_crowd, within_of_even

pytestmark = pytest.mark.timeout(900)

EVEN_CLIENTS = 300  # from one address, as the issue measured 72 / 34 / 44 for 150
TOLERANCE = 0.15
CROWD = 5_000  # held at once through nginx


def nginx_front_url(stack) -> str:
    """nginx on its own network address, not through the published port: Docker's userland
    proxy (docker-proxy), which carries published ports on an engine without iptables rules,
    died at about 3,400 connections here, dropping every one of them."""
    [nginx] = stack.inspect(stack.container_ids("nginx"))
    [address] = [network["IPAddress"] for name, network in
                 nginx["NetworkSettings"]["Networks"].items() if name.endswith("_front")]
    return f"http://{address}:80"


def replica_addresses(stack) -> dict[str, str]:
    """Replica "ip:5000" on the front network -> container name."""
    found = {}
    for container in stack.inspect(stack.container_ids("web")):
        if container["State"]["Running"]:
            for name, network in container["NetworkSettings"]["Networks"].items():
                if name.endswith("_front"):
                    found[f"{network['IPAddress']}:5000"] = container["Name"].lstrip("/")
    return found


def assert_even(stack, count: int) -> dict[str, int]:
    outcome = connect_crowd(stack.url, EVEN_CLIENTS, rate=200)
    assert not outcome.failures, outcome.failures
    names = replica_addresses(stack)
    spread = {names.get(replica, replica): n for replica, n in outcome.replicas.items()}
    assert len(spread) == count, f"sessions reached {spread}, there are {count} replicas"
    assert within_of_even(list(spread.values()), TOLERANCE), (
        f"{EVEN_CLIENTS} new sessions from one address: {spread}, not within "
        f"{TOLERANCE:.0%} of {EVEN_CLIENTS / count:.0f} each")
    return spread


def test_replica_ids_are_the_container_names(compose_stack, clients):
    names = set(replica_addresses(compose_stack).values())
    seen = set()
    for _ in range(3 * REPLICAS):
        client = RecordingClient(compose_stack.url).connect()
        clients.append(client)
        seen.add(client.info()["replica"])
    assert seen == names, f"replica ids {sorted(seen)}, `compose ps` names {sorted(names)}"


def test_new_sessions_from_one_address_spread_evenly(compose_stack):
    print(assert_even(compose_stack, REPLICAS))


def test_thousands_of_clients_at_once_with_no_5xx(compose_stack, timings):
    started = time.monotonic()
    outcome = connect_crowd(nginx_front_url(compose_stack), CROWD, rate=500, hold=5)
    timings[f"{CROWD} clients"] = time.monotonic() - started
    print(f"{outcome.connected} connected in {outcome.seconds:.1f}s, per replica "
          f"{dict(outcome.replicas)}, failures {dict(outcome.failures)}, dropped {outcome.dropped}")
    assert outcome.server_errors() == 0, outcome.failures
    assert outcome.connected == CROWD, outcome.failures
    assert outcome.dropped == 0
    errors = compose_stack.logs("nginx", tail=2000)
    assert "worker_connections are not enough" not in errors
    assert "Too many open files" not in errors


def test_scaled_replicas_get_an_even_share_then_scale_back(compose_stack, timings):
    started = time.monotonic()
    compose_stack.up(replicas=5)
    compose_stack.wait_healthy("web", 5)
    # nginx picks the new replicas up by itself (nginx/refresh-upstream.sh), no config edit.
    timings["scaled to 5, nginx sees them"] = wait_until(
        lambda: len(connect_crowd(compose_stack.url, 15, rate=100).replicas) == 5, timeout=30,
        interval=0.5, what="new sessions on all 5 replicas") + time.monotonic() - started
    print(assert_even(compose_stack, 5))
    compose_stack.up(replicas=REPLICAS)
    compose_stack.wait_healthy("web", REPLICAS)
    wait_until(lambda: len(connect_crowd(compose_stack.url, 9, rate=100).replicas) == REPLICAS,
               timeout=30, interval=0.5, what=f"new sessions on {REPLICAS} replicas only")
