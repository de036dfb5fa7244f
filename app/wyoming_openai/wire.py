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


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int  # the header line, and separately the data block
    max_payload_bytes: int


@dataclass(frozen=True)
class _Header:
    type: str
    data: dict[str, Any]  # data given inside the header line (older clients)
    data_length: int
    payload_length: int


class ClientReader(asyncio.StreamReader):
    """One client's stream: events read within the limits, and ``left`` done once the client has gone
    (even while nobody reads).

    It remembers the last header line and data block it parsed: Home Assistant sends 100 audio chunks
    a second whose header and data repeat byte for byte, and parsing their JSON again would be most
    of the cost of speech-to-text.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__(limit=limits.max_event_bytes)  # bounds readline(): the header line
        self.limits = limits
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_line = b""
        self._last_header: _Header | None = None
        self._last_data_bytes = b""
        self._last_data: dict[str, Any] = {}

    def feed_eof(self) -> None:
        super().feed_eof()
        if not self.left.done():
            self.left.set_result(None)

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        if not self.left.done():
            self.left.set_result(None)

    async def read_event(self) -> Event | None:
        """The next event, or None when the client has ended its stream between events."""
        try:
            line = await self.readline()
            while line.isspace():  # blank lines between events are tolerated
                line = await self.readline()
            if not line:
                return None
            header = self._last_header if line == self._last_line else self._parse_header(line)
            if not (header.data_length or header.payload_length):
                return Event(header.type, dict(header.data))
            body = await self.readexactly(header.data_length + header.payload_length)  # one read: data and audio
        except ValueError:  # the stream reader's limit: a line longer than it
            raise ProtocolError(f"event header longer than {self.limits.max_event_bytes} bytes") from None
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed in the middle of an event") from None
        if not header.data_length:
            return Event(header.type, dict(header.data), body)
        raw = body[: header.data_length]
        data = self._last_data if raw == self._last_data_bytes else self._parse_data(raw)
        return Event(header.type, {**header.data, **data}, body[header.data_length :] or None)

    def _parse_header(self, line: bytes) -> _Header:
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed in the middle of an event header")
        fields = _json_object(line, "event header")
        event_type = fields.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise ProtocolError("event header has no type")
        data = fields.get("data", {})
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ProtocolError("event data is not a JSON object")
        header = _Header(
            event_type,
            data,
            _length(fields, "data_length", self.limits.max_event_bytes),
            _length(fields, "payload_length", self.limits.max_payload_bytes),
        )
        if _flat(data):  # each event gets a shallow copy: safe to share only without nested values
            self._last_line, self._last_header = line, header
        return header

    def _parse_data(self, raw: bytes) -> dict[str, Any]:
        data = _json_object(raw, "event data")
        if _flat(data):
            self._last_data_bytes, self._last_data = raw, data
        return data


def _flat(data: dict[str, Any]) -> bool:
    return not any(isinstance(value, (dict, list)) for value in data.values())


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
