"""Re-embedding: the job of each source, its chunks claimed with leases, the vectors it writes and
the switch of the source's active model.

A chunk is the passages whose ids fall in one bucket of `CHUNK_PASSAGES` ids. A passage needs the
target model's vector unless it was ingested with that model or has one in `passage_vectors`; a
chunk is done once none of its passages needs one, so a chunk written and then lost to a
SIGKILL is never embedded twice, and passages added during the job (new files ingested with the
old model) fall into chunks of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Join, Row, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading
from backburner.files.states import FileStatus
from backburner.files.store.records import SourceNotFound
from backburner.files.tables import files, passage_vectors, passages, reembed_leases, source_reembeds, sources

CHUNK_PASSAGES = 64


class ReembedStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class ReembedJob:
    source_id: str
    organization_id: str
    model: str
    from_model: str
    status: ReembedStatus
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChunkLease:
    source_id: str
    bucket: int
    owner: str


@dataclass(frozen=True, slots=True)
class PassageText:
    id: int
    text: str


class ReembedRunning(Exception):
    def __init__(self, job: ReembedJob) -> None:
        self.job = job
        super().__init__(f"source {job.source_id} is already being re-embedded to {job.model!r}")


class ChunkLeaseLost(Exception):
    def __init__(self, lease: ChunkLease) -> None:
        super().__init__(f"source {lease.source_id}: chunk {lease.bucket} is no longer held by {lease.owner}")


def _job(row: Row[Any]) -> ReembedJob:
    mapping = dict(row._mapping)
    mapping["status"] = ReembedStatus(mapping["status"])
    return ReembedJob(**mapping)


def lacks_vector(source_id: str, model: str) -> ColumnElement[bool]:
    """Passages of the source (joined with their file) without a vector of `model`."""
    return and_(
        passages.c.source_id == source_id,
        or_(files.c.embedding_model.is_(None), files.c.embedding_model != model),
        ~exists().where(passage_vectors.c.passage_id == passages.c.id, passage_vectors.c.model == model),
    )


def _passages_of_files() -> Join:
    return passages.join(files, files.c.id == passages.c.file_id)


class ReembedStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        self._upsert = postgresql.insert if postgres else sqlite.insert

    # --- jobs -----------------------------------------------------------------------------------

    async def start(
        self, organization_id: str, source_id: str, model: str, from_model: str, now: datetime
    ) -> ReembedJob:
        """The source's new job, replacing a finished one; `ReembedRunning` if one runs."""
        values = {
            "organization_id": organization_id,
            "model": model,
            "from_model": from_model,
            "status": ReembedStatus.RUNNING.value,
            "created_at": now,
            "finished_at": None,
        }
        try:
            async with self.engine.begin() as conn:
                replaced = await conn.execute(
                    update(source_reembeds)
                    .where(
                        source_reembeds.c.source_id == source_id,
                        source_reembeds.c.status != ReembedStatus.RUNNING.value,
                    )
                    .values(**values)
                )
                if replaced.rowcount == 0:
                    await conn.execute(insert(source_reembeds).values(source_id=source_id, **values))
        except IntegrityError:
            running = await self.get(organization_id, source_id)
            if running is None:  # the source was deleted meanwhile
                raise
            raise ReembedRunning(running) from None
        return ReembedJob(source_id, organization_id, model, from_model, ReembedStatus.RUNNING, now, None)

    async def get(self, organization_id: str, source_id: str) -> ReembedJob | None:
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(source_reembeds).where(
                        source_reembeds.c.organization_id == organization_id,
                        source_reembeds.c.source_id == source_id,
                    )
                )
            ).first()
        return _job(row) if row is not None else None

    async def with_active_model(
        self, organization_id: str, source_id: str
    ) -> tuple[str | None, ReembedJob | None]:
        """The source's active model and its latest job, read in one statement so that they
        agree (a switch changes both in one transaction); SourceNotFound if there is no source."""
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(sources.c.embedding_model.label("active_model"), source_reembeds)
                    .select_from(
                        sources.outerjoin(source_reembeds, source_reembeds.c.source_id == sources.c.id)
                    )
                    .where(sources.c.organization_id == organization_id, sources.c.id == source_id)
                )
            ).first()
        if row is None:
            raise SourceNotFound(source_id)
        job = None
        if row.status is not None:
            fields = {name: getattr(row, name) for name in ReembedJob.__slots__}
            job = ReembedJob(**fields | {"status": ReembedStatus(row.status)})
        return row.active_model, job

    async def running(self) -> list[ReembedJob]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(source_reembeds)
                .where(source_reembeds.c.status == ReembedStatus.RUNNING.value)
                .order_by(source_reembeds.c.created_at)
            )
            return [_job(row) for row in rows]

    # --- counts ---------------------------------------------------------------------------------

    async def lacking(self, source_id: str, model: str) -> tuple[int, int]:
        """(passages of the source without a vector of `model`, their characters)."""
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(func.length(passages.c.text)), 0))
                    .select_from(_passages_of_files())
                    .where(lacks_vector(source_id, model))
                )
            ).one()
        return int(row[0]), int(row[1])

    async def passage_count(self, source_id: str) -> int:
        async with reading(self.engine) as conn:
            found = await conn.scalar(
                select(func.count()).select_from(passages).where(passages.c.source_id == source_id)
            )
        return int(found or 0)

    # --- chunks ---------------------------------------------------------------------------------

    async def open_chunks(self, source_id: str, model: str, limit: int) -> list[int]:
        """Buckets that still have passages without a vector of `model`, lowest first."""
        bucket = (passages.c.id // CHUNK_PASSAGES).label("bucket")
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(bucket)
                .select_from(_passages_of_files())
                .where(lacks_vector(source_id, model))
                .group_by(bucket)
                .order_by(bucket)
                .limit(limit)
            )
            return [int(b) for (b,) in rows]

    async def claim(
        self, source_id: str, bucket: int, owner: str, now: datetime, lease_s: float
    ) -> ChunkLease | None:
        """The chunk's lease if it was free or its holder's lease expired."""
        expires = now + timedelta(seconds=lease_s)
        statement = (
            self._upsert(reembed_leases)
            .values(source_id=source_id, bucket=bucket, owner=owner, expires_at=expires)
            .on_conflict_do_update(
                index_elements=["source_id", "bucket"],
                set_={"owner": owner, "expires_at": expires},
                where=reembed_leases.c.expires_at < now,
            )
            .returning(reembed_leases.c.owner)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return ChunkLease(source_id, bucket, owner) if row is not None else None

    async def chunk_passages(self, lease: ChunkLease, model: str) -> list[PassageText]:
        first = lease.bucket * CHUNK_PASSAGES
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(passages.c.id, passages.c.text)
                .select_from(_passages_of_files())
                .where(
                    lacks_vector(lease.source_id, model),
                    passages.c.id >= first,
                    passages.c.id < first + CHUNK_PASSAGES,
                )
                .order_by(passages.c.id)
            )
            return [PassageText(int(row.id), row.text) for row in rows]

    async def store_vectors(
        self,
        lease: ChunkLease,
        organization_id: str,
        model: str,
        vectors: Sequence[tuple[int, bytes]],
        now: datetime,
    ) -> None:
        """One transaction, fenced by the chunk's lease: a worker whose lease was taken over
        writes nothing. A passage deleted meanwhile (its file was) refuses the whole chunk with
        an IntegrityError; the chunk is claimed again without it."""
        async with self.engine.begin() as conn:
            held = await conn.execute(
                delete(reembed_leases)
                .where(
                    reembed_leases.c.source_id == lease.source_id,
                    reembed_leases.c.bucket == lease.bucket,
                    reembed_leases.c.owner == lease.owner,
                )
                .returning(reembed_leases.c.bucket)
            )
            if held.first() is None:
                raise ChunkLeaseLost(lease)
            rows = [
                {
                    "passage_id": passage_id,
                    "model": model,
                    "organization_id": organization_id,
                    "source_id": lease.source_id,
                    "embedding": vector,
                    "created_at": now,
                }
                for passage_id, vector in vectors
            ]
            if rows:
                await conn.execute(
                    self._upsert(passage_vectors).on_conflict_do_nothing(
                        index_elements=["passage_id", "model"]
                    ),
                    rows,
                )

    async def release(self, lease: ChunkLease) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(reembed_leases).where(
                    reembed_leases.c.source_id == lease.source_id,
                    reembed_leases.c.bucket == lease.bucket,
                    reembed_leases.c.owner == lease.owner,
                )
            )

    # --- the switch -----------------------------------------------------------------------------

    async def switch(self, job: ReembedJob, now: datetime) -> bool:
        """Make `job.model` the source's active model, atomically, if every passage has its
        vector and no file of the source is being embedded with another model. Only one caller
        ever switches a job (compare-and-set on its status). The source's `passages_version` is
        bumped so that every instance reloads its vectors; vectors of other models made by
        re-embedding are removed (those made at ingestion stay in `passages.embedding`)."""
        in_flight = exists().where(
            files.c.source_id == job.source_id,
            files.c.status.in_([FileStatus.PARSING.value, FileStatus.EMBEDDING.value]),
            or_(files.c.embedding_model.is_(None), files.c.embedding_model != job.model),
        )
        lacking = exists(
            select(passages.c.id)
            .select_from(_passages_of_files())
            .where(lacks_vector(job.source_id, job.model))
        )
        async with self.engine.begin() as conn:
            # The source's row first: a file starting to embed meanwhile either committed
            # before (and is seen in work below) or reads the new model after this commits.
            await conn.execute(select(sources.c.id).where(sources.c.id == job.source_id).with_for_update())
            switched = await conn.execute(
                update(source_reembeds)
                .where(
                    source_reembeds.c.source_id == job.source_id,
                    source_reembeds.c.status == ReembedStatus.RUNNING.value,
                    source_reembeds.c.model == job.model,
                    ~lacking,
                    ~in_flight,
                )
                .values(status=ReembedStatus.COMPLETED.value, finished_at=now)
                .returning(source_reembeds.c.source_id)
            )
            if switched.first() is None:
                return False
            await conn.execute(
                update(sources)
                .where(sources.c.id == job.source_id)
                .values(
                    embedding_model=job.model,
                    passages_version=sources.c.passages_version + 1,
                    model_switches=sources.c.model_switches + 1,
                )
            )
            await conn.execute(
                delete(passage_vectors).where(
                    passage_vectors.c.source_id == job.source_id, passage_vectors.c.model != job.model
                )
            )
            await conn.execute(delete(reembed_leases).where(reembed_leases.c.source_id == job.source_id))
        return True
