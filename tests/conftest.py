"""Fixtures shared by every tier: settings, fresh databases on SQLite and PostgreSQL, a runtime."""

from __future__ import annotations

import asyncio
import inspect
import io
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.engine import create_engine, wait_for_stopped_connections
from backburner.runtime import Runtime
from backburner.settings_loader import LoadedSettings, load_settings
from tests.support.databases import PostgresDatabases, SqliteDatabases
from tests.support.s3server import S3Server

MakeSettings = Callable[..., LoadedSettings]


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    databases.setup()
    yield databases
    databases.teardown()


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> SqliteDatabases:
    databases = SqliteDatabases(tmp_path_factory.mktemp("sqlite-template"))
    databases.setup()
    return databases


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    url = postgres_databases.new()
    yield url
    postgres_databases.drop(url)


@pytest.fixture
def sqlite_url(sqlite_databases: SqliteDatabases, tmp_path: Path) -> str:
    return sqlite_databases.new(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: every test using it runs on both backends."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 API server on loopback, started once and stopped after the last test."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "s3-server.log")
    yield server
    server.stop()


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings for a test: defaults plus overrides, never the developer's environment."""

    def make(**overrides: Any) -> LoadedSettings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data"}
        values.update(overrides)
        return load_settings(flags=values, environ={})

    return make


@pytest.fixture
def settings(make_settings: MakeSettings, database_url: str) -> LoadedSettings:
    return make_settings(database_url=database_url)


@pytest.fixture
async def engine(settings: LoadedSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def runtime(settings: LoadedSettings) -> AsyncIterator[Runtime]:
    async with Runtime(settings, role="worker") as rt:
        await rt.wait_ready(30)
        yield rt


LEFTOVER_GRACE_S = 5.0  # a task may still be ending on its own, a connection closing
LEFTOVER_CANCEL_WAIT_S = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            # First, so that its check runs after every other fixture of the test has stopped.
            item.fixturenames.insert(0, "tasks_end_with_their_test")


@pytest.fixture
async def tasks_end_with_their_test() -> AsyncIterator[None]:
    """Fails a test that leaves a task running after it and its fixtures have stopped, naming the
    task and where it waits. Left alone, such a task is cancelled only when the event loop
    closes, and one that does not end on cancel then hangs the run with no clue to its owner.
    Then waits for the threads of stopped SQLite connections to end while the loop is open."""
    before = asyncio.all_tasks()
    yield
    try:
        await _no_task_left(before)
    finally:
        await _wait_for_stopped_sqlite_connections()


async def _no_task_left(before: set[asyncio.Task[Any]]) -> None:
    this = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() - before if task is not this and not task.done()]
    if left:
        _, pending = await asyncio.wait(left, timeout=LEFTOVER_GRACE_S)
        left = list(pending)
    if not left:
        return
    stacks = io.StringIO()
    for task in left:
        task.print_stack(file=stacks)
        task.cancel()
    _, pending = await asyncio.wait(left, timeout=LEFTOVER_CANCEL_WAIT_S)
    report = (
        f"{len(left)} task(s) outlived the test by {LEFTOVER_GRACE_S:.0f} s, {len(pending)} of them still "
        f"running {LEFTOVER_CANCEL_WAIT_S:.0f} s after a cancel:\n{stacks.getvalue()}"
    )
    # Also printed: if a task ignores its cancel, closing the loop hangs, and pytest then reports
    # only that timeout, with what this teardown printed.
    print(report, file=sys.stderr)
    pytest.fail(report)


async def _wait_for_stopped_sqlite_connections() -> None:
    """A stopped SQLite connection's thread answers this test's loop once its queue drains; if the
    loop closed first, the thread would die with "Event loop is closed" during a later test."""
    assert await wait_for_stopped_connections(), "a stopped SQLite connection's thread is still running"
