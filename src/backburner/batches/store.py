"""Every SQL statement about batches. Route handlers, the poller and the handoff call these.

Reads take the engine. Writes made by the API (a submission, a cancel request) run in their own
transaction; writes made by the leader's jobs take the connection of a fenced transaction, so a
stale leader's write is refused by the epoch check before it is applied.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import Row as SqlRow
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.batches.domain import (
    OPEN_STATUSES,
    POLLED_STATUSES,
    RESERVING_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    ItemResult,
    ItemStatus,
    ProviderBatch,
)
from backburner.batches.statuses import RETENTION_URGENT, fits_budget, logical_status
from backburner.batches.tables import (
    llm_batch_deliveries,
    llm_batch_items,
    llm_batch_poll_cycles,
    llm_batch_usage,
    llm_batches,
)
from backburner.batches.validation import PartPlan, Row, Submission
from backburner.db.keyset import Keyset
from backburner.db.tables import DEFAULT_ORGANIZATION_ID
from backburner.db.transactions import reading
from backburner.db.types import UTCDateTime

KEPT_CYCLES = 100

_BATCH_FIELDS = {f.name for f in fields(Batch)}


def _batch(row: SqlRow[Any]) -> Batch:
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
    failed: int = 0


@dataclass(frozen=True)
class UsageRow:
    """Token totals of one model (of one batch, or summed over many)."""

    provider: str
    model: str
    items: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


def _upsert(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


# Newest first, as `/v1/batches` lists them.
BATCH_ORDER = Keyset(llm_batches.c.created_at, llm_batches.c.id, descending=True)


class BatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- submission (API process) -----------------------------------------------------------

    async def create_submission(
        self,
        *,
        batch_id: str,
        organization_id: str,
        submission: Submission,
        idempotency_key: str,
        now: datetime,
        next_rows: Callable[[], Awaitable[list[Row]]],
        resubmitted_from: str | None = None,
    ) -> Batch | None:
        """Write the batch (`queued`), its parts and its pending items in one transaction.

        `next_rows` gives the next chunk of checked rows (empty at the end). Returns None when
        the organization already has a batch with this idempotency key.
        """
        async with self.engine.begin() as conn:
            if not await insert_submission(
                conn,
                batch_id=batch_id,
                organization_id=organization_id,
                submission=submission,
                idempotency_key=idempotency_key,
                now=now,
                resubmitted_from=resubmitted_from,
            ):
                return None
            starts = [p.start for p in submission.parts]
            while rows := await next_rows():
                await insert_items(conn, batch_id, organization_id, rows, starts, now)
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == batch_id))).one()
        return _batch(row)

    async def create_resubmission(
        self,
        *,
        batch_id: str,
        organization_id: str,
        source: Batch,
        item_statuses: Sequence[str],
        idempotency_key: str,
        plan: Callable[[list[tuple[int, int]]], tuple[PartPlan, ...]],
        now: datetime,
    ) -> Batch | None:
        """A new batch of the `source` batch's items in `item_statuses`: their requests are copied
        inside the database, and `plan` splits them (from each request's bytes and tokens)."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                select(llm_batch_items.c.custom_id, _octets(conn, llm_batch_items.c.params))
                .where(
                    llm_batch_items.c.batch_id == source.id,
                    llm_batch_items.c.status.in_(list(item_statuses)),
                    llm_batch_items.c.params.is_not(None),
                )
                .order_by(llm_batch_items.c.position, llm_batch_items.c.custom_id)
            )
            sizes = [(len(json.dumps(r[0], ensure_ascii=False).encode()) - 2, int(r[1] or 0)) for r in rows]
            if not sizes:
                return None
            parts = plan(sizes)
            submission = Submission(
                source.provider, source.model, "openai", len(sizes), 0, parts, lambda: iter(())
            )
            if not await insert_submission(
                conn,
                batch_id=batch_id,
                organization_id=organization_id,
                submission=submission,
                idempotency_key=idempotency_key,
                now=now,
                resubmitted_from=source.id,
            ):
                return None
            await copy_items(conn, source.id, batch_id, organization_id, item_statuses, parts, now)
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == batch_id))).one()
        return _batch(row)

    async def fail_submission(self, organization_id: str, batch_id: str, reason: str, now: datetime) -> bool:
        """Nothing of the batch was accepted: fail it whole and free its idempotency key."""
        async with self.engine.begin() as conn:
            return await fail_submission(conn, organization_id, batch_id, reason, now)

    async def delete_submission(self, organization_id: str, batch_id: str) -> None:
        """Nothing was sent: the batch leaves no trace (its key is free again)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(llm_batch_items).where(
                    llm_batch_items.c.organization_id == organization_id,
                    llm_batch_items.c.batch_id == batch_id,
                )
            )
            await conn.execute(delete(llm_batches).where(llm_batches.c.parent_batch_id == batch_id))
            await conn.execute(
                delete(llm_batches).where(
                    llm_batches.c.organization_id == organization_id, llm_batches.c.id == batch_id
                )
            )

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
        """The organization's one logical batch that meets `condition` (an id or a unique key)."""
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(llm_batches).where(
                        llm_batches.c.organization_id == organization_id,
                        llm_batches.c.parent_batch_id.is_(None),
                        condition,
                    )
                )
            ).one_or_none()
        return None if row is None else _batch(row)

    async def _batches(self, query: Any) -> list[Batch]:
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def unit(self, unit_id: str) -> Batch | None:
        """A batch or a part by id, whatever its organization (for the jobs)."""
        async with reading(self.engine) as conn:
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == unit_id))).one_or_none()
        return None if row is None else _batch(row)

    async def parts(self, batch_id: str) -> list[Batch]:
        """The parts of a split batch in order; a batch that fits is its own one part."""
        return await self._batches(
            select(llm_batches)
            .where(llm_batches.c.parent_batch_id == batch_id)
            .order_by(llm_batches.c.part_index)
        )

    async def units(self, batch: Batch) -> list[Batch]:
        """What is sent to the provider for a logical batch: its parts, or itself."""
        return await self.parts(batch.id) if batch.part_count > 1 else [batch]

    async def list_batches(
        self, organization_id: str, *, limit: int, before_id: str | None = None, status: str | None = None
    ) -> list[Batch]:
        """Newest first; `before_id` continues after that batch (`InvalidCursor` if none such)."""
        scope = [llm_batches.c.organization_id == organization_id, llm_batches.c.parent_batch_id.is_(None)]
        query = select(llm_batches)
        if status is not None:
            query = query.where(llm_batches.c.status == status)
        async with reading(self.engine) as conn:
            rows = await BATCH_ORDER.page(conn, query, scope, limit=limit, cursor=before_id)
        return [_batch(r) for r in rows]

    async def item_page(
        self,
        organization_id: str,
        batch_id: str,
        *,
        after_custom_id: str | None,
        limit: int,
        statuses: Sequence[str] | None = None,
    ) -> list[ItemRow]:
        """One page of a batch's items in custom id order (keyset pagination keeps memory flat)."""
        query = select(
            llm_batch_items.c.custom_id,
            llm_batch_items.c.status,
            llm_batch_items.c.result,
            llm_batch_items.c.error,
        ).where(llm_batch_items.c.organization_id == organization_id, llm_batch_items.c.batch_id == batch_id)
        if statuses is not None:
            query = query.where(llm_batch_items.c.status.in_(list(statuses)))
        if after_custom_id is not None:
            query = query.where(llm_batch_items.c.custom_id > after_custom_id)
        query = query.order_by(llm_batch_items.c.custom_id).limit(limit)
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [ItemRow(r.custom_id, r.status, r.result, r.error) for r in rows]

    async def part_request_lines(
        self, unit: Batch, *, page_size: int = 5000
    ) -> AsyncIterator[list[tuple[str, str]]]:
        """(custom id, params JSON) of a unit's requests in submission order, a page at a time."""
        after = -1
        while True:
            query = (
                select(llm_batch_items.c.position, llm_batch_items.c.custom_id, llm_batch_items.c.params)
                .where(
                    llm_batch_items.c.batch_id == unit.items_batch_id,
                    llm_batch_items.c.part_index == unit.items_part,
                    llm_batch_items.c.position > after,
                )
                .order_by(llm_batch_items.c.position)
                .limit(page_size)
            )
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return
            yield [(r.custom_id, r.params or "{}") for r in rows]
            after = rows[-1].position

    async def item_status_counts(self, batch_id: str) -> dict[str, int]:
        async with reading(self.engine) as conn:
            return await _item_counts(conn, batch_id)

    async def usage(self, batch_id: str) -> list[UsageRow]:
        async with reading(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(llm_batch_usage)
                    .where(llm_batch_usage.c.batch_id == batch_id)
                    .order_by(llm_batch_usage.c.model)
                )
            ).all()
        return [_usage_row(r) for r in rows]

    async def spend(self, organization_id: str | None = None) -> list[UsageRow]:
        """Token totals by provider and model, over every batch (of one organization if given)."""
        u = llm_batch_usage.c
        query = select(
            u.provider,
            u.model,
            func.sum(u["items"]),
            func.sum(u.input_tokens),
            func.sum(u.output_tokens),
            func.sum(u.cache_read_tokens),
            func.sum(u.cache_write_tokens),
        ).group_by(u.provider, u.model)
        if organization_id is not None:
            query = query.where(u.organization_id == organization_id)
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query.order_by(u.provider, u.model))).all()
        return [UsageRow(str(r[0]), str(r[1]), *(int(v or 0) for v in r[2:])) for r in rows]

    async def due_batches(self, *, now: datetime, since: datetime, limit: int | None) -> list[Batch]:
        """Running batches and parts of every organization: those whose results the provider will
        soon remove first, then the least recently polled."""
        urgent = case((llm_batches.c.results_expire_at <= now + RETENTION_URGENT, 0), else_=1)
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status.in_([s.value for s in POLLED_STATUSES]),
                llm_batches.c.provider_batch_id.is_not(None),
                llm_batches.c.created_at >= since,
                or_(llm_batches.c.next_poll_at.is_(None), llm_batches.c.next_poll_at <= now),
            )
            .order_by(
                urgent,
                llm_batches.c.last_polled_at.asc().nulls_first(),
                llm_batches.c.created_at,
                llm_batches.c.id,
            )
        )
        if limit is not None:
            query = query.limit(limit)
        return await self._batches(query)

    async def queued_units(self, *, now: datetime, limit: int) -> list[Batch]:
        """Batches and parts waiting to be sent, oldest first."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status == BatchStatus.QUEUED.value,
                _is_unit(),
                or_(llm_batches.c.next_poll_at.is_(None), llm_batches.c.next_poll_at <= now),
            )
            .order_by(
                llm_batches.c.created_at, llm_batches.c.part_index.asc().nulls_first(), llm_batches.c.id
            )
            .limit(limit)
        )
        return await self._batches(query)

    async def submitting_batches(self, *, created_before: datetime, limit: int) -> list[Batch]:
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status == BatchStatus.SUBMITTING.value,
                _is_unit(),
                llm_batches.c.updated_at <= created_before,
            )
            .order_by(llm_batches.c.updated_at)
            .limit(limit)
        )
        return await self._batches(query)

    async def known_provider_batch_ids(self, provider: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(llm_batches.c.provider_batch_id).where(
                    llm_batches.c.provider == provider, llm_batches.c.provider_batch_id.in_(list(ids))
                )
            )
            return {str(r[0]) for r in rows}

    async def undeleted_provider_files(self, *, limit: int) -> list[Batch]:
        """Ended units whose files (or Anthropic results) are still at the provider."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                llm_batches.c.provider_batch_id.is_not(None),
                llm_batches.c.provider_files_deleted_at.is_(None),
            )
            .order_by(llm_batches.c.ended_at)
            .limit(limit)
        )
        return await self._batches(query)

    async def retention_due(self, *, ended_before: datetime, limit: int) -> list[str]:
        """Ended logical batches whose stored results are older than the retention."""
        query = (
            select(llm_batches.c.id)
            .where(
                llm_batches.c.parent_batch_id.is_(None),
                llm_batches.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                llm_batches.c.ended_at < ended_before,
                llm_batches.c.results_removed_at.is_(None),
            )
            .order_by(llm_batches.c.ended_at)
            .limit(limit)
        )
        async with reading(self.engine) as conn:
            return [str(r[0]) for r in await conn.execute(query)]

    async def counts_by_provider_status(
        self, organization_id: str | None = None
    ) -> list[tuple[str, str, int]]:
        query = (
            select(llm_batches.c.provider, llm_batches.c.status, func.count())
            .where(llm_batches.c.parent_batch_id.is_(None))
            .group_by(llm_batches.c.provider, llm_batches.c.status)
        )
        if organization_id is not None:
            query = query.where(llm_batches.c.organization_id == organization_id)
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def active_batches(self, organization_id: str, limit: int) -> list[Batch]:
        """Open batches and parts (not split parents), oldest first."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.organization_id == organization_id,
                llm_batches.c.status.in_([s.value for s in OPEN_STATUSES]),
                _is_unit(),
            )
            .order_by(llm_batches.c.created_at, llm_batches.c.part_index.asc().nulls_first())
            .limit(limit)
        )
        return await self._batches(query)

    async def running_page(
        self,
        organization_id: str,
        *,
        limit: int,
        offset: int,
        statuses: Collection[BatchStatus] = POLLED_STATUSES,
    ) -> list[Batch]:
        """Batches and parts in `statuses` (by default, running at their provider), oldest first."""
        query = (
            select(llm_batches)
            .where(
                llm_batches.c.organization_id == organization_id,
                llm_batches.c.status.in_([s.value for s in statuses]),
                _is_unit(),
            )
            .order_by(llm_batches.c.created_at, llm_batches.c.id)
            .limit(limit)
            .offset(offset)
        )
        return await self._batches(query)

    async def last_cycle(self) -> CycleRecord | None:
        query = select(llm_batch_poll_cycles).order_by(llm_batch_poll_cycles.c.id.desc()).limit(1)
        async with reading(self.engine) as conn:
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
            m["failed"],
        )

    async def due_deliveries(self, *, now: datetime, limit: int) -> list[Delivery]:
        query = (
            select(llm_batch_deliveries)
            .where(llm_batch_deliveries.c.status == "pending", llm_batch_deliveries.c.next_attempt_at <= now)
            .order_by(llm_batch_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [Delivery(**r._mapping) for r in rows]

    async def deliveries(self, batch_id: str) -> list[Delivery]:
        query = select(llm_batch_deliveries).where(llm_batch_deliveries.c.batch_id == batch_id)
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query.order_by(llm_batch_deliveries.c.channel))).all()
        return [Delivery(**r._mapping) for r in rows]


def _is_unit() -> ColumnElement[bool]:
    """A row the provider knows: a part, or a batch that was not split."""
    return or_(llm_batches.c.parent_batch_id.is_not(None), llm_batches.c.part_count == 1)


def _octets(conn: AsyncConnection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.octet_length(column)
    return func.length(cast(column, LargeBinary))


# --- writes that both the API and the jobs make (the jobs in fenced transactions) ---------------


async def insert_submission(
    conn: AsyncConnection,
    *,
    batch_id: str,
    organization_id: str,
    submission: Submission,
    idempotency_key: str,
    now: datetime,
    resubmitted_from: str | None,
) -> bool:
    """The batch row (and one row per part when it is split), all `queued`; False on a repeated key."""
    split = len(submission.parts) > 1
    base: dict[str, Any] = {
        "organization_id": organization_id,
        "provider": submission.provider,
        "model": submission.model,
        "status": BatchStatus.QUEUED.value,
        "created_at": now,
        "updated_at": now,
        "consecutive_errors": 0,
        "missing_output_polls": 0,
        "succeeded_count": 0,
        "errored_count": 0,
        "canceled_count": 0,
        "expired_count": 0,
        "missing_count": 0,
    }
    inserted = await conn.execute(
        _upsert(conn)(llm_batches)
        .values(
            id=batch_id,
            idempotency_key=idempotency_key,
            request_count=submission.request_count,
            part_count=len(submission.parts),
            resubmitted_from=resubmitted_from,
            estimated_tokens=0 if split else submission.estimated_tokens,
            **base,
        )
        .on_conflict_do_nothing(index_elements=["organization_id", "idempotency_key"])
    )
    if inserted.rowcount == 0:
        return False
    if split:
        await conn.execute(
            insert(llm_batches),
            [
                {
                    **base,
                    "id": part_id(batch_id, part.index),
                    "idempotency_key": part_id(batch_id, part.index),
                    "request_count": part.count,
                    "parent_batch_id": batch_id,
                    "part_index": part.index,
                    "part_count": 1,
                    "estimated_tokens": part.estimated_tokens,
                }
                for part in submission.parts
            ],
        )
    return True


def part_id(batch_id: str, index: int) -> str:
    return f"{batch_id}.p{index}"


async def insert_items(
    conn: AsyncConnection,
    batch_id: str,
    organization_id: str,
    rows: Sequence[Row],
    part_starts: Sequence[int],
    now: datetime,
) -> None:
    pending = ItemStatus.PENDING.value
    await conn.execute(
        insert(llm_batch_items),
        [
            {
                "batch_id": batch_id,
                "custom_id": r.custom_id,
                "organization_id": organization_id,
                "status": pending,
                "params": r.params.decode(),
                "updated_at": now,
                "part_index": bisect_right(part_starts, r.position) - 1,
                "position": r.position,
                "model": r.model,
            }
            for r in rows
        ],
    )


async def copy_items(
    conn: AsyncConnection,
    source_id: str,
    batch_id: str,
    organization_id: str,
    item_statuses: Sequence[str],
    parts: Sequence[PartPlan],
    now: datetime,
) -> None:
    """Copy the requests of the source's items in `item_statuses`, renumbered, part by part."""
    i = llm_batch_items.c
    ordered = (
        select(
            i.custom_id,
            i.params,
            i.model,
            func.row_number().over(order_by=(i.position, i.custom_id)).label("n"),
        )
        .where(i.batch_id == source_id, i.status.in_(list(item_statuses)), i.params.is_not(None))
        .subquery()
    )
    position = ordered.c.n - 1
    part_index = case(*((position >= p.start, p.index) for p in reversed(parts)), else_=0)
    await conn.execute(
        insert(llm_batch_items).from_select(
            [
                "batch_id",
                "custom_id",
                "organization_id",
                "status",
                "params",
                "updated_at",
                "part_index",
                "position",
                "model",
            ],
            select(
                literal(batch_id),
                ordered.c.custom_id,
                literal(organization_id),
                literal(ItemStatus.PENDING.value),
                ordered.c.params,
                literal(now, UTCDateTime()),
                part_index,
                position,
                ordered.c.model,
            ),
        )
    )


