"""What makes a load test's figures trustworthy, without running one: errors counted by cause,
lost deliveries attributed, machine-bound runs marked with their evidence, a verdict first."""

from __future__ import annotations

import pytest

from loadtest import analysis, procstats, summary


@pytest.mark.parametrize(("message", "cause"), [
    ("connect: ConnectionError: Unexpected status code 429 in server response, aborting",
     "HTTP 429"),
    ("connect: ConnectionError: Handshake status 502 Bad Gateway", "HTTP 502"),
    ("HTTP 401: {\"error\": \"missing or wrong API key\"}", "HTTP 401"),
    ("connect: TimeoutError: timed out", "timeout"),
    ("connect: ConnectionError: [Errno 111] Connection refused", "refused"),
    ("connect: ConnectionError: Connection reset by peer", "reset"),
    ("connect: ConnectionError('Unexpected connection error')", "handshake failed"),
    ("something else entirely", "other"),
])
def test_errors_are_counted_by_cause(message, cause):
    assert analysis.error_cause(message) == cause


def test_client_summary_counts_causes_and_names_the_unanswered_bucket():
    clients = {
        "a": {"connected": 1.0, "replica": "web-1", "start": 0.5, "connect_ms": 5},
        "b": {"connected": 1.0, "start": 0.5, "connect_ms": 5},
        "c": {"error": "connect: ConnectionError: Unexpected status code 429", "start": 0.5},
        "d": {"error": "connect: TimeoutError: timed out", "start": 0.5},
    }
    result = analysis.client_summary(clients, target=4)
    assert result["errors_by_cause"] == {"HTTP 429": 1, "timeout": 1}
    assert result["per_replica"] == {analysis.NO_SERVER_INFO: 1, "web-1": 1}
    assert result["without_server_info"] == 1


def test_lost_deliveries_are_attributed_to_what_happened_to_their_client():
    clients = {
        "stayed": {"connected": 1.0},
        "dropped": {"connected": 1.0, "closed": 50.0, "close_reason": "io server disconnect"},
        "broke": {"connected": 1.0, "closed": 50.0, "close_reason": "transport close"},
        "got-it": {"connected": 1.0},
    }
    messages = {"m1": {"id": "m1", "k": "broadcast", "t": 10.0}}
    result = analysis.delivery(clients, {"got-it": {"m1"}}, messages)
    assert result["expected"] == 4 and result["received"] == 1
    assert result["missing_by_cause"] == {
        "never arrived (client stayed connected)": 1,
        "client dropped by the server (slow reader or limits)": 1,
        "client disconnected (transport close)": 1,
    }


def run_doc(**overrides) -> dict:
    run = {
        "locust": {"clients": {"target": 100, "connected": 100, "attempted": 100,
                               "errors_by_cause": {}},
                   "delivery": {"ratio": 1.0}, "latency_ms": {"fanout": {"p99": 50.0}},
                   "generator": {"loop_lag_ms_steady": {"p99": 3.0}}, "events_by_cause": {}},
        "generator": {"busiest_process_cores_steady": 0.3},
        "machine": {"steal_share": 0.0, "busy_share": 0.5, "runnable_mean": 1.0},
    }
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = run
        for key in parents:
            node = node[key]
        node[leaf] = value
    return run


def test_a_healthy_run_passes():
    assert analysis.verdict(run_doc(), cores=2)["status"] == "pass"


@pytest.mark.parametrize(("path", "value", "says"), [
    ("machine.steal_share", 0.2, "CPU steal 20%"),
    ("machine.busy_share", 0.99, "99% busy"),
    ("machine.runnable_mean", 9.0, "9.0 tasks ready to run on 2 cores"),
    ("generator.busiest_process_cores_steady", 0.97, "generator process used 97%"),
    ("locust.generator.loop_lag_ms_steady", {"p99": 900.0}, "900 ms late"),
])
def test_a_machine_bound_run_is_not_meaningful_with_its_evidence(path, value, says):
    verdict = analysis.verdict(run_doc(**{path: value}), cores=2)
    assert verdict["status"] == "not meaningful: machine-bound"
    assert any(says in line for line in verdict["machine_bound_evidence"])


