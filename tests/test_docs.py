"""The documentation in docs/: its examples run, its API reference is complete, its facts hold.

Like tests/test_readme.py for README: every Python code block of a Markdown page runs as
written, each in a fresh interpreter whose working directory is a temporary one, and a
block with a ``def test_`` in it runs under pytest. A block that cannot run here (it needs
a server or a proxy that only a real deployment has) is marked on the line just above its
fence with a MyST comment, ``% not-runnable: <why>``; there may be only a few.

None of this needs Sphinx: the reference is checked by reading its ``auto*`` directives.
Only the last test builds the site, and it is skipped where Sphinx is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import jmapws_sync as jws
import jmapws_sync.testing
from jmapws_sync import policy
from jmapws_sync._deflate import MIN_SIZE, offer
from jmapws_sync.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
SOURCES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts) + PAGES

#: Languages whose fenced blocks are Python examples.
PYTHON = frozenset({"python", "py", "python3"})
#: At most this many Python blocks may be marked not runnable.
MAX_NOT_RUNNABLE = 3
NOT_RUNNABLE = re.compile(r"^%\s*not-runnable:\s*(\S.*)$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


class Block(NamedTuple):
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_runnable: str | None  # the reason given, when the block is marked

    @property
    def label(self) -> str:
        return f"{self.page.relative_to(DOCS)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, outermost only (a fence inside a fence is content)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        language = match["info"].strip().split(" ")[0].lower() if match["info"].strip() else ""
        marker = NOT_RUNNABLE.match(lines[i - 1].strip()) if i > 0 else None
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        else:
            raise AssertionError(f"{page}:{i + 1}: a code fence is never closed")
        reason = marker.group(1) if marker else None
        blocks.append(Block(page, i + 1, language, "\n".join(body) + "\n", reason))
        i = j + 1
    return blocks


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
EXAMPLES = [b for b in BLOCKS if b.language in PYTHON]
RUNNABLE = [b for b in EXAMPLES if b.not_runnable is None]


# -- the examples --------------------------------------------------------------------------------


def test_the_docs_have_examples_and_few_are_not_runnable() -> None:
    """Every guide shows code; what is marked not runnable is rare and says why."""
    assert len(RUNNABLE) >= 20
    marked = [b for b in EXAMPLES if b.not_runnable is not None]
    assert len(marked) <= MAX_NOT_RUNNABLE, [b.label for b in marked]
    for page in PAGES:
        if page.parent.name == "howto":
            assert any(b.page == page for b in RUNNABLE), f"{page.name} has no runnable example"


def test_markers_stand_only_above_python_blocks() -> None:
    """A ``% not-runnable:`` line that is not directly above a Python block is a mistake."""
    marked_lines = {(b.page, b.line - 1) for b in EXAMPLES if b.not_runnable is not None}
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip().startswith("% not-runnable"):
                assert (page, n) in marked_lines, f"{page.name}:{n}: marker above no Python block"


def test_no_python_hides_in_rst_or_other_spellings() -> None:
    """Examples live in Markdown fences spelled ``python``, where the runner finds them."""
    for page in SOURCES:
        if page.suffix == ".rst":
            text = page.read_text(encoding="utf-8")
            assert not re.search(r"code-block::\s*py", text), f"{page.name}: Python in reST"
    for block in BLOCKS:
        assert block.language not in {"pycon", "ipython", "python-console"}, block.label
        if block.language in {"{code-block}", "{code}"}:
            raise AssertionError(f"{block.label}: use a plain ```python fence")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.label for b in RUNNABLE])
def test_doc_example_runs(block: Block, tmp_path: Path) -> None:
    """The example exits 0 (a pytest example: its tests pass), in a fresh interpreter."""
    if "def test_" in block.code:
        (tmp_path / "test_example.py").write_text(block.code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."]
    else:
        (tmp_path / "example.py").write_text(block.code, encoding="utf-8")
        command = [sys.executable, "example.py"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=90, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, f"{block.label}\n{done.stdout}\n{done.stderr}"


# -- the API reference ---------------------------------------------------------------------------

AUTODOC = re.compile(
    r"^\s*\.\. auto(?P<kind>module|class|exception|function|data|attribute|method)::\s+"
    r"(?P<name>[A-Za-z_][\w.]*)(?:\(.*\))?\s*$",
    re.MULTILINE,
)


def documented() -> list[str]:
    """Every name given to an ``auto*`` directive, in .rst pages and eval-rst blocks."""
    names: list[str] = []
    for page in SOURCES:
        names += [m["name"] for m in AUTODOC.finditer(page.read_text(encoding="utf-8"))]
    return names


def test_every_public_name_is_in_the_api_reference() -> None:
    """``jmapws_sync.__all__`` and ``jmapws_sync.testing.__all__``, each by an auto* directive."""
    names = documented()
    missing = [f"jmapws_sync.{n}" for n in jws.__all__ if f"jmapws_sync.{n}" not in names]
    missing += [
        f"jmapws_sync.testing.{n}"
        for n in jmapws_sync.testing.__all__
        if f"jmapws_sync.testing.{n}" not in names
    ]
    assert not missing, f"not in the API reference (docs/reference/): {missing}"


def resolve(name: str) -> object:
    """The object a dotted name refers to: the longest importable module, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_every_name_is_documented_once_and_exists() -> None:
    """No name twice (Sphinx would warn), none that the package does not have."""
    names = documented()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            raise AssertionError(f"{name} is documented but does not exist") from None


