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
FELL_BEHIND = 0.95  # rooms: fewer deliveries than this share of those due in the window
BROKER_NAME = {"stack": "RabbitMQ", "stack-recovering": "RabbitMQ",
               "stack-no-recovery": "RabbitMQ", "recipe": "RabbitMQ", "node": "Redis",
               "node-sharded": "Redis"}
SYSTEM_TITLE = {
    "stack": "this stack",
    "stack-recovering": "this stack, every client asking for recovery",
    "stack-no-recovery": "this stack, recovery off",
    "recipe": "Flask-SocketIO recipe",
    "node": "Node socket.io + Redis adapter",
    "node-sharded": "Node socket.io + sharded Redis adapter",
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


def deliveries(done: list[dict[str, Any]]) -> dict[str, Any]:
    """Delivery and latency from the generators' reports."""
    expected = sum(d["expected"] for d in done)
    received = sum(d["received"] for d in done)
    buckets: Counter = Counter()
    for d in done:
        buckets.update({int(key): count for key, count in d["histogram"].items()})
    histogram = sorted((key / 10, count) for key, count in buckets.items())
    return {
        "clients": sum(d["clients"] for d in done),
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
    }


def summarize(done: list[dict[str, Any]], samples: list[dict], window: list[float],
              scenario: dict[str, Any], groups: dict[str, list[int]], *,
              machine_samples: list[dict]) -> dict[str, Any]:
    """Delivery, latency and CPU per 1,000 deliveries of one system from its generators' reports."""
    delivery = deliveries(done)
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
        "clients": delivery["clients"],
        "messages": scenario["messages"],
        **{key: value for key, value in delivery.items() if key != "clients"},
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


def summarize_rooms(done: list[dict[str, Any]], published: dict[str, Any], *,
                    samples: list[dict], window: list[float],
                    idle_windows: list[list[float]],
                    replicas: list[tuple[str, str, int]], groups: dict[str, list[int]],
                    machine_samples: list[dict]) -> dict[str, Any]:
    """The figures of a rooms scenario. `replicas`: (sampler group, replica id, room members) of
    each replica. CPU per event: the process's CPU over the steady window less its idle CPU (its
    lowest rate over `idle_windows`, every client in and nothing sent) for as long, divided by the
    events the publisher sent in the window; raw figures (idle not subtracted) beside them."""
    start, end = window[0] / 1000, window[1] / 1000
    seconds = end - start
    events = published["inWindow"]
    in_window = sum(d["inWindow"] for d in done)
    delivery = deliveries(done)
    # What the members would have received in the window had they kept up with the publisher.
    due_in_window = (delivery["expected"] * events / published["sent"]
                     if published.get("sent") else 0.0)

    def idle_rates(group: str) -> list[float]:
        """The group's CPU rate (cores) in each idle window."""
        rates = []
        for idle_start, idle_end in idle_windows:
            idle = procstats.cpu_between(samples, group, idle_start / 1000, idle_end / 1000)
            if idle is not None and idle_end > idle_start:
                rates.append(idle / ((idle_end - idle_start) / 1000))
        return rates

    def used(group: str) -> tuple[float | None, float | None]:
        """(CPU seconds in the window, its idle rate in cores: the lowest measured)."""
        rates = idle_rates(group)
        return procstats.cpu_between(samples, group, start, end), min(rates) if rates else None

    def per_event(seconds_used: float | None) -> float | None:
        return round(1e6 * seconds_used / events, 1) if seconds_used is not None and events \
            else None

    def marginal(cpu: float | None, idle_rate: float | None) -> float | None:
        return cpu - idle_rate * seconds if cpu is not None and idle_rate is not None else None

    per_replica = []
    for group, replica_id, members in replicas:
        cpu, idle_rate = used(group)
        per_replica.append({
            "replica": replica_id, "members": members,
            "cpu_seconds": round(cpu, 3) if cpu is not None else None,
            "idle_ms_per_s": round(1000 * idle_rate, 2) if idle_rate is not None else None,
            "idle_ms_per_s_measured": [round(1000 * rate, 2) for rate in idle_rates(group)],
            "us_per_event": per_event(marginal(cpu, idle_rate)),
            "us_per_event_raw": per_event(cpu)})

    def spread(values: list[float | None]) -> dict[str, float] | None:
        known = [v for v in values if v is not None]
        return {"mean": round(sum(known) / len(known), 1), "max": max(known)} if known else None

    web = [marginal(*used(group)) for group, _, _ in replicas]
    web_seconds = sum(w for w in web if w is not None) if any(w is not None for w in web) else None
    broker_cpu, broker_idle = used("broker") if "broker" in groups else (None, None)
    machine = procstats.cpu_between(machine_samples, "machine", start, end)
    # Everything else on the machine (other work, this runner): read with the latencies.
    measured = sum(procstats.cpu_between(samples, group, start, end) or 0.0
                   for group in (*SERVER_GROUPS, "generator", "publisher"))
    other = machine - measured if machine is not None else None
    return {
        **delivery,
        "messages": published["sent"],
        "misrouted": sum(d.get("misrouted", 0) for d in done),
        "members": sum(d.get("members", 0) for d in done),
        "window_seconds": round(seconds, 2),
        "idle_seconds": [round((b - a) / 1000, 2) for a, b in idle_windows],
        "events_in_window": events,
        "events_per_second": round(events / seconds, 1) if seconds > 0 else None,
        "publisher_max_lag_ms": published.get("maxLagMs"),
        "publisher_us_per_event": (round(1e6 * published["cpuSeconds"] / published["sent"], 1)
                                   if published.get("sent") else None),
        "deliveries_in_window": in_window,
        "deliveries_per_second": round(in_window / seconds, 1) if seconds > 0 else None,
        # Below about 1: the members' replicas fell behind the publisher, and CPU per event,
        # divided by the events published in the window, counts less work than they were given.
        "kept_up": round(in_window / due_in_window, 3) if due_in_window else None,
        "per_replica": per_replica,
        "non_member_us_per_event": spread([r["us_per_event"] for r in per_replica
                                           if not r["members"]]),
        "member_us_per_event": spread([r["us_per_event"] for r in per_replica if r["members"]]),
        "replica_idle_ms_per_s": spread([r["idle_ms_per_s"] for r in per_replica]),
        "cluster_web_us_per_event": per_event(web_seconds),
        "cluster_web_us_per_delivery": (round(1e6 * web_seconds / in_window, 2)
                                        if web_seconds is not None and in_window else None),
        "broker_us_per_event": per_event(marginal(broker_cpu, broker_idle)),
        "broker_us_per_event_raw": per_event(broker_cpu),
        "broker_idle_ms_per_s": round(1000 * broker_idle, 2) if broker_idle is not None else None,
        "other_cores": (round(max(0.0, other) / seconds, 2)
                        if other is not None and seconds > 0 else None),
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 2)


def add_ratios(doc: dict[str, Any]) -> None:
    """Each system's figures divided by the recipe's in the same scenario (fan-out and idle)."""
    for scenario in doc["scenarios"]:
        if scenario["kind"] == "rooms":
            continue
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
        rows.append(f"| {system_cells(system, columns)} |")
    return rows


def system_cells(system: dict[str, Any], columns: list) -> str:
    """A system's title and its cells of `columns` (a failed run: why, in the first)."""
    if "error" in system:
        cells = [f"FAILED: {system['error'].splitlines()[0]}"] + [""] * (len(columns) - 1)
    else:
        cells = [cell(system) for _, _, cell in columns]
    return " | ".join([SYSTEM_TITLE.get(system["system"], system["system"]), *cells])


def scenario_table(scenario: dict[str, Any]) -> list[str]:
    if scenario["kind"] == "idle":
        return table(f"#### {scenario['name']}: {scenario['clients']:,} idle WebSocket clients "
                     "connected straight to one web process (no nginx), then one broadcast to all",
                     IDLE_COLUMNS, scenario)
    return table(f"#### {scenario['name']}: {scenario['clients']:,} clients x "
                 f"{scenario['rate']:g} broadcasts/s ({scenario['clients'] * scenario['rate']:,.0f}"
                 f" deliveries/s), {scenario['duration']:g} s, {scenario['replicas']} web "
                 "processes each", FANOUT_COLUMNS, scenario)


def low_high(key: str) -> Callable[[dict[str, Any]], str]:
    """A {"mean", "max"} figure as "mean / max"; "-" where there is none (no such replica)."""
    def cell(system: dict[str, Any]) -> str:
        value = system.get(key)
        return "-" if value is None else f"{fmt(value['mean'], 1)} / {fmt(value['max'], 1)}"
    return cell


def room_delivered(system: dict[str, Any]) -> str:
    """As delivered(), with the clients whose join failed and the events to non-members."""
    counts = [(system.get("connect_failed"), "did not connect"),
              (system.get("join_failed"), "did not join"),
              (system.get("disconnected"), "disconnected"),
              (system.get("duplicates"), "duplicates"),
              (system.get("misrouted"), "to non-members")]
    extra = [f"{count} {what}" for count, what in counts if count]
    return f"{system['delivery_ratio']:.4f}" + (f" ({', '.join(extra)})" if extra else "")


# (header, alignment, cell) per column after the scenario's and the system's names
ROOMS_COLUMNS = [
    ("delivered", "---", room_delivered),
    ("latency p50 / p99 (ms)", "---",
     lambda system: " / ".join(fmt(system["latency_ms"][key]) for key in ("p50", "p99"))),
    ("replicas without a member: CPU µs / event, mean / max", "---:",
     low_high("non_member_us_per_event")),
    ("replicas with members: CPU µs / event, mean / max", "---:", low_high("member_us_per_event")),
    ("all replicas: CPU µs / delivery", "---:", field("cluster_web_us_per_delivery", 2)),
    ("broker: CPU µs / event", "---:", field("broker_us_per_event", 1)),
    ("replica idle CPU (ms/s), mean / max", "---:", low_high("replica_idle_ms_per_s")),
    ("events/s (window)", "---", lambda system: fmt(system["events_per_second"]) + (
        f" (fell behind: {system['kept_up']:.0%} of the deliveries due in the window)"
        if system.get("kept_up") is not None and system["kept_up"] < FELL_BEHIND else "")),
    ("other CPU (cores)", "---:", field("other_cores", 2)),
    ("load before → after", "---", load),
]


def rooms_table(scenarios: list[dict[str, Any]]) -> list[str]:
    """All rooms scenarios in one table, each system's 3, 6, 12 replicas one under the other."""
    first = scenarios[0]
    order = {name: index for index, name in enumerate(SYSTEM_TITLE)}
    rows = sorted(((scenario, system) for scenario in scenarios for system in scenario["systems"]),
                  key=lambda row: (row[0]["placement"] != "local", order.get(row[1]["system"], 99),
                                   row[0]["replicas"]))
    heading = (f"#### rooms: {first['rooms']} rooms of {first['room_clients']} clients, "
               f"{first['rate']:g} events/s round-robin over the rooms, {first['duration']:g} s; "
               "each client connected straight to its replica (no nginx), one more in no room on "
               "each replica; local: every member on replica 1, spread: every room on every "
               "replica")
    lines = [heading, "",
             "| scenario | system | " + " | ".join(h for h, _, _ in ROOMS_COLUMNS) + " |",
             "| --- | --- | " + " | ".join(a for _, a, _ in ROOMS_COLUMNS) + " |"]
    for scenario, system in rows:
        lines.append(f"| {scenario['name']} | {system_cells(system, ROOMS_COLUMNS)} |")
    return lines


ROOMS_NOTE = (
    "Rooms: CPU per event is a process's utime+stime (its children's too) over the steady window, "
    "less what it used while idle (every client in, nothing sent: the lower of a period just "
    "before and one just after) for as long, "
    "divided by the events published in the window; all replicas per delivery likewise, summed "
    "over the replicas, per event received by a client. Fell behind: the members received fewer "
    "events in the window than were published in it; the CPU figures then count less work than "
    "the replicas were given (read them as a floor). Broker: RabbitMQ for this stack and the "
    "recipe, redis-server for Node. The publisher is a process of its own (this stack's emitter, "
    "a stock KombuManager, a Node process with the adapter), not counted in either.")


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
    rooms = [scenario for scenario in doc["scenarios"] if scenario["kind"] == "rooms"]
    for scenario in doc["scenarios"]:
        if scenario["kind"] == "rooms" and scenario is not rooms[0]:
            continue  # in the one rooms table
        lines += rooms_table(rooms) if scenario["kind"] == "rooms" else scenario_table(scenario)
        problems = [f"{title}: " + ", ".join(f"{k} ({v})" for k, v in sorted(s["errors"].items()))
                    for title, s in problem_rows(rooms if scenario["kind"] == "rooms"
                                                 else [scenario])]
        if problems:
            lines += ["", "Connect errors and disconnects: " + "; ".join(problems) + "."]
        lines.append("")
    notes = []
    if len(rooms) < len(doc["scenarios"]):
        notes.append(
            "CPU-s / 1k: utime+stime per 1,000 deliveries received in the steady window; server = "
            "web + nginx + broker (RabbitMQ for this stack and the recipe, Redis for Node). KiB / "
            "connection: RSS growth of the web processes over the connect phase, per client.")
    if rooms:
        notes.append(ROOMS_NOTE)
    notes.append(f"Other CPU: what the rest of the machine (other work, the runner) used "
                 f"meanwhile, of its {machine['cores']} cores.")
    lines.append(" ".join(notes))
    return "\n".join(lines) + "\n"


def problem_rows(scenarios: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(title, system) of each system with connect errors or disconnects, the scenario named when
    one table holds several."""
    several = len(scenarios) > 1
    return [((f"{scenario['name']}, " if several else "")
             + SYSTEM_TITLE.get(system["system"], system["system"]), system)
            for scenario in scenarios for system in scenario["systems"] if system.get("errors")]


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
