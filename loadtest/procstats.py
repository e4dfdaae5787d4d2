"""CPU time and memory of groups of processes, read from /proc, sampled while a load test runs.

A group (web, nginx, rabbitmq, worker, generator) is a set of root pids; each sample adds up
utime + stime and RSS of every root and all its live descendants (gunicorn's worker, nginx's
workers, the Erlang VM under rabbitmq-server's script, Locust's forked workers).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_all() -> dict[int, tuple[int, float, int]]:
    """{pid: (ppid, cpu seconds, rss bytes)} for every process we may read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24.
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS,
                                  int(fields[21]) * PAGE)
    return table


def descendants(roots: list[int], table: dict[int, tuple[int, float, int]]) -> set[int]:
    children = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    found, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


class Sampler:
    """Samples each group's CPU seconds and RSS about once a second in a thread."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 1.0):
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procstats", daemon=True)

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        table = read_all()
        point: dict[str, Any] = {"t": time.time(), "cpu": {}, "rss": {}, "procs": {},
                                 "machine": machine_counters()}
        for name, roots in self.groups.items():
            pids = descendants(roots, table)
            point["cpu"][name] = sum(table[pid][1] for pid in pids)
            point["rss"][name] = sum(table[pid][2] for pid in pids)
            point["procs"][name] = {str(pid): table[pid][1] for pid in pids}
        self.samples.append(point)


def machine_counters() -> dict[str, float]:
    """The whole machine's CPU time (all cores) and the part stolen by the hypervisor, in clock
    ticks since boot, and the 1-minute load average: is the machine itself the bottleneck?"""
    try:
        stat = Path("/proc/stat").read_text()
        fields = [int(x) for x in stat.split("\n", 1)[0].split()[1:]]
        running = next(int(line.split()[1]) for line in stat.splitlines()
                       if line.startswith("procs_running "))
    except (OSError, ValueError, StopIteration):
        return {}
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return {"total": sum(fields[:8]), "idle": fields[3] + fields[4],
            "steal": fields[7] if len(fields) > 7 else 0, "load1": os.getloadavg()[0],
            "running": max(0, running - 1)}  # runnable tasks now, less this reader


def machine_between(samples: list[dict], start: float, end: float) -> dict[str, float | None]:
    """Over a window: the share of CPU time stolen, the share busy, the mean number of runnable
    tasks (what the load average smooths over a minute, here only in the window), the highest
    load average."""
    inside = [s for s in samples if start <= s["t"] <= end and s.get("machine")]
    empty = {"steal_share": None, "busy_share": None, "runnable_mean": None, "load1_max": None}
    if len(inside) < 2:
        return empty
    first, last = inside[0]["machine"], inside[-1]["machine"]
    total = last["total"] - first["total"]
    if total <= 0:
        return empty
    return {"steal_share": round((last["steal"] - first["steal"]) / total, 4),
            "busy_share": round(1 - (last["idle"] - first["idle"]) / total, 4),
            "runnable_mean": round(sum(s["machine"].get("running", 0) for s in inside)
                                   / len(inside), 2),
            "load1_max": round(max(s["machine"]["load1"] for s in inside), 2)}


def value_at(samples: list[dict], t: float, key: str, group: str) -> float | None:
    """A group's cumulative value at time t, linearly interpolated between samples."""
    points = [(s["t"], s[key].get(group)) for s in samples if s[key].get(group) is not None]
    if not points or t is None:
        return None
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in pairwise(points):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0)
    return points[-1][1]


def cpu_between(samples: list[dict], group: str, start: float, end: float) -> float | None:
    a, b = value_at(samples, start, "cpu", group), value_at(samples, end, "cpu", group)
    return None if a is None or b is None else max(0.0, b - a)


def busiest_process(samples: list[dict], group: str, start: float, end: float) -> float | None:
    """The highest CPU share (1.0 = one core) of any single process of the group in a window."""
    inside = [s for s in samples if start <= s["t"] <= end and group in s["procs"]]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    elapsed = last["t"] - first["t"]
    if elapsed <= 0:
        return None
    shares = [(cpu - first["procs"][group].get(pid, cpu)) / elapsed
              for pid, cpu in last["procs"][group].items()]
    return round(max(shares), 3) if shares else None


def cpu_rate_series(samples: list[dict], group: str, t0: float) -> list[tuple[float, float]]:
    """(seconds since t0, cores used) between consecutive samples, for plots."""
    out = []
    for a, b in pairwise(samples):
        if group in a["cpu"] and group in b["cpu"] and b["t"] > a["t"]:
            out.append((round(b["t"] - t0, 2),
                        round(max(0.0, b["cpu"][group] - a["cpu"][group]) / (b["t"] - a["t"]), 3)))
    return out
