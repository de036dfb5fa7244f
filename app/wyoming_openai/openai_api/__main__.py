"""Command line: ``python -m wyoming_openai.openai_api`` and ``wyoming-openai serve-openai``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .config import ApiSettings, ConfigError, load

_LOGGER = logging.getLogger("wyoming_openai.openai_api")
DEFAULT_PROG = "python -m wyoming_openai.openai_api"


def main(argv: Sequence[str] | None = None, prog: str = "wyoming-openai serve-openai") -> int:
    """Run the API until SIGINT/SIGTERM. 0 on a clean stop, 2 for bad options, 1 if it cannot start."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = load(argv, prog=prog)
    except SystemExit as exit_:  # argparse: --help, or an unknown flag (it printed why)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except OSError as err:  # the port is taken, the host is not ours, …
        print(
            f"{prog}: error: cannot listen on {settings.host}:{settings.port}: {err.strerror or err}", file=sys.stderr
        )
        return 1
    except ImportError as err:
        print(
            f"{prog}: error: {err.name} is needed for this option (pip install 'wyoming-openai[zeroconf]')",
            file=sys.stderr,
        )
        return 1
    return 0


async def serve(settings: ApiSettings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        _LOGGER.info(
            "OpenAI-compatible API on http://%s:%s/v1 (%s; %s)",
            settings.host,
            settings.port,
            f"{len(settings.api_keys)} API key(s)" if settings.api_keys else "no authentication",
            f"CORS for {', '.join(settings.cors_origins)}" if settings.cors_origins else "CORS off",
        )
        if not settings.api_keys and settings.host not in ("127.0.0.1", "::1", "localhost"):
            _LOGGER.warning("No API keys: anyone who can reach port %s can use the Wyoming servers", settings.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        _LOGGER.info("Stopping")
    finally:
        await runner.cleanup()


def run() -> None:
    sys.exit(main(prog=DEFAULT_PROG))


if __name__ == "__main__":
    run()
