"""`BatchStore`: the batches' reads, and the API's own writes, each in its own transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.batches.domain import OPEN_STATUSES, POLLED_STATUSES, TERMINAL_STATUSES, Batch, BatchStatus
from backburner.batches.statuses import RETENTION_URGENT
from backburner.batches.store.queries import is_unit, item_counts, octets
from backburner.batches.store.records import (
    CycleRecord,
    Delivery,
    ItemRow,
    UsageRow,
    batch_from_row,
    usage_from_row,
)
from backburner.batches.store.submission import (
    SenderHold,
    copy_items,
    fail_submission,
    insert_items,
    insert_submission,
)
from backburner.batches.tables import (
    llm_batch_deliveries,
    llm_batch_items,
    llm_batch_poll_cycles,
    llm_batch_usage,
    llm_batches,
)
from backburner.batches.validation import PartPlan, Row, Submission
from backburner.db.keyset import Keyset
from backburner.db.transactions import reading

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
        hold: SenderHold | None = None,
    ) -> Batch | None:
        """Write the batch (`queued`), its parts and its pending items in one transaction.

        `next_rows` gives the next chunk of checked rows (empty at the end). Returns None when
        the organization already has a batch with this idempotency key. Under `hold`, the leader
        does not send its units: the caller does, then `release`s them.
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
                hold=hold,
            ):
                return None
            starts = [p.start for p in submission.parts]
            while rows := await next_rows():
                await insert_items(conn, batch_id, organization_id, rows, starts, now)
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == batch_id))).one()
        return batch_from_row(row)

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
        hold: SenderHold | None = None,
    ) -> Batch | None:
        """A new batch of the `source` batch's items in `item_statuses`: their requests are copied
        inside the database, and `plan` splits them (from each request's bytes and tokens)."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                select(llm_batch_items.c.custom_id, octets(conn, llm_batch_items.c.params))
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
                hold=hold,
            ):
                return None
            await copy_items(conn, source.id, batch_id, organization_id, item_statuses, parts, now)
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == batch_id))).one()
        return batch_from_row(row)

    async def release(self, batch_id: str, hold: SenderHold) -> None:
        """Hand the batch's units still `queued` under the sender's hold over to the leader. A unit
        the sender put back with a time of its own (a backoff) keeps that time."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(llm_batches)
                .where(
                    or_(llm_batches.c.id == batch_id, llm_batches.c.parent_batch_id == batch_id),
                    llm_batches.c.status == BatchStatus.QUEUED.value,
                    llm_batches.c.next_poll_at.in_([hold.first, hold.rest]),
                )
                .values(next_poll_at=None)
            )

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
        return None if row is None else batch_from_row(row)

    async def _batches(self, query: Any) -> list[Batch]:
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [batch_from_row(r) for r in rows]

    async def unit(self, unit_id: str) -> Batch | None:
        """A batch or a part by id, whatever its organization (for the jobs)."""
        async with reading(self.engine) as conn:
            row = (await conn.execute(select(llm_batches).where(llm_batches.c.id == unit_id))).one_or_none()
        return None if row is None else batch_from_row(row)

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
        return [batch_from_row(r) for r in rows]

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
            return await item_counts(conn, batch_id)

    async def usage(self, batch_id: str) -> list[UsageRow]:
        async with reading(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(llm_batch_usage)
                    .where(llm_batch_usage.c.batch_id == batch_id)
                    .order_by(llm_batch_usage.c.model)
                )
            ).all()
        return [usage_from_row(r) for r in rows]

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
                is_unit(),
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
                is_unit(),
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
                is_unit(),
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
                is_unit(),
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
