"""The native runner's own checks: what a newcomer without nginx or RabbitMQ is told."""

from __future__ import annotations

import socket
import sys

import pytest

from scripts import stack
from scripts.supervisor import Supervisor, ephemeral_ports, free_port


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


def test_the_supervisor_starts_waits_for_and_stops_a_service(tmp_path):
    supervisor = Supervisor(tmp_path, log_to_files=True)
    ready = []
    service = stack.Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                            ready=ready.append)
    (process,) = supervisor.run(service)
    assert ready == [process] and process.running()
    supervisor.stop(timeout=5)
    assert not process.running() and supervisor.processes == []


def test_a_service_that_exits_during_start_up_fails_with_its_log(tmp_path):
    supervisor = Supervisor(tmp_path, log_to_files=True)
    service = stack.Service("quitter", [sys.executable, "-c", "print('cannot start'); exit(3)"],
                            ready_url=f"http://127.0.0.1:{stack.free_port()}/readyz")
    with pytest.raises(stack.StartupFailed, match="(?s)quitter exited with 3.*cannot start"):
        supervisor.run(service)
    supervisor.stop(timeout=5)


def test_the_baseline_is_another_list_of_services_for_the_same_stack():
    from loadtest.baseline.stack import BASELINE

    ours, baseline = stack.Stack(replicas=1), stack.Stack(replicas=1, services=BASELINE)
    try:
        replica = stack.Replica(1, stack.free_port(), prefix=BASELINE.replica_prefix)
        assert "web.wsgi:app" in ours.services.replica(ours, replica).command
        assert "loadtest.baseline.app:app" in baseline.services.replica(baseline, replica).command
        assert baseline.services.worker is None and ours.services.worker is not None
        assert baseline.services.replica(baseline, replica).name == "baseline-1"
    finally:
        ours.stop()
        baseline.stop()


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral_ports().start for port in ports)
    for port in ports[:5]:  # free indeed: a service can listen on it
        with socket.create_server(("127.0.0.1", port)):
            pass
