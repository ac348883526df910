"""Submit, cancel, resubmit, read: what the API and the CLI do with batches.

A submission is checked (off the event loop), then written (`queued`, with its parts, every
request and an idempotency key) before any provider is called, and sent part by part. When
nothing was accepted the submission fails whole: a refused connection leaves nothing behind, a
refusal fails the record, and in both cases its idempotency key is free again. A part refused
after the first was accepted waits in `queued` and is sent again by the leader. No answer
(a timeout) leaves the part `submitting`; it is looked up at the provider within a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from backburner.batches.dispatch import Dispatcher, Finisher, SendResult, Sent, refusal_reason
from backburner.batches.domain import OPEN_STATUSES, TERMINAL_STATUSES, Batch, BatchStatus, ItemStatus
from backburner.batches.intake import row_chunks
from backburner.batches.metrics import BatchMetrics
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderNotConfigured, ProviderSet
from backburner.batches.reconcile import settle_submission
from backburner.batches.store import BatchStore, ItemRow
from backburner.batches.store.submission import SenderHold
from backburner.batches.validation import Submission, SubmissionError, Target, plan_sizes
from backburner.clock import Clock
from backburner.ids import new_id
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.service")

RESULTS_PAGE_SIZE = 1000
ROWS_PER_WRITE = 2000
# After a timeout, the provider is asked about the submission after these delays (seconds).
SETTLE_DELAYS_S = (5.0, 15.0, 30.0)
# How long the leader leaves a new submission's first unit to its sender, which claims it right
# after the write: long enough for a busy instance, short so that one that died costs little.
SENDER_CLAIM = timedelta(seconds=30)
ResubmitItems = Literal["expired", "errored", "unfinished"]
RESUBMIT_STATUSES: dict[str, tuple[str, ...]] = {
    "expired": (ItemStatus.EXPIRED.value,),
    "errored": (ItemStatus.ERRORED.value,),
    "unfinished": tuple(s.value for s in ItemStatus if s is not ItemStatus.SUCCEEDED),
}


class BatchNotFound(LookupError):
    pass


class BatchConflict(Exception):
    """The request does not fit the batch's status (cancel a finished batch, for instance)."""


class ResultsRemoved(Exception):
    """The batch's stored results were removed after `batch_retention_days`."""


class SubmitFailed(Exception):
    """The provider refused the batch; our record is `failed` with the reason."""

    def __init__(self, batch: Batch, error: ProviderError) -> None:
        super().__init__(f"{error}")
        self.batch = batch
        self.error = error


class SubmitUncertain(Exception):
    """No answer from the provider: the record stays `submitting` until it is looked up."""

    def __init__(self, batch: Batch, error: ProviderError) -> None:
        super().__init__(f"{error}")
        self.batch = batch
        self.error = error


