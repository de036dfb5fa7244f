"""Audio in and out: WAV for transcription uploads, and whatever an upstream sends turned into 16-bit mono PCM.

What arrived is decoded, not what was asked for: the container is recognised from its first bytes
(RIFF/WAVE, ID3 or an MPEG frame, ``fLaC``, ``OggS``, ADTS). WAV is read here, as streaming servers
write it (unknown sizes, extra chunks, several files in one body); its samples are passed through
when they are already 16-bit mono at the wanted rate, else converted with FFmpeg (PyAV) inline.
Compressed formats are decoded by FFmpeg in a worker thread, so the event loop never blocks on a
decoder that is waiting for bytes. Raw PCM is assumed only when nothing is recognised and the
upstream was asked for pcm (or labels its answer as such).
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import av

SAMPLE_WIDTH = 2  # what clients get: 16-bit signed little-endian
WAV_HEADER_LIMIT = 64 * 1024  # a WAV whose data chunk starts later than this is not speech we want
SNIFF_BYTES = 12  # enough for every signature below ("RIFF" size "WAVE" is the longest)

# Recognised container -> FFmpeg demuxer (WAV is read here).
_DEMUXERS = {"mp3": "mp3", "flac": "flac", "ogg": "ogg", "aac": "aac"}
_NAMES = {"mp3": "MP3", "flac": "FLAC", "ogg": "Ogg", "aac": "AAC"}
# Keep probing tiny: the default (5 MB) would hold back the first audio until most of the body arrived.
_STREAMING_OPTIONS = {"probesize": "32", "analyzeduration": "0"}


class AudioDecodeError(Exception):
    """The upstream's body is not audio we can play; the text completes "<the upstream> …",
    e.g. "sent an empty body"."""


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


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _layout(channels: int) -> str:
    return _LAYOUTS[channels]


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


# --- levels ---------------------------------------------------------------------------------------


def sample_limit(dbfs: float) -> int:
    """A level in dBFS as a 16-bit sample magnitude (-60 dBFS is 33 of 32768)."""
    return max(1, round(32768 * 10 ** (dbfs / 20)))


def peak_below(pcm: bytes, width: int, limit: int) -> bool:
    """Whether every sample of 16-bit ``pcm`` (any channel count) stays below about ``limit`` in magnitude.

    Checked at C speed over the bytes, without unpacking a sample (numpy is not a dependency): a
    sample is small when its high byte is 00 or FF, and then the low byte XOR the high byte is its
    magnitude (give or take one). Audio of another width is never called quiet.
    """
    if width != 2:
        return False
    high = pcm[1::2]
    if limit >= 256:
        steps = min(limit // 256, 128)
        return not high.translate(None, bytes(range(steps)) + bytes(range(256 - steps, 256)))
    if high.translate(None, b"\x00\xff"):
        return False
    low = pcm[0::2]
    magnitude = (int.from_bytes(low, "little") ^ int.from_bytes(high, "little")).to_bytes(len(low), "little")
    return not magnitude.translate(None, bytes(range(limit)))


# --- what arrived ---------------------------------------------------------------------------------


def sniff(head: bytes, asked: str | None = None) -> str | None:
    """The container of a body from its first bytes: wav, mp3, flac, ogg or aac; None if unknown.

    Raw PCM can look like an MPEG or ADTS frame sync (a sample of -1 is ``FF FF``), so when raw pcm
    was asked for only the four-byte magic words count.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if asked == "pcm" or len(head) < 4 or head[0] != 0xFF:
        return None
    if (head[1] & 0xF6) == 0xF0 and (head[2] >> 2) & 0x0F < 13:  # ADTS: 12-bit sync, layer 00, a known rate
        return "aac"
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    if (head[1] & 0xE0) == 0xE0 and version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3:
        return "mp3"
    return None


def pcm_rate_of(content_type: str | None) -> int | None:
    """The rate a server names for raw PCM (``audio/pcm;rate=22050``, ``audio/L16; rate=24000``)."""
    if not content_type:
        return None
    mime, *params = (part.strip().lower() for part in content_type.split(";"))
    if mime not in ("audio/pcm", "audio/l16", "audio/x-raw", "audio/raw"):
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "rate" and value.strip().isdigit():
            return int(value.strip())
    return 0  # raw PCM at a rate the server does not say


def _describe_bytes(data: bytes) -> str:
    head = data[:64].lstrip()
    if head.startswith((b"{", b"<", b"[")):
        return "text (" + head.decode("utf-8", "replace").split("\n")[0][:60] + "…)"
    return f"{len(data)} bytes of something else"


