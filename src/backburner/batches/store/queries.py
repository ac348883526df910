"""SQL pieces the batch store's modules share: dialect choices, which rows are units, item counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, LargeBinary, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.batches.domain import ItemStatus
from backburner.batches.tables import llm_batch_items, llm_batches


def upsert_for(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def is_unit() -> ColumnElement[bool]:
    """A row the provider knows: a part, or a batch that was not split."""
    return or_(llm_batches.c.parent_batch_id.is_not(None), llm_batches.c.part_count == 1)


def octets(conn: AsyncConnection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.octet_length(column)
    return func.length(cast(column, LargeBinary))


async def mark_items(
    conn: AsyncConnection,
    batch_id: str,
    part: int | None,
    from_status: ItemStatus,
    to_status: ItemStatus,
    now: datetime,
    error: str | None = None,
) -> None:
    query = update(llm_batch_items).where(
        llm_batch_items.c.batch_id == batch_id, llm_batch_items.c.status == from_status.value
    )
    if part is not None:
        query = query.where(llm_batch_items.c.part_index == part)
    values: dict[str, Any] = {"status": to_status.value, "updated_at": now}
    if error is not None:
        values["error"] = error
    await conn.execute(query.values(**values))


async def item_counts(conn: AsyncConnection, batch_id: str, part: int | None = None) -> dict[str, int]:
    query = select(llm_batch_items.c.status, func.count()).where(llm_batch_items.c.batch_id == batch_id)
    if part is not None:
        query = query.where(llm_batch_items.c.part_index == part)
    rows = (await conn.execute(query.group_by(llm_batch_items.c.status))).all()
    return {str(r[0]): int(r[1]) for r in rows}


COUNT_COLUMNS = ("succeeded_count", "errored_count", "canceled_count", "expired_count", "missing_count")


def count_values(counts: dict[str, int]) -> dict[str, int]:
    """Item counts by status as the batch's count columns."""
    return {
        "succeeded_count": counts.get(ItemStatus.SUCCEEDED.value, 0),
        "errored_count": counts.get(ItemStatus.ERRORED.value, 0),
        "canceled_count": counts.get(ItemStatus.CANCELED.value, 0),
        "expired_count": counts.get(ItemStatus.EXPIRED.value, 0),
        "missing_count": counts.get(ItemStatus.MISSING.value, 0),
    }


async def store_counts(conn: AsyncConnection, row_id: str) -> None:
    counts = count_values(await item_counts(conn, row_id))
    await conn.execute(update(llm_batches).where(llm_batches.c.id == row_id).values(**counts))
