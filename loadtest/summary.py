"""The summary table of a results file: printed at the end of a run and shown in the HTML report.

Pure Python, so both the runner (app .venv) and the report (.venv-loadtest) use it.
    python -m loadtest.summary loadtest-results/<file>.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _get(doc: dict, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits == 0:
        value = round(value)
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return text + unit


def plain(value: Any) -> str:
    """A parameter as a person writes it: 1,500 clients, a rate of 0.0333 (not 0.03333333333333333),
    150 rather than 150.0; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return f"{int(value):,}"


def _spread(run: dict) -> str:
    per_replica = _get(run, "locust", "clients", "per_replica") or {}
    return " / ".join(f"{name} {n}" for name, n in sorted(per_replica.items())) or "-"


def _causes(counts: dict | None) -> str:
    return ", ".join(f"{cause} {n:,}" for cause, n in (counts or {}).items()) or "none"


def _verdict(run: dict) -> str:
    verdict = run.get("verdict") or {}
    status = verdict.get("status")
    if status is None:
        return "-"
    reasons = verdict.get("machine_bound_evidence") or verdict.get("failures") or []
    return status.upper() + (f" ({'; '.join(reasons)})" if reasons else "")


# (label, getter, formatter, "higher is better" for the ratio column; None: no ratio)
Row = tuple[str, Callable[[dict], Any], Callable[[Any], str], bool | None]

ROWS: list[Row] = [
    ("verdict", _verdict, str, None),
    ("clients connected / target",
     lambda r: (_get(r, "locust", "clients", "connected"), _get(r, "locust", "clients", "target")),
     lambda v: f"{_num(v[0])} / {_num(v[1])}", None),
    ("clients per replica", _spread, str, None),
    ("connect errors", lambda r: _get(r, "locust", "clients", "connect_errors"), _num, None),
    ("errors by cause", lambda r: _get(r, "locust", "clients", "errors_by_cause"), _causes,
     None),
    ("dropped while connected, by reason",
     lambda r: _get(r, "locust", "clients", "close_reasons"), _causes, None),
    ("connect rate (connects/s)", lambda r: _get(r, "locust", "clients", "connect_rate_per_s"),
     _num, True),
    ("connect time p50 / p99 (ms)",
     lambda r: (_get(r, "locust", "clients", "connect_ms", "p50"),
                _get(r, "locust", "clients", "connect_ms", "p99")),
     lambda v: f"{_num(v[0], 0)} / {_num(v[1], 0)}", None),
    ("fan-out messages sent", lambda r: _get(r, "locust", "delivery", "messages"), _num, None),
    ("delivery ratio (received/expected)", lambda r: _get(r, "locust", "delivery", "ratio"),
     lambda v: "-" if v is None else f"{v:.4f}", True),
    ("deliveries expected / received",
     lambda r: (_get(r, "locust", "delivery", "expected"),
                _get(r, "locust", "delivery", "received")),
     lambda v: f"{_num(v[0])} / {_num(v[1])}", None),
    ("missing deliveries by cause",
     lambda r: _get(r, "locust", "delivery", "missing_by_cause"), _causes, None),
    ("deliveries/s (steady phase)", lambda r: _get(r, "locust", "throughput", "deliveries_per_s"),
     _num, True),
    ("fan-out latency p50 (ms)", lambda r: _get(r, "locust", "latency_ms", "fanout", "p50"),
     lambda v: _num(v, 1), False),
    ("fan-out latency p90 (ms)", lambda r: _get(r, "locust", "latency_ms", "fanout", "p90"),
     lambda v: _num(v, 1), False),
    ("fan-out latency p99 (ms)", lambda r: _get(r, "locust", "latency_ms", "fanout", "p99"),
     lambda v: _num(v, 1), False),
    ("fan-out latency max (ms)", lambda r: _get(r, "locust", "latency_ms", "fanout", "max"),
     lambda v: _num(v, 1), False),
    ("echo round trip p50 / p99 (ms)",
     lambda r: (_get(r, "locust", "latency_ms", "echo", "p50"),
                _get(r, "locust", "latency_ms", "echo", "p99")),
     lambda v: f"{_num(v[0], 1)} / {_num(v[1], 1)}", None),
]
for _kind in ("web", "nginx", "rabbitmq", "worker", "total"):
    ROWS.append((f"server CPU-s per 1,000 deliveries: {_kind}",
                 lambda r, k=_kind: _get(r, "server", "cpu_seconds_per_1000_deliveries", k),
                 lambda v: _num(v, 3), False))
ROWS += [
    ("web memory per connection (KiB)",
     lambda r: _get(r, "server", "memory", "web_kib_per_connection"), lambda v: _num(v, 1), False),
    ("generator CPU, busiest process (cores)",
     lambda r: _get(r, "generator", "busiest_process_cores_steady"), lambda v: _num(v, 2), None),
    ("generator CPU-s per 1,000 deliveries / server's",
     lambda r: (_get(r, "generator", "cpu_seconds_per_1000_deliveries"),
                _get(r, "generator", "cpu_vs_server")),
     lambda v: f"{_num(v[0], 3)} / {_num(v[1], 2)}x", None),
    ("generator loop lag p99 (ms)",
     lambda r: _get(r, "locust", "generator", "loop_lag_ms_steady", "p99"), _num, None),
    ("machine: CPU steal / busy / runnable tasks",
     lambda r: (_get(r, "machine", "steal_share"), _get(r, "machine", "busy_share"),
                _get(r, "machine", "runnable_mean")),
     lambda v: "-" if v[0] is None else f"{v[0]:.1%} / {v[1]:.0%} / {v[2]:.1f}", None),
]


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def table(doc: dict) -> list[list[str]]:
    runs = doc.get("runs", [])
    header = ["metric", *[run.get("label", "?") for run in runs]]
    if len(runs) == 2:
        header.append(f"{runs[0].get('label')}/{runs[1].get('label')}")
    rows = [header]
    for label, getter, fmt, _better in ROWS:
        values = [getter(run) for run in runs]
        if all(v is None or (isinstance(v, tuple) and all(x is None for x in v)) for v in values):
            continue
        row = [label, *[fmt(v) if v is not None else "-" for v in values]]
        if len(runs) == 2:
            r = ratio(values[0], values[1]) if _better is not None else None
            row.append(f"{r:.2f}x" if r is not None else "")
        rows.append(row)
    return rows


def render_text(doc: dict) -> str:
    rows = table(doc)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [note for run in doc.get("runs", []) for note in run.get("notes", [])]
    return "\n".join(lines + [f"note: {note}" for note in notes])


if __name__ == "__main__":
    print(render_text(json.loads(Path(sys.argv[1]).read_text())))
