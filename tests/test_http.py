"""The HTTP port: /health, /metrics (read with prometheus_client's own parser), the page's data and
its speak endpoint, and the one log line per request. Real traffic through the real wyoming client."""

from __future__ import annotations

import io
import json
import logging
import wave
from typing import Any

import aiohttp
import pytest
from harness import Client, proxy_port
from prometheus_client.parser import text_string_to_metric_families
from test_failover import fallback_env, request_lines, speak, speech_requests, stt_events, until
from upstream import SECONDS_PER_CHARACTER, Fault
from wyoming.ping import Ping

from wyoming_openai import __version__, failover

HTTP = ("--http-port", "0")


async def get(proxy, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{proxy.http.port}/{path}") as response:
            return response.status, await response.text()


async def post(proxy, path: str, body: Any, content_type: str = "application/json") -> aiohttp.ClientResponse:
    data = json.dumps(body) if not isinstance(body, (bytes, str)) else body
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{proxy.http.port}/{path}", data=data, headers={"Content-Type": content_type}
        ) as response:
            await response.read()
            return response


async def transcribe(port: int, seconds: float) -> str:
    async with Client(port) as client:
        await client.send(*stt_events(seconds))
        return (await client.read_until("transcript"))[-1].data["text"]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[(name, frozenset(labels.items()))]


async def test_off_unless_asked_for(start_proxy):
    proxy = await start_proxy()
    assert proxy.http is None


# --- /health -----------------------------------------------------------------------------------


async def test_health_names_the_version_and_each_upstream(start_proxy, upstream):
    proxy = await start_proxy(*HTTP)
    status, text = await get(proxy, "health")
    body = json.loads(text)
    assert status == 200 and body["status"] == "ok"
    assert body["version"] == __version__ and body["uptime"] >= 0
    assert [(u["direction"], u["upstream"], u["url"], u["state"]) for u in body["upstreams"]] == [
        ("stt", "primary", upstream.url, "ok"),
        ("tts", "primary", upstream.url, "ok"),
    ]


async def test_health_is_503_when_a_direction_has_no_upstream_left(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=500))
    proxy = await start_proxy(*HTTP, "--upstream-retries", "0")
    for _ in range(failover.FAILURES_TO_OPEN):
        async with Client(proxy_port(proxy)) as client:
            await client.send(*[speak_event()])
            assert (await client.read()).type == "error"
    status, text = await get(proxy, "health")
    body = json.loads(text)
    assert status == 503 and body["status"] == "unavailable"
    tts = next(u for u in body["upstreams"] if u["direction"] == "tts")
    assert tts["state"] == "failing" and tts["failures_in_a_row"] == 3 and tts["until"]
    assert "answered 500" in tts["last_failure"]
    assert next(u for u in body["upstreams"] if u["direction"] == "stt")["state"] == "ok"


async def test_health_stays_200_on_the_fallback_and_shows_the_primary_skipped(start_proxy, upstream, fallback):
    upstream.unavailable = True
    proxy = await start_proxy(*HTTP, "--upstream-retries", "0", env=fallback_env(fallback))
    for _ in range(failover.FAILURES_TO_OPEN):
        await speak(proxy_port(proxy))
    status, text = await get(proxy, "health")
    states = {(u["direction"], u["upstream"]): (u["state"], u["until"]) for u in json.loads(text)["upstreams"]}
    assert status == 200
    assert states[("tts", "primary")][0] == "skipped" and states[("tts", "primary")][1].endswith("+00:00")
    assert states[("tts", "fallback")] == ("ok", None) and states[("stt", "primary")] == ("ok", None)


def speak_event():
    from wyoming.tts import Synthesize

    return Synthesize(text="Hello.").event()


# --- /metrics ----------------------------------------------------------------------------------


