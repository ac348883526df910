"""Which blobs files own: the queries that the orphan sweeper, migration and verification need.

These read every organization's files: they serve operators' tools and the leader's sweeper,
never a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading
from backburner.files.tables import files

PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class BlobReference:
    file_id: str
    organization_id: str
    file_name: str
    key: str
    size_bytes: int
    sha256: str


class BlobReferences:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def owned(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` that some file owns."""
        if not keys:
            return set()
        async with reading(self.engine) as conn:
            rows = await conn.execute(select(files.c.blob_key).where(files.c.blob_key.in_(list(keys))))
            return {key for (key,) in rows}

    async def totals(self) -> tuple[int, int]:
        """Files and the bytes of their blobs."""
        async with reading(self.engine) as conn:
            count, size = (
                await conn.execute(select(func.count(), func.coalesce(func.sum(files.c.size_bytes), 0)))
            ).one()
        return int(count), int(size)

    async def pages(self, page_size: int = PAGE_SIZE) -> AsyncIterator[list[BlobReference]]:
        """Every file's blob, in pages ordered by file id (one short query per page)."""
        after = ""
        query = select(
            files.c.id,
            files.c.organization_id,
            files.c.file_name,
            files.c.blob_key,
            files.c.size_bytes,
            files.c.sha256,
        ).order_by(files.c.id)
        while True:
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query.where(files.c.id > after).limit(page_size))).all()
            if not rows:
                return
            yield [BlobReference(*row) for row in rows]
            after = rows[-1][0]
