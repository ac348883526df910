"""A leadership granted outright: for one-instance tools and for tests of leader-only jobs."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.clock import utcnow
from backburner.leader.base import Term
from backburner.leader.fencing import begin_term, fenced_transaction


class StaticLeadership:
    def __init__(self, engine: AsyncEngine, term: Term) -> None:
        self._engine = engine
        self._term = term
        self._lost = asyncio.Event()

    @classmethod
    async def claim(cls, engine: AsyncEngine, election: str, instance_id: str) -> StaticLeadership:
        """Start a new term (incrementing the epoch, which fences any earlier holder)."""
        now = utcnow()
        async with engine.begin() as conn:
            epoch = await begin_term(conn, election, instance_id, now)
        return cls(engine, Term(election, epoch, instance_id, now))

    @property
    def term(self) -> Term:
        return self._term

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    def fenced(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return fenced_transaction(self._engine, self._term)
