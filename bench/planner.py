"""Benchmark: lexical search on PostgreSQL when the query planner's picture of the table is off.

A fresh PostgreSQL database is filled with `search.py`'s passages through the product's write
path (its corpus, files of 1,000 passages). Nothing else analyzes it when the server's
autovacuum is off, as it is on this machine (`autovacuum` says which). The same lexical
searches (the product's search path, k = 10) are timed at three moments:

- `unanalyzed_p50_ms`: as the fill left the database, without planner statistics;
- `analyzed_p50_ms`: after one run of the leader's `statistics` job (`analyze_s`: its run);
- after 5 more files of 1,000 passages, whose entries wait in the GIN index's pending list:
  `after_writes_p50_ms` is the product's search, `after_writes_seqscan_allowed_p50_ms` the same
  search with sequential scans allowed, as before the product turned them off for it; the two
  alternate query by query.

    .venv/bin/python bench/planner.py [--passages 100000] [--queries 20]
    .venv/bin/python bench/planner.py --quick     # 2,000 passages, 5 queries
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, ClassVar

import harness
import numpy as np
from search import PER_FILE, Corpus, TimedSearches, fill, write_files
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import utcnow
from backburner.db.all_tables import table_names
from backburner.db.engine import create_engine_for_url
from backburner.db.statistics import stale_tables
from backburner.files.search.lexical import TsvectorIndex
from backburner.files.search.modes import SearchMode
from backburner.leader.static import StaticLeadership
from backburner.scheduler.housekeeping import STATISTICS_JOB_ID, statistics_job
from backburner.scheduler.jobs import JobContext

NEW_FILES = 5

Queries = list[tuple[str, np.ndarray]]


class SequentialScansAllowed(TsvectorIndex):
    """The product's lexical search as it was planned before sequential scans were turned off."""

    plan_settings: ClassVar[TextClause] = text(
        "SELECT set_config('max_parallel_workers_per_gather', '0', true)"
    )


async def lexical_ms(searches: TimedSearches, query: str, vector: np.ndarray) -> float:
    return (await searches.one(query, vector, SearchMode.LEXICAL))[0]


async def p50_ms(searches: TimedSearches, queries: Queries) -> float:
    return harness.median([await lexical_ms(searches, query, vector) for query, vector in queries])


async def wait_counted(engine: AsyncEngine) -> None:
    """The writers' row counts reach the server's statistics within a second or so."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            if await stale_tables(conn, ["passages"]):
                return
        await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    passages, count = (2000, 5) if args.quick else (args.passages, args.queries)
    url = await harness.create_database("bench_planner", migrated=True)
    engine = create_engine_for_url(url, pool_size=5, max_overflow=5, pool_timeout=30)
    try:
        corpus = Corpus(passages)
        harness.log(f"writing {passages:,} passages")
        source_id, _ = await fill(engine, corpus)
        queries = corpus.queries(count)
        product = TimedSearches(engine, source_id)
        async with engine.connect() as conn:
            autovacuum = await conn.scalar(text("SHOW autovacuum"))
        await wait_counted(engine)
        harness.log(f"{count} lexical searches without statistics")
        unanalyzed = await p50_ms(product, queries)
        leadership = await StaticLeadership.claim(engine, "bench-planner", "bench")
        job = statistics_job(engine=engine, tables=table_names(), interval_s=30)
        started = time.perf_counter()
        await job.run(JobContext(STATISTICS_JOB_ID, utcnow(), leadership))
        analyze_s = time.perf_counter() - started
        harness.log(f"{count} lexical searches after the statistics job")
        analyzed = await p50_ms(product, queries)
        harness.log(f"{NEW_FILES} more files of {PER_FILE:,} passages")
        for number in range(NEW_FILES):
            await write_files(engine, source_id, Corpus(PER_FILE), first_file=passages // PER_FILE + number)
        allowed = TimedSearches(engine, source_id, SequentialScansAllowed(engine))
        after: dict[str, list[float]] = {"product": [], "allowed": []}
        for query, vector in queries:
            after["product"].append(await lexical_ms(product, query, vector))
            after["allowed"].append(await lexical_ms(allowed, query, vector))
    finally:
        await engine.dispose()
        await harness.drop_database(url)
    return {
        "passages": passages,
        "queries": count,
        "unanalyzed_p50_ms": round(unanalyzed, 1),
        "analyzed_p50_ms": round(analyzed, 1),
        "analyze_s": round(analyze_s, 2),
        "after_writes_p50_ms": round(harness.median(after["product"]), 1),
        "after_writes_seqscan_allowed_p50_ms": round(harness.median(after["allowed"]), 1),
        "autovacuum": autovacuum,
        "machine": harness.machine_load(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2,000 passages, 5 queries")
    return parser.parse_args()


if __name__ == "__main__":
    harness.emit(asyncio.run(main(parse_args())))
