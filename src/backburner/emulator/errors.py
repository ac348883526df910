"""Errors in each provider's own shape, so the SDKs raise their usual exception types."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from backburner.emulator.records import Provider

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "requests",
    500: "server_error",
    529: "server_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


class ProviderError(Exception):
    """An error answer from a provider route, rendered in that provider's shape."""

    def __init__(
        self,
        provider: Provider,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.provider: Provider = provider
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def render_error(error: ProviderError) -> JSONResponse:
    request_id = "req_" + secrets.token_hex(12)
    headers = dict(error.headers)
    body: dict[str, object]
    if error.provider == "anthropic":
        body = {
            "type": "error",
            "error": {"type": _ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
            "request_id": request_id,
        }
        headers["request-id"] = request_id
    else:
        body = {
            "error": {
                "message": error.message,
                "type": _OPENAI_TYPES.get(error.status, "server_error"),
                "param": error.param,
                "code": error.code if error.code is not None else _OPENAI_CODES.get(error.status),
            }
        }
        headers["x-request-id"] = request_id
    return JSONResponse(body, status_code=error.status, headers=headers)


def provider_for_path(path: str) -> Provider | None:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def on_provider_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProviderError)
        return render_error(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        provider = provider_for_path(request.url.path)
        if provider is None:
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(_describe(error) for error in exc.errors())
        return render_error(ProviderError(provider, 400, problems))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        provider = provider_for_path(request.url.path)
        if provider is None:
            return await http_exception_handler(request, exc)
        return render_error(ProviderError(provider, exc.status_code, str(exc.detail)))

    app.add_exception_handler(ProviderError, on_provider_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _describe(error: Mapping[str, object]) -> str:
    location = error.get("loc", ())
    where = ".".join(str(part) for part in location) if isinstance(location, list | tuple) else ""
    return f"{where}: {error.get('msg', 'invalid')}"
