"""What one tenant may do to the others: deployment-wide actions need a deployment admin key,
retries count as submissions, and searches are limited per key and per instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from backburner.api.limits import LimitsMiddleware
from backburner.auth.principal import Principal
from backburner.batches.store import CycleRecord, record_cycle
from backburner.clock import utcnow
from backburner.settings_loader import load_settings
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, make_key, started_app


@pytest.fixture
async def keyed_app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=database_url,
        auth_mode="keys",
        submissions_per_minute=3,
        searches_per_minute=2,
        file_poll_interval_seconds=0.1,
        file_processing_processes=1,
    )
    async with started_app(settings) as app:
        yield app


async def test_pausing_a_job_needs_a_deployment_admin_key(keyed_app: FastAPI) -> None:
    org_admin = await make_key(keyed_app, "acme", admin=True)
    operator = await make_key(keyed_app, "ops", deployment_admin=True)
    async with asgi_client(keyed_app, org_admin) as acme, asgi_client(keyed_app, operator) as ops:
        for action in ("pause", "resume"):
            refused = await acme.post(f"/api/admin/scheduler/jobs/files.sweep/{action}")
            assert refused.status_code == 403, refused.text
            assert "deployment admin" in refused.json()["detail"]
        assert (await acme.get("/api/admin/scheduler/status")).status_code == 200  # reading is fine
        paused = await ops.post("/api/admin/scheduler/jobs/files.sweep/pause")
        assert paused.status_code == 200 and paused.json() == {"id": "files.sweep", "paused": True}
        assert (await ops.post("/api/admin/scheduler/jobs/files.sweep/resume")).json()["paused"] is False


async def test_only_a_deployment_admin_sees_figures_of_every_organization(keyed_app: FastAPI) -> None:
    org_admin = await make_key(keyed_app, "acme", admin=True)
    operator = await make_key(keyed_app, "ops", deployment_admin=True)
    async with keyed_app.state.runtime.engine.begin() as conn:
        cycle = CycleRecord(
            utcnow(), 0.5, polled=7, completed=2, items_ingested=40, errors=0, epoch=1, instance_id="i"
        )
        await record_cycle(conn, cycle)
    async with asgi_client(keyed_app, org_admin) as acme, asgi_client(keyed_app, operator) as ops:
        assert (await acme.get("/api/admin/batch-jobs")).json()["last_cycle"] is None
        assert (await acme.get("/api/admin/dashboard")).json()["batches"]["last_cycle"] is None
        seen = (await ops.get("/api/admin/batch-jobs")).json()["last_cycle"]
        assert seen["polled"] == 7 and seen["items_ingested"] == 40
        assert (await ops.get("/api/admin/dashboard")).json()["batches"]["last_cycle"]["polled"] == 7


async def test_a_retry_counts_as_a_submission(keyed_app: FastAPI) -> None:
    token = await make_key(keyed_app, "acme")
    async with asgi_client(keyed_app, token) as acme:
        source = (await acme.post("/v1/sources", json={"name": "docs"})).json()["id"]
        broken = ("broken.pdf", b"%PDF-1.4 not really a PDF", "application/pdf")
        upload = await acme.post(f"/v1/sources/{source}/files", files={"file": broken})
        assert upload.status_code == 201, upload.text
        file_id = upload.json()["id"]
        deadline = asyncio.get_running_loop().time() + 30
        while (await acme.get(f"/v1/files/{file_id}")).json()["status"] != "error":
            assert asyncio.get_running_loop().time() < deadline, "the broken PDF never failed"
            await asyncio.sleep(0.05)
        answers = [await acme.post(f"/v1/files/{file_id}/retry") for _ in range(3)]
    # The upload and two retries fill the limit of three a minute; the third retry waits.
    assert [a.status_code for a in answers] == [201, 201, 429], [a.text for a in answers]
    assert "submissions per minute" in answers[2].json()["detail"]


async def test_searches_are_limited_per_key(keyed_app: FastAPI) -> None:
    one, other = await make_key(keyed_app, "acme"), await make_key(keyed_app, "globex")
    async with asgi_client(keyed_app, one) as acme, asgi_client(keyed_app, other) as globex:
        source = (await acme.post("/v1/sources", json={"name": "docs"})).json()["id"]
        theirs = (await globex.post("/v1/sources", json={"name": "docs"})).json()["id"]
        answers = [(await acme.get(f"/v1/sources/{source}/search", params={"q": "x"})) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["retry-after"]) >= 1
        assert "searches per minute" in answers[2].json()["detail"]
        # Another key is not held back by the first one's searches.
        assert (await globex.get(f"/v1/sources/{theirs}/search", params={"q": "x"})).status_code == 200


async def test_searches_beyond_the_instances_bound_wait_then_get_503() -> None:
    settings = load_settings(flags={"search_max_concurrent": 1}, environ={}).settings
    entered = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def search_route(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = LimitsMiddleware(search_route, settings=settings, search_slot_wait_s=0.3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as caller:
        first = asyncio.create_task(caller.get("/v1/sources/s/search", params={"q": "a"}))
        await asyncio.wait_for(entered.wait(), 10)
        second = await caller.get("/v1/sources/s/search", params={"q": "b"})
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert "search_max_concurrent" in second.json()["detail"]
        assert calls == 1  # the second search never ran
        release.set()
        assert (await asyncio.wait_for(first, 10)).status_code == 200
        third = asyncio.create_task(caller.get("/v1/sources/s/search", params={"q": "c"}))
        assert (await asyncio.wait_for(third, 10)).status_code == 200  # the slot was given back
    assert calls == 2


async def test_one_organizations_slow_searches_leave_a_slot_to_another() -> None:
    """With two slots, an organization whose searches hang holds one; another organization's
    search runs at once, and the first organization's second search waits, then gets 503."""
    settings = load_settings(flags={"search_max_concurrent": 2}, environ={}).settings
    entered = asyncio.Event()
    hang = asyncio.Event()
    ran: list[str] = []

    async def search_route(scope: Scope, receive: Receive, send: Send) -> None:
        organization = scope["state"]["principal"].organization_id
        ran.append(organization)
        if organization == "org-slow":
            entered.set()
            await hang.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    limits = LimitsMiddleware(search_route, settings=settings, search_slot_wait_s=0.3)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # as the auth middleware does
        organization = dict(scope["headers"])[b"x-org"].decode()
        scope.setdefault("state", {})["principal"] = Principal(
            organization, is_admin=False, key_id=organization
        )
        await limits(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as caller:

        async def search(organization: str) -> httpx.Response:
            return await caller.get(
                "/v1/sources/s/search", params={"q": "a"}, headers={"x-org": organization}
            )

        slow = asyncio.create_task(search("org-slow"))
        await asyncio.wait_for(entered.wait(), 10)
        second_slow = asyncio.create_task(search("org-slow"))
        assert (await search("org-quick")).status_code == 200
        refused = await asyncio.wait_for(second_slow, 10)
        assert (
            refused.status_code == 503 and "one organization may hold all but one" in refused.json()["detail"]
        )
        assert ran == ["org-slow", "org-quick"]
        hang.set()
        assert (await asyncio.wait_for(slow, 10)).status_code == 200
