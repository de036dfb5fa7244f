"""The `openai-api` longrun: the OpenAI-compatible API (wyoming-openai serve-openai) in front of the
Wyoming add-ons the Supervisor runs, run for real under the bashio stand-in.

The API is replaced by the recorder, and `sleep` by one that records its argument and returns at
once: "infinity" is the service staying off, numbers are the back-off while waiting for Wyoming
add-ons. The environment the API gets is compared exactly, then loaded with the API's own config.
"""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest
from conftest import (
    API_FINISH_SCRIPT,
    API_RUN_SCRIPT,
    HARNESS,
    HOMEASSISTANT_TOKEN,
    SELF_HOSTNAME,
    SELF_SLUG,
    SHELL_OWN,
    SUPERVISOR_TOKEN,
    FakeSupervisor,
    ScriptRunner,
    addon_info,
    official_piper,
    official_whisper,
    requires_tools,
)

from wyoming_openai.openai_api import config as api_config

pytestmark = requires_tools


API_KEY_1 = "test-api-key-not-real-4b8e"
API_KEY_2 = "test-api-key-not-real-d27a"
PROXY_KEY = "test-key-not-real-stt-7f3a"
# Back-off while no Wyoming add-on runs: 2, 4, ... 60 s, until 300 s have passed.
BACK_OFF = ["2", "4", "8", "16", "32", "60", "60", "60", "60"]


