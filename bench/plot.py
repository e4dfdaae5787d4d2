"""The figure of a `make bench` run: per scenario, web CPU per 1,000 deliveries, latency p50/p99
and memory per connection of each system, side by side (docs/benchmarks-latest.png, or
docs/benchmarks-before.png for SECTION=before); for the rooms scenarios, the CPU per event of the
replicas without a member and of those with members instead of CPU per delivery and memory.

    .venv-loadtest/bin/python -m bench.plot RESULTS.json OUTPUT.png

Runs in .venv-loadtest, which has matplotlib (the load-test report's plots use it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

LABELS = {"stack": "stack", "stack-recovering": "stack,\nrecovering",  # under narrow bars
          "stack-no-recovery": "stack,\nrecovery off", "recipe": "recipe",
          "node": "Node", "node-sharded": "Node,\nsharded"}
COLORS = {"stack": "#2a7ab9", "stack-recovering": "#7fb3dc", "stack-no-recovery": "#1b4f78",
          "recipe": "#9a9a9a", "node": "#6aa84f", "node-sharded": "#38761d"}
PANELS = (  # (title, value of one system's result)
    ("web CPU-ms per 1,000 deliveries", lambda r: 1000 * r["cpu_per_1000"]["web"]),
    ("latency p50 (ms)", lambda r: r["latency_ms"]["p50"]),
    ("latency p99 (ms)", lambda r: r["latency_ms"]["p99"]),
    ("KiB per connection", lambda r: r["memory_per_connection_kib"]),
)
ROOMS_PANELS = (  # a replica's CPU per event: the mean of those without a member, of those with
    ("replicas without a member: CPU µs / event",
     lambda r: (r["non_member_us_per_event"] or {}).get("mean")),
    ("replicas with members: CPU µs / event",
     lambda r: (r["member_us_per_event"] or {}).get("mean")),
    ("latency p50 (ms)", lambda r: r["latency_ms"]["p50"]),
    ("latency p99 (ms)", lambda r: r["latency_ms"]["p99"]),
)


def plot(results: dict, output: Path) -> None:
    scenarios = [s for s in results["scenarios"] if any("error" not in r for r in s["systems"])]
    figure, axes = plt.subplots(len(scenarios), len(PANELS), squeeze=False,
                                figsize=(4 * len(PANELS), 2.8 * len(scenarios)))
    for row, scenario in zip(axes, scenarios, strict=True):
        measured = [r for r in scenario["systems"] if "error" not in r]
        panels = ROOMS_PANELS if scenario["kind"] == "rooms" else PANELS
        for ax, (title, value) in zip(row, panels, strict=True):
            heights = [value(r) for r in measured]  # None: no such replica (spread has none)
            bars = ax.bar([LABELS.get(r["system"], r["system"]) for r in measured],
                          [0 if h is None else h for h in heights],
                          color=[COLORS.get(r["system"], "#444") for r in measured])
            ax.bar_label(bars, labels=["-" if h is None else f"{h:.3g}" for h in heights],
                         fontsize=8)
            ax.set_title(f"{scenario['name']}: {title}", fontsize=9)
            if all(h is None for h in heights):
                ax.text(0.5, 0.5, "no such replica", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
            ax.margins(y=0.2)
    figure.suptitle(f"make bench, {results['started'][:16]} UTC, this stack at "
                    f"{results.get('stack_revision') or 'the working tree'}", fontsize=10)
    figure.tight_layout()
    figure.savefig(output, dpi=90)
    plt.close(figure)


def main(argv: list[str]) -> int:
    results, output = argv
    plot(json.loads(Path(results).read_text()), Path(output))
    print(f"bench: plot: {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
