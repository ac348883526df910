"""`GET /api/admin/scheduler/status`: who leads, with which epoch, the jobs and the instances."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.api.deps import get_clock, get_engine, get_scheduler, get_settings, require_deployment_admin
from backburner.clock import Clock
from backburner.logs import log_event
from backburner.scheduler import runs
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.status import scheduler_status
from backburner.settings import Settings

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


@router.get(
    "/api/admin/scheduler/status",
    summary="Leader election and scheduler status",
    response_model=SchedulerStatus,
    responses={503: {"description": "The scheduler has not started yet"}},
)
async def status(
    engine: AsyncEngine = Depends(get_engine),
    service: SchedulerService = Depends(get_scheduler),
    clock: Clock = Depends(get_clock),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    return await scheduler_status(
        service,
        engine,
        now=clock.now(),
        heartbeat_interval_s=settings.instance_heartbeat_interval_seconds,
    )


JOB_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not a deployment admin key: the job runs for every organization"},
    404: {"description": "No such job"},
    503: {"description": "The scheduler has not started yet"},
}


class JobPauseState(BaseModel):
    id: str
    paused: bool


async def _set_paused(
    engine: AsyncEngine, clock: Clock, service: SchedulerService, job_id: str, paused: bool
) -> JobPauseState:
    if job_id not in {spec.id for spec in service.job_specs()}:
        raise HTTPException(404, f"no scheduler job {job_id!r}")
    async with engine.begin() as conn:
        await runs.set_paused(conn, job_id, paused=paused, now=clock.now())
    log_event(log, logging.INFO, "job.paused" if paused else "job.resumed", job=job_id)
    return JobPauseState(id=job_id, paused=paused)


@router.post(
    "/api/admin/scheduler/jobs/{job_id}/pause",
    summary="Pause a job on every instance: the leader skips its ticks until it is resumed",
    response_model=JobPauseState,
    responses=JOB_ACTION_RESPONSES,
    dependencies=[Depends(require_deployment_admin)],
)
async def pause_job(
    job_id: str,
    engine: AsyncEngine = Depends(get_engine),
    clock: Clock = Depends(get_clock),
    service: SchedulerService = Depends(get_scheduler),
) -> JobPauseState:
    return await _set_paused(engine, clock, service, job_id, True)


@router.post(
    "/api/admin/scheduler/jobs/{job_id}/resume",
    summary="Resume a paused job",
    response_model=JobPauseState,
    responses=JOB_ACTION_RESPONSES,
    dependencies=[Depends(require_deployment_admin)],
)
async def resume_job(
    job_id: str,
    engine: AsyncEngine = Depends(get_engine),
    clock: Clock = Depends(get_clock),
    service: SchedulerService = Depends(get_scheduler),
) -> JobPauseState:
    return await _set_paused(engine, clock, service, job_id, False)