async def claim_unit(conn: AsyncConnection, unit: Batch, now: datetime, *, token_limit: int | None) -> bool:
    """`queued` -> `submitting` when the unit's tokens fit the model's budget (if one applies),
    behind no older queued batch of the same model. The budget is what units of the model hold
    while `submitting` or `running`: refunded by their leaving those statuses, whatever the cause."""
    if token_limit is not None:
        if conn.dialect.name == "postgresql":  # one claim per model at a time (SQLite: BEGIN IMMEDIATE)
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"backburner-budget:{unit.provider}:{unit.model}"},
            )
        same_model = and_(llm_batches.c.provider == unit.provider, llm_batches.c.model == unit.model)
        reserved = (
            await conn.execute(
                select(func.coalesce(func.sum(llm_batches.c.estimated_tokens), 0)).where(
                    same_model,
                    llm_batches.c.status.in_([s.value for s in RESERVING_STATUSES]),
                    llm_batches.c.id != unit.id,
                )
            )
        ).scalar_one()
        older = (
            await conn.execute(
                select(func.count()).where(
                    same_model,
                    llm_batches.c.status == BatchStatus.QUEUED.value,
                    _is_unit(),
                    llm_batches.c.created_at < unit.created_at,
                )
            )
        ).scalar_one()
        if older or not fits_budget(int(reserved), unit.estimated_tokens, token_limit):
            return False
    return await _moved(
        conn,
        update(llm_batches)
        .where(llm_batches.c.id == unit.id, llm_batches.c.status == BatchStatus.QUEUED.value)
        .values(status=BatchStatus.SUBMITTING.value, updated_at=now, next_poll_at=None),
        now,
    )


