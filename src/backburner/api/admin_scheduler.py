"""`GET /api/admin/scheduler/status`: who leads, with which epoch, the jobs and the instances."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from backburner.api.deps import get_runtime
from backburner.runtime import Runtime
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.status import scheduler_status

router = APIRouter(tags=["admin"])


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
    jitter_seconds: float
    next_run_time: str | None
    last_run: LastRun | None


class InstanceInfo(BaseModel):
    instance_id: str
    role: str
    last_seen: str
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
    return await scheduler_status(service, runtime.engine)
