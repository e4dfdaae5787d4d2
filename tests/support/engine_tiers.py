"""Tiers that need a container engine run only when their folder is named on the command line.

`make test` (pytest tests) runs on machines without an engine; tests/cluster and tests/swarm are
their own CI steps (make test-cluster, make test-swarm), like tests/compose. Their conftest sets
`pytest_ignore_collect = only_when_named(Path(__file__).parent)`, so `pytest tests` leaves them out
and `pytest tests/cluster` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def only_when_named(folder: Path) -> Callable[[Path, pytest.Config], bool | None]:
    folder = folder.resolve()

    def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
        for arg in config.args:
            named = (config.invocation_params.dir / arg.split("::")[0]).resolve()
            if named == folder or folder in named.parents:
                return None
        return True

    return pytest_ignore_collect
