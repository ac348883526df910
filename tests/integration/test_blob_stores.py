"""One behaviour suite over every blob store (local, in-memory, database, s3 against a real S3
server), each on SQLite and PostgreSQL: streaming in and out, limits and failures that leave
nothing behind, deletion, local copies for parsers, orphan sweeping, migration and verification.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock, utcnow
from backburner.files.blobs import (
    BlobChecksumMismatch,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    BlobUnreadable,
    InvalidBlobKey,
    LocalBlobStore,
    ReadRetry,
    file_blob_key,
    local_path,
)
from backburner.files.blobs.base import BlobEntry, BlobInfo, BlobStat
from backburner.files.blobs.migration import migrate_blobs
from backburner.files.blobs.references import BlobReferences
from backburner.files.blobs.sweeper import BlobSweeper
from backburner.files.blobs.verification import verify_blobs
from backburner.files.store import FileStores
from backburner.files.store.records import NewFile
from backburner.ids import new_id
from tests.support.blobs import STORES, StoreKit, make_kit
from tests.support.files import ORG, wait_for

DEADLINE_S = 30
MB = 1024 * 1024
# Past one S3 part (5 MiB) and several database chunks (1 MiB): every store takes its
# streaming path, not the one for blobs that fit in one piece.
LARGE_BYTES = 6 * MB + 12_345


@pytest.fixture(params=STORES)
async def kit(request: pytest.FixtureRequest, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[StoreKit]:
    server = request.getfixturevalue("s3_server") if request.param == "s3" else None
    async for made in make_kit(request.param, engine, tmp_path, server):
        yield made


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: BlobStore, key: str, chunk_bytes: int = MB) -> tuple[bytes, int]:
    """The blob's bytes and the largest chunk the store handed out."""
    parts = [chunk async for chunk in store.open(key, chunk_bytes)]
    return b"".join(parts), max((len(p) for p in parts), default=0)


# --- streaming in and out ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 10_000, LARGE_BYTES])
async def test_a_stream_goes_in_and_comes_back_the_same(kit: StoreKit, size: int) -> None:
    store = kit.store
    data = os.urandom(size)
    info = await store.write_stream("files/one", chunks_of(data), max_bytes=LARGE_BYTES)
    assert info == BlobInfo(size, hashlib.sha256(data).hexdigest())
    back, largest = await read_all(store, "files/one", chunk_bytes=MB)
    assert back == data and largest <= MB
    stat = await store.stat("files/one")
    assert stat is not None and stat.size == size
    assert stat.modified_at <= utcnow() + timedelta(seconds=5)  # the store's own time, roughly ours
    assert stat.sha256 in (None, info.sha256)
    assert await kit.leftovers() == 0


async def test_a_write_replaces_the_previous_blob(kit: StoreKit) -> None:
    large = os.urandom(LARGE_BYTES)
    await kit.store.write_bytes("files/k", b"first version")
    await kit.store.write_stream("files/k", chunks_of(large))
    assert await kit.store.read_bytes("files/k") == large
    await kit.store.write_bytes("files/k", b"second")
    assert await kit.store.read_bytes("files/k") == b"second"
    assert await kit.leftovers() == 0