@pytest.mark.parametrize(("path", "value", "says"), [
    ("locust.clients.connected", 90, "90 of 100 clients connected"),
    ("locust.delivery.ratio", 0.62, "delivery ratio 0.6200"),
    ("locust.latency_ms.fanout.p99", 22_700.0, "fan-out p99 22,700 ms"),
    ("locust.clients.errors_by_cause", {"HTTP 502": 3}, "3 answers of 5xx"),
    ("locust.clients.attempted", 145, "145 clients attempted for a target of 100"),
])
def test_a_run_that_misses_a_target_fails_saying_which(path, value, says):
    verdict = analysis.verdict(run_doc(**{path: value}), cores=2)
    assert verdict["status"] == "fail"
    assert any(says in line for line in verdict["failures"])


def test_machine_counters_give_steal_busy_and_load_over_a_window():
    samples = [{"t": 0.0, "machine": {"total": 1000, "idle": 500, "steal": 0, "load1": 1.0,
                                      "running": 1}},
               {"t": 5.0, "machine": {"total": 2000, "idle": 700, "steal": 100, "load1": 3.0,
                                      "running": 5}}]
    assert procstats.machine_between(samples, 0, 5) == {
        "steal_share": 0.1, "busy_share": 0.8, "runnable_mean": 3.0, "load1_max": 3.0}
    assert set(procstats.machine_counters()) == {"total", "idle", "steal", "load1", "running"}


def test_the_summary_puts_the_verdict_first_and_names_the_replicas():
    run = {**run_doc(), "label": "stack", "verdict": analysis.verdict(run_doc(), cores=2)}
    run["locust"]["clients"]["per_replica"] = {"web-1": 2, analysis.NO_SERVER_INFO: 1}
    rows = summary.table({"runs": [run]})
    assert rows[1][:2] == ["verdict", "PASS"]
    spread = next(row for row in rows if row[0] == "clients per replica")
    assert spread[1] == f"{analysis.NO_SERVER_INFO} 1 / web-1 2"


def test_latency_samples_are_exactly_the_deliveries_counted():
    """A report once showed 2,276 latency samples for 2,189 deliveries: every receipt had a sample,
    while deliveries excused every client from the last second's messages (the run stopped them
    within DISCONNECT_GRACE of those sends, its drain being shorter)."""
    stopped_by_the_run = {"connected": 1.0, "closed": 30.0, "stopping": True}
    clients = {
        "a": dict(stopped_by_the_run), "b": dict(stopped_by_the_run),
        # Dropped 2 s after m1: excused from it, so its copy of m1 is no delivery and no sample.
        "dropped": {"connected": 1.0, "closed": 12.0, "close_reason": "transport close"},
        "late": {"connected": 11.0},  # connected after m1 was sent
    }
    messages = {"m1": {"id": "m1", "k": "broadcast", "t": 10.0},
                "m2": {"id": "m2", "k": "broadcast", "t": 29.0}}  # 1 s before the run's stop
    received = {"a": {"m1": 10.020, "m2": 29.010}, "b": {"m1": 10.030},
                "dropped": {"m1": 10.050}, "late": {"m1": 10.5, "m2": 29.020}}

    result = analysis.delivery(clients, received, messages)
    samples = analysis.delivered_samples(clients, received, messages)

    assert (result["expected"], result["received"]) == (5, 4)  # m1: a, b; m2: a, b, late
    assert result["missing_by_cause"] == {"never arrived (client stayed connected)": 1}  # b, m2
    assert len(samples) == result["received"]
    assert sorted(round(latency) for _, latency, _ in samples) == [10, 20, 20, 30]
    assert {kind for _, _, kind in samples} == {"broadcast"}
    summary_count = analysis.latency_summary(samples)["fanout"]["count"]
    assert summary_count == result["by_kind"]["broadcast"]["received"]


@pytest.mark.parametrize(("value", "shown"), [
    (1 / 30, "0.0333"), (150.0, "150"), (1500, "1,500"), (0.999, "0.999"), (0, "0"),
    ("websocket:80,polling:10", "websocket:80,polling:10"), (None, "None"),
])
def test_parameters_are_shown_as_a_person_writes_them(value, shown):
    assert summary.plain(value) == shown
