"""Search through the API on both databases: the three modes, a rare name, filters, hostile
queries, and deletion, with the default `hash` embedder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select, text

from backburner.db.engine import create_engine_for_url
from backburner.db.transactions import reading
from backburner.files.states import FileStatus
from backburner.files.store.sources import SourceStore
from backburner.files.tables import passages
from tests.conftest import MakeSettings
from tests.support.files import ORG, filler_paragraphs, served, wait_file

FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}
NAME_SENTENCE = "The ledger was handed to Thaddeus Quimby at the old customs house."
HOSTILE = [
    '"',
    '""',
    "'",
    "AND",
    "OR",
    "NOT",
    "a AND",
    "*",
    "a*",
    "NEAR(",
    "NEAR(a b",
    "a NEAR/3 b",
    "(",
    ")",
    "{a b}",
    "col:term",
    "text:river",
    "^river",
    "-river",
    "!river",
    "river & | !",
    "river <-> stone",
    ":*",
    "'; DROP TABLE passages; --",
    "\\",
    "%",
    "_",
    "\x00",
    "river\x00stone",
    "\x01\x02\x7f",
    "😀 emoji",
    "Ünïcödé ﬁ ß",
    "x" * 10_000,
    " ".join(["river"] * 500),
    " ".join(f"w{i}" for i in range(2_000)),
]


async def _upload(client: httpx.AsyncClient, source_id: str, name: str, body: str) -> str:
    response = await client.post(
        f"/v1/sources/{source_id}/files", files={"file": (name, body.encode(), "text/plain")}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _search(client: httpx.AsyncClient, source_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sources/{source_id}/search", params=params)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def test_hybrid_vector_and_lexical_search_with_filters_and_deletion(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = make_settings(
        database_url=database_url,
        chunk_size_chars=500,
        chunk_overlap_chars=0,
        searches_per_minute=100_000,
        **FAST,
    )
    async with served(loaded) as (_, client, runtime):
        source_id = str((await client.post("/v1/sources", json={"name": "docs"})).json()["id"])
        paragraphs = filler_paragraphs(30, seed=11)
        paragraphs.insert(17, NAME_SENTENCE)
        ids = {
            "notes.txt": await _upload(client, source_id, "notes.txt", "\n\n".join(paragraphs)),
            "abc.md": await _upload(client, source_id, "abc.md", "\n\n".join(filler_paragraphs(12, seed=5))),
            "guide.md": await _upload(
                client,
                source_id,
                "guide.md",
                "The spare keys are stored in the blue tin above the boiler.\n\n"
                + "\n\n".join(filler_paragraphs(8, seed=6)),
            ),
        }
        for file_id in ids.values():
            assert (await wait_file(runtime, file_id)).status is FileStatus.COMPLETED

        # A name that occurs once in the corpus comes first in hybrid and lexical.
        for mode in ("hybrid", "lexical"):
            results = await _search(client, source_id, q="Who is Thaddeus Quimby?", k=5, mode=mode)
            assert "Thaddeus Quimby" in results[0]["text"], (mode, results[0])
            assert results[0]["file_id"] == ids["notes.txt"]
            assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
        lexical = await _search(client, source_id, q="Thaddeus Quimby", k=5, mode="lexical")
        assert lexical[0]["lexical_score"] is not None and lexical[0]["vector_score"] is None
        assert lexical[0]["score"] == lexical[0]["lexical_score"]
        # Words that occur nowhere find nothing lexically.
        assert await _search(client, source_id, q="zzyzx qwertyuiop", mode="lexical") == []

        # Vector mode: cosine scores, best first, no lexical score.
        vector = await _search(client, source_id, q="Where are the spare keys stored?", k=5, mode="vector")
        assert len(vector) == 5
        assert all(r["lexical_score"] is None and r["score"] == r["vector_score"] for r in vector)
        assert [r["score"] for r in vector] == sorted((r["score"] for r in vector), reverse=True)

        # Hybrid carries both scores where both rankings found the passage, and the fused score.
        hybrid = await _search(client, source_id, q="Where are the spare keys stored?", k=5)
        assert "spare keys" in hybrid[0]["text"]
        top = hybrid[0]
        assert top["vector_score"] is not None and top["lexical_score"] is not None
        assert 0 < top["score"] <= 2 / 61
        assert [r["score"] for r in hybrid] == sorted((r["score"] for r in hybrid), reverse=True)

        # Anything else as a mode is refused, naming the parameter.
        refused = await client.get(f"/v1/sources/{source_id}/search", params={"q": "x", "mode": "bm25"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", "mode"]

        # Filters: by id (repeated or comma-separated), by name glob; unknown ids match nothing.
        for mode in ("hybrid", "vector", "lexical"):
            md = await _search(client, source_id, q="river stone keys", k=50, mode=mode, file_name="*.md")
            assert md and {r["file_name"] for r in md} <= {"abc.md", "guide.md"}, mode
            one = await _search(client, source_id, q="river stone", k=50, mode=mode, file_ids=ids["abc.md"])
            assert one and {r["file_id"] for r in one} == {ids["abc.md"]}, mode
            two = await _search(
                client,
                source_id,
                q="river stone",
                k=50,
                mode=mode,
                file_ids=f"{ids['abc.md']},{ids['guide.md']}",
            )
            assert {r["file_id"] for r in two} == {ids["abc.md"], ids["guide.md"]}, mode
            repeated = await client.get(
                f"/v1/sources/{source_id}/search",
                params=[
                    ("q", "river stone"),
                    ("k", "50"),
                    ("mode", mode),
                    ("file_ids", ids["abc.md"]),
                    ("file_ids", ids["guide.md"]),
                ],
            )
            assert {r["file_id"] for r in repeated.json()["results"]} == {ids["abc.md"], ids["guide.md"]}
            assert await _search(client, source_id, q="river", mode=mode, file_ids="file-unknown") == []
            assert await _search(client, source_id, q="river", mode=mode, file_ids="bad id;--") == []
            # Glob characters of the databases are literal: `_` and `%` are not wildcards.
            for glob, expected in [
                ("a?c.md", {"abc.md"}),
                ("a_c.md", set()),
                ("%", set()),
                ("[a]bc.md", set()),
                ("*.MD", set()),
                ("guide.md", {"guide.md"}),
            ]:
                found = await _search(
                    client, source_id, q="river stone keys", k=50, mode=mode, file_name=glob
                )
                assert {r["file_name"] for r in found} == expected, (mode, glob)

        # Hostile query text and filters: a 200 or a clear 4xx, never a 5xx.
        for query in HOSTILE:
            for mode in ("hybrid", "vector", "lexical"):
                response = await client.get(
                    f"/v1/sources/{source_id}/search", params={"q": query, "mode": mode}
                )
                assert response.status_code in (200, 422), (query[:40], mode, response.text[:200])
        raw = [
            "q=%ED%A0%80",
            "q=%FF%FE",
            "q=river&file_name=%00",
            "q=river&file_name=%ED%A0%80",
            "q=river&file_ids=%00,%ED%A0%80",
            "q=river&file_name=" + "*" * 300,
            "q=river&mode=%00",
        ]
        for query_string in raw:
            response = await client.get(f"/v1/sources/{source_id}/search?{query_string}")
            assert response.status_code in (200, 422), (query_string, response.text[:200])

        # Deleting a file removes its passages from both indexes at once.
        assert (await client.delete(f"/v1/files/{ids['notes.txt']}")).status_code in (200, 204)
        for mode in ("hybrid", "vector", "lexical"):
            after = await _search(client, source_id, q="Thaddeus Quimby", k=50, mode=mode)
            assert all(r["file_id"] != ids["notes.txt"] for r in after), mode
        if runtime.engine.dialect.name == "sqlite":
            async with runtime.engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT rowid FROM passages_fts WHERE passages_fts MATCH 'quimby'")
                )
                assert rows.all() == []


async def test_a_search_read_in_progress_holds_back_no_writer(sqlite_url: str) -> None:
    # A search reads a source's vectors in one transaction, for seconds on a large source; on
    # SQLite that read must not take the write lock the way other transactions do.
    engine = create_engine_for_url(sqlite_url, pool_size=2, max_overflow=0, pool_timeout=5)
    sources = SourceStore(engine)
    try:
        async with reading(engine) as reader:
            await reader.execute(select(func.count()).select_from(passages))
            async with asyncio.timeout(5):
                await sources.create(ORG, "written-during-a-read", "s", None, datetime.now(UTC))
    finally:
        await engine.dispose()
