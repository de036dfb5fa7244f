"""The s6-rc service tree under rootfs/etc/s6-overlay/s6-rc.d: its shape, and s6-rc-compile when
the compiler is installed (Debian/Alpine package "s6-rc")."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOTFS, S6

SHEBANG = "#!/command/with-contenv bashio\n"
# Defined by s6-overlay itself: services may depend on "base"; "user" is the bundle started at boot.
PROVIDED = {"base"}


def services() -> dict[str, str]:
    """Service name -> type, for every service the add-on defines (not the "user" bundle)."""
    found = {}
    for path in sorted(S6.iterdir()):
        if path.name == "user":
            continue
        found[path.name] = (path / "type").read_text().strip()
    return found


def dependencies(name: str) -> set[str]:
    folder = S6 / name / "dependencies.d"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_the_expected_services():
    assert services() == {"wyoming-openai": "longrun", "discovery": "oneshot", "openai-api": "longrun"}


def test_every_service_is_started():
    started = {p.name for p in (S6 / "user" / "contents.d").iterdir()}
    assert started == set(services())
    assert not (S6 / "user" / "type").exists(), "s6-overlay defines the user bundle itself"


def test_types_and_scripts():
    for name, kind in services().items():
        folder = S6 / name
        assert (folder / "type").read_text() == f"{kind}\n"
        if kind == "longrun":
            for script in ("run", "finish"):
                path = folder / script
                assert path.read_text().startswith(SHEBANG), path
                assert os.access(path, os.X_OK), path
        elif kind == "oneshot":
            command = (folder / "up").read_text().strip()
            assert "\n" not in command
            target = ROOTFS / command.lstrip("/")
            assert command == f"/etc/s6-overlay/s6-rc.d/{name}/run"
            assert target.read_text().startswith(SHEBANG)
            assert os.access(target, os.X_OK)


def test_dependencies_exist_and_have_no_cycle():
    known = set(services()) | PROVIDED
    for name in services():
        for dependency in dependencies(name):
            assert dependency in known, f"{name} depends on unknown {dependency}"
            assert (S6 / name / "dependencies.d" / dependency).stat().st_size == 0

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"dependency cycle: {' -> '.join((*trail, name))}"
        for dependency in dependencies(name) - PROVIDED:
            visit(dependency, (*trail, name))

    for name in services():
        visit(name, ())


def test_order():
    assert dependencies("wyoming-openai") == {"base"}
    assert dependencies("discovery") == {"wyoming-openai"}
    # The OpenAI-compatible API needs nothing from the proxy and the proxy nothing from it.
    assert dependencies("openai-api") == {"base"}


@pytest.mark.skipif(not shutil.which("s6-rc-compile"), reason="s6-rc-compile not installed (package s6-rc)")
def test_s6_rc_compiles(tmp_path: Path):
    source = tmp_path / "source"
    shutil.copytree(S6, source)
    # What s6-overlay adds at boot: the "base" bundle and the "user" bundle's type.
    (source / "base" / "contents.d").mkdir(parents=True)
    (source / "base" / "type").write_text("bundle\n")
    (source / "user" / "type").write_text("bundle\n")
    result = subprocess.run(
        ["s6-rc-compile", "-v", "2", str(tmp_path / "compiled"), str(source)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
