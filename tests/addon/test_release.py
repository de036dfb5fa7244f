"""The release, checked offline: one version everywhere (.github/bump_version.py), the workflows
(GitHub's schema, zizmor, what each job runs), the package as PyPI will get it, and the add-on
image's install step against the build context the release workflow prepares.

The workflows' own shell steps are run here for real, with GitHub's variables set as a runner
sets them; only `gh`, `pip` and the image's python are stand-ins. Every network access is routed
to a closed port (OFFLINE), so a check that quietly needs the network fails here, not on CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from conftest import ADDON, REPO, instructions, load_yaml, tool

from wyoming_openai import __version__

WORKFLOWS = REPO / ".github" / "workflows"
BUMP = REPO / ".github" / "bump_version.py"
CLOSED = "http://127.0.0.1:9"
OFFLINE = {
    **os.environ,
    **{name: CLOSED for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")},
    "NO_PROXY": "",
    "no_proxy": "",
    "PIP_NO_INDEX": "1",
}


def workflow(name: str) -> dict[str, Any]:
    data = load_yaml(WORKFLOWS / name)
    # PyYAML reads the key `on` as YAML 1.1's boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def step(job: dict[str, Any], *, name: str | None = None, uses: str | None = None) -> dict[str, Any]:
    """The job's one step with this name (prefix) or action."""
    found = [
        s
        for s in job["steps"]
        if (name and s.get("name", "").startswith(name)) or (uses and s.get("uses", "").startswith(uses + "@"))
    ]
    assert len(found) == 1, (name or uses, found)
    return found[0]


def run_step(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A `run:` step as a Linux runner runs it (bash -e), with the given GitHub variables."""
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env={**OFFLINE, **env}, capture_output=True, text=True, timeout=60
    )


def bump_script(*args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BUMP), *(["--root", str(root)] if root else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def github_filter(pattern: str) -> re.Pattern[str]:
    """GitHub's branch and tag filter pattern (* ** ? + [] as in its documentation) as a regex."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out, index = out + ".*", index + 2
            continue
        char = pattern[index]
        out += "[^/]*" if char == "*" else char if char in "[]+?-" or char.isalnum() else re.escape(char)
        index += 1
    return re.compile(out + r"\Z")


# --- one version --------------------------------------------------------------------------------


def bump_module() -> Any:
    spec = importlib.util.spec_from_file_location("bump_version", BUMP)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bump_version", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def version_files(root: Path) -> list[Path]:
    """The files bump_version.py reads and writes, found by its own table."""
    return sorted({root / name for _, name, _ in bump_module().found(root)})


def copy_version_files(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for path in version_files(REPO):
        target = root / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return root


def next_patch(version: str) -> str:
    major, minor, patch = (int(part) for part in version.split("."))
    return f"{major}.{minor}.{patch + 1}"


def test_every_place_holds_the_package_version():
    found = bump_module().found(REPO)
    assert {
        "app/wyoming_openai/__init__.py",
        "wyoming_openai/config.yaml",
        "wyoming_openai/Dockerfile",
        "wyoming_openai/CHANGELOG.md",
        "docker-compose.yml",
        ".env.example",
    } == {name for _, name, versions in found if versions}
    assert {version for _, _, versions in found for version in versions} == {__version__}
    result = bump_script("check")
    assert result.returncode == 0, result.stderr
    assert bump_script("check", f"v{__version__}").returncode == 0
    wrong = bump_script("check", f"v{next_patch(__version__)}")
    assert wrong.returncode == 1
    assert "wyoming_openai/config.yaml" in wrong.stderr and "app/wyoming_openai/__init__.py" in wrong.stderr


def test_bump_moves_every_place_together(tmp_path):
    root = copy_version_files(tmp_path)
    before = {path: path.read_text() for path in root.rglob("*") if path.is_file()}
    new = next_patch(__version__)

    result = bump_script("bump", new, root=root)
    assert result.returncode == 0, result.stderr
    assert bump_script("check", root=root).returncode == 0
    for path, old_text in before.items():
        text = path.read_text()
        if path.name == "CHANGELOG.md":
            assert text == f"{old_text[: old_text.index('## ')]}## {new}\n\n{old_text[old_text.index('## ') :]}"
            continue
        changed = [(a, b) for a, b in zip(old_text.splitlines(), text.splitlines(), strict=True) if a != b]
        assert changed or __version__ not in old_text, f"{path.name} still says {__version__}"
        for old_line, new_line in changed:
            assert old_line.replace(__version__, new) == new_line, path.name
    assert load_yaml(root / "wyoming_openai" / "config.yaml")["version"] == new

    # A release needs the new entry written: its text becomes the GitHub release's notes.
    empty = bump_script("check", f"v{new}", root=root)
    assert empty.returncode == 1 and "empty" in empty.stderr
    changelog = root / "wyoming_openai" / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(f"## {new}\n\n", f"## {new}\n\n- Fixed a thing.\n\n", 1))
    assert bump_script("check", f"v{new}", root=root).returncode == 0
    assert bump_script("notes", new, root=root).stdout.strip() == "- Fixed a thing."
    assert bump_script("notes", __version__, root=root).stdout == bump_script("notes", __version__).stdout


def test_check_names_the_file_that_disagrees(tmp_path):
    root = copy_version_files(tmp_path)
    config = root / "wyoming_openai" / "config.yaml"
    config.write_text(config.read_text().replace(f'version: "{__version__}"', 'version: "0.9.0"'))
    result = bump_script("check", root=root)
    assert result.returncode == 1
    assert result.stderr.strip() == f"wyoming_openai/config.yaml: 0.9.0 (expected {__version__})"


@pytest.mark.parametrize("version", [__version__, "0.1.0", "1.2", "1.2.3rc1"])
def test_bump_refuses_what_is_not_a_newer_version(tmp_path, version):
    root = copy_version_files(tmp_path)
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    result = bump_script("bump", version, root=root)
    assert result.returncode != 0 and version in result.stderr
    assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == before


def test_changelog_entry_is_the_release_notes():
    notes = bump_script("notes", __version__).stdout.strip()
    assert notes.startswith("- ") and "\n## " not in notes
    assert notes in (ADDON / "CHANGELOG.md").read_text()


# --- the workflows as GitHub and zizmor see them -------------------------------------------------


def test_the_workflows_exist():
    assert {path.name for path in workflow_files()} == {"ci.yml", "release.yml"}


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=120)