class ProviderUnreachable(Exception):
    """The provider refused the connection before anything was sent; nothing was kept."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(
            f"{error.provider} at {error.base_url or 'its base URL'} refused the connection; "
            "nothing was sent and no batch was kept, so the same request (and idempotency key) "
            "may be sent again"
        )
        self.error = error


@dataclass(frozen=True)
class SubmitOutcome:
    batch: Batch
    created: bool  # False when the idempotency key named an earlier submission


class BatchService:
    def __init__(
        self,
        store: BatchStore,
        providers: ProviderSet,
        clock: Clock,
        dispatcher: Dispatcher,
        finisher: Finisher,
        submit_hold: timedelta,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self._store = store
        self._submit_hold = submit_hold
        self._providers = providers
        self._clock = clock
        self._dispatcher = dispatcher
        self._finisher = finisher
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def _count_error(self, exc: ProviderError) -> None:
        if self._metrics is not None:
            self._metrics.provider_errors.labels(exc.provider, exc.label).inc()

    def target(self, provider: str, model: str) -> Target:
        """The limits a submission to `provider` is split by (`SubmissionError` if it is unknown)."""
        try:
            config = self._providers.config(provider)
        except ProviderNotConfigured as exc:
            raise SubmissionError(str(exc)) from None
        return Target(
            config.name,
            config.kind,
            config.max_requests,
            config.max_bytes,
            config.enqueued_token_limits.get(model),
        )

    async def submit(
        self, organization_id: str, submission: Submission, idempotency_key: str | None = None
    ) -> SubmitOutcome:
        if idempotency_key is not None:
            earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
            if earlier is not None:
                return SubmitOutcome(earlier, created=False)
        self._providers.get(submission.provider)  # unconfigured: refused before any write
        take = row_chunks(submission.rows(), ROWS_PER_WRITE)
        now = self._clock.now()
        hold = self._hold(now)
        batch = await self._store.create_submission(
            batch_id=new_id("batch"),
            organization_id=organization_id,
            submission=submission,
            idempotency_key=idempotency_key or new_id("idem"),
            now=now,
            next_rows=lambda: asyncio.to_thread(take),
            hold=hold,
        )
        if batch is None:  # the same key was submitted concurrently: answer with that batch
            return await self._earlier(organization_id, idempotency_key)
        return SubmitOutcome(await self._send_new(batch, hold), created=True)

    async def resubmit(
        self,
        organization_id: str,
        batch_id: str,
        which: ResubmitItems,
        idempotency_key: str | None = None,
    ) -> SubmitOutcome:
        """A new batch, linked to `batch_id`, of the requests of its items that did not succeed."""
        source = await self._require(organization_id, batch_id)
        if source.status not in TERMINAL_STATUSES:
            raise BatchConflict(
                f"batch {batch_id} has not ended ({source.status.value}); resubmit it once it has"
            )
        if source.results_removed_at is not None:
            raise ResultsRemoved(f"the requests of batch {batch_id} were removed after batch_retention_days")
        if idempotency_key is not None:
            earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
            if earlier is not None:
                return SubmitOutcome(earlier, created=False)
        self._providers.get(source.provider)
        target = self.target(source.provider, source.model)
        now = self._clock.now()
        hold = self._hold(now)
        batch = await self._store.create_resubmission(
            batch_id=new_id("batch"),
            organization_id=organization_id,
            source=source,
            item_statuses=RESUBMIT_STATUSES[which],
            idempotency_key=idempotency_key or new_id("idem"),
            plan=lambda sizes: plan_sizes(target, source.model, sizes),
            now=now,
            hold=hold,
        )
        if batch is None:
            if idempotency_key is not None:
                earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
                if earlier is not None:
                    return SubmitOutcome(earlier, created=False)
            raise BatchConflict(f"batch {batch_id} has no {which} items to resubmit")
        log_event(log, logging.INFO, "batch.resubmitted", batch_id=batch.id, source=batch_id, items=which)
        return SubmitOutcome(await self._send_new(batch, hold), created=True)

    def _hold(self, now: datetime) -> SenderHold:
        return SenderHold(first=now + SENDER_CLAIM, rest=now + self._submit_hold)

    async def _earlier(self, organization_id: str, idempotency_key: str | None) -> SubmitOutcome:
        assert idempotency_key is not None
        earlier = await self._store.get_by_idempotency_key(organization_id, idempotency_key)
        assert earlier is not None
        return SubmitOutcome(earlier, created=False)

    async def _send_new(self, batch: Batch, hold: SenderHold) -> Batch:
        """Send a new batch's parts in order; the first decides what a failure means.

        The leader leaves the parts to this process under `hold`, so that the answer tells what
        came of the first part; what is left then waits for the leader. Should this process die,
        the leader sends the parts once the hold is over."""
        transaction = self._store.engine.begin
        try:
            for position, unit in enumerate(await self._store.units(batch)):
                result = await self._dispatcher.send(unit, transaction)
                if result.outcome is Sent.SENT:
                    continue
                if result.outcome is Sent.WAITING:
                    break  # the rest wait behind it, for the leader to send
                if position == 0:
                    await self._nothing_accepted(batch, unit, result)
                elif result.outcome is Sent.UNCERTAIN:
                    self._settle_soon(unit)
                else:
                    await self._dispatcher.record_failure(unit, result, transaction)
                    break
        finally:
            await self._store.release(batch.id, hold)
        return await self._require(batch.organization_id, batch.id)

    async def _nothing_accepted(self, batch: Batch, unit: Batch, result: SendResult) -> None:
        exc = result.error
        assert exc is not None
        org = batch.organization_id
        if result.outcome is Sent.UNSENT:
            await self._store.delete_submission(org, batch.id)
            log_event(
                log, logging.WARNING, "batch.provider_unreachable", provider=exc.provider, error=str(exc)
            )
            raise ProviderUnreachable(exc)
        if result.outcome is Sent.UNCERTAIN:
            self._settle_soon(unit)
            raise SubmitUncertain(await self._require(org, batch.id), exc)
        await self._store.fail_submission(org, batch.id, refusal_reason(exc), self._clock.now())
        log_event(log, logging.WARNING, "batch.submit_refused", batch_id=batch.id, error=str(exc))
        raise SubmitFailed(await self._require(org, batch.id), exc)

    def _settle_soon(self, unit: Batch) -> None:
        task = asyncio.create_task(self._settle(unit), name=f"batches.settle.{unit.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "batch.settle_failed",
                exc_info=task.exception(),
                extra={"event": "batch.settle_failed", "task": task.get_name()},
            )

    async def _settle(self, unit: Batch) -> None:
        """Look a timed-out submission up at the provider, a few times within a minute."""
        for delay_s in SETTLE_DELAYS_S:
            await asyncio.sleep(delay_s)
            try:
                if await settle_submission(
                    self._store, self._providers, unit, self._clock.now(), self._store.engine.begin
                ):
                    return
            except (ProviderError, ProviderNotConfigured) as exc:
                log_event(log, logging.WARNING, "batch.reconcile_failed", batch_id=unit.id, error=str(exc))

    async def cancel(self, organization_id: str, batch_id: str) -> Batch:
        """Ask the provider to cancel; the poller records the end (with partial results). Parts not
        sent yet are cancelled at once."""
        batch = await self._require(organization_id, batch_id)
        units = [u for u in await self._store.units(batch) if u.status in OPEN_STATUSES]
        if (
            batch.status in TERMINAL_STATUSES
            or not units
            or (batch.part_count == 1 and batch.status is BatchStatus.INGESTING)
        ):
            raise BatchConflict(f"batch {batch_id} has already ended ({batch.status.value})")
        if all(u.status is BatchStatus.SUBMITTING for u in units):
            raise BatchConflict(f"batch {batch_id} is still being submitted; cancel it once it is running")
        provider_status: str | None = None
        for unit in units:
            if unit.status is BatchStatus.QUEUED:
                await self._finisher(self._store.engine.begin, unit.id, BatchStatus.CANCELLED, None, True)
            elif unit.status is BatchStatus.RUNNING and unit.provider_batch_id is not None:
                try:
                    snapshot = await self._providers.get(unit.provider).cancel(unit.provider_batch_id)
                except ProviderError as exc:
                    self._count_error(exc)
                    raise
                provider_status = snapshot.status
        await self._store.mark_cancel_requested(organization_id, batch_id, provider_status, self._clock.now())
        log_event(
            log, logging.INFO, "batch.cancel_requested", batch_id=batch_id, provider_status=provider_status
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

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _result_line(row: ItemRow) -> bytes:
    # The stored result is already JSON: splice it in rather than parse and re-encode it.
    return (
        f'{{"custom_id":{json.dumps(row.custom_id)},"status":{json.dumps(row.status)},'
        f'"result":{row.result or "null"},"error":{json.dumps(row.error)}}}\n'
    ).encode()
