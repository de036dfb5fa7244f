"""The add-on's real s6 `run` script, under the bashio stand-in, against a fake Supervisor.

The proxy itself is replaced by a recorder on PATH; the environment it received is compared
exactly, and then fed to the proxy's own settings loader.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    HARNESS,
    RUN_SCRIPT,
    SHELL_OWN,
    FakeSupervisor,
    ScriptRunner,
    proxy_env_names,
    requires_tools,
)

from wyoming_openai import settings

pytestmark = requires_tools


KEY_STT = "test-key-not-real-stt-7f3a"
KEY_TTS = "test-key-not-real-tts-9c1d"
KEY_FALLBACK = "test-key-not-real-fallback-3e6b"
ODD = """  Say "hi" to 'Bob' & <Alice>; $HOME ${PATH} $(id -u) `whoami` \\n \\\\ 100% ünïcödé *?[x]  """
ODD_KEY = """test-key-not-real $HOME "q" 'q' `id` $(id) \\ end"""


def default_options(addon_config: dict[str, Any]) -> dict[str, Any]:
    """What the Supervisor hands an add-on nobody configured: config.yaml's options."""
    return copy.deepcopy(addon_config["options"])


def proxy_env(recorded: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in recorded.items() if name in proxy_env_names()}


def extra_env(recorded: dict[str, str]) -> set[str]:
    """Anything the script exported that is neither for the proxy nor from the harness."""
    return {
        name
        for name in recorded
        if name not in proxy_env_names()
        and name not in HARNESS
        and name not in SHELL_OWN
        and not name.startswith("__BASHIO_")
    }


async def run(scripts: ScriptRunner, supervisor: FakeSupervisor, options: dict[str, Any], **env: str):
    supervisor.options = options
    environment = scripts.base_env(supervisor)
    environment.update(env)
    return await scripts.run(RUN_SCRIPT, environment)


async def test_defaults(scripts, supervisor, addon_config):
    result = await run(scripts, supervisor, default_options(addon_config))

    assert result.returncode == 0, result.output
    assert result.argv == []
    assert proxy_env(result.env) == {
        "WYOMING_URI": "tcp://0.0.0.0:10300",
        "WYOMING_HTTP_PORT": "8099",
        "WYOMING_LOG_LEVEL": "INFO",
        "WYOMING_LANGUAGES": "en",
        "STT_OPENAI_URL": "https://api.openai.com/v1",
        "STT_MODELS": "gpt-4o-mini-transcribe whisper-1",
        "TTS_OPENAI_URL": "https://api.openai.com/v1",
        "TTS_MODELS": "gpt-4o-mini-tts tts-1",
    }
    assert extra_env(result.env) == set()
    # The options came from the Supervisor, with its token, once; bashio's cached copy is gone.
    assert supervisor.requests == [("GET", "/addons/self/options/config", "Bearer supervisor-token-not-real")]
    assert not scripts.cache.exists()
    # No key in the form and OpenAI's URL: the user is told, once per direction.
    assert result.output.count("no API key is set") == 2


