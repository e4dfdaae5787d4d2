"""Sessions that end as a closed tab or a stopped program ends them leave nothing in the replicas'
logs.

Browsers, and Node's socket.io-client by default, start on long-polling and upgrade to WebSocket.
engine.io answers the upgrade request only when its WebSocket ends, from that request's WSGI
environ, which a replica empties once the session runs on WebSocket
(web/upstream/engineio_session.py's release_handshake_environ): every upgraded session that
ended logged a 30-line KeyError traceback.
WebSocket-only and long-polling-only sessions end here too.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from common.contract import Event
from scripts.stack import ROOT
from tests.support.metrics import replica_metric
from tests.support.node import node_or_fail, run_node_script
from tests.support.waiting import wait_until

SCRIPT = ROOT / "tests" / "js" / "tab_close.mjs"
ERROR_LINE = re.compile(r"Traceback|\bERROR\b")
TRANSPORT_TIMEOUT_MS = 15_000


class LogsFromNow:
    """What the replicas write to their logs from now on."""

    def __init__(self, stack):
        self.offsets = {replica.process.log_path: replica.process.log_path.stat().st_size
                        for replica in stack.web}

    def lines(self) -> list[str]:
        written = []
        for path, offset in self.offsets.items():
            with path.open("rb") as log:
                log.seek(offset)
                written += [f"{path.name}: {line}" for line in
                            log.read().decode(errors="replace").splitlines()]
        return written


def sessions(stack) -> int:
    return sum(int(replica_metric(stack, "socketio_connected_clients", replica=index))
               for index in range(1, len(stack.web) + 1))


def test_closed_tabs_and_stopped_clients_leave_no_error_in_the_logs(open_tab, stack):
    node = node_or_fail()
    logs = LogsFromNow(stack)
    open_before = sessions(stack)

    # Three tabs with the page's default transports (each upgrades), one on WebSocket only.
    tabs = [(open_tab(f"upgraded-{index}"), "websocket") for index in range(3)]
    tabs.append((open_tab("websocket-only", "/?transport=websocket"), "websocket"))
    for tab, transport in tabs:
        expect(tab.page.locator("#transport")).to_have_text(transport,
                                                            timeout=TRANSPORT_TIMEOUT_MS)
    for tab, _ in tabs:
        tab.close()

    # Node clients: closing their session themselves, or cut off when the program exits.
    default, websocket_only, polling_only = None, ["websocket"], ["polling"]
    clients = [{"transports": default, "end": end} for end in ("disconnect", "exit") * 3]
    clients += [{"transports": websocket_only, "end": "disconnect"},
                {"transports": websocket_only, "end": "exit"},
                # A long-polling client that just vanishes stays until its ping timeout.
                {"transports": polling_only, "end": "disconnect"}]
    reports = run_node_script(node, SCRIPT, {
        "url": stack.url, "clients": clients, "serverInfoEvent": Event.SERVER_INFO,
        "timeoutMs": 10_000})
    for report in reports:
        expected = "polling" if report["transports"] == polling_only else "websocket"
        assert report["serverTransport"] == report["clientTransport"] == expected, report
    assert len({report["replica"] for report in reports}) > 1, reports

    wait_until(lambda: sessions(stack) <= open_before, timeout=15,
               what="the replicas to end the closed sessions")
    time.sleep(0.5)  # whatever a replica logs after a session ends, it logs at once
    written = logs.lines()
    errors = [at for at, line in enumerate(written) if ERROR_LINE.search(line)]
    assert not errors, (f"{len(errors)} error lines in the replicas' logs, the first:\n"
                        + "\n".join(written[errors[0]:errors[0] + 40]) if errors else "")
