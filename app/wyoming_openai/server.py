"""Serving Wyoming clients: connection limits, idle time-outs, graceful shutdown, zeroconf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from wyoming.error import Error

from . import accept_process
from .acceptor import Acceptor
from .connection import Connection, IdleTimeout
from .framing import Limits, ProtocolError, encode_event
from .handler import Handler, Services

_LOGGER = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds in-flight requests get to finish after SIGTERM
# Events whose handling waits on the upstream: while they run, a client that hangs up cancels them.
SLOW_EVENTS = frozenset({"audio-stop", "synthesize", "synthesize-stop"})


class WyomingServer:
    def __init__(self, services: Services, reuse_port: bool = False) -> None:
        self.services = services
        self.reuse_port = reuse_port  # one of several worker processes sharing the port
        settings = services.settings
        self.limits = Limits(settings.max_event_bytes, settings.max_payload_bytes)
        self._server: asyncio.AbstractServer | None = None
        self._acceptor: Acceptor | None = None
        self.accept_process: accept_process.AcceptProcess | None = None
        self._connections: dict[Connection, asyncio.Task] = {}
        self._refusals: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        self._zeroconf = None

    @property
    def port(self) -> int | None:
        sockets = self._acceptor.sockets if self._acceptor else self._server.sockets if self._server else []
        return sockets[0].getsockname()[1] if sockets else None

    async def start(self) -> None:
        """Listen (returns at once); stdio:// serves one client until stdin ends, in serve_stdio()."""
        uri = urlsplit(self.services.settings.uri)
        loop = asyncio.get_running_loop()
        if uri.scheme == "tcp":
            acceptor = Acceptor(
                uri.hostname, uri.port or 0, self._backlog(), self.reuse_port, self.limits,
                lambda: self.services.catalog.info_bytes,
                lambda *first_read: Connection(self.limits, self._admit, *first_read),
            )  # fmt: skip
            try:
                acceptor.start()
                self._acceptor = acceptor
                if self.services.settings.accept_process and accept_process.supported():
                    self._start_accept_process(acceptor)
            except NotImplementedError:  # a loop that cannot watch sockets (Windows' proactor)
                acceptor.close()
                self._server = await loop.create_server(
                    self._new_connection, host=uri.hostname, port=uri.port, backlog=self._backlog(),
                    reuse_port=self.reuse_port or None,
                )  # fmt: skip
        elif uri.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uri.path)
            self._server = await loop.create_unix_server(self._new_connection, path=uri.path, backlog=self._backlog())
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="idle sweeper")
        if self.services.settings.zeroconf and self.port:
            await self._announce(self.services.settings.zeroconf, self.port)

    def _start_accept_process(self, acceptor: Acceptor) -> None:
        catalog = self.services.catalog
        helper = accept_process.AcceptProcess(acceptor, self.services.settings.max_connections)
        try:
            helper.start(catalog.info_bytes)
        except OSError as err:
            _LOGGER.warning("Cannot start the accept process (%s); the serving process accepts alone", err)
            return
        catalog.on_change.append(helper.send_info)
        self.accept_process = helper

    def _backlog(self) -> int:
        # Each request is a new connection: a house full of satellites connecting at once must not
        # overflow the accept queue (the default, 100, makes clients retry their SYN a second later).
        return max(128, 2 * self.services.settings.max_connections)

    async def serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        connection = Connection(self.limits)
        await loop.connect_write_pipe(connection.write_side, sys.stdout)
        await loop.connect_read_pipe(lambda: connection, sys.stdin)
        self._admit(connection)
        await self._connections[connection]

    def _new_connection(self) -> Connection:
        return Connection(self.limits, on_open=self._admit)

    def _admit(self, connection: Connection) -> None:
        """Take a client on as it connects: from here on, what needs no waiting is answered at once,
        even before its task first runs (a ``describe`` under load then costs one loop turn, not three)."""
        peer = _peer_name(connection)
        if len(self._connections) >= self.services.settings.max_connections and not self._evict_idle():
            _LOGGER.warning("Refusing %s: %d clients already connected and busy", peer, len(self._connections))
            refusal = asyncio.ensure_future(_refuse(connection))
            self._refusals.add(refusal)
            refusal.add_done_callback(self._refusals.discard)
            return
        handler = Handler(self.services, connection, peer)
        connection.handle_now = handler.handle_now
        connection.idle_since = asyncio.get_running_loop().time() - connection.silent_for
        self._connections[connection] = asyncio.ensure_future(self._serve(connection, handler, peer))

    async def _sweep_idle(self) -> None:
        """Time out clients that have sent nothing for too long: one timer for all, not one per event."""
        timeout = self.services.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            for connection in list(self._connections):
                if connection.idle_since is not None and now - connection.idle_since >= timeout:
                    connection.time_out()

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
        if self.accept_process is not None:
            helper, self.accept_process = self.accept_process, None
            self.services.catalog.on_change.remove(helper.send_info)
            await helper.stop()  # first: it shares the listening sockets
        if self._acceptor is not None:
            self._acceptor.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in self._connections:
            if connection.idle_since is not None:  # nothing in flight: no reason to wait for it
                connection.close()
        if self._connections:
            _LOGGER.info("Waiting up to %g s for %d connection(s)", grace, len(self._connections))
            _, pending = await asyncio.wait(set(self._connections.values()), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf._aiozc.async_close()

    async def _serve(self, connection: Connection, handler: Handler, peer: str) -> None:
        settings = self.services.settings
        loop = asyncio.get_running_loop()
        _LOGGER.debug("%s connected", peer)
        try:
            while True:  # idle from _admit (less the time the accept process held it), then after each event
                event = await connection.next_event()
                if event is None:
                    break
                connection.idle_since = None
                if event.type in SLOW_EVENTS:
                    keep_going = await _unless_client_leaves(handler.handle_event(event), connection.left, peer)
                else:
                    keep_going = await handler.handle_event(event)
                if not keep_going:
                    break
                connection.idle_since = loop.time()
        except IdleTimeout:
            _LOGGER.info("%s idle for %g s: disconnecting", peer, settings.idle_timeout)
            await _close_with_error(connection, f"idle for {settings.idle_timeout:g} s", "Timeout")
        except ProtocolError as err:
            _LOGGER.warning("%s: %s; closing", peer, err)
            await _close_with_error(connection, str(err), "ProtocolError")
        except ConnectionError:
            _LOGGER.debug("%s disconnected", peer)  # health checks do this every 30 s: not news
        except asyncio.CancelledError:
            _LOGGER.info("%s: cut off by shutdown", peer)
            await _close_with_error(connection, "server shutting down", "Shutdown")
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            _LOGGER.exception("%s: unexpected failure", peer)
            await _close_with_error(connection, "internal error in the proxy (see its log)", "InternalError")
        finally:
            self._connections.pop(connection, None)
            connection.idle_since = None
            connection.handle_now = lambda event: False
            await handler.disconnect()
            connection.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await connection.wait_closed()
            _LOGGER.debug("%s closed", peer)

    def _evict_idle(self) -> bool:
        """Make room by closing the connection that has waited longest without a request."""
        idle = [c for c in self._connections if c.idle_since is not None and not c.evicted]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)  # type: ignore[arg-type, return-value]
        oldest.evicted = True
        with contextlib.suppress(Exception):
            oldest.write(encode_event(Error(text="closed to make room for another client", code="Busy").event()))
        oldest.close()
        return True


async def _unless_client_leaves(work: Coroutine[Any, Any, bool], left: asyncio.Future, peer: str) -> bool:
    """Run a request; if the client hangs up meanwhile, cancel it (and its upstream call)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _LOGGER.info("%s left during its request; cancelled it", peer)
    return False


def _peer_name(connection: Connection) -> str:
    peer = connection.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "client"


async def _refuse(connection: Connection) -> None:
    await _close_with_error(connection, "server busy: too many connections", "Busy")
    connection.close()


async def _close_with_error(connection: Connection, text: str, code: str) -> None:
    with contextlib.suppress(Exception):
        connection.write(encode_event(Error(text=text, code=code).event()))
        async with asyncio.timeout(1.0):
            await connection.drain()
