"""Which replica answers nginx counts as failures. With `max_fails=1` (the default) one counted
failure takes a replica out of the upstream for every request for `fail_timeout` (10 s); a GET that
a replica answers 503 is also retried on the others, which answer the same while the broker is
away, and then nobody gets a replica at all ("no live upstreams", 502). So a replica's own 503 is
retried only where only a draining replica gives it: a new Socket.IO session (web/drain.py)."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "socketio.conf.template"


def next_upstream_by_block() -> dict[str, set[str]]:
    """`proxy_next_upstream` conditions, by the location they are set in ("server": inherited)."""
    text = re.sub(r"#.*", "", TEMPLATE.read_text())
    server, *locations = re.split(r"\n\s*location\s+", text.split("\nserver {", 1)[1])
    found = {}
    for name, block in [("server", server), *((loc.split("{", 1)[0].strip(), loc)
                                              for loc in locations)]:
        match = re.search(r"proxy_next_upstream\s+([^;]+);", block)
        if match:
            found[name] = set(match.group(1).split())
    return found


def test_a_replicas_503_is_retried_only_for_new_socketio_sessions():
    found = next_upstream_by_block()
    assert found["server"] == {"error", "timeout"}
    assert found["/socket.io/"] == {"error", "timeout", "http_503"}
    assert [name for name, conditions in found.items() if "http_503" in conditions
            or "http_502" in conditions] == ["/socket.io/"]
