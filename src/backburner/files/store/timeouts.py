"""Bulk moves that keep files from staying stuck: deadlines, used-up attempts, stalls and dead
workers' leases, each one UPDATE over any number of files.

The sweeper runs them in the leader's fenced transaction; reads run `time_out` for the files
they show. Every method takes `now` from the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.transactions import transaction
from backburner.files.states import NON_TERMINAL, FileStatus
from backburner.files.tables import files

NON_TERMINAL_VALUES = sorted(s.value for s in NON_TERMINAL)


def timeout_cutoff(now: datetime, timeout_minutes: float) -> datetime:
    """Files created at or before this instant are timed out at `now`.

    The same rule as `states.is_timed_out` (deadline = created_at + timeout <= now), written as
    a bound on `created_at` so that one UPDATE applies it to any number of files.
    """
    return now - timedelta(minutes=timeout_minutes)


class TimeoutStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def time_out(
        self,
        now: datetime,
        timeout_minutes: float,
        message: str,
        *,
        organization_id: str | None = None,
        source_id: str | None = None,
        file_id: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[str]:
        """Move every unfinished file past its deadline to ERROR; returns their ids.

        Scoped to one file or one source for a read, or to every file for the sweeper.
        """
        conditions = [
            files.c.status.in_(NON_TERMINAL_VALUES),
            files.c.created_at <= timeout_cutoff(now, timeout_minutes),
        ]
        if organization_id is not None:
            conditions.append(files.c.organization_id == organization_id)
        if source_id is not None:
            conditions.append(files.c.source_id == source_id)
        if file_id is not None:
            conditions.append(files.c.id == file_id)
        return await self._fail_where(conditions, message, now, conn)

    async def fail_exhausted(
        self, now: datetime, max_attempts: int, message: str, *, conn: AsyncConnection | None = None
    ) -> list[str]:
        """Fail files that used every attempt and whose last worker is gone."""
        conditions = [
            files.c.status.in_(NON_TERMINAL_VALUES),
            files.c.attempts >= max_attempts,
            or_(files.c.lease_owner.is_(None), files.c.lease_expires_at < now),
        ]
        return await self._fail_where(conditions, message, now, conn)

    async def release_expired(self, now: datetime, *, conn: AsyncConnection | None = None) -> list[str]:
        """Drop the leases of workers that stopped heartbeating, so the files show as unowned."""
        async with transaction(self.engine, conn) as tx:
            result = await tx.execute(
                update(files)
                .where(
                    files.c.status.in_(NON_TERMINAL_VALUES),
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
            files.c.status.in_(NON_TERMINAL_VALUES),
            files.c.lease_owner.is_not(None),
            files.c.last_progress_at <= now - timedelta(minutes=stall_minutes),
        ]
        async with transaction(self.engine, conn) as tx:
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
        async with transaction(self.engine, conn) as tx:
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
