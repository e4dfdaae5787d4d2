"""gunicorn imports the worker class in its master process, before the worker monkey-patches:
importing it must not import the app (Kombu, amqp and Flask would keep unpatched sockets and locks,
and a broker outage would then block the whole replica)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_worker_class_imports_no_app_module():
    code = ("import json, sys, web.gunicorn_worker; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)
    app_modules = [name for name in loaded
                   if name.split(".")[0] in ("kombu", "amqp", "flask", "flask_socketio",
                                             "socketio", "common")
                   or (name.startswith("web.") and name != "web.gunicorn_worker")]
    assert app_modules == [], f"web.gunicorn_worker pulls in {app_modules[:10]}"
