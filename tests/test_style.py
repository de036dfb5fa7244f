"""ruff keeps the Python style (its configuration is in app/pyproject.toml): the test command covers it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "app" / "pyproject.toml"
TREES = ("app", "tests", "bench")


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--config", str(CONFIG), *TREES],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_ruff_finds_nothing():
    result = ruff("check", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_formatting_is_applied():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("source", "code"),
    [("import os\n", "F401"), ("def f(x=[]):\n    return x\n", "B006"), ("import sys\nimport os\n", "I001")],
)
def test_the_configuration_catches_what_it_should(tmp_path, source, code):
    # The rules are the configuration's, not ruff's defaults: a planted mistake must be reported.
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(CONFIG), "--output-format", "concise", str(planted)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert code in result.stdout
