"""What a load test measured, computed from raw records: pure Python, no third-party imports.

Shared by the Locust side (loadtest/locustfile.py, in .venv-loadtest) and the runner
(loadtest/run.py, in the app's .venv), so the same definitions hold wherever a figure is computed.

Definitions:
  * a fan-out message (kind `broadcast`, `notify` or `room`) is EXPECTED by every client that was
    connected (for `room`: had its join acknowledged) before the message was sent, and did not
    drop out within DISCONNECT_GRACE seconds after it was sent (the run's own stop, after its
    drain, is not a drop: a client it stops is expected to have had everything sent before);
  * it is RECEIVED by such a client when the client recorded its id; a second copy is a duplicate;
  * the delivery ratio is received / expected over all (message, expected client) pairs;
  * latency is receive time minus the send time (one machine, one clock; across machines,
    synchronize the clocks or read the latencies as clock offsets too), over exactly the deliveries
    counted as received: a receipt that is not one (a client that dropped out just after, a message
    whose send failed on the sender's side) has no latency sample either.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

FANOUT_KINDS = ("broadcast", "notify", "room")
ECHO_KIND = "echo"
DISCONNECT_GRACE = 5.0  # s: a client that closed this soon after a send is not expected to have it
# The per-replica bucket of clients that connected but never answered `server_info`.
NO_SERVER_INFO = "(no server_info answer)"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by the nearest-rank method; None without values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def distribution(values: Iterable[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), 2),
        "p90": round(percentile(ordered, 90), 2),
        "p99": round(percentile(ordered, 99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def expected_receivers(clients: dict[str, dict], messages: dict[str, dict],
                       grace: float = DISCONNECT_GRACE) -> Iterator[tuple[str, dict, list[str]]]:
    """(id, message, ids of the clients expected to receive it) for every fan-out message."""
    # Clients eligible for broadcasts, sorted by when they became reachable.
    reachable = [(c["connected"], cid) for cid, c in clients.items() if c.get("connected")]
    reachable.sort()
    by_room: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for cid, c in clients.items():
        if c.get("room") and c.get("joined"):
            by_room[c["room"]].append((c["joined"], cid))
    for members in by_room.values():
        members.sort()
    for mid, m in messages.items():
        sent = m["t"]
        pool = by_room.get(m.get("room") or "", []) if m["k"] == "room" else reachable
        cut = bisect.bisect_left(pool, (sent, ""))
        yield mid, m, [cid for _, cid in pool[:cut] if not dropped_out(clients[cid], sent, grace)]


def dropped_out(client: dict, sent: float, grace: float) -> bool:
    """Whether a client closed too soon after a send to be expected to have it. The run stopping
    its clients (after the drain) does not count: with a drain shorter than the grace, every
    client would otherwise be excused from the messages of the steady phase's last seconds."""
    closed = client.get("closed")
    return closed is not None and closed <= sent + grace and not client.get("stopping")


def delivered_samples(clients: dict[str, dict], received: dict[str, dict[str, float]],
                      messages: dict[str, dict],
                      grace: float = DISCONNECT_GRACE) -> list[tuple[float, float, str]]:
    """(receive time, latency in ms, kind) of each delivery `delivery()` counts as received, and
    of no other receipt, so that the latency figures and the deliveries are the same set.
    `received`: client id -> {message id: receive time}."""
    samples = []
    for mid, m, receivers in expected_receivers(clients, messages, grace):
        for cid in receivers:
            at = received.get(cid, {}).get(mid)
            if at is not None:
                samples.append((at, (at - m["t"]) * 1000.0, m["k"]))
    return samples


