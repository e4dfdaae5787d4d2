"""A replica's memory, read from /proc: the gunicorn worker behind a replica and its RSS."""

from __future__ import annotations

import os

from scripts.stack import Replica


def replica_pid(replica: Replica) -> int:
    """The gunicorn worker of a replica: its master's only child."""
    master = replica.process.popen.pid
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as listing:
            children = listing.read().split()
        if children:
            return int(children[0])
    raise AssertionError(f"gunicorn master {master} has no worker")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """VmHWM (peak RSS) or VmRSS of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")
