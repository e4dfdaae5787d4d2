"""The demo page in a real browser against the real stack: 3 replicas, nginx, RabbitMQ and the
worker."""

from __future__ import annotations

import re
import signal
import time

import pytest
import requests
from playwright.sync_api import expect

from common.contract import Event

EVENT_TIMEOUT_MS = 15_000
JOB_TIMEOUT_MS = 30_000


def _chat_join(tab, room: str, name: str) -> None:
    page = tab.page
    page.get_by_label("Chat room").fill(room)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join chat").click()
    expect(page.locator("#chat-state")).to_contain_text(f"In #{room} as {name}")
    expect(page.get_by_label("Chat message", exact=True)).to_be_enabled()


def _chat_say(tab, text: str) -> None:
    box = tab.page.get_by_label("Chat message", exact=True)
    box.fill(text)
    box.press("Enter")  # the form submits from the keyboard
    expect(box).to_have_value("")  # cleared once the server acknowledged it


@pytest.mark.parametrize("transport", ["default", "polling"])
def test_two_tabs_on_different_replicas_chat(tabs_on_two_replicas, unique, transport):
    path = "/?transport=polling" if transport == "polling" else "/"
    alice, bob = tabs_on_two_replicas(path)
    alice_replica, bob_replica = alice.replica(), bob.replica()
    assert alice_replica != bob_replica

    expected_transport = "polling" if transport == "polling" else "websocket"
    for tab in (alice, bob):
        expect(tab.page.locator("#transport")).to_have_text(expected_transport,
                                                            timeout=EVENT_TIMEOUT_MS)

    room = f"room-{unique}"
    _chat_join(alice, room, "alice")
    _chat_join(bob, room, "bob")
    alice.screenshot("joined")

    _chat_say(alice, f"hello from alice {unique}")
    bob_log = bob.page.locator("#chat-log")
    expect(bob_log).to_contain_text(f"alice: hello from alice {unique}", timeout=EVENT_TIMEOUT_MS)
    expect(bob_log.locator("li", has_text=f"hello from alice {unique}")).to_contain_text(
        f"via {alice_replica}")

    _chat_say(bob, f"hello from bob {unique}")
    alice_log = alice.page.locator("#chat-log")
    expect(alice_log).to_contain_text(f"bob: hello from bob {unique}", timeout=EVENT_TIMEOUT_MS)
    expect(alice_log.locator("li", has_text=f"hello from bob {unique}")).to_contain_text(
        f"via {bob_replica}")

    if transport == "polling":  # still polling: ?transport=polling never upgrades
        expect(alice.page.locator("#transport")).to_have_text("polling")
    alice.screenshot("chatted")
    bob.screenshot("chatted")


def test_notification_posted_to_the_api_appears(open_tab, stack, api_headers, unique):
    tab = open_tab("reader")
    text = f"deploy finished {unique}"
    response = requests.post(f"{stack.url}/api/notifications", headers=api_headers,
                             json={"to": "all", "data": {"text": text}}, timeout=10)
    assert response.status_code == 202, response.text

    notifications = tab.page.locator("#notifications li")
    expect(notifications.filter(has_text=text)).to_have_count(1, timeout=EVENT_TIMEOUT_MS)
    expect(tab.page.locator("#notifications-empty")).to_be_hidden()
    tab.screenshot("notified")


