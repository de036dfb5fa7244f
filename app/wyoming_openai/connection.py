"""One client's byte stream: events parsed as bytes arrive, queued in order for its handler.

An asyncio protocol rather than streams: a read that brings a hundred audio chunks is parsed in one
pass, and events that need no waiting (an audio chunk to keep, a ``describe`` to answer) are handled
right there when nothing is queued ahead of them, instead of each costing a trip through a queue and
a task switch. Home Assistant sends 100 audio chunks a second per satellite, so this is most of the
proxy's work for speech-to-text.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from wyoming.event import Event

from .framing import EventParser, Limits

EVENT_BACKLOG = 64  # events read ahead of the handler; beyond it, TCP pushes back on the client


class IdleTimeout(Exception):
    """The client sent no complete event for longer than the idle time-out."""


class Connection(asyncio.Protocol):
    def __init__(
        self,
        limits: Limits,
        on_open: Callable[[Connection], Any] | None = None,
        parser: EventParser | None = None,
        received: list[Event] | None = None,
        unsent: bytes = b"",
        silent_for: float = 0.0,
    ) -> None:
        # The acceptor's parser, and the events it read, when the acceptor took the first bytes.
        self.parser = parser or EventParser(limits)
        self._received = received or []
        self._unsent = unsent  # the end of a reply the acceptor began
        self.silent_for = silent_for  # seconds it had been silent when the accept process handed it over
        self._on_open = on_open
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.BaseTransport | None = None
        self._write_transport: asyncio.WriteTransport | None = None
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future | None = None  # the handler waiting, with nothing queued
        self._handler_idle = True  # between events: what it would do at once may be done in place
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._timed_out = False
        self.lost = False
        self.left: asyncio.Future = self._loop.create_future()  # done when the client's stream ends
        self.closed: asyncio.Future = self._loop.create_future()  # done when the transport is gone
        self.idle_since: float | None = None  # loop time the handler began waiting for a request
        self.evicted = False  # closed to make room for another client
        # Handles an event in place when nothing is queued ahead of it; False sends it the usual way.
        self.handle_now: Callable[[Event], bool] = lambda event: False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self._write_transport is None:
            self._write_transport = transport  # type: ignore[assignment]
        if self._unsent:
            transport.write(self._unsent)  # type: ignore[attr-defined]
            self._unsent = b""
        if self._on_open is not None:
            self._on_open(self)
        received, self._received = self._received, []
        self._take(received)  # before the transport reads anything, so the order holds

    def data_received(self, data: bytes) -> None:
        self._take(self.parser.feed(data))

    def _take(self, events: list[Event]) -> None:
        if events and self._handler_idle and not self._events:  # what the handler would do at once, do here
            self.idle_since = self._loop.time()
            events = events[self._handle_now(events) :]
        self._events.extend(events)
        if self._events or self.parser.error is not None:
            self._wake()
            if len(self._events) >= EVENT_BACKLOG and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        if self.parser.error is not None:
            self._client_left()

    def eof_received(self) -> bool:
        self.parser.end()
        self._client_left()
        return True  # the handler closes, after telling a client that stopped mid-event why

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._client_left()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # --- for the handler --------------------------------------------------------------------

    async def next_event(self) -> Event | None:
        """The next event in order that needs the handler's full attention; None once the client
        has ended its stream. Raises ProtocolError for bad framing, IdleTimeout after time_out()."""
        self._handler_idle = True
        while True:
            if self._events:
                # Events that queued up behind a request (an utterance's chunks behind its audio-start).
                taken = self._handle_now(self._events)
                for _ in range(taken):
                    self._events.popleft()
                if self._reading_paused and len(self._events) < EVENT_BACKLOG // 2:
                    self._reading_paused = False
                    if not self.lost:
                        self.transport.resume_reading()  # type: ignore[union-attr]
                if self._events:
                    self._handler_idle = False
                    return self._events.popleft()
            if self.parser.error is not None:
                raise self.parser.error
            if self._timed_out:
                raise IdleTimeout
            if self.left.done():
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def time_out(self) -> None:
        """Make the waiting handler give up (see next_event)."""
        self._timed_out = True
        self._wake()

    def write(self, data: bytes) -> None:
        self._write_transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("connection lost")
        if self._writing_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._write_transport not in (None, self.transport):  # stdio: a separate write pipe
            self._write_transport.close()  # type: ignore[union-attr]

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default) if self.transport is not None else default

    def write_side(self) -> asyncio.Protocol:
        """A protocol for a separate write pipe (stdio), reporting its flow control here."""
        return _WriteSide(self)

    # --- plumbing ---------------------------------------------------------------------------

    def _handle_now(self, events: Iterable[Event]) -> int:
        """How many of ``events``, from the first, handle_now took."""
        taken = 0
        for event in events:
            try:
                if self._writing_paused or not self.handle_now(event):  # (a write may pause writing)
                    break
            except Exception:  # noqa: BLE001 - let the handler meet it again and report it
                break
            taken += 1
        return taken

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _client_left(self) -> None:
        if not self.left.done():
            self.left.set_result(None)
        self._wake()


class _WriteSide(asyncio.Protocol):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection._write_transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.connection.pause_writing()

    def resume_writing(self) -> None:
        self.connection.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.connection_lost(exc)
