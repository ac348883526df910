"""Pure poller decisions: status mapping, backoff, retry-after, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backburner.batches.domain import BatchStatus, ItemStatus, ProviderCounts
from backburner.batches.providers.base import parse_retry_after
from backburner.batches.providers.openai import item_result
from backburner.batches.statuses import (
    Action,
    PollPolicy,
    backoff_s,
    counts_as_error,
    delivery_backoff_s,
    errors_exhausted,
    map_anthropic,
    map_openai,
    next_poll_at,
    output_wait_exhausted,
    submission_abandoned,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = PollPolicy(
    base_backoff_s=60,
    max_backoff_s=600,
    max_consecutive_errors=5,
    missing_output_max_polls=3,
    submit_grace_s=240,
    lookback_weeks=2,
)


@pytest.mark.parametrize("status", ["in_progress", "canceling"])
def test_anthropic_running_statuses_keep_polling(status: str) -> None:
    assert map_anthropic(status, ProviderCounts(processing=3)).action is Action.WAIT


@pytest.mark.parametrize(
    ("counts", "target"),
    [
        (ProviderCounts(succeeded=2, errored=1), BatchStatus.COMPLETED),
        (ProviderCounts(succeeded=2, canceled=1), BatchStatus.CANCELLED),
        (ProviderCounts(succeeded=2, expired=1), BatchStatus.EXPIRED),
    ],
)
def test_anthropic_ended_ingests_into_the_status_its_counts_say(
    counts: ProviderCounts, target: BatchStatus
) -> None:
    decision = map_anthropic("ended", counts)
    assert (decision.action, decision.target) == (Action.INGEST, target)


@pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing", "cancelling", "something_new"])
def test_openai_running_statuses_keep_polling(status: str) -> None:
    assert map_openai(status, ProviderCounts(processing=1), None, None).action is Action.WAIT


@pytest.mark.parametrize(
    ("status", "target"), [("expired", BatchStatus.EXPIRED), ("cancelled", BatchStatus.CANCELLED)]
)
def test_openai_expired_and_cancelled_keep_partial_results(status: str, target: BatchStatus) -> None:
    decision = map_openai(status, ProviderCounts(succeeded=1, expired=1), "file-out", None)
    assert (decision.action, decision.target) == (Action.INGEST, target)


def test_openai_completed_waits_for_the_files_its_counts_promise() -> None:
    waiting = map_openai("completed", ProviderCounts(succeeded=2), None, None)
    assert waiting.action is Action.AWAIT_OUTPUT
    assert (
        map_openai("completed", ProviderCounts(succeeded=2, errored=1), "out", None).action
        is Action.AWAIT_OUTPUT
    )
    assert (
        map_openai("completed", ProviderCounts(succeeded=2, errored=1), "out", "err").action is Action.INGEST
    )
    # Every request failed: only an error file exists, and that is complete.
    assert map_openai("completed", ProviderCounts(errored=2), None, "err").action is Action.INGEST


def test_openai_failed_fails_with_the_providers_reasons() -> None:
    decision = map_openai("failed", ProviderCounts(), None, None, ("invalid_json: line 3",))
    assert (decision.action, decision.target) == (Action.FAIL, BatchStatus.FAILED)
    assert "invalid_json: line 3" in (decision.reason or "")


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_s(n, POLICY) for n in range(7)] == [0, 0, 60, 180, 420, 600, 600]


def test_next_poll_at_is_a_function_of_errors_and_now() -> None:
    assert next_poll_at(0, NOW, POLICY) == NOW
    assert next_poll_at(3, NOW, POLICY) == NOW + timedelta(seconds=180)
    # retry-after is a floor, never shortened by a smaller backoff
    assert next_poll_at(0, NOW, POLICY, retry_after_s=30) == NOW + timedelta(seconds=30)
    assert next_poll_at(3, NOW, POLICY, retry_after_s=30) == NOW + timedelta(seconds=180)


def test_limits() -> None:
    assert not counts_as_error(429) and counts_as_error(500) and counts_as_error(None)
    assert not errors_exhausted(4, POLICY) and errors_exhausted(5, POLICY)
    assert not output_wait_exhausted(2, POLICY) and output_wait_exhausted(3, POLICY)
    assert not submission_abandoned(NOW, NOW + timedelta(seconds=239), POLICY)
    assert submission_abandoned(NOW, NOW + timedelta(seconds=240), POLICY)
    assert [delivery_backoff_s(n) for n in (1, 2, 3)] == [5, 10, 20]
    assert delivery_backoff_s(50) == 3600


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, 30.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers, now_s=NOW.timestamp()) == seconds


def test_openai_result_lines() -> None:
    ok = item_result('{"id":"r1","custom_id":"a","response":{"status_code":200,"body":{}},"error":null}')
    assert (ok.custom_id, ok.status, ok.error) == ("a", ItemStatus.SUCCEEDED, None)
    bad = item_result(
        '{"id":"r2","custom_id":"b","response":{"status_code":400,"body":{"error":{"message":"nope"}}},"error":null}'
    )
    assert (bad.status, bad.error) == (ItemStatus.ERRORED, "HTTP 400: nope")
    expired = item_result(
        '{"id":"r3","custom_id":"c","response":null,"error":{"code":"batch_expired","message":"too late"}}'
    )
    assert (expired.status, expired.error) == (ItemStatus.EXPIRED, "batch_expired: too late")
