"""multipart/form-data (RFC 7578) from a body already read within the upload limit.

aiohttp's streaming multipart reader costs about 2 ms for a three-part upload (most of it parsing
each part's headers); the transcription upload is read whole anyway, so its parts are cut out with
``bytes.find`` here instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^;\s"]{1,200}))', re.IGNORECASE)
# One parameter of a Content-Disposition header; quoted values are taken whole, so a file name that
# contains "; name=" is not mistaken for the part's name.
_DISPOSITION_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPED = re.compile(r"\\(.)")


class MultipartError(ValueError):
    """The body is not the multipart/form-data its Content-Type says."""


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None


def boundary(content_type: str) -> bytes:
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("the Content-Type has no boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


def disposition_params(disposition: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for match in _DISPOSITION_PARAM.finditer(disposition):
        value = match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = _ESCAPED.sub(r"\1", value[1:-1])
        params.setdefault(match.group(1).lower(), value)
    return params


def parse(body: bytes, content_type: str) -> list[Part]:
    delimiter = b"--" + boundary(content_type)
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("the body holds no part")
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter: whatever follows is an epilogue
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MultipartError("a boundary line is malformed")
        headers_start = line_end + 2
        if body.startswith(b"\r\n", headers_start):
            headers_end, content_start = headers_start, headers_start + 2
        else:
            headers_end = body.find(b"\r\n\r\n", headers_start)
            if headers_end < 0:
                raise MultipartError("a part's headers do not end")
            content_start = headers_end + 4
        content_end = _next_delimiter(body, b"\r\n" + delimiter, content_start)
        headers = _headers(body[headers_start:headers_end])
        params = disposition_params(headers.get("content-disposition", ""))
        parts.append(Part(params.get("name", ""), body[content_start:content_end], params.get("filename")))
        position = content_end + 2 + len(delimiter)


def _next_delimiter(body: bytes, marker: bytes, start: int) -> int:
    """Where the part ends: the boundary followed by "--" or a line end, not merely its first bytes."""
    while True:
        found = body.find(marker, start)
        if found < 0:
            raise MultipartError("the body ends inside a part")
        after = found + len(marker)
        if body.startswith(b"--", after):
            return found
        while body[after : after + 1] in (b" ", b"\t"):  # transport padding
            after += 1
        if body.startswith(b"\r\n", after):
            return found
        start = found + 1


def _headers(blob: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in blob.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
