"""The leader-only orphan sweeper: no blob outlives its file, whatever crashed in between.

Every `blob_sweep_interval_seconds` the leader removes, once they are an hour old:
- blobs under the files' prefix that no file owns (a request that crashed between storing the
  blob and recording the file, a delete whose blob removal failed);
- what writes interrupted by a crash left in the store (temporary files, pending rows,
  unfinished multipart uploads).
The hour keeps it clear of uploads in progress, here or on any other instance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from backburner.clock import Clock
from backburner.files.blobs.base import FILE_KEY_PREFIX, BlobStore
from backburner.files.blobs.references import BlobReferences
from backburner.logs import log_event
from backburner.scheduler.jobs import JobContext, JobSpec

log = logging.getLogger(__name__)

JOB_ID = "blobs.sweep"
MIN_AGE = timedelta(hours=1)


def sweep_cutoff(now: datetime) -> datetime:
    """Anything stored or begun before this may be swept."""
    return now - MIN_AGE


@dataclass(frozen=True)
class BlobSweepReport:
    orphans: list[str]
    stale_uploads: int


class BlobSweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.removed = Counter(
            "backburner_blobs_swept_total",
            "Blobs the orphan sweeper removed: `orphan` (no file owns it), `upload` (left by a crash).",
            ["kind"],
            registry=registry,
        )


class BlobSweeper:
    def __init__(
        self,
        store: BlobStore,
        references: BlobReferences,
        clock: Clock,
        interval_s: float,
        metrics: BlobSweepMetrics | None = None,
    ) -> None:
        self.store = store
        self.references = references
        self.clock = clock
        self.interval_s = interval_s
        self.metrics = metrics

    def job_spec(self) -> JobSpec:
        return JobSpec(id=JOB_ID, name="Orphan blob sweeper", interval_s=self.interval_s, run=self.run_job)

    async def run_job(self, ctx: JobContext) -> None:
        # Removing what nobody owns is safe to repeat, so a deposed leader that finishes a page
        # does no harm; the scheduler cancels the run when leadership is lost.
        await self.sweep(self.clock.now())

    async def sweep(self, now: datetime) -> BlobSweepReport:
        cutoff = sweep_cutoff(now)
        orphans: list[str] = []
        async for page in self.store.list_blobs(FILE_KEY_PREFIX, cutoff):
            owned = await self.references.owned([entry.key for entry in page])
            for entry in page:
                if entry.key not in owned and await self.store.delete(entry.key):
                    orphans.append(entry.key)
                    log_event(
                        log, logging.INFO, "blob.orphan_removed", blob_key=entry.key, store=self.store.name
                    )
        stale = await self.store.remove_stale_uploads(cutoff)
        if self.metrics is not None:
            self.metrics.removed.labels(kind="orphan").inc(len(orphans))
            self.metrics.removed.labels(kind="upload").inc(stale)
        if orphans or stale:
            log_event(
                log,
                logging.INFO,
                "blobs.swept",
                orphans=len(orphans),
                stale_uploads=stale,
                store=self.store.name,
            )
        return BlobSweepReport(orphans, stale)