EVERYTHING = {
    "stt_openai_url": "http://speaches.local:8000/v1",
    "stt_openai_key": KEY_STT,
    "stt_backend": "speaches",
    "stt_models": ["Systran/faster-whisper-small", "whisper-1"],
    "stt_streaming_models": ["Systran/faster-whisper-small"],
    "stt_realtime_models": ["whisper-1"],
    "stt_prompt": "Kitchen, living room",
    "stt_temperature": 0.25,
    "stt_max_seconds": 90.5,
    "stt_silence_gate": False,
    "stt_hallucination_filter": False,
    "stt_extra_body": '{"vad_filter": true}',
    "stt_realtime_extra_body": '{"noise_reduction": {"type": "near_field"}}',
    "tts_openai_url": "http://kokoro.local:8880/v1",
    "tts_openai_key": KEY_TTS,
    "tts_backend": "kokoro_fastapi",
    "tts_models": ["kokoro", "tts-1"],
    "tts_voices": ["af_heart", "bf_emma"],
    "tts_voice_labels": "af_heart=Heart, bf_emma=Emma",
    "tts_voice_presets": [
        {
            "name": "heart-calm",
            "voice": "af_heart",
            "model": "kokoro",
            "instructions": 'Speak "calmly" & warmly',
            "speed": 0.9,
            "languages": "en de",
            "label": "Heart (calm)",
        },
        {"name": "emma-de", "voice": "bf_emma"},
    ],
    "tts_clean_text": False,
    "tts_clean_urls": "drop",
    "tts_pronounce": ["HA=Home Assistant", "de:°C=Grad Celsius"],
    "tts_streaming_models": ["kokoro"],
    "tts_realtime_models": ["tts-1"],
    "tts_speed": 1.5,
    "tts_instructions": "Speak calmly.",
    "tts_response_format": "pcm",
    "tts_pcm_sample_rate": 24000,
    "tts_sample_rate": 22050,
    "tts_split_text": True,
    "tts_streaming_min_words": 4,
    "tts_streaming_max_chars": 400,
    "tts_concurrent_requests": 5,
    "tts_extra_body": '{"lang_code": "a"}',
    "tts_realtime_extra_body": "{}",
    "stt_fallback_url": "http://192.168.1.20:8000/v1",
    "stt_fallback_key": KEY_FALLBACK,
    "stt_fallback_model": "Systran/faster-whisper-small",
    "tts_fallback_url": "http://192.168.1.20:8880/v1",
    "tts_fallback_key": KEY_FALLBACK,
    "tts_fallback_model": "kokoro",
    "tts_fallback_voice": "af_heart",
    "languages": ["en", "de"],
    "log_level": "debug",
    "log_format": "json",
    "max_connections": 32,
    "idle_timeout": 60.5,
    "max_event_bytes": 2048,
    "max_payload_bytes": 8192,
    "upstream_timeout": 45.5,
    "upstream_connect_timeout": 2.5,
    "upstream_read_timeout": 12.5,
    "upstream_retries": 2,
    "upstream_retry_after_max": 4.5,
    "upstream_max_connections": 10,
}