def test_the_reference_documents_the_testing_package_by_its_public_names() -> None:
    """The testing package's ``__all__`` is what a user imports; each name resolves."""
    for name in jmapws_sync.testing.__all__:
        assert hasattr(jmapws_sync.testing, name)


# -- facts the pages state -----------------------------------------------------------------------


def test_every_test_named_in_the_docs_exists() -> None:
    """Each ``file.py::name`` in the docs (a later ``::name`` is in the same file) exists."""
    named = 0
    for page in PAGES:
        current = ""
        for cell in re.findall(r"`([^`\n]+)`", page.read_text(encoding="utf-8")):
            if "::" not in cell or " " in cell:
                continue
            module, _, name = cell.partition("::")
            current = module or current
            files = sorted((ROOT / "tests").rglob(current))  # tests/ or tests/interop/
            assert len(files) == 1, f"{page.name}: no single tests file {current}: {files}"
            source = files[0].read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"{page.name}: {current}::{name} does not exist"
            named += 1
    assert named >= 40


def test_the_compression_page_states_the_offer_the_code_makes() -> None:
    """The offer and the size under which nothing is compressed, as the code has them."""
    text = (DOCS / "howto" / "compression.md").read_text(encoding="utf-8")
    assert offer() in text
    assert f"under {MIN_SIZE} bytes" in text


def test_the_retry_table_agrees_with_classify() -> None:
    """Each close code in the table of explanation/retries.md gets the verdict it shows."""
    text = (DOCS / "explanation" / "retries.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| close (\d{4}) [^|]*\| (retry|fatal|reauth) \|", text, re.MULTILINE)
    assert len(rows) >= 12
    for code, verdict in rows:
        error = (
            jws.AuthenticationError("", close_code=1008)
            if code == "1008"
            else jws.ConnectionClosedError(int(code))
        )
        assert policy.classify(error).value == verdict, f"close {code}"


def test_the_cli_page_shows_every_subcommand() -> None:
    """A ``cli-help`` directive for the command and for each of its subcommands."""
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"^```\{cli-help\}[ ]*(\S*)$", text, re.MULTILINE))
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert shown == {"", *sub.choices}


@pytest.mark.timeout(300)
def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    """``sphinx-build -W``: every warning is an error (the docs extra)."""
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed: pip install -e '.[docs]' to build the docs")
    for extension in ("furo", "myst_parser"):
        if importlib.util.find_spec(extension) is None:
            pytest.skip(f"{extension} is not installed: pip install -e '.[docs]'")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"),
            *("-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_example_lines_fit_the_page() -> None:
    """At most 88 characters a line: a code block then needs no scrolling on a desktop."""
    long = [
        f"{b.label}+{n}"
        for b in EXAMPLES
        for n, line in enumerate(b.code.splitlines(), start=1)
        if len(line) > 88
    ]
    assert not long, long
