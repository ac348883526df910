"""On SQLite, requests that only read answer while another connection holds the write lock: a
worker storing a batch of passages must not hold back an API key's check, `/readyz` or a
listing for up to the busy timeout."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from backburner.db.engine import SQLITE_BUSY_TIMEOUT_MS
from tests.conftest import MakeSettings
from tests.support.app import make_key
from tests.support.files import served

READ_ONLY_PATHS = [
    "/readyz",
    "/metrics",
    "/v1/batches",
    "/v1/sources",
    "/v1/schedules",
    "/api/admin/batch-jobs",
    "/api/admin/scheduler/status",
    "/api/admin/dashboard",
]
# Well inside the busy timeout: a reader that waited for the lock would run past it.
DEADLINE_S = SQLITE_BUSY_TIMEOUT_MS / 1000 / 3


async def test_reads_answer_while_another_connection_writes(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with served(make_settings(database_url=sqlite_url, auth_mode="keys")) as (app, caller, _):
        caller.headers["authorization"] = f"Bearer {await make_key(app, 'acme', admin=True)}"
        for path in READ_ONLY_PATHS:  # each answers before the lock is taken
            assert (await caller.get(path)).status_code == 200, path
        # Another connection's open write transaction, as a worker's that is storing passages. It
        # waits for the lock in a thread: the app's own writers need the event loop to let go of it.
        writer = sqlite3.connect(
            str(make_url(sqlite_url).database),
            isolation_level=None,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
        try:
            await asyncio.to_thread(writer.execute, "BEGIN IMMEDIATE")
            await asyncio.to_thread(writer.execute, "UPDATE organizations SET name = name")
            for path in READ_ONLY_PATHS:
                try:
                    response = await asyncio.wait_for(caller.get(path), DEADLINE_S)
                except TimeoutError:
                    pytest.fail(f"{path} waited {DEADLINE_S:.0f} s for the write lock")
                assert response.status_code == 200, (path, response.text)
        finally:
            writer.close()
