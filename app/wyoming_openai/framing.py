"""Wyoming's wire format, read with limits and written in one piece.

The ``wyoming`` library's reader trusts ``data_length`` and ``payload_length`` and so would allocate
whatever a client claims; ours checks both against limits before reading a byte of them. Writing
joins header, data and payload into one buffer: one socket write per event.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event

try:
    from wyoming.version import __version__ as PROTOCOL_VERSION
except ImportError:  # pragma: no cover - every wyoming release we support has it
    PROTOCOL_VERSION = "1.0.0"


class ProtocolError(Exception):
    """The client broke the framing; the connection cannot continue."""


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int  # header line, and separately the data block
    max_payload_bytes: int


_NEWLINE = b"\n"


async def read_event(reader: asyncio.StreamReader, limits: Limits) -> Event | None:
    """The next event, or None at a clean end of stream. Raises ProtocolError for bad framing."""
    line = b""
    while not line.strip():  # tolerate blank lines between events
        try:
            line = await reader.readuntil(_NEWLINE)
        except asyncio.IncompleteReadError as err:
            if err.partial.strip():
                raise ProtocolError("connection closed in the middle of an event header") from None
            return None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"event header longer than {limits.max_event_bytes} bytes") from None

    header = _parse_json_object(line, "event header")
    event_type = header.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event header has no type")
    data = header.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ProtocolError("event data is not a JSON object")

    data_length = _length(header, "data_length", limits.max_event_bytes)
    payload_length = _length(header, "payload_length", limits.max_payload_bytes)
    try:
        if data_length:
            data.update(_parse_json_object(await reader.readexactly(data_length), "event data"))
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed in the middle of an event") from None
    return Event(type=event_type, data=data, payload=payload)


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} is not a non-negative integer")
    if value > limit:
        raise ProtocolError(f"{key} {value} exceeds the limit of {limit} bytes")
    return value


def _parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
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
    return b"".join((json.dumps(header, ensure_ascii=False).encode("utf-8"), _NEWLINE, data_bytes, payload))
