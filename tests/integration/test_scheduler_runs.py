"""The scheduler on both databases: runs recorded once per tick, fenced, due at once on a new
term, cancelled on step-down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.leader.static import StaticLeadership
from backburner.leader.tables import job_runs
from backburner.scheduler import runs
from backburner.scheduler.jobs import JobContext, JobRegistry, JobSpec
from backburner.scheduler.metrics import SchedulerMetrics
from backburner.scheduler.runner import TickRunner
from backburner.scheduler.service import SchedulerService
from tests.support.electors import make_elector


def runner() -> TickRunner:
    return TickRunner(clock=SystemClock(), metrics=SchedulerMetrics(CollectorRegistry()))


def spec(
    run: Callable[[JobContext], Awaitable[None]], interval_s: float = 60.0, job_id: str = "job"
) -> JobSpec:
    return JobSpec(id=job_id, name=job_id, interval_s=interval_s, run=run)


async def all_runs(engine: AsyncEngine) -> list[runs.RunRecord]:
    async with engine.connect() as conn:
        return await runs.list_runs(conn)


@contextlib.asynccontextmanager
async def service(
    engine: AsyncEngine, database_url: str, jobs: list[JobSpec], election: str = "test-election"
) -> AsyncIterator[SchedulerService]:
    registry = JobRegistry()
    for job in jobs:
        registry.add(job)
    service = SchedulerService(
        elector=make_elector(engine, database_url, election=election),
        jobs=registry,
        runner=runner(),
        metrics=SchedulerMetrics(CollectorRegistry()),
        election=election,
        instance_id=f"instance-of-{election}",
    )
    async with service:
        yield service


async def test_the_same_tick_fired_twice_runs_once(engine: AsyncEngine) -> None:
    leadership = await StaticLeadership.claim(engine, "test-election", "me")
    calls = 0

    async def job(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1

    tick = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    outcomes = await asyncio.gather(*(runner().run(spec(job), leadership, tick) for _ in range(2)))
    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert calls == 1
    [record] = await all_runs(engine)
    assert (record.fire_time, record.outcome, record.epoch) == (tick, "succeeded", leadership.term.epoch)
    assert record.finished_at is not None and record.duration_s is not None


async def test_a_stale_term_starts_no_run(engine: AsyncEngine) -> None:
    old = await StaticLeadership.claim(engine, "test-election", "old")
    await StaticLeadership.claim(engine, "test-election", "new")
    called = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        called.set()

    assert await runner().run(spec(job), old, datetime.now(UTC)) == "skipped"
    assert not called.is_set()
    assert await all_runs(engine) == []


async def test_a_failing_run_is_recorded_with_its_error(engine: AsyncEngine) -> None:
    leadership = await StaticLeadership.claim(engine, "test-election", "me")

    async def job(ctx: JobContext) -> None:
        raise RuntimeError("provider said no")

    assert await runner().run(spec(job), leadership, datetime.now(UTC)) == "failed"
    [record] = await all_runs(engine)
    assert record.outcome == "failed"
    assert record.error == "RuntimeError: provider said no"


async def test_the_first_run_is_due_at_once_when_the_term_starts(
    engine: AsyncEngine, database_url: str
) -> None:
    ran = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        ran.set()

    async with service(engine, database_url, [spec(job, interval_s=3600)]) as svc:
        await asyncio.wait_for(ran.wait(), 10)
        assert svc.is_leader
        [record] = await all_runs(engine)
        leadership = svc.leadership
        assert leadership is not None
        assert record.fire_time >= leadership.term.since
        next_run = svc.next_run_time("job")
        assert next_run is not None and next_run.timestamp() % 3600 == 0  # then on the aligned grid


async def test_a_step_down_cancels_the_running_job_and_the_next_term_closes_its_run(
    engine: AsyncEngine, database_url: str
) -> None:
    started: asyncio.Queue[int] = asyncio.Queue()
    cancelled = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        started.put_nowait(ctx.leadership.term.epoch)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with service(engine, database_url, [spec(job, interval_s=3600)]) as svc:
        first_epoch = await asyncio.wait_for(started.get(), 10)
        leadership = svc.leadership
        assert leadership is not None
        leadership.step_down("test")  # as a lost lock connection would
        await asyncio.wait_for(cancelled.wait(), 5)
        # The elector competes again and wins a new term, whose first run is due at once.
        second_epoch = await asyncio.wait_for(started.get(), 10)
        assert second_epoch > first_epoch
        records = {r.epoch: r for r in await all_runs(engine)}
        assert records[first_epoch].outcome == "abandoned"
        assert runs.overlapping_runs(list(records.values())) == []


async def test_two_schedulers_firing_the_same_ticks_run_each_tick_once(
    engine: AsyncEngine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    executed: Counter[datetime] = Counter()
    enough = asyncio.Event()

    async def job(ctx: JobContext) -> None:
        executed[ctx.fire_time] += 1
        if len(executed) >= 6:
            enough.set()

    # Two elections: both lead, both schedule the job on the same aligned grid.
    async with (
        service(engine, database_url, [spec(job, interval_s=0.2)], election="a"),
        service(engine, database_url, [spec(job, interval_s=0.2)], election="b"),
    ):
        await asyncio.wait_for(enough.wait(), 15)
    assert set(executed.values()) == {1}
    async with engine.connect() as conn:
        fire_times = (await conn.execute(select(job_runs.c.fire_time))).scalars().all()
    assert len(fire_times) == len(set(fire_times)) >= 6
    skipped = [r for r in caplog.records if getattr(r, "event", None) == "job.skipped"]
    assert any(getattr(r, "reason", None) == "already_run" for r in skipped)  # the ticks did collide
