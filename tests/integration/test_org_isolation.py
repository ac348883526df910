"""Organizations: one key's organization never reads, lists, searches, cancels or deletes another's
objects (it gets 404, never 403), and the background jobs keep the organization on what they write.

Everything goes through the real app with `auth_mode=keys` and two organizations' keys; batches
are submitted to the provider emulator.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from backburner.auth import store as keys
from backburner.auth.middleware import is_protected
from backburner.batches.tables import llm_batch_deliveries, llm_batch_items, llm_batches
from backburner.emulator.admin_client import EmulatorAdmin
from backburner.emulator.testing import RunningEmulator
from backburner.files.states import FileStatus
from backburner.files.tables import files as files_table
from backburner.files.tables import passages
from backburner.leader.static import StaticLeadership
from backburner.runtime import Runtime
from tests.conftest import MakeSettings
from tests.support import batch_env as _support
from tests.support.app import asgi_client, make_key, started_app
from tests.support.batch_env import TEST_ELECTION, provider_settings, requests_for
from tests.support.files import wait_for
from tests.support.routes import api_routes

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

FAST_FILES = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}
OBJECT_PARAMETERS = {"batch_id", "file_id", "source_id"}
NOTE = b"The walrus basks on the ice floe while the gulls wheel overhead."


@dataclass
class Org:
    organization_id: str
    client: httpx.AsyncClient


@dataclass
class Deployment:
    app: FastAPI
    runtime: Runtime
    acme: Org
    globex: Org


async def _org(app: FastAPI, name: str, stack: AsyncExitStack) -> Org:
    token = await make_key(app, name, admin=True)
    principal = await keys.authenticate(app.state.runtime.engine, token)
    assert principal is not None
    return Org(principal.organization_id, await stack.enter_async_context(asgi_client(app, token)))


@asynccontextmanager
async def deployment(
    make_settings: MakeSettings, database_url: str, emulator: RunningEmulator
) -> AsyncIterator[Deployment]:
    settings = make_settings(
        database_url=database_url, auth_mode="keys", **provider_settings(emulator), **FAST_FILES
    )
    async with started_app(settings) as app, AsyncExitStack() as stack:
        runtime: Runtime = app.state.runtime
        # Admin keys: the admin routes are in scope too, and must be organization-scoped as well.
        acme, globex = await _org(app, "acme", stack), await _org(app, "globex", stack)
        assert acme.organization_id != globex.organization_id
        yield Deployment(app, runtime, acme, globex)


async def submit(org: Org, custom_ids: list[str], **headers: str) -> dict[str, Any]:
    body = {"provider": "anthropic", "model": "test-model", "requests": requests_for(custom_ids)}
    response = await org.client.post("/v1/batches", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def upload(org: Org, source_id: str, data: bytes = NOTE) -> httpx.Response:
    return await org.client.post(
        f"/v1/sources/{source_id}/files", files={"file": ("note.txt", data, "text/plain")}
    )


async def new_source(org: Org, name: str) -> str:
    response = await org.client.post("/v1/sources", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def wait_completed(org: Org, file_id: str) -> None:
    async def completed() -> bool:
        response = await org.client.get(f"/v1/files/{file_id}")
        return bool(response.json()["status"] == FileStatus.COMPLETED.value)

    await wait_for(completed, 30, f"file {file_id} to complete")


def object_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every protected route that names an object by id."""
    routes = []
    for method, path in api_routes(app):
        names = set(re.findall(r"\{([^}]+)\}", path))
        if is_protected(path, metrics_closed=False) and names and names <= OBJECT_PARAMETERS:
            routes.append((method, path))
    return routes


async def test_another_organization_gets_404_for_every_object_route(
    make_settings: MakeSettings, database_url: str, emulator: RunningEmulator
) -> None:
    async with deployment(make_settings, database_url, emulator) as d:
        acme, globex = d.acme, d.globex
        batch = await submit(acme, ["a-1", "a-2"])
        source_id = await new_source(acme, "handbook")
        uploaded = await upload(acme, source_id)
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["id"]
        await wait_completed(acme, file_id)
        ids = {"batch_id": batch["id"], "file_id": file_id, "source_id": source_id}

        routes = object_routes(d.app)
        covered = {template for _, template in routes}
        assert {
            "/v1/batches/{batch_id}",
            "/v1/batches/{batch_id}/cancel",
            "/v1/sources/{source_id}/search",
            "/v1/files/{file_id}",
        } <= covered, covered
        for method, template in routes:
            path = template.format(**ids)
            # Every request carries what any of these routes needs (a query, a file), so only
            # the ownership of the id can refuse it.
            kwargs: dict[str, Any] = {"params": {"q": "walrus"}}
            if method == "POST" and template.endswith("/reembed"):
                kwargs["json"] = {"model": "hash-512"}
            elif method == "POST":
                kwargs["files"] = {"file": ("note.txt", NOTE, "text/plain")}
            response = await globex.client.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            # The answer is the same as for an id that never existed: nothing to probe.
            unknown = await globex.client.request(method, re.sub(r"\{[^}]+\}", "nope-1", template), **kwargs)
            assert unknown.status_code == 404, (method, template, unknown.text)

        # Nothing of acme's changed: not cancelled, not deleted, no file added to its source, not
        # re-embedded.
        assert (await acme.client.get(f"/v1/batches/{batch['id']}")).json()["cancel_requested_at"] is None
        kept = await acme.client.get(f"/v1/files/{file_id}")
        assert kept.status_code == 200 and kept.json()["status"] == "completed"
        listed = (await acme.client.get(f"/v1/sources/{source_id}/files")).json()["files"]
        assert [f["id"] for f in listed] == [file_id]
        assert (await acme.client.get(f"/v1/batches/{batch['id']}/results")).status_code == 200
        assert (await acme.client.get(f"/v1/sources/{source_id}/reembed")).json()["status"] == "none"


