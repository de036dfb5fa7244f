"""What the Home Assistant under test loads; read by setup (to install) and by the tests (to configure)."""

from __future__ import annotations

# Only what the suite drives: no default_config, so nothing reaches beyond loopback (no cloud,
# no analytics, no discovery on the real network). zeroconf is loaded only inside a private
# network namespace, by the discovery test.
INTEGRATIONS = (
    "api", "auth", "config", "http", "onboarding", "websocket_api", "person",
    "ffmpeg", "stt", "tts", "conversation", "intent", "assist_pipeline", "wyoming",
    "zeroconf", "network",
)  # fmt: skip
BASE_INTEGRATIONS = tuple(name for name in INTEGRATIONS if name not in ("zeroconf", "network"))
