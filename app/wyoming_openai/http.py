"""The optional HTTP port (``--http-port``): /health, /metrics and a status page, in the server's loop.

Served by aiohttp (already the upstream client) on the host of ``--uri``. Every path the page uses
is relative, so it works under a prefix too (Home Assistant's ingress). Nothing here shows a key,
a transcript or a spoken text.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .audio import AudioDecodeError, PcmFormat, to_wav
from .monitor import gauge, percentiles
from .upstream import UpstreamError

if TYPE_CHECKING:
    from .failover import Route
    from .handler import Services

_LOGGER = logging.getLogger(__name__)

SPEAK_MAX_CHARACTERS = 1000
PLOT_POINTS = 500  # per direction: enough for a small plot of an hour
PAGE_FILES = {"": ("index.html", "text/html"), "app.js": ("app.js", "text/javascript"), "style.css": ("style.css", "text/css")}  # fmt: skip


class StatusServer:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.monitor = services.monitor
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._pages = {
            path: (resources.files(__package__).joinpath("web", name).read_bytes(), kind)
            for path, (name, kind) in PAGE_FILES.items()
        }
        self.monitor.registry.register(_UpstreamCollector(self.routes))

    def routes(self) -> list[Route]:
        return [s.route for s in (self.services.transcriber, self.services.synthesizer) if s is not None]

    async def start(self) -> None:
        settings = self.services.settings
        uri = urlsplit(settings.uri)
        host = uri.hostname if uri.scheme == "tcp" else "127.0.0.1"
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/status.json", self.status)
        app.router.add_post("/speak", self.speak)
        for path in self._pages:
            app.router.add_get(f"/{path}", self.page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, settings.http_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr] - the port 0 became
        _LOGGER.info("Status page, /health and /metrics on http://%s:%d/", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- endpoints -------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        body, kind = self._pages[request.path.lstrip("/")]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        """200 while every direction has an upstream to ask; 503 when one has none."""
        routes = self.routes()
        usable = all(route.usable() for route in routes)
        body = {
            "status": "ok" if usable else "unavailable",
            "version": __version__,
            "uptime": round(time.time() - self.monitor.started, 1),
            "upstreams": [_shown(row) for route in routes for row in route.status()],
        }
        return web.json_response(body, status=200 if usable else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.monitor.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        """What the page shows: upstreams, recent requests, the last hour's latencies, the voices."""
        window: dict[str, list[tuple[float, float]]] = {"stt": [], "tts": []}
        for when, direction, seconds in self.monitor.latency_window():
            window[direction].append((when, seconds))
        latency = {
            direction: {**percentiles(s for _, s in points), "count": len(points)}
            for direction, points in window.items()
        }
        plot = {direction: _thinned(points, PLOT_POINTS) for direction, points in window.items()}
        catalog = self.services.catalog
        voices = [{"name": v.name, "description": v.description} for v in catalog.voices.values()]
        return web.json_response(
            {
                "version": __version__,
                "now": time.time(),
                "uptime": round(time.time() - self.monitor.started, 1),
                "clients": self.monitor.clients_connected,
                "upstreams": [_shown(row) for route in self.routes() for row in route.status()],
                "recent": self.monitor.recent_requests(),
                "latency": latency,
                "plot": plot,
                "voices": voices if self.services.synthesizer is not None else [],
                "default_voice": catalog.default_voice.name if catalog.default_voice else None,
            }
        )

    async def speak(self, request: web.Request) -> web.Response:
        """Text and a voice in (JSON), WAV out: the page's speak box, through the same synthesis as
        Wyoming clients get. JSON only: a form on another site cannot post here without a CORS
        preflight, which this server does not grant."""
        synthesizer = self.services.synthesizer
        if synthesizer is None:
            return _problem(503, "text-to-speech is not configured on this server")
        if request.content_type != "application/json":
            return _problem(415, 'send JSON: {"text": …, "voice": …}')
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "the body is not JSON")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _problem(400, "nothing to say: give text")
        if len(text) > SPEAK_MAX_CHARACTERS:
            return _problem(400, f"at most {SPEAK_MAX_CHARACTERS} characters, please")
        voice_name = body.get("voice")
        voice = self.services.catalog.voice(voice_name if isinstance(voice_name, str) and voice_name else None)
        if voice is None:
            return _problem(503, "no voice is configured")
        fmt: PcmFormat | None = None
        chunks: list[bytes] = []
        try:
            async for piece_format, pcm in synthesizer.synthesize(text, voice):
                fmt = piece_format  # the same for every piece of one synthesis
                chunks.append(pcm)
        except (UpstreamError, AudioDecodeError) as err:
            return _problem(502, str(err))
        if fmt is None:
            return _problem(502, "the TTS upstream sent no audio")
        return web.Response(body=to_wav(chunks, fmt), content_type="audio/wav", headers={"Cache-Control": "no-store"})


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    until = row.get("until")
    return {**row, "until": datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds") if until else None}


def _thinned(points: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[int(i * step)] for i in range(most)]


class _UpstreamCollector:
    """Read when scraped: each upstream's availability and pooled connections."""

    def __init__(self, routes) -> None:
        self.routes = routes

    def describe(self) -> list:
        return []  # computed per scrape; nothing to check at registration

    def collect(self):
        rows = [(route, member) for route in self.routes() for member in route.members]
        yield gauge(
            "wyoming_openai_upstream_available",
            "1 while the upstream is asked, 0 while it is skipped after failures",
            ["direction", "upstream", "url"],
            (([r.direction, m.name, m.upstream.display_url], 0.0 if m.breaker.is_open else 1.0) for r, m in rows),
        )
        pools = {id(m.upstream): m.upstream for _, m in rows}
        yield gauge(
            "wyoming_openai_upstream_connections",
            "Open connections to the upstream, in use or kept alive",
            ["url"],
            (([u.display_url], float(_pool_size(u))) for u in pools.values()),
        )


def _pool_size(upstream) -> int:
    """aiohttp has no public count of a connector's connections; read its two collections, and
    report 0 rather than fail should a new aiohttp rename them."""
    connector = getattr(getattr(upstream, "_session", None), "connector", None)
    idle = getattr(connector, "_conns", {}) or {}
    in_use = getattr(connector, "_acquired", ()) or ()
    try:
        return len(in_use) + sum(len(queue) for queue in idle.values())
    except TypeError:
        return 0
