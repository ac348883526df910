"""The leader's `statistics` job: PostgreSQL's planner statistics of the tables that changed are
gathered even when autovacuum does not gather them (it is off on this machine's server)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import utcnow
from backburner.db.all_tables import table_names
from backburner.db.engine import create_engine
from backburner.db.tables import organizations
from backburner.leader.static import StaticLeadership
from backburner.runtime import Runtime
from backburner.scheduler.housekeeping import STATISTICS_JOB_ID, statistics_job
from backburner.scheduler.jobs import JobContext
from tests.conftest import MakeSettings

ROWS = 400


async def add_organizations(engine: AsyncEngine, count: int, first: int = 0) -> None:
    """`count` rows, their counts flushed to the server's statistics at once (a backend otherwise
    reports them up to a second later)."""
    now = utcnow()
    numbers = range(first, first + count)
    async with engine.begin() as conn:
        await conn.execute(
            insert(organizations),
            [{"id": f"org-stats-{i}", "name": f"stats {i}", "created_at": now} for i in numbers],
        )
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))


async def analyzed(engine: AsyncEngine) -> dict[str, Any]:
    """Per table: when ANALYZE last ran on it (None: never), and its changes since."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT relname, last_analyze, n_mod_since_analyze FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema()"
            )
        )
        return {row.relname: (row.last_analyze, row.n_mod_since_analyze) for row in rows}


async def test_the_job_analyzes_the_tables_that_changed_enough_and_no_other(
    make_settings: MakeSettings, postgres_url: str
) -> None:
    engine = create_engine(make_settings(database_url=postgres_url).settings)
    try:
        leadership = await StaticLeadership.claim(engine, "stats-test", "instance-a")
        job = statistics_job(engine=engine, tables=table_names(), interval_s=30)
        context = JobContext(STATISTICS_JOB_ID, utcnow(), leadership)
        await add_organizations(engine, ROWS)

        await job.run(context)
        after = await analyzed(engine)
        last, changes = after["organizations"]
        assert last is not None and changes == 0
        assert after["passages"][0] is None and after["llm_batches"][0] is None  # unchanged

        # 70 more rows are under autovacuum's threshold for 400 (50 + 10 % of them: 90): left alone.
        await add_organizations(engine, 70, first=ROWS)
        await job.run(context)
        again = await analyzed(engine)
        assert again["organizations"] == (last, 70)
    finally:
        await engine.dispose()


async def test_the_leader_runs_the_job_on_postgresql_only(
    make_settings: MakeSettings, database_url: str
) -> None:
    settings = make_settings(database_url=database_url, statistics_interval_seconds=0.2)
    async with Runtime(settings, role="worker") as runtime:
        await runtime.wait_ready(30)
        if not database_url.startswith("postgresql"):
            assert runtime.jobs.get(STATISTICS_JOB_ID) is None  # SQLite plans without them
            return
        assert runtime.jobs.get(STATISTICS_JOB_ID) is not None
        await add_organizations(runtime.engine, ROWS)
        deadline = time.monotonic() + 30
        while (await analyzed(runtime.engine))["organizations"][0] is None:
            assert time.monotonic() < deadline, "the leader never analyzed the changed table"
            await asyncio.sleep(0.1)
