"""Errors as OpenAI's clients expect them: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a request can meet becomes one ApiError; the app's middleware renders it. Messages are
written for the person using the API and never carry keys or tracebacks.
"""

from __future__ import annotations

import json

from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body()),
            content_type="application/json",
            headers=headers,
        )


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "model_not_found") -> ApiError:
    return ApiError(404, message, param=param, code=code)


class WyomingUnavailable(ApiError):
    """No Wyoming server could be reached for the request: worth retrying later."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, type="server_error", code="wyoming_unavailable")


class WyomingTimeout(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(504, message, type="server_error", code="wyoming_timeout")


class WyomingFailed(ApiError):
    """The Wyoming server answered, but with an error or something that is not the protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message, type="server_error", code="wyoming_error")
