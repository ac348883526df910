"""The file store on SQLite and PostgreSQL: compare-and-set transitions, leases, passages, timeouts."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.keyset import InvalidCursor
from backburner.db.tables import organizations
from backburner.files.metrics import FileMetrics
from backburner.files.pipeline.worker import WorkerConfig
from backburner.files.search.vectors import VectorIndex
from backburner.files.states import FileStatus, IllegalTransition, can_transition
from backburner.files.store import FileStores
from backburner.files.store.leases import ClaimRules
from backburner.files.store.records import FileRecord, Lease, LeaseLost, NewFile, PassageRow
from backburner.files.sweeper import FileSweeper
from backburner.files.tables import passages
from backburner.ids import new_id
from backburner.leader.static import StaticLeadership
from backburner.monitoring.metrics import Metrics
from backburner.scheduler.jobs import JobContext
from backburner.settings_loader import load_settings
from tests.support.files import claim_rules
from tests.support.rankings import same_ranking

ORG = "org-default"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT_MINUTES = 30


class Files:
    """A store and a source to put files in."""

    def __init__(self, stores: FileStores, source_id: str, organization_id: str = ORG) -> None:
        self.stores = stores
        self.source_id = source_id
        self.organization_id = organization_id

    async def new(self, created_at: datetime = T0, sha256: str | None = None) -> FileRecord:
        file_id = new_id("file")
        return await self.stores.catalog.create(
            NewFile(
                id=file_id,
                organization_id=self.organization_id,
                source_id=self.source_id,
                file_name="a.txt",
                content_type="text/plain",
                size_bytes=3,
                sha256=sha256 or file_id.ljust(64, "0")[:64],
                blob_key=f"files/{file_id}",
            ),
            created_at,
        )

    async def reach(self, status: FileStatus) -> FileRecord:
        """A file in `status`, brought there by allowed transitions only."""
        record = await self.new()
        path = {
            FileStatus.PENDING: [],
            FileStatus.PARSING: [FileStatus.PARSING],
            FileStatus.EMBEDDING: [FileStatus.PARSING, FileStatus.EMBEDDING],
            FileStatus.COMPLETED: [FileStatus.PARSING, FileStatus.EMBEDDING, FileStatus.COMPLETED],
            FileStatus.ERROR: [FileStatus.PARSING, FileStatus.ERROR],
        }[status]
        for step in path:
            message = "failed" if step is FileStatus.ERROR else None
            record = await self.stores.leases.transition(record.id, step, T0, error_message=message)
        assert record.status is status
        return record

    async def claim(
        self, owner: str, now: datetime = T0, lease_s: float = 30, max_attempts: int = 3
    ) -> FileRecord:
        claimed = await self.stores.leases.claim(
            owner,
            now,
            claim_rules(lease_s=lease_s, max_attempts=max_attempts, timeout_minutes=TIMEOUT_MINUTES),
        )
        assert claimed is not None
        return claimed


@pytest.fixture
async def files(engine: AsyncEngine) -> Files:
    stores = FileStores.on(engine)
    source = await stores.sources.create(ORG, new_id("source"), "docs", None, T0)
    return Files(stores, source.id)


async def count_passages(engine: AsyncEngine, file_id: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count(passages.c.chunk_index.distinct())).where(
                    passages.c.file_id == file_id
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_every_pair_of_states_is_allowed_or_refused_by_compare_and_set(files: Files) -> None:
    for source, target in itertools.product(FileStatus, FileStatus):
        record = await files.reach(source)
        message = "it broke" if target is FileStatus.ERROR else None
        if can_transition(source, target):
            moved = await files.stores.leases.transition(
                record.id, target, T0 + timedelta(seconds=1), error_message=message
            )
            assert moved.status is target, (source, target)
            assert (await files.stores.catalog.get(ORG, record.id)).status is target
            if target is FileStatus.ERROR:
                assert moved.error_message == "it broke"
        else:
            with pytest.raises(IllegalTransition) as refused:
                await files.stores.leases.transition(
                    record.id, target, T0 + timedelta(seconds=1), error_message=message
                )
            assert (refused.value.from_status, refused.value.to_status) == (source, target)
            assert await files.stores.catalog.get(ORG, record.id) == record, (
                f"{source} -> {target} changed the row"
            )


async def test_error_needs_a_message_and_nothing_changes_without_one(files: Files) -> None:
    record = await files.reach(FileStatus.PARSING)
    with pytest.raises(ValueError, match="needs a message"):
        await files.stores.leases.transition(record.id, FileStatus.ERROR, T0, error_message="  ")
    assert await files.stores.catalog.get(ORG, record.id) == record


async def test_concurrent_claims_take_each_file_exactly_once(files: Files) -> None:
    created = {(await files.new(T0 + timedelta(seconds=i))).id for i in range(24)}
    claimed: list[str] = []

    async def claimer(number: int) -> None:
        while True:
            record = await files.stores.leases.claim(
                f"owner-{number}-{len(claimed)}",
                T0 + timedelta(minutes=1),
                claim_rules(lease_s=30, max_attempts=3, timeout_minutes=TIMEOUT_MINUTES),
            )
            if record is None:
                return
            claimed.append(record.id)

    await asyncio.wait_for(asyncio.gather(*(claimer(n) for n in range(6))), 60)
    assert sorted(claimed) == sorted(created)


async def test_claims_go_oldest_first_and_skip_timed_out_files(files: Files) -> None:
    stale = await files.new(T0 - timedelta(minutes=TIMEOUT_MINUTES))
    newer = await files.new(T0 + timedelta(seconds=2))
    older = await files.new(T0 + timedelta(seconds=1))
    now = T0 + timedelta(seconds=5)
    assert (await files.claim("a", now)).id == older.id
    assert (await files.claim("b", now)).id == newer.id
    assert (
        await files.stores.leases.claim(
            "c", now, claim_rules(lease_s=30, max_attempts=3, timeout_minutes=TIMEOUT_MINUTES)
        )
        is None
    )
    assert (await files.stores.catalog.get(ORG, stale.id)).lease_owner is None


async def test_an_expired_lease_is_reclaimed_and_the_old_owner_is_fenced_out(files: Files) -> None:
    record = await files.new()
    first = await files.claim("worker-a", T0, lease_s=10)
    # The claim of a PENDING file is the start of its parsing: one compare-and-set.
    assert (first.id, first.attempts, first.lease_owner, first.status) == (
        record.id,
        1,
        "worker-a",
        FileStatus.PARSING,
    )
    old = Lease(record.id, "worker-a")
    # Renewed until T0 + 15 s; the claim was the file's last progress.
    assert await files.stores.leases.heartbeat(old, T0 + timedelta(seconds=5), 10) == T0
    assert (
        await files.stores.leases.claim(
            "worker-b",
            T0 + timedelta(seconds=14),
            claim_rules(lease_s=10, max_attempts=3, timeout_minutes=TIMEOUT_MINUTES),
        )
        is None
    )

    second = await files.claim("worker-b", T0 + timedelta(seconds=16), lease_s=10)
    assert (second.id, second.attempts, second.status) == (record.id, 2, FileStatus.PARSING)
    assert not await files.stores.leases.heartbeat(old, T0 + timedelta(seconds=17), 10)
    with pytest.raises(LeaseLost):
        await files.stores.leases.transition(record.id, FileStatus.EMBEDDING, T0, owner="worker-a")
    with pytest.raises(LeaseLost):
        await files.stores.leases.start_embedding(
            old, T0, total_chunks=1, embedding_model="m", parse_s=0, chunk_s=0
        )
    assert (await files.stores.catalog.get(ORG, record.id)).lease_owner == "worker-b"


async def test_attempts_have_a_maximum_then_the_sweeper_fails_the_file(files: Files) -> None:
    record = await files.new()
    for attempt in range(1, 3):
        claimed = await files.claim(
            f"w{attempt}", T0 + timedelta(minutes=attempt), lease_s=10, max_attempts=2
        )
        assert claimed.attempts == attempt
    later = T0 + timedelta(minutes=5)
    assert (
        await files.stores.leases.claim(
            "w3", later, claim_rules(lease_s=10, max_attempts=2, timeout_minutes=TIMEOUT_MINUTES)
        )
        is None
    )
    failed = await files.stores.timeouts.fail_exhausted(later, 2, "gave up")
    assert failed == [record.id]
    done = await files.stores.catalog.get(ORG, record.id)
    assert (done.status, done.error_message, done.lease_owner) == (FileStatus.ERROR, "gave up", None)


async def test_a_release_on_shutdown_does_not_count_as_an_attempt(files: Files) -> None:
    record = await files.new()
    await files.claim("w1")
    assert await files.stores.leases.release(Lease(record.id, "w1"), T0, count_attempt=False)
    again = await files.claim("w2", T0 + timedelta(seconds=1))
    assert (again.id, again.attempts) == (record.id, 1)


async def test_passages_are_stored_once_per_chunk_and_progress_counts_them(
    files: Files, engine: AsyncEngine
) -> None:
    record = await files.new()
    await files.claim("w1")
    lease = Lease(record.id, "w1")
    await files.stores.leases.start_embedding(
        lease, T0, total_chunks=5, embedding_model="m", parse_s=0.1, chunk_s=0.1
    )
    rows = [PassageRow(i, f"chunk {i}", b"\x00" * 8) for i in range(3)]
    assert (
        await files.stores.passages.store_batch(lease, record, rows, T0, lease_s=30, embed_s=1, store_s=1)
        == 3
    )
    # The same batch again (a resumed worker) and an overlapping one: nothing is stored twice.
    assert (
        await files.stores.passages.store_batch(lease, record, rows, T0, lease_s=30, embed_s=1, store_s=1)
        == 3
    )
    more = [PassageRow(i, f"chunk {i}", b"\x00" * 8) for i in range(2, 5)]
    later = T0 + timedelta(seconds=3)
    assert (
        await files.stores.passages.store_batch(lease, record, more, later, lease_s=30, embed_s=2, store_s=2)
        == 5
    )
    # The heartbeat reports the progress a batch made (a pool process may have written it).
    assert await files.stores.leases.heartbeat(lease, T0 + timedelta(seconds=4), 30) == later
    assert await count_passages(engine, record.id) == (5, 5)
    assert await files.stores.passages.stored_chunk_indexes(record.id) == {0, 1, 2, 3, 4}
    done = await files.stores.leases.complete(lease, T0, embed_s=2, store_s=2)
    assert (done.status, done.chunks_embedded, done.total_chunks) == (FileStatus.COMPLETED, 5, 5)


async def test_a_batch_from_a_worker_that_lost_its_lease_is_rolled_back(
    files: Files, engine: AsyncEngine
) -> None:
    record = await files.new()
    await files.claim("w1", lease_s=10)
    old = Lease(record.id, "w1")
    await files.stores.leases.start_embedding(
        old, T0, total_chunks=2, embedding_model="m", parse_s=0, chunk_s=0
    )
    await files.claim("w2", T0 + timedelta(seconds=11))
    with pytest.raises(LeaseLost):
        await files.stores.passages.store_batch(
            old, record, [PassageRow(0, "x", b"\x00" * 4)], T0, lease_s=10, embed_s=0, store_s=0
        )
    assert await count_passages(engine, record.id) == (0, 0)


async def test_finished_files_never_change(files: Files, engine: AsyncEngine) -> None:
    completed = await files.reach(FileStatus.COMPLETED)
    failed = await files.reach(FileStatus.ERROR)
    far = T0 + timedelta(days=3)
    assert await files.stores.timeouts.time_out(far, TIMEOUT_MINUTES, "timed out") == []
    assert await files.stores.timeouts.fail_exhausted(far, 0, "exhausted") == []
    assert await files.stores.timeouts.reclaim_stalled(far, 1, 3, "stalled") == ([], [])
    assert await files.stores.timeouts.release_expired(far) == []
    assert (
        await files.stores.leases.claim(
            "w", far, claim_rules(lease_s=1, max_attempts=9, timeout_minutes=10**6)
        )
        is None
    )
    for record in (completed, failed):
        lease = Lease(record.id, "anyone")
        assert not await files.stores.leases.heartbeat(lease, far, 10)
        assert not await files.stores.leases.release(lease, far)
        with pytest.raises(LeaseLost):
            await files.stores.passages.store_batch(
                lease, record, [PassageRow(0, "x", b"\x00" * 4)], far, lease_s=1, embed_s=0, store_s=0
            )
        assert await files.stores.catalog.get(ORG, record.id) == record
        assert await count_passages(engine, record.id) == (0, 0)


async def test_timeouts_apply_to_every_unfinished_file_past_its_deadline_at_once(files: Files) -> None:
    now = T0 + timedelta(minutes=TIMEOUT_MINUTES)
    due = [
        await files.reach(status) for status in (FileStatus.PENDING, FileStatus.PARSING, FileStatus.EMBEDDING)
    ]
    done = await files.reach(FileStatus.COMPLETED)
    fresh = await files.new(created_at=T0 + timedelta(seconds=1))
    timed_out = await files.stores.timeouts.time_out(
        now, TIMEOUT_MINUTES, "File processing timed out after 30 minutes."
    )
    assert sorted(timed_out) == sorted(record.id for record in due)
    for record in due:
        after = await files.stores.catalog.get(ORG, record.id)
        assert (after.status, after.error_message) == (
            FileStatus.ERROR,
            "File processing timed out after 30 minutes.",
        )
    assert (await files.stores.catalog.get(ORG, done.id)).status is FileStatus.COMPLETED
    assert (await files.stores.catalog.get(ORG, fresh.id)).status is FileStatus.PENDING


async def test_listing_pages_follow_upload_order(files: Files) -> None:
    created = [(await files.new(T0 + timedelta(seconds=i // 2))).id for i in range(7)]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = (await files.stores.catalog.page(ORG, files.source_id, 3, after)).files
        seen += [record.id for record in page]
        if len(page) < 3:
            break
        after = page[-1].id
    expected = sorted(created, key=lambda file_id: (created.index(file_id) // 2, file_id))
    assert seen == expected


@pytest.mark.parametrize("cursor", ["file-nothing", "../x", "", "x" * 101, "file-\u00e9"])
async def test_a_cursor_that_names_no_file_of_the_listing_is_refused(files: Files, cursor: str) -> None:
    await files.new()
    with pytest.raises(InvalidCursor):
        await files.stores.catalog.page(ORG, files.source_id, 3, cursor)


async def test_a_file_of_another_source_is_no_cursor(files: Files) -> None:
    other = await files.stores.sources.create(ORG, new_id("source"), "other", None, T0)
    elsewhere = await Files(files.stores, other.id).new()
    with pytest.raises(InvalidCursor):
        await files.stores.catalog.page(ORG, files.source_id, 3, elsewhere.id)


async def test_a_stalled_file_is_taken_from_its_worker_or_failed(files: Files) -> None:
    retry = await files.new()
    last_try = await files.new(T0 + timedelta(seconds=1))
    await files.claim("w1", T0, lease_s=3600)  # alive (heartbeating) but making no progress
    for attempt in range(3):  # the second file has used every attempt
        await files.claim(f"x{attempt}", T0 + timedelta(seconds=40 * attempt + 1), lease_s=30)
    now = T0 + timedelta(minutes=10)
    released, failed = await files.stores.timeouts.reclaim_stalled(now, 5, 3, "no progress")
    assert (released, failed) == ([retry.id], [last_try.id])
    assert (await files.stores.catalog.get(ORG, retry.id)).lease_owner is None
    assert (await files.stores.catalog.get(ORG, last_try.id)).error_message == "no progress"
    assert not await files.stores.leases.heartbeat(Lease(retry.id, "w1"), now, 30)


async def test_the_sweeper_job_times_out_files_that_no_worker_ever_took(
    files: Files, engine: AsyncEngine
) -> None:
    never_claimed = [await files.new() for _ in range(3)]
    config = WorkerConfig.from_settings(
        load_settings(
            flags={"file_processing_timeout_error_message": "timed out after {}"}, environ={}
        ).settings
    )

    class At:
        def now(self) -> datetime:
            return T0 + timedelta(minutes=TIMEOUT_MINUTES, seconds=1)

    metrics = FileMetrics(Metrics().registry)
    sweeper = FileSweeper(files.stores.timeouts, config, At(), metrics, interval_s=60)
    leadership = await StaticLeadership.claim(engine, "files-test", "me")
    await sweeper.run_job(JobContext(sweeper.job_spec().id, T0, leadership))
    for record in never_claimed:
        after = await files.stores.catalog.get(ORG, record.id)
        assert (after.status, after.error_message) == (FileStatus.ERROR, "timed out after 30")
    assert metrics.timeouts.labels(enforcer="sweeper")._value.get() == 3


async def test_the_last_batch_completes_the_file_in_its_own_transaction(files: Files) -> None:
    record = await files.new()
    await files.claim("w1")
    lease = Lease(record.id, "w1")
    await files.stores.leases.start_embedding(
        lease, T0, total_chunks=2, embedding_model="m", parse_s=0, chunk_s=0
    )
    rows = [PassageRow(i, f"chunk {i}", b"\x00" * 8) for i in range(2)]
    await files.stores.passages.store_batch(
        lease, record, rows, T0, lease_s=30, embed_s=1, store_s=1, finish=True
    )
    done = await files.stores.catalog.get(ORG, record.id)
    assert (done.status, done.chunks_embedded, done.lease_owner) == (FileStatus.COMPLETED, 2, None)
    assert done.finished_at == T0 and done.store_seconds is not None and done.store_seconds >= 1
    with pytest.raises(LeaseLost):  # nothing more can be written to a finished file
        await files.stores.passages.store_batch(lease, record, rows, T0, lease_s=30, embed_s=1, store_s=1)


async def other_organization(files: Files, name: str = "other") -> Files:
    """A source of another organization, in the same database."""
    async with files.stores.sources.engine.begin() as conn:
        await conn.execute(organizations.insert().values(id=f"org-{name}", name=name, created_at=T0))
    source = await files.stores.sources.create(f"org-{name}", new_id("source"), "docs", None, T0)
    return Files(files.stores, source.id, organization_id=f"org-{name}")


async def test_organizations_take_turns_at_claims(files: Files) -> None:
    many = [await files.new(T0 + timedelta(seconds=i)) for i in range(4)]
    other = await other_organization(files)
    late = await other.new(T0 + timedelta(minutes=1))
    order = [(await files.claim(f"w{i}", T0 + timedelta(minutes=2, seconds=i))).id for i in range(5)]
    # The first organization's oldest file, then the other's, then the rest in upload order.
    assert order == [many[0].id, late.id, many[1].id, many[2].id, many[3].id]


async def test_an_organization_at_its_cap_leaves_the_workers_to_others(files: Files) -> None:
    for i in range(4):
        await files.new(T0 + timedelta(seconds=i))
    now = T0 + timedelta(minutes=1)
    here = claim_rules(org_cap=2)
    here = ClaimRules(here.lease_s, here.max_attempts, here.timeout_minutes, 2, "instance-a/")
    for number in range(2):
        assert await files.stores.leases.claim(f"instance-a/w{number}", now, here) is not None
    assert await files.stores.leases.claim("instance-a/w2", now, here) is None  # at its cap here
    other = await other_organization(files)
    theirs = await other.new(now)
    claimed = await files.stores.leases.claim("instance-a/w2", now, here)
    assert claimed is not None and claimed.id == theirs.id
    # Another instance counts its own files in work: it may take the first organization's.
    there = ClaimRules(here.lease_s, here.max_attempts, here.timeout_minutes, 2, "instance-b/")
    taken = await files.stores.leases.claim("instance-b/w0", now, there)
    assert taken is not None and taken.organization_id == ORG
    # A file whose lease expired no longer counts as in work.
    later = now + timedelta(seconds=here.lease_s + 1)
    assert await files.stores.leases.claim("instance-a/w3", later, here) is not None


async def test_cached_vectors_are_refreshed_from_the_changed_files_only(files: Files) -> None:
    """A search after a write reads again only the files whose vectors changed, and finds what a
    search reading every vector finds."""
    rng = np.random.default_rng(3)
    index = VectorIndex(files.stores.passages)
    query = rng.standard_normal(8).tolist()

    async def embedding(total: int) -> tuple[FileRecord, Lease]:
        record = await files.new()
        assert (await files.claim(record.id)).id == record.id
        lease = Lease(record.id, record.id)
        started = await files.stores.leases.start_embedding(
            lease, T0, total_chunks=total, embedding_model="m", parse_s=0, chunk_s=0
        )
        return started, lease

    async def store(record: FileRecord, lease: Lease, chunks: range, finish: bool) -> None:
        rows = [PassageRow(i, f"chunk {i}", rng.standard_normal(8).astype("<f4").tobytes()) for i in chunks]
        await files.stores.passages.store_batch(
            lease, record, rows, T0, lease_s=30, embed_s=0, store_s=0, finish=finish
        )

    async def search(vectors: VectorIndex) -> list[tuple[int, float]]:
        source = await files.stores.sources.get(ORG, files.source_id)
        return await vectors.search(ORG, source.id, source.passages_version, "m", query, None, 50)

    async def expected() -> list[tuple[int, float]]:
        return await search(VectorIndex(files.stores.passages))  # reads every vector

    a, a_lease = await embedding(3)
    await store(a, a_lease, range(3), finish=True)
    b, b_lease = await embedding(4)
    await store(b, b_lease, range(2), finish=False)
    assert len(await search(index)) == 5 and index.vectors_read == 5
    assert len(await search(index)) == 5 and index.vectors_read == 5  # unchanged: nothing read

    # b grows and finishes, c is new: their 4 and 2 vectors are read, a's 3 are not.
    await store(b, b_lease, range(2, 4), finish=True)
    c, c_lease = await embedding(2)
    await store(c, c_lease, range(2), finish=True)
    found = await search(index)
    assert index.vectors_read == 11
    assert len(found) == 9 and same_ranking(found, await expected())

    # A deleted file's vectors leave the matrix without any being read.
    await files.stores.catalog.delete(ORG, a.id)
    after = await search(index)
    assert index.vectors_read == 11
    assert same_ranking(after, await expected()) and len(after) == 6


async def test_cached_vectors_read_before_a_switch_of_model_are_not_kept_after_another(files: Files) -> None:
    """Vectors re-embedding made are removed when the source switches model again: a matrix of
    model "m" cached before the source switched away and back to "m" is read again whole, not
    kept because its files did not change."""
    rng = np.random.default_rng(5)
    reembeds = files.stores.reembeds
    query = rng.standard_normal(8).tolist()
    record = await files.new()
    assert (await files.claim(record.id)).id == record.id
    lease = Lease(record.id, record.id)
    record = await files.stores.leases.start_embedding(
        lease, T0, total_chunks=4, embedding_model="ingested", parse_s=0, chunk_s=0
    )
    rows = [PassageRow(i, f"chunk {i}", rng.standard_normal(8).astype("<f4").tobytes()) for i in range(4)]
    await files.stores.passages.store_batch(
        lease, record, rows, T0, lease_s=30, embed_s=0, store_s=0, finish=True
    )

    async def reembed(model: str, from_model: str) -> None:
        job = await reembeds.start(ORG, files.source_id, model, from_model, T0)
        for bucket in await reembeds.open_chunks(files.source_id, model, limit=100):
            chunk = await reembeds.claim(files.source_id, bucket, "instance-a/r", T0, lease_s=30)
            assert chunk is not None
            texts = await reembeds.chunk_passages(chunk, model)
            vectors = [(p.id, rng.standard_normal(8).astype("<f4").tobytes()) for p in texts]
            await reembeds.store_vectors(chunk, ORG, model, vectors, T0)
        assert await reembeds.switch(job, T0)

    async def search(vectors: VectorIndex) -> list[tuple[int, float]]:
        source = await files.stores.sources.get(ORG, files.source_id)
        return await vectors.search(ORG, source.id, source.passages_version, "m", query, None, 10)

    index = VectorIndex(files.stores.passages)
    await reembed("m", "ingested")
    first = await search(index)
    assert len(first) == 4
    # Away to "other" (removing the vectors of "m"), then back to "m" with vectors of another
    # draw, as an embedder served anew gives.
    await reembed("other", "m")
    await reembed("m", "other")
    again = await search(index)
    assert same_ranking(again, await search(VectorIndex(files.stores.passages)))
    assert not same_ranking(again, first)


async def completed_with_vectors(files: Files, count: int, rng: np.random.Generator) -> None:
    """A COMPLETED file of `count` passages with 8-dimension vectors of model "m"."""
    record = await files.new()
    assert (await files.claim(record.id)).id == record.id
    lease = Lease(record.id, record.id)
    record = await files.stores.leases.start_embedding(
        lease, T0, total_chunks=count, embedding_model="m", parse_s=0, chunk_s=0
    )
    rows = [PassageRow(i, f"chunk {i}", rng.standard_normal(8).astype("<f4").tobytes()) for i in range(count)]
    await files.stores.passages.store_batch(
        lease, record, rows, T0, lease_s=30, embed_s=0, store_s=0, finish=True
    )


async def vector_search(index: VectorIndex, files: Files, query: list[float]) -> list[tuple[int, float]]:
    source = await files.stores.sources.get(files.organization_id, files.source_id)
    return await index.search(files.organization_id, source.id, source.passages_version, "m", query, None, 10)


async def test_concurrent_searches_of_a_source_read_it_once_and_keep_no_lock(files: Files) -> None:
    """Searches that find a source's vectors not yet read wait for one read; once they are done,
    nothing of them is kept per source but the cached matrix."""
    rng = np.random.default_rng(7)
    await completed_with_vectors(files, 3, rng)
    index = VectorIndex(files.stores.passages)
    query = rng.standard_normal(8).tolist()
    found = await asyncio.gather(*(vector_search(index, files, query) for _ in range(5)))
    assert index.vectors_read == 3
    assert all(len(ranking) == 3 and same_ranking(ranking, found[0]) for ranking in found)
    assert len(index._loading) == 0


async def test_a_full_cache_gives_up_a_matrix_of_the_organization_holding_most(files: Files) -> None:
    """One organization's many sources push out its own least recently used matrix, not another
    organization's, even when that one is the least recently used of all."""
    rng = np.random.default_rng(11)
    theirs = await other_organization(files)
    ours = [files]
    for name in ("more", "most"):
        source = await files.stores.sources.create(ORG, new_id("source"), name, None, T0)
        ours.append(Files(files.stores, source.id))
    for each in (theirs, *ours):
        await completed_with_vectors(each, 4, rng)
    query = rng.standard_normal(8).tolist()
    index = VectorIndex(files.stores.passages)
    await vector_search(index, theirs, query)
    index.max_bytes = 3 * index._cache[next(iter(index._cache))].nbytes  # room for three sources
    await vector_search(index, ours[0], query)
    await vector_search(index, ours[1], query)
    assert index.vectors_read == 12
    await vector_search(index, ours[2], query)  # a fourth: one must go
    assert index.vectors_read == 16
    await vector_search(index, theirs, query)  # the least recently used, but kept
    assert index.vectors_read == 16
    await vector_search(index, ours[0], query)  # ours' least recently used went
    assert index.vectors_read == 20
