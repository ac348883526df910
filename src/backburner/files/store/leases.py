"""Claims, leases and status transitions: how a worker takes a file, keeps it, and moves it on.

Every status change is a compare-and-set `UPDATE ... WHERE status IN (allowed) RETURNING`; an
UPDATE that matches nothing is diagnosed afterwards and raised as `IllegalTransition`,
`LeaseLost` or `FileNotFound`. A worker's writes also name its lease owner, which is unique per
claim, so a worker whose file was reclaimed, timed out or deleted cannot change it any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Insert, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.transactions import reading, transaction
from backburner.files.states import TERMINAL, FileStatus, IllegalTransition, allowed_sources
from backburner.files.store.records import (
    FILE_COLUMNS,
    FileNotFound,
    FileRecord,
    Lease,
    LeaseLost,
    SourceModel,
    SourceModelChanged,
)
from backburner.files.store.timeouts import NON_TERMINAL_VALUES, timeout_cutoff
from backburner.files.store.versions import lock_lineage, supersede
from backburner.files.tables import file_claim_turns, files, sources

IN_WORK_VALUES = [FileStatus.PARSING.value, FileStatus.EMBEDDING.value]
# Organizations tried per claim: more than one, since a concurrent claim (on PostgreSQL) may
# have locked the only claimable file of the first.
CANDIDATE_ORGANIZATIONS = 4


@dataclass(frozen=True, slots=True)
class ClaimRules:
    lease_s: float
    max_attempts: int
    timeout_minutes: float
    org_cap: int  # files of one organization in work on this instance, at most
    owner_prefix: str  # every lease owner of this instance starts with it


def held(lease: Lease) -> list[ColumnElement[bool]]:
    """The conditions under which `lease` still holds its file."""
    return [
        files.c.id == lease.file_id,
        files.c.lease_owner == lease.owner,
        files.c.status.in_(NON_TERMINAL_VALUES),
    ]


class LeaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def claim(self, owner: str, now: datetime, rules: ClaimRules) -> FileRecord | None:
        """Take a claimable file (PENDING, released, or whose lease expired) for `owner`.

        Organizations take turns: the file is the oldest of the organization whose last claim is
        the oldest, among those with fewer than `rules.org_cap` files in work on this instance.
        A PENDING file moves to PARSING in the same compare-and-set UPDATE; a reclaimed file
        keeps its status. Files past their deadline or out of attempts are left to the sweeper.
        PostgreSQL skips rows another claim has locked; SQLite's BEGIN IMMEDIATE serialises
        claims. Claims of one instance must not run concurrently (the cap is counted here).
        """
        claimable = [
            files.c.status.in_(NON_TERMINAL_VALUES),
            or_(files.c.lease_owner.is_(None), files.c.lease_expires_at < now),
            files.c.attempts < rules.max_attempts,
            files.c.created_at > timeout_cutoff(now, rules.timeout_minutes),
        ]
        full = (
            select(files.c.organization_id)
            .where(
                files.c.status.in_(IN_WORK_VALUES),
                files.c.lease_owner.startswith(rules.owner_prefix, autoescape=True),
                files.c.lease_expires_at >= now,
            )
            .group_by(files.c.organization_id)
            .having(func.count() >= rules.org_cap)
        )
        turns = (
            select(files.c.organization_id)
            .outerjoin(file_claim_turns, file_claim_turns.c.organization_id == files.c.organization_id)
            .where(*claimable, files.c.organization_id.not_in(full))
            .group_by(files.c.organization_id, file_claim_turns.c.last_claimed_at)
            .order_by(file_claim_turns.c.last_claimed_at.asc().nulls_first(), func.min(files.c.created_at))
            .limit(CANDIDATE_ORGANIZATIONS)
        )
        async with self.engine.begin() as conn:
            for (organization_id,) in (await conn.execute(turns)).all():
                row = await self._claim_in(conn, organization_id, claimable, owner, now, rules.lease_s)
                if row is not None:
                    await conn.execute(self._take_turn(organization_id, now))
                    return row
        return None

    async def _claim_in(
        self,
        conn: AsyncConnection,
        organization_id: str,
        claimable: list[ColumnElement[bool]],
        owner: str,
        now: datetime,
        lease_s: float,
    ) -> FileRecord | None:
        candidate = (
            select(files.c.id)
            .where(files.c.organization_id == organization_id, *claimable)
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
        row = (await conn.execute(statement)).first()
        return FileRecord.from_row(row) if row is not None else None

    def _take_turn(self, organization_id: str, now: datetime) -> Insert:
        insert = postgresql.insert if self._postgres else sqlite.insert
        return (
            insert(file_claim_turns)
            .values(organization_id=organization_id, last_claimed_at=now)
            .on_conflict_do_update(index_elements=["organization_id"], set_={"last_claimed_at": now})
        )

    async def heartbeat(self, lease: Lease, now: datetime, lease_s: float) -> datetime | None:
        """Renew the lease. Returns the file's last progress, or None when the lease is no longer
        held (the worker must stop)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(files)
                    .where(*held(lease))
                    .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                    .returning(files.c.last_progress_at)
                )
            ).first()
        if row is None:
            return None
        last_progress: datetime | None = row.last_progress_at
        return last_progress or now

    async def held_of(self, leases: list[Lease]) -> set[str]:
        """The ids of the files whose lease among `leases` is still held."""
        owners = {lease.file_id: lease.owner for lease in leases}
        async with reading(self.engine) as conn:
            result = await conn.execute(
                select(files.c.id, files.c.lease_owner).where(
                    files.c.id.in_(list(owners)), files.c.status.in_(NON_TERMINAL_VALUES)
                )
            )
            return {file_id for file_id, owner in result if owners[file_id] == owner}

    async def release(self, lease: Lease, now: datetime, *, count_attempt: bool = True) -> bool:
        """Give the file back so any worker can claim it at once (shutdown, a failed attempt).

        A release on shutdown does not count as an attempt: the work was stopped, not failed.
        """
        changes: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        if not count_attempt:
            changes["attempts"] = files.c.attempts - 1
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(update(files).where(*held(lease)).values(**changes).returning(files.c.id))
            ).first()
        return row is not None

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
        async with transaction(self.engine, conn) as tx:
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

    async def start_embedding(
        self,
        lease: Lease,
        now: datetime,
        *,
        total_chunks: int,
        embedding_model: str,
        parse_s: float,
        chunk_s: float,
        warnings: list[str] | None = None,
        source_model: SourceModel | None = None,
    ) -> FileRecord:
        """PARSING -> EMBEDDING with the chunk count; for a resumed EMBEDDING file, the same figures.

        With `source_model` (the source's active model the embedder was chosen by), the file's
        row is written, then the source's row is read with a share lock: a re-embedding's switch
        (which locks that row first, see `ReembedStore.switch`) either saw this file in work and
        waits for it, or came first and this raises `SourceModelChanged`, writing nothing.
        """
        values = {
            "total_chunks": total_chunks,
            "embedding_model": embedding_model,
            "parse_seconds": parse_s,
            "chunk_seconds": chunk_s,
            "warnings": warnings or None,
        }
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(files)
                    .where(*held(lease), files.c.status == FileStatus.EMBEDDING.value)
                    .values(**values, updated_at=now)
                    .returning(*FILE_COLUMNS)
                )
            ).first()
            if row is not None:
                started = FileRecord.from_row(row)
            else:
                started = await self.transition(
                    lease.file_id, FileStatus.EMBEDDING, now, owner=lease.owner, values=values, conn=conn
                )
            if source_model is not None:
                current = await conn.scalar(
                    select(sources.c.embedding_model)
                    .where(sources.c.id == started.source_id)
                    .with_for_update(read=True)
                )
                if current != source_model.name:
                    raise SourceModelChanged(started.source_id)
            return started

    async def complete(self, lease: Lease, now: datetime, *, embed_s: float, store_s: float) -> FileRecord:
        """EMBEDDING -> COMPLETED; the file takes the place of the versions it supersedes."""
        async with self.engine.begin() as conn:
            done = await self.transition(
                lease.file_id,
                FileStatus.COMPLETED,
                now,
                owner=lease.owner,
                values={"embed_seconds": embed_s, "store_seconds": store_s},
                conn=conn,
            )
            # Only the file's own row is held while waiting: no lineage-lock holder waits for it.
            await lock_lineage(conn, done)
            await supersede(conn, done)
        return done
