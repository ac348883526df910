"""The leader-only job that removes stored results older than `batch_retention_days`.

A batch's items (requests and results) are deleted in fenced chunks; its row, counts and usage
totals stay, and its results answer 410 from then on.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from backburner.batches.store import BatchStore, remove_results
from backburner.clock import Clock
from backburner.leader.base import Leadership
from backburner.logs import log_event
from backburner.scheduler.jobs import JobContext

log = logging.getLogger("backburner.batches.retention")

BATCHES_PER_RUN = 100
ITEMS_PER_DELETE = 5000


class RetentionJob:
    def __init__(self, store: BatchStore, clock: Clock, retention_days: int | None) -> None:
        self._store = store
        self._clock = clock
        self._retention_days = retention_days

    async def run(self, ctx: JobContext) -> None:
        await self.run_once(ctx.leadership)

    async def run_once(self, leadership: Leadership) -> int:
        """Remove the results of batches past the retention; returns the items removed."""
        if self._retention_days is None:
            return 0
        now = self._clock.now()
        cutoff = now - timedelta(days=self._retention_days)
        removed = 0
        for batch_id in await self._store.retention_due(ended_before=cutoff, limit=BATCHES_PER_RUN):
            while True:
                async with leadership.fenced() as conn:
                    count = await remove_results(conn, batch_id, now, limit=ITEMS_PER_DELETE)
                removed += count
                if count < ITEMS_PER_DELETE:
                    break
            log_event(log, logging.INFO, "batch.results_removed", batch_id=batch_id)
        return removed