async def adopt_provider_batch(
    conn: AsyncConnection,
    organization_id: str,
    batch_id: str,
    snapshot: ProviderBatch,
    now: datetime,
    results_expire_at: datetime | None = None,
) -> bool:
    """`submitting` -> `running` with the provider's ids."""
    return await _moved(
        conn,
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
            input_file_id=snapshot.input_file_id,
            submitted_at=now,
            updated_at=now,
            next_poll_at=None,
            consecutive_errors=0,
            last_error=None,
            results_expire_at=results_expire_at,
        ),
        now,
    )


async def requeue_unit(
    conn: AsyncConnection,
    unit_id: str,
    now: datetime,
    *,
    reason: str | None,
    consecutive_errors: int,
    next_attempt_at: datetime | None,
    from_status: BatchStatus = BatchStatus.SUBMITTING,
) -> bool:
    """Back to `queued`, to be sent again (a refusal it may outlive, or the token budget)."""
    return await _moved(
        conn,
        update(llm_batches)
        .where(llm_batches.c.id == unit_id, llm_batches.c.status == from_status.value)
        .values(
            status=BatchStatus.QUEUED.value,
            provider_batch_id=None,
            provider_status=None,
            output_file_id=None,
            error_file_id=None,
            input_file_id=None,
            submitted_at=None,
            missing_output_polls=0,
            consecutive_errors=consecutive_errors,
            last_error=reason,
            next_poll_at=next_attempt_at,
            updated_at=now,
        ),
        now,
    )


