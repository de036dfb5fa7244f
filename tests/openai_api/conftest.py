"""Fixtures: tone-speaking Wyoming servers, and the OpenAI-compatible API in front of them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).parent))

from tone_wyoming import ToneServer  # noqa: E402

from wyoming_openai.openai_api import ApiSettings, create_app  # noqa: E402
from wyoming_openai.openai_api.app import POOL  # noqa: E402
from wyoming_openai.openai_api.wyoming_pool import WyomingPool  # noqa: E402

API_KEY = "sk-test-7d41c0a9"


@dataclass
class Api:
    url: str  # base URL, ending in /v1
    client: AsyncOpenAI
    app: web.Application

    @property
    def pool(self) -> WyomingPool:
        return self.app[POOL]


@pytest.fixture
async def tone_server() -> AsyncIterator[ToneServer]:
    server = await ToneServer(streaming=True).start()
    try:
        yield server
    finally:
        await server.stop()


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api() -> AsyncIterator[StartApi]:
    """start_api(uris, pool=None, **settings) -> the API on a free loopback port, with an SDK client holding API_KEY."""
    servers: list[TestServer] = []
    clients: list[AsyncOpenAI] = []

    async def start(uris: list[str], pool: WyomingPool | None = None, **overrides: object) -> Api:
        settings = replace(
            ApiSettings(wyoming_uris=tuple(uris), connect_timeout=1.0, read_timeout=2.0, refresh_interval=0),
            **overrides,
        )
        app = create_app(settings, pool)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        url = str(server.make_url("/v1"))
        # No retries: a test must see the first answer, and a 503 must not be retried into a slow test.
        client = AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=10)
        clients.append(client)
        return Api(url, client, app)

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await server.close()


@pytest.fixture
async def api(start_api: StartApi, tone_server: ToneServer) -> Api:
    return await start_api([tone_server.uri])
