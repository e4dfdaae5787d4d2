"""The Socket.IO Admin UI: off unless ADMIN_UI_PASSWORD is set; then its page, vendored from the
pinned npm package and loading nothing from outside, behind HTTP Basic. Its namespace needs real
Engine.IO sockets: tests/browser/test_admin_ui.py."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from common.contract import ADMIN_NAMESPACE
from tests.support.app import unit_settings
from web.app import create_app
from web.extensions import socketio
from web.routes import ADMIN_UI_DIR

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-ui-password-0123456789abcdef-0123"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def admin_app():
    # No teardown: the instrumentation patches no class (web/upstream/admin_ui.py).
    return create_app(unit_settings(admin_ui_password=PASSWORD), async_mode="threading",
                      use_message_queue=False)


def test_off_unless_configured(app):
    assert app.test_client().get("/admin/").status_code == 404
    assert ADMIN_NAMESPACE not in socketio.server.handlers


def test_the_page_needs_the_credentials(admin_app):
    http = admin_app.test_client()
    refused = http.get("/admin/")
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    assert "ADMIN_UI_PASSWORD" in refused.get_json()["error"]
    assert http.get("/admin/", headers=basic("admin", "wrong")).status_code == 401
    page = http.get("/admin/", headers=basic("admin", PASSWORD))
    assert page.status_code == 200 and b"Socket.IO Admin UI" in page.data
    script = re.search(r'src="(js/app\.[0-9a-f]+\.js)"', page.get_data(as_text=True)).group(1)
    assert http.get(f"/admin/{script}", headers=basic("admin", PASSWORD)).status_code == 200


def test_the_vendored_page_is_the_pinned_package_and_loads_nothing_from_outside():
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    assert (ADMIN_UI_DIR / "VERSION").read_text().strip() == pinned["@socket.io/admin-ui"], (
        "web/static/vendor/admin-ui/ differs from package.json: run scripts/vendor_admin_ui.sh")
    assert not re.search(r"https?://", (ADMIN_UI_DIR / "index.html").read_text())
