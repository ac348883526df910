"""The leader-only poll cycle over running batches.

One cycle: reconcile abandoned submissions; pick the due running batches created within the
lookback, least recently polled first, at most `batch_job_polling_batch_size`; learn their
providers' statuses with at most `batch_poll_concurrency` requests in flight; ingest the ended
ones; record the cycle; hand ended batches over. Decisions come from `statuses` (pure); this
module does the I/O. Every write goes through the leadership's fenced transaction: a cycle whose
term ended stops at its next write with `NotLeader`.

Statuses come from one `retrieve` per batch; when many batches of one provider are due, one
listing of the provider's recent batches (1,000 per request at Anthropic, 100 at OpenAI) gives
most of them first, and only the batches it did not show are retrieved one by one.

After polling, the cycle sends what waits in `queued` (parts of split batches, batches waiting
for an enqueued-token budget, retries) and deletes the provider's files of ended batches. A
failure to record one batch's outcome is logged and never stops the cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from backburner.batches.dispatch import Dispatcher, Sent
from backburner.batches.domain import Batch, BatchStatus, Provider, ProviderBatch
from backburner.batches.handoff import CompletionHandoff
from backburner.batches.ingest import Ingestor
from backburner.batches.metrics import BatchMetrics
from backburner.batches.providers.base import BatchProvider, ProviderError
from backburner.batches.providers.registry import ProviderNotConfigured, ProviderSet
from backburner.batches.reconcile import SubmissionReconciler
from backburner.batches.statuses import (
    Action,
    PollPolicy,
    counts_as_error,
    errors_exhausted,
    lookback_start,
    map_status,
    next_poll_at,
    output_wait_exhausted,
    transient_not_found,
)
from backburner.batches.store import (
    BatchStore,
    CycleRecord,
    PollUpdate,
    apply_poll_updates,
    mark_provider_files_deleted,
    record_cycle,
    requeue_unit,
)
from backburner.clock import Clock
from backburner.leader.base import Leadership, NotLeader
from backburner.logs import log_event
from backburner.scheduler.jobs import JobContext

log = logging.getLogger("backburner.batches.poller")

UPDATES_PER_WRITE = 500
LIST_MIN_BATCHES = 50  # due batches of one provider from which a listing is cheaper than retrieves
LIST_SKEW = timedelta(minutes=5)  # the provider's creation time may be a little before ours
LIST_BUDGET_FACTOR = 3  # list at most 3 batches per due one (other batches share the account)
DISPATCH_PER_CYCLE = 100
CLEANUP_PER_CYCLE = 100
# What a tenant reads when recording a batch's outcome failed on our side; the detail is logged.
INTERNAL_ERROR = "an internal error interrupted polling this batch; it is retried (see batch.poll_crashed)"


@dataclass
class CycleReport:
    started_at: datetime
    duration_s: float = 0.0
    polled: int = 0
    completed: int = 0
    items_ingested: int = 0
    errors: int = 0
    failed: int = 0
    reconciled: int = 0
    listed: int = 0
    dispatched: int = 0
    files_deleted: int = 0
    throttled: dict[str, float] = field(default_factory=dict)


class BatchPoller:
    def __init__(
        self,
        *,
        store: BatchStore,
        providers: ProviderSet,
        policy: PollPolicy,
        clock: Clock,
        metrics: BatchMetrics,
        ingestor: Ingestor,
        handoff: CompletionHandoff,
        concurrency: int,
        batch_size: int | None,
        list_min_batches: int = LIST_MIN_BATCHES,
        dispatcher: Dispatcher | None = None,
        delete_provider_files: bool = True,
        on_cycle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.delete_provider_files = delete_provider_files
        self.on_cycle = on_cycle
        self.store = store
        self.providers = providers
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.ingestor = ingestor
        self.handoff = handoff
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.list_min_batches = list_min_batches
        self.reconciler = SubmissionReconciler(store, providers, policy)
        self.last_report: CycleReport | None = None

    async def run(self, ctx: JobContext) -> None:
        """The scheduler's entry point."""
        await self.run_cycle(ctx.leadership)

    async def run_cycle(self, leadership: Leadership) -> CycleReport:
        now = self.clock.now()
        started = time.perf_counter()
        cycle = _Cycle(self, leadership, now)
        report = cycle.report
        report.reconciled = await cycle.guarded(
            "reconcile", self.reconciler.run(leadership, now, cycle.finish)
        )
        due = await self.store.due_batches(
            now=now, since=lookback_start(now, self.policy), limit=self.batch_size
        )
        await _unwrap_not_leader(cycle.poll_all(due))
        report.dispatched = await cycle.guarded("dispatch", cycle.dispatch_queued())
        if self.delete_provider_files:
            report.files_deleted = await cycle.guarded("cleanup", cycle.delete_provider_files())
        report.duration_s = time.perf_counter() - started
        report.throttled = {p: max(t - time.monotonic(), 0.0) for p, t in cycle.throttled_until.items()}
        async with leadership.fenced() as conn:
            await record_cycle(
                conn,
                CycleRecord(
                    report.started_at,
                    report.duration_s,
                    report.polled,
                    report.completed,
                    report.items_ingested,
                    report.errors,
                    leadership.term.epoch,
                    leadership.term.instance_id,
                    report.failed,
                ),
            )
        self.metrics.cycle_duration.observe(report.duration_s)
        self.metrics.set_batch_counts(await self.store.counts_by_provider_status(), self.providers.names)
        if self.on_cycle is not None:
            await self.on_cycle()
        self.last_report = report
        log_event(
            log,
            logging.INFO,
            "batch.poll_cycle",
            polled=report.polled,
            listed=report.listed,
            completed=report.completed,
            failed=report.failed,
            items_ingested=report.items_ingested,
            errors=report.errors,
            dispatched=report.dispatched,
            duration_s=round(report.duration_s, 3),
        )
        if report.completed or report.failed:
            await self.handoff.deliver_due(leadership)
        return report


