"""SQL of the `instances` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.leader.tables import instances


@dataclass(frozen=True)
class InstanceRow:
    instance_id: str
    host: str
    pid: int
    role: str  # leader | follower
    process: str  # serve | worker
    started_at: datetime
    last_seen_at: datetime


async def upsert(conn: AsyncConnection, row: InstanceRow) -> None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(instances).values(
        instance_id=row.instance_id,
        host=row.host,
        pid=row.pid,
        role=row.role,
        process=row.process,
        started_at=row.started_at,
        last_seen_at=row.last_seen_at,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={"role": statement.excluded.role, "last_seen_at": statement.excluded.last_seen_at},
        )
    )


async def remove(conn: AsyncConnection, instance_id: str) -> None:
    await conn.execute(delete(instances).where(instances.c.instance_id == instance_id))


async def expire(conn: AsyncConnection, *, last_seen_before: datetime) -> list[str]:
    """Delete the rows of instances silent since before the cutoff; returns their ids."""
    result = await conn.execute(
        delete(instances)
        .where(instances.c.last_seen_at < last_seen_before)
        .returning(instances.c.instance_id)
    )
    return [str(instance_id) for instance_id in result.scalars()]


async def list_instances(conn: AsyncConnection) -> list[InstanceRow]:
    rows = await conn.execute(select(instances).order_by(instances.c.started_at, instances.c.instance_id))
    return [
        InstanceRow(
            instance_id=r.instance_id,
            host=r.host,
            pid=int(r.pid),
            role=r.role,
            process=r.process,
            started_at=r.started_at,
            last_seen_at=r.last_seen_at,
        )
        for r in rows
    ]
