"""SQL of the run history (`job_runs`): claim a tick, record its outcome, read the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.leader.tables import job_pauses, job_runs


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


async def recent_runs(conn: AsyncConnection, job_ids: list[str], per_job: int) -> dict[str, list[RunRecord]]:
    """The latest `per_job` runs of each job, oldest first (for run-history sparklines)."""
    if not job_ids:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=job_runs.c.job_id, order_by=(job_runs.c.started_at.desc(), job_runs.c.id.desc()))
        .label("rank")
    )
    ranked = select(job_runs, rank).where(job_runs.c.job_id.in_(job_ids)).subquery()
    rows = await conn.execute(
        select(ranked).where(ranked.c.rank <= per_job).order_by(ranked.c.job_id, ranked.c.started_at)
    )
    history: dict[str, list[RunRecord]] = {job_id: [] for job_id in job_ids}
    for row in rows:
        history[row.job_id].append(_record(row))
    return history


async def paused_jobs(conn: AsyncConnection) -> set[str]:
    return set((await conn.execute(select(job_pauses.c.job_id))).scalars())


async def set_paused(conn: AsyncConnection, job_id: str, *, paused: bool, now: datetime) -> None:
    """Pause or resume a job for the whole deployment (whichever instance leads)."""
    if not paused:
        await conn.execute(job_pauses.delete().where(job_pauses.c.job_id == job_id))
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert(job_pauses)
        .values(job_id=job_id, paused_at=now)
        .on_conflict_do_nothing(index_elements=["job_id"])
    )


async def is_paused(conn: AsyncConnection, job_id: str) -> bool:
    query = select(job_pauses.c.job_id).where(job_pauses.c.job_id == job_id)
    return (await conn.execute(query)).first() is not None
