"""A unit's move between statuses, and what follows for the split batch it is a part of."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.batches.domain import OPEN_STATUSES, TERMINAL_STATUSES, BatchStatus
from backburner.batches.statuses import logical_status
from backburner.batches.store.queries import COUNT_COLUMNS
from backburner.batches.tables import llm_batch_deliveries, llm_batch_items, llm_batch_usage, llm_batches


async def moved(conn: AsyncConnection, statement: Any, now: datetime) -> bool:
    """Run an UPDATE that moves one batch or part between open statuses; a part's batch then
    shows the new status of its parts. False if the row was not in the expected status."""
    row = (await conn.execute(statement.returning(llm_batches.c.parent_batch_id))).one_or_none()
    if row is None:
        return False
    if row.parent_batch_id is not None:
        await refresh_parent(conn, row.parent_batch_id, now)
    return True


async def refresh_parent(
    conn: AsyncConnection,
    parent_id: str,
    now: datetime,
    *,
    part_ended: bool = False,
    channels: Sequence[str] = (),
    delivery_ids: Sequence[str] = (),
) -> None:
    """Set a split batch's status from its parts'.

    When a part ends (`part_ended`), the batch's row is locked, so parts that end at the same
    time take turns: each adds up the parts' counts, and the last one ends the batch (SQLite's
    BEGIN IMMEDIATE serialises them anyway). Other moves (a part sent, ingesting) only update the
    status, without a lock: a part that has not ended cannot end the batch.
    """
    if part_ended and conn.dialect.name == "postgresql":
        await _lock_row(conn, parent_id)
    c = llm_batches.c
    parts = (
        await conn.execute(
            select(
                c.status,
                c.part_index,
                c.failure_reason,
                *(c[name] for name in COUNT_COLUMNS),
            )
            .where(c.parent_batch_id == parent_id)
            .order_by(c.part_index)
        )
    ).all()
    if not parts:
        return
    status = logical_status([BatchStatus(p.status) for p in parts])
    open_values = [s.value for s in OPEN_STATUSES]
    values: dict[str, Any] = {"status": status.value, "updated_at": now}
    if part_ended:  # each part's counts are exact once it ended: the batch's are their sum
        values.update({name: sum(getattr(p, name) for p in parts) for name in COUNT_COLUMNS})
    if status not in TERMINAL_STATUSES:
        await conn.execute(
            update(llm_batches).where(c.id == parent_id, c.status.in_(open_values)).values(**values)
        )
        return
    assert part_ended, "only a part that ends can end its batch"
    failed = [p for p in parts if p.status == BatchStatus.FAILED.value]
    reason = (
        f"part {failed[0].part_index + 1} of {len(parts)} failed: {failed[0].failure_reason}"
        if failed
        else None
    )
    result = await conn.execute(
        update(llm_batches)
        .where(c.id == parent_id, c.status.in_(open_values))
        .values(
            failure_reason=reason,
            ended_at=func.coalesce(c.ended_at, now),
            next_poll_at=None,
            **values,
        )
        .returning(c.organization_id)
    )
    row = result.one_or_none()
    if row is not None:
        await end_logical(conn, parent_id, row.organization_id, status, now, channels, delivery_ids)


async def _lock_row(conn: AsyncConnection, batch_id: str) -> None:
    await conn.execute(select(llm_batches.c.id).where(llm_batches.c.id == batch_id).with_for_update())


async def end_logical(
    conn: AsyncConnection,
    batch_id: str,
    organization_id: str,
    status: BatchStatus,
    now: datetime,
    channels: Sequence[str],
    delivery_ids: Sequence[str],
) -> None:
    """A logical batch ended (its counts stored): its usage totals, and its deliveries queued."""
    await rebuild_usage(conn, batch_id)
    if channels:
        await conn.execute(
            insert(llm_batch_deliveries),
            [
                {
                    "id": delivery_id,
                    "organization_id": organization_id,
                    "batch_id": batch_id,
                    "channel": channel,
                    "idempotency_key": f"{batch_id}:{status.value}",
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for channel, delivery_id in zip(channels, delivery_ids, strict=True)
            ],
        )


async def rebuild_usage(conn: AsyncConnection, batch_id: str) -> None:
    """A logical batch's token totals per model, from its stored items: derived, never added up
    as results arrive, so a chunk stored twice or a failover cannot count anything twice."""
    i, b = llm_batch_items.c, llm_batches.c
    await conn.execute(delete(llm_batch_usage).where(llm_batch_usage.c.batch_id == batch_id))
    model = func.coalesce(i.model, b.model)
    await conn.execute(
        insert(llm_batch_usage).from_select(
            [
                "batch_id",
                "model",
                "organization_id",
                "provider",
                "items",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
            ],
            select(
                literal(batch_id),
                model,
                b.organization_id,
                b.provider,
                func.count(),
                func.coalesce(func.sum(i.input_tokens), 0),
                func.coalesce(func.sum(i.output_tokens), 0),
                func.coalesce(func.sum(i.cache_read_tokens), 0),
                func.coalesce(func.sum(i.cache_write_tokens), 0),
            )
            .select_from(llm_batch_items.join(llm_batches, llm_batches.c.id == i.batch_id))
            .where(i.batch_id == batch_id, i.input_tokens.is_not(None))
            .group_by(model, b.organization_id, b.provider),
        )
    )
