"""The native runner's own checks: what a newcomer without nginx or RabbitMQ is told, what it
restarts, and what it prints."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from scripts import stack, supervisor
from scripts.supervisor import Supervisor, ephemeral_ports, free_port
from tests.support.waiting import wait_until


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


def sleeper(name: str = "sleeper") -> stack.Service:
    return stack.Service(name, [sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_process_that_dies_is_restarted_after_a_backoff_and_said_so(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "RESTART_FIRST_DELAY", 0.2)
    said: list[str] = []
    runner = Supervisor(tmp_path, log_to_files=True)
    try:
        (process,) = runner.run(sleeper("web-1"))
        runner.keep_running(said.append, interval=0.05)
        first_pid = process.popen.pid
        os.kill(first_pid, signal.SIGKILL)

        wait_until(lambda: len(said) == 2, timeout=10, what="web-1 to be started again")
        assert process.popen.pid != first_pid and process.running()
        assert said[0].startswith("web-1 killed by SIGKILL after ")
        assert said[0].endswith("; restarting it in 0.2s")
        assert said[1] == f"web-1 restarted (pid {process.popen.pid})"
        assert runner.processes == [process]  # the same Process: who holds it follows the restart
    finally:
        runner.stop(timeout=5)
    assert not process.running() and runner.processes == []


def test_what_is_stopped_on_purpose_is_not_restarted(tmp_path):
    said: list[str] = []
    runner = Supervisor(tmp_path, log_to_files=True)
    try:
        one, two = runner.run(sleeper("one"), sleeper("two"))
        runner.keep_running(said.append, interval=0.05)
        runner.stop_one(one, timeout=5)
        time.sleep(0.3)
        assert not one.running() and runner.processes == [two]
    finally:
        runner.stop(timeout=5)
    time.sleep(0.3)
    assert said == [] and not two.running()


def test_the_restart_backoff_doubles_for_quick_exits_up_to_its_maximum():
    delays = [supervisor.restart_delay(exits) for exits in range(1, 10)]
    assert delays[:3] == [supervisor.RESTART_FIRST_DELAY, 2 * supervisor.RESTART_FIRST_DELAY,
                          4 * supervisor.RESTART_FIRST_DELAY]
    assert max(delays) == delays[-1] == supervisor.RESTART_MAX_DELAY


def test_the_private_broker_keeps_its_fixed_port_or_says_why_not():
    said: list[str] = []
    port = free_port()
    assert stack.broker_port(port, said.append) == port and said == []
    with socket.create_server(("127.0.0.1", port)):  # another RabbitMQ, say
        other = stack.broker_port(port, said.append)
    assert other != port
    (note,) = said
    assert f"port {port} is taken" in note and f"on {other}" in note and "AMQP_PORT=" in note


def test_the_banner_names_the_admin_ui_when_it_is_on():
    off = stack.Stack(replicas=1, port=8123, amqp_url="amqp://guest:guest@127.0.0.1:5673//")
    on = stack.Stack(replicas=1, port=8123, amqp_url="amqp://guest:guest@127.0.0.1:5673//",
                     extra_env={"ADMIN_UI_PASSWORD": "x" * 32, "ADMIN_UI_USERNAME": "ops"})
    try:
        assert "/admin/" not in stack.push_help(off)
        assert "Admin UI:  http://127.0.0.1:8123/admin/  (user ops," in stack.push_help(on)
    finally:
        off.stop()
        on.stop()


def test_a_low_open_file_limit_is_said_once_and_fitted_instead_of_warned(monkeypatch):
    from common.settings import open_files_for_clients

    monkeypatch.setattr(stack, "open_files_limit", lambda: 20_000)
    monkeypatch.delenv("MAX_CLIENTS_PER_REPLICA", raising=False)
    native = stack.Stack(replicas=3)
    try:
        replica = native.services.replica(native, stack.Replica(1, 5001))
        fitted = int(replica.env["MAX_CLIENTS_PER_REPLICA"])
        assert open_files_for_clients(fitted) <= 20_000 < open_files_for_clients(fitted + 1)
        values = native.nginx_values()
        assert values["NGINX_OPEN_FILES"] == values["NGINX_WORKER_CONNECTIONS"] == "20000"
        note = native.open_files_note()
        assert "20,000" in note and f"each replica takes {fitted:,}" in note
        # A value chosen on purpose is the user's: the replicas then warn themselves.
        native.extra_env["MAX_CLIENTS_PER_REPLICA"] = "10000"
        assert "MAX_CLIENTS_PER_REPLICA" not in native.services.replica(
            native, stack.Replica(1, 5001)).env
    finally:
        native.stop()
