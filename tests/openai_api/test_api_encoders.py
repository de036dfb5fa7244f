"""Encoder and conditioner details the HTTP tests do not reach: other sample widths, the streamed WAV header."""

from __future__ import annotations

import array
import io
import wave

import pytest
from tone_wyoming import estimate_frequency, tone

from wyoming_openai.audio import PcmFormat
from wyoming_openai.openai_api.encoders import Conditioner, SpeechPipeline, WavEncoder, output_rate


def _as_width(pcm16: bytes, width: int, channels: int) -> bytes:
    samples = array.array("h", pcm16)
    if width == 1:
        out = bytes((s >> 8) + 128 for s in samples for _ in range(channels))
    elif width == 4:
        out = array.array("i", [s << 16 for s in samples for _ in range(channels)]).tobytes()
    else:
        out = array.array("h", [s for s in samples for _ in range(channels)]).tobytes()
    return out


@pytest.mark.parametrize(("width", "channels"), [(1, 1), (4, 1), (4, 2), (2, 2)])
def test_conditioner_takes_any_wyoming_width_and_channels(width: int, channels: int) -> None:
    source = _as_width(tone(0.5, 16000, 440.0), width, channels)
    conditioner = Conditioner(PcmFormat(16000, width, channels), 16000)
    # Pieces cut mid-frame, as a socket may deliver them.
    out = b"".join(conditioner.push(source[i : i + 1001]) for i in range(0, len(source), 1001)) + conditioner.flush()
    assert abs(len(out) / 32000 - 0.5) < 0.01
    assert abs(estimate_frequency(out, 16000) - 440) < 5


def test_passthrough_keeps_bytes_and_carries_half_samples() -> None:
    pcm = tone(0.1, 22050, 220.0)
    conditioner = Conditioner(PcmFormat(22050), 22050)
    assert conditioner.passthrough
    assert conditioner.push(pcm[:101]) + conditioner.push(pcm[101:]) == pcm


def test_streamed_wav_header_is_read_to_the_end() -> None:
    encoder = WavEncoder(22050)
    pcm = tone(0.2, 22050, 220.0)
    data = encoder.encode(pcm[:1000]) + encoder.encode(pcm[1000:]) + encoder.finish()
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (22050, 2, 1)
        assert w.readframes(w.getnframes()) == pcm


def test_empty_speech_is_still_a_wav_file() -> None:
    with wave.open(io.BytesIO(WavEncoder(16000).finish())) as w:
        assert w.getframerate() == 16000


@pytest.mark.parametrize(
    ("fmt", "source", "rate"),
    [("pcm", 22050, 24000), ("wav", 22050, 22050), ("mp3", 22050, 22050), ("mp3", 96000, 24000),
     ("opus", 22050, 24000), ("opus", 48000, 48000), ("aac", 7000, 24000), ("flac", 96000, 96000)],
)  # fmt: skip
def test_output_rates(fmt: str, source: int, rate: int) -> None:
    assert output_rate(fmt, source) == rate


async def test_pipeline_close_before_start_is_harmless() -> None:
    SpeechPipeline("mp3").close()
