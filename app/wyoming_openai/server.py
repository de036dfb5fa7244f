"""Serving Wyoming clients: connection limits, idle time-outs, graceful shutdown, zeroconf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from urllib.parse import urlsplit

from wyoming.error import Error

from .framing import Limits, ProtocolError, encode_event, read_event
from .handler import Handler, Services

_LOGGER = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds in-flight requests get to finish after SIGTERM


class WyomingServer:
    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.limits = Limits(settings.max_event_bytes, settings.max_payload_bytes)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self._zeroconf = None

    @property
    def port(self) -> int | None:
        if self._server and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return None

    async def start(self) -> None:
        """Listen (returns at once); stdio:// serves one client until stdin ends, in serve_stdio()."""
        uri = urlsplit(self.services.settings.uri)
        if uri.scheme == "tcp":
            self._server = await asyncio.start_server(
                self._on_connection, host=uri.hostname, port=uri.port, limit=self.limits.max_event_bytes
            )
        elif uri.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uri.path)
            self._server = await asyncio.start_unix_server(
                self._on_connection, path=uri.path, limit=self.limits.max_event_bytes
            )
        if self.services.settings.zeroconf and self.port:
            await self._announce(self.services.settings.zeroconf, self.port)

    async def serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limits.max_event_bytes)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        await self._on_connection(reader, writer)

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
        if self._connections:
            _LOGGER.info("Waiting up to %g s for %d connection(s)", grace, len(self._connections))
            _, pending = await asyncio.wait(set(self._connections), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf._aiozc.async_close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer)
        settings = self.services.settings
        if len(self._connections) >= settings.max_connections:
            _LOGGER.warning("Refusing %s: %d clients already connected", peer, len(self._connections))
            await _close_with_error(writer, "server busy: too many connections", "Busy")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        handler = Handler(self.services, writer, peer)
        _LOGGER.debug("%s connected", peer)
        try:
            while True:
                try:
                    async with asyncio.timeout(settings.idle_timeout):
                        event = await read_event(reader, self.limits)
                except TimeoutError:
                    _LOGGER.info("%s idle for %g s: disconnecting", peer, settings.idle_timeout)
                    await _close_with_error(writer, f"idle for {settings.idle_timeout:g} s", "Timeout")
                    break
                if event is None:
                    break
                if not await handler.handle_event(event):
                    break
        except ProtocolError as err:
            _LOGGER.warning("%s: %s; closing", peer, err)
            await _close_with_error(writer, str(err), "ProtocolError")
        except (ConnectionError, asyncio.IncompleteReadError):
            _LOGGER.info("%s disconnected", peer)
        except asyncio.CancelledError:
            _LOGGER.info("%s: cut off by shutdown", peer)
            await _close_with_error(writer, "server shutting down", "Shutdown")
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            _LOGGER.exception("%s: unexpected failure", peer)
            await _close_with_error(writer, "internal error in the proxy (see its log)", "InternalError")
        finally:
            self._connections.discard(task)
            await handler.disconnect()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            _LOGGER.debug("%s closed", peer)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "client"


async def _close_with_error(writer: asyncio.StreamWriter, text: str, code: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(encode_event(Error(text=text, code=code).event()))
        async with asyncio.timeout(1.0):
            await writer.drain()
