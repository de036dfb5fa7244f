"""A minimal Wyoming server for the OpenAI-compatible API's tests and benchmark.

TTS speaks tones: a quarter of a second per word, at the voice's pitch. ASR describes what it was
sent instead of transcribing — byte count, format, the tone's frequency (from zero crossings), the
model, language and prompt — so a test can check the upload really arrived decoded and resampled.
Some input texts make it misbehave on purpose (see ``TRIGGERS``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import socket
import struct
from dataclasses import dataclass, field

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    Info,
    SelectProgram,
    TtsProgram,
    TtsVoice,
    TtsVoiceSpeaker,
)  # fmt: skip
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncTcpServer, AsyncUnixServer
from wyoming.tts import Synthesize

TTS_RATE = 22050
SECONDS_PER_WORD = 0.25
CHUNK_SAMPLES = 2205  # 100 ms per audio-chunk
VOICES = {"low": 220.0, "high": 880.0, "duo": 440.0}
TRIGGERS = {
    "please fail": "sends an error event instead of audio",
    "please hang": "sends nothing, ever",
    "please drop": "closes the connection after the first chunk",
    "please stereo": "sends 16 kHz stereo",
}
_ATTRIBUTION = Attribution(name="tests", url="https://example.invalid/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=64)  # the same few tones again and again: keep the server's own time small
def tone(seconds: float, rate: int, freq: float, channels: int = 1) -> bytes:
    samples = []
    for i in range(int(seconds * rate)):
        value = int(8000 * math.sin(2 * math.pi * freq * i / rate))
        samples.extend([value] * channels)
    return struct.pack(f"<{len(samples)}h", *samples)


def estimate_frequency(pcm: bytes, rate: int) -> float:
    """Frequency of a mono 16-bit tone, from its upward swings between the cycles' troughs and peaks.

    Hysteresis ignores codec noise around zero and in padding; timing between the first and last
    swing ignores leading and trailing silence.
    """
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    rising: list[int] = []
    low = False
    for index, value in enumerate(samples):
        if value < -1000:
            low = True
        elif value > 1000 and low:
            low = False
            rising.append(index)
    if len(rising) < 2:
        return 0.0
    return (len(rising) - 1) / ((rising[-1] - rising[0]) / rate)


SECOND_PROGRAM_PITCH = 1.5  # the second TTS program ("<name>-fifth") speaks a fifth higher


def make_info(
    streaming: bool, tts_name: str = "tone-tts", asr_name: str = "echo-asr", two_tts_programs: bool = False
) -> Info:
    voices = [
        TtsVoice(
            name=name, attribution=_ATTRIBUTION, installed=True, description=f"{name} tone", version="1",
            languages=["en"], speakers=[TtsVoiceSpeaker("a"), TtsVoiceSpeaker("b")] if name == "duo" else None,
        )
        for name in VOICES
    ]  # fmt: skip
    programs = [tts_name, f"{tts_name}-fifth"] if two_tts_programs else [tts_name]
    return Info(
        tts=[TtsProgram(name=name, attribution=_ATTRIBUTION, installed=True, description="tones", version="1", voices=voices) for name in programs],
        asr=[
            AsrProgram(
                name=asr_name, attribution=_ATTRIBUTION, installed=True, description="describes audio", version="1",
                models=[AsrModel(name=f"{asr_name}-small", attribution=_ATTRIBUTION, installed=True, description="small", version="1", languages=["en", "de"])],
                supports_transcript_streaming=streaming,
            )
        ],
    )  # fmt: skip


@dataclass
class Received:
    """What the server was sent, for tests that look deeper than the answers."""

    transcribes: list[Transcribe] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)  # select-program names, in order
    synthesizes: list[Synthesize] = field(default_factory=list)
    connections: int = 0
    disconnects: int = 0


class _Handler(AsyncEventHandler):
    def __init__(self, server: ToneServer, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.server.received.connections += 1
        self._transcribe: Transcribe | None = None
        self._start: AudioStart | None = None
        self._audio = bytearray()
        self._requests = 0
        self._program: str | None = None

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.server.info.event())
        elif SelectProgram.is_type(event.type):
            self._program = SelectProgram.from_event(event).name
            self.server.received.selected.append(self._program)
        elif Synthesize.is_type(event.type):
            self._requests += 1
            if self._requests > 1 and self.server.one_request_per_connection:
                return False
            return await self._synthesize(Synthesize.from_event(event))
        elif Transcribe.is_type(event.type):
            self._transcribe = Transcribe.from_event(event)
            self.server.received.transcribes.append(self._transcribe)
        elif AudioStart.is_type(event.type):
            self._start = AudioStart.from_event(event)
            self._audio.clear()
        elif AudioChunk.is_type(event.type):
            self._audio += AudioChunk.from_event(event).audio
        elif AudioStop.is_type(event.type):
            await self._transcript()
        return True

    async def run(self) -> None:
        try:
            await super().run()
        except ConnectionResetError:
            pass  # the client abandoned an answer mid-stream (as the API does when its own client leaves)

    async def disconnect(self) -> None:
        self.server.received.disconnects += 1

    async def _synthesize(self, synth: Synthesize) -> bool:
        self.server.received.synthesizes.append(synth)
        text = synth.text.strip().lower()
        if text.startswith("please fail"):
            await self.write_event(Error(text="the tone engine is out of tune", code="ToneError").event())
            return True
        if text.startswith("please hang"):
            await asyncio.sleep(3600)
        voice = synth.voice.name if synth.voice and synth.voice.name else "high"
        freq = VOICES.get(voice, 440.0)
        if synth.voice and synth.voice.speaker == "b":
            freq *= 2
        if self._program is not None and self._program.endswith("-fifth"):
            freq *= SECOND_PROGRAM_PITCH
        rate, channels = (16000, 2) if text.startswith("please stereo") else (TTS_RATE, 1)
        seconds = SECONDS_PER_WORD * max(1, len(text.split()))
        pcm = tone(seconds, rate, freq, channels)
        await self.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        step = CHUNK_SAMPLES * 2 * channels
        for offset in range(0, len(pcm), step):
            await self.write_event(
                AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[offset : offset + step]).event()
            )
            if text.startswith("please drop"):
                return False
        await self.write_event(AudioStop().event())
        return True

    async def _transcript(self) -> None:
        start, transcribe = self._start, self._transcribe or Transcribe()
        assert start is not None
        pcm = bytes(self._audio)
        prompt = (transcribe.context or {}).get("prompt")
        words = [
            f"received {len(pcm)} bytes",
            f"at {start.rate} Hz width {start.width} channels {start.channels}",
            f"tone {round(estimate_frequency(pcm, start.rate))} Hz",
            f"model {transcribe.name}",
            f"language {transcribe.language}",
        ]
        if prompt:
            words.append(f"prompt {prompt}")
        text = ", ".join(words)
        if self.server.streaming:
            await self.write_event(TranscriptStart(language=transcribe.language).event())
            for word in words:
                await self.write_event(TranscriptChunk(text=word + ", " if word != words[-1] else word).event())
            await self.write_event(TranscriptStop().event())
        await self.write_event(Transcript(text=text, language=transcribe.language or "en").event())


class ToneServer:
    def __init__(
        self,
        streaming: bool = True,
        port: int | None = None,
        one_request_per_connection: bool = False,
        unix_path: str | None = None,
        two_tts_programs: bool = False,
        **names: str,
    ) -> None:
        self.streaming = streaming
        self.unix_path = unix_path
        # Like servers that hang up on a second request: the client only learns when it sends one.
        self.one_request_per_connection = one_request_per_connection
        self.info = make_info(streaming, two_tts_programs=two_tts_programs, **names)
        self.port = port or free_port()
        self.uri = f"unix://{unix_path}" if unix_path else f"tcp://127.0.0.1:{self.port}"
        self.received = Received()
        self._server: AsyncServer | None = None

    async def start(self) -> ToneServer:
        self._server = AsyncUnixServer(self.unix_path) if self.unix_path else AsyncTcpServer("127.0.0.1", self.port)
        await self._server.start(lambda reader, writer: _Handler(self, reader, writer))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


class SilentServer:
    """Accepts connections and never answers: a hung Wyoming server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.uri = f"tcp://127.0.0.1:{self.port}"
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> SilentServer:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def _serve(port: int, streaming: bool) -> None:
    server = await ToneServer(streaming=streaming, port=port).start()
    print(f"listening on {server.uri}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


if __name__ == "__main__":  # a standalone server, for the benchmark and manual trials
    parser = argparse.ArgumentParser(description="Tone-speaking, audio-describing Wyoming test server")
    parser.add_argument("--port", type=int, default=10555)
    parser.add_argument("--no-streaming", action="store_true")
    cli = parser.parse_args()
    asyncio.run(_serve(cli.port, not cli.no_streaming))
