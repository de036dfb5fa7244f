"""Streaming TTS as Home Assistant drives it: synthesize-start, a chunk per token, the duplicate, stop."""

from __future__ import annotations

import asyncio
import struct

import pytest
from audio_samples import tone, wav
from harness import Client, proxy_port
from upstream import Fault, amplitude_for
from wyoming.audio import AudioChunk, AudioStart
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_openai.streaming import SentenceSplitter

STREAMING = ("--tts-streaming-models", "gpt-4o-mini-tts")
SENTENCES = ["The kitchen light is on.", "The front door is locked now.", "It is twenty degrees in the living room.",
             "Good night!"]  # fmt: skip


def tokens(text: str) -> list[str]:
    """Roughly as an LLM streams: words with their leading space, punctuation on its own."""
    out = []
    for i, word in enumerate(text.split(" ")):
        prefix = "" if i == 0 else " "
        if word[-1] in ".!?,":
            out += [prefix + word[:-1], word[-1]]
        else:
            out.append(prefix + word)
    return out


def loudness_runs(pcm: bytes) -> list[int]:
    """The peak of each stretch of audio between loudness changes: one per sentence, in order."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    runs: list[int] = []
    window = 600
    for start in range(0, len(samples) - window, window):
        peak = max(abs(s) for s in samples[start : start + window])
        level = round(peak / 1000) * 1000
        if level and (not runs or runs[-1] != level):
            runs.append(level)
    return runs


async def stream_session(client: Client, text_tokens: list[str], voice: str | None = None) -> list:
    await client.send(SynthesizeStart(voice=SynthesizeVoice(name=voice) if voice else None).event())
    await client.send(*(SynthesizeChunk(text=t).event() for t in text_tokens))
    await client.send(Synthesize(text="".join(text_tokens)).event(), SynthesizeStop().event())
    return await client.read_until("synthesize-stopped", timeout=20)


# --- the splitter --------------------------------------------------------------------------------


def feed(splitter: SentenceSplitter, text_tokens: list[str]) -> list[str]:
    pieces = []
    for token in text_tokens:
        pieces += splitter.push(token)
    return pieces + splitter.flush()


def test_sentences_come_out_as_soon_as_the_next_one_starts():
    splitter = SentenceSplitter("en")
    assert splitter.push("The light is on") == []
    assert splitter.push(".") == []
    assert splitter.push(" Dr. Smith") == ["The light is on."]  # and "Dr." is not an end
    assert splitter.push(" called at 3.30 pm. Bye") == ["Dr. Smith called at 3.30 pm."]
    assert splitter.flush() == ["Bye"]


def test_every_word_once_in_order():
    text = " ".join(SENTENCES) + " And a last one without an end"
    pieces = feed(SentenceSplitter("en-US"), tokens(text))
    assert " ".join(pieces).split() == text.split()
    assert pieces[:4] == SENTENCES


def test_min_words_and_max_chars():
    pieces = feed(SentenceSplitter("en", min_words=4), tokens("Yes. Sure. The light is on now. Ok."))
    assert pieces == ["Yes. Sure. The light is on now.", "Ok."]
    long = "This sentence is long, with a clause break in the middle, and it keeps going for quite a while."
    pieces = feed(SentenceSplitter("en", max_chars=40), tokens(long))
    assert all(len(p) <= 40 for p in pieces) and " ".join(pieces).split() == long.split()


@pytest.mark.parametrize(
    ("language", "text"), [("de", "Das Licht ist an. Am 3. Mai kommt er."), ("fr", "La porte est fermée. Bonne nuit !")]
)
def test_other_languages(language, text):
    pieces = feed(SentenceSplitter(language), tokens(text))
    assert len(pieces) == 2 and " ".join(pieces).split() == text.split()


# --- the pipeline, through the real client -------------------------------------------------------


async def test_audio_comes_in_order_while_later_sentences_are_faster(start_proxy, upstream):
    upstream.delay_for_text = {"kitchen": 0.6}  # the first sentence is the slowest
    proxy = await start_proxy(*STREAMING, "--tts-response-format", "pcm")
    async with Client(proxy_port(proxy)) as client:
        events = await stream_session(client, tokens(" ".join(SENTENCES)))
    kinds = [e.type for e in events]
    assert kinds[0] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    assert kinds.count("audio-start") == 1 and kinds.count("audio-stop") == 1
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert loudness_runs(pcm) == [amplitude_for(s) for s in SENTENCES]
    assert [r.json["input"] for r in upstream.requests] == SENTENCES
    assert upstream.most_active_speech > 1  # they really overlapped


async def test_at_most_n_requests_in_flight(start_proxy, upstream):
    upstream.answer_delay = 0.2
    proxy = await start_proxy(*STREAMING, "--tts-concurrent-requests", "2")
    many = [f"Sentence number {i} is here." for i in range(8)]
    async with Client(proxy_port(proxy)) as client:
        await stream_session(client, tokens(" ".join(many)))
    assert upstream.most_active_speech == 2
    assert len(upstream.requests) == 8


async def test_first_audio_before_the_text_is_complete(start_proxy, upstream):
    proxy = await start_proxy(*STREAMING)
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart().event())
        await client.send(*(SynthesizeChunk(text=t).event() for t in tokens(SENTENCES[0] + " The")))
        first = await client.read(timeout=5)  # no synthesize-stop yet
        assert first.type == "audio-start"
        await client.send(SynthesizeChunk(text=" end.").event(), SynthesizeStop().event())
        await client.read_until("synthesize-stopped")


async def test_sentences_in_other_formats_are_converted_to_the_first(start_proxy, upstream):
    upstream.speech_bodies = [wav(tone(0.3, 24000), 24000), wav(tone(0.5, 16000, channels=2), 16000, channels=2)]
    proxy = await start_proxy(*STREAMING)
    async with Client(proxy_port(proxy)) as client:
        events = await stream_session(client, tokens("First one here. Second one there."))
    start = AudioStart.from_event(events[0])
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    assert {(c.rate, c.width, c.channels) for c in chunks} == {(start.rate, 2, 1)} == {(24000, 2, 1)}
    seconds = sum(len(c.audio) for c in chunks) / 48000
    assert abs(seconds - 0.8) < 0.01


async def test_failure_mid_stream_errors_and_closes_then_the_next_connection_works(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=500, message="voice engine crashed", times=1))
    proxy = await start_proxy(*STREAMING, "--upstream-retries", "0")
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart().event())
        await client.send(*(SynthesizeChunk(text=t).event() for t in tokens(SENTENCES[0] + " More")))
        received = []
        while (event := await client.read()) is not None:  # closed without waiting for synthesize-stop
            received.append(event)
    assert received[-1].type == "error" and "voice engine crashed" in received[-1].data["text"]
    async with Client(proxy_port(proxy)) as client:
        events = await stream_session(client, tokens(SENTENCES[1]))
        assert events[-1].type == "synthesize-stopped"


async def test_disconnect_cancels_outstanding_requests(start_proxy, upstream):
    upstream.answer_delay = 5
    proxy = await start_proxy(*STREAMING)
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart().event())
        await client.send(*(SynthesizeChunk(text=t).event() for t in tokens(" ".join(SENTENCES) + " x")))
        for _ in range(50):
            if upstream.active_speech:
                break
            await asyncio.sleep(0.02)
        assert upstream.active_speech
    for _ in range(100):
        if not upstream.active_speech:
            break
        await asyncio.sleep(0.02)
    assert upstream.active_speech == 0


async def test_two_sessions_on_one_connection_and_odd_sequences(start_proxy, upstream):
    proxy = await start_proxy(*STREAMING)
    async with Client(proxy_port(proxy)) as client:
        first = await stream_session(client, tokens("No sentence end at all"))
        second = await stream_session(client, [])
        third = await stream_session(client, tokens(SENTENCES[3]))
    assert [e.type for e in second] == ["synthesize-stopped"]
    for events in (first, third):
        assert events[0].type == "audio-start" and events[-1].type == "synthesize-stopped"
    assert [r.json["input"] for r in upstream.requests] == ["No sentence end at all", SENTENCES[3]]
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStop().event())
        event = await client.read()
        assert event.type == "error" and "without synthesize-start" in event.data["text"]


async def test_plain_synthesize_can_be_split_too(start_proxy, upstream):
    upstream.delay_for_text = {"kitchen": 0.3}
    proxy = await start_proxy("--tts-split-text", "--tts-response-format", "pcm")
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text=" ".join(SENTENCES)).event())
        events = await client.read_until("audio-stop")
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert loudness_runs(pcm) == [amplitude_for(s) for s in SENTENCES]
    assert len(upstream.requests) == len(SENTENCES)
