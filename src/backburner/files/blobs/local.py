"""Blobs as files under a local directory: one host only, unless every instance mounts it.

Each write goes to a temporary file under `.tmp/` that is renamed into place once complete, so a
reader never sees half a blob; a crash mid-write leaves only the temporary file, removed by the
orphan sweeper once it is old.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from backburner.files.blobs.base import (
    READ_CHUNK_BYTES,
    BlobEntry,
    BlobInfo,
    BlobNotFound,
    BlobStat,
    BlobStore,
    StreamMeter,
    is_valid_key,
    validate_key,
)

# Incoming chunks are gathered up to this size before one write in a worker thread, so a
# stream of small multipart chunks does not pay a thread hop per chunk.
WRITE_BUFFER_BYTES = 1024 * 1024
LIST_PAGE_SIZE = 1000
TEMP_DIR = ".tmp"


class LocalBlobStore(BlobStore):
    name = "local"

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self._fsync = fsync

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> BlobInfo:
        final = self.path_for(key)
        temp_dir = self.root / TEMP_DIR
        temp = temp_dir / f"{uuid.uuid4().hex}.part"
        await asyncio.to_thread(temp_dir.mkdir, parents=True, exist_ok=True)
        out = await open_for_writing(temp)
        meter = StreamMeter(key, max_bytes, expected_sha256)
        buffer: list[bytes] = []
        buffered = 0
        try:
            try:
                async for chunk in chunks:
                    meter.count(chunk)
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= WRITE_BUFFER_BYTES:
                        await asyncio.to_thread(_write_and_hash, out, meter.digest.update, buffer)
                        buffer, buffered = [], 0
                if buffer:
                    await asyncio.to_thread(_write_and_hash, out, meter.digest.update, buffer)
                await asyncio.to_thread(_flush, out, self._fsync)
            finally:
                await close_in_thread(out)
            info = meter.finish()
            await asyncio.to_thread(_move_into_place, temp, final)
        except BaseException:
            # Cancelled, too large or failed: no partial blob stays, under either name.
            await asyncio.to_thread(temp.unlink, True)
            raise
        return info

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        path = self.path_for(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key, self.name) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk
        finally:
            await close_in_thread(handle)

    async def stat(self, key: str) -> BlobStat | None:
        path = self.path_for(key)
        try:
            found = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return BlobStat(found.st_size, None, _mtime(found.st_mtime))

    async def delete(self, key: str) -> bool:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def list_blobs(self, prefix: str, older_than: datetime) -> AsyncIterator[list[BlobEntry]]:
        # One directory per thread hop: a large tree is never listed whole in memory.
        directories = _walk(self.root, prefix, older_than.timestamp())
        page: list[BlobEntry] = []
        while (found := await asyncio.to_thread(next, directories, None)) is not None:
            page.extend(found)
            if len(page) >= LIST_PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page

    async def remove_stale_uploads(self, older_than: datetime) -> int:
        return await asyncio.to_thread(remove_files_older_than, self.root / TEMP_DIR, older_than.timestamp())

    async def check(self) -> str | None:
        try:
            await asyncio.to_thread((self.root / TEMP_DIR).mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            return f"the blob directory {self.root} cannot be created: {exc}"
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            return f"the blob directory {self.root} is not writable"
        return None


async def open_for_writing(path: Path) -> BinaryIO:
    """`path` opened for writing (truncated) in a thread. If the caller is cancelled meanwhile,
    the file the thread opens anyway is closed, not left to the garbage collector."""
    opening: asyncio.Future[BinaryIO] = asyncio.ensure_future(asyncio.to_thread(path.open, "wb"))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


async def close_in_thread(handle: BinaryIO) -> None:
    """Close `handle` in a thread. A caller cancelled meanwhile does not cancel the close: on a
    busy thread pool the close would still be queued, and would then never run."""
    await asyncio.shield(asyncio.to_thread(handle.close))


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _write_and_hash(out: BinaryIO, update_digest: Callable[[bytes], None], parts: list[bytes]) -> None:
    for part in parts:
        out.write(part)
        update_digest(part)  # hashlib releases the GIL on large buffers


def _flush(out: BinaryIO, fsync: bool) -> None:
    out.flush()
    if fsync:
        os.fsync(out.fileno())


def _move_into_place(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)


def _walk(root: Path, prefix: str, cutoff: float) -> Iterator[list[BlobEntry]]:
    """Per directory, its blob files whose keys start with `prefix` and that are older than
    `cutoff` (temporary files and names that are not keys are left out)."""
    start = root.joinpath(*prefix.split("/")[:-1])
    for directory, subdirectories, names in os.walk(start):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative = Path(directory).relative_to(root)
        found: list[BlobEntry] = []
        for name in names:
            key = (relative / name).as_posix()
            if not key.startswith(prefix) or not is_valid_key(key):
                continue
            with contextlib.suppress(FileNotFoundError):
                modified = os.stat(os.path.join(directory, name)).st_mtime
                if modified < cutoff:
                    found.append(BlobEntry(key, _mtime(modified)))
        yield found


def remove_files_older_than(directory: Path, cutoff: float, prefix: str = "") -> int:
    """Remove the files directly in `directory` named `prefix...` and last written before `cutoff`
    (a `time.time()` value); returns how many were removed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.name.startswith(prefix) and entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
    return removed
