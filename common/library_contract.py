"""What a module that bends a library reads of it: the contract its overrides rely on.

Every module of web/upstream/ (and web/gunicorn_worker.py, common/broker.py) starts with a
`CONTRACT`: the versions it was read against and each library member it reads or overrides, with
the signature it had. tests/unit/test_upstream_contract.py checks each one against the installed
libraries and against pyproject.toml's version ranges, and checks the module's source for private
members that are read but not listed, so an upgrade fails in seconds naming the module to re-read.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Contract:
    # distribution name -> the version its members were read at
    read_against: dict[str, str]
    # "module.Class.member" -> its signature when read, or None for an attribute or a class
    members: dict[str, str | None]
    # "module.Class" -> attributes its instances have (not visible on the class)
    instance_attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
