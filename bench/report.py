"""The figures of `make bench` from the generators' reports and /proc samples, the markdown tables
and the generated section of docs/benchmarks.md."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loadtest import procstats

BUSY_LOAD = 2.5  # a 1-minute load average above this on 2 cores: other work shared the machine
SERVER_GROUPS = ("web", "nginx", "broker")
BROKER_NAME = {"stack": "RabbitMQ", "stack-recovering": "RabbitMQ",
               "stack-no-recovery": "RabbitMQ", "recipe": "RabbitMQ", "node": "Redis"}
SYSTEM_TITLE = {
    "stack": "this stack",
    "stack-recovering": "this stack, every client asking for recovery",
    "stack-no-recovery": "this stack, recovery off",
    "recipe": "Flask-SocketIO recipe",
    "node": "Node socket.io + Redis adapter",
}


def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for item in counts:
        total.update(item)
    return dict(total)


def percentile(histogram: list[tuple[float, int]], fraction: float) -> float | None:
    """The smallest value with at least `fraction` of the samples at or below it."""
    total = sum(count for _, count in histogram)
    if not total:
        return None
    wanted, seen = fraction * total, 0
    for value, count in histogram:
        seen += count
        if seen >= wanted:
            return value
    return histogram[-1][0]


def summarize(done: list[dict[str, Any]], samples: list[dict], window: list[float],
              scenario: dict[str, Any], groups: dict[str, list[int]], *,
              machine_samples: list[dict]) -> dict[str, Any]:
    """Delivery, latency and CPU per 1,000 deliveries of one system from its generators' reports."""
    expected = sum(d["expected"] for d in done)
    received = sum(d["received"] for d in done)
    buckets: Counter = Counter()
    for d in done:
        buckets.update({int(key): count for key, count in d["histogram"].items()})
    histogram = sorted((key / 10, count) for key, count in buckets.items())
    in_window = sum(d["inWindow"] for d in done)
    start, end = window[0] / 1000, window[1] / 1000
    cpu = {group: procstats.cpu_between(samples, group, start, end)
           for group in (*SERVER_GROUPS, "generator") if group in groups or group == "generator"}
    server = sum(cpu.get(group) or 0.0 for group in SERVER_GROUPS)
    machine = procstats.cpu_between(machine_samples, "machine", start, end)
    # Everything else on the machine (other work, this runner): read with the latencies.
    other = machine - server - (cpu.get("generator") or 0.0) if machine is not None else None

    def per_1000(seconds: float | None) -> float | None:
        return round(1000 * seconds / in_window, 4) if seconds is not None and in_window else None

    return {
        "clients": sum(d["clients"] for d in done),
        "messages": scenario["messages"],
        "expected": expected,
        "received": received,
        "delivery_ratio": round(received / expected, 4) if expected else 0.0,
        "duplicates": sum(d["duplicates"] for d in done),
        "disconnected": sum(d["disconnected"] for d in done),
        "latency_ms": {
            "p50": percentile(histogram, 0.50), "p90": percentile(histogram, 0.90),
            "p99": percentile(histogram, 0.99),
            "max": round(max(d["maxMs"] for d in done), 1) if received else None,
            "count": received,
        },
        "window_seconds": round(end - start, 2),
        "deliveries_in_window": in_window,
        "deliveries_per_second": round(in_window / (end - start), 1) if end > start else None,
        "cpu_seconds": {group: round(value, 3) if value is not None else None
                        for group, value in cpu.items()},
        "cpu_per_1000": {"web": per_1000(cpu.get("web")), "server": per_1000(server),
                         "nginx": per_1000(cpu.get("nginx")), "broker": per_1000(cpu.get("broker")),
                         "generator": per_1000(cpu.get("generator"))},
        "generator_cpu_seconds": round(sum(d["cpuSeconds"] for d in done), 2),
        "other_cores": (round(max(0.0, other) / (end - start), 2)
                        if other is not None and end > start else None),
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 2)


def add_ratios(doc: dict[str, Any]) -> None:
    """Each system's figures divided by the recipe's in the same scenario."""
    for scenario in doc["scenarios"]:
        recipe = next((s for s in scenario["systems"]
                       if s["system"] == "recipe" and "error" not in s), None)
        for system in scenario["systems"]:
            if recipe is None or "error" in system:
                continue
            system["vs_recipe"] = {
                "web_cpu": ratio(system["cpu_per_1000"]["web"], recipe["cpu_per_1000"]["web"]),
                "server_cpu": ratio(system["cpu_per_1000"]["server"],
                                    recipe["cpu_per_1000"]["server"]),
                "p50": ratio(system["latency_ms"]["p50"], recipe["latency_ms"]["p50"]),
                "p99": ratio(system["latency_ms"]["p99"], recipe["latency_ms"]["p99"]),
                "memory_per_connection": ratio(system["memory_per_connection_kib"],
                                               recipe["memory_per_connection_kib"]),
            }


# -- markdown -------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, (int, float)) else str(value)


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def load(system: dict[str, Any]) -> str:
    before, after = system["load_before"][0], system.get("load_after", ["?"])[0]
    busy = " (busy)" if max(before, after if isinstance(after, float) else 0) > BUSY_LOAD else ""
    return f"{before:.2f} → {after:.2f}{busy}" if isinstance(after, float) else f"{before:.2f}"


def latencies(system: dict[str, Any]) -> str:
    lat = system["latency_ms"]
    return " / ".join(fmt(lat[key], 0) for key in ("p50", "p90", "p99", "max"))


def delivered(system: dict[str, Any]) -> str:
    text = f"{system['delivery_ratio']:.4f}"
    extra = []
    if system.get("connect_failed"):
        extra.append(f"{system['connect_failed']} did not connect")
    if system.get("disconnected"):
        extra.append(f"{system['disconnected']} disconnected")
    if system.get("duplicates"):
        extra.append(f"{system['duplicates']} duplicates")
    return text + (f" ({', '.join(extra)})" if extra else "")