def options(addon_config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The Supervisor's options for this add-on: config.yaml's defaults, changed."""
    result = copy.deepcopy(addon_config["options"])
    result.update(changes)
    return result


def api_env(recorded: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in recorded.items() if name.startswith("OPENAI_API_")}


def extra_env(recorded: dict[str, str]) -> set[str]:
    return {
        name
        for name in recorded
        if not name.startswith(("OPENAI_API_", "__BASHIO_")) and name not in HARNESS | SHELL_OWN
    }


async def run(scripts: ScriptRunner, supervisor: FakeSupervisor, opts: dict[str, Any], **env: str):
    scripts.fake_sleep()
    supervisor.options = opts
    environment = scripts.base_env(supervisor)
    environment.update(env)
    return await scripts.run(API_RUN_SCRIPT, environment)


def two_wyoming_addons_and_others() -> dict[str, dict[str, Any]]:
    """Piper and Whisper running; openWakeWord stopped; Mosquitto (no Wyoming) running."""
    return {
        "core_piper": official_piper(),
        "core_whisper": official_whisper(),
        "core_openwakeword": addon_info(
            "core_openwakeword",
            "openWakeWord",
            {"10400/tcp": None},
            state="stopped",
            announces="tcp://core-openwakeword:10400",
        ),
        "core_mosquitto": addon_info(
            "core_mosquitto", "Mosquitto broker", {"1883/tcp": 1883, "8883/tcp": 8883}, discovery=("mqtt",)
        ),
    }


# --- off --------------------------------------------------------------------------------------


async def test_off_by_default_sleeps_without_asking_for_add_ons(scripts, supervisor, addon_config):
    supervisor.addons = two_wyoming_addons_and_others()
    result = await run(scripts, supervisor, options(addon_config))

    assert result.returncode == 0, result.output
    assert result.env is None, "the API must not start"
    assert scripts.sleeps() == ["infinity"]
    assert "The OpenAI-compatible API is off" in result.output
    assert supervisor.paths() == ["GET /addons/self/options/config"]
    assert not scripts.cache.exists()


# --- on, with the Wyoming add-ons the Supervisor runs ------------------------------------------


async def test_two_wyoming_add_ons_are_found(scripts, supervisor, addon_config):
    supervisor.addons = two_wyoming_addons_and_others()
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.returncode == 0, result.output
    assert result.argv == ["serve-openai"]
    assert api_env(result.env) == {
        "OPENAI_API_HOST": "0.0.0.0",
        "OPENAI_API_PORT": "8000",
        "OPENAI_API_WYOMING_URIS": "tcp://core-piper:10200 tcp://core-whisper:10300",
        "OPENAI_API_LOG_LEVEL": "INFO",
    }
    assert extra_env(result.env) == set()
    assert scripts.sleeps() == []
    # The same addresses the add-ons announce to Home Assistant (what GET /discovery gives it).
    announced = [entry["config"]["uri"] for entry in supervisor.discovery_list()]
    assert result.env["OPENAI_API_WYOMING_URIS"].split() == announced
    # Only running add-ons are asked about, never this one; the discovery list is not asked for.
    assert supervisor.paths() == [
        "GET /addons/self/options/config",
        "GET /addons/self/info",
        "GET /supervisor/info",
        "GET /addons/core_piper/info",
        "GET /addons/core_whisper/info",
        "GET /addons/core_mosquitto/info",
    ]
    assert "using Piper at tcp://core-piper:10200" in result.output
    assert "using Whisper at tcp://core-whisper:10300" in result.output
    assert f"http://{SELF_HOSTNAME}:8000/v1 for other add-ons" in result.output
    assert "Not reachable from your network" in result.output
    assert "no openai_api_keys" in result.output
    assert not scripts.cache.exists()

    loaded = api_config.load([], environ=result.env)
    assert loaded.wyoming_uris == ("tcp://core-piper:10200", "tcp://core-whisper:10300")
    assert loaded.port == 8000
    assert loaded.api_keys == ()
    assert loaded.zeroconf is False


async def test_this_add_on_is_left_out(scripts, supervisor, addon_config):
    """Even listed among the add-ons with its Wyoming port, this add-on is not asked about."""
    supervisor.addons = {
        "core_piper": official_piper(),
        SELF_SLUG: addon_info(SELF_SLUG, "Wyoming OpenAI", {"10300/tcp": None, "8000/tcp": None}),
    }
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.env["OPENAI_API_WYOMING_URIS"] == "tcp://core-piper:10200"
    assert f"GET /addons/{SELF_SLUG}/info" not in supervisor.paths()


async def test_wyoming_port_of_add_ons_with_several_ports(scripts, supervisor, addon_config):
    """The TCP port described as Wyoming wins; an add-on with several undescribed TCP ports or on
    the host network cannot be reached by name, and the log says to list it by hand."""
    supervisor.addons = {
        "local_speech": addon_info(
            "local_speech",
            "Speech",
            {"8080/tcp": 8080, "10555/tcp": None, "10555/udp": None},
            ports_description={"8080/tcp": "Web interface", "10555/tcp": "Wyoming protocol"},
        ),
        "local_two": addon_info("local_two", "Two ports", {"10200/tcp": None, "10201/tcp": None}),
        "local_host": addon_info("local_host", "On the host", {"10800/tcp": None}, host_network=True),
        "local_noports": addon_info("local_noports", "No ports", {}),
    }
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.env["OPENAI_API_WYOMING_URIS"] == "tcp://local-speech:10555"
    assert "Two ports has no single Wyoming port" in result.output
    assert "On the host uses the host network" in result.output
    assert "No ports has no single Wyoming port" in result.output


async def test_a_mapped_port_and_another_port_and_keys(scripts, supervisor, addon_config):
    supervisor.addons = {"core_whisper": official_whisper()}
    supervisor.self_network = {"10300/tcp": None, "8000/tcp": 18000}
    opts = options(
        addon_config, openai_api=True, openai_api_keys=[API_KEY_1, API_KEY_2], log_level="warning",
        openai_api_clean_text=True,
    )  # fmt: skip
    result = await run(scripts, supervisor, opts)

    assert api_env(result.env) == {
        "OPENAI_API_HOST": "0.0.0.0",
        "OPENAI_API_PORT": "8000",
        "OPENAI_API_WYOMING_URIS": "tcp://core-whisper:10300",
        "OPENAI_API_KEYS": f"{API_KEY_1} {API_KEY_2}",
        "OPENAI_API_LOG_LEVEL": "WARNING",
        "OPENAI_API_CLEAN_TEXT": "true",
    }
    loaded = api_config.load([], environ=result.env)
    assert loaded.api_keys == (API_KEY_1, API_KEY_2) and loaded.clean_text is True

    # A host port for 8000/tcp, at info level: a second run shows the address on the network.
    result = await run(scripts, supervisor, {**opts, "log_level": "info"})
    assert "From your network: http://<Home Assistant's address>:18000/v1" in result.output
    assert "no openai_api_keys" not in result.output

    # Another port inside the add-on: passed on; the Network section maps only 8000.
    result = await run(scripts, supervisor, {**opts, "log_level": "info", "openai_api_port": 8123})
    assert result.env["OPENAI_API_PORT"] == "8123"
    assert f"http://{SELF_HOSTNAME}:8123/v1" in result.output
    assert "Not reachable from your network" in result.output


# --- on, with servers listed in the options ------------------------------------------------------


async def test_explicit_uris_replace_the_search(scripts, supervisor, addon_config):
    supervisor.addons = two_wyoming_addons_and_others()
    uris = ["tcp://192.168.1.20:10300", "tcp://core-piper:10200"]
    opts = options(
        addon_config, openai_api=True, openai_api_wyoming_uris=uris, openai_api_keys=[API_KEY_1], log_level="debug"
    )
    result = await run(scripts, supervisor, opts)

    assert result.returncode == 0, result.output
    assert result.argv == ["serve-openai"]
    assert api_env(result.env) == {
        "OPENAI_API_HOST": "0.0.0.0",
        "OPENAI_API_PORT": "8000",
        "OPENAI_API_WYOMING_URIS": "tcp://192.168.1.20:10300 tcp://core-piper:10200",
        "OPENAI_API_KEYS": API_KEY_1,
        "OPENAI_API_LOG_LEVEL": "DEBUG",
    }
    assert "GET /supervisor/info" not in supervisor.paths()
    assert scripts.sleeps() == []
    assert api_config.load([], environ=result.env).wyoming_uris == tuple(uris)


# --- waiting for Wyoming add-ons ----------------------------------------------------------------


async def test_waits_with_back_off_until_a_wyoming_add_on_runs(scripts, supervisor, addon_config):
    """At boot, Piper may still be starting: asked again after 2 and 4 s, it is used at once."""
    supervisor.addons = {"core_piper": official_piper(state="stopped")}

    def piper_starts(count: int) -> None:
        if count == 3:
            supervisor.addons["core_piper"]["state"] = "started"

    supervisor.on_supervisor_info = piper_starts
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert scripts.sleeps() == ["2", "4"]
    assert result.env["OPENAI_API_WYOMING_URIS"] == "tcp://core-piper:10200"
    assert "no Wyoming add-on is running yet" in result.output


async def test_an_add_on_still_starting_is_used(scripts, supervisor, addon_config):
    supervisor.addons = {"core_whisper": official_whisper(state="startup")}
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert scripts.sleeps() == []
    assert result.env["OPENAI_API_WYOMING_URIS"] == "tcp://core-whisper:10300"


async def test_no_wyoming_add_on_gives_up_with_a_warning(scripts, supervisor, addon_config):
    supervisor.addons = {
        "core_mosquitto": addon_info("core_mosquitto", "Mosquitto broker", {"1883/tcp": 1883}, discovery=("mqtt",)),
        "core_piper": official_piper(state="stopped"),
    }
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.returncode == 0, result.output
    assert result.env is None
    assert scripts.sleeps() == [*BACK_OFF, "infinity"]
    assert sum(int(seconds) for seconds in BACK_OFF[:-1]) < 300 <= sum(int(seconds) for seconds in BACK_OFF)
    assert supervisor.supervisor_info_count == len(BACK_OFF) + 1
    assert "no Wyoming add-on (Piper, Whisper, ...) is running" in result.output
    assert "openai_api_wyoming_uris" in result.output


async def test_a_supervisor_that_does_not_list_add_ons(scripts, supervisor, addon_config):
    supervisor.addons = {"core_piper": official_piper()}
    supervisor.lists_addons = False
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.env is None
    assert scripts.sleeps() == ["infinity"]
    assert "does not list the add-ons" in result.output


async def test_without_hassio_api_the_search_fails_and_gives_up(scripts, supervisor, addon_config):
    supervisor.addons = {"core_piper": official_piper()}
    supervisor.hassio_api = False
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.env is None
    assert scripts.sleeps() == [*BACK_OFF, "infinity"]
    assert "forbidden" in result.output


# --- bad options, stale environment, secrets ----------------------------------------------------


@pytest.mark.parametrize("bad", ["two words", "a,b", "tab\there"])
async def test_a_key_with_a_separator_keeps_the_api_off(scripts, supervisor, addon_config, bad):
    supervisor.addons = {"core_piper": official_piper()}
    key = f"{API_KEY_1}{bad}"
    result = await run(scripts, supervisor, options(addon_config, openai_api=True, openai_api_keys=[key]))

    assert result.env is None
    assert scripts.sleeps() == ["infinity"]
    assert "contains a space or a comma" in result.output
    assert API_KEY_1 not in result.output
    assert not scripts.cache.exists()


async def test_the_wyoming_port_is_refused(scripts, supervisor, addon_config):
    supervisor.addons = {"core_piper": official_piper()}
    result = await run(scripts, supervisor, options(addon_config, openai_api=True, openai_api_port=10300))

    assert result.env is None
    assert scripts.sleeps() == ["infinity"]
    assert "is the Wyoming port" in result.output


async def test_the_status_page_port_is_refused(scripts, supervisor, addon_config):
    supervisor.addons = {"core_piper": official_piper()}
    result = await run(scripts, supervisor, options(addon_config, openai_api=True, openai_api_port=8099))

    assert result.env is None
    assert scripts.sleeps() == ["infinity"]
    assert "is the status page's port" in result.output


def test_every_log_level_of_the_form_is_one_the_api_takes(addon_config):
    """The script passes trace as DEBUG (the API has no TRACE) and the others upper-cased."""
    choices = addon_config["schema"]["log_level"].removeprefix("list(").removesuffix(")").split("|")
    validate = api_config.OPTIONS_BY_NAME["log_level"].validate
    for choice in choices:
        assert validate("DEBUG" if choice == "trace" else choice.upper())
    assert 'trace | debug) export OPENAI_API_LOG_LEVEL="DEBUG"' in API_RUN_SCRIPT.read_text()


async def test_stale_environment_is_dropped(scripts, supervisor, addon_config):
    supervisor.addons = {"core_piper": official_piper()}
    stale = {
        "OPENAI_API_KEYS": "stale",
        "OPENAI_API_CONFIG": "/stale.yaml",
        "OPENAI_API_ZEROCONF": "true",
        "OPENAI_API_CORS_ORIGINS": "*",
        "OPENAI_API_WYOMING_URIS": "tcp://stale:1",
        "OPENAI_API_HOST": "127.0.0.1",
        "OPENAI_API_REFRESH_INTERVAL": "0",
        "OPENAI_API_AN_OPTION_OF_TOMORROW": "x",
    }
    result = await run(scripts, supervisor, options(addon_config, openai_api=True), **stale)

    assert api_env(result.env) == {
        "OPENAI_API_HOST": "0.0.0.0",
        "OPENAI_API_PORT": "8000",
        "OPENAI_API_WYOMING_URIS": "tcp://core-piper:10200",
        "OPENAI_API_LOG_LEVEL": "INFO",
    }


async def test_options_missing_entirely(scripts, supervisor):
    """Options the Supervisor does not send at all (bashio's "null") are not taken as values."""
    supervisor.addons = {"core_piper": official_piper()}
    result = await run(scripts, supervisor, {"openai_api": True})

    assert api_env(result.env) == {
        "OPENAI_API_HOST": "0.0.0.0",
        "OPENAI_API_PORT": "8000",
        "OPENAI_API_WYOMING_URIS": "tcp://core-piper:10200",
        "OPENAI_API_LOG_LEVEL": "INFO",
    }


@pytest.mark.parametrize("log_level", ["debug", "trace"])
@pytest.mark.parametrize("explicit", [False, True])
async def test_keys_never_logged(scripts, supervisor, addon_config, log_level, explicit):
    """At the most verbose levels, with the add-on's own info (which holds its options) fetched,
    neither the API's keys nor the proxy's appear in the output."""
    supervisor.addons = two_wyoming_addons_and_others()
    opts = options(
        addon_config,
        openai_api=True,
        openai_api_keys=[API_KEY_1, API_KEY_2],
        stt_openai_key=PROXY_KEY,
        log_level=log_level,
    )
    if explicit:
        opts["openai_api_wyoming_uris"] = ["tcp://core-piper:10200"]
    # LOG_LEVEL=8 (ALL) makes bashio itself as verbose as it gets.
    result = await run(scripts, supervisor, opts, LOG_LEVEL="8")

    assert result.env["OPENAI_API_KEYS"] == f"{API_KEY_1} {API_KEY_2}"
    assert result.env["OPENAI_API_LOG_LEVEL"] == "DEBUG"
    # The chosen level took effect for the add-on's own messages...
    assert "Wyoming servers: " in result.output and "keys: 2." in result.output
    # ...and no key is anywhere in the output.
    for secret in (API_KEY_1, API_KEY_2, PROXY_KEY):
        assert secret not in result.output


async def test_leak_check_catches_a_careless_script(scripts, supervisor, addon_config, tmp_path):
    """Guard for the test above: without its log-level cap the script does print a key."""
    careless = tmp_path / "careless-run"
    text = API_RUN_SCRIPT.read_text()
    assert 'bashio::log.level "info"\n' in text
    careless.write_text(text.replace('bashio::log.level "info"\n', ":\n", 1))
    scripts.fake_sleep()
    supervisor.addons = {"core_piper": official_piper()}
    supervisor.options = options(addon_config, openai_api=True, openai_api_keys=[API_KEY_1])

    result = await scripts.run(careless, scripts.base_env(supervisor, log_level=8))

    assert API_KEY_1 in result.output


async def test_supervisor_failure_keeps_the_api_off_and_the_container_up(scripts, supervisor, addon_config):
    supervisor.fail_options = True
    result = await run(scripts, supervisor, options(addon_config, openai_api=True))

    assert result.env is None
    assert scripts.sleeps() == ["infinity"]
    assert "cannot read the add-on options" in result.output


# --- the fake Supervisor's access rules ------------------------------------------------------------


async def test_discovery_list_is_for_home_assistant_only(supervisor):
    """Why the run script reads /supervisor/info and /addons/<slug>/info: an add-on's token gets 401
    from GET /discovery (require_home_assistant in the Supervisor), Home Assistant's gets the list."""
    supervisor.addons = two_wyoming_addons_and_others()
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{supervisor.url}/discovery", headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"}
        ) as response:
            assert response.status == 401
        async with session.get(
            f"{supervisor.url}/discovery", headers={"Authorization": f"Bearer {HOMEASSISTANT_TOKEN}"}
        ) as response:
            body = await response.json()
    assert [entry["config"]["uri"] for entry in body["data"]["discovery"]] == [
        "tcp://core-piper:10200",
        "tcp://core-whisper:10300",
    ]


# --- finish: never takes the add-on down --------------------------------------------------------


async def finish(scripts: ScriptRunner, supervisor: FakeSupervisor, *args: str):
    scripts.fake_sleep()
    return await scripts.run(API_FINISH_SCRIPT, scripts.base_env(supervisor), *args)


async def test_finish_after_a_failure_pauses_before_s6_restarts_it(scripts, supervisor):
    result = await finish(scripts, supervisor, "2", "0")
    assert result.returncode == 0, result.output
    assert scripts.sleeps() == ["3"]
    assert "failed with exit code 2" in result.output


@pytest.mark.parametrize(("args", "message"), [(("256", "15"), ""), (("0", "0"), ""), (("256", "9"), "signal 9")])
async def test_finish_otherwise_is_quiet_and_quick(scripts, supervisor, args, message):
    result = await finish(scripts, supervisor, *args)
    assert result.returncode == 0, result.output
    assert scripts.sleeps() == []
    assert (message in result.output) if message else result.output == ""


def test_finish_never_halts_the_container():
    text = API_FINISH_SCRIPT.read_text()
    assert "halt" not in text.split("# ===", 2)[-1]
    assert "exitcode" not in text
