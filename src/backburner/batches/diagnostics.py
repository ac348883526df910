"""The poller's diagnostics as JSON-ready values, shared by the admin API and the dashboard."""

from __future__ import annotations

from typing import Any

from backburner.batches.domain import Batch
from backburner.batches.store import BatchStore, CycleRecord
from backburner.clock import iso_or_none


async def counts_by_provider(store: BatchStore, organization_id: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for provider, status, n in await store.counts_by_provider_status(organization_id):
        counts.setdefault(provider, {})[status] = n
    return counts


def running_view(batch: Batch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "provider": batch.provider,
        "status": batch.status.value,
        "parent_batch_id": batch.parent_batch_id,
        "provider_batch_id": batch.provider_batch_id,
        "last_polled_at": iso_or_none(batch.last_polled_at),
        "next_poll_at": iso_or_none(batch.next_poll_at),
        "consecutive_errors": batch.consecutive_errors,
        "last_error": batch.last_error,
    }


def cycle_view(cycle: CycleRecord | None) -> dict[str, Any] | None:
    if cycle is None:
        return None
    return {
        "started_at": iso_or_none(cycle.started_at),
        "duration_s": cycle.duration_s,
        "polled": cycle.polled,
        "completed": cycle.completed,
        "items_ingested": cycle.items_ingested,
        "errors": cycle.errors,
        "failed": cycle.failed,
    }
