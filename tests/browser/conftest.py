"""Browser tests: the demo page in headless Chromium, driven by Playwright, against the native
stack.

Chromium is the system's (/usr/bin/chromium); Playwright never downloads a browser here. A missing
Chromium fails the tests with the command that installs it; nothing is skipped. Every test saves
screenshots to test-artifacts/browser/.
"""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Tab
from tests.support.stack import api_headers as stack_api_headers


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}. On Debian or Ubuntu: "
                    "sudo apt-get install -y chromium", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python playwright is missing: run `make install`", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def open_tab(browser, stack, request):
    """open_tab(name, path="/") -> a connected Tab in a fresh browser context.

    At the end of the test every tab is screenshotted, closed, and checked for console errors.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"[^\w.-]+", "_", request.node.name)
    tabs: list[Tab] = []

    def open_one(name: str, path: str = "/", expect_network_errors: bool = False) -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        tab = Tab(name, context, page, prefix, expect_network_errors=expect_network_errors)
        page.on("console", lambda message: message.type == "error"
                and tab.console_errors.append(message.text))
        page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        tabs.append(tab)
        page.goto(stack.url + path)
        tab.wait_connected()
        return tab

    yield open_one

    errors = {}
    for tab in tabs:
        try:
            if not tab.closed:
                tab.screenshot("final")
        finally:
            tab.close()
        if tab.unexpected_errors():
            errors[tab.name] = tab.unexpected_errors()
    assert not errors, f"browser console errors: {errors}"


@pytest.fixture
def tabs_on_two_replicas(open_tab, stack):
    """open_pair(path="/") -> two tabs whose connections live on different replicas."""

    def open_pair(path: str = "/", attempts: int = 8) -> tuple[Tab, Tab]:
        first = open_tab("a", path)
        first_replica = first.replica()
        for attempt in range(attempts):
            # New sessions go round-robin; an extra request moves nginx's turn along, so a
            # page load that always makes the same number of requests cannot keep hitting
            # the same replica.
            requests.get(f"{stack.url}/healthz", timeout=5).raise_for_status()
            second = open_tab(f"b{attempt}", path)
            if second.replica() != first_replica:
                return first, second
            second.screenshot("same-replica")
            second.close()
        pytest.fail(f"{attempts + 1} tabs all landed on {first_replica}: nginx does not spread "
                    "new sessions over the replicas", pytrace=False)

    return open_pair


@pytest.fixture
def api_headers() -> dict[str, str]:
    return stack_api_headers()
