"""The only SQL of file processing: sources, files, their leases and passages.

Every status change is a compare-and-set `UPDATE ... WHERE status IN (allowed) RETURNING`; an
UPDATE that matches nothing is diagnosed afterwards and raised as `IllegalTransition`,
`LeaseLost` or `FileNotFound`. A worker's writes also name its lease owner, which is unique per
claim, so a worker whose file was reclaimed, timed out or deleted cannot change it any more.
Decisions that depend on time take `now` from the caller; nothing here reads a clock.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Integer,
    LargeBinary,
    Row,
    Text,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.types import UTCDateTime
from backburner.files.states import NON_TERMINAL, TERMINAL, FileStatus, IllegalTransition, allowed_sources
from backburner.files.tables import files, passages, sources

_STATUS_BY_VALUE = {status.value: status for status in FileStatus}
_NON_TERMINAL_VALUES = sorted(s.value for s in NON_TERMINAL)
SEARCH_PARTITION_ROWS = 2000


class FileNotFound(LookupError):
    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        super().__init__(f"file {file_id} not found")

    def __reduce__(self) -> tuple[type[FileNotFound], tuple[str]]:  # it crosses from pool processes
        return FileNotFound, (self.file_id,)


class SourceNotFound(LookupError):
    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        super().__init__(f"source {source_id} not found")


class DuplicateSource(ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a source named {name!r} already exists")


class LeaseLost(Exception):
    """The worker no longer holds the file: reclaimed, finished elsewhere, timed out or deleted."""

    def __init__(self, file_id: str, owner: str) -> None:
        self.file_id = file_id
        self.owner = owner
        super().__init__(f"file {file_id}: lease {owner} is no longer held")

    def __reduce__(self) -> tuple[type[LeaseLost], tuple[str, str]]:  # it crosses from pool processes
        return LeaseLost, (self.file_id, self.owner)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SourceRecord:
    id: str
    organization_id: str
    name: str
    description: str | None
    created_at: datetime


def queued_seconds(created_at: datetime, started_at: datetime | None) -> float | None:
    """From upload to the first claim; None before it."""
    if started_at is None:
        return None
    # A claim's `now` is read before its transaction waits for the insert's: clamp at zero.
    return max(0.0, (started_at - created_at).total_seconds())


@dataclass(slots=True)  # not frozen: a frozen dataclass is ten times slower to build, and
class FileRecord:  # listings build thousands; treat it as a value all the same
    id: str
    organization_id: str
    source_id: str
    file_name: str
    content_type: str | None
    size_bytes: int
    sha256: str
    blob_key: str
    status: FileStatus
    error_message: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    last_progress_at: datetime | None
    total_chunks: int | None
    chunks_embedded: int
    embedding_model: str | None
    parse_seconds: float | None
    chunk_seconds: float | None
    embed_seconds: float | None
    store_seconds: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> FileRecord:
        """From a row (or a driver record) of `FILE_COLUMNS`, which are in field order."""
        record = cls(*cast("tuple[Any, ...]", row))
        record.status = _STATUS_BY_VALUE[record.status]  # a dict beats calling the enum
        return record


FILE_COLUMNS = tuple(files.c[f.name] for f in fields(FileRecord))


@dataclass(frozen=True, slots=True)
class NewFile:
    id: str
    organization_id: str
    source_id: str
    file_name: str
    content_type: str | None
    size_bytes: int
    sha256: str
    blob_key: str


@dataclass(frozen=True, slots=True)
class TimeoutRule:
    """When an unfinished file has run out of time, and what its error then says."""

    now: datetime
    minutes: float
    message: str


@dataclass(frozen=True, slots=True)
class FilePage:
    files: list[FileRecord]
    timed_out: list[str]  # ids of the files this read moved to ERROR


@dataclass(frozen=True, slots=True)
class Lease:
    """One claim of one file; `owner` is unique per claim."""

    file_id: str
    owner: str


@dataclass(frozen=True, slots=True)
class PassageRow:
    chunk_index: int
    text: str
    embedding: bytes


@dataclass(frozen=True, slots=True)
class PassageHit:
    passage_id: int
    file_id: str
    file_name: str
    chunk_index: int
    text: str


def timeout_cutoff(now: datetime, timeout_minutes: float) -> datetime:
    """Files created at or before this instant are timed out at `now`.

    The same rule as `states.is_timed_out` (deadline = created_at + timeout <= now), written as
    a bound on `created_at` so that one UPDATE applies it to any number of files.
    """
    return now - timedelta(minutes=timeout_minutes)


CURSOR_FILE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def encode_cursor(record: FileRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, file_id = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(f"invalid cursor {cursor!r}") from None
    if created_at.tzinfo is None or CURSOR_FILE_ID.fullmatch(file_id) is None:
        raise InvalidCursor(f"invalid cursor {cursor!r}")
    try:
        created_at = created_at.astimezone(UTC)  # an offset may carry it past year 1 or 9999
    except OverflowError:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from None
    return created_at, file_id


# The lease is checked (and the file row locked) first; nothing is inserted unless it is held.
# `store_seconds` adds this statement's own time so far, so that the last batch's is counted.
_PG_STORE_BATCH = text(
    """
    WITH held AS (
        SELECT id FROM files
        WHERE id = :file_id AND lease_owner = :owner AND status = 'embedding'
        FOR UPDATE
    ), inserted AS (
        INSERT INTO passages (organization_id, source_id, file_id, chunk_index, text, embedding, created_at)
        SELECT :organization_id, :source_id, :file_id, batch.chunk_index, batch.text, batch.embedding, :now
        FROM unnest(:chunk_indexes, :texts, :embeddings) AS batch (chunk_index, text, embedding)
        WHERE EXISTS (SELECT 1 FROM held)
        ON CONFLICT (file_id, chunk_index) DO NOTHING
        RETURNING 1
    )
    UPDATE files SET
        chunks_embedded = files.chunks_embedded + (SELECT count(*) FROM inserted),
        last_progress_at = :now,
        heartbeat_at = :now,
        updated_at = :now,
        embed_seconds = :embed_s,
        store_seconds = :store_s + extract(epoch FROM clock_timestamp() - statement_timestamp()),
        lease_expires_at = CASE WHEN :finish THEN NULL ELSE :lease_expires_at END,
        lease_owner = CASE WHEN :finish THEN NULL ELSE files.lease_owner END,
        status = CASE WHEN :finish THEN 'completed' ELSE files.status END,
        finished_at = CASE WHEN :finish THEN :now ELSE files.finished_at END
    FROM held
    WHERE files.id = held.id
    RETURNING files.chunks_embedded
    """
).bindparams(
    bindparam("chunk_indexes", type_=ARRAY(Integer)),
    bindparam("texts", type_=ARRAY(Text)),
    bindparam("embeddings", type_=ARRAY(LargeBinary)),
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease_expires_at", type_=UTCDateTime()),
    bindparam("embed_s", type_=Float()),
    bindparam("store_s", type_=Float()),
    bindparam("finish", type_=Boolean()),
)


_PG_PAGE = (
    f"SELECT {', '.join(column.name for column in FILE_COLUMNS)} FROM files"
    " WHERE organization_id = $1 AND source_id = $2{} ORDER BY created_at, id LIMIT $3"
)
_PG_FIRST_PAGE = _PG_PAGE.format("")
_PG_NEXT_PAGE = _PG_PAGE.format(" AND (created_at, id) > ($4, $5)")


class FileStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def _begin(self, conn: AsyncConnection | None) -> AbstractAsyncContextManager[AsyncConnection]:
        """The caller's transaction (a fenced one, for the sweeper) or a new one."""
        return nullcontext(conn) if conn is not None else self.engine.begin()

    # --- sources ------------------------------------------------------------------------------

    async def create_source(
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

    async def list_sources(
        self,
        organization_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> list[SourceRecord]:
        """Oldest first; `after` (a source id) continues after that source, `name` keeps one."""
        query = select(sources).where(sources.c.organization_id == organization_id)
        if name is not None:
            query = query.where(sources.c.name == name)
        async with self.engine.connect() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(sources.c.created_at).where(
                            sources.c.organization_id == organization_id, sources.c.id == after
                        )
                    )
                ).scalar_one_or_none()
                if cursor is None:
                    raise InvalidCursor(f"no source {after!r} to continue after")
                query = query.where(
                    or_(
                        sources.c.created_at > cursor,
                        and_(sources.c.created_at == cursor, sources.c.id > after),
                    )
                )
            query = query.order_by(sources.c.created_at, sources.c.id)
            if limit is not None:
                query = query.limit(limit)
            result = await conn.execute(query)
            return [SourceRecord(**row._mapping) for row in result]

    async def get_source(
        self, organization_id: str, source_id: str, *, conn: AsyncConnection | None = None
    ) -> SourceRecord:
        async with self._begin(conn) as tx:
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

    async def find_source_by_name(self, organization_id: str, name: str) -> SourceRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(sources).where(
                        sources.c.organization_id == organization_id, sources.c.name == name
                    )
                )
            ).first()
        return SourceRecord(**row._mapping) if row is not None else None

    # --- files --------------------------------------------------------------------------------

    async def create_file(self, new: NewFile, now: datetime) -> FileRecord:
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
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*FILE_COLUMNS)
                    .where(
                        files.c.organization_id == organization_id,
                        files.c.source_id == source_id,
                        files.c.sha256 == sha256,
                        files.c.status != FileStatus.ERROR.value,
                    )
                    .order_by(files.c.created_at)
                    .limit(1)
                )
            ).first()
        return FileRecord.from_row(row) if row is not None else None

    async def get_file(self, organization_id: str, file_id: str) -> FileRecord:
        async with self.engine.connect() as conn:
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

    async def list_files(
        self,
        organization_id: str,
        source_id: str,
        limit: int,
        after: str | None = None,
        *,
        timeouts: TimeoutRule | None = None,
    ) -> FilePage:
        """One page in upload order; `after` is the cursor of the last file of the previous page.

        With `timeouts`, every unfinished file of the source past its deadline is timed out
        first, in the same transaction. SourceNotFound for a source the organization lacks.
        """
        cursor = decode_cursor(after) if after is not None else None  # refused before any work
        async with self.engine.begin() as conn:
            timed_out = (
                await self.time_out(
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
            if cursor is not None and not await self._cursor_known(conn, organization_id, source_id, cursor):
                await self.get_source(organization_id, source_id, conn=conn)  # 404 before 400
                raise InvalidCursor(f"the cursor {after!r} names no file of this source to continue after")
            page = await self._page(conn, organization_id, source_id, limit, cursor)
            if not page:  # an empty page is the only one that needs to ask
                await self.get_source(organization_id, source_id, conn=conn)
        return FilePage(page, timed_out)

    @staticmethod
    async def _cursor_known(
        conn: AsyncConnection, organization_id: str, source_id: str, cursor: tuple[datetime, str]
    ) -> bool:
        """Whether the cursor's file is one of this source's, created when the cursor says."""
        created_at, file_id = cursor
        found = (
            await conn.execute(
                select(files.c.created_at).where(
                    files.c.id == file_id,
                    files.c.organization_id == organization_id,
                    files.c.source_id == source_id,
                )
            )
        ).scalar_one_or_none()
        return found is not None and found == created_at

    async def _page(
        self,
        conn: AsyncConnection,
        organization_id: str,
        source_id: str,
        limit: int,
        cursor: tuple[datetime, str] | None,
    ) -> list[FileRecord]:
        if self._postgres:
            # Straight from the driver's records: SQLAlchemy's rows would cost a tenth of the
            # time of a 1,000-file page.
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            if cursor is None:
                records = await driver.fetch(_PG_FIRST_PAGE, organization_id, source_id, limit)
            else:
                records = await driver.fetch(_PG_NEXT_PAGE, organization_id, source_id, limit, *cursor)
            return [FileRecord.from_row(record) for record in records]
        query = select(*FILE_COLUMNS).where(
            files.c.organization_id == organization_id, files.c.source_id == source_id
        )
        if cursor is not None:
            created_at, file_id = cursor
            query = query.where(
                or_(
                    files.c.created_at > created_at,
                    and_(files.c.created_at == created_at, files.c.id > file_id),
                )
            )
        query = query.order_by(files.c.created_at, files.c.id).limit(limit)
        return [FileRecord.from_row(row) for row in (await conn.execute(query)).all()]

    async def count_by_status(self, organization_id: str | None = None) -> dict[FileStatus, int]:
        query = select(files.c.status, func.count()).group_by(files.c.status)
        if organization_id is not None:
            query = query.where(files.c.organization_id == organization_id)
        async with self.engine.connect() as conn:
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
        async with self.engine.connect() as conn:
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
        async with self.engine.connect() as conn:
            return [FileRecord.from_row(row) for row in await conn.execute(query)]

    async def delete_file(self, organization_id: str, file_id: str) -> FileRecord:
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
        if row is None:
            raise FileNotFound(file_id)
        return FileRecord.from_row(row)

    # --- transitions --------------------------------------------------------------------------

    async def transition(
        self,
        file_id: str,
        to: FileStatus,
        now: datetime,
        *,
        error_message: str | None = None,
        owner: str | None = None,
        organization_id: str | None = None,
        values: dict[str, Any] | None = None,
        conn: AsyncConnection | None = None,
    ) -> FileRecord:
        """Compare-and-set `file_id` to `to`; `owner` fences the write to the lease holder.

        Raises `IllegalTransition` (nothing changed) when the file's status does not allow it,
        `LeaseLost` when `owner` no longer holds it, `FileNotFound` when it does not exist.
        """
        if to is FileStatus.ERROR and not (error_message and error_message.strip()):
            raise ValueError(f"file {file_id}: moving to error needs a message")
        if to is not FileStatus.ERROR and error_message is not None:
            raise ValueError(f"file {file_id}: an error message is only for the error status")
        conditions = [files.c.id == file_id, files.c.status.in_(sorted(s.value for s in allowed_sources(to)))]
        if owner is not None:
            conditions.append(files.c.lease_owner == owner)
        if organization_id is not None:
            conditions.append(files.c.organization_id == organization_id)
        changes: dict[str, Any] = {
            "status": to.value,
            "updated_at": now,
            "last_progress_at": now,
            **(values or {}),
        }
        if to is FileStatus.ERROR:
            changes["error_message"] = error_message
        if to in TERMINAL:
            changes.update(lease_owner=None, lease_expires_at=None, finished_at=now)
        async with self._begin(conn) as tx:
            row = (
                await tx.execute(update(files).where(*conditions).values(**changes).returning(*FILE_COLUMNS))
            ).first()
            if row is not None:
                return FileRecord.from_row(row)
            current = (
                await tx.execute(
                    select(files.c.status, files.c.lease_owner, files.c.organization_id).where(
                        files.c.id == file_id
                    )
                )
            ).first()
        if current is None or (organization_id is not None and current.organization_id != organization_id):
            raise FileNotFound(file_id)
        status = FileStatus(current.status)
        if status not in allowed_sources(to):
            raise IllegalTransition(file_id, status, to)
        assert owner is not None  # the status allowed it, so only the owner condition failed
        raise LeaseLost(file_id, owner)

    async def fail(
        self,
        file_id: str,
        message: str,
        now: datetime,
        *,
        owner: str | None = None,
        organization_id: str | None = None,
    ) -> FileRecord:
        return await self.transition(
            file_id,
            FileStatus.ERROR,
            now,
            error_message=message,
            owner=owner,
            organization_id=organization_id,
        )

    # --- leases -------------------------------------------------------------------------------

    async def claim(
        self, owner: str, now: datetime, *, lease_s: float, max_attempts: int, timeout_minutes: float
    ) -> FileRecord | None:
        """Take the oldest claimable file: PENDING, released, or whose lease expired.

        A PENDING file moves to PARSING in the same compare-and-set UPDATE (the claim is the
        start of its parsing); a reclaimed file keeps its status. Files past their deadline or
        out of attempts are left to the sweeper, which fails them.
        PostgreSQL skips rows another claim has locked; SQLite's BEGIN IMMEDIATE serialises
        claims, so the UPDATE with its sub-select is atomic there.
        """
        candidate = (
            select(files.c.id)
            .where(
                files.c.status.in_(_NON_TERMINAL_VALUES),
                or_(files.c.lease_owner.is_(None), files.c.lease_expires_at < now),
                files.c.attempts < max_attempts,
                files.c.created_at > timeout_cutoff(now, timeout_minutes),
            )
            .order_by(files.c.created_at)
            .limit(1)
        )
        if self._postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        statement = (
            update(files)
            .where(files.c.id == candidate.scalar_subquery())
            .values(
                status=case(
                    (files.c.status == FileStatus.PENDING.value, FileStatus.PARSING.value),
                    else_=files.c.status,
                ),
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                heartbeat_at=now,
                last_progress_at=now,
                attempts=files.c.attempts + 1,
                started_at=func.coalesce(files.c.started_at, now),
                updated_at=now,
            )
            .returning(*FILE_COLUMNS)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return FileRecord.from_row(row) if row is not None else None

    def _held(self, lease: Lease) -> list[ColumnElement[bool]]:
        return [
            files.c.id == lease.file_id,
            files.c.lease_owner == lease.owner,
            files.c.status.in_(_NON_TERMINAL_VALUES),
        ]

    async def heartbeat(self, lease: Lease, now: datetime, lease_s: float) -> datetime | None:
        """Renew the lease. Returns the file's last progress (a pool process may be the one making
        it), or None when the lease is no longer held (the worker must stop)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(files)
                    .where(*self._held(lease))
                    .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                    .returning(files.c.last_progress_at)
                )
            ).first()
        if row is None:
            return None
        last_progress: datetime | None = row.last_progress_at
        return last_progress or now

    async def release(self, lease: Lease, now: datetime, *, count_attempt: bool = True) -> bool:
        """Give the file back so any worker can claim it at once (shutdown, a failed attempt).

        A release on shutdown does not count as an attempt: the work was stopped, not failed.
        """
        changes: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        if not count_attempt:
            changes["attempts"] = files.c.attempts - 1
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(files).where(*self._held(lease)).values(**changes).returning(files.c.id)
                )
            ).first()
        return row is not None

    async def start_embedding(
        self,
        lease: Lease,
        now: datetime,
        *,
        total_chunks: int,
        embedding_model: str,
        parse_s: float,
        chunk_s: float,
    ) -> FileRecord:
        """PARSING -> EMBEDDING with the chunk count; for a resumed EMBEDDING file, the same figures."""
        values = {
            "total_chunks": total_chunks,
            "embedding_model": embedding_model,
            "parse_seconds": parse_s,
            "chunk_seconds": chunk_s,
        }
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(files)
                    .where(*self._held(lease), files.c.status == FileStatus.EMBEDDING.value)
                    .values(**values, updated_at=now)
                    .returning(*FILE_COLUMNS)
                )
            ).first()
            if row is not None:
                return FileRecord.from_row(row)
            return await self.transition(
                lease.file_id, FileStatus.EMBEDDING, now, owner=lease.owner, values=values, conn=conn
            )

    async def stored_chunk_indexes(self, file_id: str) -> set[int]:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(passages.c.chunk_index).where(passages.c.file_id == file_id))
            return {int(index) for (index,) in result}

    async def store_passages(
        self,
        lease: Lease,
        file: FileRecord,
        rows: Sequence[PassageRow],
        now: datetime,
        *,
        lease_s: float,
        embed_s: float,
        store_s: float,
        finish: bool = False,
    ) -> int:
        """Insert a batch of passages (a stored chunk index is skipped) and advance the progress.

        One transaction: the file's UPDATE, fenced by the lease and the EMBEDDING status, comes
        after the INSERT, so a worker that lost its file rolls its batch back. With `finish` (the
        file's last batch) the same UPDATE moves it to COMPLETED, saving a round trip per file.
        Returns the new `chunks_embedded`; `embed_s` and `store_s` are the file's running totals
        before this batch.
        """
        if self._postgres:
            return await self._store_passages_postgres(
                lease, file, rows, now, lease_s=lease_s, embed_s=embed_s, store_s=store_s, finish=finish
            )
        records = [
            {
                "organization_id": file.organization_id,
                "source_id": file.source_id,
                "file_id": file.id,
                "chunk_index": row.chunk_index,
                "text": row.text,
                "embedding": row.embedding,
                "created_at": now,
            }
            for row in rows
        ]
        statement = (
            sqlite_insert(passages)
            .on_conflict_do_nothing(index_elements=["file_id", "chunk_index"])
            .returning(passages.c.id)
        )
        started = time.perf_counter()
        try:
            async with self.engine.begin() as conn:
                inserted = len((await conn.execute(statement, records)).all()) if records else 0
                progress: dict[str, Any] = {
                    "chunks_embedded": files.c.chunks_embedded + inserted,
                    "last_progress_at": now,
                    "heartbeat_at": now,
                    "lease_expires_at": now + timedelta(seconds=lease_s),
                    "embed_seconds": embed_s,
                    # This batch's own time so far counts too: the last batch's is not recorded
                    # anywhere else.
                    "store_seconds": store_s + (time.perf_counter() - started),
                    "updated_at": now,
                }
                if finish:  # EMBEDDING -> COMPLETED, as `complete` does
                    progress.update(
                        status=FileStatus.COMPLETED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                row = (
                    await conn.execute(
                        update(files)
                        .where(*self._held(lease), files.c.status == FileStatus.EMBEDDING.value)
                        .values(**progress)
                        .returning(files.c.chunks_embedded)
                    )
                ).first()
                if row is None:
                    raise LeaseLost(lease.file_id, lease.owner)
                return int(row.chunks_embedded)
        except IntegrityError:
            # The file deleted under the batch: its passages' foreign key refused them.
            if await self._exists(lease.file_id):
                raise
            raise LeaseLost(lease.file_id, lease.owner) from None

    async def _store_passages_postgres(
        self,
        lease: Lease,
        file: FileRecord,
        rows: Sequence[PassageRow],
        now: datetime,
        *,
        lease_s: float,
        embed_s: float,
        store_s: float,
        finish: bool,
    ) -> int:
        """`store_passages` in one statement: the batch travels as three arrays, and the lease
        check, the INSERT and the progress UPDATE run together (a third of the client's work of
        a multi-row INSERT, and one round trip)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    _PG_STORE_BATCH,
                    {
                        "file_id": file.id,
                        "owner": lease.owner,
                        "organization_id": file.organization_id,
                        "source_id": file.source_id,
                        "chunk_indexes": [r.chunk_index for r in rows],
                        "texts": [r.text for r in rows],
                        "embeddings": [r.embedding for r in rows],
                        "now": now,
                        "lease_expires_at": now + timedelta(seconds=lease_s),
                        "embed_s": embed_s,
                        "store_s": store_s,
                        "finish": finish,
                    },
                )
            ).first()
        if row is None:
            raise LeaseLost(lease.file_id, lease.owner)
        return int(row.chunks_embedded)

    async def _exists(self, file_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(select(files.c.id).where(files.c.id == file_id))
            return found.first() is not None

    async def complete(self, lease: Lease, now: datetime, *, embed_s: float, store_s: float) -> FileRecord:
        return await self.transition(
            lease.file_id,
            FileStatus.COMPLETED,
            now,
            owner=lease.owner,
            values={"embed_seconds": embed_s, "store_seconds": store_s},
        )

    # --- bulk timeouts and the sweeper ------------------------------------------------------

    async def time_out(
        self,
        now: datetime,
        timeout_minutes: float,
        message: str,
        *,
        organization_id: str | None = None,
        source_id: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[str]:
        """Move every unfinished file past its deadline to ERROR in ONE statement; returns their ids.

        Scoped to one source for a listing, or to every file for the sweeper.
        """
        conditions = [
            files.c.status.in_(_NON_TERMINAL_VALUES),
            files.c.created_at <= timeout_cutoff(now, timeout_minutes),
        ]
        if organization_id is not None:
            conditions.append(files.c.organization_id == organization_id)
        if source_id is not None:
            conditions.append(files.c.source_id == source_id)
        return await self._fail_where(conditions, message, now, conn)

    async def fail_exhausted(
        self, now: datetime, max_attempts: int, message: str, *, conn: AsyncConnection | None = None
    ) -> list[str]:
        """Fail files that used every attempt and whose last worker is gone."""
        conditions = [
            files.c.status.in_(_NON_TERMINAL_VALUES),
            files.c.attempts >= max_attempts,
            or_(files.c.lease_owner.is_(None), files.c.lease_expires_at < now),
        ]
        return await self._fail_where(conditions, message, now, conn)

    async def release_expired(self, now: datetime, *, conn: AsyncConnection | None = None) -> list[str]:
        """Drop the leases of workers that stopped heartbeating, so the files show as unowned."""
        async with self._begin(conn) as tx:
            result = await tx.execute(
                update(files)
                .where(
                    files.c.status.in_(_NON_TERMINAL_VALUES),
                    files.c.lease_owner.is_not(None),
                    files.c.lease_expires_at < now,
                )
                .values(lease_owner=None, lease_expires_at=None, updated_at=now)
                .returning(files.c.id)
            )
            return [file_id for (file_id,) in result]

    async def reclaim_stalled(
        self,
        now: datetime,
        stall_minutes: float,
        max_attempts: int,
        message: str,
        *,
        conn: AsyncConnection | None = None,
    ) -> tuple[list[str], list[str]]:
        """Files held by a worker that made no progress for the stall timeout: taken from the
        worker (released for another claim), or failed when no attempt is left.

        Returns (released ids, failed ids).
        """
        stalled = [
            files.c.status.in_(_NON_TERMINAL_VALUES),
            files.c.lease_owner.is_not(None),
            files.c.last_progress_at <= now - timedelta(minutes=stall_minutes),
        ]
        async with self._begin(conn) as tx:
            failed = await self._fail_where([*stalled, files.c.attempts >= max_attempts], message, now, tx)
            result = await tx.execute(
                update(files)
                .where(*stalled, files.c.attempts < max_attempts)
                .values(lease_owner=None, lease_expires_at=None, updated_at=now)
                .returning(files.c.id)
            )
            released = [file_id for (file_id,) in result]
        return released, failed

    async def _fail_where(
        self,
        conditions: Iterable[ColumnElement[bool]],
        message: str,
        now: datetime,
        conn: AsyncConnection | None,
    ) -> list[str]:
        async with self._begin(conn) as tx:
            result = await tx.execute(
                update(files)
                .where(*conditions)
                .values(
                    status=FileStatus.ERROR.value,
                    error_message=message,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
                .returning(files.c.id)
            )
            return [file_id for (file_id,) in result]

    # --- search -------------------------------------------------------------------------------

    @asynccontextmanager
    async def passage_vectors(
        self, organization_id: str, source_id: str, embedding_model: str
    ) -> AsyncIterator[AsyncIterator[Sequence[Any]]]:
        """(id, embedding) of the source's passages made by `embedding_model`, in partitions."""
        query = (
            select(passages.c.id, passages.c.embedding)
            .join(files, files.c.id == passages.c.file_id)
            .where(
                passages.c.organization_id == organization_id,
                passages.c.source_id == source_id,
                files.c.embedding_model == embedding_model,
            )
        )
        async with self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=SEARCH_PARTITION_ROWS))
            yield result.partitions(SEARCH_PARTITION_ROWS)

    async def passages_by_id(self, organization_id: str, passage_ids: Sequence[int]) -> dict[int, PassageHit]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                select(
                    passages.c.id,
                    passages.c.file_id,
                    files.c.file_name,
                    passages.c.chunk_index,
                    passages.c.text,
                )
                .join(files, files.c.id == passages.c.file_id)
                .where(passages.c.organization_id == organization_id, passages.c.id.in_(passage_ids))
            )
            return {
                row.id: PassageHit(row.id, row.file_id, row.file_name, row.chunk_index, row.text)
                for row in result
            }
