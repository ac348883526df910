"""Blob stores: one behaviour suite run against the local-directory and the in-memory store."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backburner.files.blobs import (
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InMemoryBlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    iter_bytes,
    local_path,
)

DEADLINE_S = 10


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return InMemoryBlobStore()


async def chunks_of(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def temp_files(store: BlobStore) -> list[Path]:
    if isinstance(store, LocalBlobStore):
        return [p for p in store.root.rglob("*") if p.is_file() and ".tmp" in p.parts]
    return []


async def test_write_stream_reports_size_and_sha256(store: BlobStore) -> None:
    data = os.urandom(10_000)
    info = await store.write_stream("org-1/file-1/content", chunks_of(data))
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.exists("org-1/file-1/content")
    assert await store.read_bytes("org-1/file-1/content") == data
    streamed = b"".join([chunk async for chunk in store.open("org-1/file-1/content", chunk_bytes=999)])
    assert streamed == data
    assert temp_files(store) == []


async def test_empty_blob(store: BlobStore) -> None:
    info = await store.write_bytes("empty", b"")
    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await store.read_bytes("empty") == b""


async def test_a_write_replaces_the_previous_blob(store: BlobStore) -> None:
    await store.write_bytes("k", b"first version")
    await store.write_bytes("k", b"second")
    assert await store.read_bytes("k") == b"second"


async def test_too_large_raises_and_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(BlobTooLarge) as caught:
        await store.write_stream("big", chunks_of(b"x" * 101, size=10), max_bytes=100)
    assert caught.value.max_bytes == 100
    assert not await store.exists("big")
    assert temp_files(store) == []
    info = await store.write_stream("exact", chunks_of(b"x" * 100, size=10), max_bytes=100)
    assert info.size == 100


async def test_a_failing_stream_keeps_the_previous_blob(store: BlobStore) -> None:
    await store.write_bytes("k", b"kept")

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.write_stream("k", broken())
    assert await store.read_bytes("k") == b"kept"
    assert temp_files(store) == []


async def test_a_cancelled_write_leaves_nothing(store: BlobStore) -> None:
    sent_some = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * (2 * 1024 * 1024)  # past the write buffer: some bytes reach the disk
        sent_some.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(store.write_stream("stalled", stalled()))
    await asyncio.wait_for(sent_some.wait(), DEADLINE_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE_S)
    assert not await store.exists("stalled")
    assert temp_files(store) == []


async def test_missing_blobs(store: BlobStore) -> None:
    assert not await store.exists("nope")
    assert await store.delete("nope") is False
    with pytest.raises(BlobNotFound):
        await store.read_bytes("nope")
    with pytest.raises(BlobNotFound):
        async for _ in store.open("nope"):
            pass


async def test_delete(store: BlobStore) -> None:
    await store.write_bytes("a/b", b"data")
    assert await store.delete("a/b") is True
    assert not await store.exists("a/b")


@pytest.mark.parametrize(
    "key",
    ["", "../escape", "a/../../b", "/absolute", "a//b", ".hidden", "a/.tmp/x", "back\\slash", "sp ace", "a/"],
)
async def test_keys_cannot_escape_the_store(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await store.write_bytes(key, b"x")
    with pytest.raises(InvalidBlobKey):
        await store.exists(key)
    with pytest.raises(InvalidBlobKey):
        store.path_for(key)


async def test_local_path_gives_a_readable_file(store: BlobStore) -> None:
    await store.write_bytes("doc", b"content")
    async with local_path(store, "doc") as path:
        assert path.read_bytes() == b"content"
    if isinstance(store, InMemoryBlobStore):
        assert not path.exists()  # the temporary copy is gone
    with pytest.raises(BlobNotFound):
        async with local_path(store, "missing"):
            pass


async def test_local_store_files_live_under_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    await store.write_bytes("org/file/blob.bin", b"data")
    assert (tmp_path / "root" / "org" / "file" / "blob.bin").read_bytes() == b"data"
    assert store.path_for("org/file/blob.bin") == (tmp_path / "root" / "org" / "file" / "blob.bin").resolve()


async def test_local_store_streams_without_holding_the_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root", fsync=False)
    piece = os.urandom(64 * 1024)
    total = 24 * 1024 * 1024

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(total // len(piece)):
            yield piece

    tracemalloc.start()
    try:
        info = await store.write_stream("large", stream(), max_bytes=total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == total
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while streaming {total}"


async def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    temp_dir = tmp_path / "root" / ".tmp"
    temp_dir.mkdir(parents=True)
    old, fresh = temp_dir / "old.part", temp_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    now = fresh.stat().st_mtime
    os.utime(old, (now - 7200, now - 7200))
    assert await store.remove_stale_temp_files(older_than_s=3600, now=now) == 1
    assert not old.exists() and fresh.exists()
    assert await LocalBlobStore(tmp_path / "elsewhere").remove_stale_temp_files(3600) == 0


async def test_iter_bytes() -> None:
    assert [c async for c in iter_bytes(b"abcdefg", 3)] == [b"abc", b"def", b"g"]


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(LocalBlobStore(tmp_path), BlobStore)
    assert isinstance(InMemoryBlobStore(), BlobStore)