# What the proxy must receive, written out by hand (not derived from the script).
EVERYTHING_ENV = {
    "WYOMING_URI": "tcp://0.0.0.0:10300",
    "WYOMING_HTTP_PORT": "8099",
    "STT_OPENAI_URL": "http://speaches.local:8000/v1",
    "STT_OPENAI_KEY": KEY_STT,
    "STT_BACKEND": "SPEACHES",
    "STT_MODELS": "Systran/faster-whisper-small whisper-1",
    "STT_STREAMING_MODELS": "Systran/faster-whisper-small",
    "STT_REALTIME_MODELS": "whisper-1",
    "STT_PROMPT": "Kitchen, living room",
    "STT_TEMPERATURE": "0.25",
    "STT_MAX_SECONDS": "90.5",
    "STT_SILENCE_GATE": "false",
    "STT_HALLUCINATION_FILTER": "false",
    "STT_EXTRA_BODY": '{"vad_filter": true}',
    "STT_REALTIME_EXTRA_BODY": '{"noise_reduction": {"type": "near_field"}}',
    "TTS_OPENAI_URL": "http://kokoro.local:8880/v1",
    "TTS_OPENAI_KEY": KEY_TTS,
    "TTS_BACKEND": "KOKORO_FASTAPI",
    "TTS_MODELS": "kokoro tts-1",
    "TTS_VOICES": "af_heart bf_emma",
    "TTS_VOICE_LABELS": "af_heart=Heart, bf_emma=Emma",
    "TTS_VOICE_PRESETS": (
        '[{"name":"heart-calm","voice":"af_heart","model":"kokoro","instructions":"Speak \\"calmly\\" & warmly",'
        '"speed":0.9,"languages":"en de","label":"Heart (calm)"},{"name":"emma-de","voice":"bf_emma"}]'
    ),
    "TTS_CLEAN_TEXT": "false",
    "TTS_CLEAN_URLS": "drop",
    "TTS_PRONOUNCE": "HA=Home Assistant\nde:°C=Grad Celsius",
    "TTS_STREAMING_MODELS": "kokoro",
    "TTS_REALTIME_MODELS": "tts-1",
    "TTS_SPEED": "1.5",
    "TTS_INSTRUCTIONS": "Speak calmly.",
    "TTS_RESPONSE_FORMAT": "pcm",
    "TTS_PCM_SAMPLE_RATE": "24000",
    "TTS_SAMPLE_RATE": "22050",
    "TTS_SPLIT_TEXT": "true",
    "TTS_STREAMING_MIN_WORDS": "4",
    "TTS_STREAMING_MAX_CHARS": "400",
    "TTS_CONCURRENT_REQUESTS": "5",
    "TTS_EXTRA_BODY": '{"lang_code": "a"}',
    "TTS_REALTIME_EXTRA_BODY": "{}",
    "STT_FALLBACK_URL": "http://192.168.1.20:8000/v1",
    "STT_FALLBACK_KEY": KEY_FALLBACK,
    "STT_FALLBACK_MODEL": "Systran/faster-whisper-small",
    "TTS_FALLBACK_URL": "http://192.168.1.20:8880/v1",
    "TTS_FALLBACK_KEY": KEY_FALLBACK,
    "TTS_FALLBACK_MODEL": "kokoro",
    "TTS_FALLBACK_VOICE": "af_heart",
    "WYOMING_LANGUAGES": "en de",
    "WYOMING_LOG_LEVEL": "DEBUG",
    "WYOMING_LOG_FORMAT": "json",
    "WYOMING_MAX_CONNECTIONS": "32",
    "WYOMING_IDLE_TIMEOUT": "60.5",
    "WYOMING_MAX_EVENT_BYTES": "2048",
    "WYOMING_MAX_PAYLOAD_BYTES": "8192",
    "WYOMING_UPSTREAM_TIMEOUT": "45.5",
    "WYOMING_UPSTREAM_CONNECT_TIMEOUT": "2.5",
    "WYOMING_UPSTREAM_READ_TIMEOUT": "12.5",
    "WYOMING_UPSTREAM_RETRIES": "2",
    "WYOMING_UPSTREAM_RETRY_AFTER_MAX": "4.5",
    "WYOMING_UPSTREAM_MAX_CONNECTIONS": "10",
}


def test_everything_covers_the_whole_schema(addon_config):
    """The "everything set" case sets every option of the form, each to the proxy's variable."""
    assert set(EVERYTHING) == {name for name in addon_config["schema"] if not name.startswith("openai_api")}
    for name in EVERYTHING:
        assert settings.OPTIONS_BY_NAME[name].env in EVERYTHING_ENV, name


def test_everything_is_what_the_supervisor_would_send(addon_config):
    """The option values these tests use pass the Supervisor's validation of the schema."""
    from test_config import validate_value

    for name, value in EVERYTHING.items():
        schema = addon_config["schema"][name]
        for item in value if isinstance(schema, list) else [value]:
            element = schema[0] if isinstance(schema, list) else schema
            assert validate_value(element, item) is None, (name, item)


