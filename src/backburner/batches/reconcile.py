"""Submissions left `submitting`: a timeout after the request was sent, or a process that died.

Each is looked up at its provider. OpenAI batches carry our id in their metadata; Anthropic
batches carry nothing of ours, so recent ones with the same number of requests, created since
the submission began and not already ours, are its candidates. One candidate: it is adopted
(`running`). None: the provider never created it, so it goes back to `queued` and is sent
again. Several: it cannot be told which, and it fails with that reason.

The submitting process asks a few times within a minute of the timeout (`settle_submission`);
the leader's poll cycle resolves whatever is still `submitting` after the grace period. A lookup
that keeps failing is retried each cycle and given up after a provider's whole completion
window (24 h).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from backburner.batches.dispatch import Transaction
from backburner.batches.domain import Batch, BatchStatus, ProviderBatch
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderNotConfigured, ProviderSet
from backburner.batches.statuses import PollPolicy, results_expire_at, submission_abandoned
from backburner.batches.store import BatchStore, adopt_provider_batch, requeue_unit
from backburner.leader.base import Leadership, NotLeader
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.reconcile")

RECONCILE_PER_CYCLE = 100
RECONCILE_SKEW = timedelta(minutes=5)  # clocks of ours and the provider's may differ
SUBMITTING_GIVE_UP = timedelta(hours=24)

Finish = Callable[[Batch, BatchStatus, str], Awaitable[None]]


async def candidates(store: BatchStore, providers: ProviderSet, unit: Batch) -> list[ProviderBatch]:
    """The provider's batches that may be this submission, less those we already track."""
    provider = providers.get(unit.provider)
    found = await provider.find_submission(unit.id, unit.updated_at - RECONCILE_SKEW, unit.request_count)
    known = await store.known_provider_batch_ids(unit.provider, [b.provider_batch_id for b in found])
    return [b for b in found if b.provider_batch_id not in known]


async def adopt(
    providers: ProviderSet, unit: Batch, found: ProviderBatch, now: datetime, conn_tx: Transaction
) -> bool:
    kind = providers.kind(unit.provider)
    async with conn_tx() as conn:
        adopted = await adopt_provider_batch(
            conn, unit.organization_id, unit.id, found, now, results_expire_at(kind, found.created_at or now)
        )
    if adopted:
        log_event(
            log, logging.INFO, "batch.reconciled", batch_id=unit.id, provider_batch_id=found.provider_batch_id
        )
    return adopted


async def settle_submission(
    store: BatchStore, providers: ProviderSet, unit: Batch, now: datetime, transaction: Transaction
) -> bool:
    """Adopt the provider's batch if exactly one is this submission; True once it is settled."""
    current = await store.unit(unit.id)
    if current is None or current.status is not BatchStatus.SUBMITTING:
        return True
    found = await candidates(store, providers, current)
    if len(found) == 1:
        return await adopt(providers, current, found[0], now, transaction)
    return False


class SubmissionReconciler:
    def __init__(self, store: BatchStore, providers: ProviderSet, policy: PollPolicy) -> None:
        self._store = store
        self._providers = providers
        self._policy = policy

    async def run(self, leadership: Leadership, now: datetime, finish: Finish) -> int:
        """Resolve the abandoned submissions; returns how many were resolved."""
        grace = timedelta(seconds=self._policy.submit_grace_s)
        stale = await self._store.submitting_batches(created_before=now - grace, limit=RECONCILE_PER_CYCLE)
        resolved = 0
        for unit in stale:
            if not submission_abandoned(unit.updated_at, now, self._policy):
                continue
            try:
                resolved += await self._resolve(leadership, unit, now, finish)
            except (NotLeader, asyncio.CancelledError):
                raise
            except (ProviderError, ProviderNotConfigured) as exc:
                log_event(log, logging.WARNING, "batch.reconcile_failed", batch_id=unit.id, error=str(exc))
                if now - unit.updated_at >= SUBMITTING_GIVE_UP:
                    await finish(
                        unit,
                        BatchStatus.FAILED,
                        f"the submission could not be confirmed with {unit.provider} within 24 h",
                    )
                    resolved += 1
        return resolved

    async def _resolve(self, leadership: Leadership, unit: Batch, now: datetime, finish: Finish) -> int:
        found = await candidates(self._store, self._providers, unit)
        if len(found) == 1:
            return int(await adopt(self._providers, unit, found[0], now, leadership.fenced))
        if found:
            await finish(
                unit,
                BatchStatus.FAILED,
                f"{len(found)} batches at {unit.provider} could be this submission and it cannot be told "
                "which; submit it again",
            )
            return 1
        async with leadership.fenced() as conn:
            requeued = await requeue_unit(
                conn,
                unit.id,
                now,
                reason=f"the submission was interrupted before {unit.provider} created it; sending it again",
                consecutive_errors=unit.consecutive_errors,
                next_attempt_at=None,
            )
        if requeued:
            log_event(log, logging.INFO, "batch.requeued", batch_id=unit.id, reason="never_created")
        return int(requeued)
