"""One log line per event, to stdout, each carrying the process it came from."""

from __future__ import annotations

import logging
import sys

from common.settings import Settings


def configure_logging(settings: Settings, role: str) -> None:
    """Route every logger to stdout with the process role and replica id on each line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {role}={settings.replica_id} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Per-packet chatter from these libraries drowns the useful lines at INFO.
    for noisy in ("engineio.server", "socketio.server", "geventwebsocket.handler", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
