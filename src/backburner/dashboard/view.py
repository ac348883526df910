"""The dashboard's data: every panel in one JSON document, each list a bounded page.

Panels about the deployment (cluster, jobs, event loop) are deployment-wide; panels about objects
(batches, files) show the caller's organization only, like every other route, so that the actions
offered on them go through the same organization-scoped API.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.batches.component import BatchesComponent
from backburner.batches.diagnostics import counts_by_provider, cycle_view, running_view
from backburner.batches.domain import POLLED_STATUSES, BatchStatus
from backburner.clock import Clock, iso_or_none
from backburner.db.transactions import reading
from backburner.files.component import FileProcessing
from backburner.monitoring.watchdog import Watchdog
from backburner.scheduler import runs
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.status import scheduler_status
from backburner.schedules.component import Schedules
from backburner.schedules.dashboard import schedules_panel
from backburner.settings import Settings

RUN_HISTORY_LENGTH = 20
# The batch list shows every batch not yet finished: those still being submitted too, so that a
# batch stuck in `submitting` is in the list and not only in the counts.
UNFINISHED_STATUSES = frozenset({BatchStatus.SUBMITTING, *POLLED_STATUSES})
RECENT_ERRORS = 10
RECENT_STALLS = 10


@dataclass(frozen=True)
class DashboardSources:
    """What the dashboard reads; a component that has not started yet is None."""

    settings: Settings
    engine: AsyncEngine
    clock: Clock
    instance_id: str
    scheduler: SchedulerService | None
    batches: BatchesComponent | None
    files: FileProcessing | None
    watchdog: Watchdog | None
    schedules: Schedules | None = None


async def dashboard_view(
    sources: DashboardSources,
    organization_id: str,
    *,
    deployment_wide: bool,
    batches_page: int,
    files_page: int,
    page_size: int,
) -> dict[str, Any]:
    """`deployment_wide`: the caller may see figures that cover every organization."""
    scheduler, batches, files = await asyncio.gather(
        _scheduler_panels(sources.scheduler, sources.engine, sources.clock, sources.settings),
        _batch_panel(sources.batches, organization_id, batches_page, page_size, deployment_wide),
        _file_panel(sources.files, sources.settings, organization_id, files_page, page_size),
    )
    return {
        "generated_at": sources.clock.now().isoformat(),
        "instance_id": sources.instance_id,
        **scheduler,
        "batches": batches,
        "files": files,
        "loop": _loop_panel(sources.watchdog),
        "schedules": await schedules_panel(sources.schedules, organization_id),
    }


async def _scheduler_panels(
    service: SchedulerService | None, engine: AsyncEngine, clock: Clock, settings: Settings
) -> dict[str, Any]:
    if service is None:
        return {"cluster": {"instances": [], "leader": None}, "jobs": []}
    status = await scheduler_status(
        service,
        engine,
        now=clock.now(),
        heartbeat_interval_s=settings.instance_heartbeat_interval_seconds,
    )
    job_ids = [job["id"] for job in status["jobs"]]
    async with reading(engine) as conn:
        history = await runs.recent_runs(conn, job_ids, RUN_HISTORY_LENGTH)
    jobs = [
        {
            **job,
            "history": [
                {
                    "outcome": run.outcome,
                    "duration_s": run.duration_s,
                    "started_at": iso_or_none(run.started_at),
                }
                for run in history.get(job["id"], [])
            ],
        }
        for job in status["jobs"]
    ]
    cluster = {
        "leader": status["leader"],
        "election": status["election"],
        "is_leader": status["is_leader"],
        "instances": status["instances"],
        "database_error": status["database_error"],
    }
    return {"cluster": cluster, "jobs": jobs}


async def _batch_panel(
    component: BatchesComponent | None, organization_id: str, page: int, page_size: int, deployment_wide: bool
) -> dict[str, Any]:
    if component is None:
        return {"counts": {}, "running": [], "running_total": 0, "last_cycle": None, "page_size": page_size}
    store = component.store
    counts = await counts_by_provider(store, organization_id)
    unfinished = {status.value for status in UNFINISHED_STATUSES}
    running = await store.running_page(
        organization_id, limit=page_size, offset=page * page_size, statuses=UNFINISHED_STATUSES
    )
    return {
        "counts": counts,
        "running": [running_view(b) for b in running],
        "running_total": sum(
            n for by_status in counts.values() for s, n in by_status.items() if s in unfinished
        ),
        "page_size": page_size,
        "last_cycle": cycle_view(await store.last_cycle()) if deployment_wide else None,
    }


async def _file_panel(
    component: FileProcessing | None, settings: Settings, organization_id: str, page: int, page_size: int
) -> dict[str, Any]:
    if component is None:
        return {
            "counts": {},
            "in_progress": [],
            "in_progress_total": 0,
            "recent_errors": [],
            "page_size": page_size,
        }
    store = component.stores.catalog
    counts, (in_progress, total), errors = await asyncio.gather(
        store.count_by_status(organization_id),
        store.in_progress_page(organization_id, page_size, page * page_size),
        store.recent_errors(organization_id, RECENT_ERRORS),
    )
    timeout_message = settings.timeout_message()
    return {
        "counts": {status.value: n for status, n in counts.items()},
        "in_progress": [
            {
                "id": f.id,
                "name": f.file_name,
                "status": f.status.value,
                "total_chunks": f.total_chunks,
                "chunks_embedded": f.chunks_embedded,
                "started_at": iso_or_none(f.started_at),
            }
            for f in in_progress
        ],
        "in_progress_total": total,
        "page_size": page_size,
        "recent_errors": [
            {
                "id": f.id,
                "name": f.file_name,
                "error_message": f.error_message,
                "timed_out": f.error_message == timeout_message,
                "updated_at": iso_or_none(f.updated_at),
            }
            for f in errors
        ],
    }


def _loop_panel(watchdog: Watchdog | None) -> dict[str, Any]:
    if watchdog is None:
        return {"enabled": False, "healthy": True, "lag_s": None, "recent_stalls": []}
    snapshot: dict[str, Any] = watchdog.snapshot()
    return {
        "enabled": snapshot["enabled"],
        "healthy": snapshot["state"]["healthy"],
        "lag_s": snapshot["lag_s"],
        "stall_threshold_s": snapshot["thresholds"]["stall_s"],
        "recent_stalls": snapshot["recent_stalls"][:RECENT_STALLS],
    }
