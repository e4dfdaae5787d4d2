"""The library internals the seam reads are still there, as they were when it was read.

Every module of web/upstream/, web/gunicorn_worker.py and common/broker.py starts with a CONTRACT
(common/library_contract.py). These tests fail in seconds after an upgrade of a library it bends,
naming the module to re-read; they also fail when a module reads a private member it does not
list, and when pyproject.toml's version ranges and the contracts disagree.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import tomllib
import types
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import web.upstream
from common.library_contract import Contract
from tests.support.app import unit_settings
from web.app import create_app
from web.extensions import socketio

ROOT = Path(__file__).resolve().parents[2]
SEAM_MODULES = sorted(
    [f"web.upstream.{info.name}" for info in pkgutil.iter_modules(web.upstream.__path__)]
    + ["web.gunicorn_worker", "common.broker"])
# Where a library's private members may be named (the grep of the issue that split the seam).
SEAM_FILES = {ROOT / "web" / "upstream", ROOT / "web" / "gunicorn_worker.py",
              ROOT / "common" / "broker.py"}
DISTRIBUTION_OF = {"engineio": "python-engineio", "socketio": "python-socketio",
                   "flask_socketio": "flask-socketio", "geventwebsocket": "gevent-websocket",
                   "gevent": "gevent", "gunicorn": "gunicorn", "kombu": "kombu"}


def contract_of(module_name: str) -> Contract:
    return importlib.import_module(module_name).CONTRACT


def library_object(path: str):
    """The object at `path` as the library defines it (our own subclasses are looked through)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        break
    else:
        raise AttributeError(path)
    for name in parts[split:]:
        obj = getattr(obj, name)
        while inspect.isclass(obj) and obj.__module__.startswith("web.upstream."):
            obj = obj.__bases__[0]  # rebound by web.upstream.apply(): check what it replaced
    return obj


# Classes a library defines twice under an `if` (engine.io's drivers): inspect cannot tell which
# definition is the one in use, so their whole module is read for their attributes.
DEFINED_TWICE = {"engineio.async_drivers.gevent.WebSocketWSGI"}


