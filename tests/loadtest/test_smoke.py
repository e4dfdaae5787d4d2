"""A tiny load test end to end: the runner starts the native stack, Locust drives 30 real clients
(mixed transports) for a few seconds, and the results file must show every fan-out message
delivered to every client, and clients on all 3 replicas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADTEST_PYTHON = ROOT / ".venv-loadtest" / "bin" / "python"


@pytest.mark.timeout(150)
def test_tiny_scenario_delivers_everything_on_all_replicas(tmp_path):
    if not LOADTEST_PYTHON.exists():
        pytest.fail(f"{LOADTEST_PYTHON} is missing: run `make .venv-loadtest/.installed`",
                    pytrace=False)
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--clients", "30", "--spawn-rate", "30",
         "--duration", "8", "--drain", "3", "--scenario", "mixed", "--broadcast-rate", "2",
         "--notify-rate", "2", "--processes", "1", "--output", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(results.read_text())
    (run_doc,) = doc["runs"]
    clients = run_doc["locust"]["clients"]
    delivery = run_doc["locust"]["delivery"]
    assert clients["connected"] == 30, clients
    assert set(clients["per_replica"]) == {"web-1", "web-2", "web-3"}, clients["per_replica"]
    assert set(delivery["by_kind"]) == {"broadcast", "notify", "room"}, delivery
    assert delivery["expected"] > 0 and delivery["ratio"] == 1.0, delivery
    assert delivery["duplicates"] == 0, delivery
    assert run_doc["locust"]["latency_ms"]["echo"]["count"] > 0
    assert run_doc["server"]["cpu_seconds_per_1000_deliveries"]["web"] > 0
    assert results.with_suffix(".html").exists()
    # Trust: a verdict (a busy shared machine may rightly call the run not meaningful), errors by
    # cause, the generator's own lag and the machine's steal and load, the verdict first.
    assert run_doc["verdict"]["status"] in ("pass", "not meaningful: machine-bound"), run_doc
    assert clients["errors_by_cause"] == {}
    assert run_doc["locust"]["generator"]["loop_lag_ms_steady"]["count"] > 0
    assert run_doc["machine"]["steal_share"] is not None
    html = results.with_suffix(".html").read_text()
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Summary</h2>") < html.index("<img")
