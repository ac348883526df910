"""`GET /api/admin/scheduler/status`: who leads, with which epoch, the jobs and the instances."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from backburner.api.deps import get_runtime
from backburner.logs import log_event
from backburner.runtime import Runtime
from backburner.scheduler import runs
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.status import scheduler_status

router = APIRouter(tags=["admin"])
log = logging.getLogger("backburner.scheduler")


class ElectionInfo(BaseModel):
    name: str
    backend: str  # postgres | file
    mode: str  # wait | poll
    lease_seconds: float
    state: str


class LeaderInfo(BaseModel):
    instance_id: str
    epoch: int
    since: str
    heartbeat_at: str | None


class LastRun(BaseModel):
    outcome: str
    duration: float | None
    error: str | None
    fire_time: str
    started_at: str
    finished_at: str | None
    epoch: int
    instance_id: str


class JobInfo(BaseModel):
    id: str
    name: str
    trigger: str
    interval_seconds: float
    jitter_seconds: float = Field(description="The jitter the ticks use: at most half the interval.")
    configured_jitter_seconds: float
    next_run_time: str | None
    paused: bool
    last_run: LastRun | None


class InstanceInfo(BaseModel):
    instance_id: str
    role: str = Field(
        description="`leader` for the holder of the current term only; `follower`; `stale` when it "
        "has missed several heartbeats (dead, frozen or cut off) and its row is not yet removed"
    )
    last_seen: str
    last_seen_seconds_ago: float
    host: str
    pid: int
    process: str
    started: str


class SchedulerStatus(BaseModel):
    instance_id: str
    is_leader: bool
    election: ElectionInfo
    leader: LeaderInfo | None
    jobs: list[JobInfo]
    instances: list[InstanceInfo]
    database_error: str | None


def get_scheduler(runtime: Runtime = Depends(get_runtime)) -> SchedulerService:
    service = runtime.components.get("scheduler")
    if not isinstance(service, SchedulerService):
        raise HTTPException(503, "the scheduler has not started yet; /readyz says what it waits for")
    return service


@router.get(
    "/api/admin/scheduler/status",
    summary="Leader election and scheduler status",
    response_model=SchedulerStatus,
    responses={503: {"description": "The scheduler has not started yet"}},
)
async def status(
    runtime: Runtime = Depends(get_runtime), service: SchedulerService = Depends(get_scheduler)
) -> dict[str, Any]:
    return await scheduler_status(
        service,
        runtime.engine,
        now=runtime.clock.now(),
        heartbeat_interval_s=runtime.settings.instance_heartbeat_interval_seconds,
    )


class JobPauseState(BaseModel):
    id: str
    paused: bool


async def _set_paused(
    runtime: Runtime, service: SchedulerService, job_id: str, paused: bool
) -> JobPauseState:
    if job_id not in {spec.id for spec in service.job_specs()}:
        raise HTTPException(404, f"no scheduler job {job_id!r}")
    async with runtime.engine.begin() as conn:
        await runs.set_paused(conn, job_id, paused=paused, now=runtime.clock.now())
    log_event(log, logging.INFO, "job.paused" if paused else "job.resumed", job=job_id)
    return JobPauseState(id=job_id, paused=paused)


@router.post(
    "/api/admin/scheduler/jobs/{job_id}/pause",
    summary="Pause a job on every instance: the leader skips its ticks until it is resumed",
    response_model=JobPauseState,
    responses={
        404: {"description": "No such job"},
        503: {"description": "The scheduler has not started yet"},
    },
)
async def pause_job(
    job_id: str, runtime: Runtime = Depends(get_runtime), service: SchedulerService = Depends(get_scheduler)
) -> JobPauseState:
    return await _set_paused(runtime, service, job_id, True)


@router.post(
    "/api/admin/scheduler/jobs/{job_id}/resume",
    summary="Resume a paused job",
    response_model=JobPauseState,
    responses={
        404: {"description": "No such job"},
        503: {"description": "The scheduler has not started yet"},
    },
)
async def resume_job(
    job_id: str, runtime: Runtime = Depends(get_runtime), service: SchedulerService = Depends(get_scheduler)
) -> JobPauseState:
    return await _set_paused(runtime, service, job_id, False)
