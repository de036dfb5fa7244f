"""Which kind of server an upstream is, and which voices it has: found in the background, bounded.

Probes (facts from wyoming_openai 0.8.0 and the servers' APIs): LocalAI answers ``/readyz``,
Speaches answers ``/health`` with ``OK``, Kokoro-FastAPI answers ``{base}/test`` with
``{"status": "ok"}``. api.openai.com is never probed. Voices are asked of every server, wherever
servers list them; discovery repeats (see Rediscovery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from .settings import OPENAI_VOICES, Backend
from .upstream import Upstream, UpstreamError

_LOGGER = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
DISCOVERY_TIMEOUT = 5.0
REDISCOVERY_INTERVAL = 600.0
REDISCOVERY_MIN_GAP = 60.0


def known_backend(configured: Backend | None, url: str) -> Backend | None:
    """The backend known without asking: configured, or the official endpoint."""
    if configured is not None:
        return configured
    if (urlsplit(url).hostname or "").lower() == "api.openai.com":
        return Backend.OPENAI
    return None


async def detect_backend(upstream: Upstream, configured: Backend | None) -> Backend:
    """Probe all kinds at once; a server that answers none is treated as plain OpenAI-compatible.

    An upstream serving both directions is probed once: both callers share the answer.
    """
    known = known_backend(configured, upstream.base_url)
    if known is not None:
        return known
    if upstream.detection is None:
        upstream.detection = asyncio.ensure_future(_probe(upstream))
    return await asyncio.shield(upstream.detection)


async def _probe(upstream: Upstream) -> Backend:
    async def answers(path: str, root: bool, accept: Callable[[object], bool]) -> bool:
        try:
            return accept(await upstream.get_json(path, timeout=PROBE_TIMEOUT, root=root))
        except UpstreamError:
            return False

    localai, speaches, kokoro = await asyncio.gather(
        answers("/readyz", True, lambda body: True),
        answers("/health", True, lambda body: isinstance(body, str) and body.strip().strip('"') == "OK"),
        answers("/test", False, lambda body: isinstance(body, dict) and body.get("status") == "ok"),
    )
    if kokoro:
        return Backend.KOKORO_FASTAPI
    if speaches:
        return Backend.SPEACHES
    if localai:
        return Backend.LOCALAI
    return Backend.OPENAI


def is_openai(upstream: Upstream) -> bool:
    return upstream.hostname.lower() == "api.openai.com"


async def discover_voices(upstream: Upstream, backend: Backend, models: list[str]) -> list[tuple[str, str | None]]:
    """(voice, model) pairs the upstream lists, asked everywhere servers list them, at once:
    ``/audio/voices`` (Kokoro-FastAPI, Kokoros, Speaches), the TTS entries of ``/models`` and, for
    Speaches, each model's own listing. OpenAI's voices for api.openai.com; LocalAI's voices are its
    models. An empty list: the upstream lists none (a failed request counts as none)."""
    if is_openai(upstream):
        return [(voice, None) for voice in OPENAI_VOICES]
    per_model = [_speaches_voices(upstream, model) for model in models] if backend is Backend.SPEACHES else []
    results = await asyncio.gather(*per_model, _models_voices(upstream, models), _audio_voices(upstream, models))
    found = [pair for result in results for pair in result]
    if not found and backend is Backend.LOCALAI:
        return [(model, model) for model in models]  # LocalAI picks the voice from the model
    return found


async def _listing(upstream: Upstream, path: str) -> object:
    try:
        return await upstream.get_json(path, timeout=DISCOVERY_TIMEOUT)
    except UpstreamError as err:
        _LOGGER.debug("Voice listing %s: %s", path, err)
        return None


async def _audio_voices(upstream: Upstream, models: list[str]) -> list[tuple[str, str | None]]:
    """``{"voices": ["af_heart", …]}``, ``{"voices": [{"id": …}, …]}`` or a bare list of either."""
    body = await _listing(upstream, "/audio/voices")
    entries = body.get("voices") if isinstance(body, dict) else body
    if not isinstance(entries, list):
        return []
    return [pair for entry in entries if (pair := _voice_entry(entry, models)) is not None]


def _voice_entry(entry: object, models: list[str]) -> tuple[str, str | None] | None:
    if isinstance(entry, str):
        return (entry, None) if entry else None
    if not isinstance(entry, dict):
        return None
    name = entry.get("id") or entry.get("voice_id") or entry.get("name")
    model = entry.get("model_id") or entry.get("model")
    if not isinstance(name, str) or not name:
        return None
    return name, model if model in models else None


async def _models_voices(upstream: Upstream, models: list[str]) -> list[tuple[str, str | None]]:
    """The voices of ``/models`` entries that list theirs (Speaches): those of our models if any are listed."""
    body = await _listing(upstream, "/models")
    entries = body.get("data") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return []
    with_voices = [e for e in entries if isinstance(e, dict) and isinstance(e.get("voices"), list)]
    ours = [e for e in with_voices if e.get("id") in models] or with_voices
    return [
        (pair[0], entry.get("id") if entry.get("id") in models else None)
        for entry in ours
        for voice in entry["voices"]
        if (pair := _voice_entry(voice, models)) is not None
    ]


async def _speaches_voices(upstream: Upstream, model: str) -> list[tuple[str, str | None]]:
    """A Speaches model's voices: ``/models/{model}``, or the older ``/audio/speech/voices``."""
    body = await _listing(upstream, f"/models/{model}")
    if isinstance(body, dict) and isinstance(body.get("voices"), list):
        return [(pair[0], model) for v in body["voices"] if (pair := _voice_entry(v, [])) is not None]
    body = await _listing(upstream, f"/audio/speech/voices?model_id={quote(model, safe='')}")
    if not isinstance(body, list):
        return []
    return [(str(v["voice_id"]), model) for v in body if isinstance(v, dict) and v.get("voice_id")]


class Rediscovery:
    """When to ask again: every ``interval`` seconds, and soon after a request names a voice we do not
    know (at most every ``min_gap`` seconds), so a server that starts after the proxy, or gains
    voices, shows up in ``info`` without a restart."""

    def __init__(self, interval: float = REDISCOVERY_INTERVAL, min_gap: float = REDISCOVERY_MIN_GAP) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self.rounds = 0
        self._last = time.monotonic()
        self._wake = asyncio.Event()

    def unknown_voice(self, name: str) -> None:
        if time.monotonic() - self._last >= self.min_gap and not self._wake.is_set():
            _LOGGER.debug("A client asked for voice %r, which we do not know: asking the upstream again", name)
            self._wake.set()

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.interval)
        except TimeoutError:
            pass
        self._wake.clear()

    def ran(self) -> None:
        self._last = time.monotonic()
        self.rounds += 1
