"""The dashboard's actions through the API: pausing and resuming a job, retrying a failed file,
and the dashboard's own JSON view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.leader.static import StaticLeadership
from backburner.scheduler import runs
from backburner.scheduler.jobs import JobContext, JobSpec
from backburner.scheduler.metrics import SchedulerMetrics
from backburner.scheduler.runner import TickRunner
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, started_app


async def test_a_paused_job_skips_its_ticks_until_resumed(engine: AsyncEngine) -> None:
    calls: list[datetime] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.fire_time)

    spec = JobSpec(id="counted", name="counted", interval_s=60, run=job)
    runner = TickRunner(clock=SystemClock(), metrics=SchedulerMetrics(CollectorRegistry()))
    leadership = await StaticLeadership.claim(engine, "pause-test", "instance-1")
    async with engine.begin() as conn:
        await runs.set_paused(conn, "counted", paused=True, now=datetime.now(UTC))
    assert await runner.run(spec, leadership, datetime(2026, 1, 1, tzinfo=UTC)) == "skipped"
    assert calls == []
    async with engine.begin() as conn:
        await runs.set_paused(conn, "counted", paused=False, now=datetime.now(UTC))
        assert await runs.paused_jobs(conn) == set()
    assert await runner.run(spec, leadership, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)) == "succeeded"
    assert len(calls) == 1


@pytest.fixture
async def app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=database_url, scheduler_heartbeat_interval_seconds=0.5)
    async with started_app(settings) as app:
        yield app


async def test_pause_and_resume_through_the_admin_api(app: FastAPI) -> None:
    async with asgi_client(app) as api:
        paused = await api.post("/api/admin/scheduler/jobs/heartbeat/pause")
        assert paused.status_code == 200 and paused.json() == {"id": "heartbeat", "paused": True}
        status = (await api.get("/api/admin/scheduler/status")).json()
        assert next(j for j in status["jobs"] if j["id"] == "heartbeat")["paused"] is True
        resumed = await api.post("/api/admin/scheduler/jobs/heartbeat/resume")
        assert resumed.json() == {"id": "heartbeat", "paused": False}
        unknown = await api.post("/api/admin/scheduler/jobs/no-such-job/pause")
        assert unknown.status_code == 404 and "no-such-job" in unknown.json()["detail"]


async def test_a_failed_file_is_retried_as_a_new_file(make_settings: MakeSettings, database_url: str) -> None:
    # No workers: the file waits in PENDING until it is cancelled, so every step is deterministic.
    settings = make_settings(database_url=database_url, file_processing_workers=0)
    async with started_app(settings) as app, asgi_client(app) as api:
        source = (await api.post("/v1/sources", json={"name": "docs"})).json()
        upload = await api.post(
            f"/v1/sources/{source['id']}/files",
            files={"file": ("notes.txt", b"Backburner keeps no file stuck.\n" * 20, "text/plain")},
        )
        assert upload.status_code == 201, upload.text
        file_id = upload.json()["id"]
        not_failed = await api.post(f"/v1/files/{file_id}/retry")
        assert not_failed.status_code == 409 and "only a file in ERROR" in not_failed.json()["detail"]
        assert (await api.post(f"/v1/files/{file_id}/cancel")).json()["status"] == "error"
        retried = await api.post(f"/v1/files/{file_id}/retry")
        assert retried.status_code == 201, retried.text
        new = retried.json()
        assert new["id"] != file_id
        assert (new["file_name"], new["status"]) == ("notes.txt", "pending")
        # ERROR is terminal: the failed file is unchanged.
        assert (await api.get(f"/v1/files/{file_id}")).json()["status"] == "error"
        assert (await api.post("/v1/files/file-nope/retry")).status_code == 404


async def test_dashboard_view_lists_pages_and_counts(app: FastAPI) -> None:
    async with asgi_client(app) as api:
        body = (await api.get("/api/admin/dashboard", params={"page_size": 5})).json()
        assert set(body) >= {"cluster", "jobs", "batches", "files", "loop", "generated_at"}
        assert body["files"]["page_size"] == 5 and body["batches"]["page_size"] == 5
        assert {job["id"] for job in body["jobs"]} >= {"heartbeat"}
        assert body["loop"]["enabled"] is True
        bad = await api.get("/api/admin/dashboard", params={"page_size": 0})
        assert bad.status_code == 422
        missing = await api.get("/api/admin/batches/batch-nope/items")
        assert missing.status_code == 404
