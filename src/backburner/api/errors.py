"""Every error the API gives is JSON: no input gets a 500, and none shows a traceback.

- A 422 echoes the offending input made safe: any text (lone surrogates included) becomes
  printable, and long inputs are cut, so the handler itself can never fail on what it echoes.
- While the database cannot be reached, any route that needs it answers 503 with `retry-after`.
- Anything else that escapes a route is logged with its traceback (`api.unhandled_error`) and
  answered with a JSON 500 that names the error id to look up in the log, nothing more.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backburner.db.errors import is_unavailable
from backburner.logs import describe_error, log_event

log = logging.getLogger("backburner.api")

DATABASE_RETRY_AFTER_S = 5
MAX_ECHO_CHARS = 200
MAX_ECHO_ITEMS = 20


def safe_text(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` as valid, printable Unicode: lone surrogates and NUL become escapes; cut at `limit`."""
    cut = text[:limit]
    cleaned = cut.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return cleaned + ("…" if len(text) > limit else "")


def json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of `value` that any JSON encoder accepts."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes):
        return safe_text(value.decode("utf-8", "backslashreplace"))
    if depth >= 4:
        return safe_text(repr(value))
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_ECHO_ITEMS]
        return {safe_text(str(k)): json_safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in list(value)[:MAX_ECHO_ITEMS]]
    return safe_text(str(value))


def error_body(detail: Any, **extra: Any) -> bytes:
    return json.dumps({"detail": json_safe(detail), **json_safe(extra)}).encode()


async def send_error(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: json_safe(value) for key, value in error.items() if key != "url"} for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)


class ErrorsMiddleware:
    """Outermost of our middlewares: turns what escapes everything inside it into JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            path = safe_text(scope.get("path", ""))
            if is_unavailable(exc):
                log_event(
                    log, logging.WARNING, "api.database_unavailable", path=path, error=describe_error(exc)
                )
                status, headers = 503, {"retry-after": str(DATABASE_RETRY_AFTER_S)}
                body = error_body("the database is unreachable right now; retry shortly")
            else:
                error_id = uuid.uuid4().hex[:12]
                log.exception(
                    "api.unhandled_error",
                    extra={"event": "api.unhandled_error", "error_id": error_id, "path": path},
                )
                status, headers = 500, {}
                body = error_body(f"internal error {error_id}; the server log has the detail")
            if not started:
                await send_error(send, status, body, headers)