def test_workflows_follow_githubs_schema(tmp_path):
    result = check_jsonschema(*workflow_files())
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema ships with the tool: a mistake is caught without the network.
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "ci.yml").read_text().replace("runs-on:", "runs_on:"))
    result = check_jsonschema(broken)
    assert result.returncode == 1 and "'runs-on' is a required property" in result.stdout


def zizmor(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        env=OFFLINE,
        timeout=120,
    )
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def test_zizmor_finds_nothing_severe(tmp_path):
    findings = zizmor(WORKFLOWS)
    high = [f"{f['ident']}: {f['desc']}" for f in findings if f["determinations"]["severity"] == "High"]
    assert not high, high
    # The audits do run offline: an issue title pasted into a shell is found.
    injected = tmp_path / "injected.yml"
    injected.write_text(
        "name: x\non: issues\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: echo "${{ github.event.issue.title }}"\n'
    )
    assert [f["ident"] for f in zizmor(injected) if f["determinations"]["severity"] == "High"] == ["template-injection"]


def all_steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, job_name, s)
        for path in workflow_files()
        for job_name, job in workflow(path.name)["jobs"].items()
        for s in job["steps"]
    ]


def test_actions_are_pinned_and_checkouts_keep_no_credentials():
    for name, job, s in all_steps():
        if "uses" in s:
            assert re.match(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$", s["uses"]), (name, job, s["uses"])
        if s.get("uses", "").startswith("actions/checkout@"):
            assert s.get("with", {}).get("persist-credentials") is False, (name, job)


def test_permissions_are_minimal():
    for path in workflow_files():
        data = workflow(path.name)
        assert data["permissions"] in ({}, {"contents": "read"}), path.name
        for job_name, job in data["jobs"].items():
            permissions = job.get("permissions", {})
            if permissions.get("id-token") == "write":
                # Only the PyPI upload gets an OIDC token, and runs nothing but the download and the upload.
                assert [s["uses"].split("@")[0] for s in job["steps"]] == [
                    "actions/download-artifact",
                    "pypa/gh-action-pypi-publish",
                ], job_name


# --- CI ------------------------------------------------------------------------------------------


def readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"Run the tests.*?```sh\n(.*?)\n```", readme, re.DOTALL)
    assert block, "README.md: no test command"
    return block.group(1).strip()


