"""The leader-election boundary: an `Elector` decides which instance leads; a `Leadership` is one
term of office, with the fencing token (epoch) that every leader-only write must present."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


class NotLeader(Exception):
    """A leader-only write was attempted by an instance whose term has ended."""

    def __init__(self, election: str, epoch: int, current_epoch: int | None) -> None:
        self.election = election
        self.epoch = epoch
        self.current_epoch = current_epoch
        super().__init__(
            f"not the leader of {election!r}: this term is epoch {epoch}, "
            f"the current epoch is {current_epoch}"
        )


@dataclass(frozen=True)
class Term:
    """One acquisition of the lock."""

    election: str
    epoch: int
    instance_id: str
    since: datetime


class Leadership(Protocol):
    """What leader-only work needs: its term, a way to learn that it ended, and fenced writes."""

    @property
    def term(self) -> Term: ...

    @property
    def lost(self) -> asyncio.Event:
        """Set when this term ends (step-down, lost connection, shutdown)."""
        ...

    def fenced(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction that first checks this term's epoch is still current; raises `NotLeader`."""
        ...


class Elector(Protocol):
    """Competes for leadership; yields one `Leadership` per term until closed."""

    backend: str  # "postgres" | "file" | "memory"
    mode: str
    lease_seconds: float
    state: str  # starting | connecting | waiting | leading | retrying (for diagnostics)

    def terms(self) -> AsyncGenerator[Leadership, None]:
        """Each iteration waits for this instance to lead and yields the term; the term's `lost`
        event is set before the next iteration can begin. Closing the generator (`aclose`) while
        a term is open releases the lock at once (graceful shutdown)."""
        ...

    async def aclose(self) -> None: ...
