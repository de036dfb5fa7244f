"""Print the Python requirements of the Home Assistant integrations the suite loads.

Run with the Home Assistant venv's interpreter: it reads the installed integrations' manifests
(dependencies included, recursively) so setup.sh can install everything up front and Home
Assistant can run with --skip-pip, never reaching the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import homeassistant.components
from homeassistant import bootstrap

sys.path.insert(0, str(Path(__file__).parent))
from ha_config import INTEGRATIONS  # noqa: E402

COMPONENTS = Path(homeassistant.components.__file__).parent


def main() -> None:
    wanted = set(INTEGRATIONS)
    # What bootstrap sets up whatever the configuration says (core, logging and http, frontend, defaults).
    for name in (
        "CORE_INTEGRATIONS",
        "LOGGING_AND_HTTP_DEPS_INTEGRATIONS",
        "FRONTEND_INTEGRATIONS",
        "DEFAULT_INTEGRATIONS",
    ):
        wanted.update(getattr(bootstrap, name, ()))
    wanted.discard("sentry")  # only when configured
    seen: set[str] = set()
    requirements: set[str] = set()
    while wanted:
        domain = wanted.pop()
        if domain in seen:
            continue
        seen.add(domain)
        manifest_path = COMPONENTS / domain / "manifest.json"
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        requirements.update(manifest.get("requirements", []))
        wanted.update(manifest.get("dependencies", []))
    print(f"integrations: {' '.join(sorted(seen))}", file=sys.stderr)
    print("\n".join(sorted(requirements)))


if __name__ == "__main__":
    main()
