"""Batch records written straight through the store, for the store and job tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backburner.batches.domain import Batch, BatchRequest, ProviderBatch, ProviderCounts
from backburner.batches.intake import row_chunks
from backburner.batches.store import BatchStore, adopt_provider_batch, claim_unit
from backburner.batches.store.submission import SenderHold
from backburner.batches.validation import Target, validate_submission


async def create_record(
    store: BatchStore,
    *,
    batch_id: str,
    organization_id: str = "org-default",
    provider: str = "anthropic",
    model: str = "m",
    idempotency_key: str | None = None,
    requests: list[BatchRequest],
    now: datetime,
    target: Target | None = None,
    hold: SenderHold | None = None,
) -> Batch | None:
    """A `queued` batch (split by `target`'s limits, if given) and its pending items; left to its
    sender under `hold`, if given."""
    payload: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "requests": [{"custom_id": r.custom_id, "params": r.params} for r in requests],
    }
    submission = validate_submission(payload, (lambda p, m: target) if target is not None else None)
    take = row_chunks(submission.rows(), 1000)

    async def next_rows() -> Any:
        return take()

    return await store.create_submission(
        batch_id=batch_id,
        organization_id=organization_id,
        submission=submission,
        idempotency_key=idempotency_key or batch_id,
        now=now,
        next_rows=next_rows,
        hold=hold,
    )


async def mark_running(store: BatchStore, unit: Batch, provider_batch_id: str, now: datetime) -> bool:
    """`queued` -> `running` as if the provider accepted it."""
    snapshot = ProviderBatch(
        unit.provider, provider_batch_id, "in_progress", ProviderCounts(processing=unit.request_count)
    )
    async with store.engine.begin() as conn:
        if not await claim_unit(conn, unit, now, token_limit=None):
            return False
        return await adopt_provider_batch(conn, unit.organization_id, unit.id, snapshot, now)
