"""The catalog of files: recording an upload, reading, listing, counting and deleting files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.keyset import Keyset
from backburner.db.transactions import reading
from backburner.files.states import FileStatus
from backburner.files.store.records import (
    FILE_COLUMNS,
    FileNotFound,
    FilePage,
    FileRecord,
    NewFile,
    TimeoutRule,
)
from backburner.files.store.sources import SourceStore, bump_passages_version
from backburner.files.store.timeouts import TimeoutStore
from backburner.files.store.versions import searchable
from backburner.files.tables import files, passages

FILE_ORDER = Keyset(files.c.created_at, files.c.id)


class FileCatalog:
    def __init__(self, engine: AsyncEngine, sources: SourceStore, timeouts: TimeoutStore) -> None:
        self.engine = engine
        self._sources = sources
        self._timeouts = timeouts

    async def create(self, new: NewFile, now: datetime) -> FileRecord:
        """Insert a PENDING file: the only way a file is ever PENDING."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(files)
                .values(
                    id=new.id,
                    organization_id=new.organization_id,
                    source_id=new.source_id,
                    file_name=new.file_name,
                    content_type=new.content_type,
                    size_bytes=new.size_bytes,
                    sha256=new.sha256,
                    blob_key=new.blob_key,
                    lineage_id=new.lineage_id or new.id,
                    replaces_file_id=new.replaces_file_id,
                    status=FileStatus.PENDING.value,
                    attempts=0,
                    chunks_embedded=0,
                    created_at=now,
                    updated_at=now,
                    last_progress_at=now,
                )
                .returning(*FILE_COLUMNS)
            )
            return FileRecord.from_row(result.one())

    async def find_duplicate(self, organization_id: str, source_id: str, sha256: str) -> FileRecord | None:
        """A file of the source with the same content that did not fail (a failed one may be retried)."""
        return await self._first(
            organization_id,
            source_id,
            (files.c.sha256 == sha256, files.c.status != FileStatus.ERROR.value),
            (files.c.created_at,),
        )

    async def find_by_name(self, organization_id: str, source_id: str, file_name: str) -> FileRecord | None:
        """The newest file of the source with this name; a version in waiting is not counted."""
        return await self._first(
            organization_id,
            source_id,
            (files.c.file_name == file_name, searchable()),
            (files.c.created_at.desc(), files.c.id.desc()),
        )

    async def _first(
        self,
        organization_id: str,
        source_id: str,
        conditions: tuple[ColumnElement[bool], ...],
        order: tuple[ColumnElement[Any], ...],
    ) -> FileRecord | None:
        """The source's first file by `order` among those meeting `conditions`."""
        query = (
            select(*FILE_COLUMNS)
            .where(files.c.organization_id == organization_id, files.c.source_id == source_id, *conditions)
            .order_by(*order)
            .limit(1)
        )
        async with reading(self.engine) as conn:
            row = (await conn.execute(query)).first()
        return FileRecord.from_row(row) if row is not None else None

    async def get(self, organization_id: str, file_id: str) -> FileRecord:
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*FILE_COLUMNS).where(
                        files.c.organization_id == organization_id, files.c.id == file_id
                    )
                )
            ).first()
        if row is None:
            raise FileNotFound(file_id)
        return FileRecord.from_row(row)

    async def page(
        self,
        organization_id: str,
        source_id: str,
        limit: int,
        after: str | None = None,
        *,
        timeouts: TimeoutRule | None = None,
    ) -> FilePage:
        """One page in upload order; `after` is the id of the last file of the previous page.

        With `timeouts`, every unfinished file of the source past its deadline is timed out
        first, in the same transaction. SourceNotFound for a source the organization lacks.
        """
        scope = [files.c.organization_id == organization_id, files.c.source_id == source_id]
        async with self.engine.begin() as conn:
            timed_out = (
                await self._timeouts.time_out(
                    timeouts.now,
                    timeouts.minutes,
                    timeouts.message,
                    organization_id=organization_id,
                    source_id=source_id,
                    conn=conn,
                )
                if timeouts is not None
                else []
            )
            rows = await FILE_ORDER.page(conn, select(*FILE_COLUMNS), scope, limit=limit, cursor=after)
            if not rows:  # an empty page is the only one that needs to ask
                await self._sources.get(organization_id, source_id, conn=conn)
        return FilePage([FileRecord.from_row(row) for row in rows], timed_out)

    async def count_by_status(self, organization_id: str | None = None) -> dict[FileStatus, int]:
        query = select(files.c.status, func.count()).group_by(files.c.status)
        if organization_id is not None:
            query = query.where(files.c.organization_id == organization_id)
        async with reading(self.engine) as conn:
            result = await conn.execute(query)
            counts = {status: 0 for status in FileStatus}
            for status, count in result:
                counts[FileStatus(status)] = int(count)
            return counts

    async def in_progress_page(
        self, organization_id: str, limit: int, offset: int
    ) -> tuple[list[FileRecord], int]:
        """Files being parsed or embedded, oldest first, and how many there are in all."""
        where = (
            files.c.organization_id == organization_id,
            files.c.status.in_([FileStatus.PARSING.value, FileStatus.EMBEDDING.value]),
        )
        async with reading(self.engine) as conn:
            total = (await conn.execute(select(func.count()).select_from(files).where(*where))).scalar_one()
            rows = await conn.execute(
                select(*FILE_COLUMNS)
                .where(*where)
                .order_by(files.c.created_at, files.c.id)
                .limit(limit)
                .offset(offset)
            )
            return [FileRecord.from_row(row) for row in rows], int(total)

    async def recent_errors(self, organization_id: str, limit: int) -> list[FileRecord]:
        query = (
            select(*FILE_COLUMNS)
            .where(files.c.organization_id == organization_id, files.c.status == FileStatus.ERROR.value)
            .order_by(files.c.updated_at.desc(), files.c.id)
            .limit(limit)
        )
        async with reading(self.engine) as conn:
            return [FileRecord.from_row(row) for row in await conn.execute(query)]

    async def delete(self, organization_id: str, file_id: str) -> FileRecord:
        """Remove the file and its passages; returns the removed row (its blob is the caller's)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(passages).where(
                    passages.c.organization_id == organization_id, passages.c.file_id == file_id
                )
            )
            row = (
                await conn.execute(
                    delete(files)
                    .where(files.c.organization_id == organization_id, files.c.id == file_id)
                    .returning(*FILE_COLUMNS)
                )
            ).first()
            if row is not None:
                await bump_passages_version(conn, row.source_id)
        if row is None:
            raise FileNotFound(file_id)
        return FileRecord.from_row(row)