def delivery(clients: dict[str, dict], received: dict[str, dict[str, float]],
             messages: dict[str, dict], grace: float = DISCONNECT_GRACE) -> dict[str, Any]:
    """Expected vs received for every fan-out message, per kind and in total."""
    totals: dict[str, Counter] = defaultdict(Counter)
    missing: Counter = Counter()  # lost deliveries by what happened to their client
    worst: list[tuple[float, str, str]] = []
    for mid, m, receivers in expected_receivers(clients, messages, grace):
        kind, sent = m["k"], m["t"]
        expected, got = len(receivers), 0
        for cid in receivers:
            if mid in received.get(cid, ()):
                got += 1
            else:
                missing[lost_because(clients[cid], sent)] += 1
        totals[kind]["messages"] += 1
        totals[kind]["expected"] += expected
        totals[kind]["received"] += got
        if expected and got < expected:
            worst.append((got / expected, mid, kind))
    duplicates: Counter = Counter()
    for c in clients.values():
        for kind, n in (c.get("dups") or {}).items():
            duplicates[kind] += n

    result: dict[str, Any] = {"by_kind": {}}
    all_expected = all_received = all_messages = 0
    for kind in FANOUT_KINDS:
        t = totals.get(kind)
        if not t:
            continue
        result["by_kind"][kind] = {
            "messages": t["messages"], "expected": t["expected"], "received": t["received"],
            "ratio": ratio(t["received"], t["expected"]), "duplicates": duplicates[kind],
        }
        all_expected += t["expected"]
        all_received += t["received"]
        all_messages += t["messages"]
    result.update(messages=all_messages, expected=all_expected, received=all_received,
                  ratio=ratio(all_received, all_expected),
                  duplicates=sum(duplicates.values()),
                  incomplete_messages=len(worst),
                  missing_by_cause=dict(missing.most_common()),
                  worst_messages=[{"id": mid, "kind": k, "ratio": round(r, 4)}
                                  for r, mid, k in sorted(worst)[:5]])
    return result


def lost_because(client: dict, sent: float) -> str:
    """Why a client that was expected to get a message sent at `sent` did not, as far as the
    client can tell: the server dropped it (a slow reader over its outgoing limits, or a
    disconnect), its connection broke, or nothing happened to it and the message never came."""
    closed = client.get("closed")
    if closed is None or client.get("stopping"):
        return "never arrived (client stayed connected)"
    reason = (client.get("close_reason") or "").lower()
    if "server" in reason:
        return "client dropped by the server (slow reader or limits)"
    return f"client disconnected ({reason or 'no reason given'})"


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def per_second(values: list[tuple[float, float]], t0: float, seconds: int) -> list[list[float]]:
    """Group (time, value) pairs into one list per second since t0."""
    buckets: list[list[float]] = [[] for _ in range(seconds)]
    for t, v in values:
        i = int(t - t0)
        if 0 <= i < seconds:
            buckets[i].append(v)
    return buckets


def timeseries(clients: dict[str, dict], samples: list[tuple[float, float, str]], t0: float,
               t_end: float) -> dict[str, Any]:
    """Per-second series: latency percentiles, deliveries per kind, clients per replica."""
    seconds = max(1, int(math.ceil(t_end - t0)))
    fanout = [(t, lat) for t, lat, k in samples if k in FANOUT_KINDS]
    latency_buckets = per_second(fanout, t0, seconds)
    series: dict[str, Any] = {"t": list(range(seconds))}
    for q in (50, 90, 99):
        series[f"latency_p{q}"] = [percentile(sorted(b), q) for b in latency_buckets]
    series["latency_max"] = [max(b) if b else None for b in latency_buckets]
    echo_buckets = per_second([(t, lat) for t, lat, k in samples if k == ECHO_KIND], t0, seconds)
    series["echo_p99"] = [percentile(sorted(b), 99) for b in echo_buckets]
    deliveries: dict[str, list[int]] = {}
    for kind in (*FANOUT_KINDS, ECHO_KIND):
        counts = [0] * seconds
        for t, _, k in samples:
            i = int(t - t0)
            if k == kind and 0 <= i < seconds:
                counts[i] += 1
        if any(counts):
            deliveries[kind] = counts
    series["deliveries"] = deliveries
    replicas = sorted({c.get("replica") or "unknown"
                       for c in clients.values() if c.get("connected")})
    per_replica = {r: [0] * seconds for r in replicas}
    connects = [0] * seconds
    for c in clients.values():
        if not c.get("connected"):
            continue
        start = max(0, int(math.ceil(c["connected"] - t0)))
        stop = seconds if c.get("closed") is None else min(seconds, int(c["closed"] - t0) + 1)
        line = per_replica[c.get("replica") or "unknown"]
        for i in range(start, stop):
            line[i] += 1
        i = int(c["connected"] - t0)
        if 0 <= i < seconds:
            connects[i] += 1
    series["clients_per_replica"] = per_replica
    series["connects"] = connects
    return series


_STATUS = re.compile(r"(?:status(?: code)?|HTTP)[ :]*(\d{3})\b", re.I)


def error_cause(message: str) -> str:
    """The cause of a client's error, from its message: "HTTP 429", "timeout", "refused",
    "reset", "server disconnect" or "other". One word per cause, so causes can be counted."""
    text = message or ""
    status = _STATUS.search(text)
    if status:
        return f"HTTP {status.group(1)}"
    lowered = text.lower()
    for needle, cause in (("timed out", "timeout"), ("timeout", "timeout"),
                          ("refused", "refused"), ("reset", "reset"), ("broken pipe", "reset"),
                          ("connection aborted", "reset"), ("name or service", "dns"),
                          ("unexpected connection error", "handshake failed"),
                          ("not a valid namespace", "refused by the server"),
                          ("connection error", "handshake failed")):
        if needle in lowered:
            return cause
    return "other"


def client_summary(clients: dict[str, dict], target: int) -> dict[str, Any]:
    connected = [c for c in clients.values() if c.get("connected")]
    failed = [c for c in clients.values() if c.get("error") and not c.get("connected")]
    starts = [c["start"] for c in clients.values() if c.get("start")]
    ends = [c["connected"] for c in connected]
    span = (max(ends) - min(starts)) if ends and starts else 0.0
    errors = Counter((c.get("error") or "")[:160] for c in clients.values() if c.get("error"))
    return {
        "target": target,
        "attempted": len(clients),
        "connected": len(connected),
        "connect_errors": len(failed),
        "other_errors": sum(errors.values()) - len(failed),
        "dropped_during_run": sum(1 for c in connected
                                  if c.get("closed") and not c.get("stopping")),
        "connect_rate_per_s": round(len(connected) / span, 1) if span > 0 else None,
        "connect_ms": distribution(c["connect_ms"] for c in connected if c.get("connect_ms")),
        "per_replica": dict(sorted(
            Counter(c.get("replica") or NO_SERVER_INFO for c in connected).items())),
        "per_transport": dict(sorted(Counter(
            f"{c.get('mode')}->{c.get('transport')}" for c in connected).items())),
        "errors": dict(errors.most_common(8)),
        "errors_by_cause": dict(Counter(
            error_cause(c["error"]) for c in clients.values() if c.get("error")).most_common()),
        "close_reasons": dict(Counter(
            c.get("close_reason") or "?" for c in connected
            if c.get("closed") and not c.get("stopping")).most_common()),
        "without_server_info": sum(1 for c in connected if not c.get("replica")),
    }


def latency_summary(samples: list[tuple[float, float, str]],
                    window: tuple[float, float] | None = None) -> dict[str, Any]:
    def keep(t: float) -> bool:
        return window is None or window[0] <= t <= window[1] + DISCONNECT_GRACE
    out = {"fanout": distribution(lat for t, lat, k in samples if k in FANOUT_KINDS and keep(t))}
    for kind in (*FANOUT_KINDS, ECHO_KIND):
        values = [lat for t, lat, k in samples if k == kind and keep(t)]
        if values:
            out[kind] = distribution(values)
    return out


# -- is this run a measurement of the stack? ----------------------------------------------------

# Beyond any of these the machine or the load generator, not the stack, set the figures.
MACHINE_BOUND = {
    "steal_share": 0.05,  # of the machine's CPU time, taken by the hypervisor for other guests
    "busy_share": 0.95,  # of the machine's CPU time busy: nothing left to measure with
    "runnable_per_core": 2.0,  # tasks ready to run per core, on average over the window
    "generator_core": 0.9,  # one load-generator process's share of a core
    "loop_lag_p99_ms": 100.0,  # how late the generator's event loop woke up (p99)
}
# What a run of the stack must show to pass.
TARGETS = {"connected_share": 1.0, "delivery_ratio": 0.999, "fanout_p99_ms": 1000.0,
           "server_errors": 0}


