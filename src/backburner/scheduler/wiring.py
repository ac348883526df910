"""Builds the elector, the scheduler and the membership heartbeat of an instance.

Built last by the runtime: the scheduler takes the jobs registered by the components built
before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.db.all_tables import table_names
from backburner.leader.factory import create_elector
from backburner.membership.heartbeat import MembershipHeartbeat
from backburner.scheduler.housekeeping import heartbeat_job, statistics_job
from backburner.scheduler.jobs import JobRegistry
from backburner.scheduler.metrics import SchedulerMetrics
from backburner.scheduler.runner import TickRunner
from backburner.scheduler.service import SchedulerService
from backburner.settings import Settings


@dataclass(frozen=True)
class Scheduling:
    membership: MembershipHeartbeat
    scheduler: SchedulerService


def build_scheduling(
    *,
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    registry: CollectorRegistry,
    jobs: JobRegistry,
    instance_id: str,
    process: str,
) -> Scheduling:
    jobs.add(
        heartbeat_job(
            interval_s=settings.scheduler_heartbeat_interval_seconds,
            instance_expiry_s=settings.instance_expiry_seconds,
            clock=clock,
        )
    )
    if engine.dialect.name == "postgresql":
        interval_s = settings.statistics_interval_seconds
        jobs.add(statistics_job(engine=engine, tables=table_names(), interval_s=interval_s))
    metrics = SchedulerMetrics(registry)
    scheduler = SchedulerService(
        elector=create_elector(settings, engine, instance_id, clock),
        jobs=jobs,
        runner=TickRunner(clock=clock, metrics=metrics),
        metrics=metrics,
        election=settings.leader_election_name,
        instance_id=instance_id,
    )
    membership = MembershipHeartbeat(
        engine=engine,
        instance_id=instance_id,
        process=process,
        role=lambda: "leader" if scheduler.is_leader else "follower",
        interval_s=settings.instance_heartbeat_interval_seconds,
        clock=clock,
    )
    scheduler.on_role_change(membership.beat_soon)
    return Scheduling(membership, scheduler)
