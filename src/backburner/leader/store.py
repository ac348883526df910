"""SQL of the `leader_epochs` rows (besides the fencing check and the epoch increment)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.leader.tables import leader_epochs


@dataclass(frozen=True)
class ElectionRow:
    name: str
    epoch: int
    holder: str
    acquired_at: datetime
    heartbeat_at: datetime | None
    released_at: datetime | None


async def read_election(conn: AsyncConnection, election: str) -> ElectionRow | None:
    row = (await conn.execute(select(leader_epochs).where(leader_epochs.c.name == election))).first()
    if row is None:
        return None
    return ElectionRow(
        name=row.name,
        epoch=int(row.epoch),
        holder=row.holder,
        acquired_at=row.acquired_at,
        heartbeat_at=row.heartbeat_at,
        released_at=row.released_at,
    )


async def touch_heartbeat(conn: AsyncConnection, election: str, now: datetime) -> None:
    """Call inside a fenced transaction: the leader proves its term alive."""
    await conn.execute(update(leader_epochs).where(leader_epochs.c.name == election).values(heartbeat_at=now))


async def mark_released(conn: AsyncConnection, election: str, now: datetime) -> None:
    """Call inside a fenced transaction: the term ended while it was still the current one."""
    await conn.execute(update(leader_epochs).where(leader_epochs.c.name == election).values(released_at=now))
