"""File workers in-process, with a local OpenAI-compatible endpoint that is slow, fails or hangs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from backburner.clock import utcnow
from backburner.db.engine import create_engine
from backburner.files.blobs import LocalBlobStore
from backburner.files.embedding.embedders import HashEmbedder
from backburner.files.embedding.vectors import vector_to_bytes
from backburner.files.pipeline.chunking import chunk_text
from backburner.files.pipeline.worker import stall_message
from backburner.files.states import FileStatus
from backburner.files.store import FileStores
from backburner.files.store.records import Lease, NewFile, PassageRow
from backburner.files.tables import passages
from backburner.ids import new_id
from backburner.runtime import Runtime
from backburner.settings_loader import LoadedSettings
from tests.conftest import MakeSettings
from tests.support.embedding_endpoint import DIMENSIONS, EmbeddingEndpoint
from tests.support.files import (
    ORG,
    add_file,
    claim_rules,
    component,
    create_source,
    filler_paragraphs,
    wait_file,
    wait_first_sweep,
    wait_for,
)
from tests.support.processes import free_port, wait_until

DOCUMENT = "\n\n".join(filler_paragraphs(30)).encode()
CHUNKING = {"chunk_size_chars": 300, "chunk_overlap_chars": 30}


@pytest.fixture
def endpoint() -> Iterator[EmbeddingEndpoint]:
    with EmbeddingEndpoint() as served:
        yield served


def openai_settings(
    make_settings: MakeSettings, url: str, endpoint: EmbeddingEndpoint, **overrides: Any
) -> LoadedSettings:
    values: dict[str, Any] = {
        "database_url": url,
        "embedder": "openai",
        "embedding_base_url": endpoint.base_url,
        "embedding_model": "test-embedder",
        "embedding_batch_size": 4,
        "file_processing_processes": 1,
        "file_poll_interval_seconds": 0.1,
        **CHUNKING,
    }
    values.update(overrides)
    return make_settings(**values)


def total_chunks(data: bytes = DOCUMENT) -> int:
    return len(
        chunk_text(data.decode(), "markdown", CHUNKING["chunk_size_chars"], CHUNKING["chunk_overlap_chars"])
    )


async def passage_counts(runtime: Runtime, file_id: str) -> tuple[int, int]:
    async with runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count(passages.c.chunk_index.distinct())).where(
                    passages.c.file_id == file_id
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_a_hanging_embedder_is_cancelled_at_the_deadline_and_nothing_writes_after(
    make_settings: MakeSettings, database_url: str, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.hang_after = 2  # two batches are stored, then every request hangs
    loaded = openai_settings(
        make_settings, database_url, endpoint, file_lease_seconds=0.6, file_sweep_interval_seconds=3600
    )
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        await wait_first_sweep(runtime)  # the sweeper must not be the one that times the file out
        source_id = await create_source(runtime)
        minutes = loaded.settings.file_processing_timeout_minutes
        # Time enough before the deadline for the first batches even on a loaded machine.
        created_at = runtime.clock.now() - timedelta(minutes=minutes) + timedelta(seconds=8)
        record = await add_file(runtime, source_id, DOCUMENT, created_at=created_at)
        deadline = created_at + timedelta(minutes=minutes)

        failed = await wait_file(runtime, record.id, timeout_s=30)
        assert (failed.status, failed.error_message) == (FileStatus.ERROR, loaded.settings.timeout_message())
        assert failed.finished_at is not None
        assert deadline <= failed.finished_at < deadline + timedelta(seconds=3)  # at its deadline
        # Batches are embedded concurrently and stored in order: the two answered requests may be
        # later batches than a hung one, so anywhere from none to two batches were stored.
        stored = failed.chunks_embedded
        assert 0 <= stored <= 8 and await passage_counts(runtime, record.id) == (stored, stored)
        files = component(runtime)
        assert files.metrics.timeouts.labels(enforcer="worker")._value.get() == 1
        assert not any(worker.active for worker in files.workers)  # its processing was cancelled

        # The hung requests now answer; the cancelled work must not write anything after them.
        answered = endpoint.texts
        endpoint.release()
        wait_until(lambda: endpoint.texts > answered, 10, "the hung requests to be answered")
        await wait_for(_heartbeats_passed(runtime, 3), 10, "a few heartbeat intervals")
        assert await files.stores.catalog.get(ORG, record.id) == failed
        assert await passage_counts(runtime, record.id) == (stored, stored)


def _heartbeats_passed(runtime: Runtime, count: int) -> Any:
    """A condition that becomes true after `count` lease-heartbeat intervals of wall time."""
    started = runtime.clock.now()
    interval = timedelta(seconds=runtime.settings.file_lease_seconds / 3)

    async def passed() -> bool:
        return runtime.clock.now() - started >= interval * count

    return passed


async def test_the_sweeper_times_out_files_that_no_worker_takes(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(
        database_url=sqlite_url, file_processing_workers=0, file_sweep_interval_seconds=0.2
    )
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        source_id = await create_source(runtime)
        aged = runtime.clock.now() - timedelta(minutes=loaded.settings.file_processing_timeout_minutes)
        stuck = [await add_file(runtime, source_id, f"doc {i}".encode(), created_at=aged) for i in range(3)]
        fresh = await add_file(runtime, source_id, b"fresh")
        for record in stuck:
            failed = await wait_file(runtime, record.id, timeout_s=10)
            assert (failed.status, failed.error_message) == (
                FileStatus.ERROR,
                loaded.settings.timeout_message(),
            )
        assert (await component(runtime).stores.catalog.get(ORG, fresh.id)).status is FileStatus.PENDING
        assert component(runtime).metrics.timeouts.labels(enforcer="sweeper")._value.get() == 3


async def test_a_stalled_file_is_taken_back_then_failed_after_its_attempts(
    make_settings: MakeSettings, sqlite_url: str, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.hang_after = 0
    loaded = openai_settings(
        make_settings,
        sqlite_url,
        endpoint,
        file_stall_timeout_minutes=0.02,
        file_lease_seconds=0.6,
        file_max_attempts=2,
    )
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        record = await add_file(runtime, await create_source(runtime), DOCUMENT)
        failed = await wait_file(runtime, record.id, timeout_s=20)
        assert (failed.status, failed.attempts) == (FileStatus.ERROR, 2)
        assert failed.error_message == stall_message(0.02, 2)
        # The final attempt stalled; an earlier one may instead have lost its lease on a busy host.
        assert component(runtime).metrics.stalls._value.get() >= 1


async def test_429_and_500_answers_are_retried_and_the_file_completes(
    make_settings: MakeSettings, sqlite_url: str, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.faults.extend([429, 500, 429, 503])
    async with Runtime(openai_settings(make_settings, sqlite_url, endpoint), role="worker") as runtime:
        await runtime.wait_ready(30)
        record = await add_file(runtime, await create_source(runtime), DOCUMENT)
        done = await wait_file(runtime, record.id, timeout_s=30)
        assert (done.status, done.attempts) == (FileStatus.COMPLETED, 1), done.error_message
        assert done.chunks_embedded == total_chunks()
        assert not endpoint.faults and endpoint.requests >= 4 + (total_chunks() + 3) // 4


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of this test alone (the shared one must keep running), stopped by the test."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(client.ping, 10, "the private Redis to answer")
        yield url, process
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_redis_stopping_mid_run_degrades_to_no_cache(
    make_settings: MakeSettings,
    sqlite_url: str,
    endpoint: EmbeddingEndpoint,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_process = private_redis
    loaded = openai_settings(make_settings, sqlite_url, endpoint, redis_url=url)
    chunks = total_chunks()
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        service = component(runtime).service

        async def process_in_new_source(name: str, data: bytes) -> None:
            source = await service.create_source(ORG, name, None)
            record = await add_file(runtime, source.id, data)
            done = await wait_file(runtime, record.id, timeout_s=30)
            assert done.status is FileStatus.COMPLETED, done.error_message

        await process_in_new_source("first", DOCUMENT)
        assert endpoint.texts == chunks
        await process_in_new_source("cached", DOCUMENT)
        assert endpoint.texts == chunks  # every chunk came from Redis

        redis_process.kill()
        redis_process.wait(10)
        await process_in_new_source("after-redis", DOCUMENT)
        assert endpoint.texts == 2 * chunks  # no cache: embedded again, and the file still completed
        other = "\n\n".join(filler_paragraphs(12, seed=99)).encode()
        await process_in_new_source("other", other)
        assert endpoint.texts == 2 * chunks + total_chunks(other)


async def test_a_reclaimed_file_resumes_from_its_stored_passages(
    make_settings: MakeSettings, sqlite_url: str, endpoint: EmbeddingEndpoint
) -> None:
    # The dead worker's lease is short; the live worker's is the default, however busy the machine.
    loaded = openai_settings(make_settings, sqlite_url, endpoint)
    settings = loaded.settings
    chunks = chunk_text(
        DOCUMENT.decode(), "markdown", settings.chunk_size_chars, settings.chunk_overlap_chars
    )
    # A worker that stored ten passages and died: its lease runs out half a second later.
    engine = create_engine(settings)
    try:
        stores = FileStores.on(engine)
        now = utcnow()
        source = await stores.sources.create(ORG, new_id("source"), "docs", None, now)
        blobs = LocalBlobStore(settings.blob_dir)
        file_id = new_id("file")
        info = await blobs.write_bytes(f"files/{file_id}", DOCUMENT)
        await stores.catalog.create(
            NewFile(
                file_id, ORG, source.id, "doc.md", "text/markdown", info.size, info.sha256, f"files/{file_id}"
            ),
            now,
        )
        dead = await stores.leases.claim(
            "dead-worker", now, claim_rules(lease_s=0.5, max_attempts=3, timeout_minutes=30)
        )
        assert dead is not None and dead.id == file_id
        lease = Lease(file_id, "dead-worker")
        await stores.leases.start_embedding(
            lease, now, total_chunks=len(chunks), embedding_model="test-embedder", parse_s=0, chunk_s=0
        )
        hashing = HashEmbedder(DIMENSIONS)
        rows = [
            PassageRow(c.index, c.text, vector_to_bytes(v))
            for c, v in zip(chunks[:10], hashing.embed_sync([c.text for c in chunks[:10]]), strict=True)
        ]
        await stores.passages.store_batch(lease, dead, rows, now, lease_s=0.5, embed_s=0.1, store_s=0.1)
    finally:
        await engine.dispose()

    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        done = await wait_file(runtime, file_id, timeout_s=30)
        assert (done.status, done.attempts) == (FileStatus.COMPLETED, 2), done.error_message
        assert done.chunks_embedded == done.total_chunks == len(chunks)
        assert await passage_counts(runtime, file_id) == (len(chunks), len(chunks))
        assert endpoint.texts == len(chunks) - 10  # only the chunks without a stored passage
        assert component(runtime).metrics.retries._value.get() == 1


async def test_deleting_a_file_stops_its_worker(
    make_settings: MakeSettings, sqlite_url: str, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.delay_s = 0.2
    loaded = openai_settings(make_settings, sqlite_url, endpoint)
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        files = component(runtime)
        record = await add_file(runtime, await create_source(runtime), DOCUMENT)

        async def embedding_started() -> bool:
            return (await files.stores.catalog.get(ORG, record.id)).chunks_embedded >= 4

        await wait_for(embedding_started, 20, "the first stored batch")
        [busy] = [w.active for w in files.workers if w.active is not None and w.active.file_id == record.id]
        await files.service.delete_file(ORG, record.id)
        assert busy.stop_reason == "deleted" and busy.task is not None

        async def workers_idle() -> bool:
            return not any(worker.active for worker in files.workers)

        await wait_for(workers_idle, 10, "the worker to stop")
        assert busy.task.cancelled()
        assert await passage_counts(runtime, record.id) == (0, 0)
        assert not await files.blobs.exists(record.blob_key)


async def test_a_graceful_shutdown_gives_the_file_back_without_using_an_attempt(
    make_settings: MakeSettings, sqlite_url: str, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.delay_s = 0.2
    loaded = openai_settings(make_settings, sqlite_url, endpoint)
    async with Runtime(loaded, role="worker") as first:
        await first.wait_ready(30)
        record = await add_file(first, await create_source(first), DOCUMENT)

        async def embedding_started() -> bool:
            return (await component(first).stores.catalog.get(ORG, record.id)).chunks_embedded >= 4

        await wait_for(embedding_started, 20, "the first stored batch")
    endpoint.delay_s = 0.0
    async with Runtime(loaded, role="worker") as second:
        await second.wait_ready(30)
        done = await wait_file(second, record.id, timeout_s=30)
        assert (done.status, done.attempts) == (FileStatus.COMPLETED, 1)
        assert await passage_counts(second, record.id) == (total_chunks(), total_chunks())
