"""SQL of the PostgreSQL lock session: a dedicated asyncpg connection, never a pooled one.

The epoch increment runs on this same session, inside a transaction: if the session that holds
the lock has already been ended by the server (say, a frozen follower that was granted the lock
and timed out), the increment fails with it and no stale instance can start a term.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy.engine import make_url

from backburner.clock import Clock
from backburner.leader.base import Term
from backburner.leader.fencing import ABANDONED_ERROR
from backburner.leader.lease import lock_key_parts

# `pg_locks` shows every database of the server: another database's locks are not ours, and its
# relations' ids may equal ours.
THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's spelling) -> `postgresql://...` (libpq's)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def looks_like_transaction_pooler(sqlalchemy_url: str) -> bool:
    """PgBouncer's usual port or name: a session-level advisory lock does not survive its
    transaction pooling mode, so the lock needs a direct `leader_database_url`."""
    url = make_url(sqlalchemy_url)
    return url.port == 6432 or "pgbouncer" in url.render_as_string(hide_password=True).lower()


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str | None

    @property
    def is_backburner(self) -> bool:
        return bool(self.application_name and self.application_name.startswith("backburner-leader:"))


async def try_lock(conn: asyncpg.Connection, key: int, timeout_s: float) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key, timeout=timeout_s))


async def wait_lock(conn: asyncpg.Connection, key: int, timeout_s: float) -> bool:
    """Block until granted, or False when the session's `lock_timeout` (one wait slice) elapses."""
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", key, timeout=timeout_s)
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def find_holder(conn: asyncpg.Connection, key: int, timeout_s: float) -> LockHolder | None:
    classid, objid = lock_key_parts(key)
    row = await conn.fetchrow(
        f"""
        SELECT l.pid, a.application_name
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid
          AND l.database = {THIS_DATABASE}
        LIMIT 1
        """,
        classid,
        objid,
        timeout=timeout_s,
    )
    if row is None:
        return None
    return LockHolder(pid=int(row["pid"]), application_name=row["application_name"])


# How long the increment waits for the old term's fenced transactions before ending them: a live
# one commits in milliseconds, but one whose client froze mid-statement stays `active`, where no
# idle timeout reaches it, and would block the new term until that client is thawed.
OLD_TERM_GRACE_MS = 1000
END_OLD_TERM_TRANSACTIONS = f"""
    SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
    WHERE l.locktype = 'relation' AND l.database = {THIS_DATABASE}
      AND l.relation = 'leader_epochs'::regclass
      AND l.mode = 'RowShareLock' AND l.granted AND l.pid <> pg_backend_pid()
"""


async def start_term(
    conn: asyncpg.Connection, election: str, instance_id: str, clock: Clock
) -> tuple[Term, float, int]:
    """The PostgreSQL twin of `fencing.start_term`, run on the lock session itself.

    Also returns when (monotonic) the COMMIT was about to be sent: the server's idle timer
    restarts after that, so the lease runs from no earlier than this moment; and how many
    fenced transactions of the old term it ended. Every transaction that holds the epoch row
    (`FOR SHARE`) while this session holds the lock belongs to an old term: ending one rolls
    its writes back, as fencing would have refused them.
    """
    ended = 0
    while True:
        try:
            term, committing_at = await _start_term_once(conn, election, instance_id, clock)
            return term, committing_at, ended
        except asyncpg.LockNotAvailableError:
            ended += int(await conn.fetchval(END_OLD_TERM_TRANSACTIONS))


async def _start_term_once(
    conn: asyncpg.Connection, election: str, instance_id: str, clock: Clock
) -> tuple[Term, float]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {OLD_TERM_GRACE_MS}")
        await conn.execute(
            "INSERT INTO leader_epochs (name, epoch, holder, acquired_at) VALUES ($1, 0, $2, $3) "
            "ON CONFLICT (name) DO NOTHING",
            election,
            instance_id,
            clock.now(),
        )
        epoch = int(
            await conn.fetchval(
                "UPDATE leader_epochs SET epoch = epoch + 1, holder = $2 WHERE name = $1 RETURNING epoch",
                election,
                instance_id,
            )
        )
        since: datetime = clock.now()
        await conn.execute(
            "UPDATE leader_epochs SET acquired_at = $2, heartbeat_at = NULL, released_at = NULL "
            "WHERE name = $1",
            election,
            since,
        )
        await conn.execute(
            "UPDATE job_runs SET outcome = 'abandoned', finished_at = $3, error = $4 "
            "WHERE election = $1 AND finished_at IS NULL AND epoch < $2",
            election,
            epoch,
            since,
            ABANDONED_ERROR,
        )
        committing_at = time.monotonic()
    return Term(election, epoch, instance_id, since), committing_at


async def heartbeat(conn: asyncpg.Connection, timeout_s: float) -> None:
    await conn.fetchval("SELECT 1", timeout=timeout_s)


async def unlock_all(conn: asyncpg.Connection, timeout_s: float) -> None:
    # Every hold of every key by this session: nothing of the term may outlive the release.
    await conn.fetchval("SELECT pg_advisory_unlock_all()", timeout=timeout_s)
