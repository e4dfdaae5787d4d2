"""The HTML report of a results file: one self-contained page, plots embedded as PNG data URIs.

    .venv-loadtest/bin/python -m loadtest.report loadtest-results/<stamp>.json  [-o report.html]

Runs in .venv-loadtest (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest import summary

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _phase_lines(ax, run: dict) -> None:
    phases = run["locust"]["phases"]
    t0 = phases["test_start"]
    for key, style in (("steady_start", "--"), ("steady_end", ":")):
        if phases.get(key) and t0:
            ax.axvline(phases[key] - t0, color="grey", linestyle=style, linewidth=1)


def _runs_axes(runs: list[dict], title: str, height: float = 3.2):
    """One full-width plot per run, stacked, sharing both axes so the runs compare at a glance."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(13, height * len(runs) + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    fig.suptitle(title)
    return fig, axes[:, 0]


def plot_latency(runs: list[dict]) -> str:
    fig, axes = _runs_axes(runs, "Fan-out latency per second (send timestamp -> receipt)")
    for ax, run in zip(axes, runs, strict=False):
        ts = run["locust"]["timeseries"]
        for q, color in (("p50", COLORS[0]), ("p90", COLORS[3]), ("p99", COLORS[1])):
            ax.plot(ts["t"], ts[f"latency_{q}"], label=q, color=color, linewidth=1.3)
        ax.plot(ts["t"], ts["latency_max"], label="max", color="black", linewidth=0.6, alpha=0.5)
        if any(v is not None for v in ts.get("echo_p99", [])):
            ax.plot(ts["t"], ts["echo_p99"], label="echo p99", color=COLORS[2], linewidth=1)
        _phase_lines(ax, run)
        ax.set_title(run["label"])
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("ms")
        ax.set_yscale("symlog", linthresh=10)
        # Latencies are never negative; left alone, the symmetric log scale mirrors its margin
        # below 0 and the axis starts at -10 ms.
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_clients(runs: list[dict]) -> str:
    fig, axes = _runs_axes(runs, "Connected clients per replica")
    for ax, run in zip(axes, runs, strict=False):
        ts = run["locust"]["timeseries"]
        for i, (replica, counts) in enumerate(sorted(ts["clients_per_replica"].items())):
            ax.plot(ts["t"], counts, label=replica, color=COLORS[i % len(COLORS)])
        _phase_lines(ax, run)
        ax.set_title(run["label"])
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("clients")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_throughput(runs: list[dict]) -> str:
    fig, axes = _runs_axes(runs, "Deliveries per second, by kind (stacked)")
    for ax, run in zip(axes, runs, strict=False):
        ts = run["locust"]["timeseries"]
        kinds = [k for k in ("broadcast", "notify", "room") if k in ts["deliveries"]]
        if kinds:
            ax.stackplot(ts["t"], *[ts["deliveries"][k] for k in kinds], labels=kinds,
                         colors=COLORS[:len(kinds)], alpha=0.8)
        if "echo" in ts["deliveries"]:
            ax.plot(ts["t"], ts["deliveries"]["echo"], label="echo acks", color="black",
                    linewidth=0.8)
        _phase_lines(ax, run)
        ax.set_title(run["label"])
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("per second")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_cpu(runs: list[dict]) -> str | None:
    if not any(run.get("server", {}).get("cpu_series") or run.get("generator", {}).get("cpu_series")
               for run in runs):
        return None
    fig, axes = _runs_axes(runs, "CPU by process kind (cores; this machine has "
                                 f"{runs[0].get('_cores', '?')})")
    for ax, run in zip(axes, runs, strict=False):
        series = dict(run.get("server", {}).get("cpu_series") or {})
        if run.get("generator", {}).get("cpu_series"):
            series["load generator"] = run["generator"]["cpu_series"]
        for i, (kind, points) in enumerate(series.items()):
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=kind,
                        color=COLORS[i % len(COLORS)], linewidth=1.2)
        _phase_lines(ax, run)
        ax.set_title(run["label"])
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("cores")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    out = ["<table><thead><tr>", *[f"<th>{html.escape(c)}</th>" for c in head],
           "</tr></thead><tbody>"]
    for row in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _request_table(run: dict) -> str:
    rows = [["type", "name", "requests", "failures", "avg ms", "p50 ms", "p99 ms", "max ms"]]
    for s in run["locust"]["locust"]["request_stats"]:
        rows.append([s["type"], s["name"], f"{s['requests']:,}", f"{s['failures']:,}",
                     str(s["avg_ms"]), str(s["p50_ms"]), str(s["p99_ms"]), str(s["max_ms"])])
    return _table(rows)


def _verdicts(runs: list[dict]) -> str:
    """First thing in the report: did each run pass its targets, or was it not a measurement?"""
    parts = ["<h2>Verdict</h2>"]
    for run in runs:
        verdict = run.get("verdict") or {}
        status = verdict.get("status", "no verdict (older results file)")
        css = ("machine" if "machine" in status else "pass" if status == "pass" else "fail")
        reasons = verdict.get("machine_bound_evidence") or verdict.get("failures") or []
        parts.append(f"<div class='verdict {css}'><b>{html.escape(run['label'])}: "
                     f"{html.escape(status.upper())}</b>"
                     + "".join(f"<br>{html.escape(r)}" for r in reasons) + "</div>")
    targets = (runs[0].get("verdict") or {}).get("targets") if runs else None
    if targets:
        parts.append("<p>Targets: " + html.escape(", ".join(f"{k} {summary.plain(v)}"
                                                            for k, v in targets.items()))
                     + ". A run is not meaningful when the machine or the generator was the "
                     "bottleneck (CPU steal, a busy machine, a generator process at a full core, "
                     "a late generator event loop).</p>")
    return "\n".join(parts)


