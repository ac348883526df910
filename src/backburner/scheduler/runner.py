"""One tick of a leader-only job: claim it (fenced, unique), run it, record the outcome (fenced)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from backburner.clock import Clock
from backburner.leader.base import Leadership, NotLeader
from backburner.logs import describe_error, log_event
from backburner.monitoring.task_context import doing
from backburner.scheduler import runs
from backburner.scheduler.jobs import JobContext, JobSpec
from backburner.scheduler.metrics import SchedulerMetrics

log = logging.getLogger("backburner.scheduler")

RECORD_TIMEOUT_S = 5.0
ERROR_MAX_CHARS = 2000


class TickRunner:
    def __init__(self, *, clock: Clock, metrics: SchedulerMetrics) -> None:
        self._clock = clock
        self._metrics = metrics

    async def run(self, spec: JobSpec, leadership: Leadership, fire_time: datetime) -> str:
        """Run one tick; returns the outcome (`succeeded`, `failed`, `cancelled` or `skipped`).

        The claim is written before the job runs, so a tick fired by two schedulers (or twice by
        one) runs once; it is fenced, so a stale leader never starts a run.
        """
        term = leadership.term
        try:
            async with leadership.fenced() as conn:
                # An operator's pause is read in the same fenced transaction as the claim.
                paused = await runs.is_paused(conn, spec.id)
                run_id = (
                    None
                    if paused
                    else await runs.claim_tick(
                        conn,
                        job_id=spec.id,
                        election=term.election,
                        fire_time=fire_time,
                        started_at=self._clock.now(),
                        epoch=term.epoch,
                        instance_id=term.instance_id,
                    )
                )
        except NotLeader as exc:
            return self._skipped(spec, fire_time, "not_leader", current_epoch=exc.current_epoch)
        except Exception as exc:
            return self._skipped(spec, fire_time, "claim_failed", error=describe_error(exc))
        if paused:
            return self._skipped(spec, fire_time, "paused")
        if run_id is None:
            return self._skipped(spec, fire_time, "already_run")

        log_event(
            log, logging.INFO, "job.started", job=spec.id, fire_time=fire_time.isoformat(), epoch=term.epoch
        )
        started = time.monotonic()
        try:
            with doing(job_id=spec.id):  # the watchdog names the job if it blocks the loop
                await spec.run(JobContext(spec.id, fire_time, leadership))
        except asyncio.CancelledError:
            await self._finish(spec, leadership, run_id, "cancelled", started, None)
            raise
        except Exception as exc:
            await self._finish(spec, leadership, run_id, "failed", started, exc)
            return "failed"
        await self._finish(spec, leadership, run_id, "succeeded", started, None)
        return "succeeded"

    async def _finish(
        self,
        spec: JobSpec,
        leadership: Leadership,
        run_id: int,
        outcome: str,
        started: float,
        exc: BaseException | None,
    ) -> None:
        duration_s = time.monotonic() - started
        error = describe_error(exc)[:ERROR_MAX_CHARS] if exc is not None else None
        recorded = True
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S), leadership.fenced() as conn:
                await runs.finish_run(
                    conn,
                    run_id,
                    outcome=outcome,
                    finished_at=self._clock.now(),
                    duration_s=duration_s,
                    error=error,
                )
        except NotLeader:
            recorded = False  # the next term closes the run as abandoned
        except Exception as exc_record:
            recorded = False
            log_event(
                log,
                logging.WARNING,
                "job.outcome_not_recorded",
                job=spec.id,
                error=describe_error(exc_record),
            )
        self._metrics.job_runs.labels(spec.id, outcome).inc()
        self._metrics.job_duration.labels(spec.id).observe(duration_s)
        event = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}[outcome]
        log_event(
            log,
            logging.WARNING if outcome == "failed" else logging.INFO,
            event,
            job=spec.id,
            epoch=leadership.term.epoch,
            duration_s=round(duration_s, 4),
            error=error,
            recorded=recorded,
        )

    def _skipped(self, spec: JobSpec, fire_time: datetime, reason: str, **fields: object) -> str:
        self._metrics.job_runs.labels(spec.id, "skipped").inc()
        log_event(
            log,
            logging.WARNING if reason == "claim_failed" else logging.INFO,
            "job.skipped",
            job=spec.id,
            fire_time=fire_time.isoformat(),
            reason=reason,
            **fields,
        )
        return "skipped"