def apt_packages(script: str) -> set[str]:
    joined = script.replace("\\\n", " ")  # a command continued on the next line
    line = next(line for line in joined.splitlines() if "apt-get install" in line)
    words = line.split("apt-get install", 1)[1].split(">")[0].split()
    return {word for word in words if not word.startswith("-")}


def test_ci_runs_the_readme_command_and_the_suite_on_every_python():
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == readme_test_command()
    runs = {job_name: [s.get("run", "") for s in job["steps"]] for job_name, job in ci["jobs"].items()}
    assert any(".ci/run" in " ".join(commands) for commands in runs.values())

    [matrix_job] = [job for job in ci["jobs"].values() if "matrix" in job.get("strategy", {})]
    pythons = set(matrix_job["strategy"]["matrix"]["python"])
    project = tomllib.loads((REPO / "app" / "pyproject.toml").read_text())["project"]
    supported = {c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if re.match(r".*Python :: 3\.\d+$", c)}
    assert pythons == supported
    commands = "\n".join(s.get("run", "") for s in matrix_job["steps"])
    assert 'pip install -e "./app[test]"' in commands and 'pytest -m "not e2e"' in commands
    # A fresh machine gets the same system packages as .ci/run installs.
    assert apt_packages(commands) == apt_packages((REPO / ".ci" / "run").read_text())


# --- release -------------------------------------------------------------------------------------


def needed(jobs: dict[str, Any], name: str) -> set[str]:
    """Every job `name` waits for, directly or not."""
    direct = jobs[name].get("needs", [])
    direct = [direct] if isinstance(direct, str) else direct
    return set(direct).union(*(needed(jobs, other) for other in direct))


def test_release_runs_on_version_tags_and_publishes_to_pypi_last():
    release = workflow("release.yml")
    tags = [github_filter(pattern) for pattern in release["on"]["push"]["tags"]]
    for tag in ("v1.0.0", "v2.13.104"):
        assert any(p.match(tag) for p in tags), tag
    for tag in ("1.0.0", "v1.0", "v1.0.0rc1", "v1.0.0-beta", "version-1"):
        assert not any(p.match(tag) for p in tags), tag
    assert release["on"]["push"]["branches"] == ["main"]

    jobs = release["jobs"]
    for name in jobs:
        assert name == "check" or "check" in needed(jobs, name), name
    assert {"package", "image", "addon-image"} <= needed(jobs, "pypi")
    assert "pypi" in needed(jobs, "github-release")
    assert "tag" in jobs["pypi"]["if"]
    assert "pypa/gh-action-pypi-publish" in [s["uses"].split("@")[0] for s in jobs["pypi"]["steps"]]


@pytest.mark.parametrize(
    ("ref_type", "ref_name", "ok"),
    [("tag", f"v{__version__}", True), ("tag", f"v{next_patch(__version__)}", False), ("branch", "main", True)],
)
def test_release_check_step(ref_type, ref_name, ok):
    script = workflow("release.yml")["jobs"]["check"]["steps"][-1]["run"]
    result = run_step(script, REPO, GITHUB_REF_TYPE=ref_type, GITHUB_REF_NAME=ref_name)
    assert (result.returncode == 0) is ok, result.stderr


def test_package_job_builds_and_checks_what_pypi_gets():
    job = workflow("release.yml")["jobs"]["package"]
    commands = step(job, name="Build")["run"]
    assert "python -m build --outdir dist app" in commands
    assert "twine check --strict dist/*" in commands
    assert step(job, uses="actions/upload-artifact")["with"]["path"] == "dist/"


