"""docs/events.md's "Add an event" and "Add a job", followed as written: their code blocks are
applied where the doc says, in a copy of the repository, and the tests that must keep passing, the
recipe's own test among them, run there with this Python. A step missing from the doc, or code
that does not work or does not pass ruff, fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from common.contract import Event
from common.jobs import Job
from tests.support.recipes import apply_step, copy_tracked_files, recipe_steps

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"

# Run in the copy beside the recipe's tests: what the change must have added, which the recipe's
# own test might not check. NAMES_BEFORE holds the contract's names before the recipe.
ADDED_EVENT_IS_HANDLED = '''
import json, os
from common.contract import MAIN_NAMESPACE, Event
from web.extensions import socketio

def test_every_event_the_recipe_added_has_a_handler(app):
    before = set(json.loads(os.environ["NAMES_BEFORE"])["events"])
    added = {value for name, value in vars(Event).items() if name.isupper()} - before
    assert added, "the recipe added no name to Event"
    assert added <= set(socketio.server.handlers[MAIN_NAMESPACE]), "no handler for it"
'''
ADDED_JOB_IS_REGISTERED = '''
import json, os
from common.jobs import Job
from worker.jobs import JOBS

def test_every_job_the_recipe_added_has_a_function():
    before = set(json.loads(os.environ["NAMES_BEFORE"])["jobs"])
    added = {value for name, value in vars(Job).items() if name.isupper()} - before
    assert added, "the recipe added no name to Job"
    assert added <= set(JOBS), "no function registered for it"
'''
THIS_IS_THE_COPY = '''
from pathlib import Path
import common.contract

def test_the_code_under_test_is_the_copy():
    assert Path(common.contract.__file__).resolve().is_relative_to(Path.cwd().resolve())
'''

# recipe -> (the tests its change must keep passing, beside its own; what it must have added)
RECIPES = {
    "add-an-event": (["tests/unit/test_main_namespace.py", "tests/unit/test_page.py"],
                     ADDED_EVENT_IS_HANDLED),
    "add-a-job": (["tests/unit/test_worker_jobs.py"], ADDED_JOB_IS_REGISTERED),
}


def names_of(contract: type) -> list[str]:
    return sorted(value for name, value in vars(contract).items() if name.isupper())


def passed_tests(junit_xml: Path) -> set[str]:
    return {case.get("name") for case in ET.parse(junit_xml).iter("testcase")
            if not any(child.tag in ("failure", "error", "skipped") for child in case)}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_following_the_recipe_as_written_gives_a_working_change(recipe, tmp_path):
    kept_passing, added_check = RECIPES[recipe]
    steps = recipe_steps(DOC.read_text(), recipe)
    assert steps, f"docs/events.md has no steps marked `<!-- recipe {recipe}: ... -->`"
    own_tests = [name for step in steps if step.path.startswith("tests/")
                 for name in re.findall(r"^def (test_\w+)", step.code, re.M)]
    assert own_tests, f"the recipe {recipe} adds no test"

    copy = copy_tracked_files(ROOT, tmp_path / "repository")
    for step in steps:
        apply_step(copy, step)
    (copy / "tests" / "unit" / "test_recipe_added.py").write_text(added_check + THIS_IS_THE_COPY)

    changed = sorted({step.path for step in steps})
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *changed],
                          cwd=copy, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, f"ruff, after the recipe:\n{lint.stdout}{lint.stderr}"

    tests = sorted({*kept_passing, *(path for path in changed if path.startswith("tests/")),
                    "tests/unit/test_recipe_added.py"})
    report = tmp_path / "junit.xml"
    names_before = {"events": names_of(Event), "jobs": names_of(Job)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         *tests], cwd=copy, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NAMES_BEFORE": json.dumps(names_before)})
    assert run.returncode == 0, f"the tests, after the recipe:\n{run.stdout[-6000:]}{run.stderr}"
    passed = passed_tests(report)
    missing = [name for name in own_tests if name not in passed]
    assert not missing, f"the recipe's own tests did not pass: {missing}"
