"""Audio in and out: WAV for transcription uploads, and any upstream speech turned into 16-bit mono PCM.

The common case (16-bit mono PCM or WAV at the wanted rate) is passed through without copying
through a codec. Anything else — float or 24-bit WAV, stereo, mp3, flac, opus, aac, another rate —
goes through FFmpeg (PyAV): inline for plain PCM, in a worker thread for compressed formats, so the
event loop never blocks on a decoder that is waiting for bytes.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av

SAMPLE_WIDTH = 2  # what clients get: 16-bit signed little-endian
WAV_HEADER_LIMIT = 64 * 1024  # a WAV whose data chunk starts later than this is not speech we want

# Upstream response_format -> FFmpeg demuxer.
_DEMUXERS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "ogg", "aac": "aac", "pcm": "s16le"}
# Keep probing tiny: the default (5 MB) would hold back the first audio until most of the body arrived.
_STREAMING_OPTIONS = {"probesize": "32", "analyzeduration": "0"}


class AudioDecodeError(Exception):
    """The upstream's body is not audio in the format it was asked for; the text completes
    "<the upstream> …", e.g. "sent an empty body"."""


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    width: int = SAMPLE_WIDTH
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.frame_bytes


def to_wav(chunks: list[bytes], fmt: PcmFormat) -> bytes:
    """A complete WAV file holding the PCM ``chunks`` (whole frames), copied once."""
    size = sum(len(chunk) for chunk in chunks)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, fmt.channels, fmt.rate,
        fmt.bytes_per_second, fmt.frame_bytes, fmt.width * 8, b"data", size,
    )  # fmt: skip
    return b"".join((header, *chunks))


class FrameAligner:
    """Cuts a byte stream into whole frames; upstream bodies and client chunks split anywhere."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._rest = b""

    def push(self, data: bytes) -> bytes:
        if self._rest:
            data = self._rest + data
        cut = len(data) - len(data) % self.frame_bytes
        self._rest = data[cut:]
        return data[:cut] if cut != len(data) else data

    @property
    def pending(self) -> int:
        return len(self._rest)


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class S16Converter:
    """Packed 16-bit PCM (mono or stereo) to 16-bit mono at another rate, through FFmpeg's resampler."""

    def __init__(self, source: PcmFormat, rate: int) -> None:
        self.source = source
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def convert(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        frame = av.AudioFrame(
            format="s16", layout=_layout(self.source.channels), samples=len(pcm) // self.source.frame_bytes
        )
        frame.planes[0].update(pcm)
        frame.sample_rate = self.source.rate
        return b"".join(_s16_bytes(out) for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        return b"".join(_s16_bytes(out) for out in self._resampler.resample(None))


def _s16_bytes(frame: av.AudioFrame) -> bytes:
    # Planes are padded for SIMD; only the first samples * 2 bytes are audio.
    return bytes(frame.planes[0])[: frame.samples * SAMPLE_WIDTH]


async def decode_speech(
    chunks: AsyncIterator[bytes],
    response_format: str,
    *,
    pcm_rate: int,
    target_rate: int | None = None,
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    """Turn an upstream speech body into (format, 16-bit mono PCM) pieces as the bytes arrive.

    ``pcm_rate`` is the rate of a raw ``pcm`` body; ``target_rate`` resamples (None keeps the source's).
    Every piece has the same format. Raises AudioDecodeError for a body that is not such audio.
    """
    if response_format == "pcm":
        source = PcmFormat(pcm_rate)
        async for piece in _convert_s16(source, b"", chunks, target_rate):
            yield piece
        return

    if response_format == "wav":
        header = b""
        async for chunk in chunks:
            header += chunk
            parsed = _parse_wav_header(header)
            if parsed is _NEED_MORE:
                if len(header) > WAV_HEADER_LIMIT:
                    raise AudioDecodeError("sent no WAV data chunk in its first 64 KiB")
                continue
            if parsed is None:  # a WAV, but not packed 16-bit: let FFmpeg decode it
                break
            source, offset = parsed
            async for piece in _convert_s16(source, header[offset:], chunks, target_rate):
                yield piece
            return
        else:
            if not header:
                raise AudioDecodeError("sent an empty body instead of WAV audio")
            if _parse_wav_header(header) is _NEED_MORE:
                raise AudioDecodeError("sent a WAV that ends inside its header")
        async for piece in _decode_with_ffmpeg(header, chunks, "wav", target_rate):
            yield piece
        return

    async for piece in _decode_with_ffmpeg(b"", chunks, response_format, target_rate):
        yield piece


_NEED_MORE = object()


def _parse_wav_header(data: bytes) -> object:
    """(format, data offset) for packed 16-bit mono/stereo WAV; None for another WAV; _NEED_MORE."""
    if len(data) >= 4 and data[:4] != b"RIFF":
        raise AudioDecodeError(f"sent {_describe_bytes(data)} instead of WAV audio")
    stream = io.BytesIO(data)
    try:
        with wave.open(stream, "rb") as wav:
            if wav.getsampwidth() != SAMPLE_WIDTH or wav.getnchannels() not in (1, 2):
                return None
            if wav.getframerate() <= 0:
                raise AudioDecodeError("sent a WAV header without a sample rate")
            return PcmFormat(wav.getframerate(), SAMPLE_WIDTH, wav.getnchannels()), stream.tell()
    except EOFError:
        return _NEED_MORE
    except wave.Error:
        # Float samples, WAVE_FORMAT_EXTENSIBLE on Python 3.11, …: FFmpeg knows them all.
        return None


def _describe_bytes(data: bytes) -> str:
    head = data[:64].lstrip()
    if head.startswith((b"{", b"<", b"[")):
        return "text (" + head.decode("utf-8", "replace").split("\n")[0][:60] + "…)"
    return f"{len(data)} bytes of something else"


async def _convert_s16(
    source: PcmFormat, first: bytes, chunks: AsyncIterator[bytes], target_rate: int | None
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    rate = target_rate or source.rate
    out = PcmFormat(rate)
    aligner = FrameAligner(source.frame_bytes)
    converter = None if (source.channels == 1 and rate == source.rate) else S16Converter(source, rate)

    def process(data: bytes) -> bytes:
        aligned = aligner.push(data)
        return converter.convert(aligned) if converter else aligned

    if first and (pcm := process(first)):
        yield out, pcm
    async for chunk in chunks:
        if pcm := process(chunk):
            yield out, pcm
    if converter and (pcm := converter.flush()):
        yield out, pcm


class _BlockingPipe(io.RawIOBase):
    """A read-only file for FFmpeg in a worker thread, filled from the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._ended = False
        self._aborted = False
        self._ready = threading.Condition()

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        with self._ready:
            self._buffer += data
            self._ready.notify()

    def end(self, abort: bool = False) -> None:
        with self._ready:
            self._ended = True
            self._aborted = self._aborted or abort
            self._ready.notify()

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        with self._ready:
            while not self._buffer and not self._ended:
                self._ready.wait()
            if self._aborted:
                return 0
            n = min(len(target), len(self._buffer))
            target[:n] = self._buffer[:n]
            del self._buffer[:n]
            return n


_END = object()


async def _decode_with_ffmpeg(
    first: bytes, chunks: AsyncIterator[bytes], response_format: str, target_rate: int | None
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    loop = asyncio.get_running_loop()
    pipe = _BlockingPipe()
    decoded: asyncio.Queue[object] = asyncio.Queue()
    fed_bytes = len(first)

    def emit(item: object) -> None:
        try:
            loop.call_soon_threadsafe(decoded.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            pass

    def decode() -> None:
        try:
            with av.open(
                pipe, "r", format=_DEMUXERS[response_format], options=_STREAMING_OPTIONS, buffer_size=4096
            ) as container:
                if not container.streams.audio:
                    raise AudioDecodeError(f"sent {response_format} without an audio stream")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=target_rate)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        emit((PcmFormat(out.sample_rate), _s16_bytes(out)))
                for out in resampler.resample(None):
                    emit((PcmFormat(out.sample_rate), _s16_bytes(out)))
        except AudioDecodeError as err:
            emit(err)
        except (av.FFmpegError, ValueError, OSError) as err:
            emit(AudioDecodeError(f"sent a body that is not valid {response_format} audio ({type(err).__name__})"))
        finally:
            emit(_END)

    async def feed() -> None:
        nonlocal fed_bytes
        try:
            if first:
                pipe.feed(first)
            async for chunk in chunks:
                fed_bytes += len(chunk)
                pipe.feed(chunk)
        finally:
            pipe.end()

    thread = threading.Thread(target=decode, name=f"decode-{response_format}", daemon=True)
    thread.start()
    feeder = asyncio.ensure_future(feed())
    produced = False
    fmt: PcmFormat | None = None
    try:
        while True:
            if feeder.done():
                if feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                item = await decoded.get()
            else:
                getter = asyncio.ensure_future(decoded.get())
                await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()  # Queue.get gives up cleanly: nothing is lost
                    continue
                item = getter.result()
            if item is _END:
                break
            if isinstance(item, AudioDecodeError):
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                raise item
            piece_format, pcm = item  # type: ignore[misc]
            if fmt is None:
                fmt = piece_format
            if pcm:
                produced = True
                yield fmt, pcm
        await feeder  # re-raises an upstream failure that ended the body early
        if not produced:
            raise AudioDecodeError(f"sent no {response_format} audio" if fed_bytes else "sent an empty body")
    finally:
        pipe.end(abort=True)
        if not feeder.done():
            feeder.cancel()


# --- whole uploaded files (the OpenAI-compatible API's transcriptions) ------------------------------


class AudioTooLongError(AudioDecodeError):
    """The upload decodes to more audio than the caller allows."""


async def decode_file(data: bytes, rate: int, *, max_seconds: float | None = None) -> bytes:
    """Any common audio file (wav, mp3, flac, ogg, webm, m4a, …) as 16-bit mono PCM at ``rate``.

    FFmpeg probes the container from the bytes themselves, so the client's file name and content type
    are not trusted. Decoding runs in a worker thread: a long file takes far longer than an event-loop
    tick. Raises AudioDecodeError for bytes that are not audio, AudioTooLongError past ``max_seconds``.
    """
    if not data:
        raise AudioDecodeError("the uploaded file is empty")
    if len(data) <= INLINE_WAV_BYTES and _is_wav_at(data, rate):
        return _decode_file(data, rate, max_seconds)  # already the wanted PCM: no work worth a thread
    return await asyncio.to_thread(_decode_file, data, rate, max_seconds)


INLINE_WAV_BYTES = 1024 * 1024


def _is_wav_at(data: bytes, rate: int) -> bool:
    """A canonical 16-bit mono PCM WAV at ``rate`` (fmt chunk first, as nearly every writer puts it)."""
    if data[:4] != b"RIFF" or data[8:16] != b"WAVEfmt " or len(data) < 36:
        return False

    def little(start: int, size: int) -> int:
        return int.from_bytes(data[start : start + size], "little")

    return little(20, 2) == 1 and little(22, 2) == 1 and little(24, 4) == rate and little(34, 2) == 16


def _decode_file(data: bytes, rate: int, max_seconds: float | None) -> bytes:
    # A small compressed file can expand a thousandfold, so the limit is checked while decoding.
    limit = None if max_seconds is None else int(max_seconds * rate) * SAMPLE_WIDTH
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pcm = _plain_wav(data, rate)
        if pcm is not None:
            if limit is not None and len(pcm) > limit:
                raise AudioTooLongError(f"the uploaded audio is longer than {max_seconds:g} seconds")
            if not pcm:
                raise AudioDecodeError("the uploaded file holds no audio samples")
            return pcm
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the uploaded file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                for converted in resampler.resample(frame):
                    out += _s16_bytes(converted)
                if limit is not None and len(out) > limit:
                    raise AudioTooLongError(f"the uploaded audio is longer than {max_seconds:g} seconds")
            for converted in resampler.resample(None):
                out += _s16_bytes(converted)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as err:
        raise AudioDecodeError(f"the uploaded file is not audio in a known format ({type(err).__name__})") from None
    if limit is not None and len(out) > limit:
        raise AudioTooLongError(f"the uploaded audio is longer than {max_seconds:g} seconds")
    if not out:
        raise AudioDecodeError("the uploaded file holds no audio samples")
    return bytes(out)


def _plain_wav(data: bytes, rate: int) -> bytes | None:
    """16-bit PCM WAV without probing FFmpeg's demuxers (most of the cost for short uploads); None otherwise."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getsampwidth() != SAMPLE_WIDTH or wav.getnchannels() not in (1, 2) or wav.getframerate() <= 0:
                return None
            source = PcmFormat(wav.getframerate(), SAMPLE_WIDTH, wav.getnchannels())
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError):
        return None  # float or 24-bit samples, WAVE_FORMAT_EXTENSIBLE, a broken header: FFmpeg decides
    pcm = pcm[: len(pcm) - len(pcm) % source.frame_bytes]
    if source == PcmFormat(rate):
        return pcm
    converter = S16Converter(source, rate)
    return converter.convert(pcm) + converter.flush()
