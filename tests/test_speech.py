"""Speakable text and voice presets through the running proxy, driven by the real wyoming client.

The upstream stand-in records every request body: what a speech engine would be given.
"""

from __future__ import annotations

import json

import pytest
from harness import APP, Client, proxy_port
from speech_corpus import CORPUS, leftovers, words
from wyoming.audio import AudioChunk, AudioStart
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

STREAMING = ("--tts-streaming-models", "gpt-4o-mini-tts")
ANSWER = "**Done!** I turned on the _living room_ lamp 💡. See [the manual](https://www.home-assistant.io/docs)."
SPOKEN = "Done! I turned on the living room lamp. See the manual."
EXAMPLE = APP.parent / "docs" / "pronunciations.example.yaml"


def inputs(upstream) -> list[str]:
    return [r.json["input"] for r in upstream.requests if r.path == "/audio/speech"]


async def speak(port: int, text: str, voice: str | None = None) -> list:
    async with Client(port) as client:
        await client.send(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        return await client.read_until("audio-stop")


async def stream(client: Client, chunks: list[str], voice: str | None = None) -> list:
    """One streaming session as Home Assistant sends it: start, the chunks, the full text, stop."""
    await client.send(SynthesizeStart(voice=SynthesizeVoice(name=voice) if voice else None).event())
    await client.send(*(SynthesizeChunk(text=chunk).event() for chunk in chunks))
    await client.send(Synthesize(text="".join(chunks)).event(), SynthesizeStop().event())
    return await client.read_until("synthesize-stopped", timeout=30)


# --- clean text ----------------------------------------------------------------------------------


async def test_plain_synthesize_reaches_the_upstream_clean(start_proxy, upstream):
    proxy = await start_proxy()
    await speak(proxy_port(proxy), ANSWER)
    assert inputs(upstream) == [SPOKEN]


@pytest.mark.parametrize("index", [0, 1, 3, 4, 5, 8], ids=lambda i: f"{i}-{CORPUS[i][0]}")
async def test_one_character_per_chunk_reaches_the_upstream_clean(start_proxy, upstream, index):
    """Home Assistant sends one LLM token per chunk; one character each is the hardest case."""
    language, written = CORPUS[index]
    proxy = await start_proxy(*STREAMING, "--languages", language)
    await speak(proxy_port(proxy), written)  # plain: the whole text cleaned at once
    [whole] = inputs(upstream)
    upstream.requests.clear()
    async with Client(proxy_port(proxy)) as client:
        events = await stream(client, list(written))
    pieces = inputs(upstream)
    assert len(pieces) > 1
    for piece in pieces:
        assert not leftovers(piece, written), piece
    assert words(" ".join(pieces)) == words(whole)
    assert [e.type for e in events].count("audio-start") == 1


async def test_every_cut_of_an_answer_reaches_the_upstream_clean(start_proxy, upstream):
    written = "**Done!** I turned on the *kit*chen lamp 💡. Run `ha core check` at https://x.io/a?b=1 now."
    proxy = await start_proxy(*STREAMING)
    await speak(proxy_port(proxy), written)
    [whole] = inputs(upstream)
    assert whole == "Done! I turned on the kitchen lamp. Run ha core check at x.io now."
    async with Client(proxy_port(proxy)) as client:
        for position in range(1, len(written)):
            upstream.requests.clear()
            await stream(client, [written[:position], written[position:]])
            pieces = inputs(upstream)
            assert not any(leftovers(piece, written) for piece in pieces), (position, pieces)
            assert words(" ".join(pieces)) == words(whole), (position, pieces)


async def test_split_text_pieces_are_clean(start_proxy, upstream):
    proxy = await start_proxy("--tts-split-text")
    await speak(proxy_port(proxy), "## Lights\n\n- **Kitchen**: on 💡\n- *Hall*: off\n\nAnything else?")
    assert inputs(upstream) == ["Lights", "Kitchen: on", "Hall: off", "Anything else?"]


async def test_urls_dropped_and_cleaning_switched_off(start_proxy, upstream):
    proxy = await start_proxy("--tts-clean-urls", "drop")
    await speak(proxy_port(proxy), "Details at https://example.com/x, **today**.")
    raw = await start_proxy("--tts-clean-text", "false")
    ssml = "<speak>Hello <break time='1s'/> **there**</speak>"
    await speak(proxy_port(raw), ssml)
    assert inputs(upstream) == ["Details at, today.", ssml]


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
async def test_nothing_to_say_is_a_moment_of_silence(start_proxy, upstream, streaming):
    proxy = await start_proxy(*(STREAMING if streaming else ()))
    async with Client(proxy_port(proxy)) as client:
        if streaming:
            events = await stream(client, ["👍", "🎉 ", "**"])
        else:
            await client.send(Synthesize(text="👍 🎉").event())
            events = await client.read_until("audio-stop")
    start = AudioStart.from_event(next(e for e in events if e.type == "audio-start"))
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert len(audio) == start.rate * start.width // 10 and not any(audio)  # 0.1 s of silence
    assert not inputs(upstream)


# --- pronunciations ----------------------------------------------------------------------------


async def test_pronunciations_from_lines_and_file_reach_the_upstream(start_proxy, upstream):
    proxy = await start_proxy("--tts-pronunciations", str(EXAMPLE), "--tts-pronounce", "Nguyen=Win")
    await speak(proxy_port(proxy), "**HA** says: Mr Nguyen, it is 21 °C and 40% humid.")
    assert inputs(upstream) == ["Home Assistant says: Mr Win, it is 21 degrees Celsius and 40 percent humid."]


# --- voice presets -------------------------------------------------------------------------------

PRESETS = [
    {"name": "nova-calm", "voice": "nova", "model": "gpt-4o-mini-tts", "instructions": "Speak calmly and warmly",
     "speed": 0.9, "languages": ["en", "de"], "label": "Nova (calm)"},
    {"name": "echo-de", "voice": "echo", "model": "tts-1", "languages": "de"},
]  # fmt: skip


@pytest.fixture
async def preset_proxy(start_proxy, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps({"tts_voice_presets": PRESETS, "tts_pronunciations": str(EXAMPLE), "languages": ["en", "fr"]})
    )  # JSON is YAML
    return await start_proxy(
        "--config", str(config), "--tts-voices", "alloy", "coral", "--tts-speed", "1.2", "--tts-instructions", "Loud."
    )


async def test_presets_appear_in_info_under_their_languages(preset_proxy):
    async with Client(proxy_port(preset_proxy)) as client:
        await client.send(Describe().event())
        info = Info.from_event((await client.read_until("info"))[-1])
    voices = {v.name: (v.description, v.languages) for v in info.tts[0].voices}
    assert voices == {
        "alloy": ("alloy (gpt-4o-mini-tts)", ["en", "fr"]),
        "coral": ("coral (gpt-4o-mini-tts)", ["en", "fr"]),
        "nova-calm": ("Nova (calm)", ["en", "de"]),
        "echo-de": ("echo-de", ["de"]),
    }
    assert list(voices)[0] == "alloy"  # the default stays the first voice


async def test_a_preset_s_settings_reach_the_upstream(preset_proxy, upstream):
    port = proxy_port(preset_proxy)
    await speak(port, "**HA** is ready.", voice="nova-calm")
    await speak(port, "HA: 21 °C.", voice="echo-de")
    await speak(port, "HA is ready.", voice="coral")
    calm, german, plain = (r.json for r in upstream.requests if r.path == "/audio/speech")
    assert calm == {
        "model": "gpt-4o-mini-tts", "input": "Home Assistant is ready.", "voice": "nova", "response_format": "wav",
        "speed": 0.9, "instructions": "Speak calmly and warmly",
    }  # fmt: skip
    # tts-1 takes no instructions; the preset's language (de) chose the German pronunciations.
    assert german == {
        "model": "tts-1", "input": "Home Assistant: 21 Grad Celsius.", "voice": "echo", "response_format": "wav",
        "speed": 1.2,
    }  # fmt: skip
    assert plain["voice"] == "coral" and plain["speed"] == 1.2 and plain["instructions"] == "Loud."


async def test_a_streamed_answer_in_a_preset_voice(start_proxy, upstream, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"tts_voice_presets": PRESETS[:1]}))
    proxy = await start_proxy("--config", str(config), *STREAMING)
    async with Client(proxy_port(proxy)) as client:
        await stream(client, ["**Good", " night", "!**", " Sleep", " _well_", "."], voice="nova-calm")
    bodies = [r.json for r in upstream.requests if r.path == "/audio/speech"]
    assert [b["input"] for b in bodies] == ["Good night!", "Sleep well."]
    assert {(b["voice"], b["speed"], b["instructions"]) for b in bodies} == {("nova", 0.9, "Speak calmly and warmly")}


