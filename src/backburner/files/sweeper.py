"""The leader-only sweeper: no file stays stuck, even with no worker left anywhere.

Every `file_sweep_interval_seconds` the leader, in one fenced transaction:
- moves every unfinished file past its deadline to ERROR with the timeout message (one UPDATE);
- fails files that used all their attempts and whose last worker is gone;
- takes stalled files (no progress for `file_stall_timeout_minutes`) from their workers, to be
  claimed again, or fails them when no attempt is left;
- drops the leases of dead workers, so that their files show as waiting for a worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.clock import Clock
from backburner.files.metrics import FileMetrics
from backburner.files.pipeline.worker import WorkerConfig, exhausted_message, stall_message
from backburner.files.store.timeouts import TimeoutStore
from backburner.logs import log_event
from backburner.scheduler.jobs import JobContext, JobSpec

log = logging.getLogger(__name__)

JOB_ID = "files.sweep"
WORKER_GONE = "its worker stopped responding"


@dataclass(frozen=True)
class SweepReport:
    timed_out: list[str]
    exhausted: list[str]
    stalled_released: list[str]
    stalled_failed: list[str]
    expired_released: list[str]

    @property
    def changed(self) -> int:
        return sum(
            map(
                len,
                (
                    self.timed_out,
                    self.exhausted,
                    self.stalled_released,
                    self.stalled_failed,
                    self.expired_released,
                ),
            )
        )


class FileSweeper:
    def __init__(
        self, store: TimeoutStore, config: WorkerConfig, clock: Clock, metrics: FileMetrics, interval_s: float
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.interval_s = interval_s

    def job_spec(self) -> JobSpec:
        return JobSpec(id=JOB_ID, name="File timeout sweeper", interval_s=self.interval_s, run=self.run_job)

    async def run_job(self, ctx: JobContext) -> None:
        async with ctx.leadership.fenced() as conn:
            await self.sweep(self.clock.now(), conn=conn)

    async def sweep(self, now: datetime, *, conn: AsyncConnection | None = None) -> SweepReport:
        config = self.config
        timed_out = await self.store.time_out(now, config.timeout_minutes, config.timeout_message, conn=conn)
        exhausted = await self.store.fail_exhausted(
            now, config.max_attempts, exhausted_message(config.max_attempts, WORKER_GONE), conn=conn
        )
        released, failed = await self.store.reclaim_stalled(
            now,
            config.stall_minutes,
            config.max_attempts,
            stall_message(config.stall_minutes, config.max_attempts),
            conn=conn,
        )
        expired = await self.store.release_expired(now, conn=conn)
        report = SweepReport(timed_out, exhausted, released, failed, expired)
        self._record(report)
        return report

    def _record(self, report: SweepReport) -> None:
        if report.timed_out:
            self.metrics.timeouts.labels(enforcer="sweeper").inc(len(report.timed_out))
        if report.stalled_released or report.stalled_failed:
            self.metrics.stalls.inc(len(report.stalled_released) + len(report.stalled_failed))
        for file_id in report.timed_out:
            log_event(log, logging.WARNING, "file.timed_out", file_id=file_id, enforcer="sweeper")
        for file_id in report.exhausted:
            log_event(log, logging.WARNING, "file.attempts_exhausted", file_id=file_id)
        for file_id in report.stalled_released + report.stalled_failed:
            log_event(log, logging.WARNING, "file.stalled", file_id=file_id, enforcer="sweeper")
        for file_id in report.expired_released:
            log_event(log, logging.INFO, "file.lease_expired", file_id=file_id)
        if report.changed:
            log_event(
                log,
                logging.INFO,
                "files.swept",
                timed_out=len(report.timed_out),
                exhausted=len(report.exhausted),
                stalled=len(report.stalled_released) + len(report.stalled_failed),
                expired=len(report.expired_released),
            )