async def test_everything_set(scripts, supervisor):
    result = await run(scripts, supervisor, copy.deepcopy(EVERYTHING))

    assert result.returncode == 0, result.output
    assert result.argv == []
    assert proxy_env(result.env) == EVERYTHING_ENV
    assert extra_env(result.env) == set()
    assert "no API key is set" not in result.output

    loaded = settings.load_settings([], environ=result.env)
    assert loaded.stt_openai_key.reveal() == KEY_STT
    assert loaded.tts_openai_key.reveal() == KEY_TTS
    assert loaded.stt_backend is settings.Backend.SPEACHES
    assert loaded.tts_backend is settings.Backend.KOKORO_FASTAPI
    assert loaded.tts_voices == ["af_heart", "bf_emma"]
    assert loaded.tts_voice_labels == {"af_heart": "Heart", "bf_emma": "Emma"}
    assert loaded.tts_voice_presets == (
        settings.VoicePreset(
            "heart-calm", "af_heart", "kokoro", 'Speak "calmly" & warmly', 0.9, ("en", "de"), "Heart (calm)"
        ),
        settings.VoicePreset("emma-de", "bf_emma"),
    )
    assert loaded.tts_clean_text is False and loaded.tts_clean_urls == "drop"
    assert [(p.written, p.spoken, p.language) for p in loaded.tts_pronounce] == [
        ("HA", "Home Assistant", None),
        ("°C", "Grad Celsius", "de"),
    ]
    assert loaded.stt_extra_body == {"vad_filter": True}
    assert loaded.tts_speed == 1.5
    assert loaded.tts_split_text is True
    assert loaded.languages == ["en", "de"]
    assert loaded.zeroconf is None
    assert loaded.uri == "tcp://0.0.0.0:10300"
    assert loaded.http_port == 8099
    assert loaded.stt_fallback_key.reveal() == loaded.tts_fallback_key.reveal() == KEY_FALLBACK


async def test_optionals_unset_are_left_out(scripts, supervisor, addon_config):
    """Empty keys, "auto" backends, empty lists and absent optional options never reach the proxy,
    even when the container's environment carried such variables."""
    options = default_options(addon_config)
    options.update(stt_openai_key="", tts_openai_key="", stt_models=["whisper-1"], tts_models=["tts-1"])
    stale = {
        "STT_OPENAI_KEY": "stale",
        "OPENAI_API_KEY": "stale",
        "TTS_VOICES": "stale",
        "STT_BACKEND": "LOCALAI",
        "TTS_SPEED": "3",
        "WYOMING_ZEROCONF": "on",
        "WYOMING_CONFIG": "/stale.yaml",
        "WYOMING_LOG_FILE": "/stale.log",
    }
    result = await run(scripts, supervisor, options, **stale)

    assert result.returncode == 0, result.output
    assert proxy_env(result.env) == {
        "WYOMING_URI": "tcp://0.0.0.0:10300",
        "WYOMING_HTTP_PORT": "8099",
        "WYOMING_LOG_LEVEL": "INFO",
        "WYOMING_LANGUAGES": "en",
        "STT_OPENAI_URL": "https://api.openai.com/v1",
        "STT_MODELS": "whisper-1",
        "TTS_OPENAI_URL": "https://api.openai.com/v1",
        "TTS_MODELS": "tts-1",
    }
    assert "null" not in "".join(result.env.values())


async def test_options_missing_entirely_read_as_unset(scripts, supervisor):
    """An option the Supervisor does not send at all reads as bashio's "null": left out, not passed as text."""
    result = await run(scripts, supervisor, {"stt_models": ["whisper-1"], "tts_models": ["tts-1"]})

    assert result.returncode == 0, result.output
    assert proxy_env(result.env) == {
        "WYOMING_URI": "tcp://0.0.0.0:10300",
        "WYOMING_HTTP_PORT": "8099",
        "STT_MODELS": "whisper-1",
        "TTS_MODELS": "tts-1",
    }


async def test_emptied_model_list_switches_a_direction_off(scripts, supervisor, addon_config):
    """A text-to-speech-only set-up: no STT models passes an empty STT_MODELS (the proxy's
    default would be OpenAI's models), and no warning about a missing OpenAI key for STT."""
    options = default_options(addon_config)
    options.update(stt_models=[], tts_openai_url="http://kokoro.local:8880/v1", tts_models=["kokoro"])
    result = await run(scripts, supervisor, options)

    assert result.returncode == 0, result.output
    assert result.env["STT_MODELS"] == ""
    assert result.env["TTS_MODELS"] == "kokoro"
    assert "no API key is set" not in result.output
    loaded = settings.load_settings([], environ=result.env)
    assert loaded.stt_models == []
    assert loaded.tts_models == ["kokoro"]


