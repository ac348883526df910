"""Paging by position, newest first, across deletions."""

from __future__ import annotations

import pytest

from backburner.emulator.outcomes import Scenario, plan_items
from backburner.emulator.records import BatchRecord, ModelColumn, Provider, SyntheticIds
from backburner.emulator.store import EmulatorStore, UnknownCursor, new_id


def add(store: EmulatorStore, batch_id: str, provider: Provider = "anthropic") -> BatchRecord:
    ids = SyntheticIds("r", 2)
    record = BatchRecord(
        id=batch_id,
        provider=provider,
        seq=store.next_seq(),
        custom_ids=ids,
        models=ModelColumn.uniform("m", 2),
        scenario=Scenario(),
        plan=plan_items(ids, Scenario()),
        created_at=0.0,
        natural_end_at=1.0,
    )
    store.add_batch(record)
    return record


def ids(
    store: EmulatorStore, limit: int, after_id: str | None = None, before_id: str | None = None
) -> list[str]:
    return [record.id for record in store.page("anthropic", limit, after_id, before_id).records]


def test_pages_walk_newest_first_and_back() -> None:
    store = EmulatorStore()
    for name in "abcde":
        add(store, name)
    add(store, "other-provider", provider="openai")

    assert ids(store, 2) == ["e", "d"]
    assert store.page("anthropic", 2).has_more is True
    assert ids(store, 2, after_id="d") == ["c", "b"]
    assert ids(store, 5, after_id="b") == ["a"]
    assert store.page("anthropic", 5, after_id="b").has_more is False
    assert ids(store, 2, before_id="a") == ["c", "b"]
    assert ids(store, 2, before_id="c") == ["e", "d"]
    assert store.page("anthropic", 2, before_id="c").has_more is False


def test_deleted_batches_are_skipped_but_still_work_as_cursors() -> None:
    store = EmulatorStore()
    records = {name: add(store, name) for name in "abcd"}
    store.delete_batch(records["c"])
    store.delete_batch(records["a"])

    assert ids(store, 10) == ["d", "b"]
    assert ids(store, 1, after_id="c") == ["b"]
    assert store.page("anthropic", 1, after_id="c").has_more is False
    assert store.batch("c") is None


def test_unknown_cursors_and_wrong_provider_are_refused() -> None:
    store = EmulatorStore()
    add(store, "o", provider="openai")
    with pytest.raises(UnknownCursor):
        store.page("anthropic", 1, after_id="o")
    assert store.batch("o", "anthropic") is None
    assert store.batch("o", "openai") is not None


def test_ids_look_like_the_providers() -> None:
    made = {new_id("msgbatch_") for _ in range(1000)}
    assert len(made) == 1000
    assert all(len(batch_id) == len("msgbatch_") + 24 and batch_id.isascii() for batch_id in made)


def test_synthetic_ids_behave_like_a_sequence() -> None:
    synthetic = SyntheticIds("row-", 3)
    assert list(synthetic) == ["row-0", "row-1", "row-2"]
    assert (synthetic[-1], synthetic[0:2]) == ("row-2", ["row-0", "row-1"])
    with pytest.raises(IndexError):
        synthetic[3]
