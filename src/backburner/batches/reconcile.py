"""Records left `submitting` by a process that died while the provider was being called.

After the grace period (longer than the slowest submission can take) each is resolved:

- OpenAI batches carry our batch id in their metadata, so recent batches are listed and the one
  found is adopted (`running`); none found means the provider never created it: `failed`.
- Anthropic batches carry nothing that could name our record, so the record is `failed` with the
  reason (a batch Anthropic did create is not tracked; the application submits again).

A lookup that keeps failing is retried each cycle and given up after a provider's whole
completion window (24 h). No record stays `submitting`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from backburner.batches.domain import Batch, BatchStatus
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderNotConfigured, ProviderSet
from backburner.batches.statuses import PollPolicy, submission_abandoned
from backburner.batches.store import BatchStore, adopt_provider_batch
from backburner.leader.base import Leadership, NotLeader
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.reconcile")

RECONCILE_PER_CYCLE = 100
RECONCILE_SKEW = timedelta(minutes=5)  # clocks of ours and the provider's may differ
SUBMITTING_GIVE_UP = timedelta(hours=24)

Finish = Callable[[Batch, BatchStatus, str], Awaitable[None]]


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
        for batch in stale:
            if not submission_abandoned(batch.created_at, now, self._policy):
                continue
            try:
                resolved += await self._resolve(leadership, batch, now, finish)
            except (NotLeader, asyncio.CancelledError):
                raise
            except (ProviderError, ProviderNotConfigured) as exc:
                log_event(log, logging.WARNING, "batch.reconcile_failed", batch_id=batch.id, error=str(exc))
                if now - batch.created_at >= SUBMITTING_GIVE_UP:
                    await finish(
                        batch,
                        BatchStatus.FAILED,
                        f"submission could not be confirmed with {batch.provider} within 24 h: {exc}",
                    )
                    resolved += 1
        return resolved

    async def _resolve(self, leadership: Leadership, batch: Batch, now: datetime, finish: Finish) -> int:
        provider = self._providers.get(batch.provider)
        if not provider.can_find_submissions:
            await finish(
                batch,
                BatchStatus.FAILED,
                f"the process submitting this batch stopped before {batch.provider} confirmed it, and "
                f"{batch.provider} cannot tell whether it was created; submit it again",
            )
            return 1
        found = await provider.find_submission(batch.id, batch.created_at - RECONCILE_SKEW)
        if found is None:
            await finish(
                batch,
                BatchStatus.FAILED,
                f"the submission was interrupted before {batch.provider} created the batch; submit it again",
            )
            return 1
        async with leadership.fenced() as conn:
            adopted = await adopt_provider_batch(conn, batch.organization_id, batch.id, found, now)
        if adopted:
            log_event(
                log,
                logging.INFO,
                "batch.reconciled",
                batch_id=batch.id,
                provider_batch_id=found.provider_batch_id,
            )
        return int(adopted)
