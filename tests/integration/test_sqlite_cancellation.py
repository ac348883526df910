"""A task cancelled while its statement runs inside a SQLite write transaction must not keep the
write lock: SQLAlchemy invalidates such a connection, and a sqlite3 connection closed while the
cancelled statement's cursor is still referenced stays open, lock and all, until it is collected."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backburner.db.engine import create_sqlite_engine, dispose, sqlite_connector, wait_for_stopped_connections

# Long enough to be cancelled while it runs, short enough to end soon after on a busy machine.
SLOW_SELECT = (
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000000) SELECT count(*) FROM c"
)
DEADLINE_S = 30.0


def _write_lock_is_held(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return True
    finally:
        probe.close()


def _write(path: Path, timeout_s: float) -> None:
    writer = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        writer.execute("INSERT INTO t VALUES (2)")
    finally:
        writer.close()


async def test_a_statement_cancelled_in_a_write_transaction_does_not_keep_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_sqlite_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")

        async def write_then_read_slowly() -> None:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                await conn.exec_driver_sql(SLOW_SELECT)

        task = asyncio.create_task(write_then_read_slowly())
        deadline = time.monotonic() + DEADLINE_S
        while not await asyncio.to_thread(_write_lock_is_held, path):
            assert not task.done() and time.monotonic() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        assert cancelled.value.__traceback__ is not None  # kept, and with it the statement's cursor

        # Another writer gets the lock once the cancelled statement has ended, not after the
        # busy timeout, and the cancelled transaction's row is gone.
        await asyncio.to_thread(_write, path, DEADLINE_S)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT x FROM t")).scalars().all() == [2]
    finally:
        await engine.dispose()


async def test_a_connection_stopped_while_it_closes_does_not_hang_its_close(tmp_path: Path) -> None:
    """What SQLAlchemy does to a connection whose statement was cancelled, when it is itself
    interrupted: close it in a task of its own, then stop its thread."""
    engine = create_sqlite_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        raw = await engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            closing = asyncio.create_task(driver.close())
            await asyncio.sleep(0)  # the close is queued on the connection's thread
            driver.stop()
            await asyncio.wait_for(closing, DEADLINE_S)
        finally:
            raw.invalidate()
    finally:
        await engine.dispose()


async def test_disposing_waits_for_a_stopped_connections_thread_to_answer(tmp_path: Path) -> None:
    """A connection stopped without waiting (as SQLAlchemy terminates one) still owes its loop the
    answers queued before the stop; disposing of the engine waits for them, so that the loop does
    not close first and the thread does not die with "Event loop is closed"."""
    engine = create_sqlite_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    raw = await engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        thread = driver._thread
        running = asyncio.ensure_future(driver.execute(SLOW_SELECT))
        await asyncio.sleep(0)  # the statement is queued on the connection's thread
        driver.stop()
        await dispose(engine)
        assert not thread.is_alive()
        assert running.done()
    finally:
        raw.invalidate()


class _SlowToOpen(sqlite3.Connection):
    """A connection that takes a while to open, on the connection's own thread."""

    opening = threading.Event()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _SlowToOpen.opening.set()
        time.sleep(0.5)
        super().__init__(*args, **kwargs)


async def test_a_connection_cancelled_while_it_opens_is_waited_for(tmp_path: Path) -> None:
    """aiosqlite stops the thread of a connect that is cancelled, without waiting for it."""
    connect = sqlite_connector(str(tmp_path / "db.sqlite"), factory=_SlowToOpen)
    before = set(threading.enumerate())
    _SlowToOpen.opening.clear()
    opening = asyncio.ensure_future(connect())
    assert await asyncio.to_thread(_SlowToOpen.opening.wait, DEADLINE_S)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    (thread,) = [t for t in set(threading.enumerate()) - before if "_connection_worker_thread" in t.name]
    assert await wait_for_stopped_connections()
    assert not thread.is_alive()
