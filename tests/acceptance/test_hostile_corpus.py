"""A hostile tenant's files: each bomb ends in ERROR naming the limit it hit, another tenant's
small file completes meanwhile, and a bomb deleted mid-parse leaves no process burning CPU.

The parse budget is the default one (a small file gets a few seconds) but for the deleted bomb;
the memory limit is lowered so that the zlib bomb need not inflate past a gigabyte."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psutil
import pytest
from fastapi import FastAPI

from tests.conftest import MakeSettings
from tests.support import bombs
from tests.support.app import asgi_client, make_key, started_app

pytestmark = pytest.mark.acceptance

MEMORY_LIMIT_MB = 128


@asynccontextmanager
async def hostile_app(
    make_settings: MakeSettings, database_url: str, **extra: float
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=database_url,
        auth_mode="keys",
        file_process_memory_limit_mb=MEMORY_LIMIT_MB,
        file_poll_interval_seconds=0.2,
        submissions_per_minute=1000,
        **extra,
    )
    async with started_app(settings, ready_timeout_s=60) as app:
        yield app


@pytest.fixture
async def app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    async with hostile_app(make_settings, database_url) as app:
        yield app


@pytest.fixture
async def patient_app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    """Every file gets the whole `file_parse_timeout_seconds` (120 s): a bomb is still parsing
    when the test deletes it, however slowly a busy machine runs it (a small file's default
    budget, 5 s, could run out first)."""
    async with hostile_app(make_settings, database_url, file_parse_seconds_per_mb=1_000_000) as app:
        yield app


async def tenant(app: FastAPI, name: str) -> httpx.AsyncClient:
    return asgi_client(app, await make_key(app, name), timeout_s=60)


async def upload(client: httpx.AsyncClient, source: str, name: str, data: bytes, content_type: str) -> str:
    answer = await client.post(f"/v1/sources/{source}/files", files={"file": (name, data, content_type)})
    assert answer.status_code == 201, answer.text
    file_id: str = answer.json()["id"]
    return file_id


async def wait_status(
    client: httpx.AsyncClient, file_id: str, statuses: set[str], timeout_s: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        file = (await client.get(f"/v1/files/{file_id}")).json()
        if file["status"] in statuses:
            return dict(file)
        assert time.monotonic() < deadline, f"{file_id} still {file['status']} after {timeout_s} s"
        await asyncio.sleep(0.05)


def busy_pool_pids(pids: list[int], window_s: float = 0.5) -> list[int]:
    """The pool processes that used more than a tenth of the window's CPU over the window."""

    def cpu(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    before = {pid: cpu(pid) for pid in pids}
    time.sleep(window_s)
    return [pid for pid in pids if cpu(pid) - before[pid] > window_s / 10]


async def test_bombs_fail_on_their_limits_and_spare_the_other_tenant(app: FastAPI) -> None:
    async with await tenant(app, "mallory") as mallory, await tenant(app, "alice") as alice:
        theirs = (await mallory.post("/v1/sources", json={"name": "bombs"})).json()["id"]
        ours = (await alice.post("/v1/sources", json={"name": "notes"})).json()["id"]
        planted = {
            "pdf": await upload(mallory, theirs, "pages.pdf", bombs.shared_stream_pdf(), "application/pdf"),
            "docx": await upload(
                mallory,
                theirs,
                "paragraphs.docx",
                bombs.many_paragraphs_docx(),
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            "zlib": await upload(mallory, theirs, "inflate.pdf", bombs.zlib_bomb_pdf(600), "application/pdf"),
            "json": await upload(mallory, theirs, "deep.json", bombs.nested_json(), "application/json"),
        }
        started = time.monotonic()
        note = await upload(
            alice, ours, "note.txt", b"Alice keeps her notes in a small text file.", "text/plain"
        )
        done = await wait_status(alice, note, {"completed", "error"}, 10.0)
        assert done["status"] == "completed", done
        assert time.monotonic() - started < 10.0
        reasons = {
            kind: (await wait_status(mallory, file_id, {"error", "completed"}, 60.0))
            for kind, file_id in planted.items()
        }
    assert {kind: file["status"] for kind, file in reasons.items()} == dict.fromkeys(planted, "error")
    messages = {kind: str(file["error_message"]) for kind, file in reasons.items()}
    assert "file_parse_seconds_per_mb" in messages["pdf"], messages
    assert any(
        setting in messages["docx"]
        for setting in ("file_parse_timeout_seconds", "file_process_memory_limit_mb", "file_max_text_chars")
    ), messages["docx"]
    assert "file_process_memory_limit_mb" in messages["zlib"], messages
    assert "nested deeper than the limit" in messages["json"], messages
    assert app.state.runtime.files.pool.replaced >= 2  # the killed processes were replaced


async def test_a_bomb_deleted_mid_parse_stops_burning_cpu(patient_app: FastAPI) -> None:
    app = patient_app
    async with await tenant(app, "mallory") as mallory:
        source = (await mallory.post("/v1/sources", json={"name": "bombs"})).json()["id"]
        bomb = await upload(mallory, source, "pages.pdf", bombs.shared_stream_pdf(), "application/pdf")
        await wait_status(mallory, bomb, {"parsing"}, 30.0)
        pool = app.state.runtime.files.pool
        # A deadline, not a wait: the pool's first task starts its process, slow on a busy machine.
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(busy_pool_pids, pool.pids(), 0.2):
            assert time.monotonic() < deadline, "no pool process started parsing the bomb"
        deleted = await mallory.delete(f"/v1/files/{bomb}")
        assert deleted.status_code == 204, deleted.text
        await asyncio.sleep(2.0)
        assert await asyncio.to_thread(busy_pool_pids, pool.pids()) == []
