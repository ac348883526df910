"""What the batch store reads and writes besides `Batch`: items, deliveries, polls, cycles, usage."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Row as SqlRow

from backburner.batches.domain import Batch, BatchStatus

_BATCH_FIELDS = {f.name for f in fields(Batch)}


def batch_from_row(row: SqlRow[Any]) -> Batch:
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


def usage_from_row(row: SqlRow[Any]) -> UsageRow:
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