async def _moved(conn: AsyncConnection, statement: Any, now: datetime) -> bool:
    """Run an UPDATE that moves one batch or part between open statuses; a part's batch then
    shows the new status of its parts. False if the row was not in the expected status."""
    row = (await conn.execute(statement.returning(llm_batches.c.parent_batch_id))).one_or_none()
    if row is None:
        return False
    if row.parent_batch_id is not None:
        await refresh_parent(conn, row.parent_batch_id, now)
    return True


async def fail_submission(
    conn: AsyncConnection, organization_id: str, batch_id: str, reason: str, now: datetime
) -> bool:
    """Fail a batch none of whose parts the provider has (`queued` or `submitting` only)."""
    open_values = [BatchStatus.QUEUED.value, BatchStatus.SUBMITTING.value]
    result = await conn.execute(
        update(llm_batches)
        .where(
            llm_batches.c.organization_id == organization_id,
            llm_batches.c.id == batch_id,
            llm_batches.c.status.in_(open_values),
        )
        .values(
            status=BatchStatus.FAILED.value,
            failure_reason=reason,
            updated_at=now,
            ended_at=now,
            # The key is released: a retry with it sends the batch again.
            idempotency_key=f"released:{batch_id}",
        )
    )
    if not result.rowcount:
        return False
    await conn.execute(
        update(llm_batches)
        .where(llm_batches.c.parent_batch_id == batch_id, llm_batches.c.status.in_(open_values))
        .values(status=BatchStatus.FAILED.value, failure_reason=reason, updated_at=now, ended_at=now)
    )
    await _mark_items(conn, batch_id, None, ItemStatus.PENDING, ItemStatus.MISSING, now)
    await _store_counts(conn, batch_id)
    return True


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
    return await _moved(
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
    statement = _upsert(conn)(llm_batch_items)
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
        await _mark_items(
            conn, items_batch, part, ItemStatus.PENDING, ItemStatus.EXPIRED, now, EXPIRED_WITHOUT_RESULT
        )
    elif unsent and status is BatchStatus.CANCELLED:
        await _mark_items(conn, items_batch, part, ItemStatus.PENDING, ItemStatus.CANCELED, now)
    else:
        await _mark_items(conn, items_batch, part, ItemStatus.PENDING, ItemStatus.MISSING, now)
    counts = _count_values(await _item_counts(conn, items_batch, part))
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
        await _end_logical(conn, batch_id, row.organization_id, status, now, channels, delivery_ids)
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
                *(c[name] for name in _COUNT_COLUMNS),
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
        values.update({name: sum(getattr(p, name) for p in parts) for name in _COUNT_COLUMNS})
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
        await _end_logical(conn, parent_id, row.organization_id, status, now, channels, delivery_ids)


async def _lock_row(conn: AsyncConnection, batch_id: str) -> None:
    await conn.execute(select(llm_batches.c.id).where(llm_batches.c.id == batch_id).with_for_update())


async def _end_logical(
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


async def _mark_items(
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


async def _item_counts(conn: AsyncConnection, batch_id: str, part: int | None = None) -> dict[str, int]:
    query = select(llm_batch_items.c.status, func.count()).where(llm_batch_items.c.batch_id == batch_id)
    if part is not None:
        query = query.where(llm_batch_items.c.part_index == part)
    rows = (await conn.execute(query.group_by(llm_batch_items.c.status))).all()
    return {str(r[0]): int(r[1]) for r in rows}


_COUNT_COLUMNS = ("succeeded_count", "errored_count", "canceled_count", "expired_count", "missing_count")


def _count_values(counts: dict[str, int]) -> dict[str, int]:
    """Item counts by status as the batch's count columns."""
    return {
        "succeeded_count": counts.get(ItemStatus.SUCCEEDED.value, 0),
        "errored_count": counts.get(ItemStatus.ERRORED.value, 0),
        "canceled_count": counts.get(ItemStatus.CANCELED.value, 0),
        "expired_count": counts.get(ItemStatus.EXPIRED.value, 0),
        "missing_count": counts.get(ItemStatus.MISSING.value, 0),
    }


async def _store_counts(conn: AsyncConnection, row_id: str) -> None:
    counts = _count_values(await _item_counts(conn, row_id))
    await conn.execute(update(llm_batches).where(llm_batches.c.id == row_id).values(**counts))


def _usage_row(row: SqlRow[Any]) -> UsageRow:
    m = row._mapping
    return UsageRow(
        m["provider"],
        m["model"],
        m["items"],
        m["input_tokens"],
        m["output_tokens"],
        m["cache_read_tokens"],
        m["cache_write_tokens"],
    )
