"""Decoding what the API sends back, with PyAV, to check its rate, length and pitch."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import av
from tone_wyoming import estimate_frequency


@dataclass(frozen=True)
class Decoded:
    rate: int  # the stream's own rate, as a player would see it
    seconds: float
    frequency: float
    codec: str


def decode(data: bytes, response_format: str) -> Decoded:
    if response_format == "pcm":  # OpenAI's raw pcm: 24 kHz 16-bit mono, no header
        return Decoded(24000, len(data) / 48000, estimate_frequency(data, 24000), "pcm_s16le")
    pcm = bytearray()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate, codec = stream.rate, stream.codec_context.name
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pcm += bytes(out.planes[0])[: out.samples * 2]
        for out in resampler.resample(None):
            pcm += bytes(out.planes[0])[: out.samples * 2]
    return Decoded(rate, len(pcm) / 2 / rate, estimate_frequency(bytes(pcm), rate), codec)


def sse_events(body: bytes) -> list[dict]:
    """The JSON of every ``data:`` line of a server-sent-events body."""
    events = []
    for block in body.decode().split("\n\n"):
        lines = [line[len("data: ") :] for line in block.splitlines() if line.startswith("data: ")]
        if lines:
            events.append(json.loads("\n".join(lines)))
    return events


def sse_audio(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["audio"]) for e in events if e.get("type") == "speech.audio.delta")
