"""The documented shapes of the batch routes' answers (the routes build them as plain JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from backburner.batches.domain import BatchStatus

# Batch ids are `batch-...`; anything else cannot exist, and a NUL would reach the database.
BATCH_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class BatchCounts(BaseModel):
    succeeded: int
    errored: int
    canceled: int
    expired: int
    missing: int


class PartOut(BaseModel):
    index: int | None
    status: BatchStatus
    request_count: int
    provider_batch_id: str | None
    provider_status: str | None
    counts: BatchCounts
    failure_reason: str | None
    last_error: str | None
    submitted_at: str | None
    ended_at: str | None
    estimated_tokens: int


class ModelUsage(BaseModel):
    provider: str
    model: str
    items: int = Field(description="Items with a result that reported usage.")
    input_tokens: int = Field(description="Input tokens, cached input excluded.")
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    estimated_cost_usd: float | None = Field(
        description="From `batch_prices`; null for a model without a price."
    )


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    estimated_cost_usd: float | None
    by_model: list[ModelUsage]


class BatchOut(BaseModel):
    id: str
    provider: str
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
    resubmitted_from: str | None = Field(description="The batch this one resubmits.")
    results_removed_at: str | None
    estimated_tokens: int = Field(description="Estimated input tokens (about 4 bytes of JSON each).")
    part_count: int = Field(description="Provider batches it is sent as (more than 1 when it was split).")
    parts: list[PartOut] = Field(description="Its parts, when it was split; empty otherwise.")
    usage: UsageOut | None = Field(description="Token totals from the stored items (not in listings).")


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
    provider: str
    status: BatchStatus
    parent_batch_id: str | None = Field(description="The split batch this is a part of.")
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
    failed: int = Field(description="Batches (or parts) the cycle ended as failed.")


class BatchJobs(BaseModel):
    counts: dict[str, dict[str, int]] = Field(description="Batches by provider, then by status.")
    running: list[RunningBatch]
    queued: list[RunningBatch] = Field(description="Batches and parts waiting to be sent.")
    last_cycle: PollCycle | None
    spend: list[ModelUsage] = Field(description="Token totals and estimated cost by provider and model.")


RESULTS_CONTENT: dict[str, Any] = {
    "application/jsonl": {
        "schema": {
            "type": "string",
            "description": "One JSON object per line: {custom_id, status, result, error}.",
        }
    }
}
