"""Submit, cancel, read: what the API and the CLI do with batches.

A submission writes our record (`submitting`, with its idempotency key and every request) before
the provider is called, and completes it after. If the provider answers no, the record is failed
with the reason; if no answer comes (timeout, dropped connection, a crash), the record stays
`submitting` and the poller reconciles it (see `reconcile`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from backburner.batches.domain import TERMINAL_STATUSES, Batch, BatchStatus
from backburner.batches.metrics import BatchMetrics
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderSet
from backburner.batches.store import BatchStore, ItemRow
from backburner.batches.validation import Submission
from backburner.clock import Clock
from backburner.ids import new_id
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.service")

RESULTS_PAGE_SIZE = 1000


class BatchNotFound(LookupError):
    pass


class BatchConflict(Exception):
    """The request does not fit the batch's status (cancel a finished batch, for instance)."""


class SubmitFailed(Exception):
    """The provider refused the batch; our record is `failed` with the reason."""

    def __init__(self, batch: Batch, error: ProviderError) -> None:
        super().__init__(f"{error}")
        self.batch = batch
        self.error = error


class SubmitUncertain(Exception):
    """No answer from the provider: the record stays `submitting` until the poller reconciles it."""

    def __init__(self, batch: Batch, error: ProviderError) -> None:
        super().__init__(f"{error}")
        self.batch = batch
        self.error = error


@dataclass(frozen=True)
class SubmitOutcome:
    batch: Batch
    created: bool  # False when the idempotency key named an earlier submission


class BatchService:
    def __init__(
        self, store: BatchStore, providers: ProviderSet, clock: Clock, metrics: BatchMetrics | None = None
    ) -> None:
        self._store = store
        self._providers = providers
        self._clock = clock
        self._metrics = metrics

    def _count_error(self, exc: ProviderError) -> None:
        if self._metrics is not None:
            self._metrics.provider_errors.labels(exc.provider, exc.label).inc()

    async def submit(
        self, organization_id: str, submission: Submission, idempotency_key: str | None = None
    ) -> SubmitOutcome:
        if idempotency_key is not None:
            earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
            if earlier is not None:
                return SubmitOutcome(earlier, created=False)
        provider = self._providers.get(submission.provider)  # unconfigured: refused before any write
        batch_id = new_id("batch")
        batch = await self._store.create_submission(
            batch_id=batch_id,
            organization_id=organization_id,
            provider=submission.provider,
            model=submission.model,
            idempotency_key=idempotency_key or new_id("idem"),
            requests=submission.requests,
            now=self._clock.now(),
        )
        if batch is None:  # the same key was submitted concurrently: answer with that batch
            assert idempotency_key is not None
            earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
            assert earlier is not None
            return SubmitOutcome(earlier, created=False)
        log_event(
            log,
            logging.INFO,
            "batch.submitting",
            batch_id=batch_id,
            provider=submission.provider,
            requests=len(submission.requests),
            size_bytes=submission.size_bytes,
        )
        try:
            snapshot = await provider.create(
                batch_id=batch_id, model=submission.model, requests=submission.requests
            )
        except ProviderError as exc:
            self._count_error(exc)
            if not exc.definitive:
                log_event(log, logging.WARNING, "batch.submit_uncertain", batch_id=batch_id, error=str(exc))
                raise SubmitUncertain(batch, exc) from exc
            await self._store.mark_submit_failed(
                organization_id, batch_id, f"the provider refused the batch: {exc}", self._clock.now()
            )
            log_event(log, logging.WARNING, "batch.submit_refused", batch_id=batch_id, error=str(exc))
            raise SubmitFailed(await self._require(organization_id, batch_id), exc) from exc
        if not await self._store.mark_submitted(organization_id, batch_id, snapshot, self._clock.now()):
            # Reconciliation gave up on this record while the provider was still answering.
            await self._cancel_quietly(submission.provider, snapshot.provider_batch_id)
            error = ProviderError(submission.provider, "the submission took longer than its grace period")
            raise SubmitFailed(await self._require(organization_id, batch_id), error)
        log_event(
            log,
            logging.INFO,
            "batch.submitted",
            batch_id=batch_id,
            provider_batch_id=snapshot.provider_batch_id,
        )
        return SubmitOutcome(await self._require(organization_id, batch_id), created=True)

    async def cancel(self, organization_id: str, batch_id: str) -> Batch:
        """Ask the provider to cancel; the poller records the end (with partial results)."""
        batch = await self._require(organization_id, batch_id)
        if batch.status in TERMINAL_STATUSES or batch.status is BatchStatus.INGESTING:
            raise BatchConflict(f"batch {batch_id} has already ended ({batch.status.value})")
        if batch.status is BatchStatus.SUBMITTING or batch.provider_batch_id is None:
            raise BatchConflict(f"batch {batch_id} is still being submitted; cancel it once it is running")
        try:
            snapshot = await self._providers.get(batch.provider).cancel(batch.provider_batch_id)
        except ProviderError as exc:
            self._count_error(exc)
            raise
        await self._store.mark_cancel_requested(organization_id, batch_id, snapshot.status, self._clock.now())
        log_event(
            log, logging.INFO, "batch.cancel_requested", batch_id=batch_id, provider_status=snapshot.status
        )
        return await self._require(organization_id, batch_id)

    async def get(self, organization_id: str, batch_id: str) -> Batch:
        return await self._require(organization_id, batch_id)

    async def list(
        self, organization_id: str, *, limit: int, before_id: str | None = None, status: str | None = None
    ) -> list[Batch]:
        return await self._store.list_batches(
            organization_id, limit=limit, before_id=before_id, status=status
        )

    async def results_jsonl(self, organization_id: str, batch_id: str) -> AsyncIterator[bytes]:
        """The batch's items as JSONL, one page of rows in memory at a time."""
        await self._require(organization_id, batch_id)
        after: str | None = None
        while True:
            page = await self._store.item_page(
                organization_id, batch_id, after_custom_id=after, limit=RESULTS_PAGE_SIZE
            )
            if not page:
                return
            yield b"".join(_result_line(row) for row in page)
            after = page[-1].custom_id

    async def _require(self, organization_id: str, batch_id: str) -> Batch:
        batch = await self._store.get(organization_id, batch_id)
        if batch is None:
            raise BatchNotFound(f"no batch {batch_id!r}")
        return batch

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


def _result_line(row: ItemRow) -> bytes:
    # The stored result is already JSON: splice it in rather than parse and re-encode it.
    return (
        f'{{"custom_id":{json.dumps(row.custom_id)},"status":{json.dumps(row.status)},'
        f'"result":{row.result or "null"},"error":{json.dumps(row.error)}}}\n'
    ).encode()
