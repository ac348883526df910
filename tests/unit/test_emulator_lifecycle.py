"""When a batch ends and what its status is, as pure functions of the record and the time."""

from __future__ import annotations

from backburner.emulator.lifecycle import (
    Ending,
    OpenAIPhases,
    anthropic_status,
    openai_status,
    timeline,
)
from backburner.emulator.outcomes import Scenario, plan_items
from backburner.emulator.records import BatchRecord, ModelColumn, OpenAIDetails

CREATED = 1_000.0
DURATION = 100.0
PHASES = OpenAIPhases(cancel_after_s=10, validating_s=5, finalizing_s=5)


def make_batch(items: int = 10, scenario: Scenario | None = None, openai: bool = False) -> BatchRecord:
    scenario = scenario or Scenario()
    ids = [f"r{i}" for i in range(items)]
    return BatchRecord(
        id="b",
        provider="openai" if openai else "anthropic",
        seq=0,
        custom_ids=ids,
        models=ModelColumn.uniform("m", items),
        scenario=scenario,
        plan=plan_items(ids, scenario),
        created_at=CREATED,
        natural_end_at=CREATED + DURATION,
        openai=(
            OpenAIDetails("/v1/chat/completions", "file-in", "24h", None, "file-out", "file-err")
            if openai
            else None
        ),
    )


def test_a_batch_completes_at_its_natural_end() -> None:
    batch = make_batch()
    line = timeline(batch, cancel_after_s=10)
    assert (line.end_at, line.ending, line.processed) == (CREATED + DURATION, Ending.COMPLETED, 10)
    assert anthropic_status(batch, CREATED + DURATION - 0.001, 10) == "in_progress"
    assert anthropic_status(batch, CREATED + DURATION, 10) == "ended"


def test_forced_end_completes_every_item_early() -> None:
    batch = make_batch()
    batch.forced_end_at = CREATED + 1
    line = timeline(batch, cancel_after_s=10)
    assert (line.end_at, line.ending, line.processed) == (CREATED + 1, Ending.COMPLETED, 10)


def test_cancel_ends_after_the_cancel_delay_with_the_items_done_by_then() -> None:
    batch = make_batch()
    batch.cancel_initiated_at = CREATED + 45  # 45% through
    line = timeline(batch, cancel_after_s=10)
    assert (line.end_at, line.ending, line.processed) == (CREATED + 55, Ending.CANCELED, 4)
    assert anthropic_status(batch, CREATED + 54, 10) == "canceling"
    assert anthropic_status(batch, CREATED + 55, 10) == "ended"


def test_cancel_near_the_natural_end_still_ends_at_the_natural_end() -> None:
    batch = make_batch()
    batch.cancel_initiated_at = CREATED + 95
    line = timeline(batch, cancel_after_s=10)
    assert (line.end_at, line.processed) == (CREATED + DURATION, 9)


def test_expiry_scenario_processes_only_the_first_items() -> None:
    line = timeline(make_batch(scenario=Scenario(expire_after_items=3)), cancel_after_s=10)
    assert (line.ending, line.processed) == (Ending.EXPIRED, 3)


def test_openai_statuses_over_time() -> None:
    batch = make_batch(openai=True)
    at = {
        CREATED: "validating",
        CREATED + 5: "in_progress",
        CREATED + 95: "finalizing",
        CREATED + 100: "completed",
    }
    assert {now: openai_status(batch, now, PHASES) for now in at} == at

    batch.cancel_initiated_at = CREATED + 50
    assert openai_status(batch, CREATED + 59, PHASES) == "cancelling"
    assert openai_status(batch, CREATED + 60, PHASES) == "cancelled"

    expiring = make_batch(scenario=Scenario(expire_after_items=1), openai=True)
    assert openai_status(expiring, CREATED + 100, PHASES) == "expired"


def test_rejected_input_is_failed_from_the_start() -> None:
    batch = make_batch(items=0, openai=True)
    assert batch.openai is not None
    batch.openai.validation_errors = [{"code": "empty_file"}]
    assert openai_status(batch, CREATED, PHASES) == "failed"


def test_work_that_outlasts_the_24_hour_window_expires_with_what_was_done() -> None:
    record = make_batch(items=10)
    record.natural_end_at = CREATED + 40 * 3600  # 24 of 40 hours: 60 % done when the window ends
    line = timeline(record, cancel_after_s=10)
    assert (line.ending, line.processed, line.end_at) == (Ending.EXPIRED, 6, CREATED + 24 * 3600)
    assert anthropic_status(record, CREATED + 24 * 3600 - 1, 10) == "in_progress"
    assert anthropic_status(record, CREATED + 24 * 3600, 10) == "ended"
