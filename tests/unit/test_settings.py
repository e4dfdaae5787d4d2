"""common/settings.py: one typed settings object from the environment, strict in production."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from common.settings import (
    DEV_AMQP_URL,
    DEV_API_KEY,
    DEV_SECRET_KEY,
    Settings,
    load_settings,
    warn_about_unknown_variables,
)

STRONG_SECRET = "s" * 40
STRONG_API_KEY = "k" * 40
PRIVATE_AMQP = "amqp://realtime:long-random-password@rabbitmq:5672//"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Settings read the environment: start every test from one without any setting in it."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name in ("AMPQ_URL", "SECRET_KY"):
        monkeypatch.delenv(name, raising=False)


def production(**overrides) -> Settings:
    values = {"app_env": "production", "secret_key": STRONG_SECRET, "api_key": STRONG_API_KEY,
              "amqp_url": PRIVATE_AMQP, "replica_address": "10.0.0.7:5000"}
    values.update(overrides)
    return Settings(**values)


def test_development_accepts_the_development_defaults():
    settings = Settings(replica_address="127.0.0.1:5000")

    assert settings.app_env == "development"
    assert settings.secret_key.get_secret_value() == DEV_SECRET_KEY
    assert settings.amqp_url.get_secret_value() == DEV_AMQP_URL
    assert settings.socketio_channel == "flask-socketio"  # Flask-SocketIO's default channel


def test_production_with_real_secrets_is_accepted():
    settings = production()

    assert settings.app_env == "production"
    assert settings.replica_host == "10.0.0.7"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"secret_key": DEV_SECRET_KEY}, "SECRET_KEY"),
        ({"secret_key": "short-secret"}, "SECRET_KEY"),
        ({"api_key": DEV_API_KEY}, "API_KEY"),
        ({"api_key": "k" * 31}, "API_KEY"),
        ({"amqp_url": DEV_AMQP_URL}, "AMQP_URL"),
        ({"amqp_url": "amqp://guest:guest@rabbitmq:5672//"}, "AMQP_URL"),
    ],
    ids=["dev-secret-key", "short-secret-key", "dev-api-key", "short-api-key", "dev-amqp-url",
         "guest-amqp-url"],
)
def test_production_refuses_development_secrets_and_the_guest_account(overrides, named):
    with pytest.raises(ValidationError, match=named):
        production(**overrides)


def test_production_from_the_environment_with_defaults_fails_loudly(monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")

    with pytest.raises(ValidationError, match="SECRET_KEY"):
        load_settings(replica_address="10.0.0.7:5000")


@pytest.mark.parametrize("origins", [["*"], ["https://example.com", "*"]])
def test_wildcard_origin_is_refused(origins):
    with pytest.raises(ValidationError, match="origin check"):
        Settings(cors_allowed_origins=origins, replica_address="127.0.0.1:5000")


def test_wildcard_origin_is_refused_from_the_environment(monkeypatch):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://example.com, *")

    with pytest.raises(ValidationError, match="origin check"):
        load_settings(replica_address="127.0.0.1:5000")


def test_origins_are_a_comma_separated_list_in_the_environment(monkeypatch):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example ,")

    settings = load_settings(replica_address="127.0.0.1:5000")

    assert settings.cors_allowed_origins == ["https://a.example", "https://b.example"]


def test_no_origins_means_same_origin_only():
    assert Settings(replica_address="127.0.0.1:5000").cors_allowed_origins == []


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AMQP_URL", PRIVATE_AMQP)
    monkeypatch.setenv("WEB_PORT", "5003")
    monkeypatch.setenv("REPLICA_ID", "web-3")
    monkeypatch.setenv("REPLICA_ADDRESS", "10.1.2.3:5003")

    settings = load_settings()

    assert settings.amqp_url.get_secret_value() == PRIVATE_AMQP
    assert (settings.web_port, settings.replica_id) == (5003, "web-3")
    assert settings.replica_host == "10.1.2.3"


def test_replica_address_defaults_to_own_address_and_port():
    settings = Settings(web_port=5007)

    host, _, port = settings.replica_address.rpartition(":")
    assert port == "5007"
    assert len(host.split(".")) == 4


@pytest.mark.parametrize("address", ["web:5000", "10.0.0.7", "10.0.0.7:http", "[::1]:5000"])
def test_replica_address_must_be_ipv4_and_port(address):
    # nginx routes by the IPv4:port prefix of the session id; anything else could not be routed.
    with pytest.raises(ValidationError, match="REPLICA_ADDRESS"):
        Settings(replica_address=address)


def test_secrets_are_not_shown_in_repr():
    settings = production()

    assert STRONG_SECRET not in repr(settings)
    assert "long-random-password" not in repr(settings)


@pytest.mark.parametrize(("typo", "meant"), [("AMPQ_URL", "AMQP_URL"), ("SECRET_KY", "SECRET_KEY"),
                                             ("REPLICA_ADRESS", "REPLICA_ADDRESS"),
                                             ("CORS_ALLOWED_ORIGIN", "CORS_ALLOWED_ORIGINS")])
def test_misspelt_variable_is_warned_about(typo, meant, caplog):
    with caplog.at_level(logging.WARNING, logger="common.settings"):
        warnings = warn_about_unknown_variables({typo: "x", "PATH": "/usr/bin", "HOME": "/root"})

    assert len(warnings) == 1 and typo in warnings[0] and f"did you mean {meant}" in warnings[0]
    assert warnings[0] in caplog.messages


def test_known_and_unrelated_variables_are_not_warned_about():
    assert warn_about_unknown_variables(
        {"AMQP_URL": "x", "SECRET_KEY": "y", "PATH": "/usr/bin", "HOME": "/root", "LANG": "C"}
    ) == []


def test_load_settings_warns_about_a_typo_in_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("AMPQ_URL", PRIVATE_AMQP)

    with caplog.at_level(logging.WARNING, logger="common.settings"):
        settings = load_settings(replica_address="127.0.0.1:5000")

    assert any("AMPQ_URL" in message and "AMQP_URL" in message for message in caplog.messages)
    # The typo is not taken for the real setting.
    assert settings.amqp_url.get_secret_value() == DEV_AMQP_URL
