"""README's Python examples run as written (each in a fresh interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_examples() -> None:
    """README carries the examples the brief asks for."""
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", [b for b in BLOCKS if "def test_" not in b])
def test_readme_example_runs(code: str) -> None:
    """The example exits 0 within 60 s."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_readme_pytest_example_passes(tmp_path: Path) -> None:
    """The pytest example in README passes under pytest."""
    (code,) = [b for b in BLOCKS if "def test_" in b]
    (tmp_path / "test_example.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_test_named_in_the_guarantees_table_exists() -> None:
    """README's guarantees point at test functions that exist (`file.py::name`)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Guarantees") : text.index("## Performance")]
    current = ""
    named = 0
    for cell in re.findall(r"`([^`]+)`", section):
        if "::" not in cell:
            continue
        module, name = cell.split("::")
        current = module or current
        source = (README.parent / "tests" / current).read_text(encoding="utf-8")
        assert f"def {name}(" in source, f"{current}::{name} is named in README but missing"
        named += 1
    assert named >= 20