class _Cycle:
    """The state of one cycle: its time, its concurrency bound, throttled providers, writes."""

    def __init__(self, poller: BatchPoller, leadership: Leadership, now: datetime) -> None:
        self.poller = poller
        self.policy = poller.policy
        self.leadership = leadership
        self.now = now
        self.report = CycleReport(started_at=now)
        self.semaphore = asyncio.Semaphore(poller.concurrency)
        self.throttled_until: dict[Provider, float] = {}
        self.listed: dict[str, ProviderBatch] = {}
        self._pending: list[PollUpdate] = []

    # --- the cycle ----------------------------------------------------------------------------

    async def guarded(self, step: str, work: Awaitable[int]) -> int:
        """Run one step of the cycle; a failure is logged and the cycle goes on."""
        try:
            return await work
        except (NotLeader, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("batch.cycle_step_failed", extra={"event": "batch.cycle_step_failed", "step": step})
            self.report.errors += 1
            return 0

    async def dispatch_queued(self) -> int:
        """Send queued batches and parts, oldest first; one that cannot go now keeps its place."""
        dispatcher = self.poller.dispatcher
        if dispatcher is None:
            return 0
        sent = 0
        for unit in await self.poller.store.queued_units(now=self.now, limit=DISPATCH_PER_CYCLE):
            if self._throttled(unit.provider):
                continue
            try:
                result = await dispatcher.send(unit, self.leadership.fenced)
                if result.outcome is Sent.SENT:
                    sent += 1
                elif result.outcome in (Sent.REFUSED, Sent.UNSENT):
                    assert result.error is not None
                    self._throttle(unit.provider, result.error)
                    await dispatcher.record_failure(unit, result, self.leadership.fenced)
            except (NotLeader, asyncio.CancelledError):
                raise
            except ProviderNotConfigured as exc:
                log_event(log, logging.WARNING, "batch.dispatch_failed", batch_id=unit.id, error=str(exc))
            except Exception:
                log.exception(
                    "batch.dispatch_failed", extra={"event": "batch.dispatch_failed", "batch_id": unit.id}
                )
                self.report.errors += 1
        return sent

    async def delete_provider_files(self) -> int:
        """Delete the provider's files (OpenAI) or batch and results (Anthropic) of ended units,
        whose items are all stored; what fails is tried again next cycle."""
        deleted = 0
        for unit in await self.poller.store.undeleted_provider_files(limit=CLEANUP_PER_CYCLE):
            assert unit.provider_batch_id is not None
            files = [f for f in (unit.input_file_id, unit.output_file_id, unit.error_file_id) if f]
            try:
                await self.poller.providers.get(unit.provider).delete_resources(unit.provider_batch_id, files)
            except (ProviderError, ProviderNotConfigured) as exc:
                log_event(log, logging.WARNING, "batch.files_delete_failed", batch_id=unit.id, error=str(exc))
                continue
            async with self.leadership.fenced() as conn:
                await mark_provider_files_deleted(conn, unit.id, self.clock_now())
            deleted += 1
            log_event(log, logging.INFO, "batch.files_deleted", batch_id=unit.id, files=len(files))
        return deleted

    def clock_now(self) -> datetime:
        return self.poller.clock.now()

    async def poll_all(self, due: list[Batch]) -> None:
        by_provider: dict[Provider, list[Batch]] = {}
        for batch in due:
            by_provider.setdefault(batch.provider, []).append(batch)
        async with asyncio.TaskGroup() as group:
            for name, batches in by_provider.items():
                if len(batches) >= self.poller.list_min_batches:
                    group.create_task(self._list(name, batches), name=f"batches.list.{name}")
        async with asyncio.TaskGroup() as group:
            for batch in due:
                group.create_task(self._poll_guarded(batch), name=f"batches.poll.{batch.id}")
        await self._flush()

    def _throttled(self, provider: Provider) -> bool:
        return self.throttled_until.get(provider, 0.0) > time.monotonic()

    def _throttle(self, provider: Provider, exc: ProviderError) -> None:
        self.poller.metrics.provider_errors.labels(provider, exc.label).inc()
        if exc.status_code == 429:  # the provider asked us to wait: no more requests this cycle
            wait_s = exc.retry_after_s if exc.retry_after_s is not None else 0.0
            self.throttled_until[provider] = time.monotonic() + wait_s

    async def _list(self, name: Provider, batches: list[Batch]) -> None:
        """Learn many statuses from the provider's listing, newest first, down to the oldest due."""
        wanted = {b.provider_batch_id: b.id for b in batches if b.provider_batch_id is not None}
        budget = LIST_BUDGET_FACTOR * len(wanted)
        oldest = min(b.created_at for b in batches) - LIST_SKEW
        try:
            provider = self.poller.providers.get(name)
            async with self.semaphore, aclosing(provider.list_recent(oldest)) as recent:
                async for snapshot in recent:
                    batch_id = wanted.pop(snapshot.provider_batch_id, None)
                    if batch_id is not None:
                        self.listed[batch_id] = snapshot
                    budget -= 1
                    if not wanted or budget <= 0:
                        break
        except (NotLeader, asyncio.CancelledError):
            raise
        except ProviderError as exc:  # the batches are retrieved one by one instead
            self.report.errors += 1
            self._throttle(name, exc)
            log_event(log, logging.WARNING, "batch.list_failed", provider=name, error=str(exc))
        except ProviderNotConfigured:
            pass  # each batch records it
        self.report.listed += len(batches) - len(wanted)

    async def _poll_guarded(self, batch: Batch) -> None:
        """Poll one batch; any failure but a lost term becomes an error of that batch."""
        snapshot = self.listed.pop(batch.id, None)
        if snapshot is None and self._throttled(batch.provider):
            return  # stays due: polled first next cycle
        async with self.semaphore:
            if snapshot is None and self._throttled(batch.provider):
                return
            try:
                await self._poll(batch, snapshot)
            except (NotLeader, asyncio.CancelledError):
                raise
            except ProviderError as exc:
                self._throttle(batch.provider, exc)
                await self._record_error_safely(batch, str(exc), exc.status_code, exc.retry_after_s)
            except ProviderNotConfigured as exc:
                await self._record_error_safely(batch, str(exc), None, None)
            except Exception:  # a bug or a database error: never let one batch stop the cycle
                log.exception(
                    "batch.poll_crashed", extra={"event": "batch.poll_crashed", "batch_id": batch.id}
                )
                await self._record_error_safely(batch, INTERNAL_ERROR, None, None)

    async def _record_error_safely(
        self, batch: Batch, message: str, status_code: int | None, retry_after_s: float | None
    ) -> None:
        """Record a batch's failed poll; if even that fails, log it: the other batches go on."""
        try:
            await self._record_error(batch, message, status_code, retry_after_s)
        except (NotLeader, asyncio.CancelledError):
            raise
        except Exception:
            self.report.errors += 1
            log.exception("batch.record_failed", extra={"event": "batch.record_failed", "batch_id": batch.id})

    async def _poll(self, batch: Batch, snapshot: ProviderBatch | None) -> None:
        provider = self.poller.providers.get(batch.provider)
        assert batch.provider_batch_id is not None
        self.report.polled += 1
        if snapshot is None:
            snapshot = await provider.retrieve(batch.provider_batch_id)
        decision = map_status(snapshot)
        if decision.action is Action.WAIT:
            await self._add(self._update(batch, snapshot.status, errors=0))
        elif decision.action is Action.AWAIT_OUTPUT:
            polls = batch.missing_output_polls + 1
            if output_wait_exhausted(polls, self.policy):
                await self.finish(
                    batch,
                    BatchStatus.FAILED,
                    f"the provider reported the batch {snapshot.status} "
                    f"but published no results file in {polls} polls",
                )
            else:
                await self._add(self._update(batch, snapshot.status, errors=0, missing_output_polls=polls))
        elif decision.action is Action.FAIL:
            assert decision.target is not None and decision.reason is not None
            await self.finish(batch, decision.target, decision.reason)
        elif decision.action is Action.REQUEUE:
            await self._requeue(batch, provider)
        else:
            assert decision.target is not None
            log_event(
                log,
                logging.INFO,
                "batch.ingesting",
                batch_id=batch.id,
                provider=batch.provider,
                provider_status=snapshot.status,
            )
            stored, finished = await self.poller.ingestor.ingest(
                self.leadership, batch, snapshot, provider, decision.target
            )
            self.report.items_ingested += stored
            if finished:
                if decision.target is BatchStatus.FAILED:
                    self.report.failed += 1
                else:
                    self.report.completed += 1
                log_event(
                    log,
                    logging.INFO,
                    "batch.ingested",
                    batch_id=batch.id,
                    status=decision.target.value,
                    items=stored,
                )

    async def _requeue(self, batch: Batch, provider: BatchProvider) -> None:
        """Refused for the enqueued-token limit: its input file goes, and it waits to be sent again."""
        assert batch.provider_batch_id is not None
        if batch.input_file_id is not None:
            try:
                await provider.delete_resources(batch.provider_batch_id, [batch.input_file_id])
            except ProviderError as exc:
                log_event(
                    log, logging.WARNING, "batch.files_delete_failed", batch_id=batch.id, error=str(exc)
                )
        async with self.leadership.fenced() as conn:
            requeued = await requeue_unit(
                conn,
                batch.id,
                self.now,
                reason=f"{batch.provider} refused it for its enqueued-token limit; sent again later",
                consecutive_errors=0,
                next_attempt_at=None,
                from_status=BatchStatus.RUNNING,
            )
        if requeued:
            log_event(log, logging.INFO, "batch.requeued", batch_id=batch.id, reason="token_limit_exceeded")

    async def finish(self, batch: Batch, status: BatchStatus, reason: str) -> None:
        if await self.poller.ingestor.finish(self.leadership, batch.id, status, reason):
            if status is BatchStatus.FAILED:
                self.report.failed += 1
            else:
                self.report.completed += 1
            log_event(
                log,
                logging.WARNING if status is BatchStatus.FAILED else logging.INFO,
                "batch.finished",
                batch_id=batch.id,
                status=status.value,
                reason=reason,
            )

    async def _record_error(
        self, batch: Batch, message: str, status_code: int | None, retry_after_s: float | None
    ) -> None:
        self.report.errors += 1
        transient = transient_not_found(status_code, batch.submitted_at, self.now)
        errors = batch.consecutive_errors + (1 if counts_as_error(status_code, transient) else 0)
        log_event(
            log,
            logging.WARNING,
            "batch.poll_failed",
            batch_id=batch.id,
            provider=batch.provider,
            consecutive_errors=errors,
            error=message,
            retry_after_s=retry_after_s,
        )
        if errors_exhausted(errors, self.policy):
            await self.finish(
                batch, BatchStatus.FAILED, f"polling failed {errors} times in a row; last error: {message}"
            )
            return
        await self._add(
            self._update(batch, None, errors=errors, last_error=message, retry_after_s=retry_after_s)
        )

    def _update(
        self,
        batch: Batch,
        provider_status: str | None,
        *,
        errors: int,
        last_error: str | None = None,
        retry_after_s: float | None = None,
        missing_output_polls: int | None = None,
    ) -> PollUpdate:
        return PollUpdate(
            batch_id=batch.id,
            now=self.now,
            next_poll_at=next_poll_at(errors, self.now, self.policy, retry_after_s),
            consecutive_errors=errors,
            last_error=last_error,
            provider_status=provider_status,
            missing_output_polls=batch.missing_output_polls
            if missing_output_polls is None
            else missing_output_polls,
        )

    # --- grouped writes of poll outcomes -------------------------------------------------------

    async def _add(self, update: PollUpdate) -> None:
        self._pending.append(update)
        if len(self._pending) >= UPDATES_PER_WRITE:
            await self._flush()

    async def _flush(self) -> None:
        updates, self._pending = self._pending, []
        if not updates:
            return
        try:
            async with self.leadership.fenced() as conn:
                await apply_poll_updates(conn, updates)
        except (NotLeader, asyncio.CancelledError):
            raise
        except Exception:  # one batch's row may refuse the grouped write: write them one by one
            for update in updates:
                try:
                    async with self.leadership.fenced() as conn:
                        await apply_poll_updates(conn, [update])
                except (NotLeader, asyncio.CancelledError):
                    raise
                except Exception:
                    self.report.errors += 1
                    log.exception(
                        "batch.record_failed",
                        extra={"event": "batch.record_failed", "batch_id": update.batch_id},
                    )


async def _unwrap_not_leader(work: object) -> None:
    """Await `work`; a lost term inside a task group surfaces as the plain `NotLeader`."""
    assert asyncio.iscoroutine(work)
    try:
        await work
    except BaseExceptionGroup as failures:
        lost = failures.subgroup(NotLeader)
        if lost is not None:
            raise _first(lost) from None
        raise


def _first(group: BaseExceptionGroup[NotLeader]) -> NotLeader:
    first = group.exceptions[0]
    return first if isinstance(first, NotLeader) else _first(first)
