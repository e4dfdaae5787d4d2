"""The native runner's own checks: what a newcomer without nginx or RabbitMQ is told."""

from __future__ import annotations

import pytest

from scripts import stack


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(stack, "SYSTEM_BIN_DIRS", str(tmp_path))
    monkeypatch.setattr(stack, "RABBITMQ_SERVER", str(tmp_path / "rabbitmq-server"))


def test_missing_nginx_and_rabbitmq_say_how_to_install_them(nothing_installed):
    with pytest.raises(stack.MissingDependency) as missing:
        stack.check_installed(need_rabbitmq=True)
    message = str(missing.value)
    assert "sudo apt-get install -y nginx rabbitmq-server" in message
    assert "AMQP_URL" in message  # the other way out: a broker of one's own


def test_an_external_broker_needs_no_rabbitmq_server(nothing_installed):
    with pytest.raises(stack.MissingDependency) as missing:
        stack.check_installed(need_rabbitmq=False)
    assert "apt-get install -y nginx" in str(missing.value)
    assert "rabbitmq-server" not in str(missing.value)


def test_main_reports_a_missing_program_and_exits_1(nothing_installed, capsys):
    assert stack.main(["--replicas", "1", "--port", str(stack.free_port())]) == 1
    assert "apt-get install -y nginx rabbitmq-server" in capsys.readouterr().err


def test_templates_fill_only_their_own_placeholders(tmp_path):
    template = tmp_path / "t.conf.template"
    template.write_text("listen ${NGINX_LISTEN}; set $backend $host; ${NGINX_UNKNOWN}\n")
    stack.render(template, tmp_path / "t.conf", {"NGINX_LISTEN": "8080"})
    assert (tmp_path / "t.conf").read_text() == (
        "listen 8080; set $backend $host; ${NGINX_UNKNOWN}\n")
