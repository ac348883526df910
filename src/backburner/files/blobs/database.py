"""Blobs in the database itself, in rows of 1 MB: shared by every instance with no extra service.

A write streams in: each 1 MB chunk is inserted in its own short transaction under a pending
blob row (no key yet), so an upload from a slow client holds no connection between chunks and
no more than one chunk in memory. The last transaction gives the pending row its key and drops
the blob it replaces, so readers see the old blob or the new one, never a mix. A blob that fits
in one chunk takes a single transaction. A failed or cancelled write removes its pending row;
a crash leaves it to the orphan sweeper (`remove_stale_uploads`).

A read fetches one chunk per query, so no transaction stays open while the reader is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.clock import Clock
from backburner.db.transactions import reading, redoable_transaction
from backburner.files.blobs.base import (
    READ_CHUNK_BYTES,
    BlobEntry,
    BlobInfo,
    BlobNotFound,
    BlobStat,
    BlobStore,
    Pieces,
    cut_into_pieces,
    validate_key,
)
from backburner.files.blobs.tables import blob_chunks, blobs

CHUNK_BYTES = 1024 * 1024
LIST_PAGE_SIZE = 1000


class DatabaseBlobStore(BlobStore):
    name = "database"

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> BlobInfo:
        pieces = await cut_into_pieces(key, chunks, max_bytes, expected_sha256, CHUNK_BYTES)
        if pieces.whole:
            info = pieces.meter.finish()
            blob_id = uuid.uuid4().hex
            now = self.clock.now()
            async with self.engine.begin() as conn:
                await _drop_key(conn, key)
                await conn.execute(
                    insert(blobs).values(
                        id=blob_id,
                        key=key,
                        size_bytes=info.size,
                        sha256=info.sha256,
                        chunk_count=1 if pieces.first else 0,
                        started_at=now,
                        stored_at=now,
                    )
                )
                if pieces.first:
                    await conn.execute(insert(blob_chunks).values(blob_id=blob_id, seq=0, data=pieces.first))
            return info
        return await self._write_pending(key, pieces)

    async def _write_pending(self, key: str, pieces: Pieces) -> BlobInfo:
        blob_id = uuid.uuid4().hex
        async with self._chunk_transaction() as conn:
            await conn.execute(
                insert(blobs).values(
                    id=blob_id, key=None, size_bytes=0, chunk_count=0, started_at=self.clock.now()
                )
            )
            await conn.execute(insert(blob_chunks).values(blob_id=blob_id, seq=0, data=pieces.first))
        pieces.first = bytearray()  # not kept while the rest streams in
        try:
            count = 1
            async for piece in pieces.rest:
                async with self._chunk_transaction() as conn:
                    await conn.execute(insert(blob_chunks).values(blob_id=blob_id, seq=count, data=piece))
                del piece  # not kept while the next chunk fills
                count += 1
            info = pieces.meter.finish()
            async with self.engine.begin() as conn:
                await _drop_key(conn, key)
                await conn.execute(
                    update(blobs)
                    .where(blobs.c.id == blob_id)
                    .values(
                        key=key,
                        size_bytes=info.size,
                        sha256=info.sha256,
                        chunk_count=count,
                        stored_at=self.clock.now(),
                    )
                )
        except BaseException:
            # Shielded: a cancelled upload still removes what it wrote.
            await asyncio.shield(self._remove_ids([blob_id]))
            raise
        return info

    def _chunk_transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A transaction that stores part of a blob not visible yet: the last transaction, which
        makes the blob visible, commits synchronously and so flushes every chunk written before
        it; a crash before that leaves a pending blob that the sweeper removes."""
        return redoable_transaction(self.engine)

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        validate_key(key)
        async with reading(self.engine) as conn:
            found = (
                await conn.execute(select(blobs.c.id, blobs.c.chunk_count).where(blobs.c.key == key))
            ).first()
        if found is None:
            raise BlobNotFound(key, self.name)
        blob_id, count = found
        query = select(blob_chunks.c.data).where(blob_chunks.c.blob_id == blob_id)
        for seq in range(count):
            async with reading(self.engine) as conn:
                data = (await conn.execute(query.where(blob_chunks.c.seq == seq))).scalar()
            if data is None:  # deleted or replaced while being read
                raise BlobNotFound(key, self.name)
            if len(data) <= chunk_bytes:
                yield data
            else:
                view = memoryview(data)
                for start in range(0, len(data), chunk_bytes):
                    yield bytes(view[start : start + chunk_bytes])

    async def stat(self, key: str) -> BlobStat | None:
        validate_key(key)
        async with reading(self.engine) as conn:
            found = (
                await conn.execute(
                    select(blobs.c.size_bytes, blobs.c.sha256, blobs.c.stored_at).where(blobs.c.key == key)
                )
            ).first()
        return None if found is None else BlobStat(int(found[0]), found[1], found[2])

    async def delete(self, key: str) -> bool:
        validate_key(key)
        async with self.engine.begin() as conn:
            return await _drop_key(conn, key)

    async def list_blobs(self, prefix: str, older_than: datetime) -> AsyncIterator[list[BlobEntry]]:
        after = ""
        while True:
            async with reading(self.engine) as conn:
                rows = (
                    await conn.execute(
                        select(blobs.c.key, blobs.c.stored_at)
                        .where(
                            blobs.c.key.startswith(prefix, autoescape=True),
                            blobs.c.key > after,
                            blobs.c.stored_at < older_than,
                        )
                        .order_by(blobs.c.key)
                        .limit(LIST_PAGE_SIZE)
                    )
                ).all()
            if not rows:
                return
            yield [BlobEntry(key, stored_at) for key, stored_at in rows]
            after = rows[-1][0]

    async def remove_stale_uploads(self, older_than: datetime) -> int:
        async with reading(self.engine) as conn:
            stale = (
                await conn.execute(
                    select(blobs.c.id).where(blobs.c.key.is_(None), blobs.c.started_at < older_than)
                )
            ).scalars()
            blob_ids = list(stale)
        await self._remove_ids(blob_ids)
        return len(blob_ids)

    async def _remove_ids(self, blob_ids: list[str]) -> None:
        if not blob_ids:
            return
        async with self.engine.begin() as conn:
            # Chunks first and explicitly: no reliance on the connection enforcing the cascade.
            await conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id.in_(blob_ids)))
            await conn.execute(delete(blobs).where(blobs.c.id.in_(blob_ids)))


async def _drop_key(conn: AsyncConnection, key: str) -> bool:
    """Remove the blob stored under `key`, if any, with its chunks; True if there was one."""
    found = (await conn.execute(select(blobs.c.id).where(blobs.c.key == key))).scalar()
    if found is None:
        return False
    await conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id == found))
    await conn.execute(delete(blobs).where(blobs.c.id == found))
    return True
