"""Reading Prometheus metrics: the one metrics reader of the tests, over HTTP (a replica's or the
worker's /metrics) or in this process (the unit tier)."""

from __future__ import annotations

import prometheus_client
import requests


def sample(exposition: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition (0 if it has none yet).

    `labels` as Prometheus prints them, e.g. 'connection="listener"'.
    """
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return next((float(line.split()[-1]) for line in exposition.splitlines()
                 if line.startswith(prefix)), 0.0)


def read_metric(base_url: str, name: str, labels: str = "") -> float:
    """One sample of a process's /metrics."""
    return sample(requests.get(f"{base_url}/metrics", timeout=5).text, name, labels)


def replica_metric(stack, name: str, labels: str = "", replica: int = 1) -> float:
    """One sample of replica web-<replica>'s /metrics, in a native stack."""
    return read_metric(stack.web[replica - 1].url, name, labels)


def local_metric(name: str, labels: str = "") -> float:
    """One sample of this process's metrics (what common.metrics counted in a unit test)."""
    return sample(prometheus_client.generate_latest().decode(), name, labels)
