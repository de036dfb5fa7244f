"""A small second process that steps in to accept TCP clients and answer ``describe`` while the
serving process is busy, so that ``info`` is never late.

Home Assistant asks ``describe`` on a new connection and gives up if ``info`` does not come within
about a second. The serving process accepts clients and answers ``describe`` the moment its loop
polls, but under load one turn of its loop (a burst of upstream answers) takes 10-20 ms, and a new
client waits for it. This process watches the same listening sockets and does nothing else: a
client still waiting after STEP_IN_SECONDS is accepted here, the ``describe`` events it opens with
are answered, and it is handed to the serving process (over a Unix socket: the socket itself, the
bytes read from it, how many describes were answered) as soon as it asks for more or stays silent.
The serving process parses those bytes again and skips the describes already answered: a client
sees one ordered conversation. An idle serving process wins the race for every client, so a quiet
house pays for no hand-over.

The serving process sends the current ``info`` here whenever it changes; if this process ends, the
serving process goes on accepting alone. Linux only (passing sockets needs ``SOCK_SEQPACKET`` and
``SCM_RIGHTS``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from typing import TYPE_CHECKING

from .acceptor import ACCEPT_PAUSE, FIRST_READ_BYTES
from .framing import EventParser, Limits, ProtocolError, first_event_type

if TYPE_CHECKING:
    from .acceptor import Acceptor

_LOGGER = logging.getLogger(__name__)

READ_BYTES = FIRST_READ_BYTES  # what has come is handed over in one piece, parsed in one pass
MAX_HANDED_BYTES = 65536  # of describes and what follows them, before the client is handed on anyway
HOLD_SECONDS = 1.0  # a client silent this long is handed on (the serving process times it out)
# A client the serving process has not accepted within this time waits behind a busy loop: accept
# it here. An idle serving process accepts within a few hundred microseconds, and serves the client
# better itself, without a hand-over. (Measured at 200 clients with jittered answers: describe p99
# 5.3-5.8 ms at 1 ms, 8.9 ms at 2 ms.)
STEP_IN_SECONDS = 0.001
MAX_INFO_BYTES = 1024 * 1024  # the default --max-event-bytes: what a Wyoming client reads in one event
STOP_GRACE = 1.0
FD_SPACE = socket.CMSG_SPACE(struct.calcsize("i"))  # room for one passed socket

# Messages on the channel, each one SOCK_SEQPACKET record, told apart by their first byte.
INFO = b"I"  # serving -> here: the info event to answer with, encoded
READY = b"R"  # here -> serving: stepping in from now on
# here -> serving: a client (its socket rides along): how many describes were answered, for how many
# seconds it has been silent, how long the unsent end of the last answer is; then that end, then
# every byte read from the client.
CLIENT = b"C"
CLIENT_HEADER = struct.Struct("!IdI")
NOTHING_ANSWERED = CLIENT_HEADER.pack(0, 0.0, 0)
LOG = b"L"  # here -> serving: a log record (level, then text) for the serving process's log
MAX_MESSAGE_BYTES = 1 + CLIENT_HEADER.size + MAX_INFO_BYTES + MAX_HANDED_BYTES + READ_BYTES


def supported() -> bool:
    return sys.platform.startswith("linux")


class AcceptProcess:
    """The serving process's side: starts the process, keeps its ``info`` current, and hands the
    clients it sends to ``acceptor``, which accepts on the same sockets."""

    def __init__(self, acceptor: Acceptor, max_pending: int) -> None:
        self.acceptor = acceptor
        self.max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future = self._loop.create_future()
        self.process: subprocess.Popen | None = None
        self._channel: socket.socket | None = None
        self.clients_handed_over = 0
        # Handed-over sockets are built with the listener's family: asking each socket costs syscalls.
        self._client_family = acceptor.sockets[0].family if len(acceptor.sockets) == 1 else -1
        self._buffer = bytearray(MAX_MESSAGE_BYTES)  # one, for every message: they are read one at a time

    def start(self, info: bytes) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            _allow_large_messages(end)
        limits = self.acceptor.limits
        fds = [theirs.fileno(), *(listener.fileno() for listener in self.acceptor.sockets)]
        command = [
            sys.executable, "-P", "-m", __name__, "--channel", str(fds[0]),
            "--listeners", ",".join(map(str, fds[1:])), "--max-event-bytes", str(limits.max_event_bytes),
            "--max-payload-bytes", str(limits.max_payload_bytes), "--max-pending", str(self.max_pending),
        ]  # fmt: skip
        # -P and the serving process's own path: the same wyoming_openai, whatever the working directory.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        try:
            self.process = subprocess.Popen(command, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        _LOGGER.debug("Accept process %d started", self.process.pid)
        self._channel = ours
        ours.setblocking(False)
        if not self.send_info(info):
            return
        self._loop.add_reader(ours.fileno(), self._on_channel)

    def send_info(self, info: bytes) -> bool:
        """Tell the process what to answer; if it cannot be told, stop it and accept here."""
        if self._channel is None:
            return False
        try:
            self._channel.send(INFO + info)
        except OSError as err:  # too large for the socket, or the process is gone
            _LOGGER.warning(
                "Stopping the accept process: it cannot take the info (%s); the serving process accepts alone", err
            )
            self._gone()
            return False
        return True

    def _on_channel(self) -> None:
        channel = self._channel
        assert channel is not None
        buffer = self._buffer
        for _ in range(1024):  # then let the loop run; the reader is called again
            try:
                size, ancillary, flags, _ = channel.recvmsg_into([buffer], FD_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                _LOGGER.warning("Lost the accept process (%s); the serving process accepts alone", err)
                self._gone()
                return
            fds = [fd for level, kind, data in ancillary if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
                   for fd in array.array("i", data[: len(data) - len(data) % 4])]  # fmt: skip
            if not size:
                _LOGGER.warning("The accept process ended; the serving process accepts alone")
                self._gone()
                return
            kind = buffer[:1]
            if kind == CLIENT and len(fds) == 1:
                answered, silent_for, unsent_length = CLIENT_HEADER.unpack_from(buffer, 1)
                start = 1 + CLIENT_HEADER.size
                view = memoryview(buffer)
                unsent = bytes(view[start : start + unsent_length])
                received = bytes(view[start + unsent_length : size])
                view.release()
                client = socket.socket(self._client_family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fds[0])
                self.acceptor.hand_over(client, received, answered, unsent, silent_for)
                self.clients_handed_over += 1
            elif kind == READY:
                if not self.ready.done():
                    self.ready.set_result(None)
            elif kind == LOG:
                _LOGGER.log(buffer[1], "%s", bytes(buffer[2:size]).decode("utf-8", "replace"))
            else:  # a client whose socket did not arrive (MSG_CTRUNC: this process is out of descriptors)
                for fd in fds:
                    os.close(fd)
                _LOGGER.warning("Lost a client the accept process handed over (flags %#x)", flags)

    def _close_channel(self) -> None:
        """The process, if still there, ends when it sees this."""
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._channel.fileno())
            self._channel.close()
            self._channel = None

    def _gone(self) -> None:
        """Stop using the process; the serving process accepts alone."""
        self._close_channel()
        if self.process is not None:
            self.process.poll()  # reaped, if it has ended
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the accept process ended"))
            self.ready.exception()  # retrieved: nobody has to wait for it

    async def stop(self) -> None:
        """End the process (clients it holds have only asked ``describe``); the caller stops listening."""
        self._close_channel()
        if not self.ready.done():
            self.ready.cancel()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                await asyncio.to_thread(process.wait)
                return
            await asyncio.sleep(0.01)


# --- the accept process itself ----------------------------------------------------------------


class _Client:
    __slots__ = (
        "sock", "parser", "received", "describes", "answered", "unsent", "last_heard", "handing_on", "ended", "watched",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, limits: Limits, now: float) -> None:
        self.sock = sock
        self.parser = EventParser(limits)
        self.received = bytearray()
        self.describes = 0  # read, not yet answered
        self.answered = 0  # answers begun (the last one may still be in ``unsent``)
        self.unsent = b""  # the end of the answer being written
        self.last_heard = now
        self.handing_on = False  # it asked for more than describe: to the serving process, once written
        self.ended = False  # its stream ended after describes: close once written
        self.watched = 0  # the selector events it is registered for


class _Acceptor:
    def __init__(
        self, channel: socket.socket, listeners: list[socket.socket], limits: Limits, max_pending: int
    ) -> None:
        self.channel = channel
        self.listeners = listeners
        self.limits = limits
        self.max_pending = max_pending
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, _Client] = {}  # oldest first
        self.outbox: deque[tuple[bytes, socket.socket]] = deque()  # hand-overs the channel had no room for
        self.outbox_waiting = False  # on room in the channel
        self.info = b""
        self.watching_listeners = False
        self.step_in_at: float | None = None  # when to accept the clients the serving process left waiting

    def run(self) -> None:
        self._on_channel(self.channel, selectors.EVENT_READ)  # blocking: the first info, or the end
        self.channel.setblocking(False)
        self.selector.register(self.channel, selectors.EVENT_READ, self._on_channel)
        self._watch_listeners(True)
        self.channel.send(READY)
        while True:
            deadlines = [] if self.step_in_at is None else [self.step_in_at]
            if self.clients:
                deadlines.append(next(iter(self.clients.values())).last_heard + HOLD_SECONDS)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = self.selector.select(timeout)
            ready.sort(key=lambda item: item[0].fileobj is not self.channel)  # new info before new clients
            for key, mask in ready:
                key.data(key.fileobj, mask)
            if self.step_in_at is not None and time.monotonic() >= self.step_in_at:
                self._step_in()
            self._hand_on_silent()

    def _watch_listeners(self, on: bool) -> None:
        if on == self.watching_listeners:
            return
        self.watching_listeners = on
        for listener in self.listeners:
            if on:
                self.selector.register(listener, selectors.EVENT_READ, self._on_listener)
            else:
                self.selector.unregister(listener)

    def _on_channel(self, channel: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_outbox()
        if mask & selectors.EVENT_READ:
            try:
                message = channel.recv(MAX_INFO_BYTES + 1)
            except (BlockingIOError, InterruptedError):
                return
            if not message:  # the serving process is stopping, or gone
                raise SystemExit(0)
            if message[:1] == INFO:
                self.info = message[1:]

    def _on_listener(self, listener: socket.socket, mask: int) -> None:
        """A client is waiting to be accepted: the serving process takes it at once when it is free;
        if it is still waiting after STEP_IN_SECONDS, the serving process is busy, and this one takes it."""
        self._watch_listeners(False)
        self.step_in_at = time.monotonic() + STEP_IN_SECONDS

    def _step_in(self) -> None:
        self.step_in_at = None
        if not all([self._accept(listener) for listener in self.listeners]):
            self.step_in_at = time.monotonic() + ACCEPT_PAUSE  # and the serving process accepts alone
            return
        self._watch_listeners(len(self.outbox) < self.max_pending)

    def _accept(self, listener: socket.socket) -> bool:
        """False when a client could not be accepted."""
        for _ in range(128):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as err:  # out of descriptors, say
                self._log(logging.WARNING, f"cannot accept a client ({err}); pausing for {ACCEPT_PAUSE:g} s")
                self._hand_all_on()
                return False
            sock.setblocking(False)
            try:
                first = sock.recv(READ_BYTES)  # here already when the client waited for the step-in
            except (BlockingIOError, InterruptedError):
                first = None
            except OSError:
                sock.close()
                continue
            if first and _opens_with_more_than_describe(first):  # most clients: straight on, as they came
                self._send_client(CLIENT + NOTHING_ANSWERED + first, sock)
                continue
            client = _Client(sock, self.limits, time.monotonic())
            self.clients[sock] = client
            if first is not None:
                self._take(client, first)
            self._write(client)
            if len(self.clients) > self.max_pending:
                self._hand_on(next(iter(self.clients.values())))
        return True

    def _on_client(self, sock: socket.socket, mask: int) -> None:
        client = self.clients.get(sock)
        if client is None:
            return
        if mask & selectors.EVENT_READ and not (client.handing_on or client.ended):
            try:
                data = sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(client)
                return
            if data is not None:
                self._take(client, data)
        self._write(client)

    def _take(self, client: _Client, data: bytes) -> None:
        client.last_heard = time.monotonic()
        parser = client.parser
        if not data:
            parser.end()
            # Cut short in the middle of an event: the serving process says so, as for any client.
            client.handing_on = parser.error is not None
            client.ended = not client.handing_on
            return
        client.received += data
        for event in parser.feed(data):
            if event.type != "describe":
                client.handing_on = True
                break
            client.describes += 1
        if parser.error is not None or parser.pending_type not in (None, "describe"):
            client.handing_on = True
        elif len(client.received) > MAX_HANDED_BYTES:
            client.handing_on = True

    def _write(self, client: _Client) -> None:
        """Answer its describes one at a time: a client that does not read is pushed back, and hands
        on at most one answer's end."""
        while client.unsent or client.describes:
            if not client.unsent:
                client.unsent, client.describes, client.answered = self.info, client.describes - 1, client.answered + 1
            try:
                sent = client.sock.send(client.unsent)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            client.unsent = client.unsent[sent:]
            if client.unsent:
                self._watch(client, selectors.EVENT_WRITE)
                return
        if client.handing_on:
            self._hand_on(client)
        elif client.ended:
            self._drop(client)
        else:
            self._watch(client, selectors.EVENT_READ)

    def _watch(self, client: _Client, events: int) -> None:
        if client.watched == events:
            return
        if client.watched:
            self.selector.modify(client.sock, events, self._on_client)
        else:
            self.selector.register(client.sock, events, self._on_client)
        client.watched = events

    def _hand_on_silent(self) -> None:
        deadline = time.monotonic() - HOLD_SECONDS
        while self.clients:
            oldest = next(iter(self.clients.values()))
            if oldest.last_heard > deadline:
                return
            self._hand_on(oldest)

    def _hand_all_on(self) -> None:
        for client in list(self.clients.values()):
            self._hand_on(client)

    def _hand_on(self, client: _Client) -> None:
        """To the serving process, with what it sent; the rest of an info answer goes first, as is."""
        self._forget(client)
        silent_for = time.monotonic() - client.last_heard
        header = CLIENT_HEADER.pack(client.answered, silent_for, len(client.unsent))
        message = b"".join((CLIENT, header, client.unsent, client.received))
        self._send_client(message, client.sock)

    def _send_client(self, message: bytes, sock: socket.socket) -> None:
        self.outbox.append((message, sock))
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        was_waiting = self.outbox_waiting
        while self.outbox:
            message, sock = self.outbox[0]
            try:
                socket.send_fds(self.channel, [message], [sock.fileno()])
            except (BlockingIOError, InterruptedError):
                break
            except (ConnectionError, BrokenPipeError):
                raise SystemExit(0) from None  # the serving process is gone
            except OSError as err:  # this client only (too many sockets in flight, say)
                self._log(logging.WARNING, f"cannot hand a client to the serving process: {err}")
            self.outbox.popleft()
            sock.close()
        self.outbox_waiting = bool(self.outbox)
        if self.outbox_waiting != was_waiting:  # watch the channel for room, or stop watching
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox_waiting else 0)
            self.selector.modify(self.channel, events, self._on_channel)
        if self.step_in_at is None:  # while the serving process takes no clients, leave new ones be
            self._watch_listeners(len(self.outbox) < self.max_pending)

    def _drop(self, client: _Client) -> None:
        self._forget(client)
        client.sock.close()

    def _forget(self, client: _Client) -> None:
        self.clients.pop(client.sock, None)
        if client.watched:
            self.selector.unregister(client.sock)
            client.watched = 0

    def _log(self, level: int, text: str) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(LOG + bytes([level]) + text.encode("utf-8", "replace"))