def machine_bound(machine: dict, generator: dict, lag: dict, cores: int) -> list[str]:
    """The evidence that the machine or the generator was the bottleneck (empty: none)."""
    evidence = []
    limits = MACHINE_BOUND
    steal, busy, runnable = (machine.get(k) for k in ("steal_share", "busy_share",
                                                       "runnable_mean"))
    if steal is not None and steal > limits["steal_share"]:
        evidence.append(f"CPU steal {steal:.0%} of the machine's time (limit "
                        f"{limits['steal_share']:.0%}): other guests had the cores")
    if busy is not None and busy > limits["busy_share"]:
        evidence.append(f"the machine's CPUs were {busy:.0%} busy (limit "
                        f"{limits['busy_share']:.0%})")
    if runnable is not None and cores and runnable / cores > limits["runnable_per_core"]:
        evidence.append(f"{runnable:.1f} tasks ready to run on {cores} cores on average (limit "
                        f"{limits['runnable_per_core']:g} per core): they queued for the CPUs")
    busiest = generator.get("busiest_process_cores_steady")
    if busiest is not None and busiest >= limits["generator_core"]:
        evidence.append(f"a generator process used {busiest:.0%} of a core (limit "
                        f"{limits['generator_core']:.0%})")
    p99 = lag.get("p99")
    if p99 is not None and p99 > limits["loop_lag_p99_ms"]:
        evidence.append(f"the generator's event loop ran {p99:.0f} ms late at p99 (limit "
                        f"{limits['loop_lag_p99_ms']:.0f} ms): its receive times are late too")
    return evidence


def server_errors(locust_doc: dict) -> int:
    """Answers of 5xx met by clients and senders."""
    causes = {**(locust_doc.get("clients", {}).get("errors_by_cause") or {})}
    for cause, n in (locust_doc.get("events_by_cause") or {}).items():
        causes[cause] = causes.get(cause, 0) + n
    return sum(n for cause, n in causes.items() if re.search(r"HTTP 5\d\d", cause))


def verdict(run: dict, cores: int) -> dict[str, Any]:
    """Pass or fail against TARGETS; "not meaningful" when the machine was the bottleneck."""
    locust_doc = run.get("locust") or {}
    clients = locust_doc.get("clients") or {}
    evidence = machine_bound(run.get("machine") or {}, run.get("generator") or {},
                             (locust_doc.get("generator") or {}).get("loop_lag_ms_steady") or {},
                             cores)
    failures = []
    target = clients.get("target") or 0
    if target and (clients.get("connected") or 0) < TARGETS["connected_share"] * target:
        failures.append(f"{clients.get('connected', 0):,} of {target:,} clients connected")
    delivery_ratio = (locust_doc.get("delivery") or {}).get("ratio")
    if delivery_ratio is not None and delivery_ratio < TARGETS["delivery_ratio"]:
        failures.append(f"delivery ratio {delivery_ratio:.4f} < {TARGETS['delivery_ratio']}")
    p99 = ((locust_doc.get("latency_ms") or {}).get("fanout") or {}).get("p99")
    if p99 is not None and p99 > TARGETS["fanout_p99_ms"]:
        failures.append(f"fan-out p99 {p99:,.0f} ms > {TARGETS['fanout_p99_ms']:,.0f} ms")
    errors_5xx = server_errors(locust_doc)
    if errors_5xx > TARGETS["server_errors"]:
        failures.append(f"{errors_5xx:,} answers of 5xx")
    if (clients.get("attempted") or 0) > target > 0:
        failures.append(f"{clients['attempted']:,} clients attempted for a target of {target:,}: "
                        "Locust started users twice (a worker missed its heartbeats?); the "
                        "counts include both")
    status = "not meaningful: machine-bound" if evidence else "pass" if not failures else "fail"
    return {"status": status, "failures": failures, "machine_bound_evidence": evidence,
            "targets": TARGETS, "machine_bound_limits": MACHINE_BOUND}