def compose_image() -> str:
    image = load_yaml(REPO / "docker-compose.yml")["services"]["wyoming-openai"]["image"]
    default = re.fullmatch(r"\$\{WYOMING_OPENAI_IMAGE:-(.+)\}", image)
    assert default, image
    return default.group(1)


def test_standalone_image_is_the_one_compose_pulls():
    release = workflow("release.yml")
    name, _, tag = compose_image().rpartition(":")
    assert release["env"]["IMAGE"] == name and tag == __version__
    job = release["jobs"]["image"]
    tags = step(job, uses="docker/metadata-action")["with"]["tags"].split()
    # X.Y.Z and X.Y from a tag (latest too: the action adds it for semver tags), main from main.
    assert {"type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}"} <= set(tags)
    assert "type=ref,event=branch" in tags
    build = step(job, uses="docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["context"] == "." and build["push"] is True


def test_github_release_carries_the_changelog_entry(tmp_path):
    job = workflow("release.yml")["jobs"]["github-release"]
    script = step(job, name="Release notes")["run"]
    work = tmp_path / "checkout"
    (work / "dist").mkdir(parents=True)
    (work / ".github").symlink_to(REPO / ".github")
    (work / "dist" / f"wyoming_openai-{__version__}.tar.gz").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "gh-args"}\n')
    gh.chmod(0o755)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    result = run_step(
        script,
        work,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        GITHUB_REF_NAME=f"v{__version__}",
        GITHUB_REPOSITORY="roryeckel/wyoming_openai",
        RUNNER_TEMP=str(runner_temp),
    )
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "gh-args").read_text().splitlines()
    assert args[:3] == ["release", "create", f"v{__version__}"]
    assert f"dist/wyoming_openai-{__version__}.tar.gz" in args
    notes = Path(args[args.index("--notes-file") + 1]).read_text().strip()
    assert notes == bump_script("notes", __version__).stdout.strip() and notes


# --- the add-on image: the same commit's app/, under config.yaml's name ---------------------------


def addon_job() -> dict[str, Any]:
    return workflow("release.yml")["jobs"]["addon-image"]


def test_addon_images_are_the_ones_config_yaml_names(addon_config, tmp_path):
    job = addon_job()
    platforms = {entry["arch"]: entry["platform"] for entry in job["strategy"]["matrix"]["include"]}
    assert set(platforms) == set(addon_config["arch"])
    docker_names = {"amd64": "linux/amd64", "aarch64": "linux/arm64"}
    assert platforms == {arch: docker_names[arch] for arch in platforms}

    script = step(job, name="Image name and version")["run"]
    for arch in platforms:
        output = tmp_path / f"output-{arch}"
        result = run_step(script, REPO, ARCH=arch, GITHUB_OUTPUT=str(output))
        assert result.returncode == 0, result.stderr
        values = dict(line.split("=", 1) for line in output.read_text().splitlines())
        # The Supervisor pulls image:version with {arch} filled in.
        assert values == {"image": addon_config["image"].replace("{arch}", arch), "version": addon_config["version"]}

    build = step(job, uses="docker/build-push-action")["with"]
    assert "${{ steps.addon.outputs.image }}:${{ steps.addon.outputs.version }}" in build["tags"]
    declared = {rest.split("=")[0] for keyword, rest in instructions(ADDON / "Dockerfile") if keyword == "ARG"}
    passed = {line.split("=")[0] for line in build["build-args"].splitlines()}
    assert passed == {"BUILD_ARCH", "BUILD_VERSION"} and passed <= declared


def staged_addon(tmp_path: Path) -> Path:
    """The build context the workflow prepares, prepared by its own step."""
    job = addon_job()
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    result = run_step(step(job, name="Stage the add-on folder")["run"], REPO, RUNNER_TEMP=str(runner_temp))
    assert result.returncode == 0, result.stderr
    build = step(job, uses="docker/build-push-action")["with"]
    assert "file" not in build, "the Dockerfile is the staged folder's own"
    return Path(build["context"].replace("${{ runner.temp }}", str(runner_temp)))


