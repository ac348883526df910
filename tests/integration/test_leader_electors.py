"""The elector behaviour suite, run against both electors (PostgreSQL advisory lock, file lock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.leader.base import NotLeader
from backburner.leader.static import StaticLeadership
from backburner.leader.tables import job_runs, leader_epochs
from backburner.scheduler import runs
from tests.support.electors import Candidate, first_leader, make_elector

TAKEOVER_S = 2.0


@pytest.fixture
async def two(engine: AsyncEngine, database_url: str):  # type: ignore[no-untyped-def]
    candidates = [Candidate(make_elector(engine, database_url)).start() for _ in range(2)]
    yield candidates
    for candidate in candidates:
        await candidate.stop()


async def test_exactly_one_leads_and_a_release_hands_over_at_once(
    engine: AsyncEngine, two: list[Candidate]
) -> None:
    leader = await first_leader(two, 10)
    follower = two[1] if leader is two[0] else two[0]
    # The follower waits on the lock: it must not lead while the leader holds it.
    with pytest.raises(AssertionError):
        await follower.wait_leading(0.5)
    old = leader.leadership
    assert old is not None

    started = asyncio.get_running_loop().time()
    await leader.stop()  # graceful: releases the lock
    new = await follower.wait_leading(TAKEOVER_S)
    assert asyncio.get_running_loop().time() - started < TAKEOVER_S
    assert old.lost.is_set() and old.reason == "released"
    assert new.term.epoch == old.term.epoch + 1

    with pytest.raises(NotLeader):  # refused locally: the old term knows it ended
        async with old.fenced():
            pass
    with pytest.raises(NotLeader) as refused:  # and refused by the database fence
        async with old.fenced_unchecked():
            pass
    assert refused.value.current_epoch == new.term.epoch
    async with new.fenced() as conn:
        row = (await conn.execute(select(leader_epochs).where(leader_epochs.c.name == "test-election"))).one()
    assert (row.holder, row.epoch, row.released_at) == (new.term.instance_id, new.term.epoch, None)


async def test_a_term_fenced_out_by_a_newer_epoch_steps_down_and_competes_again(
    engine: AsyncEngine, database_url: str
) -> None:
    candidate = Candidate(make_elector(engine, database_url)).start()
    try:
        first = await candidate.wait_leading(10)
        await StaticLeadership.claim(engine, "test-election", "someone-else")
        with pytest.raises(NotLeader):
            async with first.fenced():
                pass
        assert first.lost.is_set() and first.reason == "fenced_out"
        # The lock was given up and won again: a new term, above the intruder's epoch.
        second = await candidate.wait_leading(TAKEOVER_S)
        assert second.term.epoch == first.term.epoch + 2
    finally:
        await candidate.stop()


async def test_a_new_term_closes_the_runs_its_predecessor_left_unfinished(
    engine: AsyncEngine, database_url: str
) -> None:
    candidate = Candidate(make_elector(engine, database_url)).start()
    try:
        first = await candidate.wait_leading(10)
        now = SystemClock().now()
        async with first.fenced() as conn:
            run_id = await runs.claim_tick(
                conn,
                job_id="j",
                election="test-election",
                fire_time=now,
                started_at=now,
                epoch=first.term.epoch,
                instance_id=first.term.instance_id,
            )
        assert run_id is not None
        first.step_down("test")
        second = await candidate.wait_leading(TAKEOVER_S)
        async with engine.connect() as conn:
            row = (await conn.execute(select(job_runs).where(job_runs.c.id == run_id))).one()
        assert row.outcome == "abandoned"
        assert row.finished_at == second.term.since
        assert second.term.since >= now
    finally:
        await candidate.stop()


async def test_the_term_records_holder_and_time(engine: AsyncEngine, database_url: str) -> None:
    before = datetime.now(UTC)
    candidate = Candidate(make_elector(engine, database_url, instance_id="me-1")).start()
    try:
        leadership = await candidate.wait_leading(10)
        async with engine.connect() as conn:
            holder, _acquired = (
                await conn.execute(
                    text("SELECT holder, acquired_at FROM leader_epochs WHERE name = 'test-election'")
                )
            ).one()
        assert holder == "me-1" == leadership.term.instance_id
        assert leadership.term.since >= before
    finally:
        await candidate.stop()