def test_signed_in_tab_gets_its_user_notifications(open_tab, stack, api_headers, unique):
    user = f"user-{unique}"
    signed_in = open_tab("signed-in")
    signed_in.page.get_by_label("User name").fill(user)
    signed_in.page.get_by_role("button", name="Sign in").click()
    expect(signed_in.page.locator("#user")).to_have_text(user, timeout=EVENT_TIMEOUT_MS)
    anonymous = open_tab("anonymous")

    def notify(to, text: str) -> None:
        response = requests.post(f"{stack.url}/api/notifications", headers=api_headers,
                                 json={"to": to, "data": {"text": text}}, timeout=10)
        assert response.status_code == 202, response.text

    private_text, public_text = f"for {user} only", f"for everyone {unique}"
    notify({"user": user}, private_text)
    expect(signed_in.page.locator("#notifications")).to_contain_text(
        private_text, timeout=EVENT_TIMEOUT_MS)
    # Sent after the private one: once the anonymous tab has it, it would have had the other.
    notify("all", public_text)
    expect(anonymous.page.locator("#notifications")).to_contain_text(
        public_text, timeout=EVENT_TIMEOUT_MS)
    expect(anonymous.page.locator("#notifications")).not_to_contain_text(private_text)
    signed_in.screenshot("notified")


def _expect_signed_in_controls(page, signed_in: bool) -> None:
    """"Start a job" and "Sign out" work only when signed in; the job area says why if not."""
    expect(page.get_by_role("button", name="Start a job")).to_be_enabled(enabled=signed_in)
    expect(page.get_by_role("button", name="Sign out")).to_be_enabled(enabled=signed_in)
    expect(page.locator("#job-requirement")).to_be_visible(visible=not signed_in)


def test_job_progress_bar_reaches_100_percent(open_tab, unique):
    tab = open_tab("jobs")
    page = tab.page
    start = page.get_by_role("button", name="Start a job")
    status = page.locator("#job-status")
    # Jobs are for signed-in users: while anonymous the button says so, beside it.
    _expect_signed_in_controls(page, signed_in=False)
    expect(start).to_have_accessible_description(re.compile("needs sign-in"))
    # Should the page think it is signed in when the server does not, the refusal shows in the
    # job area, not only in the Received log.
    page.locator("#job-start-button").evaluate("button => { button.disabled = false; }")
    start.click()
    expect(status).to_have_text("Not started: sign in to start a job", timeout=EVENT_TIMEOUT_MS)
    tab.screenshot("refused")

    page.get_by_label("User name").fill(f"jobs-{unique}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#user")).to_have_text(f"jobs-{unique}", timeout=EVENT_TIMEOUT_MS)
    _expect_signed_in_controls(page, signed_in=True)
    page.get_by_label("Steps").fill("4")
    start.click()
    expect(status).to_contain_text("Job ", timeout=EVENT_TIMEOUT_MS)
    tab.screenshot("started")

    expect(page.locator("#job-progress")).to_have_js_property("value", 100, timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-percent")).to_have_text("100%")
    # The result is shown for people, not as JSON.
    expect(status).to_have_text(re.compile(r"^Job \w+ done: steps: 4, attempt: 1$"),
                                timeout=EVENT_TIMEOUT_MS)
    expect(page.locator(f'#log li[data-kind="{Event.JOB_DONE}"]')).to_have_text(
        re.compile(r": steps: 4, attempt: 1$"))
    # Every step's progress arrived, in order, not only the end.
    progress = page.locator(f'#log li[data-kind="{Event.JOB_PROGRESS}"]').all_inner_texts()
    percents = [int(m) for line in progress for m in re.findall(r": (\d+)%$", line)]
    assert percents == [25, 50, 75, 100], progress
    tab.screenshot("done")

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#user")).to_have_text("anonymous", timeout=EVENT_TIMEOUT_MS)
    _expect_signed_in_controls(page, signed_in=False)


def test_page_reconnects_after_its_replica_restarts(open_tab, stack):
    tab = open_tab("restart", expect_network_errors=True)
    page = tab.page
    replica_id = tab.replica()
    session_before = page.locator("#session").inner_text()
    expect(page.locator("#recovery")).to_have_text("first connection")  # nothing to recover yet
    replica = next(r for r in stack.web if r.replica_id == replica_id)
    assert session_before.startswith(f"127.0.0.1.{replica.port}."), session_before

    started = time.monotonic()
    replica.process.send(signal.SIGTERM)
    # gunicorn closes open connections after its graceful timeout (10 s).
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected",
                                                          timeout=30_000)
    tab.screenshot("replica-stopped")
    replica.process.popen.wait(timeout=30)
    stack.start_replica(replica)

    tab.wait_connected(timeout_ms=30_000)
    assert page.locator("#session").inner_text() != session_before
    # The page asks for connection state recovery: on another replica it gets its session back.
    expect(page.locator("#recovery")).to_have_text("recovered")
    print(f"reconnected on {tab.replica()} {time.monotonic() - started:.1f}s after SIGTERM "
          f"to {replica_id}")
    # Working again, not merely "connected": the echo round trip goes through.
    page.get_by_label("Message to echo").fill("back again")
    page.get_by_role("button", name="Echo").click()
    expect(page.locator("#log")).to_contain_text("back again", timeout=EVENT_TIMEOUT_MS)
    tab.screenshot("reconnected")


