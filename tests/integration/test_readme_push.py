"""Copy-paste true: the README's "From your backend" commands, and what `make run` prints, run
exactly as written against a real stack, and what they send reaches real clients."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from common.auth import issue_token
from common.contract import Event
from scripts.stack import ROOT, free_port
from tests.support.clients import RecordingClient
from tests.support.stack import STACK_ENV
from tests.support.waiting import wait_until

README_USER = "alice"  # the user the README's examples address


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the README's "From your backend" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## From your backend\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def shell_env(**values: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **values}


def run_shell(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command}\nfailed: {done.stdout}{done.stderr}"
    return done.stdout


def texts(client: RecordingClient, event: str) -> list:
    found = []
    for payload in client.events(event):
        data = payload.get("data") if isinstance(payload, dict) else None
        found.append(data.get("text") if isinstance(data, dict) else data)
    return found


def test_every_readme_backend_command_works_as_written(stack, clients, tmp_path):
    blocks = readme_blocks()
    # The first block is the line `make run` prints with its own values: this test sets them.
    assert blocks[0][0] == "sh" and blocks[0][1].startswith("export API_URL=")
    env = shell_env(API_URL=f"{stack.url}/api", API_KEY=STACK_ENV["API_KEY"],
                    AMQP_URL=stack.amqp_url)
    anonymous = RecordingClient(stack.url).connect()
    alice = RecordingClient(stack.url, auth={
        "token": issue_token(STACK_ENV["SECRET_KEY"], README_USER)}).connect()
    clients.extend([anonymous, alice])

    printed = {}
    for language, code in blocks[1:]:
        if language == "python":  # a plain script, outside the project: no project imports
            (tmp_path / "push.py").write_text(code)
            done = subprocess.run([sys.executable, "push.py"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        else:
            printed[code] = run_shell(code, env)
    # The last block disconnected the user, on whichever replica it is.
    wait_until(lambda: not alice.sio.connected, timeout=10)
    assert anonymous.sio.connected

    anonymous.wait_for(Event.MY_RESPONSE, lambda p: p.get("data") == "hi from Python")
    assert {"hi from curl", "one", "hi from Python"} <= set(texts(anonymous, Event.MY_RESPONSE))
    assert set(texts(alice, Event.NOTIFICATION)) >= {"two", "hi alice", "from the shell"}
    assert texts(anonymous, Event.NOTIFICATION) == []
    presence = next(out for code, out in printed.items() if "/presence" in code)
    everyone, _, alices = (json.loads(line) for line in presence.splitlines())
    assert README_USER in everyone["users"] and everyone["anonymous"] >= 1
    assert alices["user"] == README_USER and alices["connections"]
    disconnected = next(out for code, out in printed.items() if "/disconnect" in code)
    assert set(json.loads(disconnected)) == {"user", "connections"}, disconnected


def test_make_run_prints_lines_that_work_when_pasted(clients):
    """`make run` is `python -m scripts.stack`: started here with its own private broker."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.stack", "--port", str(port), "--replicas", "2",
         "--workers", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, start_new_session=True, env=shell_env())
    try:
        printed = []
        for line in process.stdout:
            printed.append(line)
            if "Ctrl-C stops it" in line:
                break
        text = "".join(printed)
        assert f"Page:      http://127.0.0.1:{port}/" in text, text
        assert "dev-api-key-not-for-production" in text
        amqp_url = re.search(r"AMQP URL:  (amqp://\S+)", text).group(1)
        commands = [line.strip() for line in printed
                    if line.strip().startswith(("curl ", sys.executable, "export "))]
        assert len(commands) == 3, text

        watcher = RecordingClient(f"http://127.0.0.1:{port}").connect()
        clients.append(watcher)
        for command in commands[:2]:
            run_shell(command, shell_env())
        watcher.wait_for(Event.MY_RESPONSE, lambda p: p.get("data") == "hi from curl")
        watcher.wait_for(Event.MY_RESPONSE, lambda p: p.get("data") == "hi from Python")
        exported = run_shell(f"{commands[2]}; echo \"$API_URL $AMQP_URL\"", shell_env())
        assert exported.split() == [f"http://127.0.0.1:{port}/api", amqp_url]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
