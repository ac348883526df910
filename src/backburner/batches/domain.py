"""The vocabulary of LLM batches: statuses, provider snapshots, item results and our batch record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, get_args

Provider = Literal["anthropic", "openai"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)


class BatchStatus(StrEnum):
    """Our status of a batch. Only the poller moves a batch out of RUNNING or INGESTING."""

    SUBMITTING = "submitting"  # our record exists, the provider has not confirmed it yet
    RUNNING = "running"  # the provider is processing it (Anthropic `canceling` included)
    INGESTING = "ingesting"  # the provider ended it; item results are being stored
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED, BatchStatus.FAILED}
)
POLLED_STATUSES: frozenset[BatchStatus] = frozenset({BatchStatus.RUNNING, BatchStatus.INGESTING})


class ItemStatus(StrEnum):
    PENDING = "pending"  # no result stored yet
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"
    MISSING = "missing"  # the provider ended the batch without a result line for this custom id


@dataclass(frozen=True, slots=True)
class ProviderCounts:
    """Request counts in one shape for both providers (OpenAI's `completed` is `succeeded`)."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """What a provider says about one batch, reduced to what decisions need."""

    provider: Provider
    provider_batch_id: str
    status: str  # the provider's own word: `in_progress`, `canceling`, `ended`, `finalizing`, ...
    counts: ProviderCounts
    created_at: datetime | None = None
    cancel_initiated: bool = False
    output_file_id: str | None = None  # OpenAI only
    error_file_id: str | None = None  # OpenAI only
    errors: tuple[str, ...] = ()  # OpenAI `failed`: why it failed
    metadata: tuple[tuple[str, str], ...] = ()  # OpenAI metadata, used to reconcile submissions


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One result line, provider-neutral; `result_json` keeps the provider's object verbatim."""

    custom_id: str
    status: ItemStatus
    result_json: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a submission: the provider's Messages or Chat Completions params."""

    custom_id: str
    params: dict[str, object]


@dataclass(frozen=True)
class Batch:
    """Our record of a batch (one row of `llm_batches`)."""

    id: str
    organization_id: str
    provider: Provider
    model: str
    status: BatchStatus
    idempotency_key: str
    request_count: int
    created_at: datetime
    updated_at: datetime
    provider_batch_id: str | None = None
    provider_status: str | None = None
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    last_polled_at: datetime | None = None
    next_poll_at: datetime | None = None
    consecutive_errors: int = 0
    last_error: str | None = None
    missing_output_polls: int = 0
    failure_reason: str | None = None
    succeeded_count: int = 0
    errored_count: int = 0
    canceled_count: int = 0
    expired_count: int = 0
    missing_count: int = 0
