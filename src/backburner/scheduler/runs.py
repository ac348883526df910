"""SQL of the run history (`job_runs`): claim a tick, record its outcome, read the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.leader.tables import job_runs


@dataclass(frozen=True)
class RunRecord:
    job_id: str
    election: str
    fire_time: datetime
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None
    duration_s: float | None
    epoch: int
    instance_id: str


async def claim_tick(
    conn: AsyncConnection,
    *,
    job_id: str,
    election: str,
    fire_time: datetime,
    started_at: datetime,
    epoch: int,
    instance_id: str,
) -> int | None:
    """Record a run as started; None when this (job, fire time) was already claimed."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = await conn.execute(
        insert(job_runs)
        .values(
            job_id=job_id,
            election=election,
            fire_time=fire_time,
            started_at=started_at,
            outcome="running",
            epoch=epoch,
            instance_id=instance_id,
        )
        .on_conflict_do_nothing(index_elements=["job_id", "fire_time"])
        .returning(job_runs.c.id)
    )
    run_id = result.scalar_one_or_none()
    return None if run_id is None else int(run_id)


async def finish_run(
    conn: AsyncConnection,
    run_id: int,
    *,
    outcome: str,
    finished_at: datetime,
    duration_s: float,
    error: str | None,
) -> None:
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id, job_runs.c.finished_at.is_(None))
        .values(outcome=outcome, finished_at=finished_at, duration_s=duration_s, error=error)
    )


def _record(row: Row[Any]) -> RunRecord:
    return RunRecord(
        job_id=row.job_id,
        election=row.election,
        fire_time=row.fire_time,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
        error=row.error,
        duration_s=row.duration_s,
        epoch=int(row.epoch),
        instance_id=row.instance_id,
    )


async def last_runs(conn: AsyncConnection, job_ids: list[str]) -> dict[str, RunRecord]:
    """The latest run (by start) of each job."""
    if not job_ids:
        return {}
    latest = (
        select(job_runs.c.job_id, func.max(job_runs.c.started_at).label("started_at"))
        .where(job_runs.c.job_id.in_(job_ids))
        .group_by(job_runs.c.job_id)
        .subquery()
    )
    rows = await conn.execute(
        select(job_runs)
        .join(
            latest, and_(job_runs.c.job_id == latest.c.job_id, job_runs.c.started_at == latest.c.started_at)
        )
        .order_by(job_runs.c.id)
    )
    return {record.job_id: record for record in map(_record, rows)}


async def list_runs(conn: AsyncConnection, *, election: str | None = None) -> list[RunRecord]:
    query = select(job_runs).order_by(job_runs.c.started_at, job_runs.c.id)
    if election is not None:
        query = query.where(job_runs.c.election == election)
    return [_record(row) for row in await conn.execute(query)]


def overlapping_runs(runs: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """Pairs of runs of one election by different terms whose [started, finished] intervals
    overlap; an unfinished run counts as still running. Fencing makes this empty."""
    pairs = []
    ordered = sorted(runs, key=lambda r: r.started_at)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if first.finished_at is not None and second.started_at >= first.finished_at:
                break  # sorted by start: no later run can overlap `first`
            if first.election == second.election and first.epoch != second.epoch:
                pairs.append((first, second))
    return pairs
