"""Passages: the chunks of a file with their vectors, written in lease-fenced batches."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Insert, func, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading
from backburner.files.states import FileStatus
from backburner.files.store.leases import held
from backburner.files.store.records import FileRecord, Lease, LeaseLost, PassageHit, PassageRow
from backburner.files.store.sources import bump_passages_version
from backburner.files.store.versions import lock_lineage, searchable, supersede
from backburner.files.tables import files, passage_vectors, passages, sources

VECTOR_READ_ROWS = 10_000
# Ids in one IN list, well within both databases' limits on parameters.
FILES_PER_READ = 500


@dataclass(frozen=True, slots=True)
class StoredVectors:
    ids: list[int]
    file_ids: list[str]
    vectors: list[bytes]  # float32, little-endian


# What a file's vectors of one model depend on (see `PassageStore.vector_files`).
VectorTag = tuple[int, str | None, int]


def _vectors_query(
    scope: list[ColumnElement[bool]], embedding_model: str, dimensions: int
) -> CompoundSelect[tuple[int, str, bytes]]:
    """(passage id, file id, vector) of `embedding_model` with `dimensions` floats, of the passages
    within `scope`: the file's own vector where the file was embedded with that model, the one a
    re-embedding made with it otherwise."""
    ingested = (
        select(passages.c.id, passages.c.file_id, passages.c.embedding)
        .join(files, files.c.id == passages.c.file_id)
        .where(
            *scope,
            files.c.embedding_model == embedding_model,
            searchable(),
            func.length(passages.c.embedding) == dimensions * 4,
        )
    )
    reembedded = (
        select(passages.c.id, passages.c.file_id, passage_vectors.c.embedding)
        .join(files, files.c.id == passages.c.file_id)
        .join(passage_vectors, passage_vectors.c.passage_id == passages.c.id)
        .where(
            *scope,
            passage_vectors.c.model == embedding_model,
            files.c.embedding_model != embedding_model,
            searchable(),
            func.length(passage_vectors.c.embedding) == dimensions * 4,
        )
    )
    return union_all(ingested, reembedded)


def _insert_skipping_stored(postgres: bool) -> Insert:
    """An INSERT of passages that skips a chunk index the file already has (a resumed file)."""
    insert = postgresql.insert if postgres else sqlite.insert
    return insert(passages).on_conflict_do_nothing(index_elements=["file_id", "chunk_index"])


class PassageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = _insert_skipping_stored(engine.dialect.name == "postgresql").returning(passages.c.id)

    async def stored_chunk_indexes(self, file_id: str) -> set[int]:
        async with reading(self.engine) as conn:
            result = await conn.execute(select(passages.c.chunk_index).where(passages.c.file_id == file_id))
            return {int(index) for (index,) in result}

    async def store_batch(
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
        file's last batch) the same UPDATE moves it to COMPLETED, and the file takes the place of
        the versions it supersedes (`versions.supersede`). Returns the new
        `chunks_embedded`; `embed_s` and `store_s` are the file's running totals before this batch.
        """
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
        started = time.perf_counter()
        try:
            async with self.engine.begin() as conn:
                if finish:  # first, before any row this transaction writes is held
                    await lock_lineage(conn, file)
                inserted = len((await conn.execute(self._insert, records)).all()) if records else 0
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
                if finish:  # EMBEDDING -> COMPLETED, as `LeaseStore.complete` does
                    progress.update(
                        status=FileStatus.COMPLETED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                row = (
                    await conn.execute(
                        update(files)
                        .where(*held(lease), files.c.status == FileStatus.EMBEDDING.value)
                        .values(**progress)
                        .returning(files.c.chunks_embedded)
                    )
                ).first()
                if row is None:
                    raise LeaseLost(lease.file_id, lease.owner)
                if inserted:
                    await bump_passages_version(conn, file.source_id)
                if finish:
                    await supersede(conn, file)
                return int(row.chunks_embedded)
        except IntegrityError:
            # The file deleted under the batch: its passages' foreign key refused them.
            if await self._file_exists(lease.file_id):
                raise
            raise LeaseLost(lease.file_id, lease.owner) from None

    async def _file_exists(self, file_id: str) -> bool:
        async with reading(self.engine) as conn:
            found = await conn.execute(select(files.c.id).where(files.c.id == file_id))
            return found.first() is not None

    async def vector_files(
        self, organization_id: str, source_id: str, embedding_model: str
    ) -> dict[str, VectorTag | None]:
        """Each file whose passages search reads, with a tag that changes whenever its vectors of
        `embedding_model` may have: its passages are only ever appended (each batch bumps
        `chunks_embedded` in its transaction) or removed with the file, and the vectors
        re-embedding made are removed at the source's next switch of model (`model_switches`).
        The tag is None for vectors a re-embedding may still be writing: those of another model
        than the file's while the source has not switched to `embedding_model`."""
        async with reading(self.engine) as conn:
            source = (
                await conn.execute(
                    select(sources.c.embedding_model, sources.c.model_switches).where(
                        sources.c.id == source_id
                    )
                )
            ).first()
            if source is None:
                return {}
            rows = await conn.execute(
                select(files.c.id, files.c.chunks_embedded, files.c.embedding_model).where(
                    files.c.organization_id == organization_id, files.c.source_id == source_id, searchable()
                )
            )
            settled = source.embedding_model == embedding_model
            return {
                row.id: (row.chunks_embedded, row.embedding_model, source.model_switches)
                if settled or row.embedding_model == embedding_model
                else None
                for row in rows
            }

    async def vectors(
        self,
        organization_id: str,
        source_id: str,
        embedding_model: str,
        dimensions: int,
        file_ids: Collection[str] | None = None,
    ) -> StoredVectors:
        """Every vector of the source (or of its `file_ids` only) made by `embedding_model` with
        `dimensions` floats, in bulk: those made at ingestion with that model, and those
        re-embedding made with it.

        A vector of another model, or of another size, is never read: it could not be compared;
        nor is one of a version that has not completed.
        """
        if file_ids is None:
            # The whole source, through the passages' index on it.
            scopes = [[passages.c.organization_id == organization_id, passages.c.source_id == source_id]]
        else:
            # Files by id, then their passages by file: SQLite would otherwise read the source's
            # index of passages whole and keep those files' rows.
            wanted = list(file_ids)
            scopes = [
                [
                    files.c.organization_id == organization_id,
                    files.c.source_id == source_id,
                    files.c.id.in_(wanted[i : i + FILES_PER_READ]),
                ]
                for i in range(0, len(wanted), FILES_PER_READ)
            ]
        queries = [_vectors_query(scope, embedding_model, dimensions) for scope in scopes]
        stored = StoredVectors([], [], [])
        async with reading(self.engine) as conn:
            for query in queries:
                result = await conn.stream(query.execution_options(yield_per=VECTOR_READ_ROWS))
                async for rows in result.partitions(VECTOR_READ_ROWS):
                    part_ids, part_files, part_vectors = zip(*rows, strict=True)
                    stored.ids.extend(part_ids)
                    stored.file_ids.extend(part_files)
                    stored.vectors.extend(part_vectors)
        return stored

    async def by_id(self, organization_id: str, passage_ids: Sequence[int]) -> dict[int, PassageHit]:
        async with reading(self.engine) as conn:
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
