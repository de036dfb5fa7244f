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
    for name in dir(bootstrap):
        # The integrations bootstrap always sets up (core, logging, http, frontend, defaults).
        if name.endswith("INTEGRATIONS") and "SUPERVISOR" not in name and "RECORDER" not in name:
            value = getattr(bootstrap, name)
            if isinstance(value, (set, frozenset, list, tuple)):
                wanted.update(v for v in value if isinstance(v, str))
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