def render(doc: dict) -> str:
    runs = doc["runs"]
    for run in runs:
        run["_cores"] = doc["machine"]["cores"]
    scenario = doc["scenario"]
    images = [plot_latency(runs), plot_clients(runs), plot_throughput(runs), plot_cpu(runs)]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Load test {html.escape(doc['created'])}</title>",
        ("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{width:100%;display:block;margin:1em 0}.verdict{font-size:1.3em;padding:.4em .8em;"
        "border-radius:4px;margin:.5em 0}.pass{background:#dfd}.fail{background:#fdd}"
        ".machine{background:#eee}code{background:#f4f4f4;padding:1px 4px}"
        ".note{color:#a33}</style></head><body>"),
        f"<h1>Socket.IO load test: {html.escape(scenario['name'])}</h1>",
        (f"<p>{html.escape(doc['created'])} &middot; <code>{html.escape(doc['command'])}</code> "
        f"&middot; {doc['machine']['cores']} cores ({html.escape(doc['machine']['cpu_model'])}), "
        f"load average at start {doc['machine']['load_average_at_start'][0]:.2f} &middot; "
        f"{doc.get('wall_seconds', '?')} s wall-clock</p>"),
        "<p>Scenario: " + html.escape(", ".join(f"{k}={summary.plain(v)}"
                                                for k, v in scenario.items())) + "</p>",
        _verdicts(runs),
        "<h2>Summary</h2>",
        _table(summary.table(doc)),
    ]
    for run in runs:
        for note in run.get("notes", []):
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<p>Dashed line: steady phase starts (all clients connected); dotted: it ends. "
                 "Delivery ratio: received / expected over every (fan-out message, client that was "
                 "connected when it was sent) pair; latency: receipt time minus the send timestamp "
                 "carried in the message. CPU: utime+stime of each process kind and its children "
                 "during the steady phase, from /proc.</p>")
    for image in images:
        if image:
            parts.append(f"<img src='{image}'>")
    for run in runs:
        parts.append(f"<h2>{html.escape(run['label'])}: {html.escape(run['url'])}</h2>")
        delivery = run["locust"]["delivery"]
        rows = [["kind", "messages", "expected", "received", "ratio", "duplicates"]]
        for kind, d in delivery["by_kind"].items():
            rows.append([kind, f"{d['messages']:,}", f"{d['expected']:,}", f"{d['received']:,}",
                         f"{d['ratio']:.4f}" if d["ratio"] is not None else "-",
                         str(d["duplicates"])])
        parts.append("<h3>Delivery by kind</h3>" + _table(rows))
        rows = [["latency (ms)", "count", "p50", "p90", "p99", "max"]]
        for kind, d in run["locust"]["latency_ms"].items():
            rows.append([kind, f"{d['count']:,}",
                         *[str(d[k]) for k in ("p50", "p90", "p99", "max")]])
        parts.append("<h3>Latency</h3>" + _table(rows))
        clients = run["locust"]["clients"]
        parts.append("<h3>Clients</h3>" + _table(
            [["", "value"]]
            + [[f"replica {r}", f"{n:,}"] for r, n in clients["per_replica"].items()]
            + [[f"transport {t}", f"{n:,}"] for t, n in clients["per_transport"].items()]
            + [[f"errors caused by: {c}", f"{n:,}"]
               for c, n in (clients.get("errors_by_cause") or {}).items()]
            + [[f"error: {e}", f"{n:,}"] for e, n in clients["errors"].items()]
            + [[f"missing deliveries: {c}", f"{n:,}"]
               for c, n in (delivery.get("missing_by_cause") or {}).items()]
            + [[f"{c}", f"{n:,}"]
               for c, n in (run["locust"].get("events_by_cause") or {}).items()]))
        server = run.get("server") or {}
        if server.get("cpu_seconds_steady"):
            rows = [["process kind", "CPU-s steady", "cores steady", "CPU-s / 1,000 deliveries",
                     "CPU-s connect storm", "CPU-s / 1,000 connects"]]
            per_delivery = server.get("cpu_seconds_per_1000_deliveries") or {}
            per_connect = server.get("cpu_seconds_per_1000_connects") or {}
            for kind, cpu in server["cpu_seconds_steady"].items():
                rows.append([kind, str(cpu), str(server["cores_used_steady"].get(kind)),
                             str(per_delivery.get(kind)),
                             str(server["cpu_seconds_connect_storm"].get(kind)),
                             str(per_connect.get(kind))])
            parts.append("<h3>Server CPU</h3>" + _table(rows))
            if server.get("memory"):
                parts.append("<p>Web replicas' RSS: " + html.escape(
                    ", ".join(f"{k} {v}" for k, v in server["memory"].items())) + "</p>")
        generator = run.get("generator") or {}
        if generator:
            parts.append(
                f"<p>Load generator: {generator.get('processes')} process(es), "
                f"{generator.get('cores_steady')} cores in the steady phase, busiest process "
                f"{generator.get('busiest_process_cores_steady')} cores (connect storm: "
                f"{generator.get('busiest_process_cores_connect')}); saturated: "
                f"{generator.get('saturated')}</p>")
        parts.append("<h3>Locust request statistics</h3>" + _request_table(run))
    parts.append("</body></html>")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="Render a load-test results file as HTML")
    parser.add_argument("results")
    parser.add_argument("-o", "--output", default="")
    args = parser.parse_args()
    source = Path(args.results)
    doc = json.loads(source.read_text())
    output = Path(args.output) if args.output else source.with_suffix(".html")
    output.write_text(render(doc))
    print(f"loadtest: report: {output}")


if __name__ == "__main__":
    main()
