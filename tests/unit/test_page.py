"""The demo page at `/`: served with the event contract rendered in, and no event name in its JS."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from common.contract import CHAT_NAMESPACE, MAIN_NAMESPACE, Event
from web.page import event_names

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"


class _PageParser(HTMLParser):
    """Collects the page's config script, its asset URLs and its form controls and labels."""

    def __init__(self):
        super().__init__()
        self.config_text = ""
        self._in_config = False
        self.assets: list[str] = []
        self.controls: list[dict] = []
        self.label_targets: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("id") == "page-config":
            self._in_config = True
        if tag == "script" and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])
        if tag == "label" and attrs.get("for"):
            self.label_targets.add(attrs["for"])
        if tag in ("input", "progress", "select", "textarea"):
            self.controls.append(attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_config = False

    def handle_data(self, data):
        if self._in_config:
            self.config_text += data


def _parse(app) -> _PageParser:
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    parser = _PageParser()
    parser.feed(response.get_data(as_text=True))
    return parser


def test_page_renders_every_contract_event_and_the_namespaces(app):
    config = json.loads(_parse(app).config_text)
    assert config["events"] == event_names()
    assert config["events"]["START_JOB"] == Event.START_JOB
    assert config["events"]["CHAT_MESSAGE"] == Event.CHAT_MESSAGE
    assert config["namespaces"]["main"] == MAIN_NAMESPACE
    assert config["namespaces"]["chat"] == CHAT_NAMESPACE
    assert config["async_mode"] == "threading"


def test_every_asset_the_page_links_is_served_locally(app):
    parser = _parse(app)
    client = app.test_client()
    assert any(src.endswith("/vendor/socket.io.min.js") for src in parser.assets)
    for url in parser.assets:
        assert url.startswith("/"), f"{url} is not served by the app (no CDN)"
        response = client.get(url)
        assert response.status_code == 200, url
        response.close()


def test_every_form_control_has_a_label(app):
    parser = _parse(app)
    assert parser.controls
    for control in parser.controls:
        assert control.get("id") in parser.label_targets or control.get("aria-label"), control


def test_app_js_spells_no_event_name():
    """Event names reach the JS only through the rendered contract (web/page.py)."""
    source = (STATIC / "app.js").read_text()
    literals = {"".join(groups) for groups in
                re.findall(r'"([^"\n]*)"|\'([^\'\n]*)\'|`([^`]*)`', source)}
    spelled = sorted(literals & set(event_names().values()))
    assert not spelled, f"app.js spells event names {spelled}; use EVENT.<NAME> instead"
