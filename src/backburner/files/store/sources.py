"""Sources: named collections of files, one namespace per organization."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.keyset import Keyset
from backburner.db.transactions import reading, reading_within
from backburner.files.store.records import DuplicateSource, SourceNotFound, SourceRecord
from backburner.files.tables import sources

SOURCE_ORDER = Keyset(sources.c.created_at, sources.c.id)


async def bump_passages_version(conn: AsyncConnection, source_id: str) -> None:
    """Within the transaction that writes or deletes the source's passages: instances holding
    the source's vectors see the change at their next search. Taken after the file's row, as every
    writer of passages does, so that two of them never wait on each other."""
    await conn.execute(
        update(sources)
        .where(sources.c.id == source_id)
        .values(passages_version=sources.c.passages_version + 1)
    )


class SourceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, organization_id: str, source_id: str, name: str, description: str | None, now: datetime
    ) -> SourceRecord:
        record = SourceRecord(source_id, organization_id, name, description, now)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(sources).values(
                        id=source_id,
                        organization_id=organization_id,
                        name=name,
                        description=description,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise DuplicateSource(name) from None
        return record

    async def page(
        self,
        organization_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> list[SourceRecord]:
        """Oldest first; `after` (a source id) continues after that source, `name` keeps one."""
        scope = [sources.c.organization_id == organization_id]
        query = select(sources)
        if name is not None:
            query = query.where(sources.c.name == name)
        async with reading(self.engine) as conn:
            rows = await SOURCE_ORDER.page(conn, query, scope, limit=limit, cursor=after)
        return [SourceRecord(**row._mapping) for row in rows]

    async def get(
        self, organization_id: str, source_id: str, *, conn: AsyncConnection | None = None
    ) -> SourceRecord:
        async with reading_within(self.engine, conn) as tx:
            row = (
                await tx.execute(
                    select(sources).where(
                        sources.c.organization_id == organization_id, sources.c.id == source_id
                    )
                )
            ).first()
        if row is None:
            raise SourceNotFound(source_id)
        return SourceRecord(**row._mapping)

    async def active_model(self, source_id: str) -> str | None:
        """The source's own embedding model; None: the deployment's configured one."""
        async with reading(self.engine) as conn:
            model: str | None = await conn.scalar(
                select(sources.c.embedding_model).where(sources.c.id == source_id)
            )
            return model
