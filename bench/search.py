"""Benchmark: search latency and recall over a large source, and what the lexical index costs ingest.

For each database (SQLite in a temporary directory, a fresh PostgreSQL database) and each size N,
a source is filled with N passages through the product's own write path (`LeaseStore.claim`,
`start_embedding`, `PassageStore.store_batch`, 1,000 passages per file, 128 per batch, as a
worker stores them): generated text of about 1,200 characters (the default chunk size) drawn
from a Zipf-distributed vocabulary, and random 256-dimension float32 vectors. Nothing is uploaded
or embedded: the vectors are given, and a query's vector is handed to the searcher by an
embedder that returns it.

Queries go through the product's search path (`SourceStore.get` then `Searcher.search`, as
`FileService.search` calls them): four words of the vocabulary, drawn as often as the corpus
uses them but never among its 100 most common (they stand for the stop words that both
databases leave out of a query), and a random vector each.
Figures per database and size:

- `p50_ms`, `p99_ms`: latency of `hybrid` searches (the default mode), k = 10, one at a time,
  after a first search that loads the source's vectors (`cold_ms`); `vector_p50_ms` and
  `lexical_p50_ms` for each ranking alone;
- `refresh_ms` (measured last): the first `hybrid` search after another file of 1,000
  passages was written to the source (median of 5 such files), as while files are ingested;
  `cold_ms` is such a search reading every vector;
- `recall_at_10`: overlap of `vector` mode's top 10 with an exact float64 numpy search over the
  same vectors, averaged over the queries;
- `ingest_slowdown`: 1 - (throughput with the lexical index / throughput without it): the same
  rows written again into a database whose index is removed (SQLite: the FTS5 triggers dropped;
  PostgreSQL: the generated `tsvector` column and its GIN index dropped). `ingest_rows_per_s`
  is the throughput with the index. This is the write path alone, where the whole cost falls.
- `ingest_end_to_end` (per database, beside the sizes): what the index costs a user's ingest,
  upload to searchable. `bench/files.py`'s corpus (`--ingest-mb`, 160 files and 6 PDFs at
  40 MB) is uploaded through the API of a `backburner serve` with the product's defaults (the
  `hash` embedder), into a fresh database with the index and one without, the two taking turns
  over `--ingest-rounds`: `mb_per_s`, `plain_mb_per_s` and `slowdown` (1 - indexed / plain
  throughput), medians of the rounds.
- `parallel`: a `backburner serve` on the filled database answers 20 searches at a time through
  its API (`hybrid`, the `hash` embedder embedding each query; a first search loads the
  vectors), while `/healthz` is asked every 50 ms: `search_p50_ms`, and `healthz_p99_ms` and
  `healthz_max_ms` of those round trips.

Goals: at 100,000 passages `p50_ms` <= 50 and `p99_ms` <= 200; at 1,000,000 `p50_ms` <= 300;
`recall_at_10` >= 0.95; `ingest_slowdown` <= 0.15; at 100,000 passages, `/healthz` under 100 ms
with 20 searches at a time.

    .venv/bin/python bench/search.py [--sizes 100000,1000000] [--databases sqlite,postgres]
                                     [--ingest-rounds 3] [--ingest-mb 40]
    .venv/bin/python bench/search.py --quick     # 2,000 passages: a check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
import httpx
import numpy as np
from corpus import MB, generate_corpus
from files import ingest as upload_to_searchable
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db import migrate
from backburner.db.engine import create_engine_for_url
from backburner.files.search.lexical import LexicalIndex, lexical_index
from backburner.files.search.modes import SearchMode
from backburner.files.search.searcher import Searcher
from backburner.files.search.vectors import VectorIndex
from backburner.files.store import FileStores
from backburner.files.store.leases import ClaimRules
from backburner.files.store.records import Lease, NewFile, PassageRow

ORG = "org-default"
DIMENSIONS = 256
MODEL = "feature-hash-v1-256"  # the default `hash` embedder's: a server searches these vectors
PER_FILE = 1000
BATCH = 128
WORDS_PER_PASSAGE = 170  # about 1,200 characters
VOCABULARY = 30_000
SEED = 18
STOP_WORDS = 100
PARALLEL = 20
REFRESH_FILES = 5
RULES = ClaimRules(lease_s=3600, max_attempts=3, timeout_minutes=10_000, org_cap=1000, owner_prefix="")


class GivenEmbedder:
    """The query's vector, chosen by the benchmark (the product embeds the query text)."""

    def __init__(self) -> None:
        self.vector: list[float] = []

    @property
    def model(self) -> str:
        return MODEL

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.vector for _ in texts]

    async def aclose(self) -> None:
        return None