async def test_odd_characters_arrive_intact(scripts, supervisor, addon_config):
    options = default_options(addon_config)
    options.update(
        stt_openai_key=ODD_KEY,
        tts_openai_key=ODD_KEY,
        stt_prompt=ODD,
        tts_instructions=ODD,
        tts_voice_labels='alloy=The "Best" $voice, nova=`Nova` & co',
        stt_extra_body='{"prompt": "a \\"quoted\\" $word"}',
        tts_voices=["my voice $1", "`echo`"],
        tts_split_text=False,
    )
    result = await run(scripts, supervisor, options)

    assert result.returncode == 0, result.output
    env = result.env
    assert env["STT_OPENAI_KEY"] == ODD_KEY
    assert env["TTS_OPENAI_KEY"] == ODD_KEY
    assert env["STT_PROMPT"] == ODD
    assert env["TTS_INSTRUCTIONS"] == ODD
    assert env["TTS_VOICE_LABELS"] == 'alloy=The "Best" $voice, nova=`Nova` & co'
    assert env["STT_EXTRA_BODY"] == '{"prompt": "a \\"quoted\\" $word"}'
    # List items are joined with spaces: the proxy splits them on whitespace.
    assert env["TTS_VOICES"] == "my voice $1 `echo`"
    # A switched-off switch is passed on as such, not dropped.
    assert env["TTS_SPLIT_TEXT"] == "false"

    loaded = settings.load_settings([], environ=env)
    assert loaded.tts_instructions == ODD
    assert loaded.stt_openai_key.reveal() == ODD_KEY.strip()
    assert loaded.stt_extra_body == {"prompt": 'a "quoted" $word'}
    assert loaded.tts_voice_labels == {"alloy": 'The "Best" $voice', "nova": "`Nova` & co"}
    assert loaded.tts_split_text is False


def secret_fragments(secret: str) -> list[str]:
    """The secret and distinctive pieces of it, so a mangled copy (escapes, colours) is caught too."""
    return [secret, *(part for part in secret.split() if len(part) >= 8)]


@pytest.mark.parametrize(("log_level", "key"), [("debug", ODD_KEY), ("trace", KEY_STT)])
async def test_keys_never_logged(scripts, supervisor, addon_config, log_level, key):
    options = default_options(addon_config)
    options.update(stt_openai_key=key, tts_openai_key=key, log_level=log_level)
    # LOG_LEVEL=8 (ALL) makes bashio itself as verbose as it gets.
    result = await run(scripts, supervisor, options, LOG_LEVEL="8")

    assert result.returncode == 0, result.output
    assert result.env["STT_OPENAI_KEY"] == key
    # The chosen level took effect for the add-on's own messages...
    assert "Options passed to the proxy:" in result.output
    assert "STT_OPENAI_KEY" in result.output
    # ...and no copy of the key is anywhere in the output.
    for fragment in secret_fragments(key):
        assert fragment not in result.output


async def test_leak_check_catches_a_careless_script(scripts, supervisor, addon_config, tmp_path: Path):
    """Guard for the test above: the same script without its log-level cap does print the key, so
    the stand-in reproduces bashio's leaks and the assertion there would catch them."""
    careless = tmp_path / "careless-run"
    text = RUN_SCRIPT.read_text()
    assert 'bashio::log.level "info"\n' in text
    careless.write_text(text.replace('bashio::log.level "info"\n', ":\n", 1))
    options = default_options(addon_config)
    options.update(stt_openai_key=KEY_STT, log_level="debug")
    supervisor.options = options

    result = await scripts.run(careless, scripts.base_env(supervisor, log_level=8))

    assert KEY_STT in result.output


async def test_supervisor_failure_stops_the_start(scripts, supervisor, addon_config):
    supervisor.fail_options = True
    result = await run(scripts, supervisor, default_options(addon_config))

    assert result.returncode != 0
    assert result.env is None, "the proxy must not start without its options"
    assert "Cannot read the add-on options" in result.output


async def test_wrong_token_stops_the_start(scripts, supervisor, addon_config):
    result = await run(scripts, supervisor, default_options(addon_config), SUPERVISOR_TOKEN="wrong")

    assert result.returncode != 0
    assert result.env is None
