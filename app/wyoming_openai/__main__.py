"""Entry point: settings → logging → upstreams → server; discovery in the background."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import time

from . import __version__, failover
from .backends import Rediscovery, detect_backend, discover_voices
from .catalog import Catalog
from .handler import Services
from .http import StatusServer
from .logs import setup_logging
from .monitor import Monitor
from .server import WyomingServer
from .settings import OPENAI_VOICES, Backend, Settings, SettingsError, load_settings
from .streaming import warm_up
from .stt import Transcriber
from .tts import Synthesizer
from .upstream import Upstream, upstream_from_settings

_LOGGER = logging.getLogger("wyoming_openai")


def make_upstream(settings: Settings, role: str) -> Upstream:
    prefix = role[:3].lower()
    return upstream_from_settings(
        settings, role, getattr(settings, f"{prefix}_openai_url"), getattr(settings, f"{prefix}_openai_key")
    )


def build_services(settings: Settings) -> Services:
    """Must run inside the event loop (the HTTP pools belong to it)."""
    same_server = (settings.stt_openai_url, settings.stt_openai_key) == (
        settings.tts_openai_url,
        settings.tts_openai_key,
    )
    if same_server and settings.stt_models and settings.tts_models:
        # One server for both: one pool of connections, probed once.
        stt = tts = make_upstream(settings, "STT/TTS")
    else:
        stt = make_upstream(settings, "STT") if settings.stt_models else None
        tts = make_upstream(settings, "TTS") if settings.tts_models else None
    monitor = Monitor()
    transcriber, synthesizer = failover.wrap(
        settings,
        Transcriber(settings, stt) if stt else None,
        Synthesizer(settings, tts) if tts else None,
        monitor,
    )
    return Services(
        settings=settings,
        catalog=Catalog(settings),
        transcriber=transcriber,
        synthesizer=synthesizer,
        monitor=monitor,
    )


async def discover(services: Services, again: bool = False) -> None:
    """Learn each upstream's kind and voices; bounded, and never in the way of serving. ``again``:
    a later round, which probes afresh and changes the voices only when the upstream lists some."""
    settings = services.settings

    async def stt() -> None:
        if services.transcriber is not None:
            backend = await detect_backend(services.transcriber.upstream, settings.stt_backend)
            if backend is not services.transcriber.backend or not again:
                _LOGGER.info("STT upstream %s: %s", services.transcriber.upstream.display_url, backend.value)
            services.transcriber.backend = backend

    async def tts() -> None:
        if services.synthesizer is None:
            return
        upstream = services.synthesizer.upstream
        backend = await detect_backend(upstream, settings.tts_backend)
        if not again:
            _LOGGER.info("TTS upstream %s: %s", upstream.display_url, backend.value)
        if not settings.tts_voices:
            await _offer_voices(services, upstream, backend, again)

    fallbacks = [s.discover() for s in (services.transcriber, services.synthesizer) if s is not None]
    results = await asyncio.gather(stt(), tts(), *fallbacks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            _LOGGER.warning("Discovery failed: %s", result)


async def _offer_voices(services: Services, upstream: Upstream, backend: Backend, again: bool) -> None:
    catalog = services.catalog
    voices = await discover_voices(upstream, backend, services.settings.tts_models)
    if voices:
        if list(catalog.voices) != list(dict.fromkeys(name for name, _ in voices)) or catalog.provisional:
            catalog.set_voices(voices)
            _LOGGER.info("Voices: %s", ", ".join(catalog.voices))
    elif not again:
        # OpenAI's voices, so that Home Assistant has some to show; a voice the client names is used
        # as it is, since the server may well have it.
        _LOGGER.warning(
            "The TTS upstream lists no voices; offering OpenAI's until it does. Set --tts-voices to choose."
        )
        catalog.set_voices(((voice, None) for voice in OPENAI_VOICES), provisional=True)


async def keep_discovering(services: Services, rediscovery: Rediscovery, first: asyncio.Task) -> None:
    """Discovery again every so often, and when a client names a voice we do not know."""
    await asyncio.gather(first, return_exceptions=True)
    rediscovery.ran()
    while True:
        await rediscovery.wait()
        for service in (services.transcriber, services.synthesizer):
            if service is not None:
                service.upstream.detection = None  # probe afresh: the server may have changed
        await discover(services, again=True)
        rediscovery.ran()


class Proxy:
    """The running service: upstream pools, the server, discovery. Start and stop inside one loop."""

    def __init__(self, settings: Settings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.services: Services | None = None
        self.server: WyomingServer | None = None
        self.http: StatusServer | None = None
        self.discovery: asyncio.Task | None = None  # the first round
        self.rediscovery = Rediscovery()
        self._rediscovering: asyncio.Task | None = None

    async def start(self) -> None:
        settings = self.settings
        if settings.tts_streaming_models or settings.tts_split_text:
            warm_up(settings.languages)
        self.services = services = build_services(settings)
        self.server = WyomingServer(services, self.reuse_port)
        await self.server.start()
        _LOGGER.info("Wyoming OpenAI %s serving on %s", __version__, settings.uri)
        if settings.http_port is not None:
            http = StatusServer(services)
            try:
                await http.start()
            except OSError as err:  # the voice matters more than its status page: serve on without
                _LOGGER.error("Cannot serve the status page on port %s: %s", settings.http_port, err.strerror or err)
            else:
                self.http = http
        _warn_about_keys(settings)
        self.discovery = asyncio.create_task(discover(services), name="discovery")
        services.catalog.on_unknown_voice = self.rediscovery.unknown_voice
        self._rediscovering = asyncio.create_task(
            keep_discovering(services, self.rediscovery, self.discovery), name="rediscovery"
        )
        # What start-up made (modules, sentence rules, the catalog) lives as long as the process:
        # frozen, full collections under load stop walking it (measured: longest pause 19 -> 4 ms).
        gc.freeze()

    async def stop(self) -> None:
        for task in (self.discovery, self._rediscovering):
            if task is not None:
                task.cancel()
        if self.http is not None:
            await self.http.stop()
        if self.server is not None:
            await self.server.stop()
        if self.services is not None:
            for service in (self.services.transcriber, self.services.synthesizer):
                if service is not None:
                    await service.close()


async def serve(settings: Settings, reuse_port: bool = False) -> None:
    proxy = Proxy(settings, reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await proxy.start()
        if settings.uri.startswith("stdio"):
            assert proxy.server is not None
            await proxy.server.serve_stdio()
        else:
            await stop.wait()
        _LOGGER.info("Stopping")
    finally:
        await proxy.stop()


def _warn_about_keys(settings: Settings) -> None:
    for role, models, url, key in (
        ("STT", settings.stt_models, settings.stt_openai_url, settings.stt_openai_key),
        ("TTS", settings.tts_models, settings.tts_openai_url, settings.tts_openai_key),
    ):
        if models and key is None and "api.openai.com" in url:
            _LOGGER.warning("No %s API key: set OPENAI_API_KEY or --%s-openai-key", role, role.lower())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-openai"]:
        from .openai_api.__main__ import main as openai_api_main

        return openai_api_main(argv[1:])
    try:
        settings = load_settings(argv)
    except SettingsError as err:
        print(f"wyoming-openai: error: {err}", file=sys.stderr)
        return 2
    setup_logging(settings)
    if settings.workers > 1:
        return _run_workers(settings, argv)
    try:
        _run(serve(settings, reuse_port=os.environ.get(WORKER_ENV) == "1"))
    except OSError as err:
        _LOGGER.error("Cannot serve on %s: %s", settings.uri, err.strerror or err)
        return 1
    return 0


WORKER_ENV = "WYOMING_OPENAI_WORKER"  # set by the parent for its worker processes


def _run_workers(settings: Settings, argv: list[str]) -> int:
    """Start N copies of this server on one port (SO_REUSEPORT: the kernel spreads connections)
    and stop them together. Only the first announces itself on the network and serves the HTTP
    port (its page and metrics count its own share of the clients)."""
    children = []
    for index in range(settings.workers):
        extra = ["--workers", "1"] + ([] if index == 0 else ["--zeroconf=", "--http-port="])
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "wyoming_openai", *argv, *extra], env={**os.environ, WORKER_ENV: "1"}
            )
        )
    _LOGGER.info("Started %d workers on %s", len(children), settings.uri)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # The first worker to exit ends them all: a pool that silently shrinks is worse than a restart.
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return max(codes, key=abs)


def _run(main_coroutine) -> None:
    """uvloop where it is installed: its sockets and streams cost about half the CPU of asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
