"""README.md and docs/*.md cannot go stale silently: every path they name exists, every link and
its anchor resolves, every `make` target they name is in the Makefile, and every list of a
package's modules (marked `<!-- modules: web/ -->`) names all of them. The tree is read as it is
when the test runs. How text is read as paths and lists: tests/support/docs.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import docs

MAKEFILE = (docs.ROOT / "Makefile").read_text()
DOCUMENTS = docs.documents()


def _read(doc: str) -> str:
    return (docs.ROOT / doc).read_text()


def _marked_lists() -> list[tuple[str, str, str]]:
    return [(f"{doc}:{line}", package, listing)
            for doc in DOCUMENTS for line, package, listing in docs.module_lists(_read(doc))]


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_path_named_exists(doc):
    problems = docs.missing_paths(doc, _read(doc))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_link_and_anchor_resolves(doc):
    problems = docs.broken_links(doc, _read(doc))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_make_target_named_is_defined(doc):
    problems = docs.unknown_make_targets(doc, _read(doc), MAKEFILE)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("where", "package", "listing"), _marked_lists(),
                         ids=[f"{where} {package}/" for where, package, _ in _marked_lists()])
def test_marked_module_list_names_every_module(where, package, listing):
    problems = docs.module_list_problems(where, package, listing)
    assert not problems, "\n".join(problems)


def test_every_top_level_package_has_a_module_list():
    listed = {package for _, package, _ in _marked_lists()}
    unlisted = [package for package in docs.top_level_packages() if package not in listed]
    assert not unlisted, (
        f"no list of the modules of {', '.join(p + '/' for p in unlisted)} in README.md or "
        "docs/: add one (a table or bullets, one module each) after a line "
        "`<!-- modules: name/ -->` where the package is described")


@pytest.mark.parametrize(("where", "package", "docstring"), list(docs.docstring_module_lists()),
                         ids=[where for where, _, _ in docs.docstring_module_lists()])
def test_package_docstring_that_lists_modules_names_every_module(where, package, docstring):
    problems = docs.docstring_list_problems(where, package, docstring)
    assert not problems, "\n".join(problems)


# --- the checks themselves, on made-up documents and a made-up tree -------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("web/__init__.py", "web/app.py", "web/events.py", "web/chat.py", "web/drain.py",
                 "web/upstream/__init__.py", "web/upstream/engineio.py", "web/static/app.js",
                 "tests/conftest.py", "tests/unit/test_fuzz.py", "nginx/socketio.conf.template"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/design.md").write_text(
        "# Design\n\n## Sticky sessions through the session id\n\n## Containers (compose.yml)\n")
    (tmp_path / "README.md").write_text("# Stack\n\n## Security\n")
    return tmp_path


def _doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.mark.parametrize(("text", "missing"), [
    ("Every override is in `web/upstream.py`.", "web/upstream.py"),
    ("Its test is tests/unit/test_recovery.py, in prose.", "tests/unit/test_recovery.py"),
    ("```sh\ndeploy/compose/rolling-update.sh   # one replica at a time\n```",
     "deploy/compose/rolling-update.sh"),
    ("Run it:\n\n    .venv/bin/python tests/support/clients.py\n", "tests/support/clients.py"),
    ("A code span `across a\nline break to web/gone.py` counts.", "web/gone.py"),
    ("`COMPOSE_FILE=compose.yml:deploy/compose/cluster.yml`", "deploy/compose/cluster.yml"),
    ("The fuzz test (`test_hypothesis.py`).", "test_hypothesis.py"),
    ("Per module: `gone/<name>.py`.", "gone"),
    ("The folder `web/templates/`.", "web/templates"),
])
def test_a_missing_path_is_found(tree, text, missing):
    problems = docs.missing_paths("README.md", _doc(text), tree)
    assert len(problems) == 1 and f"`{missing}`" in problems[0], problems


def test_what_is_not_a_repository_path_is_left_alone(tree):
    text = _doc("""
        `POST /api/emit`, `/admin/`, `GET /api/users/<id>/connections`, `/proc/<pid>/stat`,
        `web.gunicorn_worker.ReplicaWorker`, `engineio.socket.Socket`, `10.0.0.7.5000.<random>`,
        `@socket.io/admin-ui`, `"$API_URL/emit"`, `amqp://guest:guest@127.0.0.1:<port>//`,
        http://127.0.0.1:8080/api, nginx nginx/1.22.1, 10.231.0.0/16, 7946/tcp+udp, p50/p99,
        and/or, Node.js, `socket.io`, `web/<module>.py`, `web/static/app.js`, `web/upstream/`,
        `tests/unit/test_fuzz.py::test_one`, `test_fuzz.py`, `web/app.py`'s factory.

        Made at run time: `.venv/bin/python -m worker`, `test-artifacts/soak.json`,
        `loadtest-results/<stamp>-<scenario>.json`, `bench/results/<stamp>.json`.

        ```sh
        curl -H 'Content-Type: application/json' "$API_URL/emit"
        cp .env.example .env && .venv/bin/python push.py
        ```
        """)
    assert docs.missing_paths("README.md", text, tree) == []


@pytest.mark.parametrize(("doc", "text", "problem"), [
    ("README.md", "[the design](docs/nothere.md)", "docs/nothere.md does not exist"),
    ("README.md", "[sessions](docs/design.md#sticky-sessions)", "#sticky-sessions"),
    ("docs/events.md", "[benchmarks](docs/design.md)", "docs/design.md does not exist"),
    ("docs/events.md", "[bounds](../README.md#limits)", "#limits"),
    ("README.md", "[here](#quick-start)\n\n## Quick start!\n\n[again](#quick-start-1)",
     "#quick-start-1"),
    ("README.md", "[ref]: docs/gone.md", "docs/gone.md does not exist"),
])
def test_a_broken_link_or_anchor_is_found(tree, doc, text, problem):
    problems = docs.broken_links(doc, _doc(text), tree)
    assert len(problems) == 1 and problem in problems[0], problems


def test_links_that_resolve_are_left_alone(tree):
    text = _doc("""
        [sticky](design.md#sticky-sessions-through-the-session-id), [containers](
        design.md#containers-composeyml), [security](../README.md#security), [top](#events),
        [docs](https://socket.io/docs/v4/admin-ui/), [mail](mailto:ops@example.org),
        ![figure](design.md)

        # Events

        `[not a link](nowhere.md)`

        ```md
        [not a link either](nowhere.md)
        ```
        """)
    assert docs.broken_links("docs/events.md", text, tree) == []


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Containers (docker-compose.yml)", "containers-docker-composeyml"),
    ("The broker manager: why not the stock `KombuManager`",
     "the-broker-manager-why-not-the-stock-kombumanager"),
    ("`make bench`: this stack, the recipe and Node socket.io side by side",
     "make-bench-this-stack-the-recipe-and-node-socketio-side-by-side"),
    ("Memory per idle connection, after (2026-12-01)",
     "memory-per-idle-connection-after-2026-12-01"),
    ("Deploys and scaling down: the drain", "deploys-and-scaling-down-the-drain"),
    ("**What** [survives](x.md) my_event", "what-survives-my_event"),
])
def test_anchors_follow_githubs_slugs(heading, anchor):
    assert docs.slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors():
    assert docs.anchors("## Limits\n\ntext\n\n## Limits\n\n```\n## not a heading\n```\n") == {
        "limits", "limits-1"}


MADE_UP_MAKEFILE = _doc("""
    .PHONY: run test-unit
    VENV ?= .venv
    CLUSTER := COMPOSE_FILE=a.yml:b.yml
    $(VENV)/.installed: requirements/dev.lock
    \ttouch $@
    run: $(VENV)/.installed ## run the stack
    \tpython -m scripts.stack
    test-unit lint: ## two targets on one line
    \tpytest tests/unit
    """)


def test_makefile_targets_are_its_rules():
    assert docs.makefile_targets(MADE_UP_MAKEFILE) == {".PHONY", "run", "test-unit", "lint"}


@pytest.mark.parametrize(("text", "target"), [
    ("`make bench` measures it.", "bench"),
    ("`make test-unit bench`", "bench"),
    ("```sh\nmake loadtest URL=http://127.0.0.1:8080   # a running stack\n```", "loadtest"),
    ("Or:\n\n    make up REPLICAS=5\n", "up"),
    ("```sh\n# = COMPOSE_FILE=a.yml make up-cluster\n```", "up-cluster"),
])
def test_an_undefined_make_target_is_found(text, target):
    problems = docs.unknown_make_targets("README.md", _doc(text), MADE_UP_MAKEFILE)
    assert len(problems) == 1 and f"`make {target}`" in problems[0], problems


def test_defined_make_targets_and_prose_are_left_alone():
    text = _doc("""
        `make run REPLICAS=5`, `make test-unit`, `make` alone lists them; make jobs idempotent.

        ```sh
        make lint && make run PORT=8081
        cmake --build .
        ```
        """)
    assert docs.unknown_make_targets("README.md", text, MADE_UP_MAKEFILE) == []


def _lists(text: str, tree: Path) -> list[str]:
    return [problem for line, package, listing in docs.module_lists(_doc(text))
            for problem in docs.module_list_problems(f"doc:{line}", package, listing, tree)]


@pytest.mark.parametrize(("text", "problem"), [
    ("""
     <!-- modules: web/ -->
     | module | what |
     | --- | --- |
     | `app.py` | the factory |
     | `events.py`, `chat.py` | handlers |
     | `drain.py` | the drain |
     """, "misses `upstream/`"),
    ("""
     <!-- modules: web/ -->
     - `web/app.py`, `web/events.py`, `web/chat.py`: the app
     - `web/upstream/`: the seam

     - `web/drain.py`: after the blank line, so not part of the list
     """, "misses `drain.py`"),
    ("""
     <!-- modules: web/ -->
     `app.py`, `events.py`, `chat.py`, `drain.py`, `upstream/`, `upstream.py` (moved)
     """, "names `upstream.py`, which does not exist"),
    ("""
     <!-- modules: nginx/ -->
     `socketio.conf.template`
     """, "not a Python package"),
])
def test_an_incomplete_or_stale_module_list_is_found(tree, text, problem):
    problems = _lists(text, tree)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_complete_module_list_passes(tree):
    text = """
        Text before.
        <!-- modules: web/ -->
        | `web/app.py` | the factory, see `common/settings.py` and `web/static/app.js` |
        | `events.py`, `chat.py` | handlers |
        | `drain.py` | the drain; `upstream/` the seam, one module per library |
        | tested in `test_fuzz.py`, a file of another package |

        <!-- modules: web/upstream/ -->
        - `engineio.py`
        """
    assert _lists(text, tree) == []


def test_a_package_docstring_that_lists_modules_is_held_complete(tree):
    (tree / "web/__init__.py").write_text(_doc('''
        """The web replica.

          app.py        the factory
          events.py, chat.py    handlers
          upstream.py   the seam (moved to a package since)

        conftest.py files only declare fixtures.
        """
        '''))
    found = list(docs.docstring_module_lists(tree))
    assert [(where, package) for where, package, _ in found] == [("web/__init__.py", "web")]
    problems = docs.docstring_list_problems(*found[0], tree)
    listing = "web/__init__.py: its docstring's list of the package's modules"
    assert sorted(problems) == [f"{listing} misses `drain.py`", f"{listing} misses `upstream/`",
                                f"{listing} names `upstream.py`, which does not exist"]
