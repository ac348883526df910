"""Transactions of the stores: joining the caller's, and ones whose commit need not wait for the disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.engine import READ_ONLY


def transaction(
    engine: AsyncEngine, conn: AsyncConnection | None
) -> AbstractAsyncContextManager[AsyncConnection]:
    """The caller's transaction (a fenced one, for the sweeper) or a new one."""
    return nullcontext(conn) if conn is not None else engine.begin()


@asynccontextmanager
async def redoable_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction whose loss in a database crash costs nothing but redoing it: on PostgreSQL
    its commit does not wait for the disk (`synchronous_commit` off for it alone).

    A crash of the database server may lose the last such commits, never half of one, and the
    database stays consistent; a later synchronous commit (the one that makes the work visible or
    final) flushes every commit before it. Only work that is resumed from what was stored may
    use it.
    """
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
        yield conn


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only: on SQLite its transaction takes no lock, so that a long read
    never holds back a writer (on PostgreSQL reads take none anyway)."""
    async with engine.connect() as conn:
        yield await conn.execution_options(**{READ_ONLY: True})


def reading_within(
    engine: AsyncEngine, conn: AsyncConnection | None
) -> AbstractAsyncContextManager[AsyncConnection]:
    """The caller's transaction, or a new connection for reads only."""
    return nullcontext(conn) if conn is not None else reading(engine)
