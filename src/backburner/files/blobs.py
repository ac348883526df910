"""Blob storage for uploaded files: one interface, a local-directory store and an in-memory one.

Keys are relative paths made of `/`-separated segments of letters, digits, `.`, `_` and `-`; a
segment never starts with a dot, so a key cannot climb out of the store (`..`) or collide with
the store's own temporary files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
# Incoming chunks are gathered up to this size before one write in a worker thread, so a
# stream of small multipart chunks does not pay a thread hop per chunk.
WRITE_BUFFER_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,254}")
_TEMP_DIR = ".tmp"


class BlobError(Exception):
    """Base of blob-store errors."""


class InvalidBlobKey(BlobError, ValueError):
    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid blob key {key!r}: {reason}")


class BlobNotFound(BlobError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"blob {key!r} not found")


class BlobTooLarge(BlobError):
    """The stream went over `max_bytes`; the partial blob was removed."""

    def __init__(self, key: str, max_bytes: int) -> None:
        self.key = key
        self.max_bytes = max_bytes
        super().__init__(f"blob {key!r} is larger than the limit of {max_bytes} bytes")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    size: int
    sha256: str


def validate_key(key: str) -> str:
    if not key:
        raise InvalidBlobKey(key, "empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(key, f"longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(
                key, "segments must be letters, digits, '.', '_' or '-' and not start with '.'"
            )
    return key


@runtime_checkable
class BlobStore(Protocol):
    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> BlobInfo:
        """Store the stream under `key` (replacing any blob there) without holding it in memory.

        Raises `BlobTooLarge` past `max_bytes`, leaving nothing behind.
        """
        ...

    async def write_bytes(self, key: str, data: bytes) -> BlobInfo: ...

    def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The blob's content as a stream of chunks; `BlobNotFound` on first iteration."""
        ...

    async def read_bytes(self, key: str) -> bytes: ...

    def path_for(self, key: str) -> Path | None:
        """A local path of the blob when the store has one (parsers read paths), else None."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the blob; True if it existed. Deleting a missing blob is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...


async def iter_bytes(data: bytes, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """An async stream over bytes already in memory (tests, small writes)."""
    for start in range(0, len(data), chunk_bytes):
        yield data[start : start + chunk_bytes]


@contextlib.asynccontextmanager
async def local_path(store: BlobStore, key: str) -> AsyncIterator[Path]:
    """A path holding the blob: the store's own file, or a temporary copy removed afterwards."""
    path = store.path_for(key)
    if path is not None:
        if not await asyncio.to_thread(path.is_file):
            raise BlobNotFound(key)
        yield path
        return
    handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix="backburner-blob-")
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in store.open(key):
                await asyncio.to_thread(out.write, chunk)
        yield temp
    finally:
        await asyncio.to_thread(temp.unlink, True)


class LocalBlobStore:
    """Blobs as files under `root`; each write goes to a temporary file renamed into place."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self._fsync = fsync

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> BlobInfo:
        final = self.path_for(key)
        temp_dir = self.root / _TEMP_DIR
        temp = temp_dir / f"{uuid.uuid4().hex}.part"
        await asyncio.to_thread(temp_dir.mkdir, parents=True, exist_ok=True)
        out = await asyncio.to_thread(temp.open, "wb")
        digest = hashlib.sha256()
        size = 0
        buffer: list[bytes] = []
        buffered = 0
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLarge(key, max_bytes)
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= WRITE_BUFFER_BYTES:
                        await asyncio.to_thread(_write_and_hash, out, digest.update, buffer)
                        buffer, buffered = [], 0
                if buffer:
                    await asyncio.to_thread(_write_and_hash, out, digest.update, buffer)
                await asyncio.to_thread(_flush, out, self._fsync)
            finally:
                await asyncio.to_thread(out.close)
            await asyncio.to_thread(_move_into_place, temp, final)
        except BaseException:
            # Cancelled, too large or failed: no partial blob stays, under either name.
            await asyncio.to_thread(temp.unlink, True)
            raise
        return BlobInfo(size=size, sha256=digest.hexdigest())

    async def write_bytes(self, key: str, data: bytes) -> BlobInfo:
        return await self.write_stream(key, iter_bytes(data))

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def read_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> bool:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def remove_stale_temp_files(self, older_than_s: float, now: float | None = None) -> int:
        """Remove temporary files left by a crash mid-write; returns how many were removed.

        Only files older than `older_than_s` go, so a write still in progress (in this process or
        another one sharing the directory) is left alone. `now` is a `time.time()` value.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        return await asyncio.to_thread(_remove_older_than, self.root / _TEMP_DIR, cutoff)


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


def _remove_older_than(directory: Path, cutoff: float) -> int:
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
    if removed:
        logger.info("removed %d stale temporary blob files", removed, extra={"event": "blob.temp_removed"})
    return removed


class InMemoryBlobStore:
    """A blob store in a dict, for tests and for running without a data directory."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def path_for(self, key: str) -> None:
        validate_key(key)
        return None

    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> BlobInfo:
        validate_key(key)
        digest = hashlib.sha256()
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise BlobTooLarge(key, max_bytes)
            digest.update(chunk)
            parts.append(chunk)
        # Stored only once complete, so a failed write leaves the previous blob (or none).
        self._blobs[key] = b"".join(parts)
        return BlobInfo(size=size, sha256=digest.hexdigest())

    async def write_bytes(self, key: str, data: bytes) -> BlobInfo:
        return await self.write_stream(key, iter_bytes(data))

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        data = await self.read_bytes(key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    async def read_bytes(self, key: str) -> bytes:
        validate_key(key)
        try:
            return self._blobs[key]
        except KeyError:
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> bool:
        validate_key(key)
        return self._blobs.pop(key, None) is not None

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return key in self._blobs
