"""PostgreSQL's lexical ranking reads `ts_rank` only for the passages that can still reach the
top: it must rank exactly as scoring every match does, ties and all."""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backburner.db.engine import create_engine_for_url
from backburner.files.search.filters import SearchFilter
from backburner.files.search.lexical import TsvectorIndex
from backburner.files.store import FileStores
from backburner.files.store.records import NewFile
from backburner.files.tables import passages

pytestmark = pytest.mark.postgres

ORG = "org-default"
# A small vocabulary: many passages share a word, and many hold words whose idf are near each
# other, so that a word's frequency within a passage can outweigh the difference.
VOCABULARY = [f"word{chr(97 + i)}" for i in range(26)]


async def _reference(conn: AsyncConnection, terms: list[str], limit: int) -> list[tuple[int, float]]:
    """Every passage holding a term, scored in full: idf of each term held, plus `ts_rank`."""
    hits = ", ".join(f"(search_vector @@ plainto_tsquery('english', :t{i}))::int" for i in range(len(terms)))
    any_term = " || ".join(f"plainto_tsquery('english', :t{i})" for i in range(len(terms)))
    rows = (
        await conn.execute(
            text(
                f"SELECT id, ts_rank(search_vector, {any_term}, 1), {hits} FROM passages "
                f"WHERE search_vector @@ ({any_term})"
            ),
            {f"t{i}": term for i, term in enumerate(terms)},
        )
    ).all()
    total = len(rows)
    df = [sum(row[2 + i] for row in rows) for i in range(len(terms))]
    idf = [math.log(1 + (total - d + 0.5) / (d + 0.5)) for d in df]
    scored = [(row[0], sum(row[2 + i] * idf[i] for i in range(len(terms))) + row[1]) for row in rows]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:limit]


async def _fill(engine: AsyncEngine, rng: random.Random) -> None:
    """600 passages of 2 to 10 words of `VOCABULARY` in source "src"."""
    stores = FileStores.on(engine)
    now = datetime.now(UTC)
    await stores.sources.create(ORG, "src", "src", None, now)
    new_file = NewFile("file-1", ORG, "src", "a.txt", "text/plain", 1, "0" * 64, "x")
    await stores.catalog.create(new_file, now)
    rows = [
        {
            "organization_id": ORG,
            "source_id": "src",
            "file_id": "file-1",
            "chunk_index": i,
            "text": " ".join(rng.choices(VOCABULARY, k=rng.randint(2, 10))),
            "embedding": b"",
            "created_at": now,
        }
        for i in range(600)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(passages), rows)


async def test_the_ranking_equals_scoring_every_match(postgres_url: str) -> None:
    engine = create_engine_for_url(postgres_url, pool_size=2, max_overflow=0, pool_timeout=30)
    try:
        rng = random.Random(4)
        await _fill(engine, rng)
        index = TsvectorIndex(engine)
        compared = 0
        async with engine.connect() as conn:
            for _ in range(40):
                terms = rng.sample(VOCABULARY, rng.randint(1, 4))
                for limit in (1, 3, 10, 50):
                    expected = await _reference(conn, terms, limit)
                    found = await index.search(ORG, "src", terms, SearchFilter(), limit)
                    assert [i for i, _ in found] == [i for i, _ in expected], (terms, limit)
                    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-9)
                    compared += len(expected)
        assert compared > 1000
        assert await index.search(ORG, "src", ["absent"], SearchFilter(), 10) == []
        assert await index.search(ORG, "other", VOCABULARY[:2], SearchFilter(), 10) == []
    finally:
        await engine.dispose()


async def _scans_of_passages(engine: AsyncEngine) -> tuple[int, int]:
    """(sequential, index) scans of `passages` the server has counted, read in a new snapshot."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'passages'")
            )
        ).one()
        return int(row.seq_scan), int(row.idx_scan or 0)


async def test_lexical_search_never_tests_passages_one_by_one_in_a_sequential_scan(postgres_url: str) -> None:
    """A sequential scan reads each passage's `tsvector` out of line to test it, which the
    planner prices as cheap: on a small table of common words, as here, it would take it."""
    engine = create_engine_for_url(postgres_url, pool_size=2, max_overflow=0, pool_timeout=30)
    try:
        await _fill(engine, random.Random(4))
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE passages"))
        index = TsvectorIndex(engine)
        seq_before, idx_before = await _scans_of_passages(engine)
        for terms in (VOCABULARY[:1], VOCABULARY[:3], VOCABULARY[5:9]):
            assert await index.search(ORG, "src", terms, SearchFilter(), 10)
        # A backend reports its counts within a second or so of going idle.
        deadline = time.monotonic() + 30
        while (scans := await _scans_of_passages(engine)) == (seq_before, idx_before):
            assert time.monotonic() < deadline, "the searches' scans were never counted"
            await asyncio.sleep(0.1)
        assert scans[0] == seq_before, f"{scans[0] - seq_before} sequential scans of passages"
    finally:
        await engine.dispose()
