"""yamllint on every YAML file, shellcheck on every script, hadolint on every Dockerfile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ADDON, REPO, shell_files, tool

HERE = Path(__file__).resolve().parent
YAMLLINT_CONFIG = HERE / "yamllint.yaml"


def yaml_files() -> list[Path]:
    files = [REPO / "repository.yaml", YAMLLINT_CONFIG, *sorted(REPO.glob("docker-compose*.yml"))]
    files += sorted((REPO / ".github" / "workflows").glob("*.yml"))
    files += sorted(p for p in ADDON.rglob("*") if p.suffix in (".yaml", ".yml"))
    return files


def test_the_file_lists_are_not_empty():
    names = {p.name for p in yaml_files()}
    assert {"config.yaml", "build.yaml", "en.yaml", "docker-compose.yml", "repository.yaml"} <= names
    assert {"ci.yml", "release.yml"} <= names
    scripts = {p.relative_to(REPO).as_posix() for p in shell_files()}
    assert "wyoming_openai/rootfs/etc/s6-overlay/s6-rc.d/wyoming-openai/run" in scripts
    assert "wyoming_openai/rootfs/etc/s6-overlay/s6-rc.d/wyoming-openai/finish" in scripts
    assert "wyoming_openai/rootfs/etc/s6-overlay/s6-rc.d/discovery/run" in scripts
    assert "wyoming_openai/rootfs/usr/local/bin/wyoming-ready" in scripts
    assert "tests/addon/bashio/lib.sh" in scripts


def test_yamllint():
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-f", "parsable", "-c", str(YAMLLINT_CONFIG), *map(str, yaml_files())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", shell_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck(script: Path):
    result = subprocess.run(
        [tool("shellcheck"), "--shell=bash", "--severity=style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfiles() -> list[Path]:
    """Every Dockerfile in the repository (not in hidden or virtual-environment folders)."""
    skip = {"node_modules", "venv", ".venv", "build", "dist"}
    return sorted(
        path
        for path in REPO.rglob("Dockerfile*")
        if path.is_file() and not any(part.startswith(".") or part in skip for part in path.relative_to(REPO).parts)
    )


def test_both_dockerfiles_are_found():
    assert {ADDON / "Dockerfile", REPO / "Dockerfile"} <= set(dockerfiles())


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint(dockerfile: Path):
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable_in_git():
    """Docker copies rootfs/ with the modes git checked out: s6 needs them executable."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-s", "--", "wyoming_openai/rootfs", "tests/addon/bashio"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    modes = {line.split("\t")[1]: line.split()[0] for line in listed.splitlines()}
    for script in shell_files():
        relative = script.relative_to(REPO).as_posix()
        if relative.endswith(".sh"):
            continue  # sourced, not run
        if relative in modes:
            assert modes[relative] == "100755", relative
