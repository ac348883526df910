"""The sources and files API, in-process: uploads of every type, bad input, listing, search."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, func, select

from backburner.files.states import FileStatus
from backburner.files.tables import files as files_table
from backburner.files.tables import passages
from tests.conftest import MakeSettings
from tests.support.files import (
    add_file,
    component,
    create_source,
    filler_paragraphs,
    pdf_bytes,
    samples,
    served,
    wait_file,
    wait_first_sweep,
)

FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}


async def upload(
    client: httpx.AsyncClient,
    source_id: str,
    name: str,
    data: bytes,
    content_type: str = "text/plain",
    **params: Any,
) -> httpx.Response:
    return await client.post(
        f"/v1/sources/{source_id}/files", files={"file": (name, data, content_type)}, params=params
    )


async def new_source(client: httpx.AsyncClient, name: str = "docs") -> str:
    response = await client.post("/v1/sources", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stored_blobs(data_dir: Path) -> list[Path]:
    return (
        [p for p in (data_dir / "blobs").rglob("*") if p.is_file()] if (data_dir / "blobs").exists() else []
    )


async def test_sources_are_created_listed_and_named_once(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with served(make_settings(database_url=sqlite_url, **FAST)) as (_, client, _runtime):
        source_id = await new_source(client, "handbook")
        assert (await client.post("/v1/sources", json={"name": "handbook"})).status_code == 409
        assert (await client.post("/v1/sources", json={"name": ""})).status_code == 422
        listed = (await client.get("/v1/sources")).json()
        assert [s["name"] for s in listed] == ["handbook"]
        assert (await client.get(f"/v1/sources/{source_id}")).json()["id"] == source_id
        assert (await client.get("/v1/sources/source-nope")).status_code == 404
        # Input the database would refuse gets a 4xx, never a 500.
        assert (await client.post("/v1/sources", json={"name": "a\x00b"})).status_code == 422
        assert (
            await client.post("/v1/sources", json={"name": "x", "description": "\x00"})
        ).status_code == 422
        assert (await client.get("/v1/sources/source%00x")).status_code == 422
        assert (await client.get("/v1/files/file%00x")).status_code == 422
        assert (await client.delete("/v1/files/" + "f" * 65)).status_code == 422
        odd_type = await client.post(
            f"/v1/sources/{source_id}/files", files={"file": ("a.txt", b"hello", "text/plain\x00; x")}
        )
        assert odd_type.status_code == 201 and odd_type.json()["content_type"] is None


async def test_each_parser_reads_a_real_file_through_the_upload_path(
    make_settings: MakeSettings, database_url: str
) -> None:
    # The process pool here, as in production: every parser runs in a spawned process.
    loaded = make_settings(
        database_url=database_url, file_poll_interval_seconds=0.1, file_processing_processes=1
    )
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        uploaded: dict[str, str] = {}
        for sample in samples():
            response = await upload(client, source_id, sample.name, sample.data, sample.content_type)
            assert response.status_code == 201, (sample.name, response.text)
            body = response.json()
            assert (body["status"], body["duplicate"], body["file_name"]) == ("pending", False, sample.name)
            uploaded[sample.name] = body["id"]
        for sample in samples():
            record = await wait_file(runtime, uploaded[sample.name], timeout_s=60)
            assert record.status is FileStatus.COMPLETED, (sample.name, record.error_message)
            assert record.total_chunks == record.chunks_embedded >= 1
            shown = (await client.get(f"/v1/files/{record.id}")).json()
            assert shown["status"] == "completed"
            assert set(shown["stage_seconds"]) == {"queued", "parse", "chunk", "embed", "store"}
            assert all(v is not None and v >= 0 for v in shown["stage_seconds"].values()), shown[
                "stage_seconds"
            ]
            found = (
                await client.get(f"/v1/sources/{source_id}/search", params={"q": sample.phrase, "k": 1})
            ).json()
            top = found["results"][0]
            assert top["file_name"] == sample.name, (sample.name, found)
            assert sample.phrase in " ".join(top["text"].split()), top["text"]
        html = await _passage_texts(runtime, uploaded["page.html"])
        assert "var x" not in html and "p{}" not in html  # text only, no script or style


async def _passage_texts(runtime: Any, file_id: str) -> str:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(select(passages.c.text).where(passages.c.file_id == file_id))
        return " ".join(text for (text,) in rows)


async def test_search_finds_the_passage_that_holds_the_answer(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    paragraphs = filler_paragraphs(60)
    paragraphs.insert(37, "The lighthouse keeper's secret code is AMBER-42, written under the stairs.")
    document = "# Field notes\n\n" + "\n\n".join(paragraphs)
    async with served(
        make_settings(database_url=sqlite_url, chunk_size_chars=600, chunk_overlap_chars=60, **FAST)
    ) as (
        _,
        client,
        runtime,
    ):
        source_id = await new_source(client)
        body = (await upload(client, source_id, "notes.md", document.encode(), "text/markdown")).json()
        other = (
            await upload(client, source_id, "other.md", "\n\n".join(filler_paragraphs(20, seed=3)).encode())
        ).json()
        record = await wait_file(runtime, body["id"])
        await wait_file(runtime, other["id"])
        assert (
            record.status is FileStatus.COMPLETED
            and record.total_chunks is not None
            and record.total_chunks > 10
        )
        response = await client.get(
            f"/v1/sources/{source_id}/search",
            params={"q": "What is the lighthouse keeper's secret code?", "k": 3},
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 3
        assert "AMBER-42" in results[0]["text"]
        assert results[0]["file_name"] == "notes.md"
        assert results[0]["score"] > results[1]["score"]
        assert (await client.get(f"/v1/sources/{source_id}/search", params={"q": ""})).status_code == 422
        assert (
            await client.get(f"/v1/sources/{source_id}/search", params={"q": "x", "k": 0})
        ).status_code == 422


async def test_bad_uploads_get_a_clear_error_and_store_nothing(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(database_url=sqlite_url, file_upload_max_bytes=4096, **FAST)
    data_dir = loaded.settings.data_dir
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        cases = [
            ("empty.txt", b"", "text/plain", 400, "empty"),
            ("tool.exe", b"MZ\x90\x00binary", "application/octet-stream", 415, "unsupported file type"),
            ("photo.png", b"\x89PNG\r\n\x1a\n....", "image/png", 415, "unsupported file type"),
            ("looks.txt", bytes(range(256)) * 8, "text/plain", 415, "not text"),
            (
                "big.txt",
                b"word " * 2000,
                "text/plain",
                413,
                "4,096 bytes (0.003906 MiB), the limit set by file_upload_max_bytes",
            ),
        ]
        for name, data, content_type, status, words in cases:
            response = await upload(client, source_id, name, data, content_type)
            assert response.status_code == status, (name, response.text)
            assert words in response.json()["detail"], (name, response.json())
        not_multipart = await client.post(f"/v1/sources/{source_id}/files", content=b"hello")
        assert not_multipart.status_code == 400
        no_file = await client.post(
            f"/v1/sources/{source_id}/files", data={"other": "x"}, files={"x": ("a", b"b")}
        )
        assert no_file.status_code == 400 and "`file`" in no_file.json()["detail"]
        assert (await upload(client, "source-missing", "a.txt", b"hello")).status_code == 404
        listed = (await client.get(f"/v1/sources/{source_id}/files")).json()
        assert listed == {"files": [], "next_cursor": None}
        assert stored_blobs(data_dir) == []
        assert (await component(runtime).stores.catalog.count_by_status()) == {s: 0 for s in FileStatus}


async def test_a_corrupt_pdf_ends_in_error_with_the_parsers_reason(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with served(make_settings(database_url=sqlite_url, **FAST)) as (_, client, runtime):
        source_id = await new_source(client)
        broken = pdf_bytes(["Hello"])[:200] + b"\x00garbage" * 50
        body = (await upload(client, source_id, "broken.pdf", broken, "application/pdf")).json()
        record = await wait_file(runtime, body["id"])
        assert record.status is FileStatus.ERROR
        assert record.error_message is not None and record.error_message.startswith("corrupt PDF"), record
        shown = (await client.get(f"/v1/files/{record.id}")).json()
        assert shown["error_message"] == record.error_message
        cancel = await client.post(f"/v1/files/{record.id}/cancel")
        assert cancel.status_code == 409 and "cannot move from error to error" in cancel.json()["detail"]


async def test_a_path_in_the_name_is_cut_to_its_last_part(
    make_settings: MakeSettings, sqlite_url: str, tmp_path: Path
) -> None:
    loaded = make_settings(database_url=sqlite_url, **FAST)
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        response = await upload(client, source_id, "../../etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        assert response.status_code == 201, response.text
        assert response.json()["file_name"] == "passwd"
        record = await wait_file(runtime, response.json()["id"])
        assert record.status is FileStatus.COMPLETED
        blobs = stored_blobs(loaded.settings.data_dir)
        assert len(blobs) == 1 and blobs[0].is_relative_to(loaded.settings.blob_dir.resolve())
        assert not (tmp_path / "etc").exists()
        windows = await upload(client, source_id, "..\\..\\windows\\system.ini", b"[boot]\n", "text/plain")
        assert windows.status_code == 201 and windows.json()["file_name"] == "system.ini"


async def test_a_ten_megabyte_single_line_is_chunked_and_completed(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    line = ("alpha beta gamma delta epsilon zeta eta theta iota kappa " * 180_000)[: 10 * 1024 * 1024]
    assert "\n" not in line
    loaded = make_settings(database_url=sqlite_url, embedding_batch_size=512, **FAST)
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        body = (await upload(client, source_id, "line.txt", line.encode())).json()
        record = await wait_file(runtime, body["id"], timeout_s=90)
        assert record.status is FileStatus.COMPLETED, record.error_message
        assert record.total_chunks == record.chunks_embedded
        assert record.total_chunks is not None and record.total_chunks > 8000


async def test_listing_times_out_the_whole_source_in_one_update_and_pages(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = make_settings(
        database_url=database_url, file_processing_workers=0, file_sweep_interval_seconds=3600, **FAST
    )
    async with served(loaded) as (_, client, runtime):
        await wait_first_sweep(runtime)
        source_id = await create_source(runtime)
        aged = runtime.clock.now() - timedelta(minutes=31)
        old = [await add_file(runtime, source_id, f"old {i}".encode(), created_at=aged) for i in range(25)]
        fresh = await add_file(runtime, source_id, b"fresh")
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
        try:
            first = await client.get(
                f"/v1/sources/{source_id}/files", params={"check_status_updates": "true", "limit": 10}
            )
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
        assert first.status_code == 200, first.text
        # Only the files table's: the instance's own background jobs may write meanwhile.
        updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE FILES")]
        assert len(updates) == 1, updates
        listed = first.json()["files"]
        cursor = first.json()["next_cursor"]
        while cursor is not None:
            page = (
                await client.get(f"/v1/sources/{source_id}/files", params={"limit": 10, "after": cursor})
            ).json()
            listed += page["files"]
            cursor = page["next_cursor"]
        # Upload order: by creation time, then id (the aged files share one creation time).
        assert [f["id"] for f in listed] == [*sorted(f.id for f in old), fresh.id]
        message = loaded.settings.timeout_message()
        assert message == "File processing timed out after 30 minutes. Please try again."
        assert all(f["status"] == "error" and f["error_message"] == message for f in listed[:25])
        assert listed[25]["status"] == "pending"
        assert (
            await client.get(f"/v1/sources/{source_id}/files", params={"limit": 100_000})
        ).status_code == 422
        assert (
            await client.get(f"/v1/sources/{source_id}/files", params={"after": "nonsense"})
        ).status_code == 400


async def test_a_file_past_its_deadline_is_timed_out_when_read(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(
        database_url=sqlite_url, file_processing_workers=0, file_sweep_interval_seconds=3600, **FAST
    )
    async with served(loaded) as (_, client, runtime):
        await wait_first_sweep(runtime)
        source_id = await create_source(runtime)
        record = await add_file(
            runtime, source_id, b"x", created_at=runtime.clock.now() - timedelta(minutes=30)
        )
        shown = (await client.get(f"/v1/files/{record.id}")).json()
        assert (shown["status"], shown["error_message"]) == ("error", loaded.settings.timeout_message())
        metrics = (await client.get("/metrics")).text
        assert 'backburner_file_timeouts_total{enforcer="read"} 1.0' in metrics


async def test_duplicate_content_is_found_by_hash_within_a_source(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with served(make_settings(database_url=sqlite_url, **FAST)) as (_, client, _runtime):
        source_id = await new_source(client)
        first = await upload(client, source_id, "a.txt", b"same content here")
        again = await upload(client, source_id, "b.txt", b"same content here")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
        refused = await upload(client, source_id, "c.txt", b"same content here", duplicate_handling="error")
        assert refused.status_code == 409
        allowed = await upload(client, source_id, "d.txt", b"same content here", duplicate_handling="allow")
        assert allowed.status_code == 201 and allowed.json()["id"] != first.json()["id"]
        elsewhere = await upload(client, await new_source(client, "other"), "a.txt", b"same content here")
        assert elsewhere.status_code == 201
        assert first.json()["sha256"] == hashlib.sha256(b"same content here").hexdigest()


async def test_delete_removes_the_file_its_passages_and_its_blob(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    loaded = make_settings(database_url=sqlite_url, **FAST)
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        body = (await upload(client, source_id, "a.md", "\n\n".join(filler_paragraphs(10)).encode())).json()
        await wait_file(runtime, body["id"])
        assert len(stored_blobs(loaded.settings.data_dir)) == 1
        assert (await client.delete(f"/v1/files/{body['id']}")).status_code == 204
        assert (await client.get(f"/v1/files/{body['id']}")).status_code == 404
        assert (await client.delete(f"/v1/files/{body['id']}")).status_code == 404
        assert stored_blobs(loaded.settings.data_dir) == []
        async with runtime.engine.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(passages))).scalar_one()
            rows = (await conn.execute(select(func.count()).select_from(files_table))).scalar_one()
        assert (left, rows) == (0, 0)
        metrics = (await client.get("/metrics")).text
        for family in (
            "backburner_files{",
            "backburner_file_stage_seconds_bucket",
            "backburner_file_retries_total",
        ):
            assert family in metrics, family
