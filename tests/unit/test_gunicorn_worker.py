"""gunicorn loads its config file and imports the worker class in its master process, before the
worker monkey-patches: neither may import the app's I/O libraries (Kombu, amqp, Flask,
Socket.IO), or the worker inherits them with unpatched sockets and locks and a broker outage then
blocks the whole replica (seen: every handler stalled 1-4 s while RabbitMQ was away)."""

from __future__ import annotations

import json
import subprocess
import sys

IO_LIBRARIES = ("kombu", "amqp", "flask", "flask_socketio", "socketio", "engineio", "requests")


def modules_loaded_by(code: str) -> list[str]:
    code += "; import json, sys; print(json.dumps(sorted(sys.modules)))"
    return json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                     capture_output=True, text=True).stdout)


def test_the_master_imports_no_io_library_of_the_app():
    loaded = modules_loaded_by("import runpy; runpy.run_path('web/gunicorn.conf.py'); "
                               "import web.gunicorn_worker")
    pulled_in = [name for name in loaded if name.split(".")[0] in IO_LIBRARIES]
    assert pulled_in == [], f"gunicorn's master would import {pulled_in[:10]}"


def test_the_worker_class_module_imports_nothing_of_the_app():
    loaded = modules_loaded_by("import web.gunicorn_worker")
    # Its CONTRACT's record type is a plain dataclass: it imports nothing that patching affects.
    harmless = {"web.gunicorn_worker", "common", "common.library_contract"}
    app_modules = [name for name in loaded if name not in harmless
                   and (name.split(".")[0] == "common" or name.startswith("web."))]
    assert app_modules == [], f"web.gunicorn_worker pulls in {app_modules[:10]}"
