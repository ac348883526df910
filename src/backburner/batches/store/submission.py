"""Writes both the API and the jobs make (the jobs in fenced transactions): a submission's rows,
and the moves of a unit before its provider ends it."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.batches.domain import RESERVING_STATUSES, Batch, BatchStatus, ItemStatus, ProviderBatch
from backburner.batches.statuses import fits_budget
from backburner.batches.store.queries import is_unit, mark_items, store_counts, upsert_for
from backburner.batches.store.transitions import moved
from backburner.batches.tables import llm_batch_items, llm_batches
from backburner.batches.validation import PartPlan, Row, Submission
from backburner.db.types import UTCDateTime


@dataclass(frozen=True)
class SenderHold:
    """Until when the leader leaves a new submission's units to the process that wrote them and
    sends them (`queued_units` skips a unit until its `next_poll_at`).

    The first unit is claimed by its sender right after the write, so its hold is short: should
    the sender die first, the leader sends it soon. The others must not be sent before the first
    has its answer (a refusal of the first fails the whole submission), which may take the
    provider's timeouts: they are held for as long as an unconfirmed send may last."""

    first: datetime
    rest: datetime

    def of(self, position: int) -> datetime:
        return self.first if position == 0 else self.rest


async def insert_submission(
    conn: AsyncConnection,
    *,
    batch_id: str,
    organization_id: str,
    submission: Submission,
    idempotency_key: str,
    now: datetime,
    resubmitted_from: str | None,
    hold: SenderHold | None,
) -> bool:
    """The batch row (and one row per part when it is split), all `queued` and held for their
    sender (`hold`); False on a repeated key."""
    split = len(submission.parts) > 1
    base: dict[str, Any] = {
        "organization_id": organization_id,
        "provider": submission.provider,
        "model": submission.model,
        "status": BatchStatus.QUEUED.value,
        "created_at": now,
        "updated_at": now,
        "next_poll_at": None if hold is None else hold.first,
        "consecutive_errors": 0,
        "missing_output_polls": 0,
        "succeeded_count": 0,
        "errored_count": 0,
        "canceled_count": 0,
        "expired_count": 0,
        "missing_count": 0,
    }
    inserted = await conn.execute(
        upsert_for(conn)(llm_batches)
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
                    "next_poll_at": None if hold is None else hold.of(position),
                }
                for position, part in enumerate(submission.parts)
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
                    is_unit(),
                    llm_batches.c.created_at < unit.created_at,
                )
            )
        ).scalar_one()
        if older or not fits_budget(int(reserved), unit.estimated_tokens, token_limit):
            return False
    return await moved(
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
    return await moved(
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
    return await moved(
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
    await mark_items(conn, batch_id, None, ItemStatus.PENDING, ItemStatus.MISSING, now)
    await store_counts(conn, batch_id)
    return True
