"""The pause between two attempts of a loop that reconnects to the broker.

Used by every loop that holds a broker connection for good and, on any failure, logs once, drops
the connection and connects again: the publisher and the listener of common/broker.py's
QueueManager and the recovery streams' reader (web/recovery/streams.py). The worker's consumer
retries through kombu's ConsumerMixin instead, and its scheduler polls for leadership at a fixed
interval, which is not a backoff.
"""

from __future__ import annotations

import time


class Backoff:
    """`first` seconds after a failure, twice as long after each further one, at most `most`;
    back to `first` once `reset()` (the loop is connected again)."""

    def __init__(self, most: float, first: float = 0.1):
        self.first, self.most = first, most
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def wait(self) -> None:
        # time.sleep looked up now, not bound at import: under gevent it must be the patched one.
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)
