"""JSON bodies are checked strictly before any route reads them.

Python's `json` accepts lone UTF-16 surrogates (`"\\ud800"`), `NaN` and numbers that overflow
to infinity, none of which a database or a client can take back; orjson refuses all three, and
nesting deeper than 1,024 levels. A body it refuses answers 400, a NUL character in any string
422 (no stored text may hold one), and nothing reaches the route. Batch submissions, which may
be hundreds of megabytes, are decoded and checked by their own route instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backburner.api.errors import error_body, send_error

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# `\u0000` as an escape, not preceded by an odd number of backslashes (that would be a literal `\`).
_NUL_ESCAPE = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")


def is_json(content_type: str | None) -> bool:
    """FastAPI reads a body as JSON when it says so, or says nothing."""
    if not content_type:
        return True
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def problem(body: bytes) -> tuple[int, bytes] | None:
    """The status and error body for a JSON body that must not reach a route, or None."""
    if not body.strip():
        return None  # no body: the route's own validation says what is missing
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return 400, error_body(f"the body is not valid JSON: {exc}")
    if _NUL_ESCAPE.search(body):
        error = {"type": "value_error", "loc": ["body"], "msg": "a NUL character is not allowed in the body"}
        return 422, error_body([error])
    return None


class JsonBodyMiddleware:
    def __init__(self, app: ASGIApp, *, skip: Callable[[str, str], bool]) -> None:
        self.app = app
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or self.skip(scope["method"], scope["path"])
            or not is_json(Headers(scope=scope).get("content-type"))
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the body is already capped by the limits middleware outside this one
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refused = problem(body)
        if refused is not None:
            await send_error(send, *refused)
            return
        await self.app(scope, _replay([body], None, receive), send)


def _replay(bodies: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    messages: list[Message] = [{"type": "http.request", "body": b, "more_body": False} for b in bodies]
    if pending is not None:
        messages.append(pending)

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay
