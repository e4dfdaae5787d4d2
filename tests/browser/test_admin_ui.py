"""The Socket.IO Admin UI across replicas, on a stack of its own with ADMIN_UI_PASSWORD set: its
namespace (credentials, sockets and stats of every replica, disconnect and join reaching a socket
on another replica), then the page itself in Chromium, served by the stack."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import socketio
from playwright.sync_api import expect

from common.contract import ADMIN_NAMESPACE, MAIN_NAMESPACE, Event
from tests.support.browser import ARTIFACTS
from tests.support.clients import RecordingClient, on_distinct_replicas
from tests.support.metrics import read_metric
from tests.support.stack import STACK_ENV, api_headers, running_stack
from tests.support.waiting import wait_until

PASSWORD = "admin-ui-test-password-0123456789abcdef"
REPLICAS = 2


@pytest.fixture(scope="module")
def admin_stack():
    env = {**STACK_ENV, "ADMIN_UI_PASSWORD": PASSWORD, "ADMIN_UI_USERNAME": "ops"}
    with running_stack("admin stack", replicas=REPLICAS, workers=0, extra_env=env) as native:
        yield native


class AdminClient:
    """What the Admin UI does: connect to /admin with credentials, record what it is told."""

    def __init__(self, url: str, password: str = PASSWORD):
        self.sio = socketio.Client(reconnection=False)
        self.received: dict[str, list] = {}
        self.lock = threading.Lock()
        for name in ("config", "all_sockets", "server_stats", "socket_connected",
                     "socket_disconnected", "room_joined", "event_sent", "event_received"):
            self.sio.on(name, self.recorder(name), namespace=ADMIN_NAMESPACE)
        self.sio.connect(url, namespaces=[ADMIN_NAMESPACE], transports=["websocket"],
                         auth={"username": "ops", "password": password}, wait_timeout=10)

    def recorder(self, name: str):
        def record(*args):
            with self.lock:
                self.received.setdefault(name, []).append(args)
        return record

    def got(self, name: str) -> list:
        with self.lock:
            return list(self.received.get(name, []))

    def known_sockets(self) -> set[str]:
        known = {socket["id"] for (sockets,) in self.got("all_sockets") for socket in sockets}
        return known | {args[0]["id"] for args in self.got("socket_connected")}


def test_wrong_credentials_are_refused(admin_stack):
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
        AdminClient(admin_stack.url, password="wrong")


def publishes(stack, route: str) -> float:
    return sum(read_metric(replica.url, "broker_publishes_total", f'route="{route}"')
               for replica in stack.web)


BROADCASTS = 10
LISTENERS = 20
PAYLOAD = "x" * 8_000  # under the fan-out cap (16 KB), over what a report shows (1 KB)


def broadcast_from(sender: RecordingClient, listeners: list[RecordingClient], tag: str) -> None:
    """BROADCASTS client broadcasts of 8 KB, each received by every listener."""
    for index in range(BROADCASTS):
        sender.sio.emit(Event.MY_BROADCAST_EVENT,
                        {"data": {"tag": f"{tag}-{index}", "pad": PAYLOAD}})
    last = f"{tag}-{BROADCASTS - 1}"
    for listener in listeners:
        listener.wait_for(Event.MY_RESPONSE, lambda p: isinstance(p.get("data"), dict)
                          and p["data"].get("tag") == last)


def test_reports_cost_nothing_until_an_admin_watches_and_stay_bounded(admin_stack, clients,
                                                                       unique):
    """Runs before any admin connects here (a lease outlives an admin by up to 30 s)."""
    listeners = [RecordingClient(admin_stack.url).connect() for _ in range(LISTENERS)]
    clients.extend(listeners)
    sender = listeners[0]
    time.sleep(3)  # presence's records of the connects go out first
    before = {route: publishes(admin_stack, route) for route in ("socketio", "records")}
    broadcast_from(sender, listeners, f"quiet-{unique}")
    quiet = {route: publishes(admin_stack, route) - before[route]
             for route in ("socketio", "records")}
    # One publish per broadcast; records are presence's heartbeats only (each replica: one
    # every 2 s at most), not reports per recipient (upstream: BROADCASTS x LISTENERS and more).
    print(f"publishes while no admin watches, {BROADCASTS} broadcasts to {LISTENERS}: {quiet}")
    assert quiet["socketio"] == BROADCASTS, quiet
    assert quiet["records"] <= 10, quiet

    admin = AdminClient(admin_stack.url)
    try:
        wait_until(lambda: admin.got("server_stats"), timeout=10, what="the first server stats")
        broadcast_from(sender, listeners, f"watched-{unique}")
        wait_until(lambda: len(admin.got("event_sent")) >= BROADCASTS, timeout=10,
                   what="event_sent reports")
        shown = [args[2] for args in admin.got("event_sent") + admin.got("event_received")]
        assert shown and all(PAYLOAD not in str(data) for data in shown), (
            "a 16 KB payload was republished whole")
        assert any("bytes, not shown" in str(data) for data in shown)
        stats = admin.got("server_stats")[-1][0]
        assert {"/", "/chat", "/echo"} <= {each["name"] for each in stats["namespaces"]}
        # The direct writer's WebSocket frames are counted: every broadcast to every listener.
        wait_until(lambda: packets_out(admin) >= BROADCASTS * LISTENERS, timeout=10,
                   what="packetsOut of the broadcasts in the server stats")
    finally:
        admin.sio.disconnect()


def packets_out(admin: AdminClient) -> int:
    return sum(event["count"] for (stats,) in admin.got("server_stats")
               for event in stats["aggregatedEvents"] if event["type"] == "packetsOut")


def test_the_namespace_sees_and_acts_on_every_replica(admin_stack, clients, unique):
    users = on_distinct_replicas(admin_stack.url, clients, count=REPLICAS)
    sids = [user.sio.get_sid(MAIN_NAMESPACE) for user in users]
    admin = AdminClient(admin_stack.url)
    try:
        wait_until(lambda: {args[0]["serverId"] for args in admin.got("server_stats")}
                   == {user.replica for user in users}, timeout=10,
                   what="server_stats from every replica")
        wait_until(lambda: set(sids) <= admin.known_sockets(), timeout=10,
                   what="the sockets of every replica listed")

        room = f"vip-{unique}"
        for sid in sids:  # join: one of them lives on another replica than the admin client
            admin.sio.emit("join", (MAIN_NAMESPACE, room, sid), namespace=ADMIN_NAMESPACE)
        wait_until(lambda: {args[2] for args in admin.got("room_joined") if args[1] == room}
                   >= set(sids), timeout=10, what="both sockets in the room")
        answer = requests.post(f"{admin_stack.url}/api/emit", headers=api_headers(), timeout=10,
                               json={"event": Event.MY_RESPONSE, "data": {"data": room},
                                     "to": {"room": room}})
        assert answer.status_code == 202
        for user in users:
            user.wait_for(Event.MY_RESPONSE, lambda p: p.get("data") == room)

        for sid in sids:
            admin.sio.emit("_disconnect", (MAIN_NAMESPACE, False, sid), namespace=ADMIN_NAMESPACE)
        wait_until(lambda: not any(user.sio.connected for user in users), timeout=10,
                   what="both sockets disconnected")
    finally:
        admin.sio.disconnect()


def test_the_page_connects_and_lists_every_replica(admin_stack, browser, clients):
    users = on_distinct_replicas(admin_stack.url, clients, count=REPLICAS)
    assert requests.get(f"{admin_stack.url}/admin/", timeout=10).status_code == 401
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  http_credentials={"username": "ops", "password": PASSWORD})
    page = context.new_page()
    outside = []
    page.on("request", lambda request: request.url.startswith(admin_stack.url)
            or request.url.startswith(("data:", "blob:")) or outside.append(request.url))
    try:
        page.goto(f"{admin_stack.url}/admin/")
        page.get_by_label("Server URL").fill(admin_stack.url)
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Connect").click()
        page.goto(f"{admin_stack.url}/admin/#/servers/")
        for index in range(1, REPLICAS + 1):
            expect(page.get_by_text(f"web-{index}", exact=True)).to_be_visible(timeout=15_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin-ui-servers.png"), full_page=True)
        # Every replica's sockets on the Sockets page, however many connected before the UI.
        page.goto(f"{admin_stack.url}/admin/#/sockets/")
        for user in users:
            expect(page.get_by_text(user.sio.get_sid(MAIN_NAMESPACE), exact=True)
                   ).to_be_visible(timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "admin-ui-sockets.png"), full_page=True)
        assert outside == [], f"the admin UI loaded from outside the stack: {outside}"
    finally:
        context.close()
