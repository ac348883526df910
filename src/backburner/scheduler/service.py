"""The scheduler component: APScheduler runs the registered jobs only while this instance leads.

One task follows the elector's terms. For each term it makes every job due at once and resumes
the scheduler; when the term ends it pauses the scheduler and cancels the runs still going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from backburner.leader.base import Elector, Leadership
from backburner.logs import log_event
from backburner.scheduler.executor import TickExecutor
from backburner.scheduler.jobs import JobRegistry, JobSpec
from backburner.scheduler.metrics import SchedulerMetrics
from backburner.scheduler.runner import TickRunner
from backburner.scheduler.ticks import AlignedIntervalTrigger, TickGrid
from backburner.tasks import cancel_and_wait

log = logging.getLogger("backburner.scheduler")

# A step-down waits this long for cancelled runs to finish their bookkeeping.
CANCEL_WAIT_S = 5.0
RESTART_DELAY_S = 1.0


class SchedulerService:
    def __init__(
        self,
        *,
        elector: Elector,
        jobs: JobRegistry,
        runner: TickRunner,
        metrics: SchedulerMetrics,
        election: str,
        instance_id: str,
    ) -> None:
        self.elector = elector
        self.election = election
        self.instance_id = instance_id
        self._jobs = jobs
        self._runner = runner
        self._metrics = metrics
        self._executor = TickExecutor()
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={"default": self._executor},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._leadership: Leadership | None = None
        self._task: asyncio.Task[None] | None = None
        self._role_listeners: list[Callable[[], None]] = []

    # --- state --------------------------------------------------------------------------------

    @property
    def leadership(self) -> Leadership | None:
        leadership = self._leadership
        return None if leadership is None or leadership.lost.is_set() else leadership

    @property
    def is_leader(self) -> bool:
        return self.leadership is not None

    def on_role_change(self, listener: Callable[[], None]) -> None:
        self._role_listeners.append(listener)

    def job_specs(self) -> list[JobSpec]:
        return self._jobs.specs()

    def trigger_of(self, job_id: str) -> str:
        job = self._scheduler.get_job(job_id)
        return str(job.trigger) if job is not None else ""

    def next_run_time(self, job_id: str) -> datetime | None:
        """When the job runs next on this instance; None on a follower."""
        if not self.is_leader:
            return None
        job = self._scheduler.get_job(job_id)
        next_run: datetime | None = job.next_run_time if job is not None else None
        return next_run

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> SchedulerService:
        for spec in self._jobs.specs():
            self._scheduler.add_job(
                partial(self._fire, spec.id),
                trigger=AlignedIntervalTrigger(
                    TickGrid.of(spec.id, spec.interval_s, spec.jitter_s), spec.jitter_s
                ),
                id=spec.id,
                name=spec.name,
            )
        self._scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.start(paused=True)
        self._task = asyncio.create_task(self._follow_terms(), name="scheduler.terms")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def _follow_terms(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.elector.terms()) as terms:
                    async for leadership in terms:
                        await self._lead(leadership)
            except Exception:  # the electors retry their own failures; this is a bug: compete again
                log.exception("scheduler.terms_failed", extra={"event": "scheduler.terms_failed"})
                await asyncio.sleep(RESTART_DELAY_S)

    async def _lead(self, leadership: Leadership) -> None:
        term = leadership.term
        self._leadership = leadership
        self._metrics.leader.set(1)
        self._metrics.epoch.set(term.epoch)
        self._metrics.acquisitions.inc()
        self._notify_role()
        reason = "shutdown"
        try:
            now = datetime.now(UTC)
            for spec in self._jobs.specs():  # the first run of every job is due at once
                self._scheduler.modify_job(spec.id, next_run_time=now)
            self._scheduler.resume()
            log_event(log, logging.INFO, "scheduler.resumed", epoch=term.epoch, jobs=len(self._jobs.specs()))
            await leadership.lost.wait()
            reason = getattr(leadership, "reason", None) or "lost"
        finally:
            self._scheduler.pause()
            running = self._executor.cancel_all()
            if running:
                await asyncio.wait(running, timeout=CANCEL_WAIT_S)
            self._leadership = None
            self._metrics.leader.set(0)
            self._metrics.step_downs.labels(reason).inc()
            self._notify_role()
            log_event(
                log,
                logging.INFO if reason == "shutdown" else logging.WARNING,
                "leader.stepped_down",
                election=term.election,
                epoch=term.epoch,
                reason=reason,
                cancelled_runs=len(running),
            )

    def _notify_role(self) -> None:
        for listener in self._role_listeners:
            listener()

    # --- ticks --------------------------------------------------------------------------------

    async def _fire(self, job_id: str, fire_time: datetime | None = None) -> None:
        # `fire_time` defaults only to satisfy APScheduler's signature check; TickExecutor gives it.
        assert fire_time is not None
        spec = self._jobs.get(job_id)
        leadership = self.leadership
        if spec is None:
            return
        if leadership is None:
            self._metrics.job_runs.labels(job_id, "skipped").inc()
            log_event(
                log,
                logging.INFO,
                "job.skipped",
                job=job_id,
                fire_time=fire_time.isoformat(),
                reason="not_leader",
            )
            return
        await self._runner.run(spec, leadership, fire_time)

    def _on_max_instances(self, event: Any) -> None:
        assert isinstance(event, JobSubmissionEvent)
        self._metrics.job_runs.labels(event.job_id, "skipped").inc()
        log_event(
            log,
            logging.INFO,
            "job.skipped",
            job=event.job_id,
            fire_time=event.scheduled_run_times[-1].isoformat(),
            reason="still_running",
        )
