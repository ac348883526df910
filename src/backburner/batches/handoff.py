"""Completion handoff: every batch that ends is handed to the application at least once.

The poller queues one delivery row per configured channel in the same transaction that makes a
batch terminal, so no ended batch can be forgotten. A delivery is retried with backoff until it
succeeds or `batch_completion_max_attempts` is reached (then it stays recorded as `failed`). A
process may die after the application accepted a delivery and before it was recorded, so the
same completion can arrive twice: its `idempotency_key` makes repeating it safe.

Channels: a Python callable (`batch_completion_handler = "module:function"`, sync or async) and a
webhook (JSON POST signed with HMAC-SHA256: header `Backburner-Signature: t=<unix>,v1=<hex>` over
`"<unix>." + body`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import httpx

from backburner.batches.domain import Batch
from backburner.batches.statuses import delivery_backoff_s
from backburner.batches.store import BatchStore, Delivery, mark_delivered, mark_delivery_attempt_failed
from backburner.clock import Clock
from backburner.leader.base import Leadership
from backburner.logs import log_event
from backburner.outbound import SIGNATURE_HEADER, HandlerNotFound, call_handler, resolve_handler, sign
from backburner.scheduler.jobs import JobContext
from backburner.settings import Settings

log = logging.getLogger("backburner.batches.handoff")

__all__ = [
    "SIGNATURE_HEADER",
    "BatchCompletion",
    "CompletionHandoff",
    "HandlerNotFound",
    "resolve_handler",
    "sign",
]

DELIVERIES_PER_RUN = 100
HANDLER_CHANNEL = "handler"
WEBHOOK_CHANNEL = "webhook"


@dataclass(frozen=True)
class BatchCompletion:
    """What the application receives; `idempotency_key` is the same on every repeat."""

    idempotency_key: str
    batch_id: str
    organization_id: str
    provider: str
    provider_batch_id: str | None
    model: str
    status: str
    request_count: int
    counts: dict[str, int]
    failure_reason: str | None
    ended_at: str | None

    @classmethod
    def of(cls, batch: Batch, idempotency_key: str) -> BatchCompletion:
        return cls(
            idempotency_key=idempotency_key,
            batch_id=batch.id,
            organization_id=batch.organization_id,
            provider=batch.provider,
            provider_batch_id=batch.provider_batch_id,
            model=batch.model,
            status=batch.status.value,
            request_count=batch.request_count,
            counts={
                "succeeded": batch.succeeded_count,
                "errored": batch.errored_count,
                "canceled": batch.canceled_count,
                "expired": batch.expired_count,
                "missing": batch.missing_count,
            },
            failure_reason=batch.failure_reason,
            ended_at=batch.ended_at.isoformat() if batch.ended_at else None,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CompletionHandoff:
    def __init__(self, store: BatchStore, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._max_attempts = settings.batch_completion_max_attempts
        self._timeout_s = settings.provider_timeout_seconds
        self._handler = (
            resolve_handler(settings.batch_completion_handler) if settings.batch_completion_handler else None
        )
        self._webhook_url = (
            str(settings.batch_completion_webhook_url) if settings.batch_completion_webhook_url else None
        )
        secret = settings.batch_completion_webhook_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()  # one delivery pass at a time: the poll job and the delivery job share it
        if self._webhook_url and not self._secret:
            log_event(
                log,
                logging.WARNING,
                "batch.webhook_unsigned",
                detail="batch_completion_webhook_secret is not set: webhook requests are not signed",
            )

    def channels(self) -> tuple[str, ...]:
        """The channels a batch ending now is queued for."""
        return tuple(
            name
            for name, on in (
                (HANDLER_CHANNEL, self._handler is not None),
                (WEBHOOK_CHANNEL, self._webhook_url),
            )
            if on
        )

    async def run(self, ctx: JobContext) -> None:
        await self.deliver_due(ctx.leadership)

    async def deliver_due(self, leadership: Leadership) -> int:
        """Attempt every delivery that is due; returns how many were delivered."""
        async with self._lock:
            delivered = 0
            for delivery in await self._store.due_deliveries(now=self._clock.now(), limit=DELIVERIES_PER_RUN):
                delivered += await self._attempt(delivery, leadership)
            return delivered

    async def _attempt(self, delivery: Delivery, leadership: Leadership) -> int:
        attempts = delivery.attempts + 1
        try:
            batch = await self._store.get(delivery.organization_id, delivery.batch_id)
            if batch is None:
                raise LookupError(f"batch {delivery.batch_id} no longer exists")
            completion = BatchCompletion.of(batch, delivery.idempotency_key)
            if delivery.channel == HANDLER_CHANNEL:
                await self._call_handler(completion)
            elif delivery.channel == WEBHOOK_CHANNEL:
                await self._post_webhook(completion)
            else:
                raise ValueError(f"unknown delivery channel {delivery.channel!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._record_failure(delivery, attempts, exc, leadership)
            return 0
        now = self._clock.now()
        async with leadership.fenced() as conn:
            await mark_delivered(conn, delivery.id, attempts, now)
        log_event(
            log,
            logging.INFO,
            "batch.delivered",
            batch_id=delivery.batch_id,
            channel=delivery.channel,
            attempts=attempts,
        )
        return 1

    async def _record_failure(
        self, delivery: Delivery, attempts: int, exc: Exception, leadership: Leadership
    ) -> None:
        now = self._clock.now()
        give_up = attempts >= self._max_attempts
        error = f"{type(exc).__name__}: {exc}"[:1000]
        next_at = now + timedelta(seconds=delivery_backoff_s(attempts))
        async with leadership.fenced() as conn:
            await mark_delivery_attempt_failed(
                conn, delivery.id, attempts, error, next_at, now, give_up=give_up
            )
        log_event(
            log,
            logging.ERROR if give_up else logging.WARNING,
            "batch.delivery_abandoned" if give_up else "batch.delivery_failed",
            batch_id=delivery.batch_id,
            channel=delivery.channel,
            attempts=attempts,
            error=error,
            next_attempt_at=None if give_up else next_at.isoformat(),
        )

    async def _call_handler(self, completion: BatchCompletion) -> None:
        assert self._handler is not None
        await call_handler(self._handler, completion, self._timeout_s)

    async def _post_webhook(self, completion: BatchCompletion) -> None:
        assert self._webhook_url is not None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        body = json.dumps(completion.to_json(), sort_keys=True, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "idempotency-key": completion.idempotency_key}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, int(self._clock.now().timestamp()), body)
        response = await self._http.post(self._webhook_url, content=body, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"webhook answered HTTP {response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
