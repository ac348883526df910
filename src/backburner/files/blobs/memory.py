"""A blob store in a dict, for tests: one process only."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from backburner.clock import Clock, SystemClock
from backburner.files.blobs.base import (
    READ_CHUNK_BYTES,
    BlobEntry,
    BlobInfo,
    BlobNotFound,
    BlobStat,
    BlobStore,
    StreamMeter,
    validate_key,
)


@dataclass(frozen=True, slots=True)
class _Blob:
    data: bytes
    sha256: str
    modified_at: datetime


class InMemoryBlobStore(BlobStore):
    name = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._blobs: dict[str, _Blob] = {}

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> BlobInfo:
        validate_key(key)
        meter = StreamMeter(key, max_bytes, expected_sha256)
        parts: list[bytes] = []
        async for chunk in chunks:
            meter.add(chunk)
            parts.append(chunk)
        info = meter.finish()
        # Stored only once complete, so a failed write leaves the previous blob (or none).
        self._blobs[key] = _Blob(b"".join(parts), info.sha256, self._clock.now())
        return info

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        blob = self._get(key)
        for start in range(0, len(blob.data), chunk_bytes):
            yield blob.data[start : start + chunk_bytes]

    async def stat(self, key: str) -> BlobStat | None:
        validate_key(key)
        blob = self._blobs.get(key)
        return None if blob is None else BlobStat(len(blob.data), blob.sha256, blob.modified_at)

    async def delete(self, key: str) -> bool:
        validate_key(key)
        return self._blobs.pop(key, None) is not None

    async def list_blobs(self, prefix: str, older_than: datetime) -> AsyncIterator[list[BlobEntry]]:
        page = [
            BlobEntry(key, blob.modified_at)
            for key, blob in sorted(self._blobs.items())
            if key.startswith(prefix) and blob.modified_at < older_than
        ]
        if page:
            yield page

    async def remove_stale_uploads(self, older_than: datetime) -> int:
        return 0  # a write here is never half done

    def _get(self, key: str) -> _Blob:
        validate_key(key)
        try:
            return self._blobs[key]
        except KeyError:
            raise BlobNotFound(key, self.name) from None
