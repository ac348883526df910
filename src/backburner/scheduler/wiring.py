"""Builds and starts the elector, the scheduler and the membership heartbeat of a runtime.

Called last by `Runtime._start_components`: the scheduler takes the jobs registered by the
components started before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backburner.leader.factory import create_elector
from backburner.membership.heartbeat import MembershipHeartbeat
from backburner.scheduler.housekeeping import heartbeat_job
from backburner.scheduler.metrics import SchedulerMetrics
from backburner.scheduler.runner import TickRunner
from backburner.scheduler.service import SchedulerService

if TYPE_CHECKING:
    from backburner.runtime import Runtime


async def start_scheduling(runtime: Runtime) -> SchedulerService:
    settings = runtime.settings
    runtime.jobs.add(
        heartbeat_job(
            interval_s=settings.scheduler_heartbeat_interval_seconds,
            instance_expiry_s=settings.instance_expiry_seconds,
            clock=runtime.clock,
        )
    )
    metrics = SchedulerMetrics(runtime.metrics.registry)
    service = SchedulerService(
        elector=create_elector(settings, runtime.engine, runtime.instance_id, runtime.clock),
        jobs=runtime.jobs,
        runner=TickRunner(clock=runtime.clock, metrics=metrics),
        metrics=metrics,
        election=settings.leader_election_name,
        instance_id=runtime.instance_id,
    )
    membership = MembershipHeartbeat(
        engine=runtime.engine,
        instance_id=runtime.instance_id,
        process=runtime.role,
        role=lambda: "leader" if service.is_leader else "follower",
        interval_s=settings.instance_heartbeat_interval_seconds,
        clock=runtime.clock,
    )
    service.on_role_change(membership.beat_soon)
    # Membership first, so it stops after the scheduler has released the lock.
    await runtime.enter_component("membership", membership)
    await runtime.enter_component("scheduler", service)
    return service