async def test_streaming_holds_a_bounded_amount_in_memory(kit: StoreKit) -> None:
    if kit.name == "memory":
        pytest.skip("the in-memory store keeps its blobs in memory by design")
    piece = os.urandom(64 * 1024)
    total = 32 * MB

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(total // len(piece)):
            yield piece

    await kit.store.write_bytes("files/warm-up", b"x" * 100)  # clients and pools made beforehand
    tracemalloc.start()
    try:
        info = await kit.store.write_stream("files/large", stream())
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = 0
        async for chunk in kit.store.open("files/large"):
            read += len(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == read == total
    # A piece or two at a time (1 MB rows, 5 MB parts, 1 MB file writes), never half the file.
    assert write_peak < total / 2, f"{kit.name}: {write_peak} bytes at once while writing {total}"
    assert read_peak < total / 4, f"{kit.name}: {read_peak} bytes at once while reading {total}"


# --- failures leave nothing behind --------------------------------------------------------------


@pytest.mark.parametrize("limit", [50, 5 * MB + 100_000])
async def test_a_size_limit_hit_midway_leaves_nothing(kit: StoreKit, limit: int) -> None:
    seen = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal seen
        async for chunk in chunks_of(os.urandom(LARGE_BYTES), 10_000):
            seen += len(chunk)
            yield chunk

    with pytest.raises(BlobTooLarge) as caught:
        await kit.store.write_stream("files/big", stream(), max_bytes=limit)
    assert caught.value.max_bytes == limit
    assert seen <= limit + 10_000  # stopped where the limit was passed, not at the end
    assert not await kit.store.exists("files/big")
    assert await kit.leftovers() == 0
    info = await kit.store.write_stream("files/exact", chunks_of(b"x" * 100, 10), max_bytes=100)
    assert info.size == 100


@pytest.mark.parametrize("size", [100, LARGE_BYTES])
async def test_a_wrong_expected_hash_stores_nothing(kit: StoreKit, size: int) -> None:
    data = os.urandom(size)
    with pytest.raises(BlobChecksumMismatch) as caught:
        await kit.store.write_stream("files/checked", chunks_of(data), expected_sha256="0" * 64)
    assert caught.value.actual == hashlib.sha256(data).hexdigest()
    assert not await kit.store.exists("files/checked")
    assert await kit.leftovers() == 0
    right = hashlib.sha256(data).hexdigest()
    await kit.store.write_stream("files/checked", chunks_of(data), expected_sha256=right)
    stat = await kit.store.stat("files/checked")
    # Stores that record hashes record the one that was checked (a migration relies on it).
    assert stat is not None and stat.sha256 in ((None, right) if kit.name == "local" else (right,))


async def test_a_failing_stream_keeps_the_previous_blob(kit: StoreKit) -> None:
    await kit.store.write_bytes("files/k", b"kept")

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(os.urandom(LARGE_BYTES), MB):
            yield chunk
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await kit.store.write_stream("files/k", broken())
    assert await kit.store.read_bytes("files/k") == b"kept"
    assert await kit.leftovers() == 0


async def test_a_cancelled_write_leaves_nothing(kit: StoreKit) -> None:
    sent_some = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield os.urandom(6 * MB)  # past one piece of every store: some of it is stored
        sent_some.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(kit.store.write_stream("files/stalled", stalled()))
    await asyncio.wait_for(sent_some.wait(), DEADLINE_S)
    await asyncio.sleep(0)  # let the store start on the piece it was handed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE_S)

    async def cleaned() -> bool:
        return await kit.leftovers() == 0

    await wait_for(cleaned, DEADLINE_S, "the cancelled write to clean up")
    assert not await kit.store.exists("files/stalled")


# --- reading, deleting, keys ------------------------------------------------------------------


async def test_missing_blobs(kit: StoreKit) -> None:
    store = kit.store
    assert not await store.exists("files/nope")
    assert await store.stat("files/nope") is None
    assert await store.delete("files/nope") is False
    with pytest.raises(BlobNotFound) as caught:
        await store.read_bytes("files/nope")
    assert caught.value.key == "files/nope" and caught.value.store == store.name


async def test_delete(kit: StoreKit) -> None:
    await kit.store.write_stream("files/a", chunks_of(os.urandom(LARGE_BYTES)))
    await kit.store.write_bytes("files/b", b"other")
    assert await kit.store.delete("files/a") is True
    assert not await kit.store.exists("files/a")
    assert await kit.store.read_bytes("files/b") == b"other"
    assert await kit.store.delete("files/a") is False


BAD_KEYS = [
    "",
    "../escape",
    "a/../../b",
    "/absolute",
    "a//b",
    ".hidden",
    "a/.tmp/x",
    "back\\slash",
    "sp ace",
    "a/",
]


async def test_keys_cannot_escape_the_store(kit: StoreKit) -> None:
    for key in BAD_KEYS:
        with pytest.raises(InvalidBlobKey):
            await kit.store.write_bytes(key, b"x")
        with pytest.raises(InvalidBlobKey):
            await kit.store.exists(key)
        with pytest.raises(InvalidBlobKey):
            kit.store.path_for(key)
    assert [e async for page in kit.store.list_blobs("", utcnow() + timedelta(hours=1)) for e in page] == []


async def test_local_path_gives_a_readable_file(kit: StoreKit) -> None:
    data = os.urandom(LARGE_BYTES)
    await kit.store.write_stream("files/doc", chunks_of(data))
    scratch = kit.tmp_path / "scratch"
    async with local_path(kit.store, "files/doc", scratch) as path:
        assert path.read_bytes() == data
    if isinstance(kit.store, LocalBlobStore):
        assert path == kit.store.path_for("files/doc")  # its own file, no copy
    else:
        assert path.parent == scratch and not path.exists()  # the temporary copy is gone


async def test_local_path_retries_then_names_the_store_and_the_key(kit: StoreKit) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the blob shows up late, as one written through another host might
            await kit.store.write_bytes("files/late", b"arrived")

    retry = ReadRetry(attempts=4, first_delay_s=0.25)
    async with local_path(kit.store, "files/late", kit.tmp_path, retry=retry, sleep=sleep) as path:
        assert path.read_bytes() == b"arrived"
    assert waits == [0.25, 0.5]

    waits.clear()
    with pytest.raises(BlobUnreadable) as caught:
        async with local_path(kit.store, "files/never", kit.tmp_path, retry=retry, sleep=sleep):
            pass
    assert waits == [0.25, 0.5, 1.0]
    message = str(caught.value)
    assert f"the {kit.name} blob store" in message and "'files/never'" in message, message
    assert "after 4 attempts over 1.75 s" in message
    assert [p.name for p in kit.tmp_path.glob("backburner-blob-*")] == []


# --- orphans ----------------------------------------------------------------------------------


async def _file_owning(engine: AsyncEngine, store: BlobStore, data: bytes, source_id: str) -> str:
    """A file row whose blob holds `data`, the way an upload makes one; returns its key."""
    file_id = new_id("file")
    key = file_blob_key(file_id)
    info = await store.write_bytes(key, data)
    await FileStores.on(engine).catalog.create(
        NewFile(file_id, ORG, source_id, f"{file_id}.txt", "text/plain", info.size, info.sha256, key),
        utcnow(),
    )
    return key


async def _source(engine: AsyncEngine) -> str:
    return (
        await FileStores.on(engine).sources.create(ORG, new_id("source"), new_id("docs"), None, utcnow())
    ).id


async def test_the_sweeper_removes_old_orphans_and_crashed_uploads_only(kit: StoreKit) -> None:
    store, engine = kit.store, kit.engine
    source_id = await _source(engine)
    owned = await _file_owning(engine, store, b"owned content", source_id)
    await store.write_bytes("files/orphan-1", b"nobody owns me")
    await store.write_stream("files/orphan-2", chunks_of(os.urandom(LARGE_BYTES)))
    await store.write_bytes("elsewhere/kept", b"not under the files' prefix")
    await kit.leave_stale_upload()
    stale_before = await kit.leftovers()
    sweeper = BlobSweeper(store, BlobReferences(engine), SystemClock(), interval_s=60)

    young = await sweeper.sweep(utcnow())
    assert young.orphans == []  # nothing is an hour old yet
    assert await store.exists("files/orphan-1")
    if kit.name != "s3":
        # The S3 server in tests reports one fixed start time for every multipart upload, so a
        # young one cannot be told from an old one there; real S3 reports the true time.
        assert young.stale_uploads == 0 and await kit.leftovers() == stale_before

    report = await sweeper.sweep(utcnow() + timedelta(hours=1, minutes=1))
    assert sorted(report.orphans) == ["files/orphan-1", "files/orphan-2"]
    assert young.stale_uploads + report.stale_uploads == stale_before
    assert await kit.leftovers() == 0
    assert await store.read_bytes(owned) == b"owned content"
    assert await store.read_bytes("elsewhere/kept") == b"not under the files' prefix"
    assert not await store.exists("files/orphan-1") and not await store.exists("files/orphan-2")
    again = await sweeper.sweep(utcnow() + timedelta(hours=2))
    assert (again.orphans, again.stale_uploads) == ([], 0)


async def test_blobs_are_listed_by_prefix_and_age(kit: StoreKit) -> None:
    for number in range(3):
        await kit.store.write_bytes(f"files/f{number}", b"x")
    await kit.store.write_bytes("other/o", b"x")
    later = utcnow() + timedelta(minutes=5)
    listed: list[BlobEntry] = [e async for page in kit.store.list_blobs("files/", later) for e in page]
    assert sorted(e.key for e in listed) == ["files/f0", "files/f1", "files/f2"]
    assert [
        e async for page in kit.store.list_blobs("files/", utcnow() - timedelta(minutes=5)) for e in page
    ] == []


# --- migration and verification ----------------------------------------------------------------


class FailingAfter(BlobStore):
    """A store whose reads fail after `allowed` blobs: a migration interrupted midway."""

    def __init__(self, inner: BlobStore, allowed: int) -> None:
        self.inner = inner
        self.allowed = allowed
        self.name = inner.name  # type: ignore[misc]

    async def write_stream(self, key, chunks, max_bytes=None, *, expected_sha256=None):  # type: ignore[no-untyped-def]
        return await self.inner.write_stream(key, chunks, max_bytes, expected_sha256=expected_sha256)

    async def open(self, key: str, chunk_bytes: int = MB) -> AsyncIterator[bytes]:  # type: ignore[override]
        if self.allowed <= 0:
            raise ConnectionResetError("the connection to the old store dropped")
        self.allowed -= 1
        async for chunk in self.inner.open(key, chunk_bytes):
            yield chunk

    async def stat(self, key: str) -> BlobStat | None:
        return await self.inner.stat(key)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    def list_blobs(self, prefix, older_than):  # type: ignore[no-untyped-def]
        return self.inner.list_blobs(prefix, older_than)

    async def remove_stale_uploads(self, older_than):  # type: ignore[no-untyped-def]
        return await self.inner.remove_stale_uploads(older_than)


@pytest.mark.parametrize("target_name", ["database", "s3"])
async def test_migration_resumes_after_an_interruption_and_skips_what_is_done(
    kit: StoreKit, target_name: str, request: pytest.FixtureRequest
) -> None:
    if target_name == kit.name:
        pytest.skip("a store is not migrated to itself (the command refuses it)")
    server = request.getfixturevalue("s3_server") if target_name == "s3" else None
    source, engine = kit.store, kit.engine
    source_id = await _source(engine)
    contents = [os.urandom(LARGE_BYTES), b"small one", os.urandom(200_000), b"", b"last"]
    keys = [await _file_owning(engine, source, data, source_id) for data in contents]
    references = BlobReferences(engine)
    async for target_kit in make_kit(target_name, engine, kit.tmp_path / "target", server):
        target = target_kit.store
        with pytest.raises(ConnectionResetError):
            await migrate_blobs(FailingAfter(source, 2), target, references, concurrency=1)
        copied_first = [key for key in keys if await target.exists(key)]
        assert len(copied_first) == 2
        assert await target_kit.leftovers() == 0

        progress: list[int] = []
        report = await migrate_blobs(source, target, references, progress.append)
        assert (report.copied, report.skipped, report.problems) == (3, 2, [])
        assert sum(progress) == sum(map(len, contents))  # the bar ends full
        for key, data in zip(keys, contents, strict=True):
            assert await target.read_bytes(key) == data
        again = await migrate_blobs(source, target, references)
        assert (again.copied, again.skipped) == (0, 5)
        assert (await verify_blobs(target, references)).problems == []


async def test_migration_reports_missing_and_corrupt_blobs_and_copies_neither(
    kit: StoreKit, request: pytest.FixtureRequest
) -> None:
    target_name = "s3" if kit.name == "database" else "database"
    server = request.getfixturevalue("s3_server") if target_name == "s3" else None
    source, engine = kit.store, kit.engine
    source_id = await _source(engine)
    good = await _file_owning(engine, source, b"fine content", source_id)
    gone = await _file_owning(engine, source, b"will vanish", source_id)
    rotten = await _file_owning(engine, source, b"will rot", source_id)
    await source.delete(gone)
    await kit.corrupt(rotten, b"rotten bytes")
    async for target_kit in make_kit(target_name, engine, kit.tmp_path / "target", server):
        report = await migrate_blobs(source, target_kit.store, BlobReferences(engine))
        assert report.copied == 1
        assert sorted((p.key, p.problem) for p in report.problems) == sorted(
            [(gone, "missing"), (rotten, "corrupt")]
        )
        assert await target_kit.store.read_bytes(good) == b"fine content"
        assert not await target_kit.store.exists(gone) and not await target_kit.store.exists(rotten)
        assert await target_kit.leftovers() == 0


async def test_verification_finds_missing_and_corrupted_blobs(kit: StoreKit) -> None:
    store, engine = kit.store, kit.engine
    source_id = await _source(engine)
    large = os.urandom(LARGE_BYTES)
    good = await _file_owning(engine, store, large, source_id)
    rotten = await _file_owning(engine, store, b"the original text", source_id)
    gone = await _file_owning(engine, store, b"soon gone", source_id)
    assert (await verify_blobs(store, BlobReferences(engine))).problems == []

    await kit.corrupt(rotten, b"the 0riginal text")
    await store.delete(gone)
    progress: list[int] = []
    report = await verify_blobs(store, BlobReferences(engine), progress.append)
    assert report.checked == 3
    assert sum(progress) == len(large) + len(b"the original text") + len(b"soon gone")
    found = {p.key: p for p in report.problems}
    assert sorted(found) == sorted([rotten, gone])
    assert found[rotten].problem == "corrupt" and hashlib.sha256(b"the original text").hexdigest() in (
        found[rotten].detail
    )
    assert found[gone].problem == "missing" and store.name in found[gone].detail
    assert good not in found
