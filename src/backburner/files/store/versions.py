"""Versions: a file uploaded to replace another takes its place, atomically, when it completes.

A version's passages are stored as any file's are, but search leaves them out until the version
is COMPLETED (`searchable`). The transaction that completes it also removes the files it
supersedes, their passages with them, and bumps the source's passages version: a search sees the
old passages or the new ones, never both and never neither. A version that fails supersedes
nothing, and its passages are never searched.

The versions of one document share a lineage (the first version's id). When versions race, the
one that completes last wins: a completion removes every other COMPLETED file of its lineage and
every failed one uploaded before it; versions still in work are left alone and win in turn if
they complete. Completions of one lineage run one at a time (an advisory lock per lineage on
PostgreSQL, the single writer on SQLite), so two racing completions never both survive. A
replaced file deleted in the meantime is simply not there to remove: the version still completes.
"""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement, Select, and_, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.files.states import FileStatus
from backburner.files.store.records import FILE_COLUMNS, FileRecord
from backburner.files.store.sources import bump_passages_version
from backburner.files.tables import files, passages
from backburner.logs import log_event

log = logging.getLogger(__name__)

# The first key of the lineage locks: apart from every other advisory lock of the database.
LINEAGE_LOCK_CLASS = 0x6676  # "fv"
_LOCK_LINEAGE = text("SELECT pg_advisory_xact_lock(:lock_class, hashtext(:lineage_id))")


def lineage_of(file: FileRecord) -> str:
    return file.lineage_id or file.id


def searchable() -> ColumnElement[bool]:
    """On `files`: the files whose passages search reads (all but unfinished or failed versions)."""
    return or_(files.c.replaces_file_id.is_(None), files.c.status == FileStatus.COMPLETED.value)


def waiting_versions(organization_id: str, source_id: str) -> Select[tuple[str]]:
    """The ids of the source's versions whose passages search must leave out."""
    return select(files.c.id).where(
        files.c.organization_id == organization_id,
        files.c.source_id == source_id,
        files.c.replaces_file_id.is_not(None),
        files.c.status != FileStatus.COMPLETED.value,
    )


async def lock_lineage(conn: AsyncConnection, file: FileRecord) -> None:
    """First in a transaction that may complete `file`: completions of a lineage take turns, and
    each sees what the one before it committed."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_LINEAGE, {"lock_class": LINEAGE_LOCK_CLASS, "lineage_id": lineage_of(file)})


async def supersede(conn: AsyncConnection, file: FileRecord) -> list[FileRecord]:
    """In the transaction that moved `file` to COMPLETED (after `lock_lineage`): remove the files
    it takes the place of, with their passages. Returns the removed files (their blobs are left
    to the orphan sweeper)."""
    superseded = (
        select(files.c.id)
        .where(
            files.c.organization_id == file.organization_id,
            files.c.lineage_id == lineage_of(file),
            files.c.id != file.id,
            or_(
                files.c.status == FileStatus.COMPLETED.value,
                and_(files.c.status == FileStatus.ERROR.value, files.c.created_at <= file.created_at),
            ),
        )
        .order_by(files.c.id)
    )
    ids = list((await conn.execute(superseded)).scalars())
    removed: list[FileRecord] = []
    if ids:
        await conn.execute(delete(passages).where(passages.c.file_id.in_(ids)))
        rows = await conn.execute(delete(files).where(files.c.id.in_(ids)).returning(*FILE_COLUMNS))
        removed = [FileRecord.from_row(row) for row in rows]
        log_event(log, logging.INFO, "file.superseded", file_id=file.id, superseded=[r.id for r in removed])
    if removed or file.replaces_file_id is not None:
        # The version's passages become searchable now: cached vectors of the source are stale.
        await bump_passages_version(conn, file.source_id)
    return removed
