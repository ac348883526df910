"""The elector is chosen from the database URL; a PgBouncer-looking URL without a direct lock
URL is warned about at start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from backburner.clock import SystemClock
from backburner.db.engine import create_engine
from backburner.leader.factory import create_elector
from backburner.leader.filelock import FileElector
from backburner.leader.postgres import PostgresElector
from backburner.settings_loader import LoadedSettings


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records if r.levelno >= logging.WARNING]


async def test_postgres_behind_pgbouncer_is_warned_about_unless_the_lock_bypasses_it(
    make_settings: Callable[..., LoadedSettings], caplog: pytest.LogCaptureFixture
) -> None:
    pooled = make_settings(database_url="postgresql://app@db:6432/app", leader_lease_seconds=5).settings
    engine = create_engine(pooled)  # no connection is made
    try:
        elector = create_elector(pooled, engine, "i-1", SystemClock())
        assert isinstance(elector, PostgresElector)
        assert (elector.backend, elector.mode, elector.lease_seconds) == ("postgres", "wait", 5.0)
        assert warnings_of(caplog) == ["leader.pooler_suspected"]

        caplog.clear()
        direct = make_settings(
            database_url="postgresql://app@db:6432/app", leader_database_url="postgresql://app@db:5432/app"
        ).settings
        create_elector(direct, engine, "i-1", SystemClock())
        assert warnings_of(caplog) == []
    finally:
        await engine.dispose()


async def test_sqlite_gets_a_file_lock_beside_the_database(
    make_settings: Callable[..., LoadedSettings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/x.db", leader_election_mode="poll").settings
    engine = create_engine(settings)
    try:
        elector = create_elector(settings, engine, "i-1", SystemClock())
        assert isinstance(elector, FileElector)
        assert elector.path == tmp_path / "x.db.backburner-scheduler.leader.lock"
        assert elector.backend == "file"
    finally:
        await engine.dispose()
