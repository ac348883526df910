"""Pure decisions of the poller: what a provider's status means for us, and when to ask again.

Nothing here reads the clock or does I/O; the poller passes `now` in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from backburner.batches.domain import (
    TERMINAL_STATUSES,
    BatchStatus,
    ProviderBatch,
    ProviderCounts,
    ProviderKind,
)


class Action(StrEnum):
    WAIT = "wait"  # still running at the provider: poll again later
    INGEST = "ingest"  # ended: stream every item result, then become `target`
    AWAIT_OUTPUT = "await_output"  # ended, but the provider has not published its results file yet
    FAIL = "fail"  # ended without results worth ingesting: fail with `reason`
    REQUEUE = "requeue"  # refused for the enqueued-token limit: send it again when there is room


@dataclass(frozen=True, slots=True)
class StatusDecision:
    action: Action
    target: BatchStatus | None = None
    reason: str | None = None


WAIT = StatusDecision(Action.WAIT)


def map_status(snapshot: ProviderBatch) -> StatusDecision:
    if snapshot.kind == "anthropic":
        return map_anthropic(snapshot.status, snapshot.counts)
    if snapshot.status == "failed" and snapshot.token_limit_exceeded:
        return StatusDecision(Action.REQUEUE)
    return map_openai(
        snapshot.status, snapshot.counts, snapshot.output_file_id, snapshot.error_file_id, snapshot.errors
    )


def map_anthropic(processing_status: str, counts: ProviderCounts) -> StatusDecision:
    """`in_progress` and `canceling` are running (canceling still finishes items); `ended` ingests.

    An ended batch's counts say how it ended: any canceled request means it was cancelled, any
    expired one that it expired (with the other results kept), otherwise it completed.
    """
    if processing_status != "ended":
        return WAIT
    return StatusDecision(Action.INGEST, ended_status(counts))


def ended_status(counts: ProviderCounts) -> BatchStatus:
    if counts.canceled > 0:
        return BatchStatus.CANCELLED
    if counts.expired > 0:
        return BatchStatus.EXPIRED
    return BatchStatus.COMPLETED


_OPENAI_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_OPENAI_PARTIAL = {"expired": BatchStatus.EXPIRED, "cancelled": BatchStatus.CANCELLED}


def map_openai(
    status: str,
    counts: ProviderCounts,
    output_file_id: str | None,
    error_file_id: str | None,
    errors: tuple[str, ...] = (),
) -> StatusDecision:
    """OpenAI's `expired` and `cancelled` keep whatever results their files hold.

    A `completed` batch is ingested only once every file its counts promise exists: OpenAI can
    report `completed` a little before `output_file_id` is set.
    """
    if status in _OPENAI_RUNNING:
        return WAIT
    if status in _OPENAI_PARTIAL:
        return StatusDecision(Action.INGEST, _OPENAI_PARTIAL[status])
    if status == "failed":
        reason = "; ".join(errors) if errors else "the provider failed the batch without a reason"
        return StatusDecision(Action.FAIL, BatchStatus.FAILED, f"provider failed the batch: {reason}")
    if status == "completed":
        output_expected = counts.succeeded > 0 or (counts.total == 0 and error_file_id is None)
        if (output_expected and output_file_id is None) or (counts.errored > 0 and error_file_id is None):
            return StatusDecision(Action.AWAIT_OUTPUT, BatchStatus.COMPLETED)
        return StatusDecision(Action.INGEST, BatchStatus.COMPLETED)
    return WAIT  # a status this code does not know yet: keep polling rather than guess


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """The poller's limits, converted once from settings."""

    base_backoff_s: float
    max_backoff_s: float
    max_consecutive_errors: int
    missing_output_max_polls: int
    submit_grace_s: float
    lookback_weeks: int


# How long after its creation a provider keeps a batch's results (Anthropic: 29 days; OpenAI's
# batch output files: 30 days); a batch whose window ends within `RETENTION_URGENT` is polled first.
RESULTS_RETENTION: dict[ProviderKind, timedelta] = {
    "anthropic": timedelta(days=29),
    "openai": timedelta(days=30),
}
RETENTION_URGENT = timedelta(days=2)
# A batch the provider says it does not know this soon after its creation is retried, not counted
# as an error (Anthropic has answered 404 for a batch it had just created).
NEW_BATCH_NOT_FOUND_GRACE = timedelta(minutes=1)


def results_expire_at(kind: ProviderKind, created_at: datetime) -> datetime:
    return created_at + RESULTS_RETENTION[kind]


def transient_not_found(status_code: int | None, submitted_at: datetime | None, now: datetime) -> bool:
    return status_code == 404 and submitted_at is not None and now - submitted_at < NEW_BATCH_NOT_FOUND_GRACE


def logical_status(part_statuses: list[BatchStatus]) -> BatchStatus:
    """The status of a split batch from its parts': terminal once every part is.

    Any failed part fails the whole (the other parts' results are kept); otherwise any cancelled
    part makes it cancelled, any expired one expired. Before that it shows its busiest part.
    """
    if all(s in TERMINAL_STATUSES for s in part_statuses):
        for status in (BatchStatus.FAILED, BatchStatus.CANCELLED, BatchStatus.EXPIRED):
            if status in part_statuses:
                return status
        return BatchStatus.COMPLETED
    for status in (BatchStatus.INGESTING, BatchStatus.RUNNING, BatchStatus.SUBMITTING):
        if status in part_statuses:
            return status
    return BatchStatus.QUEUED


def fits_budget(reserved_tokens: int, tokens: int, limit: int | None) -> bool:
    """A part may be sent when its tokens fit beside those already enqueued (no limit: always)."""
    return limit is None or reserved_tokens + tokens <= limit


def backoff_s(consecutive_errors: int, policy: PollPolicy) -> float:
    """0 after the first error (retry next cycle), then base * 1, 3, 7, 15 ... capped."""
    if consecutive_errors <= 1:
        return 0.0
    return min(policy.base_backoff_s * float(2 ** (consecutive_errors - 1) - 1), policy.max_backoff_s)


def next_poll_at(
    consecutive_errors: int, now: datetime, policy: PollPolicy, retry_after_s: float | None = None
) -> datetime:
    """The earliest time a batch may be polled again; a provider's `retry-after` is a floor."""
    delay_s = backoff_s(consecutive_errors, policy)
    if retry_after_s is not None:
        delay_s = max(delay_s, retry_after_s)
    return now + timedelta(seconds=delay_s)


def counts_as_error(status_code: int | None, transient: bool = False) -> bool:
    """Throttling (429) says nothing about the batch: it is retried but never fails a batch; nor
    does a 404 for a batch created moments ago (`transient`)."""
    return status_code != 429 and not transient


def errors_exhausted(consecutive_errors: int, policy: PollPolicy) -> bool:
    return consecutive_errors >= policy.max_consecutive_errors


def output_wait_exhausted(missing_output_polls: int, policy: PollPolicy) -> bool:
    return missing_output_polls >= policy.missing_output_max_polls


def submission_abandoned(created_at: datetime, now: datetime, policy: PollPolicy) -> bool:
    """A record still `submitting` after the grace period was left by a process that died."""
    return now - created_at >= timedelta(seconds=policy.submit_grace_s)


def lookback_start(now: datetime, policy: PollPolicy) -> datetime:
    return now - timedelta(weeks=policy.lookback_weeks)


def delivery_backoff_s(attempts: int, base_s: float = 5.0, max_s: float = 3600.0) -> float:
    """Delay before the next completion delivery attempt after `attempts` failed ones."""
    return min(base_s * float(2 ** max(attempts - 1, 0)), max_s)
