"""Abuse limits applied before any route runs: request body sizes and submissions per key."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict, deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backburner.auth.middleware import send_json_error
from backburner.auth.principal import Principal

UPLOAD_PATH = re.compile(r"^/v1/sources/[^/]+/files$")
BATCHES_PATH = "/v1/batches"
MULTIPART_OVERHEAD_BYTES = 64 * 1024
WINDOW_S = 60.0


class BodyTooLarge(Exception):
    pass


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


class LimitsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: SlidingWindowLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.runtime.settings
        path, method = scope["path"], scope["method"]
        is_upload = method == "POST" and UPLOAD_PATH.match(path) is not None
        is_batch = method == "POST" and path == BATCHES_PATH
        if is_upload or is_batch:
            limiter = self._limiter or SlidingWindowLimiter(settings.submissions_per_minute)
            self._limiter = limiter
            principal: Principal | None = scope.get("state", {}).get("principal")
            key = principal.key_id if principal and principal.key_id else "open"
            wait_s = limiter.retry_after(key, time.monotonic())
            if wait_s > 0:
                await send_json_error(
                    send,
                    429,
                    f"at most {limiter.limit} submissions per minute per key; retry later",
                    {"retry-after": str(max(1, math.ceil(wait_s)))},
                )
                return
        if is_upload:
            limit = settings.file_upload_max_bytes + MULTIPART_OVERHEAD_BYTES
        elif is_batch:
            limit = settings.batch_max_body_bytes
        else:
            limit = settings.api_max_body_bytes
        await self._within(limit, scope, receive, send)

    async def _within(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = f"request body is larger than the limit of {limit} bytes for this route"
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
