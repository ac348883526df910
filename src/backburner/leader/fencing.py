"""Fenced writes: a leader-only transaction proves, inside itself, that its epoch is current."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.clock import Clock
from backburner.leader.base import NotLeader, Term
from backburner.leader.tables import job_runs, leader_epochs


@asynccontextmanager
async def fenced_transaction(
    engine: AsyncEngine, term: Term, *, idle_timeout_s: float | None = None
) -> AsyncIterator[AsyncConnection]:
    """Begin a transaction that holds a share lock on the epoch row while the caller writes.

    On PostgreSQL `FOR SHARE` makes a new leader's epoch increment wait for this transaction, so
    a write either commits before the new term starts or is refused; SQLite serialises writers
    with BEGIN IMMEDIATE, which gives the same guarantee.

    `idle_timeout_s` (PostgreSQL) ends the transaction if its client goes quiet inside it: a
    frozen leader must not hold the share lock, and so block the next term, for ever.
    """
    async with engine.begin() as conn:
        if idle_timeout_s is not None and conn.dialect.name == "postgresql":
            timeout_ms = max(1, int(idle_timeout_s * 1000))
            await conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {timeout_ms}"))
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


ABANDONED_ERROR = "abandoned: its term ended before the run recorded an outcome"


async def start_term(conn: AsyncConnection, election: str, instance_id: str, clock: Clock) -> Term:
    """Begin a new term in the caller's transaction: increment the epoch, then close the runs that
    earlier terms left unfinished.

    The time of the term is read after the increment, which waits for every fenced transaction
    of the old term: no write of the old term can carry a later time than the new term's start,
    so runs of different terms never overlap in the `job_runs` table.
    """
    epoch = await begin_term(conn, election, instance_id, clock.now())
    since = clock.now()
    await conn.execute(
        update(leader_epochs)
        .where(leader_epochs.c.name == election)
        .values(acquired_at=since, heartbeat_at=None, released_at=None)
    )
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.election == election, job_runs.c.finished_at.is_(None), job_runs.c.epoch < epoch)
        .values(outcome="abandoned", finished_at=since, error=ABANDONED_ERROR)
    )
    return Term(election, epoch, instance_id, since)
