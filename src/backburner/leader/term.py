"""One term of office won from an elector: its fencing token, its end, and fenced writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.clock import Clock
from backburner.leader import store
from backburner.leader.base import NotLeader, Term
from backburner.leader.fencing import fenced_transaction
from backburner.logs import log_event

log = logging.getLogger("backburner.leader")

TERM_END_TIMEOUT_S = 5.0


class ElectedLeadership:
    """A `Leadership` whose end is decided by its elector or by a refused fenced write.

    Once `lost` is set, `fenced()` refuses at once without asking the database: an instance that
    stepped down makes no leader-only write, even if no one has taken over yet.
    """

    def __init__(self, engine: AsyncEngine, term: Term, *, idle_timeout_s: float | None = None) -> None:
        self._engine = engine
        self._term = term
        self._idle_timeout_s = idle_timeout_s
        self._lost = asyncio.Event()
        self._listeners: list[Callable[[str], None]] = []
        self.reason: str | None = None

    @property
    def term(self) -> Term:
        return self._term

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    def step_down(self, reason: str) -> bool:
        """End the term; True if this call ended it (the first reason is kept)."""
        if self._lost.is_set():
            return False
        self.reason = reason
        self._lost.set()
        for listener in self._listeners:
            listener(reason)
        return True

    def on_lost(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` when the term ends (the elector's lock keeper listens)."""
        self._listeners.append(listener)

    @asynccontextmanager
    async def fenced(self) -> AsyncIterator[AsyncConnection]:
        if self._lost.is_set():
            raise NotLeader(self._term.election, self._term.epoch, None)
        try:
            async with self.fenced_unchecked() as conn:
                yield conn
        except NotLeader as exc:
            mine = (exc.election, exc.epoch) == (self._term.election, self._term.epoch)
            if mine and self.step_down("fenced_out"):
                log_event(
                    log,
                    logging.WARNING,
                    "leader.lost",
                    reason="fenced_out",
                    epoch=exc.epoch,
                    current_epoch=exc.current_epoch,
                )
            raise

    def fenced_unchecked(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """The database fence alone, even after a local step-down (used to record the term's end)."""
        return fenced_transaction(self._engine, self._term, idle_timeout_s=self._idle_timeout_s)


async def record_term_end(leadership: ElectedLeadership, clock: Clock) -> bool:
    """Mark the term released in its epoch row, through the fence; False if refused or failed.

    After a step-down forced by a takeover this write is refused with `NotLeader`, which is the
    evidence, in the log, that the stale term could not write any more.
    """
    term = leadership.term
    try:
        async with asyncio.timeout(TERM_END_TIMEOUT_S), leadership.fenced_unchecked() as conn:
            await store.mark_released(conn, term.election, clock.now())
    except NotLeader as exc:
        log_event(
            log,
            logging.WARNING,
            "leader.fenced_out",
            election=term.election,
            epoch=term.epoch,
            current_epoch=exc.current_epoch,
            detail="a leader-only write of the ended term was refused: a newer term exists",
        )
        return False
    except Exception as exc:
        log_event(log, logging.WARNING, "leader.term_end_not_recorded", epoch=term.epoch, error=repr(exc))
        return False
    return True


async def end_term(
    leadership: ElectedLeadership, clock: Clock, *, release: Callable[[bool], Awaitable[None]]
) -> None:
    """End a term in the one safe order for how it ends; `release(graceful)` gives up the lock.

    Still holding the lock (a graceful end), the term's end is recorded first, a write that
    cannot be refused, then the lock goes at once. After the term was lost, the lock goes first,
    then the write is attempted: after a takeover it is refused (`leader.fenced_out`), the
    evidence that the stale term could not write any more.
    """
    if leadership.lost.is_set():
        await release(False)
        await record_term_end(leadership, clock)
        return
    await record_term_end(leadership, clock)
    leadership.step_down("released")
    await release(True)
    log_event(
        log,
        logging.INFO,
        "leader.released",
        election=leadership.term.election,
        epoch=leadership.term.epoch,
    )
