"""The demo page joins its rooms again after every reconnection (sign-in included), and says on
the page why sign-in is unavailable."""

from __future__ import annotations

import requests
from playwright.sync_api import expect

from common.contract import Event

EVENT_TIMEOUT_MS = 15_000


def emit_to_room(stack, api_headers, room: str, text: str) -> None:
    answer = requests.post(f"{stack.url}/api/emit", headers=api_headers, timeout=10, json={
        "event": Event.MY_RESPONSE, "data": {"data": text}, "to": {"room": room}})
    assert answer.status_code == 202, answer.text


def test_rooms_are_joined_again_after_sign_in_and_after_a_reconnect(
        open_tab, stack, api_headers, unique):
    tab = open_tab("rooms")
    page = tab.page
    expect(page.locator("#recovery")).to_have_text("first connection")
    room = f"room-{unique}"
    page.get_by_label("Room to join").fill(room)
    page.get_by_role("button", name="Join room").click()
    expect(page.locator("#joined-rooms")).to_have_text(room)
    in_room = page.locator("#log li", has_text="In rooms:").filter(has_text=room)
    expect(in_room).to_have_count(1)

    page.get_by_label("User name").fill(f"user-{unique}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#user")).to_have_text(f"user-{unique}", timeout=EVENT_TIMEOUT_MS)
    # Signing in reconnects: a new session, in none of the rooms until the page joins them.
    expect(page.locator("#recovery")).to_have_text("new session")
    expect(in_room).to_have_count(2, timeout=EVENT_TIMEOUT_MS)  # joined again by itself
    emit_to_room(stack, api_headers, room, f"after sign-in {unique}")
    expect(page.locator("#log")).to_contain_text(f"after sign-in {unique}",
                                                 timeout=EVENT_TIMEOUT_MS)

    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
    page.get_by_role("button", name="Connect", exact=True).click()
    tab.wait_connected()
    expect(in_room).to_have_count(3, timeout=EVENT_TIMEOUT_MS)
    emit_to_room(stack, api_headers, room, f"after reconnect {unique}")
    expect(page.locator("#log")).to_contain_text(f"after reconnect {unique}",
                                                 timeout=EVENT_TIMEOUT_MS)
    tab.screenshot("rejoined")


def test_sign_in_refused_by_the_server_says_why_on_the_page(open_tab):
    tab = open_tab("no-sign-in", expect_network_errors=True)  # the 403 below
    page = tab.page
    reason = "demo login is off (DEMO_LOGIN=false or APP_ENV=production)"
    # The server of this stack has demo login on: answer as one with it off would.
    page.route("**/api/demo/token", lambda route: route.fulfill(
        status=403, content_type="application/json", body=f'{{"error": "{reason}"}}'))
    page.get_by_label("User name").fill("someone")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#identity-state")).to_have_text(f"Sign-in is unavailable: {reason}")
    expect(page.get_by_role("button", name="Sign in")).to_be_disabled()
    expect(page.locator("#user")).to_have_text("anonymous")
    # The job area, whose button needs sign-in, says it is unavailable too.
    expect(page.get_by_role("button", name="Start a job")).to_be_disabled()
    expect(page.locator("#job-requirement")).to_contain_text(
        "Sign-in is unavailable on this server.")
    tab.screenshot("refused")