def vs_recipe(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda system: times(system.get("vs_recipe", {}).get(key))


def per_1000(group: str) -> Callable[[dict[str, Any]], str]:
    return lambda system: fmt(system["cpu_per_1000"][group], 3)


def field(key: str, digits: int = 0) -> Callable[[dict[str, Any]], str]:
    return lambda system: fmt(system.get(key), digits)


# (header, alignment, cell) per column after the system's name
FANOUT_COLUMNS = [
    ("delivered", "---", delivered),
    ("latency p50 / p90 / p99 / max (ms)", "---", latencies),
    ("deliveries/s (window)", "---:", field("deliveries_per_second")),
    ("web CPU-s / 1k", "---:", per_1000("web")),
    ("server CPU-s / 1k", "---:", per_1000("server")),
    ("web CPU vs recipe", "---:", vs_recipe("web_cpu")),
    ("server CPU vs recipe", "---:", vs_recipe("server_cpu")),
    ("p99 vs recipe", "---:", vs_recipe("p99")),
    ("KiB / connection", "---:", field("memory_per_connection_kib", 1)),
    ("generator CPU-s / 1k", "---:", per_1000("generator")),
    ("other CPU (cores)", "---:", field("other_cores", 2)),
    ("load before → after", "---", load),
]
IDLE_COLUMNS = [
    ("connected (connect time)", "---",
     lambda system: f"{system['connected']:,} ({system['connect_seconds']:g} s)"),
    ("KiB / connection", "---:", field("memory_per_connection_kib", 1)),
    ("vs recipe", "---:", vs_recipe("memory_per_connection")),
    ("web RSS (MiB)", "---:", field("web_rss_mib", 1)),
    ("broadcast delivered", "---", delivered),
    ("broadcast p50 / p90 / p99 / max (ms)", "---", latencies),
    ("p99 vs recipe", "---:", vs_recipe("p99")),
    ("other CPU (cores)", "---:", field("other_cores", 2)),
    ("load before → after", "---", load),
]


def table(heading: str, columns: list, scenario: dict[str, Any]) -> list[str]:
    rows = [heading, "", "| system | " + " | ".join(header for header, _, _ in columns) + " |",
            "| --- | " + " | ".join(align for _, align, _ in columns) + " |"]
    for system in scenario["systems"]:
        if "error" in system:
            cells = [f"FAILED: {system['error'].splitlines()[0]}"] + [""] * (len(columns) - 1)
        else:
            cells = [cell(system) for _, _, cell in columns]
        title = SYSTEM_TITLE.get(system["system"], system["system"])
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    return rows


def scenario_table(scenario: dict[str, Any]) -> list[str]:
    if scenario["kind"] == "idle":
        return table(f"#### {scenario['name']}: {scenario['clients']:,} idle WebSocket clients "
                     "connected straight to one web process (no nginx), then one broadcast to all",
                     IDLE_COLUMNS, scenario)
    return table(f"#### {scenario['name']}: {scenario['clients']:,} clients x "
                 f"{scenario['rate']:g} broadcasts/s ({scenario['clients'] * scenario['rate']:,.0f}"
                 f" deliveries/s), {scenario['duration']:g} s, {scenario['replicas']} web "
                 "processes each", FANOUT_COLUMNS, scenario)


def markdown(doc: dict[str, Any]) -> str:
    machine = doc["machine"]
    lines = [
        (f"Run {doc['started']} to {doc['finished']} (UTC): `{doc['command'].strip()}`; this "
         f"stack at commit {doc.get('stack_revision', 'unknown')}."),
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, Node {machine['node']}, "
        f"nginx {machine['nginx']}, {machine['redis']}. Generator: {doc['generators']} Node "
        "process(es) of socket.io-client, WebSocket only, on the same machine. Load average "
        f"(1, 5, 15 min) {', '.join(map(str, machine['load_at_start']))} at the start, "
        f"{', '.join(map(str, machine.get('load_at_end', [])))} at the end"
        + (" (busy: other work shared the machine)"
           if max(machine["load_at_start"][0], machine.get("load_at_end", [0])[0]) > BUSY_LOAD
           else "") + ".",
        "",
    ]
    for scenario in doc["scenarios"]:
        lines += scenario_table(scenario)
        problems = [f"{SYSTEM_TITLE.get(s['system'], s['system'])}: "
                    + ", ".join(f"{k} ({v})" for k, v in sorted(s["errors"].items()))
                    for s in scenario["systems"] if s.get("errors")]
        if problems:
            lines += ["", "Connect errors and disconnects: " + "; ".join(problems) + "."]
        lines.append("")
    lines.append(
        "CPU-s / 1k: utime+stime per 1,000 deliveries received in the steady window; server = web "
        "+ nginx + broker (RabbitMQ for this stack and the recipe, Redis for Node). Other CPU: "
        "what the rest of the machine (other work, the runner) used meanwhile, of its "
        f"{machine['cores']} cores. KiB / connection: RSS growth of the web processes over the "
        "connect phase, per client.")
    return "\n".join(lines) + "\n"


def markers(section: str) -> tuple[str, str]:
    name = f"bench:{section}" if section else "bench"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def update_docs(path: Path, text: str, section: str = "") -> None:
    """Replace what lies between the section's markers (appended with its markers when absent)."""
    begin, end = markers(section)
    note = "<!-- generated by `make bench` (bench/run.py); edits here are overwritten -->"
    body = f"{begin}\n{note}\n\n{text}{end}"
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: body, current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n## `make bench`\n\n" + body + "\n"
    path.write_text(updated)
