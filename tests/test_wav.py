"""WAV as real servers write it, and containers recognised from their first bytes, checked sample by sample.

A header byte played as audio is a click: every test compares the decoded samples with the samples
that went in, or, where a part had to be converted, bounds the jump between neighbouring samples.
"""

from __future__ import annotations

import math
import struct

import pytest
from audio_samples import chunk, encode, floats, fmt_chunk, pieces, riff, streaming_writer_body, tone, wav
from hypothesis import given, settings
from hypothesis import strategies as st

from wyoming_openai.audio import AudioDecodeError, PcmFormat, decode_file, decode_speech, sniff


async def decode(data: bytes, asked: str = "wav", cuts=(), **kwargs) -> tuple[PcmFormat | None, bytes]:
    out, found = [], None
    async for fmt, pcm in decode_speech(
        pieces(data, list(cuts)), asked, pcm_rate=kwargs.pop("pcm_rate", 24000), **kwargs
    ):
        assert found in (None, fmt)
        found = fmt
        out.append(pcm)
    return found, b"".join(out)


LIST_INFO = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 14) + b"Lavf62.12.100\0")
ODD_LIST = chunk(b"LIST", b"INFOINAM" + struct.pack("<I", 3) + b"ab\0")  # 15 bytes: padded to 16

PCM = tone(0.25, 24000, freq=300)
OTHER_PCM = tone(0.15, 24000, freq=500, amplitude=6000)


def max_jump(pcm: bytes) -> int:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return max(abs(b - a) for a, b in zip(samples, samples[1:], strict=False))


def natural_jump(freq: float, amplitude: int, rate: int) -> float:
    return 2 * math.pi * freq * amplitude / rate


CUTS = st.lists(st.integers(min_value=0, max_value=20000), max_size=10)


# --- one WAV ---------------------------------------------------------------------------------------

SHAPES = {
    "canonical": riff(fmt_chunk(24000), chunk(b"data", PCM)),
    "streamed sizes 0xFFFFFFFF": riff(fmt_chunk(24000), chunk(b"data", PCM, size=0xFFFFFFFF), size=0xFFFFFFFF),
    "streamed sizes 0": riff(fmt_chunk(24000), chunk(b"data", PCM, size=0), size=0),
    "LIST before data": riff(fmt_chunk(24000), LIST_INFO, chunk(b"data", PCM)),
    "odd LIST, padded": riff(fmt_chunk(24000), ODD_LIST, chunk(b"data", PCM)),
    "odd LIST, not padded": riff(
        fmt_chunk(24000), chunk(b"LIST", b"INFOINAM\3\0\0\0ab\0", pad=False), chunk(b"data", PCM)
    ),
    "fact and LIST before fmt": riff(
        chunk(b"fact", struct.pack("<I", 6000)), LIST_INFO, fmt_chunk(24000), chunk(b"data", PCM)
    ),
    "extensible 16-bit": riff(fmt_chunk(24000, extensible=True), chunk(b"data", PCM)),
    "LIST after data": riff(fmt_chunk(24000), chunk(b"data", PCM), LIST_INFO),
    "id3 and odd chunk after data": riff(
        fmt_chunk(24000), chunk(b"data", PCM), chunk(b"id3 ", b"ID3\3\0\0\0\0\0\1x"), ODD_LIST
    ),
    "streamed header, LIST before data": riff(
        fmt_chunk(24000), LIST_INFO, chunk(b"data", PCM, size=0xFFFFFFFF), size=0xFFFFFFFF
    ),  # fmt: skip
}


@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=15, deadline=None)
@given(cuts=CUTS)
async def test_every_wav_shape_plays_exactly_its_samples(shape, cuts):
    fmt, out = await decode(SHAPES[shape], cuts=cuts)
    assert fmt == PcmFormat(24000)
    assert out == PCM  # nothing more (no chunk after the data), nothing less


@pytest.mark.parametrize("extensible", [False, True], ids=["format 3", "extensible"])
@pytest.mark.parametrize("bits", [32, 64])
async def test_float_wav_is_converted_without_loss(extensible, bits):
    data = riff(fmt_chunk(24000, bits=bits, tag=3, extensible=extensible), chunk(b"data", floats(PCM, bits)))
    fmt, out = await decode(data, asked="mp3", cuts=[1000, 1001, 5003])  # Kokoros: float WAV when asked for mp3
    assert fmt == PcmFormat(24000) and out == PCM


async def test_24_bit_extensible_wav_is_converted():
    samples = struct.unpack(f"<{len(PCM) // 2}h", PCM)
    data24 = b"".join(struct.pack("<i", s << 8)[:3] for s in samples)
    fmt, out = await decode(riff(fmt_chunk(24000, bits=24, extensible=True), chunk(b"data", data24)), cuts=[7, 3001])
    assert fmt == PcmFormat(24000) and out == PCM


@settings(max_examples=20, deadline=None)
@given(cuts=CUTS)
async def test_odd_size_8_bit_data_then_a_chunk(cuts):
    data8 = bytes(128 + (i % 50) for i in range(2401))  # odd: a pad byte follows, then a LIST chunk
    fmt, out = await decode(riff(fmt_chunk(8000, bits=8), chunk(b"data", data8), LIST_INFO), cuts=cuts)
    assert fmt == PcmFormat(8000) and len(out) == 2 * 2401


