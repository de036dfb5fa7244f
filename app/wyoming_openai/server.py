"""Serving Wyoming clients: listening, the connection limit, idle time-outs, graceful shutdown, zeroconf.

asyncio's stream server with a bounded reader per client (``wire.ClientReader``); each client's
conversation is a ``Handler`` (the ``wyoming`` library's ``AsyncEventHandler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from urllib.parse import urlsplit

from .handler import Handler, Services
from .wire import ClientReader, Limits

_LOGGER = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds in-flight requests get to finish after SIGTERM


class WyomingServer:
    def __init__(self, services: Services, reuse_port: bool = False) -> None:
        self.services = services
        self.reuse_port = reuse_port  # one of several worker processes sharing the port
        settings = services.settings
        self.limits = Limits(settings.max_event_bytes, settings.max_payload_bytes)
        self.handlers: dict[Handler, asyncio.Task] = {}  # the clients being served
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._zeroconf = None

    @property
    def port(self) -> int | None:
        sockets = self._server.sockets if self._server else []
        return sockets[0].getsockname()[1] if sockets else None

    async def start(self) -> None:
        """Listen (returns at once); stdio:// serves one client until stdin ends, in serve_stdio()."""
        settings = self.services.settings
        uri = urlsplit(settings.uri)
        loop = asyncio.get_running_loop()
        # Each request is a new connection: a house full of satellites connecting at once must not
        # overflow the accept queue (the default, 100, makes clients retry their SYN a second later).
        backlog = max(128, 2 * settings.max_connections)
        if uri.scheme == "tcp":
            self._server = await loop.create_server(
                self._new_protocol, uri.hostname, uri.port or 0, backlog=backlog, reuse_port=self.reuse_port or None
            )
        elif uri.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uri.path)
            self._server = await loop.create_unix_server(self._new_protocol, uri.path, backlog=backlog)
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="idle sweeper")
        if settings.zeroconf and self.port:
            await self._announce(settings.zeroconf, self.port)

    def _new_protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(ClientReader(self.limits), self._serve)

    async def serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        reader = ClientReader(self.limits)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
        await self._serve(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def _serve(self, reader: ClientReader, writer: asyncio.StreamWriter) -> None:
        handler = Handler(self.services, reader, writer)
        if len(self.handlers) >= self.services.settings.max_connections and not self._evict_idle():
            _LOGGER.warning("Refusing %s: %d clients already connected and busy", handler.peer, len(self.handlers))
            await handler.refuse("server busy: too many connections")
            return
        self.handlers[handler] = asyncio.current_task()  # type: ignore[assignment]
        try:
            await handler.run()
        finally:
            del self.handlers[handler]

    def _evict_idle(self) -> bool:
        """Make room by closing the connection that has waited longest without a request."""
        idle = [h for h in self.handlers if h.idle_since is not None]
        if not idle:
            return False
        self._cut_off(min(idle, key=lambda h: h.idle_since or 0.0), "closed to make room for another client", "Busy")
        return True

    def _cut_off(self, handler: Handler, text: str, code: str) -> None:
        handler.cut_reason = (text, code)
        handler.idle_since = None  # cut off once
        self.handlers[handler].cancel()

    async def _sweep_idle(self) -> None:
        """Time out clients that have sent nothing for too long: one timer for all, not one per event."""
        timeout = self.services.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            for handler in list(self.handlers):
                if handler.idle_since is not None and now - handler.idle_since >= timeout:
                    self._cut_off(handler, f"idle for {timeout:g} s", "Timeout")

    async def _announce(self, name: str, port: int) -> None:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf

            host = urlsplit(self.services.settings.uri).hostname
            self._zeroconf = HomeAssistantZeroconf(
                port=port, name=name, host=None if host in ("0.0.0.0", "::", "") else host
            )
            await self._zeroconf.register_server()
            _LOGGER.info("Announced on the local network as %s (_wyoming._tcp)", name)
        except Exception as err:  # noqa: BLE001 - discovery is a convenience; serving goes on
            _LOGGER.warning("Zeroconf announcement failed: %s (is the zeroconf package installed?)", err)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let in-flight requests finish for ``grace`` seconds, then cut them."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for handler in self.handlers:
            if handler.idle_since is not None:  # nothing in flight: no reason to wait for it
                handler.writer.close()
        if self.handlers:
            _LOGGER.info("Waiting up to %g s for %d connection(s)", grace, len(self.handlers))
            _, pending = await asyncio.wait(set(self.handlers.values()), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf._aiozc.async_close()
