"""New versions of files on both databases: a version takes the old file's place in search only
when it completes, a failed one leaves the old file searchable, the same content is not processed
again, and racing versions leave exactly one file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from backburner.files.states import FileStatus
from backburner.files.store.records import FileRecord, Lease, PassageRow
from backburner.runtime import Runtime
from backburner.settings_loader import LoadedSettings
from tests.conftest import MakeSettings
from tests.integration.test_file_api import new_source, stored_blobs, upload
from tests.support.files import ORG, claim_rules, component, filler_paragraphs, pdf_bytes, served, wait_file

FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1, "searches_per_minute": 100_000}
MODES = ("hybrid", "vector", "lexical")
OLD_WORDS = "The cormorant dries its wings on the harbour wall."
NEW_WORDS = "The pelican scoops fish into its throat pouch."


def document(sentence: str, seed: int) -> bytes:
    return "\n\n".join([sentence, *filler_paragraphs(6, seed=seed)]).encode()


def settings_for(make_settings: MakeSettings, database_url: str, **overrides: Any) -> LoadedSettings:
    return make_settings(
        database_url=database_url, chunk_size_chars=500, chunk_overlap_chars=0, **FAST, **overrides
    )


async def search_files(client: httpx.AsyncClient, source_id: str, query: str, mode: str) -> set[str]:
    """The ids of the files whose passages the search returned."""
    response = await client.get(f"/v1/sources/{source_id}/search", params={"q": query, "mode": mode, "k": 50})
    assert response.status_code == 200, response.text
    return {hit["file_id"] for hit in response.json()["results"]}


async def assert_searched(client: httpx.AsyncClient, source_id: str, only: str, absent_words: str) -> None:
    """Every mode finds only file `only`; no passage holding `absent_words` is found."""
    for mode in MODES:
        assert await search_files(client, source_id, "cormorant pelican harbour pouch", mode) == {only}, mode
    assert await search_files(client, source_id, absent_words, "lexical") == set()


async def passage_count(runtime: Runtime, file_id: str) -> int:
    from backburner.files.tables import passages

    async with runtime.engine.connect() as conn:
        query = select(func.count()).select_from(passages).where(passages.c.file_id == file_id)
        return int((await conn.execute(query)).scalar_one())


async def file_ids_of(client: httpx.AsyncClient, source_id: str) -> list[str]:
    listed = (await client.get(f"/v1/sources/{source_id}/files")).json()["files"]
    return [file["id"] for file in listed]


async def test_a_completed_version_leaves_only_its_own_passages(
    make_settings: MakeSettings, database_url: str
) -> None:
    async with served(settings_for(make_settings, database_url)) as (_, client, runtime):
        source_id = await new_source(client)
        old = (await upload(client, source_id, "birds.md", document(OLD_WORDS, 1))).json()
        assert (await wait_file(runtime, old["id"])).status is FileStatus.COMPLETED
        await assert_searched(client, source_id, old["id"], "pelican")

        answer = await upload(client, source_id, "birds-v2.md", document(NEW_WORDS, 2), replaces=old["id"])
        assert answer.status_code == 201, answer.text
        new = answer.json()
        assert (new["replaces"], new["unchanged"], new["duplicate"]) == (old["id"], False, False)
        assert (await wait_file(runtime, new["id"])).status is FileStatus.COMPLETED

        await assert_searched(client, source_id, new["id"], "cormorant")
        assert await passage_count(runtime, old["id"]) == 0
        assert (await client.get(f"/v1/files/{old['id']}")).status_code == 404
        assert await file_ids_of(client, source_id) == [new["id"]]
        assert (await client.get(f"/v1/files/{new['id']}")).json()["replaces"] == old["id"]

        # By name: the newest file called so in the source is replaced.
        again = await upload(client, source_id, "birds-v2.md", document(OLD_WORDS, 3), on_conflict="replace")
        assert again.status_code == 201 and again.json()["replaces"] == new["id"], again.text
        assert (await wait_file(runtime, again.json()["id"])).status is FileStatus.COMPLETED
        await assert_searched(client, source_id, again.json()["id"], "pelican")
        assert await file_ids_of(client, source_id) == [again.json()["id"]]
        # A name the source does not hold makes an ordinary upload.
        other = await upload(client, source_id, "other.md", document(NEW_WORDS, 4), on_conflict="replace")
        assert other.status_code == 201 and other.json()["replaces"] is None


async def test_a_failed_version_leaves_the_old_file_searchable(
    make_settings: MakeSettings, database_url: str
) -> None:
    async with served(settings_for(make_settings, database_url)) as (_, client, runtime):
        source_id = await new_source(client)
        old = (await upload(client, source_id, "birds.md", document(OLD_WORDS, 1))).json()
        assert (await wait_file(runtime, old["id"])).status is FileStatus.COMPLETED
        passages_before = await passage_count(runtime, old["id"])

        broken = pdf_bytes([NEW_WORDS])[:200] + b"\x00garbage" * 50
        answer = await upload(client, source_id, "birds.pdf", broken, "application/pdf", replaces=old["id"])
        assert answer.status_code == 201, answer.text
        failed = await wait_file(runtime, answer.json()["id"])
        assert failed.status is FileStatus.ERROR and failed.replaces_file_id == old["id"]

        await assert_searched(client, source_id, old["id"], "pelican")
        assert await passage_count(runtime, old["id"]) == passages_before
        assert (await client.get(f"/v1/files/{old['id']}")).json()["status"] == "completed"

        # Its retry is a version of the same file again: it replaces the old one and the failure.
        retried = await client.post(f"/v1/files/{failed.id}/retry")
        assert retried.status_code == 201 and retried.json()["replaces"] == old["id"], retried.text
        assert (await wait_file(runtime, retried.json()["id"])).status is FileStatus.ERROR
        await assert_searched(client, source_id, old["id"], "pelican")


async def test_identical_content_is_not_processed_again(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = settings_for(make_settings, database_url)
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        content = document(OLD_WORDS, 1)
        old = (await upload(client, source_id, "birds.md", content)).json()
        assert (await wait_file(runtime, old["id"])).status is FileStatus.COMPLETED
        blobs = stored_blobs(loaded.settings.data_dir)

        for params in ({"replaces": old["id"]}, {"on_conflict": "replace"}):
            same = await upload(client, source_id, "birds.md", content, **params)
            assert same.status_code == 200, (params, same.text)
            body = same.json()
            assert (body["id"], body["unchanged"], body["status"]) == (old["id"], True, "completed")
        assert await file_ids_of(client, source_id) == [old["id"]]
        assert stored_blobs(loaded.settings.data_dir) == blobs
        counts = await component(runtime).stores.catalog.count_by_status(ORG)
        assert counts[FileStatus.COMPLETED] == 1 and sum(counts.values()) == 1


async def test_bad_version_requests_get_a_clear_error_and_change_nothing(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = settings_for(make_settings, database_url)
    async with served(loaded) as (_, client, runtime):
        source_id = await new_source(client)
        elsewhere = await new_source(client, "other")
        old = (await upload(client, source_id, "birds.md", document(OLD_WORDS, 1))).json()
        foreign = (await upload(client, elsewhere, "x.md", document(NEW_WORDS, 2))).json()
        await wait_file(runtime, old["id"])
        await wait_file(runtime, foreign["id"])
        blobs = stored_blobs(loaded.settings.data_dir)
        body = document(NEW_WORDS, 3)

        missing = await upload(client, source_id, "a.md", body, replaces="file-missing")
        assert missing.status_code == 404 and "replaces: file file-missing not found" in missing.text
        other_source = await upload(client, source_id, "a.md", body, replaces=foreign["id"])
        assert other_source.status_code == 409, other_source.text
        assert f"belongs to source {elsewhere}, not {source_id}" in other_source.json()["detail"]
        both = await upload(client, source_id, "a.md", body, replaces=old["id"], on_conflict="replace")
        assert both.status_code == 400 and "either `replaces` or `on_conflict`" in both.text
        taken = await upload(client, source_id, "birds.md", body, on_conflict="error")
        assert taken.status_code == 409 and "already holds a file named 'birds.md'" in taken.text
        for params in ({"on_conflict": "overwrite"}, {"replaces": "file/../x"}, {"replaces": "x" * 65}):
            refused = await upload(client, source_id, "a.md", body, **params)
            assert refused.status_code == 422, (params, refused.text)

        assert await file_ids_of(client, source_id) == [old["id"]]
        assert stored_blobs(loaded.settings.data_dir) == blobs
        assert (await upload(client, source_id, "new.md", body, on_conflict="error")).status_code == 201


# --- the moment of the swap, driven by hand (no workers run) ---------------------------------------


class ByHand:
    """Processes files through the stores as a worker does, a batch at a time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stores = component(runtime).stores
        self.embedder = component(runtime).embedding.chunks

    async def start(self, file_id: str) -> tuple[Lease, FileRecord]:
        now = self.runtime.clock.now()
        owner = f"by-hand:{file_id}"
        claimed = await self.stores.leases.claim(owner, now, claim_rules())
        assert claimed is not None and claimed.id == file_id
        lease = Lease(file_id, owner)
        file = await self.stores.leases.start_embedding(
            lease, now, total_chunks=2, embedding_model=self.embedder.model, parse_s=0, chunk_s=0
        )
        return lease, file

    async def store(self, lease: Lease, file: FileRecord, index: int, text: str, *, finish: bool) -> None:
        [vector] = await self.embedder.embed_packed([text])
        await self.stores.passages.store_batch(
            lease,
            file,
            [PassageRow(index, text, vector)],
            self.runtime.clock.now(),
            lease_s=30,
            embed_s=0,
            store_s=0,
            finish=finish,
        )

    async def complete(self, lease: Lease) -> None:
        """The last step of a file whose passages are all stored (a resumed file)."""
        await self.stores.leases.complete(lease, self.runtime.clock.now(), embed_s=0, store_s=0)

    async def process(self, file_id: str, text: str) -> None:
        lease, file = await self.start(file_id)
        await self.store(lease, file, 0, text, finish=False)
        await self.store(lease, file, 1, text, finish=True)