class Corpus:
    """Deterministic passages: the i-th batch is the same in every database and every run."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(SEED)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        lengths = rng.integers(3, 10, VOCABULARY)
        self.words = np.array(["".join(rng.choice(letters, size)) for size in lengths])
        weights = 1.0 / np.arange(1, VOCABULARY + 1)
        self.p = weights / weights.sum()
        self.vectors = rng.standard_normal((n, DIMENSIONS), dtype=np.float32)
        self.n = n

    def batches(self) -> Iterator[tuple[int, list[str], np.ndarray]]:
        rng = np.random.default_rng(SEED + 1)
        # A file's batches never reach into the next file.
        for start in (
            s for f in range(0, self.n, PER_FILE) for s in range(f, min(f + PER_FILE, self.n), BATCH)
        ):
            stop = min(start + BATCH, self.n, (start // PER_FILE + 1) * PER_FILE)
            picks = rng.choice(VOCABULARY, size=(stop - start, WORDS_PER_PASSAGE), p=self.p)
            texts = [" ".join(self.words[row]) for row in picks]
            yield start, texts, self.vectors[start:stop]

    def queries(self, count: int) -> list[tuple[str, np.ndarray]]:
        """Four words each, as often as the corpus uses them, but never one of the 100 most
        common: those stand for the stop words that both databases drop from a query."""
        rng = np.random.default_rng(SEED + 2)
        p = self.p.copy()
        p[:STOP_WORDS] = 0
        p /= p.sum()
        return [
            (" ".join(self.words[rng.choice(VOCABULARY, 4, p=p)]), rng.standard_normal(DIMENSIONS))
            for _ in range(count)
        ]


async def fill(engine: AsyncEngine, corpus: Corpus) -> tuple[str, float]:
    """The source's id, and the seconds spent in `store_batch` (what ingest pays for the index)."""
    source = await FileStores.on(engine).sources.create(ORG, "bench", "bench", None, datetime.now(UTC))
    return source.id, await write_files(engine, source.id, corpus, first_file=0)


