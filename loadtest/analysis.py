"""What a load test measured, computed from raw records: pure Python, no third-party imports.

Shared by the Locust side (loadtest/locustfile.py, in .venv-loadtest) and the runner
(loadtest/run.py, in the app's .venv), so the same definitions hold wherever a figure is computed.

Definitions:
  * a fan-out message (kind `broadcast`, `notify` or `room`) is EXPECTED by every client that was
    connected (for `room`: had its join acknowledged) before the message was sent, and did not
    close within DISCONNECT_GRACE seconds after it was sent;
  * it is RECEIVED by such a client when the client recorded its id; a second copy is a duplicate;
  * the delivery ratio is received / expected over all (message, expected client) pairs;
  * latency is receive time minus the send timestamp carried in the payload (one machine, one clock;
    across machines, synchronize the clocks or read the latencies as clock offsets too).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

FANOUT_KINDS = ("broadcast", "notify", "room")
ECHO_KIND = "echo"
DISCONNECT_GRACE = 5.0  # s: a client that closed this soon after a send is not expected to have it


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


def delivery(clients: dict[str, dict], received: dict[str, set], messages: dict[str, dict],
             grace: float = DISCONNECT_GRACE) -> dict[str, Any]:
    """Expected vs received for every fan-out message, per kind and in total."""
    # Clients eligible for broadcasts, sorted by when they became reachable.
    reachable = [(c["connected"], cid) for cid, c in clients.items() if c.get("connected")]
    reachable.sort()
    by_room: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for cid, c in clients.items():
        if c.get("room") and c.get("joined"):
            by_room[c["room"]].append((c["joined"], cid))
    for members in by_room.values():
        members.sort()

    totals: dict[str, Counter] = defaultdict(Counter)
    worst: list[tuple[float, str, str]] = []
    for mid, m in messages.items():
        kind, sent = m["k"], m["t"]
        pool = by_room.get(m.get("room") or "", []) if kind == "room" else reachable
        cut = bisect.bisect_left(pool, (sent, ""))
        expected = got = 0
        for _, cid in pool[:cut]:
            closed = clients[cid].get("closed")
            if closed is not None and closed <= sent + grace:
                continue
            expected += 1
            if mid in received.get(cid, ()):
                got += 1
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
                  worst_messages=[{"id": mid, "kind": k, "ratio": round(r, 4)}
                                  for r, mid, k in sorted(worst)[:5]])
    return result


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
            Counter(c.get("replica") or "unknown" for c in connected).items())),
        "per_transport": dict(sorted(Counter(
            f"{c.get('mode')}->{c.get('transport')}" for c in connected).items())),
        "errors": dict(errors.most_common(8)),
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