async def test_metrics_count_what_happened(start_proxy, upstream, fallback):
    upstream.speech_faults.append(Fault(status=500, times=1))  # the first speech goes to the fallback
    proxy = await start_proxy(*HTTP, "--upstream-retries", "0", env=fallback_env(fallback))
    port = proxy_port(proxy)
    texts = ["Hello there.", "Good morning to you.", "Bye."]
    for text in texts:
        await speak(port, text)
    for seconds in (0.3, 0.5):
        await transcribe(port, seconds)
    upstream.transcription_faults.append(Fault(status=400, message="bad audio", times=1))
    async with Client(port) as client:
        await client.send(*stt_events(0.2))
        assert (await client.read()).type == "error"

    async with Client(port) as client:  # one client connected while the page is read
        await client.send(Ping(text="x").event())
        await client.read_until("pong")
        status, text = await get(proxy, "metrics")
    assert status == 200
    metrics = samples(text)
    m = lambda name, **labels: value(metrics, f"wyoming_openai_{name}", **labels)  # noqa: E731

    assert m("requests_total", direction="tts", upstream="fallback", outcome="ok") == 1
    assert m("requests_total", direction="tts", upstream="primary", outcome="ok") == 2
    assert m("requests_total", direction="stt", upstream="primary", outcome="ok") == 2
    assert m("requests_total", direction="stt", upstream="primary", outcome="rejected") == 1
    assert m("upstream_requests_total", direction="tts", upstream="primary") == 3
    assert m("upstream_requests_total", direction="tts", upstream="fallback") == 1
    assert m("upstream_requests_total", direction="stt", upstream="primary") == 3
    assert m("upstream_failures_total", direction="tts", upstream="primary", kind="server_error") == 1
    assert m("upstream_failures_total", direction="stt", upstream="primary", kind="rejected") == 1
    assert m("fallbacks_total", direction="tts", reason="server_error") == 1
    # What the bill is made of: characters per upstream and model, seconds of audio transcribed.
    assert m("synthesized_characters_total", upstream="fallback", model="kokoro") == len(texts[0])
    assert m("synthesized_characters_total", upstream="primary", model="gpt-4o-mini-tts") == len(texts[1] + texts[2])
    assert m("transcribed_audio_seconds_total", upstream="primary", model="gpt-4o-mini-transcribe") == pytest.approx(
        0.8
    )
    assert m("first_audio_seconds_count", upstream="primary") == 2
    assert m("first_audio_seconds_count", upstream="fallback") == 1
    assert m("transcript_seconds_count", upstream="primary") == 2
    assert m("request_seconds_count", direction="stt", upstream="primary") == 3
    assert (
        0
        < m("first_audio_seconds_sum", upstream="primary")
        <= m("request_seconds_sum", direction="tts", upstream="primary")
    )
    assert m("clients_connected") == 1
    assert m("upstream_available", direction="tts", upstream="primary", url=upstream.url) == 1
    assert m("upstream_connections", url=upstream.url) >= 1  # kept alive in the pool
    assert value(metrics, "process_resident_memory_bytes") > 0

    await until(lambda: proxy.services.monitor.clients_connected == 0)
    assert value(samples((await get(proxy, "metrics"))[1]), "wyoming_openai_clients_connected") == 0


# --- the page's data ---------------------------------------------------------------------------


async def test_status_lists_recent_requests_without_what_was_said(start_proxy, upstream, caplog):
    caplog.set_level(logging.INFO)
    upstream.transcript = "open the pod bay doors"
    proxy = await start_proxy(*HTTP)
    await speak(proxy_port(proxy), "Purple elephants dance at midnight.")
    assert await transcribe(proxy_port(proxy), 0.3) == "open the pod bay doors"
    status, text = await get(proxy, "status.json")
    body = json.loads(text)

    stt, tts = body["recent"]  # newest first
    assert (tts["direction"], tts["model"], tts["voice"], tts["upstream"], tts["outcome"]) == (
        "tts", "gpt-4o-mini-tts", "alloy", "primary", "ok"
    )  # fmt: skip
    assert tts["amount"] == len("Purple elephants dance at midnight.") and 0 < tts["latency"] <= tts["total"]
    assert (stt["direction"], stt["model"], stt["voice"], stt["outcome"], stt["amount"]) == (
        "stt", "gpt-4o-mini-transcribe", None, "ok", 0.3
    )  # fmt: skip
    assert body["latency"]["tts"]["count"] == 1 and body["latency"]["tts"]["p50"] == tts["latency"]
    assert len(body["plot"]["stt"]) == 1 and body["voices"][0]["name"] == "alloy"
    lines = request_lines(caplog)
    assert lines[0].startswith("TTS gpt-4o-mini-tts/alloy via primary: ok, first audio ")
    assert lines[0].endswith(" 35 characters")
    assert lines[1].startswith("STT gpt-4o-mini-transcribe via primary: ok, transcript after ")
    for page in (text, "\n".join(lines)):
        assert "elephants" not in page and "pod bay" not in page


