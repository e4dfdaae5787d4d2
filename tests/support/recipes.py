"""The docs' step-by-step recipes, applied exactly as written.

A step is a fenced code block right after a comment naming its recipe, the file it changes and
where, for example:

    <!-- recipe add-an-event: web/events.py, end of file -->

Where a block goes:
  - `end of file`: appended, after two blank lines;
  - `end of class NAME`: after the last line of the top-level class NAME (the block carries the
    body's indentation);
  - `merged into its imports`: the block is one `from MODULE import NAMES`; the names join the
    file's own top-level import from MODULE, in the order ruff's import sorting wants.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

STEP = re.compile(r"<!-- recipe (?P<recipe>[\w-]+): (?P<path>\S+), (?P<place>[^>]*?) -->\n"
                  r"```\w*\n(?P<code>.*?)```", re.S)
END_OF_CLASS = re.compile(r"end of class (\w+)")
LINE_LENGTH = 100  # pyproject.toml's [tool.ruff]


@dataclass(frozen=True)
class Step:
    path: str
    place: str
    code: str


def recipe_steps(markdown: str, recipe: str) -> list[Step]:
    return [Step(match["path"], match["place"], match["code"])
            for match in STEP.finditer(markdown) if match["recipe"] == recipe]


def copy_tracked_files(repository: Path, destination: Path) -> Path:
    """The files git tracks, as they are in the work tree (uncommitted changes included)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repository, capture_output=True,
                            check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = repository / name
        if source.is_file():  # a tracked file deleted in the work tree is not there
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def apply_step(root: Path, step: Step) -> None:
    target = root / step.path
    source = target.read_text()
    if step.place == "end of file":
        changed = source.rstrip("\n") + "\n\n\n" + step.code
    elif match := END_OF_CLASS.fullmatch(step.place):
        changed = _insert_after_line(source, _top_level(source, ast.ClassDef, match[1]).end_lineno,
                                     step.code)
    elif step.place == "merged into its imports":
        changed = _merge_import(source, step.code)
    else:
        raise ValueError(f"{step.path}: unknown place {step.place!r}")
    target.write_text(changed)


def _top_level(source: str, kind: type, name: str):
    for node in ast.parse(source).body:
        if isinstance(node, kind) and getattr(node, "name", None) == name:
            return node
    raise ValueError(f"no top-level {kind.__name__} {name}")


def _insert_after_line(source: str, line_number: int, code: str) -> str:
    lines = source.splitlines(keepends=True)
    return "".join(lines[:line_number]) + code + "".join(lines[line_number:])


def _import_order(name: str) -> tuple:
    """ruff's isort order within one import: constants, then classes, then the rest."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[0].isupper() else 2
    return kind, name.lower(), name


def _merge_import(source: str, code: str) -> str:
    (wanted,) = ast.parse(code).body
    if not isinstance(wanted, ast.ImportFrom) or any(alias.asname for alias in wanted.names):
        raise ValueError(f"not a plain `from MODULE import NAMES`: {code!r}")
    existing = next((node for node in ast.parse(source).body
                     if isinstance(node, ast.ImportFrom) and node.module == wanted.module
                     and node.level == 0), None)
    if existing is None:
        raise ValueError(f"the file has no `from {wanted.module} import` to merge into")
    names = sorted({alias.name for alias in (*existing.names, *wanted.names)}, key=_import_order)
    one_line = f"from {wanted.module} import {', '.join(names)}"
    if existing.end_lineno == existing.lineno and len(one_line) <= LINE_LENGTH:
        merged = one_line + "\n"
    else:
        merged = f"from {wanted.module} import (\n" + "".join(f"    {n},\n" for n in names) + ")\n"
    lines = source.splitlines(keepends=True)
    return "".join(lines[:existing.lineno - 1]) + merged + "".join(lines[existing.end_lineno:])
