"""The library internals web/upstream.py overrides are still there, as they were when it was read.

Fails in seconds after an upgrade of python-engineio, python-socketio, Flask-SocketIO or
gevent-websocket, naming the module to re-read before changing the pinned versions.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version

import pytest

from web import upstream
from web.extensions import socketio

REREAD = ("web/upstream.py overrides internals of this library; re-read the library's source for "
          "the members listed in its docstring, adapt the overrides, then update")


def library_object(path: str):
    """The object at `path` as the library defines it (our own subclasses are looked through)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        break
    for name in parts[split:]:
        obj = getattr(obj, name)
        while inspect.isclass(obj) and obj.__module__ == upstream.__name__:
            obj = obj.__bases__[0]  # rebound by upstream.apply(): check what it replaced
    return obj


@pytest.mark.parametrize("distribution", sorted(upstream.VERSIONS_READ))
def test_installed_versions_are_the_ones_read(distribution):
    read = upstream.VERSIONS_READ[distribution]
    assert version(distribution) == read, (
        f"{distribution} is {version(distribution)}, {REREAD} VERSIONS_READ ({read}) and the "
        "upper bound in pyproject.toml")


@pytest.mark.parametrize("path", sorted(upstream.MEMBERS_READ))
def test_every_member_read_exists_with_its_signature(path):
    try:
        obj = library_object(path)
    except AttributeError:
        pytest.fail(f"{path} is gone; {REREAD} MEMBERS_READ", pytrace=False)
    expected = upstream.MEMBERS_READ[path]
    if expected is not None:
        assert str(inspect.signature(obj)) == expected, (
            f"{path} is now {inspect.signature(obj)}; {REREAD} MEMBERS_READ")


@pytest.mark.parametrize("path", sorted(upstream.MEMBERS_READ) + sorted(
    upstream.INSTANCE_ATTRIBUTES_READ))
def test_the_docstring_lists_every_member_read(path):
    owner, _, member = path.rpartition(".")
    assert member in upstream.__doc__ and owner.split(".")[0] in upstream.__doc__, (
        f"{path} is in MEMBERS_READ but not in web/upstream.py's docstring")


def test_instance_attributes_read_exist(app):
    server = socketio.server
    session = library_object("engineio.socket.Socket")(server.eio, "contract-check")
    instances = {"engineio.socket.Socket": session, "socketio.server.Server": server,
                 "socketio.base_manager.BaseManager": server.manager,
                 "engineio.server.Server": server.eio}
    for path, names in upstream.INSTANCE_ATTRIBUTES_READ.items():
        missing = [name for name in names if not hasattr(instances[path], name)]
        assert not missing, f"{path} has no {missing}; {REREAD} INSTANCE_ATTRIBUTES_READ"


def test_apply_is_idempotent_and_installs_each_subclass_once(app):
    import engineio.socket
    from geventwebsocket import handler

    upstream.apply()
    upstream.apply()
    assert engineio.socket.Socket is upstream.LimitedSocket
    assert handler.WebSocket is upstream.CappedWebSocket
    assert upstream.LimitedSocket.__bases__[0].__module__ == "engineio.socket"
