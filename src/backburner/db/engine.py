"""The async engine: SQLite through aiosqlite, PostgreSQL through asyncpg with the pool settings."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backburner.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Threads of SQLite connections stopped without waiting for them (terminated by SQLAlchemy, or
# cancelled while they opened). Each still owes an answer to its event loop, and dies with "Event
# loop is closed" if that loop closes first (aiosqlite#241): they are waited for before the loop
# may close (`wait_for_stopped_connections`).
_STOPPED_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
STOPPED_CONNECTIONS_WAIT_S = 10.0
# An execution option: the connection only reads (see `db.transactions.reading`).
READ_ONLY = "backburner_read_only"


def create_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    return create_engine_for_url(
        url or settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )


def create_engine_for_url(url: str, *, pool_size: int, max_overflow: int, pool_timeout: float) -> AsyncEngine:
    """An engine for `url` with these pool sizes (PostgreSQL; SQLite takes its own)."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_sqlite_engine(url)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "backburner"}},
    )


def create_sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        async_creator=sqlite_connector(
            database or ":memory:", timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        ),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY when another process wrote in between. A
        # connection that only reads takes no lock: in WAL mode its snapshot blocks no writer,
        # however long it reads (a search loading a million vectors took over 30 s).
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: BaseException | None) -> None:
        roll_back_before_close(dbapi_connection.driver_connection)

    return engine


def sqlite_connector(database: str, **kwargs: Any) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """Opens aiosqlite connections as SQLAlchemy would, with `stop` wrapped before the connection
    opens: a connect that is cancelled stops its thread too (`stop_at_most_once`)."""

    async def connect() -> aiosqlite.Connection:
        driver = aiosqlite.connect(database, **kwargs)
        driver._thread.daemon = True  # as SQLAlchemy does: an unclosed connection never holds up exit
        stop_at_most_once(driver)
        return await driver

    return connect


def roll_back_before_close(driver: Any) -> None:
    """Queue a rollback on an aiosqlite connection's thread, ahead of the close that follows.

    SQLAlchemy invalidates a connection whose statement was cancelled (a task cancelled while it
    waited on the database) and closes it. Closing a sqlite3 connection while a cursor of it is
    still referenced (the cancelled statement's, from its traceback) leaves the connection open
    as a "zombie" until that cursor is collected, and with it the transaction's write lock:
    every other writer then waited out the busy timeout.
    """
    raw, queue = getattr(driver, "_connection", None), getattr(driver, "_tx", None)
    if raw is not None and queue is not None:
        queue.put_nowait((None, raw.rollback))


def stop_at_most_once(driver: Any) -> None:
    """Make an aiosqlite connection's `stop` queue its thread's end only once; a later call returns
    the first call's future, which is answered when the thread ends.

    SQLAlchemy terminates a connection whose statement was cancelled by closing it in a shielded
    task, and calls `stop` as well if it is interrupted meanwhile. That task's `close` then calls
    `stop` again, and waited for an answer from a thread that had already ended: the task never
    finished, and the event loop hung on it when it closed (at shutdown, or at a test's end).
    The thread is recorded, to be waited for (`wait_for_stopped_connections`).
    """
    stop = type(driver).stop
    connection = weakref.ref(driver)  # not the driver itself: it holds this function
    first: list[Any] = []

    def stop_once() -> Any:
        if not first:
            live = connection()
            assert live is not None  # the caller holds it
            first.append(stop(live))
            _STOPPED_THREADS.add(live._thread)
        return first[0]

    driver.stop = stop_once


async def wait_for_stopped_connections(timeout_s: float = STOPPED_CONNECTIONS_WAIT_S) -> bool:
    """Wait until the threads of stopped SQLite connections have ended (each after the statements
    queued before its stop); False if one is still running after `timeout_s`."""
    threads = [thread for thread in list(_STOPPED_THREADS) if thread.is_alive()]
    if threads:
        await asyncio.to_thread(_join, threads, timeout_s)
    return not any(thread.is_alive() for thread in threads)


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's connections, and wait for those that were stopped to end."""
    await engine.dispose()
    await wait_for_stopped_connections()
