"""The vocabulary of LLM batches: statuses, provider snapshots, item results and our batch record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, get_args

ProviderKind = Literal["anthropic", "openai"]
KINDS: tuple[ProviderKind, ...] = get_args(ProviderKind)
# A provider's name: one of the kinds (the two defaults) or a name from the `providers:` settings.
Provider = str
PROVIDERS: tuple[ProviderKind, ...] = KINDS


class BatchStatus(StrEnum):
    """Our status of a batch. Only the poller moves a batch out of RUNNING or INGESTING."""

    QUEUED = "queued"  # waiting to be sent: an enqueued-token budget, or a retry after a refusal
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
OPEN_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.QUEUED, BatchStatus.SUBMITTING, BatchStatus.RUNNING, BatchStatus.INGESTING}
)
# A part holds its share of an enqueued-token budget while the provider has it queued or running.
RESERVING_STATUSES: frozenset[BatchStatus] = frozenset({BatchStatus.SUBMITTING, BatchStatus.RUNNING})


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
    kind: ProviderKind = "anthropic"
    input_file_id: str | None = None  # OpenAI only
    error_codes: tuple[str, ...] = ()  # OpenAI `failed`: the codes of its errors

    @property
    def token_limit_exceeded(self) -> bool:
        """OpenAI refused to queue the batch for the enqueued-token limit: it can be sent again."""
        return "token_limit_exceeded" in self.error_codes


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One result line, provider-neutral; `result_json` keeps the provider's object verbatim."""

    custom_id: str
    status: ItemStatus
    result_json: str
    error: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one result: input excludes the cached input, which the cache fields count."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


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
    parent_batch_id: str | None = None  # set on the parts of a split batch
    part_index: int | None = None
    part_count: int = 1  # parts of a logical batch; a batch that fits is its own single part
    resubmitted_from: str | None = None
    estimated_tokens: int = 0
    input_file_id: str | None = None
    provider_files_deleted_at: datetime | None = None
    results_expire_at: datetime | None = None
    results_removed_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_part(self) -> bool:
        return self.parent_batch_id is not None

    @property
    def items_batch_id(self) -> str:
        """The logical batch whose items this row sends and ingests."""
        return self.parent_batch_id or self.id

    @property
    def items_part(self) -> int:
        return self.part_index or 0
