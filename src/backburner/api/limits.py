"""Limits applied before any route runs: body sizes, submissions and searches per key, searches
at once, page sizes, and no NUL character in a path or a query (no id or name holds one, and
PostgreSQL refuses it)."""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict, deque
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backburner.api.paging import LIMIT_PARAMETER, limit_too_large
from backburner.auth.middleware import send_json_error
from backburner.auth.principal import OPEN_PRINCIPAL, Principal
from backburner.fair_slots import FairSlots
from backburner.settings import Settings
from backburner.sizes import too_large_message

UPLOAD_PATH = re.compile(r"^/v1/sources/[^/]+/files$")
RETRY_PATH = re.compile(r"^/v1/files/[^/]+/retry$")
SEARCH_PATH = re.compile(r"^/v1/sources/[^/]+/search$")
# A search that finds every slot taken waits this long for one, then answers 503.
SEARCH_SLOT_WAIT_S = 10.0
BATCHES_PATH = "/v1/batches"
MULTIPART_OVERHEAD_BYTES = 64 * 1024
WINDOW_S = 60.0


class BodyTooLarge(Exception):
    pass


def is_upload(method: str, path: str) -> bool:
    return method == "POST" and UPLOAD_PATH.match(path) is not None


def is_batch_submission(method: str, path: str) -> bool:
    return method == "POST" and path == BATCHES_PATH


def is_submission(method: str, path: str) -> bool:
    """A batch submission, an upload or a retry (a new upload of a failed file): these count
    against the per-key limit."""
    return (
        is_upload(method, path)
        or is_batch_submission(method, path)
        or (method == "POST" and RETRY_PATH.match(path) is not None)
    )


def is_search(method: str, path: str) -> bool:
    return method == "GET" and SEARCH_PATH.match(path) is not None


class SlidingWindowLimiter:
    """At most `limit` events per key in any 60-second window (per process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def retry_after(self, key: str, now: float) -> float:
        """0 when the event is allowed (and recorded); otherwise seconds until it would be."""
        events = self._events[key]
        while events and events[0] <= now - WINDOW_S:
            events.popleft()
        if len(events) >= self.limit:
            return events[0] + WINDOW_S - now
        events.append(now)
        return 0.0


def _principal(scope: Scope) -> Principal:
    """The caller, as the auth middleware found it (anyone, as `deps` reads it, without one)."""
    principal: Principal = scope.get("state", {}).get("principal", OPEN_PRINCIPAL)
    return principal


def _query(scope: Scope) -> list[tuple[str, str]]:
    query: str = scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(query, keep_blank_values=True)


def _nul_location(scope: Scope) -> list[str] | None:
    """Where a NUL character is, if any: a route would pass it to the database, which refuses it."""
    if "\x00" in scope["path"]:
        return ["path"]
    for name, value in _query(scope):
        if "\x00" in name or "\x00" in value:
            return ["query", name.replace("\x00", "")]
    return None


def _page_too_large(scope: Scope, max_page_size: int) -> str | None:
    """A `limit` above `api_max_page_size`, checked here too so that no listing can forget it."""
    for name, value in _query(scope):
        if name != LIMIT_PARAMETER or not (value.isascii() and value.isdigit()):
            continue  # not a number: the route's own validation answers
        digits = value.lstrip("0") or "0"  # compared by length first: int() of a huge string is slow
        if len(digits) > len(str(max_page_size)) or int(digits) > max_page_size:
            return value
    return None


async def _send_validation_error(send: Send, error: dict[str, Any]) -> None:
    """A 422 in the shape FastAPI gives an invalid parameter (the one the schema documents)."""
    body = json.dumps({"detail": [error]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 422, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(
        self, app: ASGIApp, *, settings: Settings, search_slot_wait_s: float = SEARCH_SLOT_WAIT_S
    ) -> None:
        self.app = app
        self.settings = settings
        self._search_slot_wait_s = search_slot_wait_s
        self._limiter = SlidingWindowLimiter(settings.submissions_per_minute)
        self._search_limiter = SlidingWindowLimiter(settings.searches_per_minute)
        self._search_slots = FairSlots(settings.search_max_concurrent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        path, method = scope["path"], scope["method"]
        nul_at = _nul_location(scope)
        if nul_at is not None:
            error = {"type": "value_error", "loc": nul_at, "msg": "a NUL character is not allowed here"}
            await _send_validation_error(send, error)
            return
        max_page_size = settings.api_max_page_size
        too_large = _page_too_large(scope, max_page_size)
        if too_large is not None:
            [error] = limit_too_large(too_large, max_page_size).errors()
            await _send_validation_error(send, {**error, "loc": list(error["loc"])})
            return
        upload = is_upload(method, path)
        if is_submission(method, path) and not await self._allowed(self._limiter, "submissions", scope, send):
            return
        if is_search(method, path):
            if not await self._allowed(self._search_limiter, "searches", scope, send):
                return
            await self._search(scope, receive, send)
            return
        if upload:
            # The multipart framing around the file is allowed for on top of the file's limit.
            limit = settings.file_upload_max_bytes + MULTIPART_OVERHEAD_BYTES
            too_large = too_large_message("the file", "file_upload_max_bytes", settings.file_upload_max_bytes)
        elif is_batch_submission(method, path):
            limit = settings.effective_batch_max_body_bytes
            too_large = too_large_message("the batch body", "batch_max_body_bytes", limit)
        else:
            limit = settings.api_max_body_bytes
            too_large = too_large_message("the body", "api_max_body_bytes", settings.api_max_body_bytes)
        await self._within(limit, too_large, scope, receive, send)

    async def _allowed(self, limiter: SlidingWindowLimiter, what: str, scope: Scope, send: Send) -> bool:
        """Whether the caller's key is within `limiter`; if not, it is answered 429."""
        key = _principal(scope).key_id or "open"
        wait_s = limiter.retry_after(key, time.monotonic())
        if wait_s <= 0:
            return True
        await send_json_error(
            send,
            429,
            f"at most {limiter.limit} {what} per minute per key; retry later",
            {"retry-after": str(max(1, math.ceil(wait_s)))},
        )
        return False

    async def _search(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A search within the instance's bound on searches at once (`search_max_concurrent`),
        of which one organization holds at most all but one."""
        organization_id = _principal(scope).organization_id
        if not await self._search_slots.acquire(organization_id, self._search_slot_wait_s):
            await send_json_error(
                send,
                503,
                f"no search slot of this instance came free in {self._search_slot_wait_s:g} s "
                "(search_max_concurrent; one organization may hold all but one); retry shortly",
                {"retry-after": "1"},
            )
            return
        try:
            too_large = too_large_message("the body", "api_max_body_bytes", self.settings.api_max_body_bytes)
            await self._within(self.settings.api_max_body_bytes, too_large, scope, receive, send)
        finally:
            self._search_slots.release(organization_id)

    async def _within(self, limit: int, too_large: str, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_json_error(send, 413, too_large)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json_error(send, 413, too_large)