async def test_a_preset_s_language_cuts_its_streamed_sentences(start_proxy, upstream, tmp_path):
    # English rules end a sentence at "3." ("am 3. | Oktober"); German ones know it is a date.
    config = tmp_path / "config.yaml"
    preset = {"name": "nova-de", "voice": "nova", "model": "gpt-4o-mini-tts", "languages": ["de"]}
    config.write_text(json.dumps({"tts_voice_presets": [preset], "languages": ["en"]}))
    proxy = await start_proxy("--config", str(config), *STREAMING)
    async with Client(proxy_port(proxy)) as client:
        words = "Wir treffen uns am 3. Oktober im Park. Bis dann, und viel Spaß."
        await stream(client, [f" {word}" for word in words.split()], voice="nova-de")
    assert inputs(upstream) == ["Wir treffen uns am 3. Oktober im Park.", "Bis dann, und viel Spaß."]


async def test_realtime_speech_is_clean_and_takes_the_preset(realtime):
    from harness import TEST_KEY

    from wyoming_openai.__main__ import Proxy
    from wyoming_openai.settings import load_settings

    presets = [{"name": "marin-slow", "voice": "marin", "model": "gpt-realtime", "speed": 0.8, "instructions": "Slow."}]
    settings = load_settings(
        ["--uri", "tcp://127.0.0.1:0", "--stt-models", "--tts-realtime-models", "gpt-realtime", "--tts-voices", "cedar"],
        {"TTS_OPENAI_URL": realtime.url, "OPENAI_API_KEY": TEST_KEY, "TTS_VOICE_PRESETS": json.dumps(presets)},
    )  # fmt: skip
    proxy = Proxy(settings)
    await proxy.start()
    try:
        await speak(
            proxy_port(proxy), "The **garage** is closed 🚗. Details: https://my.home/garage", voice="marin-slow"
        )
    finally:
        await proxy.stop()
    [connection] = realtime.connections
    assert connection.spoken_text == "The garage is closed. Details: my.home"
    output = connection.session["audio"]["output"]
    assert (output["voice"], output["speed"]) == ("marin", 0.8)
    assert connection.session["instructions"].endswith("Voice and style: Slow.")
