"""The reconnect pause of every broker connection loop (common.backoff.Backoff)."""

from __future__ import annotations

import time

from common.backoff import Backoff


def test_the_pause_doubles_up_to_the_most_and_starts_over_once_reset(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    backoff = Backoff(most=0.5)
    for _ in range(5):
        backoff.wait()
    backoff.reset()
    backoff.wait()
    assert pauses == [0.1, 0.2, 0.4, 0.5, 0.5, 0.1]


def test_a_most_below_the_first_pause_bounds_every_pause_after_the_first(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    backoff = Backoff(most=0.05)  # as the unit tests' fast retries configure it
    backoff.wait()
    backoff.wait()
    assert pauses == [0.1, 0.05]
