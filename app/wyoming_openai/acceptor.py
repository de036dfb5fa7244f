"""Accepting TCP clients ourselves, so a ``describe`` is answered the moment it is accepted.

Home Assistant asks ``describe`` on a new connection and gives up if ``info`` is late. With the
loop's own server, a new connection's protocol is set up from the ready queue, behind every task
that the same turn woke: when many requests finish at once that is tens of milliseconds. Here the
listening socket is watched directly (uvloop and asyncio call such readers as the poll reports
them), each new client is read at once, and a ``describe`` is answered on the spot; every client is
then handed to the loop as a transport, with what was read of it so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from wyoming.event import Event

from .framing import EventParser, Limits

_LOGGER = logging.getLogger(__name__)

ACCEPT_PAUSE = 1.0  # seconds to stop accepting when the process is out of file descriptors
FIRST_READ_BYTES = 65536


class Acceptor:
    """Listens on ``host:port``. ``protocol_for(parser, events, unsent, silent_for)`` makes each
    client's protocol from the parser that read its first bytes, the events those held still to
    handle, the end of a reply the socket did not take at once, and how long it has been silent."""

    def __init__(
        self,
        host: str | None,
        port: int,
        backlog: int,
        reuse_port: bool,
        limits: Limits,
        info_bytes: Callable[[], bytes],
        protocol_for: Callable[[EventParser, list[Event], bytes, float], asyncio.Protocol],
    ) -> None:
        self.backlog = backlog
        self.limits = limits
        self.info_bytes = info_bytes
        self.protocol_for = protocol_for
        self.sockets = _listen(host, port, backlog, reuse_port)
        self._loop = asyncio.get_running_loop()
        self._adopting: set[asyncio.Task] = set()

    def start(self) -> None:
        """Raises NotImplementedError on a loop that cannot watch sockets."""
        for listener in self.sockets:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def close(self) -> None:
        for listener in self.sockets:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(listener.fileno())
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(self.backlog):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of file descriptors, say: those connected are still served
                _LOGGER.warning("Cannot accept a client (%s); pausing for %g s", err, ACCEPT_PAUSE)
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_PAUSE, self._resume, listener)
                return
            self._take(client)

    def _resume(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _take(self, client: socket.socket) -> None:
        client.setblocking(False)
        parser, events, unsent = EventParser(self.limits), [], b""
        try:
            events = parser.feed(client.recv(FIRST_READ_BYTES))
        except (BlockingIOError, InterruptedError):
            pass  # nothing sent yet: the transport will read it
        except OSError:
            client.close()
            return
        if events and events[0].type == "describe":
            info = self.info_bytes()
            try:
                sent = client.send(info)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                client.close()
                return
            events, unsent = events[1:], info[sent:]
        self._adopt(client, parser, events, unsent, 0.0)

    def hand_over(
        self, client: socket.socket, received: bytes, answered: int, unsent: bytes, silent_for: float
    ) -> None:
        """A client the accept process took: it sent ``received``, and has been silent since for
        ``silent_for`` seconds; its first ``answered`` events were describes, answered but for ``unsent``."""
        client.setblocking(False)
        parser = EventParser(self.limits)
        events = parser.feed(received)
        while answered and events and events[0].type == "describe":
            events, answered = events[1:], answered - 1
        self._adopt(client, parser, events, unsent, silent_for)

    def _adopt(
        self, client: socket.socket, parser: EventParser, events: list[Event], unsent: bytes, silent_for: float
    ) -> None:
        adopting = self._loop.create_task(
            self._loop.connect_accepted_socket(lambda: self.protocol_for(parser, events, unsent, silent_for), client)
        )
        self._adopting.add(adopting)
        adopting.add_done_callback(lambda task: self._adopted(task, client))

    def _adopted(self, task: asyncio.Task[Any], client: socket.socket) -> None:
        self._adopting.discard(task)
        if task.cancelled() or task.exception() is not None:
            _LOGGER.debug("Could not take a client on: %r", None if task.cancelled() else task.exception())
            client.close()


def _listen(host: str | None, port: int, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (all of them for None or ""), on one port."""
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if hasattr(socket, "TCP_DEFER_ACCEPT"):
                # Linux: a client is ready to accept once its first bytes are in (a silent one after
                # a second). Otherwise one accepted between its connect and its describe has that
                # describe wait for the loop's next turn, where the accept process cannot step in:
                # describe p99 at 200 STT clients was 9-19 ms without this, 4-6 ms with it.
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((address[0], port, *address[2:]))
            listener.listen(backlog)
            listener.setblocking(False)
            port = port or listener.getsockname()[1]  # port 0: the same free port on every address
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners
