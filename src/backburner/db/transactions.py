"""A store method that takes an optional connection joins the caller's transaction or opens one."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def transaction(
    engine: AsyncEngine, conn: AsyncConnection | None
) -> AbstractAsyncContextManager[AsyncConnection]:
    """The caller's transaction (a fenced one, for the sweeper) or a new one."""
    return nullcontext(conn) if conn is not None else engine.begin()
