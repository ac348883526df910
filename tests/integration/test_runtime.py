"""The runtime: migrations on both databases, the sized executor, readiness."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from backburner.api.app import create_app
from backburner.db import migrate
from backburner.runtime import Runtime, run_as_process
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, started_app


async def test_migrations_are_current_on_both_databases(runtime: Runtime) -> None:
    assert await migrate.is_current(runtime.engine)
    checks = await runtime.readiness()
    assert all(result.ok for result in checks.values()), checks


async def test_default_executor_has_the_configured_number_of_threads(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(database_url=sqlite_url, event_loop_threadpool_max_workers=7)
    loop = asyncio.get_running_loop()
    previous = loop._default_executor  # type: ignore[attr-defined]
    async with run_as_process(Runtime(loaded, role="worker")) as runtime:
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
        assert runtime.executor is executor
    # The process-wide executor is the runtime's only while it runs.
    assert loop._default_executor is previous  # type: ignore[attr-defined]


async def test_a_runtime_leaves_the_loops_executor_alone(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with Runtime(make_settings(database_url=sqlite_url), role="worker") as runtime:
        await runtime.wait_ready(30)
        thread_name = await asyncio.to_thread(lambda: threading.current_thread().name)
        assert not thread_name.startswith("backburner-pool")
        assert runtime.executor is None


async def test_readyz_is_503_naming_the_database_when_unreachable(make_settings: MakeSettings) -> None:
    # Nothing listens on port 1: the database cannot be reached.
    loaded = make_settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    app = create_app(loaded)
    async with app.router.lifespan_context(app), asgi_client(app) as client:  # never ready: not waited for
        live = await client.get("/healthz")
        assert live.status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert "database" in body["failing"]
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["detail"]  # a reason, not just a flag


async def test_readyz_is_200_when_started(make_settings: MakeSettings, database_url: str) -> None:
    async with started_app(make_settings(database_url=database_url)) as app, asgi_client(app) as client:
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


async def test_a_process_runtime_freezes_start_up_objects_once_ready_and_undoes_it(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    gc.unfreeze()
    async with run_as_process(Runtime(make_settings(database_url=sqlite_url), role="worker")) as runtime:
        await runtime.wait_ready(30)
        for _ in range(100):  # the freeze follows readiness in a task of its own
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # nothing of it outlives the runtime
