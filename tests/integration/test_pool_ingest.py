"""A `hash` file processed whole by `pool_ingest.ingest_file`, as a pool process runs it (called
here in a thread of the test process), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import utcnow
from backburner.files.chunking import iter_chunk_texts
from backburner.files.embedders import HashEmbedder
from backburner.files.pool_ingest import (
    IngestFailed,
    IngestJob,
    IngestOutcome,
    close_process_databases,
    ingest_file,
)
from backburner.files.states import FileStatus, IllegalTransition
from backburner.files.store import FileRecord, FileStore, Lease, LeaseLost, NewFile, PassageRow
from backburner.files.tables import passages
from backburner.ids import new_id

ORG = "org-default"
DIMENSIONS = 64
SIZE, OVERLAP = 120, 20
LEASE_S = 30.0


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    yield
    close_process_databases()


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "notes.md"
    paragraphs = [f"## Part {n}\n\nThe lighthouse keeper {n} counts {7 * n} gulls." for n in range(90)]
    path.write_text("# Notes\n\n" + "\n\n".join(paragraphs))
    return path


class Setup:
    def __init__(self, engine: AsyncEngine, path: Path) -> None:
        self.engine = engine
        self.store = FileStore(engine)
        self.path = path
        self.texts = list(iter_chunk_texts(path.read_text(), "markdown", SIZE, OVERLAP))

    async def claimed(self, owner: str = "w1") -> FileRecord:
        source = await self.store.create_source(ORG, new_id("source"), "docs", None, utcnow())
        file_id = new_id("file")
        await self.store.create_file(
            NewFile(file_id, ORG, source.id, self.path.name, None, 1, "0" * 64, f"files/{file_id}"),
            utcnow(),
        )
        record = await self.store.claim(owner, utcnow(), lease_s=LEASE_S, max_attempts=3, timeout_minutes=30)
        assert record is not None and record.id == file_id
        return record

    def job(self, file: FileRecord, **changes: object) -> IngestJob:
        assert file.lease_owner is not None
        job = IngestJob(
            database_url=self.engine.url.render_as_string(hide_password=False),
            path=str(self.path),
            file=file,
            lease=Lease(file.id, file.lease_owner),
            lease_s=LEASE_S,
            chunk_size_chars=SIZE,
            chunk_overlap_chars=OVERLAP,
            dimensions=DIMENSIONS,
            embedding_model=HashEmbedder(DIMENSIONS).model,
        )
        return dataclasses.replace(job, **changes)  # type: ignore[arg-type]

    async def passages_of(self, file_id: str) -> dict[int, tuple[str, bytes]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(passages.c.chunk_index, passages.c.text, passages.c.embedding).where(
                    passages.c.file_id == file_id
                )
            )
            found: dict[int, tuple[str, bytes]] = {}
            for index, text, embedding in rows:
                assert index not in found, f"chunk {index} stored twice"
                found[index] = (text, bytes(embedding))
            return found


@pytest.fixture
def setup(engine: AsyncEngine, document: Path) -> Setup:
    return Setup(engine, document)


async def ingest(job: IngestJob) -> IngestOutcome:
    return await asyncio.to_thread(ingest_file, job)


async def test_a_file_is_parsed_embedded_stored_and_completed_in_one_call(setup: Setup) -> None:
    file = await setup.claimed()
    outcome = await ingest(setup.job(file))

    total = len(setup.texts)
    assert total > 64  # more than one write, the last one small
    assert (outcome.total_chunks, outcome.already_stored, outcome.written) == (total, 0, total)
    assert min(outcome.parse_s, outcome.chunk_s, outcome.embed_s, outcome.store_s) >= 0
    done = await setup.store.get_file(ORG, file.id)
    assert (done.status, done.total_chunks, done.chunks_embedded) == (FileStatus.COMPLETED, total, total)
    assert (done.lease_owner, done.embedding_model) == (None, HashEmbedder(DIMENSIONS).model)
    stored = await setup.passages_of(file.id)
    assert sorted(stored) == list(range(total))
    expected = HashEmbedder(DIMENSIONS).embed_packed_sync(setup.texts)
    assert all(stored[i] == (setup.texts[i], expected[i]) for i in range(total))


async def test_a_reclaimed_file_resumes_from_the_passages_already_stored(setup: Setup) -> None:
    first = await setup.claimed("w1")
    lease = Lease(first.id, "w1")
    await setup.store.start_embedding(
        lease, utcnow(), total_chunks=len(setup.texts), embedding_model="m", parse_s=0, chunk_s=0
    )
    vectors = HashEmbedder(DIMENSIONS).embed_packed_sync(setup.texts[:40])
    rows = [PassageRow(i, setup.texts[i], vectors[i]) for i in range(40)]
    await setup.store.store_passages(lease, first, rows, utcnow(), lease_s=LEASE_S, embed_s=1, store_s=1)
    # The first worker dies; its lease expires and another worker claims the file.
    later = utcnow() + timedelta(seconds=LEASE_S + 1)
    second = await setup.store.claim("w2", later, lease_s=LEASE_S, max_attempts=3, timeout_minutes=30)
    assert second is not None and (second.id, second.attempts, second.chunks_embedded) == (first.id, 2, 40)

    outcome = await ingest(setup.job(second))

    total = len(setup.texts)
    assert (outcome.already_stored, outcome.written) == (40, total - 40)
    assert outcome.embed_s >= 1 and outcome.store_s >= 1  # the first attempt's time counts
    assert sorted(await setup.passages_of(first.id)) == list(range(total))
    done = await setup.store.get_file(ORG, first.id)
    assert (done.status, done.chunks_embedded) == (FileStatus.COMPLETED, total)


async def test_a_failed_file_gets_no_write_from_its_old_owner(setup: Setup) -> None:
    file = await setup.claimed("w1")
    await setup.store.fail(file.id, "timed out", utcnow())  # as the sweeper would

    with pytest.raises(IllegalTransition):
        await ingest(setup.job(file))

    assert await setup.passages_of(file.id) == {}
    after = await setup.store.get_file(ORG, file.id)
    assert (after.status, after.error_message, after.chunks_embedded) == (FileStatus.ERROR, "timed out", 0)


async def test_a_reclaimed_file_gets_no_write_from_its_old_owner(setup: Setup) -> None:
    file = await setup.claimed("w1")
    later = utcnow() + timedelta(seconds=LEASE_S + 1)  # w1 froze past its lease
    taken = await setup.store.claim("w2", later, lease_s=LEASE_S, max_attempts=3, timeout_minutes=30)
    assert taken is not None and taken.id == file.id

    with pytest.raises(LeaseLost):
        await ingest(setup.job(file))

    assert await setup.passages_of(file.id) == {}
    after = await setup.store.get_file(ORG, file.id)
    assert (after.status, after.lease_owner, after.chunks_embedded) == (FileStatus.PARSING, "w2", 0)


async def test_an_unexpected_failure_comes_back_described(setup: Setup) -> None:
    file = await setup.claimed()
    with pytest.raises(IngestFailed, match="ValueError: size_chars must be at least 1"):
        await ingest(setup.job(file, chunk_size_chars=0, chunk_overlap_chars=0))
    unchanged = await setup.store.get_file(ORG, file.id)
    assert (unchanged.status, unchanged.chunks_embedded) == (FileStatus.PARSING, 0)