def dockerignored(context: Path, source: str) -> bool:
    ignore = context / ".dockerignore"
    patterns = [line for line in ignore.read_text().splitlines() if line and not line.startswith("#")]
    return any(fnmatch(source.rstrip("/"), pattern) for pattern in patterns if not pattern.startswith("!"))


def test_addon_context_holds_this_commits_app(tmp_path):
    context = staged_addon(tmp_path)
    assert (context / "Dockerfile").read_text() == (ADDON / "Dockerfile").read_text()
    copies = [rest.split() for keyword, rest in instructions(context / "Dockerfile") if keyword == "COPY"]
    sources = [words[-2] for words in copies if not any(word.startswith("--from") for word in words)]
    assert "app/" in sources
    for source in sources:
        assert (context / source).exists() and not dockerignored(context, source), source
    # The package itself, file for file (not a release from an index).
    for path in [REPO / "app" / "pyproject.toml", *(REPO / "app" / "wyoming_openai").rglob("*.py")]:
        staged = context / "app" / path.relative_to(REPO / "app")
        assert staged.read_bytes() == path.read_bytes(), path
    assert dockerignored(context, "app/wyoming_openai.egg-info")
    assert dockerignored(context, "app/wyoming_openai/__pycache__")


def install_step(context: Path, bin_dir: Path) -> str:
    """The Dockerfile's RUN that installs the copied app/, pointed at the staged context and at
    stand-ins for the image's pip and python."""
    dockerfile = context / "Dockerfile"
    [destination] = [
        rest.split()[-1] for keyword, rest in instructions(dockerfile) if keyword == "COPY" and rest.startswith("app/")
    ]
    [run] = [rest for keyword, rest in instructions(dockerfile) if keyword == "RUN" and "pip install" in rest]
    return run.replace("/usr/src/.venv/bin/", f"{bin_dir}/").replace(destination.rstrip("/"), str(context / "app"))


@pytest.mark.parametrize("copied", ["same", "other"])
def test_addon_image_installs_the_copied_app_at_the_addon_version(tmp_path, addon_config, copied):
    context = staged_addon(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "pip-args"}\n')
    # What importlib.metadata would report once pip installed the staged app/.
    installed = addon_config["version"] if copied == "same" else "0.8.0"
    (bin_dir / "python3").write_text(f"#!/bin/sh\necho {installed}\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    script = install_step(context, bin_dir)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        env={"BUILD_VERSION": addon_config["version"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert (tmp_path / "pip-args").read_text().split() == ["install", "--no-cache-dir", str(context / "app")]
    if copied == "same":
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert f"app/ is wyoming-openai 0.8.0, the add-on {addon_config['version']}" in result.stderr


# --- the package as PyPI gets it ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of a clean copy of app/, built offline as the release job builds them."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "app"
    shutil.copytree(REPO / "app", source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist"))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)],
        capture_output=True,
        text=True,
        env=OFFLINE,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "dist"


def test_package_builds_and_passes_twine_check(dist):
    names = sorted(path.name for path in dist.iterdir())
    assert names == [f"wyoming_openai-{__version__}-py3-none-any.whl", f"wyoming_openai-{__version__}.tar.gz"]
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True,
        text=True,
        env=OFFLINE,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_has_every_module_and_zeroconf_without_an_extra(dist):
    wheel = dist / f"wyoming_openai-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        info = f"wyoming_openai-{__version__}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    modules = {path.relative_to(REPO / "app").as_posix() for path in (REPO / "app" / "wyoming_openai").rglob("*.py")}
    assert modules <= files, modules - files
    assert metadata["Version"] == __version__
    # `pip install wyoming-openai` then `wyoming-openai --zeroconf` works: zeroconf is not an extra.
    requires = metadata.get_all("Requires-Dist")
    assert any(re.match(r"^zeroconf\b[^;]*$", requirement) for requirement in requires), requires
    assert re.search(r"^wyoming-openai = wyoming_openai\.__main__:run$", entry_points, re.MULTILINE)
    assert metadata.get_payload().strip(), "the PyPI page has a description"
