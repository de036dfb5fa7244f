"""CORS for browser clients (off unless origins are configured)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ALLOWED_HEADERS = "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, X-Stainless-Lang"
_MAX_AGE = "600"


def middleware(origins: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def allow(origin: str | None) -> bool:
        return bool(origin) and (any_origin or origin in allowed)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allow(origin):
                return web.Response(status=403, text="CORS origin not allowed\n")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin or "",
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers", _ALLOWED_HEADERS
                    ),
                    "Access-Control-Max-Age": _MAX_AGE,
                    "Vary": "Origin",
                },
            )
        if allow(origin):
            # Headers are added in on_prepare: streamed responses send theirs before the handler returns.
            request["cors_origin"] = origin
        return await handler(request)

    return cors


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's on_response_prepare hook: every response, errors and streams included."""
    origin = request.get("cors_origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
