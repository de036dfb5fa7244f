"""Test audio made here: generated tones encoded with FFmpeg (PyAV), never copied from elsewhere."""

from __future__ import annotations

import io
import math
import struct
import wave

import av


def tone(seconds: float, rate: int = 24000, freq: float = 440.0, channels: int = 1, amplitude: int = 8000) -> bytes:
    """16-bit little-endian PCM of a sine tone (channels interleaved)."""
    samples = []
    for i in range(int(seconds * rate)):
        value = int(amplitude * math.sin(2 * math.pi * freq * i / rate))
        samples.extend([value] * channels)
    return struct.pack(f"<{len(samples)}h", *samples)


def wav(pcm: bytes, rate: int, width: int = 2, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


_CONTAINERS = {
    "mp3": ("mp3", "mp3"),
    "flac": ("flac", "flac"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "wav_f32": ("wav", "pcm_f32le"),
    "wav_s24": ("wav", "pcm_s24le"),
    "wav_s32": ("wav", "pcm_s32le"),
    "wav_s16": ("wav", "pcm_s16le"),
}


def encode(kind: str, pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """``pcm`` (16-bit) encoded as ``kind``: mp3, flac, opus, aac, wav_f32, wav_s24, wav_s32, wav_s16."""
    container_format, codec = _CONTAINERS[kind]
    out = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(out, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame(format="s16", layout=layout, samples=len(pcm) // (2 * channels))
        frame.planes[0].update(pcm)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        for converted in resampler.resample(frame):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
