"""What README.md and docs/*.md name, checked against the tree as it is: file and directory paths,
links and their anchors, `make` targets, and the lists of a package's modules.

Each check is a function of a document's text and a repository root that returns its problems as
"doc:line: what is wrong" strings, so tests/unit/test_docs.py runs them on the real documents and
on made-up ones alike. Markdown is read only as far as these checks need: fenced and indented code
blocks, inline code spans (also across line breaks), links, ATX headings, HTML comments.

What counts as a path, so that URL paths, placeholders and dotted Python names are left alone:
a token with a `/` whose last part has a file extension (`web/app.py`), or, inside code, whose
first part exists at the repository's top (`deploy/kubernetes`, `web/static/vendor/`); a bare
file name (`test_fuzz.py`) only as a whole inline code span, found anywhere in the tree. Tokens
starting with `/` (`/api/emit`), URLs, `$VARIABLES` and npm scopes (`@socket.io/...`) are not
paths; a `<placeholder>` or `*` part ends a path, and what comes before it must exist.

A list of a package's modules that claims to be complete is marked by a comment on the line before
it, `<!-- modules: web/ -->`; the list is the block of lines up to the next blank line, and it
must name (in backticks, `app.py` or `web/app.py`) every .py module of the package but
`__init__.py` and every sub-package (`upstream/`), and no module that exists nowhere in the tree
(one that moved). Every top-level package needs such a list somewhere in the documents. A
package's `__init__.py` docstring that names three or more of the package's modules by file name
is such a list too.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Named by the documents, absent from a fresh checkout: each is made when the stack or a test runs.
RUN_TIME_PATHS = frozenset({
    ".venv",             # make install
    ".venv-loadtest",    # make loadtest
    "test-artifacts",    # the tests' screenshots, figures and kept logs
    "loadtest-results",  # make loadtest's reports
    "bench/results",     # make bench's JSON files
})

# Where a file named by its bare name is looked for: the tree minus what is installed or made.
NOT_SOURCE_DIRS = frozenset({".git", "__pycache__", ".pytest_cache", "node_modules"}) | {
    path for path in RUN_TIME_PATHS if "/" not in path}

EXTENSIONS = frozenset({
    "py", "md", "sh", "yml", "yaml", "toml", "json", "conf", "template", "lock", "mjs", "js",
    "css", "html", "png", "svg", "txt", "cfg", "ini", "example"})

MARKER = re.compile(r"<!--\s*modules:\s*(\S+?)\s*-->")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.I)
COMMENT = re.compile(r"<!--.*?-->", re.S)
TOKEN_SEPARATORS = re.compile(r"[\s`'\"()\[\]{},;|=:]+")
PLACEHOLDER = re.compile(r"[<>*…]|\.\.\.")
MAKE = re.compile(r"(?:^|(?<=[\s;&|(]))make((?:[ \t]+[a-z][a-z0-9_.-]*(?![\w=.-]))+)", re.M)
MAKE_RULE = re.compile(r"^([^\s:=#][^:=#]*?)\s*::?(?!=)", re.M)
# A module or sub-package named in a docstring: `app.py`, `upstream/`, not `common/broker.py`.
DOCSTRING_NAME = re.compile(r"(?<![\w./])([\w.]+\.py|\w+/)(?![\w/])")


@dataclass(frozen=True)
class Code:
    """Text inside code: a whole code block line, or one inline code span."""

    line: int
    text: str
    span: bool  # an inline code span, not a code block


@dataclass(frozen=True)
class Markdown:
    code: list[Code]
    prose: list[tuple[int, str]]  # (line, text) outside code, with the code spans blanked
    headings: list[tuple[int, str]]


def parse(text: str) -> Markdown:
    code: list[Code] = []
    prose: list[tuple[int, str]] = []
    headings: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []

    def end_paragraph() -> None:
        if not paragraph:
            return
        joined = "\n".join(line for _, line in paragraph)
        first = paragraph[0][0]
        for match in CODE_SPAN.finditer(joined):
            code.append(Code(first + joined.count("\n", 0, match.start()), match.group(2), True))
        blanked = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined)
        prose.extend(zip((number for number, _ in paragraph), blanked.split("\n"), strict=True))
        paragraph.clear()

    fence = None
    previous_blank = True
    previous_indented_code = False
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.lstrip().startswith(fence):
                fence = None
            else:
                code.append(Code(number, line, False))
            continue
        opening = FENCE.match(line)
        if opening:
            end_paragraph()
            fence = opening.group(1)
            previous_blank, previous_indented_code = False, False
            continue
        blank = not line.strip()
        indented = line.startswith(("    ", "\t")) and not blank
        if indented and (previous_blank or previous_indented_code) and not paragraph:
            code.append(Code(number, line, False))
            previous_blank, previous_indented_code = False, True
            continue
        previous_indented_code = previous_indented_code and blank
        previous_blank = blank
        heading = HEADING.match(line)
        if blank or heading:
            end_paragraph()
        if heading:
            headings.append((number, heading.group(2)))
            paragraph.append((number, line))
            end_paragraph()
        elif not blank:
            paragraph.append((number, line))
    end_paragraph()
    return Markdown(code, prose, headings)


# --- paths -----------------------------------------------------------------------------------


def tokens(text: str) -> Iterator[str]:
    for raw in TOKEN_SEPARATORS.split(COMMENT.sub(" ", text)):
        token = raw.lstrip("*").rstrip(".!?*").removeprefix("./")
        token = token.split("#", 1)[0].split("?", 1)[0]
        if token:
            yield token


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[1] if "." in name.strip(".") else ""


def path_candidate(token: str, root: Path, *, in_code: bool) -> str | None:
    """The part of `token` that must exist if it names a path of the repository, else None."""
    if token.startswith(("/", "@", "~", "-", "$")) or "$" in token or "%" in token:
        return None
    parts = token.rstrip("/").split("/")
    if "" in parts or "/" not in token:
        return None
    kept = []
    for part in parts:
        if PLACEHOLDER.search(part):
            break
        kept.append(part)
    if not kept:
        return None
    named_file = _extension(parts[-1]) in EXTENSIONS
    ours = (in_code and (root / parts[0]).exists()) or kept[0] in RUN_TIME_PATHS
    if not (named_file or ours):
        return None
    return "/".join(kept)


def is_run_time(path: str) -> bool:
    return any(path == known or path.startswith(known + "/") for known in RUN_TIME_PATHS)


def file_names(root: Path) -> set[str]:
    names = set()
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCE_DIRS and not d.startswith(".venv")]
        names.update(files)
        names.update(dirs)
    return names


def missing_paths(doc: str, text: str, root: Path = ROOT) -> list[str]:
    """Paths `doc` (relative to root) names in code, code spans or prose that do not exist."""
    markdown = parse(text)
    here = (root / doc).parent
    found: list[tuple[int, str]] = []
    bare: list[tuple[int, str]] = []
    for item in markdown.code:
        whole = item.text.strip()
        if item.span and "/" not in whole and _extension(whole) in EXTENSIONS \
                and re.fullmatch(r"[\w.-]+", whole):
            bare.append((item.line, whole))
            continue
        for token in tokens(item.text):
            path = path_candidate(token, root, in_code=True)
            if path:
                found.append((item.line, path))
    for number, line in markdown.prose:
        for token in tokens(LINK.sub(r"[\1]", line)):
            path = path_candidate(token, root, in_code=False)
            if path:
                found.append((number, path))
    problems = []
    for number, path in found:
        if not (is_run_time(path) or (root / path).exists() or (here / path).exists()):
            problems.append(f"{doc}:{number}: `{path}` does not exist")
    if bare:
        names = file_names(root)
        for number, name in bare:
            if name not in names and not is_run_time(name):
                problems.append(f"{doc}:{number}: no file is named `{name}`")
    return problems


# --- links and anchors -----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, without punctuation, spaces as '-'."""
    text = LINK.sub(r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    markdown = parse(text)
    seen: dict[str, int] = {}
    result = set()
    for _, heading in markdown.headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    for _, line in markdown.prose:
        result.update(HTML_ANCHOR.findall(line))
    return result


def link_targets(text: str) -> Iterator[tuple[int, str]]:
    """(line, target) of each inline link or image and each reference definition; a link may
    run over a line break."""
    prose = [""] * (len(text.splitlines()) + 1)
    for number, line in parse(text).prose:
        prose[number] = line
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
    joined = COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(prose))
    for match in LINK.finditer(joined):
        yield joined.count("\n", 0, match.start()), match.group(2)


