"""Configuration: every 0.8.0 flag and env var, the YAML file, precedence, and one clear line on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness import APP

from wyoming_openai.settings import OPTIONS, Backend, Secret, SettingsError, VoicePreset, load_settings, redact_url
from wyoming_openai.speech_text import Pronunciation

PRONUNCIATIONS_EXAMPLE = APP.parent / "docs" / "pronunciations.example.yaml"

# The seed's flags and their environment variables: existing compose files must keep working.
SEED_FLAGS = {
    "--uri": "WYOMING_URI", "--log-level": "WYOMING_LOG_LEVEL", "--log-file": "WYOMING_LOG_FILE",
    "--log-max-bytes": "WYOMING_LOG_MAX_BYTES", "--log-backup-count": "WYOMING_LOG_BACKUP_COUNT",
    "--languages": "WYOMING_LANGUAGES", "--stt-openai-key": "STT_OPENAI_KEY", "--stt-openai-url": "STT_OPENAI_URL",
    "--stt-backend": "STT_BACKEND", "--stt-models": "STT_MODELS", "--stt-streaming-models": "STT_STREAMING_MODELS",
    "--stt-realtime-models": "STT_REALTIME_MODELS", "--stt-temperature": "STT_TEMPERATURE", "--stt-prompt": "STT_PROMPT",
    "--stt-extra-body": "STT_EXTRA_BODY", "--stt-realtime-extra-body": "STT_REALTIME_EXTRA_BODY",
    "--tts-openai-key": "TTS_OPENAI_KEY", "--tts-openai-url": "TTS_OPENAI_URL", "--tts-backend": "TTS_BACKEND",
    "--tts-models": "TTS_MODELS", "--tts-voices": "TTS_VOICES", "--tts-streaming-models": "TTS_STREAMING_MODELS",
    "--tts-realtime-models": "TTS_REALTIME_MODELS", "--tts-speed": "TTS_SPEED", "--tts-instructions": "TTS_INSTRUCTIONS",
    "--tts-streaming-min-words": "TTS_STREAMING_MIN_WORDS", "--tts-streaming-max-chars": "TTS_STREAMING_MAX_CHARS",
    "--tts-extra-body": "TTS_EXTRA_BODY", "--tts-realtime-extra-body": "TTS_REALTIME_EXTRA_BODY",
    "--tts-voice-labels": "TTS_VOICE_LABELS", "--tts-concurrent-requests": "TTS_CONCURRENT_REQUESTS",
}  # fmt: skip

# A value for every option, as text, and what it must become.
SAMPLES = {
    "uri": ("tcp://127.0.0.1:10555", "tcp://127.0.0.1:10555"),
    "log_level": ("debug", "DEBUG"),
    "log_format": ("JSON", "json"),
    "log_file": ("/tmp/wyoming-openai-test.log", "/tmp/wyoming-openai-test.log"),
    "log_max_bytes": ("2048", 2048),
    "log_backup_count": ("7", 7),
    "languages": ("en de fr", ["en", "de", "fr"]),
    "zeroconf": ("kitchen-proxy", "kitchen-proxy"),
    "workers": ("1", 1),
    "max_connections": ("12", 12),
    "idle_timeout": ("33.5", 33.5),
    "max_event_bytes": ("65536", 65536),
    "max_payload_bytes": ("131072", 131072),
    "upstream_timeout": ("12", 12.0),
    "upstream_connect_timeout": ("1.5", 1.5),
    "upstream_read_timeout": ("4", 4.0),
    "upstream_retries": ("2", 2),
    "upstream_retry_after_max": ("5.5", 5.5),
    "upstream_max_connections": ("9", 9),
    "http_port": ("8099", 8099),
    "stt_openai_key": ("stt-key-value", Secret("stt-key-value")),
    "stt_openai_url": ("http://speaches:8000/v1/", "http://speaches:8000/v1"),
    "stt_backend": ("speaches", Backend.SPEACHES),
    "stt_models": ("whisper-1 gpt-4o-transcribe", ["whisper-1", "gpt-4o-transcribe"]),
    "stt_streaming_models": ("gpt-4o-transcribe", ["gpt-4o-transcribe"]),
    "stt_realtime_models": ("whisper-1", ["whisper-1"]),
    "stt_temperature": ("0.3", 0.3),
    "stt_prompt": ("Living room, kitchen", "Living room, kitchen"),
    "stt_extra_body": ('{"vad_filter": false}', {"vad_filter": False}),
    "stt_realtime_extra_body": (
        '{"noise_reduction": {"type": "near_field"}}',
        {"noise_reduction": {"type": "near_field"}},
    ),
    "stt_max_seconds": ("30", 30.0),
    "stt_silence_gate": ("off", False),
    "stt_silence_threshold": ("-50", -50.0),
    "stt_hallucination_filter": ("no", False),
    "stt_fallback_url": ("http://speaches.lan:8000/v1/", "http://speaches.lan:8000/v1"),
    "stt_fallback_key": ("stt-fallback-key-value", Secret("stt-fallback-key-value")),
    "stt_fallback_model": ("Systran/faster-whisper-small", "Systran/faster-whisper-small"),
    "tts_openai_key": ("tts-key-value", Secret("tts-key-value")),
    "tts_openai_url": ("https://kokoro.local:8880/v1", "https://kokoro.local:8880/v1"),
    "tts_backend": ("KOKORO_FASTAPI", Backend.KOKORO_FASTAPI),
    "tts_models": ("kokoro tts-1", ["kokoro", "tts-1"]),
    "tts_voices": ("af_heart af_sky", ["af_heart", "af_sky"]),
    "tts_voice_labels": ("af_heart=Heart af_sky=Sky", {"af_heart": "Heart", "af_sky": "Sky"}),
    "tts_streaming_models": ("kokoro", ["kokoro"]),
    "tts_realtime_models": ("tts-1", ["tts-1"]),
    "tts_speed": ("1.25", 1.25),
    "tts_instructions": ("Speak like a butler.", "Speak like a butler."),
    "tts_extra_body": ('{"lang_code": "a"}', {"lang_code": "a"}),
    "tts_realtime_extra_body": ('{"voice": "marin"}', {"voice": "marin"}),
    "tts_streaming_min_words": ("3", 3),
    "tts_streaming_max_chars": ("300", 300),
    "tts_concurrent_requests": ("5", 5),
    "tts_split_text": ("yes", True),
    "tts_response_format": ("FLAC", "flac"),
    "tts_pcm_sample_rate": ("22050", 22050),
    "tts_sample_rate": ("16000", 16000),
    "tts_voice_presets": (
        '[{"name": "nova-calm", "voice": "nova", "model": "gpt-4o-mini-tts", "instructions": "Calm.", "speed": 0.9,'
        ' "languages": "en de", "label": "Nova (calm)"}]',
        (VoicePreset("nova-calm", "nova", "gpt-4o-mini-tts", "Calm.", 0.9, ("en", "de"), "Nova (calm)"),),
    ),
    "tts_clean_text": ("off", False),
    "tts_clean_urls": ("DROP", "drop"),
    "tts_pronunciations": (
        str(PRONUNCIATIONS_EXAMPLE),
        (Pronunciation("HA", "Home Assistant"), Pronunciation("HACS", "Hacks")),
    ),
    "tts_pronounce": ("km/h=kph", (Pronunciation("km/h", "kph"),)),
    "tts_fallback_url": ("http://kokoro.lan:8880/v1", "http://kokoro.lan:8880/v1"),
    "tts_fallback_key": ("tts-fallback-key-value", Secret("tts-fallback-key-value")),
    "tts_fallback_model": ("kokoro", "kokoro"),
    "tts_fallback_voice": ("af_heart", "af_heart"),
}


def test_every_seed_flag_exists_with_its_env_var():
    ours = {option.flag: option.env for option in OPTIONS}
    for flag, env in SEED_FLAGS.items():
        assert ours.get(flag) == env, flag


def shown(default: object) -> str:
    if default in (None, [], {}):
        return "—"
    if isinstance(default, bool):
        return str(default).lower()
    return " ".join(default) if isinstance(default, list) else str(default)


def test_the_readme_lists_every_option_as_it_is():
    readme = (APP.parent / "README.md").read_text()
    rows = {
        cells[0].strip("`"): (cells[1].strip("`"), cells[2], cells[3])
        for line in readme.splitlines()
        if line.startswith("| `--") and len(cells := [cell.strip() for cell in line.strip("|").split("|")]) == 4
    }
    assert rows == {option.flag: (option.env, shown(option.default), option.help) for option in OPTIONS}


def test_every_option_has_a_sample():
    assert set(SAMPLES) == {option.name for option in OPTIONS}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_each_option_from_env_flag_and_file(option, tmp_path):
    text, expected = SAMPLES[option.name]
    from_env = load_settings([], {option.env: text})
    flag_args = [option.flag, *text.split()] if option.is_list else [option.flag, text]
    from_flag = load_settings(flag_args, {})
    config = tmp_path / "config.yaml"
    config.write_text(f"{option.name}: {text!r}\n")
    from_file = load_settings(["--config", str(config)], {})
    for settings in (from_env, from_flag, from_file):
        value = getattr(settings, option.name)
        if option.name.endswith("_streaming_models") or option.name.endswith("_realtime_models"):
            assert value == expected and getattr(settings, option.name.split("_")[0] + "_models")[0] == expected[0]
        elif option.name == "tts_pronunciations":  # the example's first rules; its languages follow
            assert value[:2] == expected and len(value) > 10
        else:
            assert value == expected


def test_precedence_flag_over_env_over_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("tts_speed: 0.5\nstt_models: [whisper-1]\nlanguages: en nl\n")
    settings = load_settings(
        ["--config", str(config), "--tts-speed", "2"], {"TTS_SPEED": "1.5", "WYOMING_LANGUAGES": "de"}
    )
    assert settings.tts_speed == 2.0
    assert settings.languages == ["de"]
    assert settings.stt_models == ["whisper-1"]  # YAML lists work too
    assert load_settings([], {"WYOMING_CONFIG": str(config)}).tts_speed == 0.5


def test_defaults_serve_the_common_case():
    settings = load_settings([], {"OPENAI_API_KEY": "from-env"})
    assert settings.uri == "tcp://0.0.0.0:10300"
    assert settings.stt_openai_url == settings.tts_openai_url == "https://api.openai.com/v1"
    assert settings.stt_openai_key == settings.tts_openai_key == Secret("from-env")
    assert settings.stt_models[0] in ("gpt-4o-mini-transcribe", "whisper-1")
    assert settings.tts_models[0] in ("gpt-4o-mini-tts", "tts-1")
    assert settings.upstream_retries <= 1  # no silent seconds of retrying
    assert settings.upstream_timeout <= 30


def test_streaming_models_are_served_first_as_in_the_seed():
    settings = load_settings(["--stt-models", "whisper-1", "--stt-streaming-models", "gpt-4o-transcribe"], {})
    assert settings.stt_models == ["gpt-4o-transcribe", "whisper-1"]
    assert load_settings(["--tts-models", "--tts-streaming-models", "tts-1"], {}).tts_models == ["tts-1"]


def test_specific_keys_beat_openai_api_key():
    settings = load_settings([], {"OPENAI_API_KEY": "general", "STT_OPENAI_KEY": "stt-only"})
    assert settings.stt_openai_key == Secret("stt-only") and settings.tts_openai_key == Secret("general")


def test_voice_labels_forms():
    as_json = load_settings([], {"TTS_VOICE_LABELS": '{"a": "Alpha voice"}'}).tts_voice_labels
    with_commas = load_settings(["--tts-voice-labels", "a=Alpha voice, b=Beta"], {}).tts_voice_labels
    assert as_json == {"a": "Alpha voice"} and with_commas == {"a": "Alpha voice", "b": "Beta"}


def test_fallbacks_are_off_by_default_and_never_borrow_the_cloud_key():
    settings = load_settings([], {"OPENAI_API_KEY": "general"})
    assert settings.stt_fallback_url is settings.tts_fallback_url is settings.http_port is None
    settings = load_settings(["--tts-fallback-url", "http://kokoro:8880/v1"], {"OPENAI_API_KEY": "general"})
    assert settings.tts_fallback_key is None  # a local fallback must not be sent the cloud's key


def test_fallback_keys_and_url_credentials_are_secrets():
    settings = load_settings(
        [], {"STT_FALLBACK_KEY": "stt-fallback-key-value", "TTS_FALLBACK_URL": "http://me:fb-pass@kokoro/v1"}
    )
    assert {"stt-fallback-key-value", "fb-pass"} <= set(settings.secrets)
    assert "stt-fallback-key-value" not in repr(settings)


def test_secrets_hide_themselves():
    settings = load_settings([], {"STT_OPENAI_KEY": "abc-secret", "TTS_OPENAI_URL": "https://u:p4ss@h/v1"})
    assert "abc-secret" not in repr(settings) and "abc-secret" in settings.secrets and "p4ss" in settings.secrets
    assert redact_url("https://u:p4ss@h/v1") == "https://***@h/v1"


BAD = [
    (["--stt-openai-url", "ftp://x"], {}, "--stt-openai-url (STT_OPENAI_URL)"),
    ([], {"TTS_OPENAI_URL": "not a url"}, "--tts-openai-url (TTS_OPENAI_URL)"),
    ([], {"TTS_BACKEND": "PIPER"}, "--tts-backend (TTS_BACKEND)"),
    (["--tts-speed", "-1"], {}, "--tts-speed (TTS_SPEED): must be between 0.25 and 4.0"),
    ([], {"TTS_SPEED": "fast"}, "--tts-speed (TTS_SPEED)"),
    ([], {"STT_TEMPERATURE": "1.5"}, "--stt-temperature (STT_TEMPERATURE)"),
    ([], {"STT_EXTRA_BODY": "{bad json"}, "--stt-extra-body (STT_EXTRA_BODY): malformed JSON"),
    ([], {"TTS_EXTRA_BODY": "[1, 2]"}, "--tts-extra-body (TTS_EXTRA_BODY): expected a JSON object"),
    ([], {"TTS_CONCURRENT_REQUESTS": "0"}, "--tts-concurrent-requests (TTS_CONCURRENT_REQUESTS)"),
    ([], {"TTS_CONCURRENT_REQUESTS": "1.5"}, "--tts-concurrent-requests (TTS_CONCURRENT_REQUESTS)"),
    ([], {"WYOMING_URI": "tcp://nohost"}, "--uri (WYOMING_URI)"),
    ([], {"WYOMING_HTTP_PORT": "70000"}, "--http-port (WYOMING_HTTP_PORT)"),
    (["--tts-fallback-url", "kokoro:8880"], {}, "--tts-fallback-url (TTS_FALLBACK_URL)"),
    ([], {"WYOMING_LOG_LEVEL": "LOUD"}, "--log-level (WYOMING_LOG_LEVEL)"),
    ([], {"TTS_VOICE_LABELS": "novalue"}, "--tts-voice-labels (TTS_VOICE_LABELS)"),
    (["--stt-models", "--tts-models"], {}, "nothing to serve"),
    (["--config", "/nonexistent/config.yaml"], {}, "cannot read --config file"),
    (["--workers", "2", "--uri", "unix:///tmp/x.sock"], {}, "several workers need a tcp:// URI"),
    (
        [],
        {"TTS_VOICE_PRESETS": '[{"name": "a"}]'},
        "--tts-voice-presets (TTS_VOICE_PRESETS): every preset needs a voice",
    ),
    ([], {"TTS_VOICE_PRESETS": '[{"name": "a", "voice": "b", "sped": 1}]'}, "unknown preset field 'sped'"),
    ([], {"TTS_VOICE_PRESETS": '[{"name": "a", "voice": "b", "speed": 9}]'}, "preset 'a': speed must be between"),
    (
        [],
        {"TTS_VOICE_PRESETS": '[{"name": "a", "voice": "b"}, {"name": "a", "voice": "c"}]'},
        "two presets are named 'a'",
    ),
    ([], {"TTS_VOICE_PRESETS": '{"name": '}, "--tts-voice-presets (TTS_VOICE_PRESETS): malformed JSON"),
    ([], {"TTS_PRONUNCIATIONS": "/nonexistent/p.yaml"}, "--tts-pronunciations (TTS_PRONUNCIATIONS): cannot read"),
    ([], {"TTS_PRONOUNCE": "HA=Home Assistant\n/(x/=y"}, "--tts-pronounce (TTS_PRONOUNCE): pronunciation: bad regular"),
    ([], {"TTS_CLEAN_URLS": "spell"}, "--tts-clean-urls (TTS_CLEAN_URLS): expected one of host, drop"),
]


@pytest.mark.parametrize(("argv", "env", "message"), BAD)
def test_bad_values_name_flag_and_env(argv, env, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(argv, env)
    assert message in str(caught.value)


def test_bad_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("tts_speeed: 2\n")
    with pytest.raises(SettingsError, match="unknown option 'tts_speeed'"):
        load_settings(["--config", str(config)], {})
    config.write_text("tts_speed: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(["--config", str(config)], {})


def test_cli_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_openai", "--tts-speed", "9"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(APP)}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tts-speed (TTS_SPEED)" in lines[0]


def test_presets_and_pronunciations_in_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "tts_voice_presets:\n"
        "  nova-calm: {voice: nova, instructions: Speak calmly and warmly, speed: 0.9, languages: [en, de]}\n"
        "  echo-fast: {voice: echo, speed: 1.5}\n"
        "tts_pronunciations:\n"
        "  HA: Home Assistant\n"
        "  de: {°C: Grad Celsius}\n"
        "tts_pronounce: ['km/h=kilometres per hour']\n"
    )
    settings = load_settings(["--config", str(config)], {})
    assert settings.tts_voice_presets == (
        VoicePreset("nova-calm", "nova", None, "Speak calmly and warmly", 0.9, ("en", "de")),
        VoicePreset("echo-fast", "echo", speed=1.5),
    )
    assert settings.tts_pronunciations == (
        Pronunciation("HA", "Home Assistant"),
        Pronunciation("°C", "Grad Celsius", "de"),
    )
    assert settings.tts_pronounce == (Pronunciation("km/h", "kilometres per hour"),)
    assert settings.tts_clean_text is True and settings.tts_clean_urls == "host"  # the defaults
