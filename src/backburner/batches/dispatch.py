"""Sending a batch, or one part of a split batch, to its provider.

The same steps serve the API (a new submission, in its own transactions) and the leader's poll
cycle (queued parts, in fenced transactions): claim the unit (`queued` -> `submitting`, within
the model's enqueued-token budget), build its body from the stored requests, create it at the
provider, and record what came of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.batches.domain import Batch, BatchStatus, ProviderKind
from backburner.batches.encoding import assemble_segments, join_lines, request_line
from backburner.batches.metrics import BatchMetrics
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderSet
from backburner.batches.statuses import PollPolicy, backoff_s, errors_exhausted, results_expire_at
from backburner.batches.store import (
    BatchStore,
    adopt_provider_batch,
    claim_unit,
    requeue_unit,
)
from backburner.clock import Clock
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.dispatch")

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
# Ends a unit in a transaction and hands a logical batch that ends over (`Ingestor.finish_in`).
Finisher = Callable[[Transaction, str, BatchStatus, str | None, bool], Awaitable[bool]]
# Provider answers that refuse the requests themselves, or us: sending again will not help.
FINAL_REFUSALS = frozenset({400, 401, 403, 404, 413, 422})


class Sent(StrEnum):
    SENT = "sent"  # the provider accepted it: `running`
    WAITING = "waiting"  # it stays `queued` (the token budget, an older queued batch, a retry later)
    UNSENT = "unsent"  # the connection was refused: nothing reached the provider
    REFUSED = "refused"  # the provider answered no
    UNCERTAIN = "uncertain"  # no answer: it may have been created; it stays `submitting`


@dataclass(frozen=True)
class SendResult:
    outcome: Sent
    error: ProviderError | None = None


class Dispatcher:
    def __init__(
        self,
        store: BatchStore,
        providers: ProviderSet,
        clock: Clock,
        policy: PollPolicy,
        finish: Finisher,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self._finish = finish
        self._store = store
        self._providers = providers
        self._clock = clock
        self._policy = policy
        self._metrics = metrics

    async def send(self, unit: Batch, transaction: Transaction) -> SendResult:
        """Claim and send one queued unit; a refusal is returned for the caller to record."""
        config = self._providers.config(unit.provider)
        provider = self._providers.get(unit.provider)
        limit = config.enqueued_token_limits.get(unit.model)
        async with transaction() as conn:
            if not await claim_unit(conn, unit, self._clock.now(), token_limit=limit):
                return SendResult(Sent.WAITING)
        body = await self._body(unit, config.kind)
        log_event(
            log,
            logging.INFO,
            "batch.submitting",
            batch_id=unit.items_batch_id,
            part=unit.part_index,
            provider=unit.provider,
            requests=unit.request_count,
            size_bytes=len(body),
        )
        try:
            snapshot = await provider.create(batch_id=unit.id, body=body)
        except ProviderError as exc:
            if self._metrics is not None:
                self._metrics.provider_errors.labels(exc.provider, exc.label).inc()
            if not exc.sent:
                return SendResult(Sent.UNSENT, exc)
            if not exc.definitive:
                log_event(log, logging.WARNING, "batch.submit_uncertain", batch_id=unit.id, error=str(exc))
                return SendResult(Sent.UNCERTAIN, exc)
            return SendResult(Sent.REFUSED, exc)
        finally:
            del body
        now = self._clock.now()
        async with transaction() as conn:
            if snapshot.token_limit_exceeded:  # OpenAI had no room for it after all: wait for some
                await requeue_unit(
                    conn,
                    unit.id,
                    now,
                    reason=f"{unit.provider} refused it for its enqueued-token limit; sent again later",
                    consecutive_errors=0,
                    next_attempt_at=None,
                )
                log_event(
                    log, logging.INFO, "batch.requeued", batch_id=unit.id, reason="token_limit_exceeded"
                )
                return SendResult(Sent.WAITING)
            adopted = await adopt_provider_batch(
                conn,
                unit.organization_id,
                unit.id,
                snapshot,
                now,
                results_expire_at(config.kind, snapshot.created_at or now),
            )
        if not adopted:
            # Reconciliation settled this unit while the provider was still answering.
            await self._cancel_quietly(unit.provider, snapshot.provider_batch_id)
            error = ProviderError(unit.provider, "the submission took longer than its grace period")
            return SendResult(Sent.REFUSED, error)
        log_event(
            log,
            logging.INFO,
            "batch.submitted",
            batch_id=unit.id,
            provider_batch_id=snapshot.provider_batch_id,
        )
        return SendResult(Sent.SENT)

    async def record_failure(self, unit: Batch, result: SendResult, transaction: Transaction) -> None:
        """A unit the provider refused or could not be reached for: wait and retry, or fail it."""
        exc = result.error
        assert exc is not None
        now = self._clock.now()
        errors = unit.consecutive_errors + 1
        final = exc.status_code in FINAL_REFUSALS or errors_exhausted(errors, self._policy)
        reason = refusal_reason(exc)
        if final:
            await self._finish(transaction, unit.id, BatchStatus.FAILED, reason, False)
        else:
            async with transaction() as conn:
                await requeue_unit(
                    conn,
                    unit.id,
                    now,
                    reason=reason,
                    consecutive_errors=errors,
                    next_attempt_at=now + timedelta(seconds=retry_delay_s(errors, exc, self._policy)),
                )
        log_event(
            log,
            logging.WARNING,
            "batch.submit_refused",
            batch_id=unit.id,
            provider=unit.provider,
            error=str(exc),
            final=final,
        )

    async def _body(self, unit: Batch, kind: ProviderKind) -> bytes:
        """The part's body, built in a thread from pages of its stored requests."""
        segments: list[bytes] = []
        async for page in self._store.part_request_lines(unit):
            segments.append(await asyncio.to_thread(_encode_page, kind, page))
        return await asyncio.to_thread(assemble_segments, kind, segments)

    async def _cancel_quietly(self, provider: str, provider_batch_id: str) -> None:
        try:
            await self._providers.get(provider).cancel(provider_batch_id)
        except (ProviderError, LookupError) as exc:
            log_event(
                log,
                logging.WARNING,
                "batch.orphan_cancel_failed",
                provider_batch_id=provider_batch_id,
                error=str(exc),
            )


def _encode_page(kind: ProviderKind, page: list[tuple[str, str]]) -> bytes:
    return join_lines(kind, (request_line(kind, custom_id, params.encode()) for custom_id, params in page))


def refusal_reason(exc: ProviderError) -> str:
    """A short reason a tenant may read (the provider's own message, never our internals)."""
    if not exc.sent:
        return f"{exc.provider} could not be reached at {exc.base_url or 'its base URL'}; nothing was sent"
    if exc.status_code is None:
        return f"no answer from {exc.provider}: {exc.message}"
    return f"{exc.provider} refused it (HTTP {exc.status_code}): {exc.message}"


def retry_delay_s(errors: int, exc: ProviderError, policy: PollPolicy) -> float:
    delay = max(backoff_s(errors, policy), 0.0)
    if exc.retry_after_s is not None:
        delay = max(delay, exc.retry_after_s)
    return delay
