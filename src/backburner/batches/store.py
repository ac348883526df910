"""Every SQL statement about batches. Route handlers, the poller and the handoff call these.

Reads take the engine. Writes made by the API (a submission, a cancel request) run in their own
transaction; writes made by the leader's jobs take the connection of a fenced transaction, so a
stale leader's write is refused by the epoch check before it is applied.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.batches.domain import (
    POLLED_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchRequest,
    BatchStatus,
    ItemResult,
    ItemStatus,
    ProviderBatch,
)
from backburner.batches.tables import (
    llm_batch_deliveries,
    llm_batch_items,
    llm_batch_poll_cycles,
    llm_batches,
)
from backburner.batches.validation import request_params
from backburner.db.tables import DEFAULT_ORGANIZATION_ID

ITEM_INSERT_CHUNK = 1000
KEPT_CYCLES = 100

_BATCH_FIELDS = {f.name for f in fields(Batch)}


def _batch(row: Row[Any]) -> Batch:
    values = {k: v for k, v in row._mapping.items() if k in _BATCH_FIELDS}
    values["status"] = BatchStatus(values["status"])
    return Batch(**values)


@dataclass(frozen=True)
class ItemRow:
    custom_id: str
    status: str
    result: str | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    id: str
    organization_id: str
    batch_id: str
    channel: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class PollUpdate:
    """The outcome of polling one batch that did not end it (see `apply_poll_updates`)."""

    batch_id: str
    now: datetime
    next_poll_at: datetime
    consecutive_errors: int
    last_error: str | None
    provider_status: str | None
    missing_output_polls: int


@dataclass(frozen=True)
class CycleRecord:
    started_at: datetime
    duration_s: float
    polled: int
    completed: int
    items_ingested: int
    errors: int
    epoch: int
    instance_id: str


def _upsert(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


class BatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- submission (API process) -----------------------------------------------------------

    async def create_submission(
        self,
        *,
        batch_id: str,
        organization_id: str,
        provider: str,
        model: str,
        idempotency_key: str,
        requests: Sequence[BatchRequest],
        now: datetime,
    ) -> Batch | None:
        """Write the batch (`submitting`) and its pending items in one transaction.

        Returns None when the organization already has a batch with this idempotency key.
        """
        async with self.engine.begin() as conn:
            inserted = await conn.execute(
                _upsert(conn)(llm_batches)
                .values(
                    id=batch_id,
                    organization_id=organization_id,
                    provider=provider,
                    model=model,
                    status=BatchStatus.SUBMITTING.value,
                    idempotency_key=idempotency_key,
                    request_count=len(requests),
                    created_at=now,
                    updated_at=now,
                    consecutive_errors=0,
                    missing_output_polls=0,
                    succeeded_count=0,
                    errored_count=0,
                    canceled_count=0,
                    expired_count=0,
                    missing_count=0,
                )
                .on_conflict_do_nothing(index_elements=["organization_id", "idempotency_key"])
            )
            if inserted.rowcount == 0:
                return None
            for start in range(0, len(requests), ITEM_INSERT_CHUNK):
                rows = [
                    {
                        "batch_id": batch_id,
                        "custom_id": r.custom_id,
                        "organization_id": organization_id,
                        "status": ItemStatus.PENDING.value,
                        "params": json.dumps(request_params(model, r), separators=(",", ":")),
                        "updated_at": now,
                    }
                    for r in requests[start : start + ITEM_INSERT_CHUNK]
                ]
                await conn.execute(insert(llm_batch_items), rows)
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == batch_id))).one()
        return _batch(row)

    async def mark_submitted(
        self, organization_id: str, batch_id: str, snapshot: ProviderBatch, now: datetime
    ) -> bool:
        """`submitting` -> `running` with the provider's id; False if something else moved it first."""
        async with self.engine.begin() as conn:
            return await adopt_provider_batch(conn, organization_id, batch_id, snapshot, now)

    async def mark_submit_failed(
        self, organization_id: str, batch_id: str, reason: str, now: datetime
    ) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(llm_batches)
                .where(
                    llm_batches.c.organization_id == organization_id,
                    llm_batches.c.id == batch_id,
                    llm_batches.c.status == BatchStatus.SUBMITTING.value,
                )
                .values(status=BatchStatus.FAILED.value, failure_reason=reason, updated_at=now, ended_at=now)
            )
            if result.rowcount:
                await _mark_items(conn, batch_id, ItemStatus.PENDING, ItemStatus.MISSING, now)
                await _store_counts(conn, batch_id)
            return bool(result.rowcount)

    async def mark_cancel_requested(
        self, organization_id: str, batch_id: str, provider_status: str | None, now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            values: dict[str, Any] = {"cancel_requested_at": now, "updated_at": now}
            if provider_status is not None:
                values["provider_status"] = provider_status
            await conn.execute(
                update(llm_batches)
                .where(llm_batches.c.organization_id == organization_id, llm_batches.c.id == batch_id)
                .values(**values)
            )

    # --- reads ------------------------------------------------------------------------------

    async def get(self, organization_id: str, batch_id: str) -> Batch | None:
        return await self._find(organization_id, llm_batches.c.id == batch_id)

    async def get_by_idempotency_key(self, organization_id: str, key: str) -> Batch | None:
        return await self._find(organization_id, llm_batches.c.idempotency_key == key)

    async def _find(self, organization_id: str, condition: ColumnElement[bool]) -> Batch | None:
        """The organization's one batch that meets `condition` (an id or a unique key)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(llm_batches).where(llm_batches.c.organization_id == organization_id, condition)
                )
            ).one_or_none()
        return None if row is None else _batch(row)

    async def list_batches(
        self, organization_id: str, *, limit: int, before_id: str | None = None, status: str | None = None
    ) -> list[Batch]:
        """Newest first; `before_id` continues after that batch."""
        query = select(llm_batches).where(llm_batches.c.organization_id == organization_id)
        if status is not None:
            query = query.where(llm_batches.c.status == status)
        async with self.engine.connect() as conn:
            if before_id is not None:
                cursor = (
                    await conn.execute(
                        select(llm_batches.c.created_at).where(
                            llm_batches.c.organization_id == organization_id, llm_batches.c.id == before_id
                        )
                    )
                ).scalar_one_or_none()
                if cursor is not None:
                    query = query.where(
                        or_(
                            llm_batches.c.created_at < cursor,
                            and_(llm_batches.c.created_at == cursor, llm_batches.c.id < before_id),
                        )
                    )
            query = query.order_by(llm_batches.c.created_at.desc(), llm_batches.c.id.desc()).limit(limit)
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def item_page(
        self, organization_id: str, batch_id: str, *, after_custom_id: str | None, limit: int
    ) -> list[ItemRow]:
        """One page of a batch's items in custom id order (keyset pagination keeps memory flat)."""
        query = select(
            llm_batch_items.c.custom_id,
            llm_batch_items.c.status,
            llm_batch_items.c.result,
            llm_batch_items.c.error,
        ).where(llm_batch_items.c.organization_id == organization_id, llm_batch_items.c.batch_id == batch_id)
        if after_custom_id is not None:
            query = query.where(llm_batch_items.c.custom_id > after_custom_id)
        query = query.order_by(llm_batch_items.c.custom_id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ItemRow(r.custom_id, r.status, r.result, r.error) for r in rows]

    async def item_status_counts(self, batch_id: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return await _item_counts(conn, batch_id)

    async def due_batches(self, *, now: datetime, since: datetime, limit: int | None) -> list[Batch]:
        """Running batches of every organization, least recently polled first."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status.in_([s.value for s in POLLED_STATUSES]),
                llm_batches.c.created_at >= since,
                or_(llm_batches.c.next_poll_at.is_(None), llm_batches.c.next_poll_at <= now),
            )
            .order_by(
                llm_batches.c.last_polled_at.asc().nulls_first(), llm_batches.c.created_at, llm_batches.c.id
            )
        )
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def submitting_batches(self, *, created_before: datetime, limit: int) -> list[Batch]:
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status == BatchStatus.SUBMITTING.value,
                llm_batches.c.created_at <= created_before,
            )
            .order_by(llm_batches.c.created_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def counts_by_provider_status(
        self, organization_id: str | None = None
    ) -> list[tuple[str, str, int]]:
        query = select(llm_batches.c.provider, llm_batches.c.status, func.count()).group_by(
            llm_batches.c.provider, llm_batches.c.status
        )
        if organization_id is not None:
            query = query.where(llm_batches.c.organization_id == organization_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def active_batches(self, organization_id: str, limit: int) -> list[Batch]:
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.organization_id == organization_id,
                llm_batches.c.status.in_([BatchStatus.SUBMITTING.value, *(s.value for s in POLLED_STATUSES)]),
            )
            .order_by(llm_batches.c.created_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def running_page(
        self,
        organization_id: str,
        *,
        limit: int,
        offset: int,
        statuses: Collection[BatchStatus] = POLLED_STATUSES,
    ) -> list[Batch]:
        """Batches in `statuses` (by default, those running at their provider), oldest first, one page."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.organization_id == organization_id,
                llm_batches.c.status.in_([s.value for s in statuses]),
            )
            .order_by(llm_batches.c.created_at, llm_batches.c.id)
            .limit(limit)
            .offset(offset)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def last_cycle(self) -> CycleRecord | None:
        query = select(llm_batch_poll_cycles).order_by(llm_batch_poll_cycles.c.id.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        m = row._mapping
        return CycleRecord(
            m["started_at"],
            m["duration_s"],
            m["polled"],
            m["completed"],
            m["items_ingested"],
            m["errors"],
            m["epoch"],
            m["instance_id"],
        )

    async def due_deliveries(self, *, now: datetime, limit: int) -> list[Delivery]:
        query = (
            select(llm_batch_deliveries)
            .where(llm_batch_deliveries.c.status == "pending", llm_batch_deliveries.c.next_attempt_at <= now)
            .order_by(llm_batch_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Delivery(**r._mapping) for r in rows]

    async def deliveries(self, batch_id: str) -> list[Delivery]:
        query = select(llm_batch_deliveries).where(llm_batch_deliveries.c.batch_id == batch_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(llm_batch_deliveries.c.channel))).all()
        return [Delivery(**r._mapping) for r in rows]


# --- leader-only writes: each takes the connection of a fenced transaction ----------------------


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
    result = await conn.execute(
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
        )
    )
    return bool(result.rowcount)


async def upsert_items(
    conn: AsyncConnection, organization_id: str, batch_id: str, results: Iterable[ItemResult], now: datetime
) -> int:
    """Store item results by (batch, custom id): repeating a chunk changes nothing."""
    unique = {r.custom_id: r for r in results}  # one statement may not touch a row twice
    if not unique:
        return 0
    rows = [
        {
            "batch_id": batch_id,
            "custom_id": r.custom_id,
            "organization_id": organization_id,
            "status": r.status.value,
            "result": r.result_json,
            "error": r.error,
            "updated_at": now,
        }
        for r in unique.values()
    ]
    statement = _upsert(conn)(llm_batch_items)
    statement = statement.on_conflict_do_update(
        index_elements=["batch_id", "custom_id"],
        set_={
            "status": statement.excluded.status,
            "result": statement.excluded.result,
            "error": statement.excluded.error,
            "updated_at": statement.excluded.updated_at,
        },
    )
    await conn.execute(statement, rows)
    return len(rows)


async def finish_batch(
    conn: AsyncConnection,
    batch_id: str,
    status: BatchStatus,
    now: datetime,
    *,
    reason: str | None = None,
    channels: Sequence[str] = (),
    delivery_ids: Sequence[str] = (),
) -> bool:
    """Make a batch terminal, in the transaction that also queues its completion deliveries.

    Items without a result become `missing`; the counts come from the stored items. False if the
    batch was no longer open (another writer finished it first).
    """
    assert status in TERMINAL_STATUSES
    # A failed batch keeps its error history; any other end clears it.
    healthy: dict[str, Any] = (
        {} if status is BatchStatus.FAILED else {"consecutive_errors": 0, "last_error": None}
    )
    result = await conn.execute(
        update(llm_batches)
        .where(
            llm_batches.c.id == batch_id,
            llm_batches.c.status.in_([BatchStatus.SUBMITTING.value, *(s.value for s in POLLED_STATUSES)]),
        )
        .values(
            status=status.value,
            failure_reason=reason,
            ended_at=func.coalesce(llm_batches.c.ended_at, now),
            last_polled_at=now,
            next_poll_at=None,
            updated_at=now,
            **healthy,
        )
        .returning(llm_batches.c.organization_id, llm_batches.c.idempotency_key)
    )
    row = result.one_or_none()
    if row is None:
        return False
    await _mark_items(conn, batch_id, ItemStatus.PENDING, ItemStatus.MISSING, now)
    await _store_counts(conn, batch_id)
    if channels:
        await conn.execute(
            insert(llm_batch_deliveries),
            [
                {
                    "id": delivery_id,
                    "organization_id": row.organization_id,
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
    return True


async def adopt_provider_batch(
    conn: AsyncConnection, organization_id: str, batch_id: str, snapshot: ProviderBatch, now: datetime
) -> bool:
    result = await conn.execute(
        update(llm_batches)
        .where(
            llm_batches.c.organization_id == organization_id,
            llm_batches.c.id == batch_id,
            llm_batches.c.status == BatchStatus.SUBMITTING.value,
        )
        .values(
            status=BatchStatus.RUNNING.value,
            provider_batch_id=snapshot.provider_batch_id,
            provider_status=snapshot.status,
            submitted_at=now,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


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


async def _mark_items(
    conn: AsyncConnection, batch_id: str, from_status: ItemStatus, to_status: ItemStatus, now: datetime
) -> None:
    await conn.execute(
        update(llm_batch_items)
        .where(llm_batch_items.c.batch_id == batch_id, llm_batch_items.c.status == from_status.value)
        .values(status=to_status.value, updated_at=now)
    )


async def _item_counts(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    rows = (
        await conn.execute(
            select(llm_batch_items.c.status, func.count())
            .where(llm_batch_items.c.batch_id == batch_id)
            .group_by(llm_batch_items.c.status)
        )
    ).all()
    return {str(r[0]): int(r[1]) for r in rows}


async def _store_counts(conn: AsyncConnection, batch_id: str) -> None:
    counts = await _item_counts(conn, batch_id)
    await conn.execute(
        update(llm_batches)
        .where(llm_batches.c.id == batch_id)
        .values(
            succeeded_count=counts.get(ItemStatus.SUCCEEDED.value, 0),
            errored_count=counts.get(ItemStatus.ERRORED.value, 0),
            canceled_count=counts.get(ItemStatus.CANCELED.value, 0),
            expired_count=counts.get(ItemStatus.EXPIRED.value, 0),
            missing_count=counts.get(ItemStatus.MISSING.value, 0),
        )
    )
