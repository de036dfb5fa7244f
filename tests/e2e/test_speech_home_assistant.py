"""Speakable text and voice presets in the real Home Assistant.

An LLM conversation agent of our own (custom_components/e2e_llm) streams its answer into the chat
log a few characters at a time, as the OpenAI, Ollama or Gemini integrations do; Home Assistant's
assist pipeline then streams it to our proxy as synthesize-chunks. A third proxy offers a voice preset.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_asyncio
from e2e_stack import LANGUAGES, VOICES, HomeAssistant, Stack, add_wyoming_server, start_proxy
from speech_corpus import leftovers, words
from test_home_assistant import speak, speech_requests
from upstream import FakeUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

STREAMING_MODEL = "gpt-4o-mini-tts"
PRESET = {
    "name": "heart-calm", "voice": "af_heart", "model": STREAMING_MODEL, "instructions": "Speak calmly and warmly",
    "speed": 0.9, "languages": ["en", "de"], "label": "Heart (calm)",
}  # fmt: skip
ANSWER = (
    "**Done!** I turned on the _living room_ lamp 💡 and set the heating to **21 °C**.\n\n"
    "- Kitchen: *off*\n- Hall: `on`\n\n"
    "See [the manual](https://www.home-assistant.io/docs/lights) if a lamp flickers. 👍"
)
SPOKEN = "Done! I turned on the living room lamp and set the heating to 21 °C. Kitchen: off. Hall: on. See the manual if a lamp flickers."  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def preset_server(stack: Stack):
    """A streaming proxy with a voice preset, added to Home Assistant."""
    server = await start_proxy(
        "presets", stack.upstream, stack.workdir,
        "--tts-streaming-models", STREAMING_MODEL, "--tts-voice-presets", json.dumps([PRESET]),
        voices=(*VOICES, PRESET["name"]),
    )  # fmt: skip
    try:
        await add_wyoming_server(stack.ha, server)
        yield server
    finally:
        if server.entry_id:
            status, body = await stack.ha.request("DELETE", f"/api/config/config_entries/entry/{server.entry_id}")
            assert status == 200, body
        await server.process.stop()
    assert "Traceback" not in server.process.log()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def llm_agent(stack: Stack):
    """The streaming LLM agent's conversation entity, set up through its config flow."""
    ha = stack.ha
    status, result = await ha.post("/api/config/config_entries/flow", {"handler": "e2e_llm"})
    assert status == 200 and result["type"] == "create_entry", result
    entry_id = result["result"]["entry_id"]
    try:
        deadline = time.monotonic() + 20
        async with ha.ws() as ws:
            while True:
                entities = await ws.call("config/entity_registry/list")
                agent = next((e["entity_id"] for e in entities if e.get("config_entry_id") == entry_id), None)
                if agent and agent in await ha.states():
                    break
                assert time.monotonic() < deadline, "the e2e_llm conversation entity did not appear"
        yield agent
    finally:
        status, body = await ha.request("DELETE", f"/api/config/config_entries/entry/{entry_id}")
        assert status == 200, body


async def test_plain_tts_with_markdown_reaches_the_upstream_clean(stack: Stack, ha: HomeAssistant, upstream):
    status, audio = await speak(ha, stack.plain.tts_entity, "The **kitchen** lights are *on* 💡. [Why?](https://x.io)")
    assert status == 200, audio[:200]
    assert [r["input"] for r in speech_requests(upstream)] == ["The kitchen lights are on. Why?"]


async def test_a_preset_is_in_the_voice_list_under_its_languages(ha: HomeAssistant, preset_server):
    async with ha.ws() as ws:
        for language in LANGUAGES:
            voices = (await ws.call("tts/engine/voices", engine_id=preset_server.tts_entity, language=language))[
                "voices"
            ]
            offered = {v["voice_id"]: v["name"] for v in voices}
            assert set(offered) >= set(VOICES)
            if language in PRESET["languages"]:
                assert offered[PRESET["name"]] == PRESET["label"], (language, voices)
            else:
                assert PRESET["name"] not in offered, (language, voices)


async def test_a_preset_s_settings_reach_the_upstream(ha: HomeAssistant, preset_server, upstream: FakeUpstream):
    status, audio = await speak(ha, preset_server.tts_entity, "**Good night!** 🌙", voice=PRESET["name"])
    assert status == 200, audio[:200]
    [body] = speech_requests(upstream)
    assert body == {
        "model": STREAMING_MODEL, "input": "Good night!", "voice": PRESET["voice"], "response_format": "wav",
        "speed": PRESET["speed"], "instructions": PRESET["instructions"],
    }  # fmt: skip


async def test_a_streamed_llm_answer_reaches_the_upstream_clean(
    ha: HomeAssistant, preset_server, llm_agent: str, upstream: FakeUpstream
):
    async with ha.ws() as ws:
        pipeline = await ws.call(
            "assist_pipeline/pipeline/create",
            name="wyoming-openai e2e llm", language="en", conversation_engine=llm_agent, conversation_language="en",
            stt_engine=None, stt_language=None, tts_engine=preset_server.tts_entity, tts_language="en",
            tts_voice=PRESET["name"], wake_word_entity=None, wake_word_id=None,
        )  # fmt: skip
        run_id = await ws.send(
            "assist_pipeline/run", start_stage="intent", end_stage="tts", pipeline=pipeline["id"],
            input={"text": ANSWER}, timeout=60,
        )  # fmt: skip
        events: dict[str, dict] = {}
        streamed = False
        deadline = time.monotonic() + 60
        while "run-end" not in events:
            assert time.monotonic() < deadline, f"pipeline did not finish: {list(events)}"
            message = await ws.receive(timeout=30)
            if message.get("id") != run_id or message["type"] == "result":
                assert message.get("success", True), message
                continue
            event = message["event"]
            assert event["type"] != "error", event
            events[event["type"]] = event.get("data") or {}
            streamed = streamed or bool((event.get("data") or {}).get("tts_start_streaming"))
    assert streamed, "Home Assistant did not stream the answer to the TTS entity"
    status, audio = await ha.get(events["tts-end"]["tts_output"]["url"].removeprefix(ha.url), headers={}, timeout=30)
    assert status == 200
    requests = speech_requests(upstream)
    assert len(requests) > 1, "the answer went upstream in one request: it was not streamed"
    for body in requests:
        assert not leftovers(body["input"], ANSWER), body["input"]
        assert (body["voice"], body["speed"], body["instructions"]) == (
            PRESET["voice"], PRESET["speed"], PRESET["instructions"]
        )  # fmt: skip
    assert words(" ".join(r["input"] for r in requests)) == words(SPOKEN)
    assert len(audio) > 1000  # the spoken answer, as Home Assistant encoded it
