#!/usr/bin/env python3
"""One version for the package, the add-on, the images and the changelog.

    python .github/bump_version.py check            every place holds the same version
    python .github/bump_version.py check v1.2.3     ... and it is this tag's (the release workflow)
    python .github/bump_version.py bump 1.2.3       write 1.2.3 everywhere; open its CHANGELOG entry
    python .github/bump_version.py notes 1.2.3      print 1.2.3's CHANGELOG entry (the release notes)

--root DIR works on another checkout (the tests use a copy). Standard library only: the release
workflow runs it before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

VERSION = re.compile(r"^\d+\.\d+\.\d+$")
IMAGE_TAG = r"(?<=ghcr\.io/roryeckel/wyoming_openai:)([0-9][^\s}\"']*)"
CHANGELOG = "wyoming_openai/CHANGELOG.md"
ENTRY = re.compile(r"^## \[?([^\]\s]+)\]?.*$", re.MULTILINE)


@dataclass(frozen=True)
class Place:
    """Where a version is written: files (a glob) and a pattern whose group 1 is the version."""

    glob: str
    pattern: str
    first_only: bool = False

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.MULTILINE)


PLACES = (
    Place("app/wyoming_openai/__init__.py", r'^__version__ = "([^"]+)"$'),
    Place("wyoming_openai/config.yaml", r'^version: "([^"]+)"$'),
    # What a build by hand labels the add-on image with (the Supervisor and the workflow pass it).
    Place("wyoming_openai/Dockerfile", r"^ARG BUILD_VERSION=(\S+)$"),
    Place(CHANGELOG, ENTRY.pattern, first_only=True),
    # The image tag compose pulls by default, and the example that overrides it.
    Place("docker-compose*.yml", IMAGE_TAG),
    Place(".env.example", IMAGE_TAG),
)


def found(root: Path) -> list[tuple[Place, str, list[str]]]:
    """(place, file, the versions written in it) for every file of every place."""
    result = []
    for place in PLACES:
        for path in sorted(root.glob(place.glob)):
            matches = place.regex().findall(path.read_text(encoding="utf-8"))
            result.append((place, path.relative_to(root).as_posix(), matches[:1] if place.first_only else matches))
    return result


def current(root: Path) -> str:
    match = PLACES[0].regex().search((root / PLACES[0].glob).read_text(encoding="utf-8"))
    if not match:
        raise SystemExit(f"no __version__ in {PLACES[0].glob}")
    return match.group(1)


def problems(root: Path, expected: str | None = None) -> list[str]:
    """What disagrees, one line each; empty when every place holds `expected` (or one version)."""
    expected = expected or current(root)
    versions = found(root)
    lines = [
        f"{place.glob}: no version found"
        for place in PLACES
        if not any(values for where, _, values in versions if where is place)
    ]
    for _, name, values in versions:
        lines += [f"{name}: {value} (expected {expected})" for value in values if value != expected]
    return lines


def notes(root: Path, version: str) -> str:
    """The body of `version`'s CHANGELOG entry, without its heading."""
    text = (root / CHANGELOG).read_text(encoding="utf-8")
    headings = list(ENTRY.finditer(text))
    for index, heading in enumerate(headings):
        if heading.group(1) == version:
            end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
            return text[heading.end() : end].strip()
    raise SystemExit(f"{CHANGELOG} has no entry for {version}")


def bump(root: Path, new: str) -> list[str]:
    """Write `new` into every place; add an empty CHANGELOG entry for it. Returns the files changed."""
    old = current(root)
    if as_tuple(new) <= as_tuple(old):
        raise SystemExit(f"{new} is not after the current version {old}")
    changed = []
    for place in PLACES:
        for path in sorted(root.glob(place.glob)):
            text = path.read_text(encoding="utf-8")
            if place.glob == CHANGELOG:
                updated = text if top_entry(text) == new else open_entry(text, new)
            else:
                updated = place.regex().sub(lambda match: with_version(match, new), text)
            if updated != text:
                path.write_text(updated, encoding="utf-8")
                changed.append(path.relative_to(root).as_posix())
    return changed


def with_version(match: re.Match[str], version: str) -> str:
    """The matched text with its group 1 (the version) replaced."""
    start, end = match.start(1) - match.start(0), match.end(1) - match.start(0)
    return match.group(0)[:start] + version + match.group(0)[end:]


def top_entry(text: str) -> str | None:
    match = ENTRY.search(text)
    return match.group(1) if match else None


def open_entry(text: str, version: str) -> str:
    """A new top entry `## version` above the newest one (its lines are written as changes land)."""
    match = ENTRY.search(text)
    at = match.start() if match else len(text)
    return f"{text[:at]}## {version}\n\n{text[at:]}"


def as_tuple(version: str) -> tuple[int, ...]:
    if not VERSION.match(version):
        raise SystemExit(f"{version!r} is not a version of the form X.Y.Z")
    return tuple(int(part) for part in version.split("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="every place holds one version (and the tag's, if given)")
    check.add_argument("tag", nargs="?", help="vX.Y.Z or X.Y.Z")
    commands.add_parser("bump", help="move every place to a new version").add_argument("version")
    commands.add_parser("notes", help="print a version's CHANGELOG entry").add_argument("version")
    args = parser.parse_args(argv)

    if args.command == "bump":
        for name in bump(args.root, args.version):
            print(f"updated {name}")
        print(f"Now write {args.version}'s changes under its heading in {CHANGELOG}.")
        return 0
    if args.command == "notes":
        print(notes(args.root, args.version))
        return 0
    expected = args.tag.removeprefix("v") if args.tag else None
    if expected is not None:
        as_tuple(expected)
    lines = problems(args.root, expected)
    if expected is not None and not lines and not notes(args.root, expected):
        lines.append(f"{CHANGELOG}: the entry for {expected} is empty")
    for line in lines:
        print(line, file=sys.stderr)
    if not lines:
        print(f"every place holds {expected or current(args.root)}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
