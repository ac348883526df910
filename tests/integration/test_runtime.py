"""The runtime: migrations on both databases, the sized executor, readiness."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backburner.api.app import create_app
from backburner.db import migrate
from backburner.runtime import YOUNG_COLLECTION_THRESHOLD, Runtime
from tests.conftest import MakeSettings


async def test_migrations_are_current_on_both_databases(runtime: Runtime) -> None:
    assert await migrate.is_current(runtime.engine)
    checks = await runtime.readiness()
    assert all(result.ok for result in checks.values()), checks


async def test_default_executor_has_the_configured_number_of_threads(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(database_url=sqlite_url, event_loop_threadpool_max_workers=7)
    async with Runtime(loaded, role="worker"):
        loop = asyncio.get_running_loop()
        barrier = threading.Barrier(7, timeout=10)
        names: set[str] = set()

        def occupy() -> None:
            names.add(threading.current_thread().name)
            barrier.wait()  # only passes when 7 threads run at once

        await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(None, occupy) for _ in range(7))), 20)
        assert len(names) == 7
        assert all(name.startswith("backburner-pool") for name in names)
        executor = loop._default_executor  # type: ignore[attr-defined]
        assert isinstance(executor, ThreadPoolExecutor)
        assert executor._max_workers == 7


async def test_readyz_is_503_naming_the_database_when_unreachable(make_settings: MakeSettings) -> None:
    # Nothing listens on port 1: the database cannot be reached.
    loaded = make_settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    app = create_app(loaded)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            live = await client.get("/healthz")
            assert live.status_code == 200
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert "database" in body["failing"]
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["detail"]  # a reason, not just a flag


async def test_readyz_is_200_when_started(make_settings: MakeSettings, database_url: str) -> None:
    app = create_app(make_settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready(30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = await client.get("/readyz")
            docs = await client.get("/openapi.json")
    assert ready.status_code == 200, ready.text
    assert ready.json()["failing"] == []
    assert docs.status_code == 200


@pytest.mark.parametrize("driver_url", ["sqlite:///{dir}/plain.db"])
async def test_plain_sqlite_url_is_given_the_async_driver(
    make_settings: MakeSettings, tmp_path, driver_url: str
) -> None:  # type: ignore[no-untyped-def]
    loaded = make_settings(database_url=driver_url.format(dir=tmp_path))
    assert loaded.settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(30)
        assert await migrate.is_current(runtime.engine)


FREEZE_PROGRAM = """
import asyncio, gc, sys
from backburner.runtime import YOUNG_COLLECTION_THRESHOLD, Runtime
from backburner.settings_loader import load_settings


async def main() -> None:
    loaded = load_settings(flags={"database_url": sys.argv[1], "data_dir": sys.argv[2]}, environ={})
    before = gc.get_freeze_count()
    async with Runtime(loaded, role="worker") as runtime:
        await runtime.wait_ready(60)
        print(before, gc.get_freeze_count(), gc.get_threshold()[0])


asyncio.run(main())
"""


def test_start_up_objects_are_frozen_and_young_collections_spaced_once_ready(
    sqlite_url: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_PROGRAM, sqlite_url, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, after, young = map(int, done.stdout.split())
    assert before == 0 and after > 10_000, done.stdout  # the modules, the app, the components
    assert young == YOUNG_COLLECTION_THRESHOLD
