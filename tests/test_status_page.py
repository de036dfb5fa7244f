"""The status page in a real browser: Debian's headless Chromium, driven by selenium through
/usr/bin/chromedriver (nothing is downloaded). The proxy runs in this test's loop, so every browser
call runs in a thread and the loop stays free to answer the page."""

from __future__ import annotations

import asyncio
import functools
import shutil
from pathlib import Path

import pytest
from harness import proxy_port
from test_failover import fallback_env, speech_requests
from test_http import speak, transcribe
from upstream import SECONDS_PER_CHARACTER

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1500",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


async def in_browser(function, *args):
    return await asyncio.to_thread(functools.partial(function, *args))


async def wait_for(driver, script: str, timeout: float = 15.0):
    """Until the page's JavaScript ``script`` returns something true; returns that."""
    from selenium.webdriver.support.ui import WebDriverWait

    return await in_browser(
        WebDriverWait(driver, timeout, poll_frequency=0.05).until, lambda d: d.execute_script(script)
    )


def rows(driver, table: str) -> list[list[str]]:
    """The cells of a table's rows, as shown."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => [...r.cells].map(c => c.textContent))",
        f"#{table} tbody tr",
    )


async def test_the_page_shows_upstreams_requests_and_speaks(start_proxy, upstream, fallback, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    proxy = await start_proxy("--http-port", "0", "--upstream-retries", "0", env=fallback_env(fallback))
    await speak(proxy_port(proxy), "Turn on the kitchen light.")
    await transcribe(proxy_port(proxy), 0.3)

    await in_browser(browser.get, f"http://127.0.0.1:{proxy.http.port}/")
    await wait_for(browser, "return document.body.dataset.loaded === 'true'")

    upstreams = await in_browser(rows, browser, "upstreams")
    assert [row[:5] for row in upstreams] == [
        ["STT", "primary", upstream.url, "OPENAI", "ok"],
        ["STT", "fallback", fallback.url, "KOKORO_FASTAPI", "ok"],
        ["TTS", "primary", upstream.url, "OPENAI", "ok"],
        ["TTS", "fallback", fallback.url, "KOKORO_FASTAPI", "ok"],
    ]
    recent = await in_browser(rows, browser, "recent")  # newest first
    assert [row[1:4] + row[6:] for row in recent] == [
        ["STT", "gpt-4o-mini-transcribe", "primary", "0.3 s audio", "ok"],
        ["TTS", "gpt-4o-mini-tts / alloy", "primary", "26 chars", "ok"],
    ]
    assert await in_browser(browser.execute_script, "return document.querySelectorAll('#plot circle').length") == 2

    # The speak box: type, pick a voice, press Speak; the page plays what the proxy returns.
    text = "Testing the speak box."
    field = await in_browser(browser.find_element, By.ID, "speak-text")
    await in_browser(field.clear)
    await in_browser(field.send_keys, text)
    voices = Select(await in_browser(browser.find_element, By.ID, "speak-voice"))
    await in_browser(voices.select_by_value, "nova")
    await in_browser((await in_browser(browser.find_element, By.CSS_SELECTOR, "#speak button")).click)
    duration = await wait_for(
        browser,
        "const a = document.getElementById('speak-audio'); return a.readyState >= 1 && a.duration > 0 && a.duration",
    )
    assert duration == pytest.approx(len(text) * SECONDS_PER_CHARACTER, abs=0.01)
    assert speech_requests(upstream)[-1].json["voice"] == "nova"
    assert speech_requests(upstream)[-1].json["input"] == text
    await wait_for(browser, "return document.getElementById('speak-status').textContent.startsWith('Playing')")
    await wait_for(browser, "return document.querySelectorAll('#recent tbody tr').length === 3")

    # The primary goes down: the fallback speaks, and the page says the primary is skipped.
    upstream.unavailable = True
    for _ in range(4):  # three failures in a row, then the primary is skipped
        await speak(proxy_port(proxy), "Is anyone there?")
    await in_browser(browser.refresh)
    await wait_for(browser, "return document.querySelectorAll('#recent tbody tr').length === 7")
    upstreams = await in_browser(rows, browser, "upstreams")
    assert upstreams[2][4].startswith("skipped until ") and "503" in upstreams[2][5]
    assert (await in_browser(rows, browser, "recent"))[0][2:4] == ["kokoro / af_heart", "fallback (primary: skipped)"]

    screenshot = tmp_path / "status-page.png"
    await in_browser(browser.save_screenshot, str(screenshot))
    print(f"screenshot of the status page: {screenshot}")
    assert screenshot.stat().st_size > 10_000
