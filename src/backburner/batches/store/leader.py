"""Leader-only writes: each takes the connection of a fenced transaction, so a stale leader's
write is refused by the epoch check before it is applied."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.batches.domain import (
    OPEN_STATUSES,
    POLLED_STATUSES,
    TERMINAL_STATUSES,
    BatchStatus,
    ItemResult,
    ItemStatus,
    ProviderBatch,
)
from backburner.batches.store.queries import count_values, item_counts, mark_items, upsert_for
from backburner.batches.store.records import CycleRecord, PollUpdate
from backburner.batches.store.transitions import end_logical, moved, refresh_parent
from backburner.batches.tables import (
    llm_batch_deliveries,
    llm_batch_items,
    llm_batch_poll_cycles,
    llm_batches,
)
from backburner.db.tables import DEFAULT_ORGANIZATION_ID

# Poll cycles kept (the last is shown by `/api/admin/batch-jobs`); older ones go as new ones come.
KEPT_CYCLES = 100


async def apply_poll_updates(conn: AsyncConnection, updates: Sequence[PollUpdate]) -> None:
    """Record many polls, only for batches still being polled.

    Polls with the same outcome (in a healthy cycle nearly all of them: same time, no error,
    same provider status) share one `UPDATE ... WHERE id IN (...)`.
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    for u in updates:
        key = (
            u.now,
            u.next_poll_at,
            u.consecutive_errors,
            u.last_error,
            u.provider_status,
            u.missing_output_polls,
        )
        groups.setdefault(key, []).append(u.batch_id)
    for (now, next_at, errors, last_error, provider_status, missing_polls), ids in groups.items():
        values: dict[str, Any] = {
            "last_polled_at": now,
            "updated_at": now,
            "next_poll_at": next_at,
            "consecutive_errors": errors,
            "last_error": last_error,
            "missing_output_polls": missing_polls,
        }
        if provider_status is not None:  # a failed poll keeps the last known provider status
            values["provider_status"] = provider_status
        await conn.execute(
            update(llm_batches)
            .where(llm_batches.c.id.in_(ids), llm_batches.c.status.in_([s.value for s in POLLED_STATUSES]))
            .values(**values)
        )


async def begin_ingesting(
    conn: AsyncConnection, batch_id: str, snapshot: ProviderBatch, now: datetime
) -> bool:
    """The provider ended the batch: remember its files and that ingestion is under way."""
    return await moved(
        conn,
        update(llm_batches)
        .where(llm_batches.c.id == batch_id, llm_batches.c.status.in_([s.value for s in POLLED_STATUSES]))
        .values(
            status=BatchStatus.INGESTING.value,
            provider_status=snapshot.status,
            output_file_id=snapshot.output_file_id,
            error_file_id=snapshot.error_file_id,
            ended_at=func.coalesce(llm_batches.c.ended_at, now),
            last_polled_at=now,
            updated_at=now,
        ),
        now,
    )


async def upsert_items(
    conn: AsyncConnection, organization_id: str, batch_id: str, results: Iterable[ItemResult], now: datetime
) -> int:
    """Store item results by (batch, custom id): repeating a chunk changes nothing."""
    unique = {r.custom_id: r for r in results}  # one statement may not touch a row twice
    if not unique:
        return 0
    rows = []
    for r in unique.values():
        usage = r.usage
        rows.append(
            {
                "batch_id": batch_id,
                "custom_id": r.custom_id,
                "organization_id": organization_id,
                "status": r.status.value,
                "result": r.result_json,
                "error": r.error,
                "updated_at": now,
                "input_tokens": usage.input_tokens if usage else None,
                "output_tokens": usage.output_tokens if usage else None,
                "cache_read_tokens": usage.cache_read_tokens if usage else None,
                "cache_write_tokens": usage.cache_write_tokens if usage else None,
            }
        )
    statement = upsert_for(conn)(llm_batch_items)
    statement = statement.on_conflict_do_update(
        index_elements=["batch_id", "custom_id"],
        set_={
            name: statement.excluded[name]
            for name in (
                "status",
                "result",
                "error",
                "updated_at",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
            )
        },
    )
    await conn.execute(statement, rows)
    return len(rows)


# Items a unit ended without a result: a part that expired keeps the provider's reason for them.
EXPIRED_WITHOUT_RESULT = "expired: the batch's completion window ended before this request ran"