def assigned_attributes(cls) -> set[str]:
    """The `self.<name> = ...` of a class and its bases, read from their source."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        try:
            whole_module = f"{klass.__module__}.{klass.__qualname__}" in DEFINED_TWICE
            source = inspect.getsource(sys.modules[klass.__module__] if whole_module else klass)
        except (OSError, TypeError, KeyError):
            continue
        names.update(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=(?!=)", source))
    return names


def contract_problems(contract: Contract) -> list[str]:
    """What of `contract` the installed libraries no longer have."""
    problems = []
    for path, expected in contract.members.items():
        try:
            obj = library_object(path)
        except AttributeError:
            problems.append(f"{path} is gone")
            continue
        if expected is not None and str(inspect.signature(obj)) != expected:
            problems.append(f"{path} is now {inspect.signature(obj)}, read as {expected}")
    for path, names in contract.instance_attributes.items():
        try:
            cls = library_object(path)
        except AttributeError:
            problems.append(f"{path} is gone")
            continue
        missing = [name for name in names
                   if not hasattr(cls, name) and name not in assigned_attributes(cls)]
        if missing:
            problems.append(f"{path} instances have no {missing}")
    return problems


@pytest.mark.parametrize("module_name", SEAM_MODULES)
def test_every_member_read_exists_with_its_signature(module_name):
    problems = contract_problems(contract_of(module_name))
    assert not problems, (f"{module_name} bends these library members: {problems}; re-read the "
                          "library's source, adapt the module, then update its CONTRACT")


@pytest.mark.parametrize("module_name", SEAM_MODULES)
def test_each_library_read_has_its_version_and_pyproject_agrees(module_name):
    contract = contract_of(module_name)
    ranges = {Requirement(line).name: Requirement(line).specifier for line in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    libraries = {DISTRIBUTION_OF[path.split(".")[0]] for path in
                 [*contract.members, *contract.instance_attributes]}
    assert libraries <= set(contract.read_against), (
        f"{module_name} reads {sorted(libraries - set(contract.read_against))} without saying "
        "at which version")
    for distribution, read in contract.read_against.items():
        allowed = ranges[distribution]
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in allowed), (
            f"pyproject.toml lets {distribution} grow without bound, but {module_name} bends it")
        assert read in allowed, (
            f"{module_name} was read at {distribution} {read}, outside {allowed}")
        assert version(distribution) in allowed, (
            f"{distribution} {version(distribution)} is installed, outside pyproject's {allowed}")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_read(source: str) -> set[str]:
    """Private names (one underscore, not a dunder) read or written in `source`: `x._name`, and
    `getattr(x, "_name")`/`hasattr`/`setattr`. A `self._name` the module itself defines (a
    method of its own classes, an attribute it sets on `self`) is its own; the same name on any
    other object is not."""
    tree = ast.parse(source)
    own = {node.name for node in ast.walk(tree)
           if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    own |= {target.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
            and target.value.id == "self"}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if not (on_self and node.attr in own):
                used.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2 and \
                isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and is_private(node.args[1].value):
            used.add(node.args[1].value)
    return used


def unlisted_private_reads(module) -> set[str]:
    contract = module.CONTRACT
    listed = {path.rsplit(".", 1)[-1] for path in contract.members}
    listed |= {name for names in contract.instance_attributes.values() for name in names}
    return private_names_read(inspect.getsource(module)) - listed


@pytest.mark.parametrize("module_name", SEAM_MODULES)
def test_every_private_member_read_is_listed(module_name):
    unlisted = unlisted_private_reads(importlib.import_module(module_name))
    assert not unlisted, f"{module_name} reads {sorted(unlisted)}: add them to its CONTRACT"


def test_a_library_missing_a_member_fails_the_contract(monkeypatch):
    fake = types.ModuleType("fakelib")

    class Server:
        def kept(self, sid):
            pass

        def changed(self, sid, namespace):
            pass

    fake.Server = Server
    monkeypatch.setitem(sys.modules, "fakelib", fake)
    contract = Contract(read_against={"fakelib": "1.0"}, members={
        "fakelib.Server.kept": "(self, sid)", "fakelib.Server.gone": "(self)",
        "fakelib.Server.changed": "(self, sid)"}, instance_attributes={"fakelib.Server": ("x",)})

    assert contract_problems(contract) == [
        "fakelib.Server.gone is gone",
        "fakelib.Server.changed is now (self, sid, namespace), read as (self, sid)",
        "fakelib.Server instances have no ['x']"]


def test_a_private_read_missing_from_the_list_is_found():
    module = types.ModuleType("bends")
    module.CONTRACT = Contract(read_against={}, members={"lib.Server._listed": "(self)"})
    source = ("def f(server):\n    server._listed()\n    server._unlisted = 1\n"
              "    getattr(server, '_by_name', None)\n    server.manager._mine()\n"
              "class Own:\n    def g(self):\n        self._mine = 1\n        return self._mine\n")
    # `_mine` is the module's own on `self`, not on the manager
    assert private_names_read(source) - {"_listed"} == {"_unlisted", "_by_name", "_mine"}


def test_private_members_are_named_only_in_the_seam():
    private = {path.rsplit(".", 1)[-1] for name in SEAM_MODULES
               for path in contract_of(name).members if path.rsplit(".", 1)[-1].startswith("_")
               and not path.rsplit(".", 1)[-1].startswith("__")}
    found = []
    for folder in ("web", "common", "worker"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(path == seam or seam in path.parents for seam in SEAM_FILES):
                continue
            names = private_names_read(path.read_text()) & private
            found += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(names)]
    assert not found, f"library internals read outside the seam: {found}"


LIBRARY_OBJECTS = ("server", "sio_server", "eio", "manager")


def test_no_attribute_is_set_on_a_library_object_outside_the_seam():
    found = []
    for folder in ("web", "common", "worker"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(path == seam or seam in path.parents for seam in SEAM_FILES):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                targets = node.targets if isinstance(node, ast.Assign) else []
                for target in targets:
                    if isinstance(target, ast.Attribute) and (
                            (isinstance(target.value, ast.Name)
                             and target.value.id in LIBRARY_OBJECTS)
                            or (isinstance(target.value, ast.Attribute)
                                and target.value.attr in LIBRARY_OBJECTS)):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"attributes set on library objects outside web/upstream/: {found}"


def layers(wrapper, name: str) -> int | None:
    """How many of our callables stand between `wrapper` and the library's method `name`."""
    if inspect.ismethod(wrapper) and wrapper.__name__ == name and \
            not wrapper.__func__.__module__.startswith("web."):
        return 0
    if not getattr(wrapper, "__module__", "").startswith("web.") and \
            not type(wrapper).__module__.startswith("web."):
        return None
    inner = [cell.cell_contents for cell in (getattr(wrapper, "__closure__", None) or ())]
    if not inspect.isfunction(wrapper):
        inner += list(getattr(wrapper, "__dict__", {}).values())
    for each in inner:
        if callable(each) and each is not wrapper:
            found = layers(each, name)
            if found is not None:
                return 1 + found
    return None


def rebound_methods(obj) -> dict[str, int | None]:
    return {name: layers(value, name) for name, value in vars(obj).items()
            if callable(value) and callable(getattr(type(obj), name, None))}


def test_each_library_method_is_rebound_once_per_server():
    create_app(unit_settings(admin_ui_password="admin-ui-password-0123456789abcdef-0123"),
               async_mode="threading", use_message_queue=False)
    server = socketio.server
    for obj in (server, server.eio, server.manager):
        rebound = rebound_methods(obj)
        assert rebound and set(rebound.values()) == {1}, (
            f"{type(obj).__name__}: methods wrapped more than once, or not ours: {rebound}")

    # What the check catches: a feature wrapping a method the registry already wraps.
    manager = server.manager
    enter_room = manager.basic_enter_room

    def watch_rooms_again(*args, **kwargs):  # the shape of the chained wrappers this replaced
        return enter_room(*args, **kwargs)

    watch_rooms_again.__module__ = "web.presence"
    manager.basic_enter_room = watch_rooms_again
    assert rebound_methods(manager)["basic_enter_room"] == 2


def test_apply_is_idempotent_and_installs_each_subclass_once(app):
    import engineio.socket
    from geventwebsocket import handler

    from web.upstream.engineio_session import LimitedSocket
    from web.upstream.gevent_websocket import CappedWebSocket

    web.upstream.apply()
    web.upstream.apply()
    assert engineio.socket.Socket is LimitedSocket
    assert handler.WebSocket is CappedWebSocket
    assert LimitedSocket.__bases__[0].__module__ == "engineio.socket"
