"""Models and voices built from Wyoming info; authentication, CORS, unknown routes; servers coming and going."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import openai
import pytest
from conftest import API_KEY, Api, StartApi
from spec_check import assert_conforms, assert_error_shape, response_schema, schema
from tone_wyoming import ToneServer, free_port

from wyoming_openai.openai_api import catalog as catalog_module
from wyoming_openai.openai_api import wyoming_pool


async def test_models_list_conforms_and_comes_from_wyoming_info(api: Api) -> None:
    raw = await api.client.models.with_raw_response.list()
    body = raw.http_response.json()
    assert_conforms(body, response_schema("/models", "get", "application/json"))
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == {"tone-tts", "echo-asr", "echo-asr-small"}
    assert by_id["tone-tts"]["task"] == "text-to-speech" and by_id["tone-tts"]["owned_by"] == "tests"
    assert by_id["echo-asr-small"]["languages"] == ["en", "de"] and by_id["echo-asr-small"]["streaming"] is True
    models = [m.id async for m in api.client.models.list()]
    assert sorted(models) == sorted(by_id)


async def test_model_retrieve(api: Api) -> None:
    model = await api.client.models.retrieve("echo-asr-small")
    assert model.id == "echo-asr-small" and model.object == "model"
    assert_conforms(model.model_dump(), schema("Model"))
    with pytest.raises(openai.NotFoundError) as caught:
        await api.client.models.retrieve("whisper-9")
    assert caught.value.code == "model_not_found"


async def _get(
    api: Api, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as session, session.get(api.url + path, headers=headers) as response:
        return response.status, await response.json(), response.headers


async def test_voices_listing(api: Api) -> None:
    status, body, _ = await _get(api, "/audio/voices")
    assert status == 200 and body["object"] == "list"
    voices = {v["id"]: v for v in body["data"]}
    assert set(voices) == {"low", "high", "duo"}
    assert voices["duo"]["speakers"] == ["a", "b"] and voices["low"]["default"] is True
    assert all(v["model"] == "tone-tts" and v["languages"] == ["en"] for v in voices.values())
    status, body, _ = await _get(api, "/audio/voices?model=tts-1")
    assert status == 200 and len(body["data"]) == 3
    status, body, _ = await _get(api, "/audio/voices?model=nope")
    assert status == 404 and assert_error_shape(body, 404)["param"] == "model"


async def test_two_servers_one_catalog(start_api: StartApi) -> None:
    first = await ToneServer(tts_name="tts-a", asr_name="asr-a").start()
    second = await ToneServer(tts_name="tts-b", asr_name="asr-a").start()  # asr-a is offered twice
    try:
        api = await start_api([first.uri, second.uri])
        ids = sorted([m.id async for m in api.client.models.list()])
        assert ids == ["asr-a", "asr-a-small", "tts-a", "tts-b"]
        await api.client.audio.speech.create(model="tts-b", voice="low", input="hi")
        assert len(second.received.synthesizes) == 1 and not first.received.synthesizes
        assert api.pool.catalog.asr["asr-a"].server == first.uri  # the first server listed keeps the name
    finally:
        await first.stop()
        await second.stop()


async def test_unix_socket_server(start_api: StartApi, tmp_path) -> None:
    server = await ToneServer(unix_path=str(tmp_path / "tones.sock")).start()
    try:
        api = await start_api([server.uri])
        data = await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
        assert len(data.content) == 12000
    finally:
        await server.stop()


async def test_server_that_starts_later_is_found_on_demand(start_api: StartApi) -> None:
    server = ToneServer(port=free_port())
    # No pause between on-demand refreshes, so the test need not wait out the usual few seconds.
    pool = wyoming_pool.WyomingPool(
        [server.uri], wyoming_pool.Timeouts(1, 2), refresh_interval=0, min_on_demand_refresh=0
    )
    api = await start_api([server.uri], pool=pool)
    assert [m async for m in api.client.models.list()] == []
    with pytest.raises(openai.APIStatusError) as caught:  # its models may be on the server that is down
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi")
    assert caught.value.status_code == 503
    await server.start()
    try:
        data = await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
        assert len(data.content) == 12000  # a quarter second at 24 kHz
    finally:
        await server.stop()


async def test_pool_add_and_remove_as_discovery_does(api: Api) -> None:
    other = await ToneServer(tts_name="found-tts", asr_name="found-asr").start()
    try:
        assert api.pool.add(other.uri) is True and api.pool.add(other.uri) is False
        await api.pool.refresh()
        assert "found-tts" in api.pool.catalog.tts
        api.pool.remove(other.uri)
        assert "found-tts" not in api.pool.catalog.tts
        configured = api.pool.servers[0].uri
        api.pool.remove(configured)  # servers from the URI list stay
        assert "tone-tts" in api.pool.catalog.tts
    finally:
        await other.stop()


async def test_health_is_public(start_api: StartApi, tone_server: ToneServer) -> None:
    api = await start_api([tone_server.uri], api_keys=("k1",))
    async with aiohttp.ClientSession() as session, session.get(api.url.removesuffix("/v1") + "/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "servers": 1, "reachable": 1}


# --- authentication -------------------------------------------------------------------------------


@pytest.fixture
async def keyed(start_api: StartApi, tone_server: ToneServer) -> Api:
    return await start_api([tone_server.uri], api_keys=("other-key", API_KEY))


async def test_right_key_is_accepted(keyed: Api) -> None:
    assert [m.id async for m in keyed.client.models.list()]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": f"Basic {API_KEY}"}, "invalid_api_key"),
        ({"Authorization": "Bearer "}, "invalid_api_key"),
        ({"Authorization": f"Bearer {API_KEY}x"}, "invalid_api_key"),
    ],
)
async def test_missing_or_wrong_key_is_a_401(keyed: Api, headers: dict[str, str], code: str) -> None:
    status, body, response_headers = await _get(keyed, "/models", headers)
    assert status == 401 and response_headers["WWW-Authenticate"] == "Bearer"
    error = assert_error_shape(body, 401)
    assert error["code"] == code and API_KEY not in error["message"]


async def test_sdk_with_wrong_key(keyed: Api) -> None:
    client = openai.AsyncOpenAI(base_url=keyed.url, api_key="sk-wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await client.audio.speech.create(model="tone-tts", voice="low", input="hi")
    finally:
        await client.close()


# --- routes and CORS ------------------------------------------------------------------------------


async def test_unknown_route_and_wrong_method(api: Api) -> None:
    status, body, _ = await _get(api, "/audio/sing")
    assert status == 404 and assert_error_shape(body, 404)["code"] == "unknown_url"
    status, body, _ = await _get(api, "/audio/speech")
    assert status == 405 and assert_error_shape(body, 405)["code"] == "method_not_allowed"


async def test_cors_is_off_by_default(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/models", headers={"Origin": "https://evil.example"}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with session.options(
            api.url + "/audio/speech",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_for_configured_origins(start_api: StartApi, tone_server: ToneServer) -> None:
    api = await start_api([tone_server.uri], cors_origins=("https://app.example",), api_keys=(API_KEY,))
    async with aiohttp.ClientSession() as session:
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
        async with session.options(api.url + "/audio/speech", headers=preflight) as response:
            assert response.status == 204  # no key needed: browsers send preflights without one
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
        async with session.options(
            api.url + "/audio/speech", headers={**preflight, "Origin": "https://other.example"}
        ) as response:
            assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
        async with session.post(
            api.url + "/audio/speech",
            json={"model": "tone-tts", "voice": "low", "input": "hi", "stream_format": "sse"},
            headers={"Origin": "https://app.example", "Authorization": f"Bearer {API_KEY}"},
        ) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with session.get(api.url + "/models", headers={"Origin": "https://app.example"}) as response:
            assert response.status == 401  # errors carry CORS headers too, so the page can read them
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_catalog_skips_programs_that_are_not_installed() -> None:
    from tone_wyoming import make_info

    info = make_info(streaming=False)
    info.tts[0].installed = False
    catalog = catalog_module.build_catalog([("tcp://x:1", info, 0)])
    assert not catalog.tts and set(catalog.asr) == {"echo-asr", "echo-asr-small"}
    assert catalog.asr["echo-asr"].streaming is False


def test_one_server_with_asr_and_tts_programs_of_the_same_name() -> None:
    from tone_wyoming import make_info

    info = make_info(streaming=False, tts_name="both", asr_name="both")
    catalog = catalog_module.build_catalog([("tcp://x:1", info, 0)])
    assert set(catalog.tts) == {"both"} and set(catalog.asr) == {"both-small"}
    assert sorted(m.id for m in catalog.models()) == ["both", "both-small"]


async def test_background_refresh_finds_a_server_without_any_request(start_api: StartApi) -> None:
    server = ToneServer(port=free_port())
    api = await start_api([server.uri], refresh_interval=0.1)
    assert not api.pool.catalog.tts
    await server.start()
    try:
        for _ in range(100):
            if api.pool.catalog.tts:
                break
            await asyncio.sleep(0.02)
        assert "tone-tts" in api.pool.catalog.tts
    finally:
        await server.stop()


async def test_keys_never_reach_the_log(
    start_api: StartApi, tone_server: ToneServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = await start_api([tone_server.uri], api_keys=(API_KEY,))
    await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
    wrong = openai.AsyncOpenAI(base_url=api.url, api_key="sk-wrong-but-secret", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
    finally:
        await wrong.close()
    assert API_KEY not in caplog.text and "sk-wrong-but-secret" not in caplog.text
