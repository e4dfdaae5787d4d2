"""The HTML report's plots, drawn by matplotlib in .venv-loadtest from a made-up run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADTEST_PYTHON = ROOT / ".venv-loadtest" / "bin" / "python"

# Latencies from 1 to 900 ms on the report's symmetric log scale; the plot's figure is kept
# instead of being encoded, and its y-axes are printed.
DRAW_LATENCY = """
from loadtest import report
figures = []
report._png = figures.append
series = [1.0, 5.0, 40.0, 900.0, None]
run = {"label": "stack", "locust": {"phases": {"test_start": 0.0}, "timeseries": {
    "t": list(range(5)), "latency_p50": series, "latency_p90": series, "latency_p99": series,
    "latency_max": series, "echo_p99": series}}}
report.plot_latency([run, run])
print(*(ax.get_ylim()[0] for ax in figures[0].axes))
"""


def test_the_latency_axis_starts_at_zero_not_below():
    if not LOADTEST_PYTHON.exists():
        pytest.fail(f"{LOADTEST_PYTHON} is missing: run `make .venv-loadtest/.installed`",
                    pytrace=False)
    done = subprocess.run([str(LOADTEST_PYTHON), "-c", DRAW_LATENCY], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    bottoms = [float(value) for value in done.stdout.split()]
    assert len(bottoms) == 2 and all(bottom == 0 for bottom in bottoms), bottoms
