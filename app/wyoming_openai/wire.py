"""Wyoming's wire format: events read within limits, and written in one piece.

The ``wyoming`` library's ``async_read_event`` reads whatever ``data_length`` and ``payload_length`` a
client claims, and a bad header silently ends the stream. This reader checks both against limits
before reading a byte of them, and names what is wrong. Writing joins header, data and payload into
one buffer: one socket write per event.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event
from wyoming.version import __version__ as PROTOCOL_VERSION


class ProtocolError(Exception):
    """The client broke the framing; the connection cannot continue."""


class ClientReader(asyncio.StreamReader):
    """A stream reader that knows when the client has gone (``left``), even while nobody reads."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def feed_eof(self) -> None:
        super().feed_eof()
        if not self.left.done():
            self.left.set_result(None)

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        if not self.left.done():
            self.left.set_result(None)


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int  # the header line, and separately the data block
    max_payload_bytes: int


async def read_event(reader: asyncio.StreamReader, limits: Limits) -> Event | None:
    """The next event, or None when the client has ended its stream between events.

    ``reader`` must have been made with ``limit=limits.max_event_bytes``: that bounds the header line.
    """
    try:
        line = b"\n"
        while not line.strip():  # blank lines between events are tolerated
            line = await reader.readline()
            if not line:
                return None
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed in the middle of an event header")
        header = _json_object(line, "event header")
        event_type = header.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise ProtocolError("event header has no type")
        data = header.get("data", {})
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ProtocolError("event data is not a JSON object")
        data_length = _length(header, "data_length", limits.max_event_bytes)
        payload_length = _length(header, "payload_length", limits.max_payload_bytes)
        if data_length:
            data.update(_json_object(await reader.readexactly(data_length), "event data"))
        payload = await reader.readexactly(payload_length) if payload_length else None
    except ValueError:  # the stream reader's limit: a line longer than it
        raise ProtocolError(f"event header longer than {limits.max_event_bytes} bytes") from None
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed in the middle of an event") from None
    return Event(event_type, data, payload)


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} is not a non-negative integer")
    if value > limit:
        raise ProtocolError(f"{key} {value} exceeds the limit of {limit} bytes")
    return value


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{what} is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return parsed


def encode_event(event: Event) -> bytes:
    """The event as it goes on the wire: header line, data, payload."""
    header: dict[str, Any] = {"type": event.type, "version": PROTOCOL_VERSION}
    data_bytes = b""
    if event.data:
        data_bytes = json.dumps(event.data, ensure_ascii=False).encode("utf-8")
        header["data_length"] = len(data_bytes)
    payload = event.payload or b""
    if payload:
        header["payload_length"] = len(payload)
    return b"".join((json.dumps(header, ensure_ascii=False).encode("utf-8"), b"\n", data_bytes, payload))
