"""The routers' dependencies: one per component of the runtime, and the caller.

Routers never see the runtime itself; a component that has not started yet answers 503.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.auth.principal import OPEN_PRINCIPAL, Principal
from backburner.batches.component import BatchesComponent
from backburner.clock import Clock
from backburner.dashboard.view import DashboardSources
from backburner.files.component import FileProcessing
from backburner.files.reembed.service import ReembedService
from backburner.files.service import FileService
from backburner.monitoring.metrics import Metrics
from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor
from backburner.monitoring.watchdog import Watchdog
from backburner.readiness import Readiness
from backburner.runtime import Runtime
from backburner.scheduler.service import SchedulerService
from backburner.schedules.component import Schedules
from backburner.settings import Settings


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


def get_engine(request: Request) -> AsyncEngine:
    return _runtime(request).engine


def get_clock(request: Request) -> Clock:
    return _runtime(request).clock


def get_instance_id(request: Request) -> str:
    return _runtime(request).instance_id


C = TypeVar("C")


def _started(component: C | None, not_yet: str) -> C:
    """The component, or 503 saying what has not started yet."""
    if component is None:
        raise HTTPException(503, not_yet)
    return component


def get_metrics(request: Request) -> Metrics:
    return _runtime(request).metrics


def get_readiness(request: Request) -> Readiness:
    """All of the instance's readiness checks as one call."""
    return _runtime(request).readiness


def get_batches(request: Request) -> BatchesComponent:
    return _started(_runtime(request).batches, "the batches component has not started yet; retry shortly")


def get_file_processing(request: Request) -> FileProcessing:
    return _started(_runtime(request).files, "file processing is starting; retry shortly")


def get_file_service(request: Request) -> FileService:
    return get_file_processing(request).service


def get_reembed_service(request: Request) -> ReembedService:
    return get_file_processing(request).reembed


def get_scheduler(request: Request) -> SchedulerService:
    not_yet = "the scheduler has not started yet; /readyz says what it waits for"
    return _started(_runtime(request).scheduler, not_yet)


def get_schedules(request: Request) -> Schedules:
    return _started(_runtime(request).schedules, "schedules have not started yet; retry shortly")


def get_watchdog(request: Request) -> Watchdog:
    return _started(_runtime(request).watchdog, "the watchdog has not started")


def get_executor(request: Request) -> InstrumentedThreadPoolExecutor | None:
    """The loop's measured default executor (None where the process did not install one)."""
    return _runtime(request).executor


def get_dashboard_sources(request: Request) -> DashboardSources:
    """What the dashboard reads; a part that has not started yet shows as an empty panel."""
    runtime = _runtime(request)
    return DashboardSources(
        settings=runtime.settings,
        engine=runtime.engine,
        clock=runtime.clock,
        instance_id=runtime.instance_id,
        scheduler=runtime.scheduler,
        batches=runtime.batches,
        files=runtime.files,
        watchdog=runtime.watchdog,
        schedules=runtime.schedules,
    )


def get_principal(request: Request) -> Principal:
    """The caller, set by the authentication middleware (open principal when auth is off)."""
    principal: Principal = getattr(request.state, "principal", OPEN_PRINCIPAL)
    return principal


def require_deployment_admin(request: Request) -> None:
    """Deployment-wide actions (pausing jobs, every organization's figures) need a deployment
    admin key; an organization's admin key acts on its own organization only."""
    if not get_principal(request).is_deployment_admin:
        raise HTTPException(
            403,
            "this action affects every organization and needs a deployment admin key "
            "(`backburner keys create --deployment-admin`)",
        )


def get_organization_id(request: Request) -> str:
    """The organization that scopes every read and write of this request."""
    return get_principal(request).organization_id
