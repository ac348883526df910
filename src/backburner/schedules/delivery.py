"""One delivery attempt of a fire: a signed webhook POST of the payload, or a handler call.

A webhook request carries the payload as its body, an `Idempotency-Key` made of the schedule id
and the fire time (the same on every repeat), the `Backburner-Signature` made with the
schedule's own secret, and the schedule, fire time, attempt and trigger in headers. Redirects
are not followed, and the target is checked against the allow-list again before each attempt,
so that an operator's change to it takes effect at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from backburner import __version__
from backburner.clock import Clock
from backburner.logs import describe_error
from backburner.outbound import SIGNATURE_HEADER, Handler, call_handler, sign
from backburner.schedules.allowlist import is_allowed
from backburner.schedules.store import Delivery

ERROR_MAX_CHARS = 1000
RESPONSE_SNIPPET_BYTES = 64 * 1024


def fire_time_text(fire_time: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as in keys and headers."""
    return fire_time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def idempotency_key(schedule_id: str, fire_time: datetime) -> str:
    return f"{schedule_id}:{fire_time_text(fire_time)}"


@dataclass(frozen=True)
class ScheduledFire:
    """What a handler receives; `idempotency_key` is the same on every repeat of the fire."""

    idempotency_key: str
    schedule_id: str
    schedule_name: str
    organization_id: str
    fire_time: str
    trigger: str
    attempt: int
    payload: Any

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    started_at: datetime
    duration_s: float
    http_status: int | None = None
    error: str | None = None
    retryable: bool = True


class Deliverer:
    def __init__(
        self,
        *,
        allowed_urls: list[str],
        handlers: dict[str, Handler],
        timeout_s: float,
        concurrency: int,
        clock: Clock,
    ) -> None:
        self._allowed_urls = allowed_urls
        self._handlers = handlers
        self._timeout_s = timeout_s
        self._clock = clock
        self._concurrency = concurrency
        self._http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        """Build the HTTP client in a thread: loading its TLS certificates takes a few hundred
        milliseconds that must not stall the loop."""
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        self._http = await asyncio.to_thread(
            httpx.AsyncClient, timeout=self._timeout_s, limits=limits, follow_redirects=False
        )

    async def attempt(self, delivery: Delivery) -> AttemptResult:
        """Make one attempt; every failure is returned, never raised (cancellation excepted)."""
        started_at = self._clock.now()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                if delivery.action == "webhook":
                    status, error, retryable = await self._post(delivery)
                else:
                    status, error, retryable = await self._call(delivery)
        except TimeoutError:
            status, error, retryable = None, f"no answer within {self._timeout_s:g} s", True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, error, retryable = None, describe_error(exc), True
        return AttemptResult(
            ok=error is None,
            started_at=started_at,
            duration_s=time.monotonic() - started,
            http_status=status,
            error=error[:ERROR_MAX_CHARS] if error else None,
            retryable=retryable,
        )

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None, bool]:
        url = delivery.webhook_url
        if url is None or not is_allowed(url, self._allowed_urls):
            return None, "the target is not allowed by schedule_webhook_allowed_urls", False
        if self._http is None:
            raise RuntimeError("the deliverer is not open")
        body = delivery.payload.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": f"backburner/{__version__}",
            "idempotency-key": idempotency_key(delivery.schedule_id, delivery.fire_time),
            SIGNATURE_HEADER: sign(delivery.signing_secret, int(self._clock.now().timestamp()), body),
            "backburner-schedule-id": delivery.schedule_id,
            "backburner-fire-time": fire_time_text(delivery.fire_time),
            "backburner-attempt": str(delivery.attempt),
            "backburner-trigger": delivery.trigger,
        }
        async with self._http.stream("POST", url, content=body, headers=headers) as response:
            snippet = b""
            async for chunk in response.aiter_raw():
                snippet += chunk
                if len(snippet) >= RESPONSE_SNIPPET_BYTES:
                    break  # a receiver's long answer is not read whole
        if response.is_success:
            return response.status_code, None, True
        text = snippet[:200].decode(errors="replace")
        return response.status_code, f"the webhook answered HTTP {response.status_code}: {text}", True

    async def _call(self, delivery: Delivery) -> tuple[int | None, str | None, bool]:
        handler = self._handlers.get(delivery.handler or "")
        if handler is None:
            return None, f"handler {delivery.handler!r} is not in schedule_handlers", False
        fire = ScheduledFire(
            idempotency_key=idempotency_key(delivery.schedule_id, delivery.fire_time),
            schedule_id=delivery.schedule_id,
            schedule_name=delivery.schedule_name,
            organization_id=delivery.organization_id,
            fire_time=fire_time_text(delivery.fire_time),
            trigger=delivery.trigger,
            attempt=delivery.attempt,
            payload=json.loads(delivery.payload),
        )
        await call_handler(handler, fire, self._timeout_s)
        return None, None, True

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
