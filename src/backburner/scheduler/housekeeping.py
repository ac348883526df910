"""Housekeeping jobs of the leader: `heartbeat` proves it alive (a fenced write) and expires the
rows of dead instances; `statistics` keeps PostgreSQL's planner statistics fresh."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.db.statistics import analyze, stale_tables
from backburner.leader import store as leader_store
from backburner.logs import log_event
from backburner.membership import store as membership_store
from backburner.scheduler.jobs import JobContext, JobSpec

log = logging.getLogger("backburner.scheduler")

HEARTBEAT_JOB_ID = "heartbeat"
STATISTICS_JOB_ID = "statistics"


def heartbeat_job(*, interval_s: float, instance_expiry_s: float, clock: Clock) -> JobSpec:
    async def run(ctx: JobContext) -> None:
        now = clock.now()
        async with ctx.leadership.fenced() as conn:
            await leader_store.touch_heartbeat(conn, ctx.leadership.term.election, now)
            expired = await membership_store.expire(
                conn, last_seen_before=now - timedelta(seconds=instance_expiry_s)
            )
        if expired:
            log_event(log, logging.INFO, "membership.expired", instances=",".join(expired))

    return JobSpec(
        id=HEARTBEAT_JOB_ID,
        name="Leader heartbeat and instance expiry",
        interval_s=interval_s,
        run=run,
    )


def statistics_job(*, engine: AsyncEngine, tables: Collection[str], interval_s: float) -> JobSpec:
    """ANALYZE each of `tables` that autovacuum would, when it has not (see `db/statistics.py`).
    Not fenced: ANALYZE changes no row, and a stale leader's only repeats the work."""

    async def run(ctx: JobContext) -> None:
        async with engine.connect() as conn:
            stale = await stale_tables(conn, tables)
        for table in stale:
            started = time.perf_counter()
            async with engine.begin() as conn:
                await analyze(conn, table)
            log_event(
                log,
                logging.INFO,
                "statistics.analyzed",
                table=table,
                duration_s=round(time.perf_counter() - started, 3),
            )

    return JobSpec(
        id=STATISTICS_JOB_ID,
        name="Planner statistics of changed tables (PostgreSQL)",
        interval_s=interval_s,
        run=run,
    )