async def finish_batch(
    conn: AsyncConnection,
    batch_id: str,
    status: BatchStatus,
    now: datetime,
    *,
    reason: str | None = None,
    channels: Sequence[str] = (),
    delivery_ids: Sequence[str] = (),
    unsent: bool = False,
) -> bool:
    """Make a batch or a part terminal; a logical batch that ends queues its deliveries in the
    same transaction.

    Items without a result become `missing` (`expired` when the batch expired, with the reason;
    `canceled` when a batch never sent is cancelled); the counts and usage come from the stored
    items. False if it was no longer open (another writer finished it first).
    """
    assert status in TERMINAL_STATUSES
    # The row is locked, then written once: on PostgreSQL a second write of a row in the same
    # transaction would also lock the row its foreign key names (the batch of a part), and two
    # parts ending together would then deadlock upgrading that lock.
    query = select(
        llm_batches.c.status,
        llm_batches.c.organization_id,
        llm_batches.c.parent_batch_id,
        llm_batches.c.part_index,
    ).where(llm_batches.c.id == batch_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).one_or_none()
    if row is None or BatchStatus(row.status) not in OPEN_STATUSES:
        return False
    items_batch = row.parent_batch_id or batch_id
    part = row.part_index if row.parent_batch_id is not None else None
    if status is BatchStatus.EXPIRED:
        await mark_items(
            conn, items_batch, part, ItemStatus.PENDING, ItemStatus.EXPIRED, now, EXPIRED_WITHOUT_RESULT
        )
    elif unsent and status is BatchStatus.CANCELLED:
        await mark_items(conn, items_batch, part, ItemStatus.PENDING, ItemStatus.CANCELED, now)
    else:
        await mark_items(conn, items_batch, part, ItemStatus.PENDING, ItemStatus.MISSING, now)
    counts = count_values(await item_counts(conn, items_batch, part))
    # A failed batch keeps its error history; any other end clears it.
    healthy: dict[str, Any] = (
        {} if status is BatchStatus.FAILED else {"consecutive_errors": 0, "last_error": None}
    )
    await conn.execute(
        update(llm_batches)
        .where(llm_batches.c.id == batch_id)
        .values(
            status=status.value,
            failure_reason=reason,
            ended_at=func.coalesce(llm_batches.c.ended_at, now),
            last_polled_at=now,
            next_poll_at=None,
            updated_at=now,
            **counts,
            **healthy,
        )
    )
    if row.parent_batch_id is not None:
        await refresh_parent(
            conn, row.parent_batch_id, now, part_ended=True, channels=channels, delivery_ids=delivery_ids
        )
    else:
        await end_logical(conn, batch_id, row.organization_id, status, now, channels, delivery_ids)
    return True


async def mark_provider_files_deleted(conn: AsyncConnection, unit_id: str, now: datetime) -> None:
    await conn.execute(
        update(llm_batches).where(llm_batches.c.id == unit_id).values(provider_files_deleted_at=now)
    )


async def remove_results(conn: AsyncConnection, batch_id: str, now: datetime, *, limit: int) -> int:
    """Delete up to `limit` stored items of an ended batch; when none are left, note the removal.
    Its counts and usage totals stay."""
    doomed = (
        select(llm_batch_items.c.custom_id)
        .where(llm_batch_items.c.batch_id == batch_id)
        .limit(limit)
        .scalar_subquery()
    )
    result = await conn.execute(
        delete(llm_batch_items).where(
            llm_batch_items.c.batch_id == batch_id, llm_batch_items.c.custom_id.in_(doomed)
        )
    )
    removed = int(result.rowcount or 0)
    if removed < limit:
        await conn.execute(
            update(llm_batches)
            .where(or_(llm_batches.c.id == batch_id, llm_batches.c.parent_batch_id == batch_id))
            .values(results_removed_at=now, updated_at=now)
        )
    return removed


async def record_cycle(conn: AsyncConnection, cycle: CycleRecord) -> None:
    await conn.execute(
        insert(llm_batch_poll_cycles).values(
            organization_id=DEFAULT_ORGANIZATION_ID,
            started_at=cycle.started_at,
            duration_s=cycle.duration_s,
            polled=cycle.polled,
            completed=cycle.completed,
            items_ingested=cycle.items_ingested,
            errors=cycle.errors,
            failed=cycle.failed,
            epoch=cycle.epoch,
            instance_id=cycle.instance_id,
        )
    )
    keep_from = (
        select(llm_batch_poll_cycles.c.id)
        .order_by(llm_batch_poll_cycles.c.id.desc())
        .offset(KEPT_CYCLES)
        .limit(1)
        .scalar_subquery()
    )
    await conn.execute(delete(llm_batch_poll_cycles).where(llm_batch_poll_cycles.c.id <= keep_from))


async def mark_delivered(conn: AsyncConnection, delivery_id: str, attempts: int, now: datetime) -> None:
    await conn.execute(
        update(llm_batch_deliveries)
        .where(llm_batch_deliveries.c.id == delivery_id, llm_batch_deliveries.c.status == "pending")
        .values(status="delivered", attempts=attempts, delivered_at=now, updated_at=now, last_error=None)
    )


async def mark_delivery_attempt_failed(
    conn: AsyncConnection,
    delivery_id: str,
    attempts: int,
    error: str,
    next_attempt_at: datetime,
    now: datetime,
    *,
    give_up: bool,
) -> None:
    await conn.execute(
        update(llm_batch_deliveries)
        .where(llm_batch_deliveries.c.id == delivery_id, llm_batch_deliveries.c.status == "pending")
        .values(
            status="failed" if give_up else "pending",
            attempts=attempts,
            last_error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
    )
