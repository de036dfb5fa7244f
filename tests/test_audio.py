"""Audio conversion, property-based: any chunking gives the same PCM; conversions keep the duration."""

from __future__ import annotations

import io
import wave

import pytest
from audio_samples import encode, pieces, tone, wav
from hypothesis import given, settings
from hypothesis import strategies as st

from wyoming_openai.audio import FrameAligner, PcmFormat, S16Converter, decode_speech, to_wav


async def decode_all(data: bytes, fmt: str, cuts: list[int], **kwargs) -> tuple[PcmFormat, bytes]:
    out, found = b"", None
    async for piece_format, pcm in decode_speech(
        pieces(data, cuts), fmt, pcm_rate=kwargs.pop("pcm_rate", 24000), **kwargs
    ):
        assert found in (None, piece_format)
        found = piece_format
        out += pcm
    return found, out


PCM = tone(0.3, 24000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20000), max_size=12), st.sampled_from(["wav", "pcm"]))
async def test_chunking_never_changes_passthrough_audio(cuts, fmt):
    data = wav(PCM, 24000) if fmt == "wav" else PCM
    found, out = await decode_all(data, fmt, cuts)
    assert found == PcmFormat(24000) and out == PCM


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=20000), max_size=6),
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    st.sampled_from([1, 2]),
)
async def test_resampling_keeps_the_duration(cuts, rate, channels):
    source = wav(tone(0.5, 24000, channels=channels), 24000, channels=channels)
    found, out = await decode_all(source, "wav", cuts, target_rate=rate)
    assert found == PcmFormat(rate)
    assert abs(len(out) / 2 / rate - 0.5) < 0.002


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=6000), max_size=8), st.sampled_from(["mp3", "flac", "aac", "wav_f32"])
)
async def test_compressed_formats_decode_the_same_whatever_the_chunking(cuts, kind):
    data = encode(kind, PCM, 24000)
    _, whole = await decode_all(data, kind.split("_")[0], [])
    _, chunked = await decode_all(data, kind.split("_")[0], cuts)
    # Encoders pad: AAC adds up to two frames (85 ms), MP3 about one (48 ms).
    assert chunked == whole and abs(len(whole) / 2 / 24000 - 0.3) < 0.09


@given(st.lists(st.binary(max_size=50), max_size=20), st.sampled_from([1, 2, 3, 4, 6]))
def test_frame_aligner_emits_whole_frames_in_order(chunks, frame_bytes):
    aligner = FrameAligner(frame_bytes)
    out = b"".join(aligner.push(c) for c in chunks)
    data = b"".join(chunks)
    assert len(out) % frame_bytes == 0 and data.startswith(out) and len(data) - len(out) == aligner.pending


@pytest.mark.parametrize(("rate", "width", "channels"), [(44100, 2, 2), (16000, 2, 1), (8000, 1, 1), (48000, 4, 2)])
def test_to_wav_round_trip(rate, width, channels):
    fmt = PcmFormat(rate, width, channels)
    pcm = bytes(range(256)) * (rate * width * channels // 2560)
    pcm = pcm[: len(pcm) - len(pcm) % (width * channels)]
    with wave.open(io.BytesIO(to_wav([pcm[:1000], pcm[1000:]], fmt))) as w:  # from chunks, as an utterance has them
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (rate, width, channels)
        assert w.readframes(w.getnframes()) == pcm


def test_converter_downmixes_stereo():
    converter = S16Converter(PcmFormat(24000, 2, 2), 24000)
    out = converter.convert(tone(0.2, 24000, channels=2)) + converter.flush()
    assert abs(len(out) / 2 / 24000 - 0.2) < 0.002
