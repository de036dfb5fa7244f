"""The longrun's `finish`: a failed proxy takes the container down with its exit code."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import FINISH_SCRIPT, requires_tools

pytestmark = requires_tools


@pytest.fixture
def s6(tmp_path: Path, scripts, supervisor):
    """s6-overlay's container results file and a halt that records it was called."""
    results = tmp_path / "exitcode"
    results.write_text("0\n")
    halted = tmp_path / "halted"
    halt = tmp_path / "halt"
    halt.write_text(f"#!/usr/bin/env bash\ntouch {halted}\n")
    halt.chmod(halt.stat().st_mode | stat.S_IXUSR)
    env = scripts.base_env(supervisor)
    env.update(S6_CONTAINER_RESULTS=str(results), S6_HALT=str(halt))

    async def finish(*args: str, container_code: str = "0"):
        results.write_text(f"{container_code}\n")
        halted.unlink(missing_ok=True)
        result = await scripts.run(FINISH_SCRIPT, env, *args)
        return result, results.read_text().strip(), halted.exists()

    return finish


async def test_failure_stops_the_container_with_its_code(s6):
    result, code, halted = await s6("3", "0")
    assert result.returncode == 0, result.output
    assert (code, halted) == ("3", True)
    assert "failed with exit code 3" in result.output


async def test_sigterm_stops_the_container(s6):
    _, code, halted = await s6("256", "15")
    assert (code, halted) == ("143", True)


async def test_other_signals_leave_the_restart_to_s6(s6):
    _, code, halted = await s6("256", "9")
    assert (code, halted) == ("137", False)


async def test_clean_exit_does_not_halt(s6):
    _, code, halted = await s6("0", "0")
    assert (code, halted) == ("0", False)


async def test_an_earlier_exit_code_is_kept(s6):
    _, code, halted = await s6("2", "0", container_code="5")
    assert (code, halted) == ("5", True)
