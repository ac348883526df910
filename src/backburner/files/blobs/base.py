"""The blob-store interface: what every store does, its errors, and the rules for keys.

Keys are relative paths made of `/`-separated segments of letters, digits, `.`, `_` and `-`; a
segment never starts with a dot, so a key cannot climb out of a directory store (`..`) or collide
with a store's own temporary uploads.

A write is all or nothing in every store: the blob appears under its key only once the whole
stream is stored, and a write that fails, is cancelled or goes over its size limit leaves the
previous blob (or none) and no partial one behind. What a crash in the middle leaves (a temporary
file, pending rows, an unfinished multipart upload) is removed by `remove_stale_uploads`.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal

READ_CHUNK_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,254}")

StoreName = Literal["local", "database", "s3", "memory"]
# Every file's blob lives under this prefix; the orphan sweeper looks nowhere else.
FILE_KEY_PREFIX = "files/"


class BlobError(Exception):
    """Base of blob-store errors."""


class InvalidBlobKey(BlobError, ValueError):
    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid blob key {key!r}: {reason}")


class BlobNotFound(BlobError):
    def __init__(self, key: str, store: str | None = None, *, detail: str | None = None) -> None:
        self.key = key
        self.store = store
        where = f" in the {store} blob store" if store else ""
        super().__init__(detail or f"blob {key!r} not found{where}")


class BlobTooLarge(BlobError):
    """The stream went over `max_bytes`; nothing was stored."""

    def __init__(self, key: str, max_bytes: int) -> None:
        self.key = key
        self.max_bytes = max_bytes
        super().__init__(f"blob {key!r} is larger than the limit of {max_bytes} bytes")


class BlobChecksumMismatch(BlobError):
    """The stream's SHA-256 is not the one the writer expected; nothing was stored."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"blob {key!r} has SHA-256 {actual}, expected {expected}")


class BlobStoreUnavailable(BlobError):
    """The store cannot be used now (unreachable, missing bucket, refused credentials)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int
    # Recorded by the database store, and by S3 when the writer knew the hash in advance
    # (`expected_sha256`, as a migration does); None where the store keeps none.
    sha256: str | None
    modified_at: datetime


@dataclass(frozen=True, slots=True)
class BlobEntry:
    key: str
    modified_at: datetime


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


def file_blob_key(file_id: str) -> str:
    return f"{FILE_KEY_PREFIX}{file_id}"


def is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidBlobKey:
        return False
    return True


class StreamMeter:
    """Counts and hashes a stream as it is written: raises `BlobTooLarge` the moment it goes over
    `max_bytes`, and `finish` raises `BlobChecksumMismatch` when an expected hash is not met."""

    def __init__(self, key: str, max_bytes: int | None, expected_sha256: str | None) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.expected_sha256 = expected_sha256
        self.size = 0
        self.digest = hashlib.sha256()

    def count(self, chunk: bytes) -> None:
        """Count without hashing (a caller that hashes elsewhere, in a worker thread)."""
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise BlobTooLarge(self.key, self.max_bytes)

    def add(self, chunk: bytes) -> None:
        self.count(chunk)
        self.digest.update(chunk)

    async def watch(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """The stream, counted and hashed as it arrives, so that a size limit stops it at once."""
        async for chunk in chunks:
            self.add(chunk)
            yield chunk

    def finish(self) -> BlobInfo:
        sha256 = self.digest.hexdigest()
        if self.expected_sha256 is not None and sha256 != self.expected_sha256:
            raise BlobChecksumMismatch(self.key, self.expected_sha256, sha256)
        return BlobInfo(size=self.size, sha256=sha256)


async def rebuffer(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytearray]:
    """The stream cut into pieces of exactly `size` bytes (the last one shorter, never empty).

    A piece is handed on as the buffer it was gathered in: each byte is copied once, whatever
    the sizes of the incoming chunks.
    """
    buffer = bytearray()
    async for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = min(size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == size:
                yield buffer
                buffer = bytearray()
    if buffer:
        yield buffer


@dataclass
class Pieces:
    """A write's stream, metered and cut into pieces, with its first piece read already."""

    meter: StreamMeter
    first: bytearray
    rest: AsyncIterator[bytearray]
    piece_bytes: int

    @property
    def whole(self) -> bool:
        """The stream ended within the first piece (a store may then write it in one go)."""
        return len(self.first) < self.piece_bytes


async def cut_into_pieces(
    key: str,
    chunks: AsyncIterable[bytes],
    max_bytes: int | None,
    expected_sha256: str | None,
    piece_bytes: int,
) -> Pieces:
    validate_key(key)
    meter = StreamMeter(key, max_bytes, expected_sha256)
    rest = aiter(rebuffer(meter.watch(chunks), piece_bytes))
    first = await anext(rest, bytearray())
    return Pieces(meter, first, rest, piece_bytes)


async def iter_bytes(data: bytes, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """An async stream over bytes already in memory (tests, small writes)."""
    for start in range(0, len(data), chunk_bytes):
        yield data[start : start + chunk_bytes]


class BlobStore(ABC):
    """Where file contents live. Every instance of a deployment must see the same blobs."""

    name: ClassVar[StoreName]

    @abstractmethod
    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> BlobInfo:
        """Store the stream under `key` (replacing any blob there) without holding it in memory.

        Raises `BlobTooLarge` past `max_bytes` and `BlobChecksumMismatch` when `expected_sha256`
        is given and not met, in both cases leaving nothing behind.
        """

    @abstractmethod
    def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        """The blob's content as a stream of chunks; `BlobNotFound` on first iteration."""

    @abstractmethod
    async def stat(self, key: str) -> BlobStat | None:
        """Size, recorded hash and time of the blob, or None when there is none."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the blob; True if it existed. Deleting a missing blob is not an error."""

    @abstractmethod
    def list_blobs(self, prefix: str, older_than: datetime) -> AsyncIterator[list[BlobEntry]]:
        """Pages of the blobs whose keys start with `prefix`, stored before `older_than`."""

    @abstractmethod
    async def remove_stale_uploads(self, older_than: datetime) -> int:
        """Remove what writes interrupted by a crash left, if begun before `older_than`; returns
        how many were removed. Writes still in progress (here or on another host) are younger."""

    async def check(self) -> str | None:
        """What stops the store from working now, or None when it works."""
        return None

    def path_for(self, key: str) -> Path | None:
        """A local path of the blob when the store has one (parsers read paths), else None."""
        validate_key(key)
        return None

    def describe(self, key: str) -> str:
        return f"key {key!r} in the {self.name} blob store"

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def write_bytes(self, key: str, data: bytes) -> BlobInfo:
        return await self.write_stream(key, iter_bytes(data))

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.open(key)])

    async def aclose(self) -> None:  # noqa: B027 (most stores hold nothing to release)
        """Release connections and clients."""

    async def __aenter__(self) -> BlobStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