def test_no_console_errors_while_using_every_control(open_tab, unique):
    tab = open_tab("everything")
    page = tab.page
    log = page.locator("#log")
    room = f"room-{unique}"

    def submit(label: str, value: str, button: str) -> None:
        page.get_by_label(label, exact=True).fill(value)
        page.get_by_role("button", name=button, exact=True).click()

    submit("Message to echo", f"echo {unique}", "Echo")
    expect(log).to_contain_text(f"echo {unique}")
    submit("Message to broadcast", f"broadcast {unique}", "Broadcast")
    expect(log).to_contain_text(f"broadcast {unique}")
    submit("Room to join", room, "Join room")
    expect(log).to_contain_text(room)
    page.get_by_label("Room", exact=True).fill(room)
    submit("Message to the room", f"to the room {unique}", "Send to room")
    expect(log).to_contain_text(f"to the room {unique}")
    submit("Room to close", room, "Close room")  # its members, this tab too, are told
    expect(log).to_contain_text(f"Room {room} is closing.")
    submit("Room to leave", room, "Leave room")
    _chat_join(tab, room, "solo")
    _chat_say(tab, f"talking to myself {unique}")
    expect(page.locator("#chat-log")).to_contain_text(f"talking to myself {unique}")
    expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+\.\d ms$"))

    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
    page.get_by_role("button", name="Connect", exact=True).click()
    tab.wait_connected()
    tab.screenshot("used")

    assert tab.console_errors == [], tab.console_errors
    assert tab.page_errors == [], tab.page_errors


def test_keyboard_alone_reaches_and_submits_the_echo_form(open_tab, unique):
    tab = open_tab("keyboard")
    page = tab.page
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "echo-data":
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached the echo field")
    page.keyboard.type(f"typed {unique}")
    tab.screenshot("focused")
    page.keyboard.press("Enter")
    expect(page.locator("#log")).to_contain_text(f"typed {unique}", timeout=EVENT_TIMEOUT_MS)


def test_the_chat_shows_who_is_in_the_room(tabs_on_two_replicas, unique):
    alice, guest = tabs_on_two_replicas("/")
    user = f"alice-{unique}"
    alice.page.get_by_label("User name").fill(user)
    alice.page.get_by_role("button", name="Sign in").click()
    expect(alice.page.locator("#user")).to_have_text(user, timeout=EVENT_TIMEOUT_MS)
    alice.wait_connected()
    room = f"members-{unique}"

    _chat_join(alice, room, "alice")
    members = alice.page.locator("#chat-members")
    expect(members).to_have_text(f"Members of #{room}: {user}", timeout=EVENT_TIMEOUT_MS)
    _chat_join(guest, room, "guest")  # anonymous, on the other replica
    expect(guest.page.locator("#chat-members")).to_contain_text(user)
    expect(members).to_have_text(f"Members of #{room}: {user}, 1 anonymous",
                                 timeout=EVENT_TIMEOUT_MS)
    alice.screenshot("members")

    guest.close()

    expect(members).to_have_text(f"Members of #{room}: {user}", timeout=EVENT_TIMEOUT_MS)
