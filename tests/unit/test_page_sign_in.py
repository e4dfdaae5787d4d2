"""The demo page says why sign-in is unavailable when the server hands out no demo tokens."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.app import unit_settings
from web.app import create_app


def rendered(**settings) -> str:
    app = create_app(unit_settings(**settings), async_mode="threading", use_message_queue=False)
    return app.test_client().get("/").get_data(as_text=True)


def page_config(html: str) -> dict:
    return json.loads(re.search(r'id="page-config"[^>]*>(.*?)</script>', html, re.S).group(1))


def test_sign_in_is_offered_where_demo_login_is_on():
    html = rendered(demo_login=True)
    assert page_config(html)["demo_login"] == {"enabled": True, "reason": ""}
    assert "Sign-in is unavailable" not in html


@pytest.mark.parametrize(("settings", "named"), [
    ({"demo_login": False}, "DEMO_LOGIN=false"),
    ({"app_env": "production", "secret_key": "s" * 40, "api_key": "k" * 40,
      "amqp_url": "amqp://app:secret@rabbitmq//"}, "APP_ENV=production"),
])
def test_the_page_says_why_sign_in_is_unavailable(settings, named):
    html = rendered(**settings)
    state = page_config(html)["demo_login"]
    assert state["enabled"] is False and named in state["reason"]
    assert re.search(r'id="identity-state"[^>]*>Sign-in is unavailable: [^<]*' + re.escape(named),
                     html)


def start_tag(html: str, element_id: str) -> str:
    return re.search(rf'<[a-z]+\b[^>]*\bid="{element_id}"[^>]*>', html).group(0)


@pytest.mark.parametrize("demo_login", [True, False])
def test_starting_a_job_and_signing_out_wait_for_sign_in(demo_login):
    """The page loads anonymous: both controls start disabled (app.js enables them once the
    server names a user), and the job area says why, where the button is."""
    html = rendered(demo_login=demo_login)
    start = start_tag(html, "job-start-button")
    assert " disabled" in start and 'aria-describedby="job-requirement"' in start
    assert " disabled" in start_tag(html, "sign-out-button")
    requirement = re.search(r'id="job-requirement"[^>]*>(.*?)</p>', html, re.S).group(1)
    assert "Starting a job needs sign-in" in requirement
    # Where sign-in is off the button can never work here: the job area says so too.
    unavailable = start_tag(html, "job-sign-in-unavailable")
    assert (" hidden" in unavailable) == demo_login
