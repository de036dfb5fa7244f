"""Wyoming PCM to the speech formats OpenAI clients ask for, piece by piece as the audio arrives.

Two stages, each skipped when it has nothing to do:
- ``Conditioner``: any Wyoming PCM (8/16/32-bit, mono/stereo, any rate) to 16-bit mono at the
  output rate, with FFmpeg's ``atempo`` for ``speed`` (tempo changes, pitch stays).
- an encoder: raw ``pcm``, streamed ``wav``, or an FFmpeg (PyAV) muxer for mp3/flac/opus/aac that
  writes into a buffer we drain after every piece, so each HTTP chunk is playable as it comes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import av

from ..audio import SAMPLE_WIDTH, PcmFormat

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
PCM_RATE = 24000  # OpenAI's raw pcm is 24 kHz 16-bit mono: clients play it without being told the rate
# Rates each codec takes; other rates are resampled to the fallback.
_CODEC_RATES = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "aac": (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}
_MUXERS = {"mp3": ("mp3", "libmp3lame"), "flac": ("flac", "flac"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac")}
# Ogg holds packets back until a page is full (1 s by default): short pages let opus stream.
_MUXER_OPTIONS = {"opus": {"page_duration": "20000"}}
_AV_FORMATS = {1: "u8", 2: "s16", 4: "s32"}
MIN_SPEED, MAX_SPEED = 0.25, 4.0
INLINE_BYTES = 32 * 1024  # cheap work on less than this stays on the event loop; the rest goes to a thread


def output_rate(response_format: str, source_rate: int) -> int:
    if response_format == "pcm":
        return PCM_RATE
    rates = _CODEC_RATES.get(response_format)
    if rates is None or source_rate in rates:
        return source_rate
    return PCM_RATE


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def _s16(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * SAMPLE_WIDTH]


class Conditioner:
    """Source PCM to 16-bit mono at ``rate`` and ``speed``; a pass-through when nothing changes."""

    def __init__(self, source: PcmFormat, rate: int, speed: float = 1.0) -> None:
        self.source = source
        self.rate = rate
        self.speed = speed
        self.passthrough = source == PcmFormat(rate) and speed == 1.0
        self._rest = b""  # a partial frame carried to the next piece
        self._graph: av.filter.Graph | None = None
        self._resampler: av.AudioResampler | None = None
        if self.passthrough:
            return
        if speed != 1.0:
            self._graph = self._tempo_graph()
        else:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    @property
    def costly(self) -> bool:
        """Whether a piece takes real CPU time (tempo filtering), whatever its size."""
        return self._graph is not None

    def _tempo_graph(self) -> av.filter.Graph:
        graph = av.filter.Graph()
        node = graph.add_abuffer(
            format=_AV_FORMATS[self.source.width], sample_rate=self.source.rate, layout=_layout(self.source.channels)
        )
        # One atempo stage takes 0.5-2.0 reliably on every FFmpeg: chain two for 0.25-4.0.
        stages = [self.speed] if 0.5 <= self.speed <= 2.0 else [self.speed**0.5, self.speed**0.5]
        for factor in stages:
            stage = graph.add("atempo", f"{factor:.6f}")
            node.link_to(stage)
            node = stage
        convert = graph.add("aformat", f"sample_fmts=s16:sample_rates={self.rate}:channel_layouts=mono")
        node.link_to(convert)
        sink = graph.add("abuffersink")
        convert.link_to(sink)
        graph.configure()
        return graph

    def _frame(self, pcm: bytes) -> av.AudioFrame | None:
        if self._rest:
            pcm = self._rest + pcm
        frame_bytes = self.source.frame_bytes
        cut = len(pcm) - len(pcm) % frame_bytes
        self._rest = pcm[cut:]
        if not cut:
            return None
        frame = av.AudioFrame(
            format=_AV_FORMATS[self.source.width], layout=_layout(self.source.channels), samples=cut // frame_bytes
        )
        frame.planes[0].update(pcm[:cut])
        frame.sample_rate = self.source.rate
        return frame

    def push(self, pcm: bytes) -> bytes:
        if self.passthrough:
            if self._rest or len(pcm) % SAMPLE_WIDTH:
                pcm = self._rest + pcm
                cut = len(pcm) - len(pcm) % SAMPLE_WIDTH
                self._rest = pcm[cut:]
                return pcm[:cut]
            return pcm
        frame = self._frame(pcm)
        if frame is None:
            return b""
        return self._run(frame)

    def flush(self) -> bytes:
        if self.passthrough:
            return b""
        return self._run(None)

    def _run(self, frame: av.AudioFrame | None) -> bytes:
        if self._resampler is not None:
            return b"".join(_s16(out) for out in self._resampler.resample(frame))
        assert self._graph is not None
        self._graph.push(frame)
        out = []
        while True:
            try:
                out.append(_s16(self._graph.pull()))
            except (av.BlockingIOError, av.EOFError):
                return b"".join(out)


class _Sink:
    """Where a muxer writes; drained after every piece. Not seekable, so muxers stream."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class Encoder:
    """16-bit mono PCM at ``rate`` to one response format. ``encode`` and ``finish`` return bytes to send."""

    compressed = False

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


