"""Which kind of server an upstream is, and which voices it has: found in the background, bounded.

Probes (facts from wyoming_openai 0.8.0 and the servers' APIs): LocalAI answers ``/readyz``,
Speaches answers ``/health`` with ``OK``, Kokoro-FastAPI answers ``{base}/test`` with
``{"status": "ok"}``. api.openai.com is never probed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from .settings import OPENAI_VOICES, Backend
from .upstream import Upstream, UpstreamError

_LOGGER = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
DISCOVERY_TIMEOUT = 5.0


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


async def discover_voices(upstream: Upstream, backend: Backend, models: list[str]) -> list[tuple[str, str | None]]:
    """(voice, model) pairs the upstream offers; raises UpstreamError if it cannot say."""
    if backend is Backend.OPENAI:
        return [(voice, None) for voice in OPENAI_VOICES]
    if backend is Backend.LOCALAI:
        # LocalAI picks the voice from the model; the model's name is the voice's.
        return [(model, model) for model in models]
    if backend is Backend.KOKORO_FASTAPI:
        body = await upstream.get_json("/audio/voices", timeout=DISCOVERY_TIMEOUT)
        voices = body.get("voices") if isinstance(body, dict) else None
        if not isinstance(voices, list):
            raise UpstreamError("Kokoro-FastAPI's /audio/voices did not list voices")
        return [(str(v), None) for v in voices if isinstance(v, str)]
    found: list[tuple[str, str | None]] = []
    for model in models:
        found.extend((name, model) for name in await _speaches_voices(upstream, model))
    return found


async def _speaches_voices(upstream: Upstream, model: str) -> list[str]:
    try:
        body = await upstream.get_json(f"/models/{model}", timeout=DISCOVERY_TIMEOUT)
        if isinstance(body, dict) and isinstance(body.get("voices"), list):
            return [str(v["name"]) for v in body["voices"] if isinstance(v, dict) and v.get("name")]
    except UpstreamError as err:
        _LOGGER.debug("Speaches /models/%s: %s; trying the older voices endpoint", model, err)
    body = await upstream.get_json(f"/audio/speech/voices?model_id={quote(model, safe='')}", timeout=DISCOVERY_TIMEOUT)
    if not isinstance(body, list):
        raise UpstreamError(f"Speaches did not list the voices of {model}")
    return [str(v["voice_id"]) for v in body if isinstance(v, dict) and v.get("voice_id")]