def _opens_with_more_than_describe(data: bytes) -> bool:
    """Whether ``data`` begins with a whole header line that is not a describe (or is no event
    header: the serving process, which reads everything again, says what is wrong)."""
    try:
        return first_event_type(data) not in (None, "describe")
    except ProtocolError:
        return True


def _allow_large_messages(end: socket.socket) -> None:
    """A Unix datagram is at most the sender's buffer: make room for a large info (capped by the
    kernel at net.core.wmem_max; a larger info makes the serving process accept by itself)."""
    with contextlib.suppress(OSError):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE_BYTES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Started by wyoming_openai; not for direct use.")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--listeners", required=True)
    parser.add_argument("--max-event-bytes", type=int, required=True)
    parser.add_argument("--max-payload-bytes", type=int, required=True)
    parser.add_argument("--max-pending", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl+C reaches the whole process group: the serving process decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=args.channel)
    listeners = [socket.socket(fileno=int(fd)) for fd in args.listeners.split(",")]
    for listener in listeners:
        listener.setblocking(False)
    limits = Limits(args.max_event_bytes, args.max_payload_bytes)
    try:
        _Acceptor(channel, listeners, limits, args.max_pending).run()
    except (ConnectionError, BrokenPipeError):
        pass  # the serving process is gone


if __name__ == "__main__":
    main()