async def decode_speech(
    chunks: AsyncIterator[bytes],
    response_format: str,
    *,
    pcm_rate: int,
    target_rate: int | None = None,
    content_type: str | None = None,
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    """Turn an upstream speech body into (format, 16-bit mono PCM) pieces as the bytes arrive.

    ``response_format`` is what was asked for: only raw ``pcm`` depends on it, since it has no
    signature. ``pcm_rate`` is the rate of raw pcm when ``content_type`` does not name one;
    ``target_rate`` resamples (None keeps the source's). Every piece has the same format.
    Raises AudioDecodeError for a body that is not audio.
    """
    head = await _read_head(chunks)
    if not head:
        raise AudioDecodeError("sent an empty body instead of audio")
    kind = sniff(head, response_format)
    if kind == "wav":
        pieces = _decode_wav(head, chunks, target_rate)
    elif kind is not None:
        pieces = _decode_with_ffmpeg(head, chunks, kind, target_rate)
    elif response_format == "pcm" or pcm_rate_of(content_type) is not None:
        rate = pcm_rate_of(content_type) or pcm_rate
        pieces = _convert_s16(PcmFormat(rate), head, chunks, target_rate)
    else:
        raise AudioDecodeError(
            f"sent {_describe_bytes(head)} instead of audio (no WAV, MP3, FLAC, Ogg or AAC signature)"
        )
    async for piece in pieces:
        yield piece


async def _read_head(chunks: AsyncIterator[bytes]) -> bytes:
    """At least SNIFF_BYTES of the body, or all of a shorter one; ``chunks`` goes on after them."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    return head


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


# --- WAV, as servers really write it ---------------------------------------------------------------

# (format tag, bits per sample) -> FFmpeg decoder for the samples.
_WAV_CODECS = {
    (1, 8): "pcm_u8", (1, 16): "pcm_s16le", (1, 24): "pcm_s24le", (1, 32): "pcm_s32le",
    (3, 32): "pcm_f32le", (3, 64): "pcm_f64le", (6, 8): "pcm_alaw", (7, 8): "pcm_mulaw",
}  # fmt: skip
_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what a writer puts before it knows how long the audio will be


@dataclass(frozen=True)
class WavFormat:
    """The samples of one WAV part."""

    codec: str
    rate: int
    channels: int
    block_align: int

    @property
    def is_s16(self) -> bool:
        return self.codec == "pcm_s16le" and self.block_align == 2 * self.channels


@dataclass
class _Part:
    format: WavFormat
    header_bytes: int  # RIFF header up to the first sample
    data_left: int | None  # None: the data runs to the end of the body (or to the next WAV)
    data_seen: int = 0


class WavParser:
    """Splits a WAV byte stream into runs of sample bytes, each with its part's number and format.

    Tolerates what streaming servers write: RIFF and data sizes of 0 or 0xFFFFFFFF (the data then runs
    to the end), any chunks before ``data``, WAVE_FORMAT_EXTENSIBLE, chunks after ``data`` (skipped:
    played, they click), odd-size padding, and several WAV files one after another, whether the sizes
    say where one ends or not. No header byte is ever returned as audio.
    """

    def __init__(self) -> None:
        self.part: _Part | None = None
        self.parts = 0
        self._buffer = b""  # header bytes, or audio held back while the data size is unknown
        self._in_data = False
        self._skip = 0  # bytes of a chunk after the data still to skip
        self._padding = False  # an odd-size chunk just ended: a NUL pad byte may follow

    def push(self, data: bytes) -> list[tuple[int, WavFormat, bytes]]:
        """The sample bytes ``data`` completes, in order."""
        part = self.part
        if self._in_data and part is not None and part.data_left is not None and not self._buffer:
            if len(data) <= part.data_left:  # the common case: the bytes are all audio
                part.data_left -= len(data)
                part.data_seen += len(data)
                return [(self.parts, part.format, data)] if data else []
        out: list[tuple[int, WavFormat, bytes]] = []
        self._feed(self._buffer + data if self._buffer else data, out)
        return out

    def end(self) -> list[tuple[int, WavFormat, bytes]]:
        """The body is complete: what was held back, unless it is a writer's junk trailer."""
        rest, self._buffer = self._buffer, b""
        if self.part is None:
            raise AudioDecodeError("sent a WAV that ends inside its header" if rest else "sent an empty WAV")
        if self._in_data and self.part.data_left is None and rest and not self._is_size_trailer(rest):
            return [(self.parts, self.part.format, rest)]
        return []

    # --- steps ----------------------------------------------------------------------------------

    def _feed(self, data: bytes, out: list[tuple[int, WavFormat, bytes]]) -> None:
        while data:
            if self._in_data:
                data = self._take_data(data, out)
            elif self._skip or self._padding:
                data = self._skip_bytes(data)
            elif self.part is not None and data[:4] != b"RIFF":
                data = self._next_chunk(data)
            else:
                data = self._read_header(data)
            if data is None:
                return

    def _take_data(self, data: bytes, out: list) -> bytes | None:
        part = self.part
        assert part is not None
        if part.data_left is None:
            return self._take_open_data(data, out)
        taken, rest = data[: part.data_left], data[part.data_left :]
        part.data_left -= len(taken)
        part.data_seen += len(taken)
        if taken:
            out.append((self.parts, part.format, taken))
        if part.data_left == 0:
            self._in_data = False
            self._padding = part.data_seen % 2 == 1
        return rest or None

    def _take_open_data(self, data: bytes, out: list) -> bytes | None:
        """Data of unknown length: it ends where another WAV begins, or with the body. The last bytes
        are held back, since they may be the start of a header or an encoder's junk trailer."""
        part = self.part
        assert part is not None
        start = data.find(b"RIFF")
        while start != -1 and len(data) >= start + 12 and data[start + 8 : start + 12] != b"WAVE":
            start = data.find(b"RIFF", start + 1)
        if start != -1 and len(data) >= start + 12:
            audio, rest = data[:start], data[start:]
            self._in_data = False
        else:
            keep = max(part.header_bytes, SNIFF_BYTES)
            audio, rest = data[:-keep], None
            self._buffer = data[-keep:]
        if audio:
            part.data_seen += len(audio)
            out.append((self.parts, part.format, audio))
        return rest

    def _is_size_trailer(self, tail: bytes) -> bool:
        """A WAV writer that patched its sizes into an already-sent buffer appends a header-long
        trailer: zeros, with the RIFF size at 4 and the data size at its end. Played, it clicks."""
        part = self.part
        assert part is not None
        n = part.header_bytes
        if len(tail) != n or n < 12:
            return False
        riff_size, data_size = struct.unpack_from("<I", tail, 4)[0], struct.unpack_from("<I", tail, n - 4)[0]
        others = tail[:4] + tail[8 : n - 4]
        return data_size == part.data_seen and riff_size == n + data_size - 8 and not others.strip(b"\0")

    def _skip_bytes(self, data: bytes) -> bytes | None:
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
            if not data:
                return None
        if self._padding:
            self._padding = False
            if data[:1] == b"\0":  # chunk ids never start with NUL: this is the pad byte
                data = data[1:]
        return data or None

    def _next_chunk(self, data: bytes) -> bytes | None:
        """A chunk after the data (LIST, id3, …): skipped."""
        if len(data) < 8:
            self._buffer = data
            return None
        size = struct.unpack_from("<I", data, 4)[0]
        self._skip = size
        self._padding = size % 2 == 1
        return data[8:] or None

    def _read_header(self, data: bytes) -> bytes | None:
        parsed = _parse_wav_header(data)
        if parsed is None:
            if len(data) > WAV_HEADER_LIMIT:
                raise AudioDecodeError("sent no WAV data chunk in its first 64 KiB")
            self._buffer = data
            return None
        wav_format, offset, data_size = parsed
        self.parts += 1
        self.part = _Part(wav_format, offset, None if data_size in _UNKNOWN_SIZES else data_size)
        self._in_data = True
        self._buffer = b""
        return data[offset:] or None


def _parse_wav_header(data: bytes) -> tuple[WavFormat, int, int] | None:
    """(format, offset of the first sample, data size) of a WAV header; None until it is complete."""
    if len(data) >= 12 and (data[:4] != b"RIFF" or data[8:12] != b"WAVE"):
        raise AudioDecodeError(f"sent {_describe_bytes(data)} inside its WAV audio")
    offset, wav_format = 12, None
    while len(data) >= offset + 8:
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == b"data":
            if wav_format is None:
                raise AudioDecodeError("sent a WAV whose data comes before its format (no fmt chunk)")
            return wav_format, offset + 8, size
        if chunk_id == b"fmt ":
            if len(data) < offset + 8 + size:
                return None
            wav_format = _parse_fmt(data[offset + 8 : offset + 8 + size])
        offset += 8 + size
        if size % 2 and len(data) > offset and data[offset] == 0:
            offset += 1  # the pad byte after an odd-size chunk (some writers leave it out)
        if offset > WAV_HEADER_LIMIT:
            raise AudioDecodeError("sent no WAV data chunk in its first 64 KiB")
    return None


def _parse_fmt(fmt: bytes) -> WavFormat:
    if len(fmt) < 16:
        raise AudioDecodeError("sent a WAV with a broken fmt chunk")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the first two bytes of the sub-format GUID
    codec = _WAV_CODECS.get((tag, bits))
    if codec is None:
        raise AudioDecodeError(f"sent a WAV in a sample format this server cannot play (format {tag:#x}, {bits} bits)")
    if rate <= 0 or not 1 <= channels <= 8:
        raise AudioDecodeError(f"sent a WAV header that makes no sense ({rate} Hz, {channels} channels)")
    return WavFormat(codec, rate, channels, channels * bits // 8)  # a written block_align is not trusted


class _SampleConverter:
    """One WAV part's samples to 16-bit mono at the output rate: passed through when they already are."""

    def __init__(self, source: WavFormat, rate: int) -> None:
        self.source = source
        self._aligner = FrameAligner(source.block_align)
        self._s16: S16Converter | None = None
        self._decoder: av.CodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        if source.is_s16 and source.channels <= 2:
            if source.channels != 1 or source.rate != rate:
                self._s16 = S16Converter(PcmFormat(source.rate, SAMPLE_WIDTH, source.channels), rate)
        else:
            self._decoder = av.CodecContext.create(source.codec, "r")
            self._decoder.sample_rate = source.rate
            self._decoder.layout = _layout(source.channels)
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def new_part(self) -> None:
        self._aligner = FrameAligner(self.source.block_align)  # a partial frame at a part's end is dropped

    def convert(self, data: bytes) -> bytes:
        aligned = self._aligner.push(data)
        if not aligned:
            return b""
        if self._decoder is not None:
            return self._resample(self._decoder.decode(av.Packet(aligned)))
        return self._s16.convert(aligned) if self._s16 is not None else aligned

    def flush(self) -> bytes:
        if self._s16 is not None:
            return self._s16.flush()
        return self._resample([None]) if self._resampler is not None else b""

    def _resample(self, frames: list) -> bytes:
        assert self._resampler is not None
        return b"".join(_s16_bytes(out) for frame in frames for out in self._resampler.resample(frame))


class _WavOutput:
    """The PCM of every part in the first part's output format (the client has one format)."""

    def __init__(self, target_rate: int | None) -> None:
        self.target_rate = target_rate
        self.format: PcmFormat | None = None
        self._converter: _SampleConverter | None = None
        self._part = 0

    def convert(self, part: int, source: WavFormat, data: bytes) -> bytes:
        flushed = b""
        if self.format is None:
            self.format = PcmFormat(self.target_rate or source.rate)
        if self._converter is None or self._converter.source != source:
            flushed = self.flush()
            self._converter = _SampleConverter(source, self.format.rate)
        elif part != self._part:
            self._converter.new_part()
        self._part = part
        pcm = self._converter.convert(data)
        return flushed + pcm if flushed else pcm

    def flush(self) -> bytes:
        return self._converter.flush() if self._converter is not None else b""


def wav_runs(parser: WavParser, data: bytes, end: bool = False) -> Iterator[tuple[int, WavFormat, bytes]]:
    yield from parser.push(data)
    if end:
        yield from parser.end()


async def _decode_wav(
    head: bytes, chunks: AsyncIterator[bytes], target_rate: int | None
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    parser = WavParser()
    output = _WavOutput(target_rate)
    for run in parser.push(head):
        if pcm := output.convert(*run):
            yield output.format, pcm  # type: ignore[misc]
    async for chunk in chunks:
        for run in parser.push(chunk):
            if pcm := output.convert(*run):
                yield output.format, pcm  # type: ignore[misc]
    for run in parser.end():
        if pcm := output.convert(*run):
            yield output.format, pcm  # type: ignore[misc]
    if pcm := output.flush():
        yield output.format, pcm  # type: ignore[misc]


# --- compressed formats, decoded by FFmpeg in a thread -----------------------------------------------


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


class _ThreadedDecoder:
    """FFmpeg decoding one body in a worker thread; what it decodes comes back through a queue."""

    def __init__(self, kind: str, target_rate: int | None) -> None:
        self.kind = kind
        self.target_rate = target_rate
        self.pipe = _BlockingPipe()
        self._loop = asyncio.get_running_loop()
        self._decoded: asyncio.Queue[object] = asyncio.Queue()
        threading.Thread(target=self._decode, name=f"decode-{kind}", daemon=True).start()

    def _emit(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._decoded.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            pass

    def _decode(self) -> None:
        name = _NAMES[self.kind]
        try:
            with av.open(
                self.pipe, "r", format=_DEMUXERS[self.kind], options=_STREAMING_OPTIONS, buffer_size=4096
            ) as container:
                if not container.streams.audio:
                    raise AudioDecodeError(f"sent {name} without an audio stream")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=self.target_rate)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        self._emit((PcmFormat(out.sample_rate), _s16_bytes(out)))
                for out in resampler.resample(None):
                    self._emit((PcmFormat(out.sample_rate), _s16_bytes(out)))
        except AudioDecodeError as err:
            self._emit(err)
        except (av.FFmpegError, ValueError, OSError) as err:
            self._emit(AudioDecodeError(f"sent a body that is not valid {name} audio ({type(err).__name__})"))
        finally:
            self._emit(_END)

    async def feed(self, first: bytes, chunks: AsyncIterator[bytes]) -> None:
        try:
            self.pipe.feed(first)
            async for chunk in chunks:
                self.pipe.feed(chunk)
        finally:
            self.pipe.end()

    async def next_item(self, feeder: asyncio.Future) -> object:
        """The next decoded item; a failure of the body itself (the feeder) wins over the decoder's."""
        while not feeder.done():
            getter = asyncio.ensure_future(self._decoded.get())
            await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()  # Queue.get gives up cleanly: nothing is lost
        if feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]
        return await self._decoded.get()


async def _decode_with_ffmpeg(
    first: bytes, chunks: AsyncIterator[bytes], kind: str, target_rate: int | None
) -> AsyncIterator[tuple[PcmFormat, bytes]]:
    decoder = _ThreadedDecoder(kind, target_rate)
    feeder = asyncio.ensure_future(decoder.feed(first, chunks))
    fmt: PcmFormat | None = None
    try:
        while (item := await decoder.next_item(feeder)) is not _END:
            if isinstance(item, AudioDecodeError):
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]  # the body broke: that is the news
                raise item
            piece_format, pcm = item  # type: ignore[misc]
            fmt = fmt or piece_format
            if pcm:
                yield fmt, pcm
        await feeder  # re-raises an upstream failure that ended the body early
        if fmt is None:
            raise AudioDecodeError(f"sent no {_NAMES[kind]} audio")
    finally:
        decoder.pipe.end(abort=True)
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


class _Limit:
    """The caller's bound on decoded audio; a small compressed file can expand a thousandfold."""

    def __init__(self, rate: int, max_seconds: float | None) -> None:
        self.max_seconds = max_seconds
        self.max_bytes = None if max_seconds is None else int(max_seconds * rate) * SAMPLE_WIDTH

    def check(self, size: int) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise AudioTooLongError(f"the uploaded audio is longer than {self.max_seconds:g} seconds")


def _decode_file(data: bytes, rate: int, max_seconds: float | None) -> bytes:
    limit = _Limit(rate, max_seconds)
    try:
        pcm = _wav_file_pcm(data, rate) if sniff(data[:SNIFF_BYTES]) == "wav" else None
    except AudioDecodeError:
        pcm = None  # a WAV codec we do not read ourselves (ADPCM, …): FFmpeg may know it
    if pcm is None:
        pcm = _ffmpeg_file_pcm(data, rate, limit)
    limit.check(len(pcm))
    if not pcm:
        raise AudioDecodeError("the uploaded file holds no audio samples")
    return pcm


def _wav_file_pcm(data: bytes, rate: int) -> bytes:
    """A WAV read by the same parser as upstream speech: no probing of FFmpeg's demuxers, which is
    most of the cost for short uploads."""
    parser, output = WavParser(), _WavOutput(rate)
    pcm = b"".join(output.convert(*run) for run in wav_runs(parser, data, end=True))
    return pcm + output.flush()


def _ffmpeg_file_pcm(data: bytes, rate: int, limit: _Limit) -> bytes:
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the uploaded file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                for converted in resampler.resample(frame):
                    out += _s16_bytes(converted)
                limit.check(len(out))
            for converted in resampler.resample(None):
                out += _s16_bytes(converted)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as err:
        raise AudioDecodeError(f"the uploaded file is not audio in a known format ({type(err).__name__})") from None
    return bytes(out)
