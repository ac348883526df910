"""Fenced writes: a stale term's write is refused, the current term's is applied."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.leader.base import NotLeader
from backburner.leader.static import StaticLeadership


async def test_a_new_term_fences_the_old_one(engine: AsyncEngine) -> None:
    old = await StaticLeadership.claim(engine, "election-a", "instance-1")
    new = await StaticLeadership.claim(engine, "election-a", "instance-2")
    assert new.term.epoch == old.term.epoch + 1

    async with new.fenced() as conn:
        await conn.execute(text("UPDATE organizations SET name = 'renamed' WHERE id = 'org-default'"))
    with pytest.raises(NotLeader) as info:
        async with old.fenced() as conn:
            await conn.execute(text("UPDATE organizations SET name = 'stale' WHERE id = 'org-default'"))
    assert info.value.current_epoch == new.term.epoch
    async with engine.connect() as conn:
        name = (await conn.execute(text("SELECT name FROM organizations WHERE id = 'org-default'"))).scalar()
    assert name == "renamed"


async def test_elections_are_independent(engine: AsyncEngine) -> None:
    a = await StaticLeadership.claim(engine, "election-a", "instance-1")
    await StaticLeadership.claim(engine, "election-b", "instance-2")
    async with a.fenced():
        pass