async def uploaded(client: httpx.AsyncClient, source_id: str, text: str, **params: Any) -> str:
    answer = await upload(client, source_id, "birds.md", text.encode(), **params)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def test_a_version_is_not_searched_before_it_completes_and_the_old_file_is_until_then(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = settings_for(make_settings, database_url, file_processing_workers=0)
    async with served(loaded) as (_, client, runtime):
        hand = ByHand(runtime)
        source_id = await new_source(client)
        old = await uploaded(client, source_id, OLD_WORDS)
        await hand.process(old, OLD_WORDS)
        await assert_searched(client, source_id, old, "pelican")

        new = await uploaded(client, source_id, NEW_WORDS, replaces=old)
        lease, file = await hand.start(new)
        await hand.store(lease, file, 0, NEW_WORDS, finish=False)
        assert await passage_count(runtime, new) == 1
        await assert_searched(client, source_id, old, "pelican")  # stored, not yet searched

        await hand.store(lease, file, 1, NEW_WORDS, finish=True)
        await assert_searched(client, source_id, new, "cormorant")
        assert await file_ids_of(client, source_id) == [new]

        # A version that stored passages and then failed is never searched; the file stays.
        failing = await uploaded(client, source_id, OLD_WORDS + " A heron too.", replaces=new)
        lease, file = await hand.start(failing)
        await hand.store(lease, file, 0, OLD_WORDS, finish=False)
        assert (await client.post(f"/v1/files/{failing}/cancel")).status_code == 200
        await assert_searched(client, source_id, new, "cormorant")
        assert await file_ids_of(client, source_id) == [new, failing]


async def test_a_version_whose_old_file_was_deleted_meanwhile_still_completes(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = settings_for(make_settings, database_url, file_processing_workers=0)
    async with served(loaded) as (_, client, runtime):
        hand = ByHand(runtime)
        source_id = await new_source(client)
        old = await uploaded(client, source_id, OLD_WORDS)
        await hand.process(old, OLD_WORDS)
        new = await uploaded(client, source_id, NEW_WORDS, replaces=old)
        lease, file = await hand.start(new)
        assert (await client.delete(f"/v1/files/{old}")).status_code == 204
        await hand.store(lease, file, 0, NEW_WORDS, finish=False)
        await hand.store(lease, file, 1, NEW_WORDS, finish=True)
        await assert_searched(client, source_id, new, "cormorant")
        assert await file_ids_of(client, source_id) == [new]


async def test_racing_versions_leave_exactly_one_file_the_last_completed(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = settings_for(make_settings, database_url, file_processing_workers=0)
    async with served(loaded) as (_, client, runtime):
        hand = ByHand(runtime)
        source_id = await new_source(client)
        old = await uploaded(client, source_id, OLD_WORDS)
        await hand.process(old, OLD_WORDS)

        # One after the other: the version that completes last wins, whichever was uploaded first.
        first = await uploaded(client, source_id, NEW_WORDS, replaces=old)
        first_work = await hand.start(first)
        second = await uploaded(client, source_id, NEW_WORDS + " Again.", replaces=old)
        await hand.process(second, NEW_WORDS + " Again.")
        await assert_searched(client, source_id, second, "cormorant")
        lease, file = first_work
        await hand.store(lease, file, 0, NEW_WORDS, finish=False)
        await hand.store(lease, file, 1, NEW_WORDS, finish=True)
        await assert_searched(client, source_id, first, "cormorant")
        assert await file_ids_of(client, source_id) == [first]

        # At the same moment: completions of one lineage take turns, and exactly one file is left.
        works = []
        for text in ("A pelican again.", "A pelican once more."):
            version = await uploaded(client, source_id, text, replaces=first)
            lease, file = await hand.start(version)
            await hand.store(lease, file, 0, text, finish=False)
            await hand.store(lease, file, 1, text, finish=False)
            works.append((lease, file))
        await asyncio.wait_for(asyncio.gather(*(hand.complete(lease) for lease, _ in works)), timeout=30)
        left = await file_ids_of(client, source_id)
        assert len(left) == 1 and left[0] in {file.id for _, file in works}, left
        await assert_searched(client, source_id, left[0], "cormorant")
        for file_id in [old, first, *(file.id for _, file in works)]:
            expected = 2 if file_id == left[0] else 0
            assert await passage_count(runtime, file_id) == expected, file_id


# --- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_uploads_new_versions(make_settings: MakeSettings, sqlite_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from backburner.cli import app as cli
    from tests.support.served import served as served_over_http

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["files", "upload", *args], env={"COLUMNS": "200"})
        return result.exit_code, result.stdout + result.stderr

    note = tmp_path / "birds.md"
    with served_over_http(settings_for(make_settings, sqlite_url)) as url:
        note.write_bytes(document(OLD_WORDS, 1))
        code, out = run(str(note), "--source", "docs", "--wait", "--url", url)
        assert code == 0, out
        note.write_bytes(document(NEW_WORDS, 2))
        code, out = run(str(note), "--source", "docs", "--on-conflict", "replace", "--wait", "--url", url)
        assert code == 0 and "(new version of file-" in out, out
        new_id = out.split("uploaded ", 1)[1].split(" as ", 1)[1].split()[0]
        code, out = run(str(note), "--source", "docs", "--replaces", new_id, "--url", url)
        assert code == 0 and "(unchanged: the file already holds this content)" in out, out
        code, out = run(str(note), str(note), "--source", "docs", "--replaces", new_id, "--url", url)
        assert code == 2 and "--replaces names one file" in out, out
        with httpx.Client(base_url=url) as http:
            [source] = http.get("/v1/sources", params={"name": "docs"}).json()
            listed = http.get(f"/v1/sources/{source['id']}/files").json()["files"]
        assert [file["id"] for file in listed] == [new_id]