async def test_listings_searches_and_names_are_per_organization(
    make_settings: MakeSettings, database_url: str, emulator: RunningEmulator
) -> None:
    async with deployment(make_settings, database_url, emulator) as d:
        acme, globex = d.acme, d.globex
        acme_batch = await submit(acme, ["a-1"], **{"idempotency-key": "order-1"})
        acme_source = await new_source(acme, "handbook")
        acme_file = (await upload(acme, acme_source)).json()["id"]

        # The same idempotency key, source name and content in another organization are its own.
        globex_batch = await submit(globex, ["g-1"], **{"idempotency-key": "order-1"})
        assert globex_batch["id"] != acme_batch["id"]
        globex_source = await new_source(globex, "handbook")
        again = await upload(globex, globex_source)
        assert again.status_code == 201 and again.json()["duplicate"] is False
        globex_file = again.json()["id"]
        await wait_completed(acme, acme_file)
        await wait_completed(globex, globex_file)

        page = (await globex.client.get("/v1/batches")).json()
        assert [b["id"] for b in page["data"]] == [globex_batch["id"]]
        # A cursor naming another organization's batch is unknown here, like one that never existed.
        foreign = await globex.client.get("/v1/batches", params={"before": acme_batch["id"]})
        unknown = await globex.client.get("/v1/batches", params={"before": "batch-never-made"})
        assert foreign.status_code == unknown.status_code == 400
        assert foreign.json()["detail"].replace(acme_batch["id"], "X") == unknown.json()["detail"].replace(
            "batch-never-made", "X"
        )
        assert [s["id"] for s in (await globex.client.get("/v1/sources")).json()] == [globex_source]
        named = await globex.client.get("/v1/sources", params={"name": "handbook"})
        assert [s["id"] for s in named.json()] == [globex_source]
        assert (await globex.client.get("/v1/sources", params={"after": acme_source})).status_code == 400
        hits = (await globex.client.get(f"/v1/sources/{globex_source}/search", params={"q": "walrus"})).json()
        assert hits["results"] and {h["file_id"] for h in hits["results"]} == {globex_file}

        # The admin view is the caller's organization's too.
        jobs = (await globex.client.get("/api/admin/batch-jobs")).json()
        assert [b["id"] for b in jobs["running"]] == [globex_batch["id"]]
        assert jobs["counts"] == {"anthropic": {"running": 1}}


async def test_background_jobs_keep_the_organization_on_what_they_write(
    make_settings: MakeSettings, database_url: str, emulator: RunningEmulator
) -> None:
    async with deployment(make_settings, database_url, emulator) as d:
        acme, globex = d.acme, d.globex
        batches = {org.organization_id: await submit(org, ["x-1", "x-2"]) for org in (acme, globex)}
        sources = {org.organization_id: await new_source(org, "docs") for org in (acme, globex)}
        for org in (acme, globex):
            file_id = (await upload(org, sources[org.organization_id])).json()["id"]
            await wait_completed(org, file_id)

        # The leader's poll ingests both organizations' results and queues their completions.
        async with EmulatorAdmin(emulator.base_url) as admin:
            for batch in batches.values():
                await admin.end_batch(batch["provider_batch_id"])
        component = d.runtime.batches
        assert component is not None
        leadership = await StaticLeadership.claim(d.runtime.engine, TEST_ELECTION, d.runtime.instance_id)
        report = await component.poller.run_cycle(leadership)
        assert report.completed == 2, report

        async with d.runtime.engine.connect() as conn:
            for org_id, batch in batches.items():
                assert (
                    await conn.execute(
                        select(llm_batches.c.organization_id, llm_batches.c.status).where(
                            llm_batches.c.id == batch["id"]
                        )
                    )
                ).one() == (org_id, "completed")
                items = (
                    await conn.execute(
                        select(llm_batch_items.c.organization_id, llm_batch_items.c.status).where(
                            llm_batch_items.c.batch_id == batch["id"]
                        )
                    )
                ).all()
                assert sorted(items) == [(org_id, "succeeded")] * 2
                deliveries = (
                    await conn.execute(
                        select(llm_batch_deliveries.c.organization_id).where(
                            llm_batch_deliveries.c.batch_id == batch["id"]
                        )
                    )
                ).scalars()
                assert list(deliveries) == [org_id]
            for org_id, source_id in sources.items():
                written = (
                    await conn.execute(
                        select(passages.c.organization_id)
                        .join(files_table, files_table.c.id == passages.c.file_id)
                        .where(files_table.c.source_id == source_id)
                    )
                ).scalars()
                owners = set(written)
                assert owners == {org_id}, owners
        # Each organization reads its own results, and only its own.
        for org in (acme, globex):
            own = batches[org.organization_id]
            response = await org.client.get(f"/v1/batches/{own['id']}/results")
            assert [line for line in response.text.splitlines() if line], response.text
            other = next(b for o, b in batches.items() if o != org.organization_id)
            assert (await org.client.get(f"/v1/batches/{other['id']}/results")).status_code == 404
