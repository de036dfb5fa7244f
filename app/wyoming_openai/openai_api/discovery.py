"""Wyoming servers announced on the local network (mDNS ``_wyoming._tcp.local.``) join the pool.

Needs the optional ``zeroconf`` package (``pip install wyoming-openai[zeroconf]``). Servers found
here are dropped again when their announcement goes away; servers from the URI list never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .wyoming_pool import WyomingPool

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
RESOLVE_TIMEOUT_MS = 3000


def service_uri(info: AsyncServiceInfo) -> str | None:
    """tcp://ADDRESS:PORT for a resolved service, IPv4 first (what Wyoming servers listen on)."""
    if not info.port:
        return None
    addresses = info.parsed_scoped_addresses(IPVersion.V4Only) or info.parsed_scoped_addresses(IPVersion.V6Only)
    if not addresses:
        return None
    address = addresses[0]
    host = f"[{address}]" if isinstance(ipaddress.ip_address(address.split("%")[0]), ipaddress.IPv6Address) else address
    return f"tcp://{host}:{info.port}"


class ZeroconfDiscovery:
    def __init__(self, pool: WyomingPool, aiozc: AsyncZeroconf | None = None) -> None:
        self.pool = pool
        self._own_zc = aiozc is None
        self._aiozc = aiozc
        self._browser: AsyncServiceBrowser | None = None
        self._uris: dict[str, str] = {}  # service name -> uri
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self._aiozc is None:
            self._aiozc = AsyncZeroconf()
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        _LOGGER.info("Looking for Wyoming servers on the local network (%s)", SERVICE_TYPE)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._own_zc and self._aiozc is not None:
            await self._aiozc.async_close()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # Called on the event loop by zeroconf; the work is async, so it runs as a task.
        if state_change is ServiceStateChange.Removed:
            self._spawn(self.removed(name))
        else:
            self._spawn(self._resolve(zeroconf, service_type, name))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            _LOGGER.debug("Wyoming service %s did not resolve", name)
            return
        uri = service_uri(info)
        if uri is not None:
            await self.added(name, uri)

    async def added(self, name: str, uri: str) -> None:
        previous = self._uris.get(name)
        if previous == uri:
            return
        if previous is not None:
            self.pool.remove(previous)
        self._uris[name] = uri
        if self.pool.add(uri, source="zeroconf"):
            _LOGGER.info("Found Wyoming server %s at %s", name.removesuffix("." + SERVICE_TYPE), uri)
            with contextlib.suppress(Exception):  # an unreachable server is logged by the pool
                await self.pool.refresh()

    async def removed(self, name: str) -> None:
        uri = self._uris.pop(name, None)
        if uri is not None:
            _LOGGER.info("Wyoming server %s at %s is gone", name.removesuffix("." + SERVICE_TYPE), uri)
            self.pool.remove(uri)
