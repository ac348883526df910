"""Fenced writes: a leader-only transaction proves, inside itself, that its epoch is current."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.leader.base import NotLeader, Term
from backburner.leader.tables import leader_epochs


@asynccontextmanager
async def fenced_transaction(engine: AsyncEngine, term: Term) -> AsyncIterator[AsyncConnection]:
    """Begin a transaction that holds a share lock on the epoch row while the caller writes.

    On PostgreSQL `FOR SHARE` makes a new leader's epoch increment wait for this transaction, so
    a write either commits before the new term starts or is refused; SQLite serialises writers
    with BEGIN IMMEDIATE, which gives the same guarantee.
    """
    async with engine.begin() as conn:
        query = select(leader_epochs.c.epoch).where(leader_epochs.c.name == term.election)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        current = (await conn.execute(query)).scalar_one_or_none()
        if current != term.epoch:
            raise NotLeader(term.election, term.epoch, current)
        yield conn


async def begin_term(conn: AsyncConnection, election: str, instance_id: str, now: datetime) -> int:
    """Increment the election's epoch for a new holder; returns the new epoch.

    Call it only while holding the election's lock, in its own transaction.
    """
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert(leader_epochs)
        .values(name=election, epoch=0, holder=instance_id, acquired_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    result = await conn.execute(
        update(leader_epochs)
        .where(leader_epochs.c.name == election)
        .values(epoch=leader_epochs.c.epoch + 1, holder=instance_id, acquired_at=now)
        .returning(leader_epochs.c.epoch)
    )
    return int(result.scalar_one())
