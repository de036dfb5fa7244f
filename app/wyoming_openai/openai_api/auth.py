"""Optional bearer-key authentication, as OpenAI clients send it: ``Authorization: Bearer KEY``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/health"})  # for container health checks, which hold no key


class KeyChecker:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys if key)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: str) -> bool:
        candidate = presented.encode()
        # Compare with every key, whatever matched: the time taken tells nothing about which one did.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def _unauthorized(message: str, code: str) -> ApiError:
    return ApiError(401, message, code=code)


def middleware(checker: KeyChecker) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not checker.enabled or request.method == "OPTIONS" or request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header:
            raise _unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.", "missing_api_key"
            )
        if scheme.lower() != "bearer" or not presented.strip():
            raise _unauthorized("The Authorization header must be 'Bearer YOUR_KEY'.", "invalid_api_key")
        if not checker.accepts(presented.strip()):
            raise _unauthorized("Incorrect API key provided.", "invalid_api_key")  # never echo the key
        return await handler(request)

    return check_key