class WavEncoder(Encoder):
    """A WAV whose header is sent before the length is known, as streaming WAV servers do.

    The RIFF and data sizes are the largest values the format allows; FFmpeg, browsers and Python's
    ``wave`` read such a file to its end.
    """

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self._header_sent = False

    def header(self) -> bytes:
        fmt = PcmFormat(self.rate)
        return (
            b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, self.rate, fmt.bytes_per_second, fmt.frame_bytes, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF)
        )  # fmt: skip

    def encode(self, pcm: bytes) -> bytes:
        if not self._header_sent:
            self._header_sent = True
            return self.header() + pcm
        return pcm

    def finish(self) -> bytes:
        # Speech that produced no samples is still a valid (empty) WAV file.
        return self.encode(b"") if not self._header_sent else b""


class AvEncoder(Encoder):
    compressed = True

    def __init__(self, response_format: str, rate: int) -> None:
        super().__init__(rate)
        muxer, codec = _MUXERS[response_format]
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=muxer, options=_MUXER_OPTIONS.get(response_format, {}))
        self._stream = self._container.add_stream(codec, rate=rate, layout="mono")
        self._resampler = av.AudioResampler(format=self._stream.codec_context.format.name, layout="mono", rate=rate)
        self._closed = False

    def encode(self, pcm: bytes) -> bytes:
        if pcm:
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // SAMPLE_WIDTH)
            frame.planes[0].update(pcm)
            frame.sample_rate = self.rate
            self._mux(frame)
        return self._sink.drain()

    def _mux(self, frame: av.AudioFrame | None) -> None:
        for converted in self._resampler.resample(frame):
            for packet in self._stream.encode(converted):
                self._container.mux(packet)

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            self._mux(None)
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.drain()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def make_encoder(response_format: str, rate: int) -> Encoder:
    if response_format == "pcm":
        return Encoder(rate)
    if response_format == "wav":
        return WavEncoder(rate)
    return AvEncoder(response_format, rate)


@dataclass
class SpeechPipeline:
    """Wyoming PCM in, response-format bytes out; heavy pieces are processed in a worker thread."""

    response_format: str
    speed: float = 1.0
    _conditioner: Conditioner | None = None
    _encoder: Encoder | None = None
    _job: asyncio.Future[bytes] | None = None

    @property
    def started(self) -> bool:
        return self._encoder is not None

    def start(self, source: PcmFormat) -> None:
        if self._encoder is None:
            rate = output_rate(self.response_format, source.rate)
            self._conditioner = Conditioner(source, rate, self.speed)
            self._encoder = make_encoder(self.response_format, rate)

    def _heavy(self, size: int) -> bool:
        assert self._conditioner is not None and self._encoder is not None
        if self._encoder.compressed or self._conditioner.costly:
            return True
        return not self._conditioner.passthrough and size > INLINE_BYTES

    def _process(self, pcm: bytes) -> bytes:
        assert self._conditioner is not None and self._encoder is not None
        return self._encoder.encode(self._conditioner.push(pcm))

    def _finish(self) -> bytes:
        assert self._conditioner is not None and self._encoder is not None
        return self._encoder.encode(self._conditioner.flush()) + self._encoder.finish()

    async def push(self, pcm: bytes) -> bytes:
        if self._heavy(len(pcm)):
            return await self._in_thread(self._process, pcm)
        return self._process(pcm)

    async def finish(self) -> bytes:
        if self._heavy(0):
            return await self._in_thread(self._finish)
        return self._finish()

    async def _in_thread(self, work: Any, *args: Any) -> bytes:
        # Shielded: if the request is cancelled, the thread still owns the FFmpeg objects until it
        # returns, and close() must wait for that (closing a muxer under a running encoder crashes).
        self._job = asyncio.get_running_loop().run_in_executor(None, work, *args)
        return await asyncio.shield(self._job)

    def close(self) -> None:
        encoder = self._encoder
        if not isinstance(encoder, AvEncoder):
            return
        if self._job is not None and not self._job.done():

            def close_after(job: asyncio.Future[bytes]) -> None:
                if not job.cancelled():
                    job.exception()  # retrieved: a failure nobody awaits is not worth a warning
                encoder.close()

            self._job.add_done_callback(close_after)
        else:
            encoder.close()
