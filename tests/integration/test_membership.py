"""Membership: each instance keeps its row fresh, changes role at once, leaves on stop; the
leader's housekeeping expires the rows of dead instances."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.leader.static import StaticLeadership
from backburner.leader.store import read_election
from backburner.membership import store
from backburner.membership.heartbeat import MembershipHeartbeat
from backburner.scheduler.housekeeping import heartbeat_job
from backburner.scheduler.jobs import JobContext


async def rows(engine: AsyncEngine) -> dict[str, store.InstanceRow]:
    async with engine.connect() as conn:
        return {r.instance_id: r for r in await store.list_instances(conn)}


async def wait_rows(engine: AsyncEngine, condition, timeout_s: float = 5.0) -> dict[str, store.InstanceRow]:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        current = await rows(engine)
        if condition(current):
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"instances never matched within {timeout_s} s: {current}")


async def test_an_instance_beats_changes_role_at_once_and_leaves(engine: AsyncEngine) -> None:
    role = "follower"
    heartbeat = MembershipHeartbeat(
        engine=engine,
        instance_id="i-1",
        process="worker",
        role=lambda: role,
        interval_s=60,
        clock=SystemClock(),
    )
    async with heartbeat:
        first = (await wait_rows(engine, lambda r: "i-1" in r))["i-1"]
        assert (first.role, first.process, first.pid > 0) == ("follower", "worker", True)
        role = "leader"
        heartbeat.beat_soon()  # no need to wait the 60 s interval
        updated = (await wait_rows(engine, lambda r: r["i-1"].role == "leader"))["i-1"]
        assert updated.last_seen_at >= first.last_seen_at
        assert updated.started_at == first.started_at
    assert await rows(engine) == {}


async def test_the_heartbeat_job_expires_dead_instances_and_proves_the_term(engine: AsyncEngine) -> None:
    clock = SystemClock()
    now = clock.now()
    async with engine.begin() as conn:
        for instance_id, seen in (("dead", now - timedelta(seconds=120)), ("alive", now)):
            await store.upsert(
                conn,
                store.InstanceRow(instance_id, "h", 1, "follower", "worker", seen, seen),
            )
    leadership = await StaticLeadership.claim(engine, "test-election", "alive")
    job = heartbeat_job(interval_s=1, instance_expiry_s=60, clock=clock)
    await job.run(JobContext(job.id, now, leadership))
    assert set(await rows(engine)) == {"alive"}
    async with engine.connect() as conn:
        election = await read_election(conn, "test-election")
    assert election is not None and election.heartbeat_at is not None
