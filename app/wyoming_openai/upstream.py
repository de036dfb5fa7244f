"""One pooled HTTP client per OpenAI-compatible upstream: time-outs, retries, auth, safe errors.

aiohttp rather than the OpenAI SDK: we need streamed bodies with a time-out on every read, one
keep-alive pool per upstream with a limit, and no hidden retry delays; it also costs far less CPU
per request, which decides how many clients one proxy can serve.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import http_exceptions

from . import __version__
from .settings import Secret, Settings, redact_url

_LOGGER = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_PAUSE = 0.05  # a stale keep-alive connection or a restarting server: try again at once, once
RATE_LIMIT_RETRIES = 3  # 429s waited out for one request at most (a server may ask for 0 s every time)
SPEECH_BODY_TIME_FACTOR = 10  # a speech body may stream this many times the answer time-out
ERROR_TEXT_LIMIT = 300


def upstream_language(language: str | None) -> str | None:
    """ISO-639-1 as the API wants it: Home Assistant may send ``en-US`` or ``pt_BR``."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


class UpstreamError(Exception):
    """An upstream request failed. ``str()`` is safe to show a user: no key, no credentials.

    ``status`` is the HTTP status the upstream answered, if it answered one; ``retry_after`` the
    seconds it asked us to wait before trying again (a 429's Retry-After), if it said.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _Retry(Exception):
    """This attempt failed in a way worth another: after ``pause`` seconds."""

    def __init__(self, pause: float, rate_limited: bool = False) -> None:
        self.pause = pause
        self.rate_limited = rate_limited


def upstream_from_settings(settings: Settings, role: str, url: str, key: Secret | None) -> Upstream:
    """An upstream with the time-outs, retries and pool size the settings give every upstream."""
    return Upstream(
        role,
        url,
        key,
        timeout=settings.upstream_timeout,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        retries=settings.upstream_retries,
        max_connections=settings.upstream_max_connections,
        retry_after_max=settings.upstream_retry_after_max,
    )


class Upstream:
    """The STT or the TTS server. Create inside the running loop; ``close()`` at shutdown."""

    def __init__(
        self,
        role: str,
        base_url: str,
        key: Secret | None,
        *,
        timeout: float,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        max_connections: int,
        retry_after_max: float = 2.0,
    ) -> None:
        self.role = role
        self.display_url = redact_url(base_url)
        parts = urlsplit(base_url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.base_url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.root_url = urlunsplit((parts.scheme, netloc, "", "", ""))
        self.hostname = parts.hostname or ""
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.retry_after_max = retry_after_max  # a 429 asking us to wait this long or less is waited out
        self.detection: asyncio.Future | None = None  # the backend probe, shared by STT and TTS
        self._secrets = [s for s in (key.reveal() if key else None, parts.password, parts.username) if s]
        headers = {"User-Agent": f"wyoming-openai/{__version__}"}
        auth = None
        if key:
            headers["Authorization"] = f"Bearer {key.reveal()}"
        elif parts.username:
            auth = aiohttp.BasicAuth(parts.username, parts.password or "")
        self._session = aiohttp.ClientSession(
            headers=headers,
            auth=auth,
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=30, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self._session.close()

    # --- requests ----------------------------------------------------------------------------

    async def post_form(self, path: str, fields: Mapping[str, Any], file: tuple[str, bytes, str]) -> tuple[str, bytes]:
        """Multipart POST (transcriptions); returns the reply's content type and body."""
        body, content_type = _form(fields, file)
        async with self._deadline(self.timeout):
            async with self._request("POST", path, data=body, headers={"Content-Type": content_type}) as response:
                return response.headers.get("Content-Type", ""), await response.read()

    @asynccontextmanager
    async def stream_post_json(
        self, path: str, payload: Mapping[str, Any]
    ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        """POST JSON (speech): (the reply's Content-Type, its body's bytes as they arrive)."""
        async with self._stream("POST", path, json=dict(payload)) as streamed:
            yield streamed

    @asynccontextmanager
    async def stream_post_form(
        self, path: str, fields: Mapping[str, Any], file: tuple[str, bytes, str]
    ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        """Multipart POST whose reply streams (server-sent events): (content type, body bytes)."""
        body, content_type = _form(fields, file)
        async with self._stream("POST", path, data=body, headers={"Content-Type": content_type}) as streamed:
            yield streamed

    @asynccontextmanager
    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        """The answer must come within the time-out; the body may then stream for longer, each
        read bounded by the read time-out."""
        loop = asyncio.get_running_loop()
        async with self._deadline(self.timeout) as deadline:
            async with self._request(method, path, **kwargs) as response:
                deadline.reschedule(loop.time() + self.timeout * SPEECH_BODY_TIME_FACTOR)
                yield response.headers.get("Content-Type", ""), self._iter_body(response)

    async def get_json(self, path: str, *, timeout: float, root: bool = False) -> Any:
        """GET for probing and discovery; raises UpstreamError on any failure."""
        async with self._deadline(timeout):
            async with self._request("GET", path, root=root, retries=0) as response:
                body = await response.read()
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", "replace")

    # --- machinery ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _deadline(self, seconds: float) -> AsyncIterator[asyncio.Timeout]:
        try:
            async with asyncio.timeout(seconds) as deadline:
                yield deadline
        except TimeoutError:
            raise self.failure(TimeoutError()) from None

    async def _iter_body(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise self.failure(err) from None

    @asynccontextmanager
    async def _request(
        self, method: str, path: str, *, root: bool = False, retries: int | None = None, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to a request, retried after a connection failure, a 502/503/504 (``retries``
        times) or a 429 whose Retry-After is short; a body that breaks while read is an UpstreamError."""
        url = (self.root_url if root else self.base_url) + path
        shown = f"{method} {(self.display_url if not root else redact_url(self.root_url))}{path}"
        attempts = 1 + (self.retries if retries is None else retries)
        attempt, waited, limited = 1, 0.0, 0
        while True:
            budget = self.retry_after_max - waited if limited < RATE_LIMIT_RETRIES else -1.0
            try:
                response = await self._attempt(method, url, shown, attempt < attempts, budget, kwargs)
                break
            except _Retry as retry:
                if retry.rate_limited:
                    waited, limited = waited + retry.pause, limited + 1
                else:
                    attempt += 1
                await asyncio.sleep(retry.pause)  # cancelled, like everything else, when the client leaves
        _LOGGER.log(5, "%s -> %s", shown, response.status)
        try:
            yield response
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise self.failure(err) from None
        finally:
            response.release()

    async def _attempt(
        self, method: str, url: str, shown: str, may_retry: bool, wait_budget: float, kwargs: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        try:
            response = await self._session.request(method, url, **kwargs)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            if may_retry and isinstance(err, aiohttp.ClientConnectionError):
                _LOGGER.debug("%s failed (%s), retrying", shown, type(err).__name__)
                raise _Retry(RETRY_PAUSE) from None
            raise self.failure(err) from None
        if response.status < 400:
            return response
        body = await self._read_error_body(response)
        response.release()
        error = self._status_error(response, body)
        if response.status == 429 and error.retry_after is not None and error.retry_after <= wait_budget:
            _LOGGER.info("%s is rate limited; retrying in %s s as it asks", shown, f"{error.retry_after:g}")
            raise _Retry(error.retry_after, rate_limited=True)
        if may_retry and response.status in RETRY_STATUSES:
            _LOGGER.debug("%s answered %s, retrying", shown, response.status)
            raise _Retry(RETRY_PAUSE)
        raise error

    async def _read_error_body(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout):
                return await response.content.read(64 * 1024)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return b""

    def _status_error(self, response: aiohttp.ClientResponse, body: bytes) -> UpstreamError:
        detail = _error_detail(body)
        message = f"{self.role} upstream {self.display_url} answered {response.status} {response.reason or ''}".rstrip()
        retry_after = retry_after_seconds(response.headers) if response.status in (429, 503) else None
        if response.status == 429:
            message += " (rate limited" + (f"; retry after {retry_after:g} s)" if retry_after is not None else ")")
        if detail:
            message += f": {detail}"
        return UpstreamError(self.scrub(message), status=response.status, retry_after=retry_after)

    def failure(self, err: BaseException) -> UpstreamError:
        """An aiohttp or time-out failure as an UpstreamError that says what happened, in words."""
        return UpstreamError(self.scrub(f"{self.role} upstream {self.display_url} {_failure_text(err, self.hostname)}"))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # --- websockets (the Realtime API) -------------------------------------------------------

    @asynccontextmanager
    async def websocket(self, path: str, **params: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A websocket to ``base_url + path`` (http → ws, https → wss), opened within the time-out.

        The pooled session adds the Authorization header; the socket holds one of the pool's
        connections until closed. A failure to open raises UpstreamError with a message safe to show.
        """
        url = self.base_url.replace("http", "ws", 1) + path
        try:
            async with self._deadline(self.timeout):
                ws = await self._session.ws_connect(url, params=params, max_msg_size=16 * 1024 * 1024)
        except aiohttp.WSServerHandshakeError as err:
            # aiohttp keeps neither the reason phrase nor the body of a refused upgrade.
            if err.status >= 400:
                try:
                    reason = HTTPStatus(err.status).phrase
                except ValueError:
                    reason = ""
                text = f"answered {err.status} {reason}".rstrip()
            else:
                text = f"answered {err.status} instead of switching to a websocket"
            status = err.status if err.status >= 400 else None
            raise UpstreamError(self.scrub(f"{self.role} upstream {self.display_url} {text}"), status=status) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise self.failure(err) from None
        try:
            yield ws
        finally:
            await ws.close()


def _form(fields: Mapping[str, Any], file: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """The multipart body (RFC 7578), encoded once: sent in one write, and again as it is on a retry.

    Written out here rather than with aiohttp.FormData, whose general machinery cost ~5 % of the
    proxy's CPU per transcription; the format is a few fixed lines around each field.
    """
    boundary = uuid.uuid4().hex  # random: cannot turn up inside the audio by chance
    filename, content, content_type = file
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_quoted(filename)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode(),
        content,
    ]
    for name, value in fields.items():
        for field_name, text in _form_values(name, value):
            parts.append(
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field_name)}"\r\n\r\n{text}'.encode()
            )
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _quoted(name: str) -> str:
    # How browsers escape a form field's name or filename (WHATWG HTML, multipart/form-data).
    return name.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


async def server_sent_events(body: AsyncIterator[bytes], limit: int = 1024 * 1024) -> AsyncIterator[Any]:
    """The ``data:`` of each server-sent event, parsed if it is JSON, else as text; ``[DONE]`` ends the stream."""
    buffer = b""
    async for chunk in body:
        buffer += chunk
        if len(buffer) > limit:
            raise UpstreamError("upstream sent an event larger than 1 MiB")
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if (data := _event_data(line)) is _DONE:
                return
            if data is not None:
                yield data
    if (data := _event_data(buffer)) is not None and data is not _DONE:
        yield data  # a last event without its newline


_DONE = object()


def _event_data(line: bytes) -> Any:
    line = line.strip()
    if not line.startswith(b"data:"):
        return None  # comments, event names, blank separators
    data = line[5:].strip()
    if data == b"[DONE]":
        return _DONE
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")  # a server streaming plain text (response_format=text)


def _form_values(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    if isinstance(value, (list, tuple)):
        return [(f"{name}[]", v if isinstance(v, str) else json.dumps(v)) for v in value]
    if isinstance(value, dict):
        return [(name, json.dumps(value))]
    return [(name, str(value))]


def _error_detail(body: bytes) -> str:
    """The upstream's own words: OpenAI's error.message, FastAPI's detail, or the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            text = str(error["message"])
        elif isinstance(error, str):
            text = error
        elif "detail" in parsed:
            detail = parsed["detail"]
            text = detail if isinstance(detail, str) else json.dumps(detail)
        elif "message" in parsed:
            text = str(parsed["message"])
    return clip(text)


def _failure_text(err: BaseException, hostname: str) -> str:
    if isinstance(err, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "did not answer in time"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return f"host name {hostname!r} could not be resolved"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"refused or unreachable ({err.os_error.strerror or type(err.os_error).__name__})"
    if isinstance(err, aiohttp.ClientPayloadError):
        return _payload_text(err)
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "closed the connection before its answer was complete"
    if isinstance(err, aiohttp.ClientResponseError) and isinstance(err.__cause__, http_exceptions.HttpProcessingError):
        return f"sent a malformed HTTP response ({clip(err.__cause__.message or type(err.__cause__).__name__, 80)})"
    if isinstance(err, aiohttp.ClientOSError):
        return f"broke the connection ({err.strerror or type(err).__name__})"
    return f"failed ({type(err).__name__})"


def _payload_text(err: aiohttp.ClientPayloadError) -> str:
    cause = err.__cause__
    if isinstance(cause, http_exceptions.ContentLengthError):
        return "ended its response early: fewer bytes than its Content-Length said (truncated body)"
    if isinstance(cause, http_exceptions.TransferEncodingError):
        return "ended its response early, in the middle of a chunk (truncated body)"
    if isinstance(cause, http_exceptions.ContentEncodingError):
        return "sent a compressed body that does not decompress"
    return "sent a broken response body (truncated or malformed)"


def clip(text: object, limit: int = ERROR_TEXT_LIMIT) -> str:
    """Text from a server, on one line and at most ``limit`` characters, to quote in an error."""
    text = " ".join(str(text).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long a server asks us to wait: ``retry-after-ms`` (OpenAI), or ``Retry-After`` in seconds
    or as an HTTP date. None when it does not say, or says something unreadable."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("Retry-After")
        if value is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())
