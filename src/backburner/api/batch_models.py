"""The documented shapes of the batch routes' answers (the routes build them as plain JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from backburner.batches.domain import BatchStatus, Provider

# Batch ids are `batch-...`; anything else cannot exist, and a NUL would reach the database.
BATCH_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class BatchCounts(BaseModel):
    succeeded: int
    errored: int
    canceled: int
    expired: int
    missing: int


class BatchOut(BaseModel):
    id: str
    provider: Provider
    model: str
    status: BatchStatus
    provider_batch_id: str | None
    provider_status: str | None
    request_count: int
    counts: BatchCounts
    failure_reason: str | None
    created_at: str = Field(description="ISO 8601, UTC.")
    submitted_at: str | None
    ended_at: str | None
    cancel_requested_at: str | None
    last_polled_at: str | None
    next_poll_at: str | None
    consecutive_errors: int
    last_error: str | None


class BatchPage(BaseModel):
    data: list[BatchOut]
    has_more: bool
    next_before: str | None = Field(description="Pass as `before` for the next page; null on the last page.")


class BatchProblem(BaseModel):
    """An error about a batch that was recorded: `batch` is its record."""

    detail: str
    batch: BatchOut


class RunningBatch(BaseModel):
    id: str
    provider: Provider
    provider_batch_id: str | None
    last_polled_at: str | None
    next_poll_at: str | None
    consecutive_errors: int
    last_error: str | None


class PollCycle(BaseModel):
    started_at: str
    duration_s: float
    polled: int
    completed: int
    items_ingested: int
    errors: int


class BatchJobs(BaseModel):
    counts: dict[str, dict[str, int]] = Field(description="Batches by provider, then by status.")
    running: list[RunningBatch]
    last_cycle: PollCycle | None


RESULTS_CONTENT: dict[str, Any] = {
    "application/jsonl": {
        "schema": {
            "type": "string",
            "description": "One JSON object per line: {custom_id, status, result, error}.",
        }
    }
}
