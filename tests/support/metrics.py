"""Reading a process's Prometheus /metrics: the one metrics reader of the tests."""

from __future__ import annotations

import requests


def read_metric(base_url: str, name: str, labels: str = "") -> float:
    """One sample of a process's Prometheus /metrics (0 if it has none yet).

    `labels` as Prometheus prints them, e.g. 'connection="listener"'.
    """
    text = requests.get(f"{base_url}/metrics", timeout=5).text
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith(prefix)), 0.0)


def replica_metric(stack, name: str, labels: str = "", replica: int = 1) -> float:
    """`read_metric` of replica web-<replica> of a native stack."""
    return read_metric(stack.web[replica - 1].url, name, labels)