async def test_only_the_last_50_requests_are_kept(start_proxy, upstream):
    proxy = await start_proxy(*HTTP)
    for index in range(53):
        await speak(proxy_port(proxy), f"Sentence {index}.")
    body = json.loads((await get(proxy, "status.json"))[1])
    assert len(body["recent"]) == 50
    assert body["recent"][0]["amount"] == len("Sentence 52.") and body["latency"]["tts"]["count"] == 53


# --- the speak box's endpoint ------------------------------------------------------------------


async def test_speak_returns_wav_in_the_chosen_voice(start_proxy, upstream):
    proxy = await start_proxy(*HTTP)
    text = "Hello from the page."
    response = await post(proxy, "speak", {"text": text, "voice": "nova"})
    assert response.status == 200 and response.content_type == "audio/wav"
    with wave.open(io.BytesIO(response._body)) as audio:
        seconds = audio.getnframes() / audio.getframerate()
    assert seconds == pytest.approx(len(text) * SECONDS_PER_CHARACTER, abs=0.01)
    assert speech_requests(upstream)[-1].json["voice"] == "nova"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        ({"text": "Hi"}, "text/plain", 415, "JSON"),  # what a form on another site could send
        ("{not json", "application/json", 400, "not JSON"),
        ({"text": "  "}, "application/json", 400, "nothing to say"),
        ({"text": "x" * 1001}, "application/json", 400, "1000"),
    ],
)
async def test_speak_refuses_bad_requests(start_proxy, upstream, body, content_type, status, words):
    proxy = await start_proxy(*HTTP)
    response = await post(proxy, "speak", body, content_type)
    assert response.status == status and words in json.loads(response._body)["error"]
    assert not speech_requests(upstream)


async def test_speak_reports_the_upstreams_failure(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=500, message="speech engine on fire"))
    proxy = await start_proxy(*HTTP, "--upstream-retries", "0")
    response = await post(proxy, "speak", {"text": "Hello."})
    assert response.status == 502 and "speech engine on fire" in json.loads(response._body)["error"]


async def test_speak_without_text_to_speech(start_proxy, upstream):
    proxy = await start_proxy(*HTTP, "--tts-models")
    response = await post(proxy, "speak", {"text": "Hello."})
    assert response.status == 503
    assert json.loads((await get(proxy, "status.json"))[1])["voices"] == []


async def test_the_page_and_its_files_use_relative_paths(start_proxy):
    """Under Home Assistant's ingress the page lives below a prefix: no path may start at the root."""
    proxy = await start_proxy(*HTTP)
    for path in ("", "app.js", "style.css"):
        status, text = await get(proxy, path)
        assert status == 200 and text
        for absolute in ('href="/', 'src="/', 'fetch("/', "fetch('/", "url(/"):
            assert absolute not in text, (path, absolute)


async def test_a_taken_port_costs_the_page_not_the_voice(start_proxy, upstream, caplog):
    first = await start_proxy(*HTTP)
    second = await start_proxy("--http-port", str(first.http.port))
    assert second.http is None
    assert any("Cannot serve the status page on port" in r.getMessage() for r in caplog.records)
    await speak(proxy_port(second))
