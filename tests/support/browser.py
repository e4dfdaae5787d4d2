"""The demo page in a headless Chromium tab (Playwright), for the browser tests."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CONNECT_TIMEOUT_MS = 20_000
REPLICA_ID = re.compile(r"^web-\d+$")
# What a browser logs while a replica is down: failed requests and WebSocket connections.
NETWORK_ERROR = re.compile(r"^(Failed to load resource|WebSocket connection to .* failed)")


@dataclass
class Tab:
    """One browser context and its page: a visitor with their own cookies and connection."""

    name: str
    context: object
    page: object
    screenshot_prefix: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    expect_network_errors: bool = False
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()

    def screenshot(self, step: str) -> Path:
        path = ARTIFACTS / f"{self.screenshot_prefix}-{self.name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def wait_connected(self, timeout_ms: int = CONNECT_TIMEOUT_MS) -> str:
        """Wait until the page shows it is connected and which replica it is on; return the id."""
        from playwright.sync_api import expect

        expect(self.page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=timeout_ms)
        expect(self.page.locator("#replica")).to_have_text(REPLICA_ID, timeout=timeout_ms)
        return self.replica()

    def replica(self) -> str:
        return self.page.locator("#replica").inner_text().strip()

    def unexpected_errors(self) -> list[str]:
        console = [text for text in self.console_errors
                   if not (self.expect_network_errors and NETWORK_ERROR.match(text))]
        return console + [f"pageerror: {text}" for text in self.page_errors]