async def write_files(engine: AsyncEngine, source_id: str, corpus: Corpus, first_file: int) -> float:
    """Writes the corpus into the source as files numbered from `first_file`, as workers do;
    returns the seconds spent in `store_batch`."""
    stores = FileStores.on(engine)
    now = datetime.now(UTC)
    store_s = 0.0
    file = None
    lease = None
    for start, texts, vectors in corpus.batches():
        if start % PER_FILE == 0:
            number = first_file + start // PER_FILE
            await stores.catalog.create(
                NewFile(
                    f"file-{number:07d}",
                    ORG,
                    source_id,
                    f"doc-{number}.txt",
                    "text/plain",
                    1,
                    "0" * 64,
                    "none",
                ),
                now,
            )
            claimed = await stores.leases.claim(f"bench-{number}", now, RULES)
            assert claimed is not None
            lease = Lease(claimed.id, f"bench-{number}")
            count = min(PER_FILE, corpus.n - start)
            file = await stores.leases.start_embedding(
                lease, now, total_chunks=count, embedding_model=MODEL, parse_s=0, chunk_s=0
            )
        assert file is not None and lease is not None
        rows = [
            PassageRow((start + i) % PER_FILE, body, vector.astype("<f4").tobytes())
            for i, (body, vector) in enumerate(zip(texts, vectors, strict=True))
        ]
        last = start + len(rows) == min(corpus.n, (start // PER_FILE + 1) * PER_FILE)
        started = time.perf_counter()
        await stores.passages.store_batch(
            lease, file, rows, now, lease_s=3600, embed_s=0, store_s=0, finish=last
        )
        store_s += time.perf_counter() - started
        if start % (BATCH * 400) == 0 and corpus.n > PER_FILE:
            harness.log(f"  {start:,} / {corpus.n:,} passages")
    return store_s


async def drop_lexical_index(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE passages DROP COLUMN search_vector"))
        else:
            for trigger in ("passages_fts_insert", "passages_fts_delete", "passages_fts_update"):
                await conn.execute(text(f"DROP TRIGGER {trigger}"))


class TimedSearches:
    """The product's search path with an empty vector cache, each search timed; the query's
    vector is handed to it by `GivenEmbedder`."""

    def __init__(self, engine: AsyncEngine, source_id: str, lexical: LexicalIndex | None = None) -> None:
        self.stores = FileStores.on(engine)
        self.embedder = GivenEmbedder()
        self.searcher = Searcher(
            engine,
            self.stores.passages,
            lambda _model: self.embedder,
            VectorIndex(self.stores.passages),
            lexical or lexical_index(engine),
        )
        self.source_id = source_id

    async def one(self, query: str, vector: np.ndarray, mode: SearchMode) -> tuple[float, list[int]]:
        """Milliseconds, and the passage ids found."""
        self.embedder.vector = vector.astype(np.float32).tolist()
        started = time.perf_counter()
        source = await self.stores.sources.get(ORG, self.source_id)
        hits = await self.searcher.search(source, query, 10, mode)
        return (time.perf_counter() - started) * 1000, [hit.passage_id for hit in hits]


async def measure_queries(engine: AsyncEngine, source_id: str, corpus: Corpus, count: int) -> dict[str, Any]:
    one = TimedSearches(engine, source_id).one
    queries = corpus.queries(count)
    cold_ms, _ = await one(*queries[0], SearchMode.HYBRID)
    latencies = {mode: [] for mode in SearchMode}
    recalls = []
    # Passage ids follow insertion order: the i-th row written has the i-th smallest id.
    ids = await passage_ids(engine)
    unit = corpus.vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for query, vector in queries:
        for mode in SearchMode:
            ms, found = await one(query, vector, mode)
            latencies[mode].append(ms)
            if mode is SearchMode.VECTOR:
                exact = np.argsort(-(unit @ (vector / np.linalg.norm(vector))))[:10]
                recalls.append(len(set(found) & {int(ids[i]) for i in exact}) / 10)
    hybrid = sorted(latencies[SearchMode.HYBRID])
    return {
        "p50_ms": round(harness.median(hybrid), 2),
        "p99_ms": round(float(np.percentile(hybrid, 99)), 2),
        "vector_p50_ms": round(harness.median(latencies[SearchMode.VECTOR]), 2),
        "lexical_p50_ms": round(harness.median(latencies[SearchMode.LEXICAL]), 2),
        "cold_ms": round(cold_ms, 1),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "queries": count,
    }


async def measure_refresh(engine: AsyncEngine, source_id: str, corpus: Corpus) -> float:
    """Searching while files are added: the median time of the first `hybrid` search after each
    of `REFRESH_FILES` new files of 1,000 passages, each of which refreshes the cached vectors."""
    one = TimedSearches(engine, source_id).one
    extra = Corpus(PER_FILE)
    latencies = []
    for number, (query, vector) in enumerate(corpus.queries(REFRESH_FILES + 1)):
        if number > 0:  # the first search reads every vector
            await write_files(engine, source_id, extra, first_file=corpus.n // PER_FILE + number)
        latencies.append((await one(query, vector, SearchMode.HYBRID))[0])
    return round(harness.median(latencies[1:]), 1)


def measure_parallel(url: str, source_id: str, corpus: Corpus, rounds: int, workdir: Path) -> dict[str, Any]:
    """`PARALLEL` searches at a time through the API of a `backburner serve` on the filled
    database (the default `hash` embedder embeds each query), while `/healthz` is asked every
    50 ms: how long search keeps the rest of the server waiting."""
    database_url = url.replace("+aiosqlite", "").replace("+asyncpg", "")
    server = harness.start_backburner(
        {"database_url": database_url}, data_dir=workdir, log_path=workdir.with_suffix(".log")
    )
    texts = [query for query, _ in corpus.queries(PARALLEL * rounds)]
    limits = httpx.Limits(max_connections=PARALLEL)
    try:
        with httpx.Client(base_url=server.base_url, timeout=300, limits=limits) as client:

            def search(text: str) -> float:
                started = time.perf_counter()
                client.get(f"/v1/sources/{source_id}/search", params={"q": text}).raise_for_status()
                return (time.perf_counter() - started) * 1000

            search(texts[0])  # loads the source's vectors
            probe = harness.HealthProbe(server.base_url)
            probe.start()
            with ThreadPoolExecutor(PARALLEL) as pool:
                latencies = list(pool.map(search, texts))
            probe.stop.set()
            probe.join()
    finally:
        server.stop()
    return {
        "parallel": PARALLEL,
        "searches": len(texts),
        "search_p50_ms": round(harness.median(latencies), 1),
        "healthz_p99_ms": round(harness.percentile(probe.samples_ms, 0.99), 1),
        "healthz_max_ms": round(max(probe.samples_ms), 1),
    }


async def passage_ids(engine: AsyncEngine) -> np.ndarray:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id FROM passages ORDER BY id"))
        return np.fromiter((row[0] for row in rows), dtype=np.int64)


async def new_engine(database: str, workdir: Path, name: str) -> tuple[AsyncEngine, str]:
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / name}.db"
    else:
        url = await harness.create_database(f"bench_search_{name}")
    engine = create_engine_for_url(url, pool_size=5, max_overflow=5, pool_timeout=30)
    await migrate.upgrade(engine)
    return engine, url


async def close(engine: AsyncEngine, database: str, url: str) -> None:
    await engine.dispose()
    if database == "postgres":
        await harness.drop_database(url)


async def run_size(database: str, n: int, queries: int, workdir: Path) -> dict[str, Any]:
    corpus = Corpus(n)
    harness.log(f"{database}, {n:,} passages: without the lexical index")
    plain, plain_url = await new_engine(database, workdir, f"plain_{n}")
    try:
        await drop_lexical_index(plain)
        _, plain_s = await fill(plain, corpus)
    finally:
        await close(plain, database, plain_url)
    harness.log(f"{database}, {n:,} passages: with the lexical index")
    indexed, indexed_url = await new_engine(database, workdir, f"indexed_{n}")
    try:
        source_id, indexed_s = await fill(indexed, corpus)
        if database == "postgres":
            # What the leader's `statistics` job does within `statistics_interval_seconds` of a
            # fill (`bench/planner.py` measures search without it). Committed: a rolled-back
            # ANALYZE keeps no statistics.
            async with indexed.begin() as conn:
                await conn.execute(text("ANALYZE passages"))
        harness.log(f"{database}, {n:,} passages: {queries} queries per mode")
        result = await measure_queries(indexed, source_id, corpus, queries)
        harness.log(f"{database}, {n:,} passages: {PARALLEL} searches at a time through the API")
        rounds = max(1, queries // PARALLEL)
        result["parallel"] = await asyncio.to_thread(
            measure_parallel, indexed_url, source_id, corpus, rounds, workdir / f"serve_{database}_{n}"
        )
        harness.log(f"{database}, {n:,} passages: searches after each of {REFRESH_FILES} new files")
        result["refresh_ms"] = await measure_refresh(indexed, source_id, corpus)
    finally:
        await close(indexed, database, indexed_url)
    result["ingest_rows_per_s"] = round(n / indexed_s)
    result["ingest_plain_rows_per_s"] = round(n / plain_s)
    result["ingest_slowdown"] = round(1 - plain_s / indexed_s, 3)
    harness.log(f"  {result}")
    return result


async def ingest_once(database: str, indexed: bool, corpus: list[Path], workdir: Path) -> float:
    """Seconds from the first upload until every file is finished, on a fresh database."""
    engine, url = await new_engine(database, workdir, "ingest")
    try:
        if not indexed:
            await drop_lexical_index(engine)
        await engine.dispose()
        server = harness.start_backburner(
            {"database_url": url.replace("+aiosqlite", "").replace("+asyncpg", "")},
            data_dir=workdir / "data",
            log_path=workdir / "serve.log",
        )
        try:
            run = await asyncio.to_thread(upload_to_searchable, server, corpus)
        finally:
            server.stop()
        if run.errors:
            raise RuntimeError(f"{run.errors} files ended in ERROR; see {workdir}")
        return run.seconds
    finally:
        await close(engine, database, url)


async def measure_ingest_end_to_end(
    database: str, corpus: list[Path], rounds: int, workdir: Path
) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {"indexed": [], "plain": []}
    for number in range(rounds):
        for side in ("indexed", "plain") if number % 2 == 0 else ("plain", "indexed"):
            directory = workdir / f"ingest-{database}-{side}-{number}"
            directory.mkdir()
            seconds[side].append(await ingest_once(database, side == "indexed", corpus, directory))
            harness.log(f"{database} ingest round {number + 1}/{rounds}, {side}: {seconds[side][-1]:.2f} s")
    mb = sum(path.stat().st_size for path in corpus) / MB
    slowdowns = [1 - p / i for i, p in zip(seconds["indexed"], seconds["plain"], strict=True)]
    return {
        "mb": round(mb, 2),
        "rounds": rounds,
        "mb_per_s": round(mb / harness.median(seconds["indexed"]), 2),
        "plain_mb_per_s": round(mb / harness.median(seconds["plain"]), 2),
        "slowdown": round(harness.median(slowdowns), 3),
        "round_slowdowns": [round(value, 3) for value in slowdowns],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [2000] if args.quick else [int(size) for size in args.sizes.split(",") if size]
    queries = 20 if args.quick else args.queries
    ingest_mb, ingest_files, ingest_pdfs = (1.0, 8, 1) if args.quick else (args.ingest_mb, 160, 6)
    ingest_rounds = 1 if args.quick else args.ingest_rounds
    result: dict[str, Any] = {"ingest_end_to_end": {}}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        workdir = Path(tmp)
        corpus_dir = workdir / "corpus"
        corpus_dir.mkdir()
        corpus = (
            generate_corpus(corpus_dir, ingest_mb, ingest_files, ingest_pdfs, seed=7) if ingest_rounds else []
        )
        for database in args.databases.split(","):
            result[database] = {str(n): await run_size(database, n, queries, workdir) for n in sizes}
            if ingest_rounds:
                result["ingest_end_to_end"][database] = await measure_ingest_end_to_end(
                    database, corpus, ingest_rounds, workdir
                )
    result["machine"] = harness.machine_load()
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated passage counts")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--queries", type=int, default=100, help="queries per mode and size")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="0 leaves out the end-to-end ingest")
    parser.add_argument(
        "--ingest-mb", type=float, default=40.0, help="size of the end-to-end ingest's corpus"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 passages, 20 queries, a 1 MB ingest")
    return parser.parse_args()


if __name__ == "__main__":
    harness.emit(asyncio.run(main(parse_args())))
