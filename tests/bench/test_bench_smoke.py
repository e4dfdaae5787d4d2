"""`make bench` in small, so that the benchmark cannot rot: 200 WebSocket clients of the official
socket.io-client, 5 broadcasts/s for 4 s, against this stack (recovery on, clients asking for it,
recovery off), the Flask-SocketIO recipe and the Node socket.io peer, through the real runner
(bench/run.py). A program the benchmark needs and this
machine lacks fails the test with the command that installs it; nothing is skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.systems import DEFAULT_SYSTEMS, missing_programs

ROOT = Path(__file__).resolve().parents[2]
CLIENTS, RATE, DURATION = 200, 5, 4
MESSAGES = RATE * DURATION


@pytest.mark.timeout(300)
def test_small_bench_delivers_everything_and_measures_every_system(tmp_path):
    missing = missing_programs()
    if missing:
        pytest.fail("make bench cannot run here; install what is missing:\n  "
                    + "\n  ".join(missing), pytrace=False)
    results, table, docs = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "docs.md"
    docs.write_text("# Benchmarks\n\nbefore\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->"
                    "\n\nafter\n")
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scenarios", f"fanout-{RATE}",
         "--clients", str(CLIENTS), "--duration", str(DURATION), "--warmup", "1", "--drain", "15",
         "--output", str(results), "--markdown", str(table), "--docs", str(docs)],
        cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    assert "bench: [fanout-5] node: delivered" in run.stderr  # one progress line per phase

    (scenario,) = json.loads(results.read_text())["scenarios"]
    systems = {system["system"]: system for system in scenario["systems"]}
    assert set(systems) == set(DEFAULT_SYSTEMS["fanout"])
    for name, system in systems.items():
        assert "error" not in system, (name, system)
        assert system["connected"] == CLIENTS and system["connect_failed"] == 0, (name, system)
        assert system["delivery_ratio"] == 1.0, (name, system)
        assert system["received"] == CLIENTS * MESSAGES and system["duplicates"] == 0, name
        latency = system["latency_ms"]
        assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], name
        cpu = system["cpu_per_1000"]
        # Redis may spend less than a clock tick on 20 publishes: measured, but possibly 0.
        assert cpu["web"] > 0 and cpu["nginx"] > 0 and cpu["broker"] >= 0, (name, cpu)
        assert cpu["server"] > cpu["web"] and cpu["generator"] > 0, (name, cpu)
        assert system["deliveries_in_window"] > 0 and system["web_rss_mib"] > 0, name
        assert system["vs_recipe"]["web_cpu"] > 0, name
    assert systems["recipe"]["vs_recipe"]["web_cpu"] == 1.0

    markdown = table.read_text()
    for name in DEFAULT_SYSTEMS["fanout"]:
        assert f"| {report.SYSTEM_TITLE[name]} | 1.0000 |" in markdown, markdown
    assert f"#### fanout-{RATE}: {CLIENTS} clients x {RATE} broadcasts/s" in markdown
    updated = docs.read_text()
    assert updated.startswith("# Benchmarks\n\nbefore\n\n<!-- bench:begin -->")
    assert updated.endswith("<!-- bench:end -->\n\nafter\n") and "\nold\n" not in updated
    assert markdown in updated
    plot = tmp_path / "benchmarks-latest.png"  # beside the docs it updated
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_docs_section_is_replaced_in_place_or_appended(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    report.update_docs(docs, "first\n", "before")
    report.update_docs(docs, "second\n", "before")
    report.update_docs(docs, "latest\n")
    text = docs.read_text()
    assert text.count("<!-- bench:before:begin -->") == 1 and "first" not in text
    assert text.index("second") < text.index("<!-- bench:before:end -->") < text.index("latest")
