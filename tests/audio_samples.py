"""Test audio made here: generated tones encoded with FFmpeg (PyAV), never copied from elsewhere."""

from __future__ import annotations

import functools
import io
import math
import struct
import wave

import av


@functools.lru_cache(maxsize=256)  # the stand-in answers each request with one: made once, not per request
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


# --- WAV as servers write it --------------------------------------------------------------


def chunk(chunk_id: bytes, body: bytes, size: int | None = None, pad: bool = True) -> bytes:
    """A RIFF chunk; odd-size bodies get their NUL pad byte unless ``pad`` is False."""
    header = chunk_id + struct.pack("<I", len(body) if size is None else size)
    return header + body + (b"\0" if pad and len(body) % 2 else b"")


def fmt_chunk(rate: int, bits: int = 16, channels: int = 1, tag: int = 1, extensible: bool = False) -> bytes:
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:  # cbSize, valid bits, channel mask, sub-format GUID (its first two bytes: the tag)
        body += struct.pack("<HHI", 22, bits, 4 if channels == 1 else 3)
        body += struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
    return chunk(b"fmt ", body)


def riff(*chunks: bytes, size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def floats(pcm: bytes, bits: int) -> bytes:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return struct.pack(f"<{len(samples)}{'f' if bits == 32 else 'd'}", *(s / 32768 for s in samples))


def streaming_writer_body(pcm: bytes, rate: int = 24000) -> bytes:
    """What a server gets from FFmpeg's WAV muxer writing into a buffer it empties after every read,
    and reads once more after closing: the muxer seeks back to patch both sizes into the empty buffer."""
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="wav")
    stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate, frame.pts = rate, 0
    sent = []
    for packet in stream.encode(frame):
        container.mux(packet)
    sent.append(buffer.getvalue())
    buffer.seek(0)
    buffer.truncate(0)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    sent.append(buffer.getvalue())
    return b"".join(sent)


def shaped_wav(pcm: bytes, rate: int, shape: str) -> bytes:
    """``pcm`` (16-bit mono) as a WAV of one of the shapes real servers send."""
    if shape == "streamed":  # OpenAI's streamed WAV: both sizes 0xFFFFFFFF
        return riff(fmt_chunk(rate), chunk(b"data", pcm, size=0xFFFFFFFF), size=0xFFFFFFFF)
    if shape == "zero-sizes":  # libsndfile's header before it is closed (Speaches streamed through soundfile)
        return riff(fmt_chunk(rate), chunk(b"data", pcm, size=0), size=0)
    if shape == "muxer-trailer":  # FFmpeg's muxer read back after closing (Kokoro-FastAPI before its fix)
        return streaming_writer_body(pcm, rate)
    if shape == "float":  # 32-bit IEEE float (Kokoros' WavHeader with 32 bits)
        return riff(fmt_chunk(rate, bits=32, tag=3), chunk(b"data", floats(pcm, 32)))
    return wav(pcm, rate)


async def pieces(data: bytes, cuts: list[int]):
    """``data`` as a body that arrives in pieces, cut at ``cuts`` (taken modulo its length)."""
    start = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        yield data[start:cut]
        start = cut
    yield data[start:]
