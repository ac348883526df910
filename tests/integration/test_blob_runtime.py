"""Blob stores inside a running service: files processed and deleted through each store,
readiness and uploads while the S3 bucket is missing or credentials are refused, a missing blob
failing its file with the store and key named, and the warning about a local store on
PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backburner.files.blobs import BlobStore, file_blob_key
from backburner.files.states import FileStatus
from backburner.files.store.records import NewFile
from backburner.ids import new_id
from tests.conftest import MakeSettings
from tests.support.files import ORG, component, create_source, filler_paragraphs, pdf_bytes, served, wait_file
from tests.support.s3server import S3Server

FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}
DOCUMENT = "\n\n".join(filler_paragraphs(8)).encode()


async def upload(
    client: httpx.AsyncClient, source_id: str, name: str, data: bytes, kind: str
) -> httpx.Response:
    return await client.post(f"/v1/sources/{source_id}/files", files={"file": (name, data, kind)})


async def new_source(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/sources", json={"name": "docs"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def store_settings(name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if name != "s3":
        return {"blob_store": name}
    server: S3Server = request.getfixturevalue("s3_server")
    return server.settings(server.new_bucket())


@pytest.mark.parametrize("store_name", ["local", "database", "s3"])
async def test_files_are_processed_retried_and_deleted_with_their_blobs(
    make_settings: MakeSettings, database_url: str, store_name: str, request: pytest.FixtureRequest
) -> None:
    loaded = make_settings(database_url=database_url, **FAST, **store_settings(store_name, request))
    async with served(loaded) as (_, client, runtime):
        blobs: BlobStore = component(runtime).blobs
        assert blobs.name == store_name
        source_id = await new_source(client)
        body = (await upload(client, source_id, "a.md", DOCUMENT, "text/markdown")).json()
        done = await wait_file(runtime, body["id"])
        assert done.status is FileStatus.COMPLETED, done.error_message
        assert await blobs.read_bytes(done.blob_key) == DOCUMENT
        scratch = loaded.settings.scratch_dir
        assert not scratch.exists() or list(scratch.iterdir()) == []  # temporary copies are gone

        broken = (await upload(client, source_id, "b.pdf", pdf_bytes(["x"])[:300], "application/pdf")).json()
        failed = await wait_file(runtime, broken["id"])
        assert failed.status is FileStatus.ERROR
        retried = await client.post(f"/v1/files/{failed.id}/retry")
        assert retried.status_code == 201, retried.text
        again = await component(runtime).stores.catalog.get(ORG, retried.json()["id"])
        assert await blobs.read_bytes(again.blob_key) == pdf_bytes(["x"])[:300]

        for file_id in (done.id, failed.id, retried.json()["id"]):
            record = await component(runtime).stores.catalog.get(ORG, file_id)
            assert (await client.delete(f"/v1/files/{file_id}")).status_code == 204
            assert not await blobs.exists(record.blob_key), f"the blob of {file_id} outlived it"


async def test_a_missing_bucket_makes_readiness_fail_and_uploads_refused_until_it_exists(
    make_settings: MakeSettings, sqlite_url: str, s3_server: S3Server
) -> None:
    bucket = f"bb-later-{new_id('b')[-8:].lower()}"
    loaded = make_settings(database_url=sqlite_url, **FAST, **s3_server.settings(bucket))
    async with served(loaded) as (_, client, runtime):
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["blob_store"]
        detail = ready.json()["checks"]["blob_store"]["detail"]
        assert f"the S3 bucket '{bucket}' does not exist at {s3_server.endpoint_url}" in detail, detail
        source_id = await new_source(client)
        refused = await upload(client, source_id, "a.txt", b"some text", "text/plain")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["retry-after"] == "5"
        assert "uploads are refused until the blob store works again" in refused.json()["detail"]
        assert bucket in refused.json()["detail"]
        assert (await client.get(f"/v1/sources/{source_id}/files")).json()["files"] == []

        s3_server.client().create_bucket(Bucket=bucket)
        assert (await client.get("/readyz")).status_code == 200
        accepted = await upload(client, source_id, "a.txt", DOCUMENT, "text/plain")
        assert accepted.status_code == 201, accepted.text
        assert (await wait_file(runtime, accepted.json()["id"])).status is FileStatus.COMPLETED


@pytest.fixture
def strict_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "strict-s3.log", require_auth=True)
    yield server
    server.stop()


async def test_refused_credentials_make_readiness_fail_and_uploads_refused(
    make_settings: MakeSettings, sqlite_url: str, strict_s3_server: S3Server
) -> None:
    loaded = make_settings(database_url=sqlite_url, **FAST, **strict_s3_server.settings("some-bucket"))
    async with served(loaded) as (_, client, _runtime):
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()["checks"]["blob_store"]["detail"]
        assert "refused access to the S3 bucket 'some-bucket'" in detail, detail
        assert "s3_secret_access_key" in detail and "testing-secret" not in detail
        refused = await upload(client, await new_source(client), "a.txt", b"text", "text/plain")
        assert refused.status_code == 503 and "refused access" in refused.json()["detail"]


async def test_a_file_whose_blob_is_missing_fails_naming_the_store_and_the_key(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = make_settings(database_url=database_url, **FAST)
    async with served(loaded) as (_, _client, runtime):
        files = component(runtime)
        file_id = new_id("file")
        key = file_blob_key(file_id)
        await files.stores.catalog.create(
            NewFile(file_id, ORG, await create_source(runtime), "lost.md", None, 10, "0" * 64, key),
            runtime.clock.now(),
        )
        failed = await wait_file(runtime, file_id)
    assert failed.status is FileStatus.ERROR
    message = failed.error_message or ""
    store = loaded.settings.effective_blob_store
    assert message.startswith("the uploaded content is missing from storage"), message
    assert f"{key!r} in the {store} blob store" in message and "after 5 attempts" in message, message


async def test_a_local_store_on_postgresql_warns_that_the_directory_must_be_shared(
    make_settings: MakeSettings, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backburner")
    async with served(make_settings(database_url=postgres_url, **FAST)):
        pass
    assert not [r for r in caplog.records if getattr(r, "event", None) == "blobs.local_on_postgres"]
    async with served(make_settings(database_url=postgres_url, blob_store="local", **FAST)):
        pass
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "blobs.local_on_postgres"]
    assert "every instance must mount this same directory" in warning.detail  # type: ignore[attr-defined]
