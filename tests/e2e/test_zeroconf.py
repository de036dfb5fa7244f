"""Zeroconf: with --zeroconf, Home Assistant discovers our server, in a private network namespace.

The namespace has only a loopback interface, with multicast switched on and routed to it, so the
mDNS traffic of the pair never leaves it (and never reaches the machine's real network).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from e2e_stack import home_assistant_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

HERE = Path(__file__).resolve().parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@pytest.fixture
def namespace():
    """A fresh network namespace with only loopback, multicast on; skipped where namespaces are not permitted."""
    home_assistant_or_skip()
    if shutil.which("ip") is None:
        pytest.skip("zeroconf test needs iproute2's `ip` to make a private network namespace")
    name = f"wyo-e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        reason = f"network namespaces are not permitted here (`ip netns add` said: {made.stderr.strip()})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") and os.geteuid() == 0:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        for command in (
            ("link", "set", "lo", "up"),
            ("link", "set", "lo", "multicast", "on"),
            ("route", "add", "224.0.0.0/4", "dev", "lo"),
        ):
            _ip("-n", name, *command)
        yield name
    finally:
        # Whatever the run left in there (a driver killed on time-out leaves its children) goes too.
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", name, check=False)


async def test_home_assistant_discovers_the_server_announced_with_zeroconf(namespace: str, tmp_path: Path):
    zeroconf_name = f"e2e-{uuid.uuid4().hex[:8]}"
    driver = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, str(HERE / "netns_zeroconf.py"), str(tmp_path), zeroconf_name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ.copy(),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(driver.communicate(), 110)
    except TimeoutError:
        driver.kill()
        await driver.wait()
        raise AssertionError(f"the discovery run did not finish; logs in {tmp_path}") from None
    assert driver.returncode == 0, f"{err.decode()[-4000:]}\nlogs in {tmp_path}"
    outcome = json.loads(out.decode().strip().splitlines()[-1])
    flow = outcome["flow"]
    assert flow["handler"] == "wyoming" and flow["step_id"] == "zeroconf_confirm", flow
    assert flow["context"]["source"] == "zeroconf", flow
    # Home Assistant names the flow after our zeroconf announcement and our program's name.
    assert flow["context"]["unique_id"].startswith(f"{zeroconf_name}._wyoming._tcp.local."), flow
    assert outcome["result_type"] == "create_entry", outcome
    assert outcome["entry"]["source"] == "zeroconf" and outcome["entry"]["state"] == "loaded", outcome
    assert {e.split(".")[0] for e in outcome["entities"]} >= {"stt", "tts"}, outcome
