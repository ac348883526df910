"""The batch store on SQLite and PostgreSQL: selection of due batches, idempotent upserts, endings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from backburner.batches.domain import (
    BatchRequest,
    BatchStatus,
    ItemResult,
    ItemStatus,
    ProviderBatch,
    ProviderCounts,
)
from backburner.batches.store import (
    BatchStore,
    PollUpdate,
    adopt_provider_batch,
    apply_poll_updates,
    claim_unit,
    finish_batch,
    upsert_items,
)
from backburner.batches.tables import llm_batches
from backburner.db.tables import organizations
from tests.support.batch_records import create_record, mark_running

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
REQUESTS = [BatchRequest(f"i-{n}", {"max_tokens": 1}) for n in range(4)]


async def _running(store: BatchStore, batch_id: str, created_at: datetime, org: str = "org-default") -> None:
    batch = await create_record(
        store, batch_id=batch_id, organization_id=org, requests=REQUESTS, now=created_at
    )
    assert batch is not None
    assert await mark_running(store, batch, f"p-{batch_id}", created_at)


async def test_due_batches_least_recently_polled_first_within_lookback_and_limit(engine):
    store = BatchStore(engine)
    await _running(store, "old", NOW - timedelta(weeks=3))  # outside the two-week lookback
    for name, age_h in (("a", 5), ("b", 4), ("c", 3), ("d", 2)):
        await _running(store, name, NOW - timedelta(hours=age_h))
    async with engine.begin() as conn:
        await apply_poll_updates(
            conn,
            [
                PollUpdate("a", NOW - timedelta(minutes=1), NOW, 0, None, "in_progress", 0),
                PollUpdate("b", NOW - timedelta(minutes=9), NOW, 0, None, "in_progress", 0),
                PollUpdate("c", NOW - timedelta(minutes=5), NOW + timedelta(minutes=5), 2, "boom", None, 0),
            ],
        )
    since = NOW - timedelta(weeks=2)
    due = await store.due_batches(now=NOW, since=since, limit=None)
    assert [b.id for b in due] == ["d", "b", "a"]  # never polled, then oldest poll; c is backing off
    assert [b.id for b in await store.due_batches(now=NOW, since=since, limit=2)] == ["d", "b"]
    later = await store.due_batches(now=NOW + timedelta(minutes=5), since=since, limit=None)
    assert [b.id for b in later] == ["d", "b", "c", "a"]
    backing_off = await store.get("org-default", "c")
    assert backing_off is not None
    assert (backing_off.consecutive_errors, backing_off.last_error, backing_off.provider_status) == (
        2,
        "boom",
        "in_progress",  # a failed poll keeps the last known provider status
    )


async def test_item_upserts_are_idempotent_and_the_end_marks_missing_items(engine):
    store = BatchStore(engine)
    await _running(store, "batch-1", NOW)
    chunk = [
        ItemResult("i-0", ItemStatus.SUCCEEDED, '{"type":"succeeded"}'),
        ItemResult("i-1", ItemStatus.ERRORED, '{"type":"errored"}', "bad"),
        ItemResult("i-1", ItemStatus.ERRORED, '{"type":"errored"}', "bad"),  # repeated within a chunk
    ]
    for _ in range(3):  # a stream read three times stores each item once
        async with engine.begin() as conn:
            assert await upsert_items(conn, "org-default", "batch-1", chunk, NOW) == 2
    async with engine.begin() as conn:
        assert await finish_batch(
            conn, "batch-1", BatchStatus.COMPLETED, NOW, channels=["handler"], delivery_ids=["d-1"]
        )
    async with engine.begin() as conn:  # a second end is refused: terminal statuses never change
        assert not await finish_batch(conn, "batch-1", BatchStatus.FAILED, NOW, reason="late")
    batch = await store.get("org-default", "batch-1")
    assert batch is not None
    assert (batch.status, batch.succeeded_count, batch.errored_count, batch.missing_count) == (
        "completed",
        1,
        1,
        2,
    )
    assert await store.item_status_counts("batch-1") == {"succeeded": 1, "errored": 1, "missing": 2}
    [delivery] = await store.deliveries("batch-1")
    assert (delivery.channel, delivery.idempotency_key, delivery.status) == (
        "handler",
        "batch-1:completed",
        "pending",
    )


async def test_every_read_is_scoped_by_organization(engine):
    async with engine.begin() as conn:
        await conn.execute(insert(organizations).values(id="org-other", name="other", created_at=NOW))
    store = BatchStore(engine)
    await _running(store, "mine", NOW)
    await _running(store, "theirs", NOW, org="org-other")
    assert await store.get("org-default", "theirs") is None
    assert [b.id for b in await store.list_batches("org-default", limit=10)] == ["mine"]
    assert await store.item_page("org-default", "theirs", after_custom_id=None, limit=10) == []
    assert await store.counts_by_provider_status("org-other") == [("anthropic", "running", 1)]
    # The same idempotency key in another organization is another batch.
    assert await store.get_by_idempotency_key("org-other", "mine") is None


async def test_a_submitting_record_is_adopted_only_once(engine):
    store = BatchStore(engine)
    first = await create_record(
        store, batch_id="s-1", provider="openai", idempotency_key="k", requests=REQUESTS, now=NOW
    )
    duplicate = await create_record(
        store, batch_id="s-2", provider="openai", idempotency_key="k", requests=REQUESTS, now=NOW
    )
    assert first is not None and duplicate is None  # same key: nothing written
    snapshot = ProviderBatch("openai", "batch_x", "in_progress", ProviderCounts(processing=4))
    async with engine.begin() as conn:
        assert await claim_unit(conn, first, NOW, token_limit=None)
        assert await adopt_provider_batch(conn, "org-default", "s-1", snapshot, NOW)
    async with engine.begin() as conn:
        assert not await adopt_provider_batch(conn, "org-default", "s-1", snapshot, NOW)
    assert not await store.fail_submission("org-default", "s-1", "late", NOW)


async def test_batches_whose_results_will_soon_be_removed_are_polled_first(engine):
    store = BatchStore(engine)
    for name in ("fresh", "old"):
        await _running(store, name, NOW - timedelta(hours=1))
    async with engine.begin() as conn:
        await apply_poll_updates(conn, [PollUpdate("fresh", NOW - timedelta(hours=1), NOW, 0, None, None, 0)])
        await conn.execute(  # its provider removes its results tomorrow
            llm_batches.update()
            .where(llm_batches.c.id == "old")
            .values(results_expire_at=NOW + timedelta(days=1))
        )
        await apply_poll_updates(conn, [PollUpdate("old", NOW - timedelta(minutes=1), NOW, 0, None, None, 0)])
    due = await store.due_batches(now=NOW, since=NOW - timedelta(weeks=2), limit=None)
    assert [b.id for b in due] == ["old", "fresh"]  # polled more recently, but urgent