def broken_links(doc: str, text: str, root: Path = ROOT) -> list[str]:
    """Links of `doc` to files that do not exist, or to headings their document does not have."""
    problems = []
    for number, target in link_targets(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in anchors(text):
                problems.append(f"{doc}:{number}: link to `{target}`: {doc} has no heading "
                                f"whose anchor is #{anchor}")
            continue
        file = (root / doc).parent / path
        if not file.exists():
            problems.append(f"{doc}:{number}: link to `{target}`: {path} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            problems.append(f"{doc}:{number}: link to `{target}`: "
                            f"{file.resolve().relative_to(root.resolve())} has no heading "
                            f"whose anchor is #{anchor}")
    return problems


# --- make targets ----------------------------------------------------------------------------


def makefile_targets(makefile: str) -> set[str]:
    makefile = re.sub(r"\\\n", " ", makefile)
    targets = set()
    for match in MAKE_RULE.finditer(makefile):
        targets.update(name for name in match.group(1).split() if "$" not in name)
    return targets


def named_make_targets(text: str) -> Iterator[tuple[int, str]]:
    for item in parse(text).code:
        for match in MAKE.finditer(item.text):
            for target in match.group(1).split():
                yield item.line, target


def unknown_make_targets(doc: str, text: str, makefile: str) -> list[str]:
    defined = makefile_targets(makefile)
    return [f"{doc}:{number}: `make {target}`: the Makefile has no target {target}"
            for number, target in named_make_targets(text) if target not in defined]


# --- module lists ----------------------------------------------------------------------------


def package_members(package: Path) -> set[str]:
    """Its modules (`app.py`) but __init__.py, and its sub-packages (`upstream/`): folders that
    hold Python files."""
    members = set()
    for child in package.iterdir():
        if child.name.startswith(".") or child.name in ("__init__.py", "__pycache__"):
            continue
        if child.is_file() and child.suffix == ".py":
            members.add(child.name)
        elif child.is_dir() and any(child.glob("*.py")):
            members.add(child.name + "/")
    return members


def module_lists(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, package, the list's text) for each `<!-- modules: package/ -->` marker."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        marker = MARKER.search(line)
        if not marker:
            continue
        block: list[str] = []
        for following in lines[index + 1:]:
            if not following.strip():
                if block:
                    break
                continue
            if MARKER.search(following):
                break
            block.append(following)
        yield index + 1, marker.group(1).strip("/"), "\n".join(block)


def named_members(package: str, listing: str) -> set[str]:
    """What a list names as members of `package`: `x.py`, `x/`, or the same under `package/`."""
    names = set()
    for span in CODE_SPAN.finditer(listing):
        for token in tokens(span.group(2)):
            name = token.removeprefix(package + "/")
            if re.fullmatch(r"[\w.-]+\.py|[\w.-]+/", name):
                names.add(name)
    return names


def _completeness(where: str, listing: str, members: set[str], named: set[str], root: Path
                  ) -> list[str]:
    """A list of a package's modules misses one, or names one that exists nowhere. Names of
    other files that exist are fine: a sub-package's (`test_fuzz.py`), another's (`conftest.py`)."""
    names = file_names(root)
    return [f"{where}: {listing} misses `{member}`" for member in sorted(members - named)] + [
        f"{where}: {listing} names `{name}`, which does not exist"
        for name in sorted(named - members) if name.rstrip("/") not in names]


def module_list_problems(where: str, package: str, listing: str, root: Path = ROOT) -> list[str]:
    folder = root / package
    if not (folder / "__init__.py").is_file() and not any(folder.glob("*.py")):
        return [f"{where}: lists the modules of {package}/, which is not a Python package"]
    return _completeness(where, f"the list of {package}/'s modules", package_members(folder),
                         named_members(package, listing), root)


def top_level_packages(root: Path = ROOT) -> list[str]:
    return sorted(child.name for child in root.iterdir()
                  if child.is_dir() and (child / "__init__.py").is_file())


def docstring_module_lists(root: Path = ROOT) -> Iterator[tuple[str, str, str]]:
    """(where, package, docstring) of each __init__.py whose docstring names three or more of its
    package's modules by file name."""
    for init in sorted(root.rglob("__init__.py")):
        relative = init.relative_to(root)
        if any(part in NOT_SOURCE_DIRS or part.startswith(".") for part in relative.parts):
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        named = set(DOCSTRING_NAME.findall(docstring))
        if len(named & package_members(init.parent)) >= 3:
            yield str(relative), str(relative.parent), docstring


def docstring_list_problems(where: str, package: str, docstring: str, root: Path = ROOT
                            ) -> list[str]:
    return _completeness(where, "its docstring's list of the package's modules",
                         package_members(root / package), set(DOCSTRING_NAME.findall(docstring)),
                         root)


def documents(root: Path = ROOT) -> list[str]:
    return ["README.md", *(str(path.relative_to(root)) for path in sorted(root.glob("docs/*.md")))]
