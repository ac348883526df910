"""Helpers of the schedule tests: a webhook receiver, and a dispatcher driven under a chosen term.

The dispatcher is built like the runtime builds it (the `Schedules` component from its explicit
dependencies) but runs under a `StaticLeadership` the test holds, so a test decides when a term
starts and ends; its clock is a `FakeClock` the test moves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.engine import create_engine
from backburner.leader.static import StaticLeadership
from backburner.scheduler.jobs import JobRegistry
from backburner.schedules.component import Schedules
from backburner.schedules.models import ScheduleCreate
from backburner.schedules.store import RunRecord, ScheduleRecord
from backburner.schedules.tables import schedule_runs
from backburner.settings import Settings
from tests.support.batch_env import FakeClock

ORG = "org-default"
ELECTION = "schedules-test"


# --- handlers named in `schedule_handlers` ---------------------------------------------------------

HANDLED: list[Any] = []


async def record_fire(fire: Any) -> None:
    HANDLED.append(fire)


# --- a dispatcher under a term the test holds ---------------------------------------------------------


@dataclass
class Term:
    leadership: StaticLeadership
    task: asyncio.Task[None]

    async def end(self) -> None:
        """The term ends as a step-down does: everything still in flight is abandoned."""
        self.leadership.lost.set()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


@dataclass
class Harness:
    engine: AsyncEngine
    component: Schedules
    clock: FakeClock
    terms: list[Term] = field(default_factory=list)

    async def create(self, **fields: Any) -> ScheduleRecord:
        return await self.component.service.create(ORG, ScheduleCreate(**fields))

    async def start_term(self, instance_id: str = "test-instance") -> Term:
        """Begin a term (which fences every earlier one) and dispatch under it."""
        leadership = await StaticLeadership.claim(self.engine, ELECTION, instance_id)
        task = asyncio.create_task(self.component.dispatcher.run(leadership), name="test.dispatcher")
        term = Term(leadership, task)
        self.terms.append(term)
        return term

    async def runs(self, schedule_id: str) -> list[RunRecord]:
        """Every run of a schedule, earliest fire time first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(schedule_runs)
                .where(schedule_runs.c.schedule_id == schedule_id)
                .order_by(schedule_runs.c.fire_time)
            )
            return [RunRecord.from_row(row) for row in rows]

    async def wait_runs(
        self,
        schedule_id: str,
        done: Callable[[list[RunRecord]], bool],
        what: str,
        timeout_s: float = 20.0,
    ) -> list[RunRecord]:
        """Wait (waking the dispatcher) until the runs satisfy `done`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.runs(schedule_id)
            if done(found):
                return found
            if time.monotonic() > deadline:
                shown = [(r.fire_time.isoformat(), r.outcome, r.attempts) for r in found[-5:]]
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; {len(found)} runs, the last: {shown}"
                )
            self.component.dispatcher.wake()
            await asyncio.sleep(0.05)

    async def schedule(self, schedule_id: str) -> ScheduleRecord:
        return await self.component.store.get(ORG, schedule_id)


def finished(count: int) -> Callable[[list[RunRecord]], bool]:
    return lambda runs: len(runs) >= count and all(r.finished_at is not None for r in runs)


@asynccontextmanager
async def dispatch_harness(settings: Settings, clock: FakeClock) -> AsyncIterator[Harness]:
    engine = create_engine(settings)
    component = Schedules(
        engine=engine, settings=settings, clock=clock, registry=CollectorRegistry(), jobs=JobRegistry()
    )
    try:
        async with component:
            harness = Harness(engine, component, clock)
            try:
                yield harness
            finally:
                for term in harness.terms:
                    await term.end()
    finally:
        await engine.dispose()