# --- several WAVs in one body ------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", ["known", "unknown"])
@settings(max_examples=25, deadline=None)
@given(cuts=CUTS)
async def test_joined_wavs_play_every_part_and_no_header(sizes, cuts):
    unknown = 0xFFFFFFFF if sizes == "unknown" else None
    parts = [PCM, OTHER_PCM, PCM[:4801]]  # the last one ends mid-frame: the half sample is dropped
    body = b"".join(
        riff(fmt_chunk(24000), LIST_INFO, chunk(b"data", p, size=unknown, pad=False), size=unknown) for p in parts
    )
    fmt, out = await decode(body, cuts=cuts)
    assert fmt == PcmFormat(24000)
    assert out == PCM + OTHER_PCM + PCM[:4800]


async def test_a_later_part_in_another_format_is_converted_to_the_first():
    first = tone(0.3, 24000, freq=200, amplitude=8000)
    second = tone(0.3, 16000, freq=200, amplitude=8000, channels=2)
    third = floats(tone(0.2, 48000, freq=200, amplitude=8000), 32)
    body = (
        riff(fmt_chunk(24000), chunk(b"data", first))
        + riff(fmt_chunk(16000, channels=2), LIST_INFO, chunk(b"data", second))
        + riff(fmt_chunk(48000, bits=32, tag=3), chunk(b"data", third))
    )
    fmt, out = await decode(body, cuts=[50, 3000, 14500, 30001])
    assert fmt == PcmFormat(24000)
    assert out.startswith(first)
    assert abs(len(out) / 2 / 24000 - 0.8) < 0.01
    # Resampling smooths; a header byte or a misaligned frame would jump far beyond the tone's slope.
    assert max_jump(out) < 1.5 * natural_jump(200, 8000, 24000) + 50


async def test_a_resampled_body_keeps_going_across_parts():
    body = riff(fmt_chunk(24000), chunk(b"data", PCM)) + riff(fmt_chunk(24000), chunk(b"data", PCM))
    fmt, out = await decode(body, target_rate=16000, cuts=[100, 12000])
    assert fmt == PcmFormat(16000) and abs(len(out) / 2 / 16000 - 0.5) < 0.003
    assert max_jump(out) < 1.5 * natural_jump(300, 8000, 16000)


# --- a streaming writer's size trailer ---------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(cuts=CUTS)
async def test_a_streaming_writers_size_trailer_is_not_played(cuts):
    body = streaming_writer_body(PCM)
    assert body[4:8] == b"\xff\xff\xff\xff" and len(body) > 44 + len(PCM)  # sizes unknown, a trailer after
    fmt, out = await decode(body, cuts=cuts)
    assert out == PCM


async def test_audio_ending_in_silence_is_kept():
    quiet_end = PCM + bytes(200)
    body = riff(fmt_chunk(24000), chunk(b"data", quiet_end, size=0xFFFFFFFF), size=0xFFFFFFFF)
    assert (await decode(body, cuts=[3000]))[1] == quiet_end


# --- what arrived, whatever was asked ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "asked"),
    [
        (kind, asked)
        for kind in ("mp3", "flac", "opus", "aac", "wav")
        for asked in ("wav", "mp3", "flac", "opus", "aac", "pcm")
        # Not AAC when raw pcm was asked: its frame sync is no magic word, and raw samples can look like one.
        if (kind, asked) != ("aac", "pcm")
    ],
)
async def test_the_container_that_arrived_is_decoded(kind, asked):
    rate = 48000 if kind == "opus" else 24000
    body = wav(tone(0.4, rate), rate) if kind == "wav" else encode(kind, tone(0.4, rate), rate)
    fmt, out = await decode(body, asked=asked, cuts=[5, 700, 2000])
    assert fmt == PcmFormat(rate)
    assert abs(len(out) / 2 / rate - 0.4) < 0.09  # encoders pad by up to two frames


async def test_mp3_with_an_id3_tag_is_recognised():
    body = b"ID3\4\0\0\0\0\0\x0aTIT2\0\0\0\0\0\0\0\0\0\0" + encode("mp3", tone(0.3, 24000), 24000)
    assert sniff(body[:12]) == "mp3"
    fmt, out = await decode(body, asked="wav")
    assert fmt == PcmFormat(24000) and abs(len(out) / 2 / 24000 - 0.3) < 0.09  # MP3 pads by up to two frames


def test_raw_pcm_is_not_taken_for_a_frame_sync_when_pcm_was_asked():
    minus_one = b"\xff\xff\xfb\xff" + bytes(20)  # samples -1, -5: an MPEG sync by the bit pattern
    assert sniff(minus_one, "pcm") is None
    assert sniff(b"\xff\xfb\x90\x64" + bytes(8), "wav") == "mp3"


async def test_raw_pcm_needs_pcm_asked_or_labelled():
    raw = tone(0.2, 24000)
    assert (await decode(raw, asked="pcm"))[1] == raw
    fmt, out = await decode(raw, asked="wav", content_type="audio/pcm; rate=22050")  # Kokoros' streamed answer
    assert fmt == PcmFormat(22050) and out == raw
    with pytest.raises(AudioDecodeError, match="instead of audio"):
        await decode(raw, asked="wav")


async def test_empty_and_truncated_bodies():
    with pytest.raises(AudioDecodeError, match="empty body"):
        await decode(b"")
    with pytest.raises(AudioDecodeError, match="ends inside its header"):
        await decode(riff(fmt_chunk(24000))[:30])
    with pytest.raises(AudioDecodeError, match="cannot play"):
        await decode(riff(fmt_chunk(24000, bits=4, tag=2), chunk(b"data", bytes(100))))


@pytest.mark.parametrize("shape", ["LIST before data", "extensible 16-bit", "LIST after data", "streamed sizes 0"])
async def test_uploaded_wavs_of_every_shape(shape):
    assert await decode_file(SHAPES[shape], 24000) == PCM
    assert abs(len(await decode_file(SHAPES[shape], 16000)) / 2 / 16000 - 0.25) < 0.003
