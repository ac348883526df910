"""The scheduler's status as JSON-ready data: this instance's view plus the database's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import iso_or_none
from backburner.db.transactions import reading
from backburner.leader import store as leader_store
from backburner.logs import describe_error
from backburner.membership import store as membership_store
from backburner.membership.roles import shown_role
from backburner.scheduler import runs
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.ticks import MICROS_PER_S, TickGrid


def _last_run(record: runs.RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "outcome": record.outcome,
        "duration": record.duration_s,
        "error": record.error,
        "fire_time": iso_or_none(record.fire_time),
        "started_at": iso_or_none(record.started_at),
        "finished_at": iso_or_none(record.finished_at),
        "epoch": record.epoch,
        "instance_id": record.instance_id,
    }


async def scheduler_status(
    service: SchedulerService, engine: AsyncEngine, *, now: datetime, heartbeat_interval_s: float
) -> dict[str, Any]:
    specs = service.job_specs()
    elector = service.elector
    status: dict[str, Any] = {
        "instance_id": service.instance_id,
        "is_leader": service.is_leader,
        "election": {
            "name": service.election,
            "backend": elector.backend,
            "mode": elector.mode,
            "lease_seconds": elector.lease_seconds,
            "state": elector.state,
        },
        "leader": None,
        "jobs": [],
        "instances": [],
        "database_error": None,
    }
    last: dict[str, runs.RunRecord] = {}
    paused: set[str] = set()
    try:
        async with reading(engine) as conn:
            election = await leader_store.read_election(conn, service.election)
            last = await runs.last_runs(conn, [spec.id for spec in specs])
            paused = await runs.paused_jobs(conn)
            members = await membership_store.list_instances(conn)
    except Exception as exc:  # the local view is still worth showing while the database is away
        status["database_error"] = describe_error(exc)
    else:
        if election is not None and election.released_at is None:
            status["leader"] = {
                "instance_id": election.holder,
                "epoch": election.epoch,
                "since": iso_or_none(election.acquired_at),
                "heartbeat_at": iso_or_none(election.heartbeat_at),
            }
        leader_id = status["leader"]["instance_id"] if status["leader"] else None
        status["instances"] = [
            {
                "instance_id": m.instance_id,
                "role": shown_role(m.instance_id, leader_id, m.last_seen_at, now, heartbeat_interval_s),
                "last_seen": iso_or_none(m.last_seen_at),
                "last_seen_seconds_ago": round(max(0.0, (now - m.last_seen_at).total_seconds()), 1),
                "host": m.host,
                "pid": m.pid,
                "process": m.process,
                "started": iso_or_none(m.started_at),
            }
            for m in members
        ]
    status["jobs"] = [
        {
            "id": spec.id,
            "name": spec.name,
            "trigger": service.trigger_of(spec.id),
            "interval_seconds": spec.interval_s,
            # What the ticks use: a jitter is at most half the interval.
            "jitter_seconds": TickGrid.of(spec.id, spec.interval_s, spec.jitter_s).jitter_us / MICROS_PER_S,
            "configured_jitter_seconds": spec.jitter_s,
            "next_run_time": iso_or_none(service.next_run_time(spec.id)),
            "paused": spec.id in paused,
            "last_run": _last_run(last.get(spec.id)),
        }
        for spec in specs
    ]
    return status
