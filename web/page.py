"""The demo page at `/`: the Flask-SocketIO example page, plus replicas, chat, notifications, jobs.

The page is static HTML, CSS and vanilla JS (web/templates/index.html, web/static/), served by the
app's own static folder, with the Socket.IO client vendored under web/static/vendor/ (no CDN).
Event names come from the contract: this module renders them into the page as JSON, and
web/static/app.js reads them from there, so the JS spells no event name itself.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from common.contract import CHAT_NAMESPACE, ECHO_NAMESPACE, MAIN_NAMESPACE, Event
from web.extensions import current_settings, socketio

blueprint = Blueprint("page", __name__)

# Where the page asks for a development identity token (web/api.py).
DEMO_TOKEN_URL = "/api/demo/token"


def event_names() -> dict[str, str]:
    """Every event of the contract, by its Python name: {"MY_EVENT": "my_event", ...}."""
    return {name: value for name, value in vars(Event).items()
            if name.isupper() and isinstance(value, str)}


def page_config() -> dict:
    """What app.js needs from the server, rendered into the page as one JSON object."""
    return {
        "events": event_names(),
        "namespaces": {"main": MAIN_NAMESPACE, "chat": CHAT_NAMESPACE, "echo": ECHO_NAMESPACE},
        "urls": {"demo_token": DEMO_TOKEN_URL},
        "demo_login": demo_login_state(),
        "async_mode": socketio.async_mode,
    }


def demo_login_state() -> dict:
    """Whether the page's sign-in works here, and if not, why (shown on the page)."""
    settings = current_settings()
    if settings.demo_login_enabled:
        return {"enabled": True, "reason": ""}
    why = ("APP_ENV=production" if settings.app_env == "production" and settings.demo_login is None
           else "DEMO_LOGIN=false")
    return {"enabled": False, "reason": (
        f"this server hands out no demo tokens ({why}). Set DEMO_LOGIN=true to try it; it lets "
        "anyone sign in as anyone.")}


@blueprint.get("/")
def index():
    return render_template("index.html", config=page_config())
