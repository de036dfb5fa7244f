"""A local websocket server speaking the subset of the OpenAI Realtime API (GA) that the proxy uses.

Checks what the client sends — the session configuration, base64 PCM16 at 24 kHz, the commit, the
speech request — and records any departure in ``violations``, which the tests assert empty. Answers
with transcript deltas and a completed transcript, or with audio deltas and ``response.done``.
Faults are switched on per test.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMessage, WSMsgType, web
from audio_samples import tone

RATE = 24000
PCM16_24K = {"type": "audio/pcm", "rate": RATE}
MIN_COMMIT_BYTES = RATE * 2 // 10  # 100 ms, below which the API refuses a commit
CLIENT_EVENTS = {
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "response.create", "response.cancel",
}  # fmt: skip
SECONDS_PER_CHARACTER = 0.02


@dataclass
class RealtimeFault:
    """What to do instead of answering well."""

    status: int | None = None  # refuse the upgrade with this HTTP status
    error_on: str | None = None  # answer this client event type with an ``error`` event
    close_on: str | None = None  # hang up when this client event type arrives
    silent_on: str | None = None  # accept this client event type, then never answer it
    transcription_failed: bool = False  # answer the commit with ...input_audio_transcription.failed
    response_failed: bool = False  # answer response.create with a failed response.done
    stall_after_first_delta: bool = False  # send one audio delta, then nothing more
    broken_frame_on: str | None = None  # answer this client event type with a frame that breaks the protocol
    error_message: str = "simulated failure"


@dataclass
class Connection:
    """What one client did on one websocket."""

    query: dict[str, str]
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] | None = None
    audio: bytearray = field(default_factory=bytearray)  # PCM16 24 kHz mono, decoded from the appends
    committed: bytes | None = None
    spoken_text: str | None = None

    @property
    def event_types(self) -> list[str]:
        return [event.get("type", "") for event in self.events]


class RealtimeServer:
    def __init__(self, *, key: str) -> None:
        self.key = key
        self.connections: list[Connection] = []
        self.violations: list[str] = []
        self.fault: RealtimeFault | None = None
        self.transcript = "Turn on the kitchen lights."
        self.beta_names = False  # answer in the beta's event names where they differ
        self.audio_chunk_seconds = 0.1
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def open_sockets(self) -> int:
        """Websockets still open from the server's side."""
        return len(self._sockets)

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    # --- the websocket ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.fault
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return _error_response(401, "Incorrect API key provided")
        if fault and fault.status:
            return _error_response(fault.status, fault.error_message)
        conn = Connection(query=dict(request.query), headers=dict(request.headers))
        self.connections.append(conn)
        mode = self._session_mode(request, conn.query)
        if mode is None:
            return _error_response(400, "missing model")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._send(ws, "session.created", session={"type": mode, "id": self._id("sess")})
            await self._serve(request, ws, conn, mode, fault)
        finally:
            self._sockets.discard(ws)
        return ws

    def _session_mode(self, request: web.Request, query: dict[str, str]) -> str | None:
        """The session type the URL asks for ("transcription" or "realtime"); None when neither."""
        if "OpenAI-Beta" in request.headers:
            self._violation("OpenAI-Beta header sent: it selects the beta protocol, not the GA one")
        if query.get("intent") == "transcription":
            if "model" in query:
                self._violation("a transcription session names its model in the session, not the URL")
            return "transcription"
        if query.get("model"):
            return "realtime"
        self._violation(f"neither intent=transcription nor a model in the query: {query}")
        return None

    async def _serve(
        self, request: web.Request, ws: web.WebSocketResponse, conn: Connection, mode: str, fault: RealtimeFault | None
    ) -> None:
        """The client's events until it hangs up, each answered, or met with the fault."""
        async for message in ws:
            event = self._client_event(message)
            if event is None:
                continue
            conn.events.append(event)
            kind = event.get("type")
            if kind not in CLIENT_EVENTS:
                self._violation(f"unknown client event {kind!r}")
                continue
            if fault and fault.close_on == kind:
                await ws.close()
                break
            if fault and await self._faulted(request, ws, fault, kind):
                continue
            silent = bool(fault and fault.silent_on == kind)
            await self._on_event(ws, conn, mode, event, silent)

    def _client_event(self, message: WSMessage) -> dict[str, Any] | None:
        """The JSON event in a text frame; None (a violation) for anything else."""
        if message.type != WSMsgType.TEXT:
            self._violation(f"non-text frame {message.type}")
            return None
        try:
            return json.loads(message.data)
        except ValueError:
            self._violation("malformed JSON event")
            return None

    async def _faulted(self, request: web.Request, ws: web.WebSocketResponse, fault: RealtimeFault, kind: str) -> bool:
        """Answer ``kind`` as the fault says instead of well; False when the fault is not about it."""
        if fault.broken_frame_on == kind and request.transport is not None:
            request.transport.write(b"\xf1\x02{}")  # reserved bits set: no extension allows them
            return True
        if fault.error_on == kind:
            error = {"type": "invalid_request_error", "code": "simulated", "message": fault.error_message}
            await self._send(ws, "error", error=error)
            return True
        return False

    async def _send(self, ws: web.WebSocketResponse, kind: str, **fields: Any) -> None:
        await ws.send_str(json.dumps({"type": kind, "event_id": self._id("event"), **fields}))

    async def _on_event(
        self, ws: web.WebSocketResponse, conn: Connection, mode: str, event: dict[str, Any], silent: bool
    ) -> None:
        """A silent event is taken in but not answered."""
        kind = event["type"]
        if kind == "session.update":
            await self._on_session_update(ws, conn, mode, event, silent)
        elif kind == "input_audio_buffer.append":
            self._on_append(conn, mode, event)
        elif kind == "input_audio_buffer.commit":
            await self._on_commit(ws, conn, silent)
        elif kind == "conversation.item.create":
            self._on_item_create(conn, event)
        elif kind == "response.create":
            await self._on_response_create(ws, conn, mode, silent)

    async def _on_session_update(
        self, ws: web.WebSocketResponse, conn: Connection, mode: str, event: dict[str, Any], silent: bool
    ) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            self._violation("session.update without a session object")
            return
        (self._check_transcription_session if mode == "transcription" else self._check_speech_session)(session)
        conn.session = session
        if not silent:
            updated = (
                "transcription_session.updated" if self.beta_names and mode == "transcription" else "session.updated"
            )
            await self._send(ws, updated, session=session)

    def _on_append(self, conn: Connection, mode: str, event: dict[str, Any]) -> None:
        if mode != "transcription":
            self._violation("audio appended to a speech session")
        if "session.update" not in conn.event_types:
            self._violation("audio appended before session.update")
        audio = event.get("audio")
        try:
            pcm = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            pcm = None
        if not pcm:
            self._violation("input_audio_buffer.append without base64 audio")
            return
        if len(pcm) % 2:
            self._violation("appended audio is not whole 16-bit samples")
        conn.audio += pcm

    async def _on_commit(self, ws: web.WebSocketResponse, conn: Connection, silent: bool) -> None:
        conn.committed = bytes(conn.audio)
        if len(conn.audio) < MIN_COMMIT_BYTES:
            await self._send(
                ws, "error",
                error={"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty", "message": "buffer too small"},
            )  # fmt: skip
            return
        if silent:
            return
        item = self._id("item")
        await self._send(ws, "input_audio_buffer.committed", item_id=item, previous_item_id=None)
        if self.fault and self.fault.transcription_failed:
            await self._send(
                ws, TRANSCRIPT_FAILED_EVENT, item_id=item, content_index=0,
                error={"type": "transcription_error", "code": "audio_unintelligible", "message": self.fault.error_message},
            )  # fmt: skip
            return
        words = self.transcript.split(" ")
        for i, word in enumerate(words):
            await self._send(
                ws, "conversation.item.input_audio_transcription.delta",
                item_id=item, content_index=0, delta=word if i == 0 else " " + word,
            )  # fmt: skip
        await self._send(
            ws, "conversation.item.input_audio_transcription.completed",
            item_id=item, content_index=0, transcript=self.transcript,
            usage={"type": "duration", "seconds": len(conn.committed) / (2 * RATE)},
        )  # fmt: skip

    def _on_item_create(self, conn: Connection, event: dict[str, Any]) -> None:
        item = event.get("item")
        content = item.get("content") if isinstance(item, dict) else None
        texts = [c.get("text") for c in content or [] if isinstance(c, dict) and c.get("type") == "input_text"]
        if not (isinstance(item, dict) and item.get("type") == "message" and item.get("role") == "user" and texts):
            self._violation(f"conversation.item.create is not a user message with input_text: {item}")
            return
        conn.spoken_text = "".join(t for t in texts if isinstance(t, str))

    async def _on_response_create(self, ws: web.WebSocketResponse, conn: Connection, mode: str, silent: bool) -> None:
        if mode != "realtime":
            self._violation("response.create in a transcription session")
        if conn.spoken_text is None:
            self._violation("response.create before any text was given")
        if not silent:
            await self._speak(ws, conn.spoken_text or "")

    async def _speak(self, ws: web.WebSocketResponse, text: str) -> None:
        response_id, item_id = self._id("resp"), self._id("item")
        await self._send(ws, "response.created", response={"id": response_id, "status": "in_progress"})
        if self.fault and self.fault.response_failed:
            await self._send(
                ws, "response.done",
                response={"id": response_id, "status": "failed", "status_details": {
                    "type": "failed", "error": {"type": "server_error", "code": self.fault.error_message}}},
            )  # fmt: skip
            return
        pcm = tone(max(0.2, len(text) * SECONDS_PER_CHARACTER), RATE)
        step = int(self.audio_chunk_seconds * RATE) * 2
        delta_type = "response.audio.delta" if self.beta_names else "response.output_audio.delta"
        for start in range(0, len(pcm), step):
            await self._send(
                ws, delta_type, response_id=response_id, item_id=item_id, output_index=0, content_index=0,
                delta=base64.b64encode(pcm[start : start + step]).decode("ascii"),
            )  # fmt: skip
            if self.fault and self.fault.stall_after_first_delta:
                return
            await asyncio.sleep(0)
        await self._send(
            ws, "response.audio.done" if self.beta_names else "response.output_audio.done",
            response_id=response_id, item_id=item_id, output_index=0, content_index=0,
        )  # fmt: skip
        await self._send(ws, "response.done", response={"id": response_id, "status": "completed"})

    # --- the rules ----------------------------------------------------------------------------------

    def _check_transcription_session(self, session: dict[str, Any]) -> None:
        if session.get("type") != "transcription":
            self._violation(f"transcription session type is {session.get('type')!r}")
        audio_input = (session.get("audio") or {}).get("input") or {}
        if audio_input.get("format") != PCM16_24K:
            self._violation(f"input format is {audio_input.get('format')}, not PCM16 at 24 kHz")
        transcription = audio_input.get("transcription")
        if not isinstance(transcription, dict) or not isinstance(transcription.get("model"), str):
            self._violation("no transcription model in audio.input.transcription")
        elif set(transcription) - {"model", "language", "prompt", "languages", "keywords", "delay"}:
            self._violation(f"unknown transcription fields {sorted(set(transcription))}")
        for key in ("input_audio_format", "input_audio_transcription", "modalities"):
            if key in session:
                self._violation(f"beta session field {key!r} in a GA session")

    def _check_speech_session(self, session: dict[str, Any]) -> None:
        if session.get("type") != "realtime":
            self._violation(f"speech session type is {session.get('type')!r}")
        if session.get("output_modalities") not in (["audio"], None):
            self._violation(f"output_modalities {session.get('output_modalities')} would not give audio")
        output = (session.get("audio") or {}).get("output") or {}
        if output.get("format") != PCM16_24K:
            self._violation(f"output format is {output.get('format')}, not PCM16 at 24 kHz")
        if not isinstance(output.get("voice"), str | dict):
            self._violation("no voice in audio.output")
        speed = output.get("speed")
        if speed is not None and not 0.25 <= speed <= 1.5:
            self._violation(f"speed {speed} outside 0.25–1.5")


TRANSCRIPT_FAILED_EVENT = "conversation.item.input_audio_transcription.failed"


def _error_response(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None, "param": None}}
    return web.json_response(body, status=status)
