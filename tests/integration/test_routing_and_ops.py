"""Through nginx: the session id is read as exactly as engine.io reads it, and operations
endpoints are not public."""

from __future__ import annotations

import json

import requests

from tests.support.metrics import read_metric

OPEN = "/socket.io/?EIO=4&transport=polling"


def test_only_a_lower_case_sid_routes_a_request(stack):
    # engine.io reads `sid` only; nginx must not route by `SID=` (and spare the request its
    # new-session limit) while the replica opens a new session for it.
    foreign = "10.9.9.9.5000.forged"
    upper = requests.get(f"{stack.url}{OPEN}&SID={foreign}", timeout=5)
    assert upper.status_code == 200, upper.text  # a new session, like any request without sid
    assert "sid" in json.loads(upper.text[1:])
    lower = requests.get(f"{stack.url}{OPEN}&sid={foreign}", timeout=5)
    assert lower.status_code == 400
    assert lower.json() == {"error": "session id does not name a replica"}


def test_metrics_and_readiness_are_not_served_through_the_public_port(stack):
    for path in ("/metrics", "/readyz"):
        public = requests.get(f"{stack.url}{path}", timeout=5)
        assert public.status_code == 404, path
        assert "operations endpoints" in public.json()["error"]
    assert requests.get(f"{stack.url}/healthz", timeout=5).status_code == 200
    # Each replica still serves them on its own port (scraping, probes).
    assert requests.get(f"{stack.web[0].url}/readyz", timeout=5).status_code == 200
    assert read_metric(stack.web[0].url, "socketio_connected_clients") >= 0
