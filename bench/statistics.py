"""Benchmark: lexical search on PostgreSQL before and after the leader's `statistics` job.

A fresh PostgreSQL database is filled with `search.py`'s passages (its corpus and the product's
write path) and never analyzed by anyone else when the server's autovacuum is off, as it is on
this machine (`autovacuum` says which). The same lexical searches, through the product's search
path, are timed first as the fill left the database, then after one run of the product's
`statistics` job (what the leader runs every `statistics_interval_seconds`). Prints:

- `lexical_p50_ms_before` and `lexical_p50_ms_after`: median lexical search, k = 10;
- `analyze_s`: how long the job's run took;
- `tables_analyzed`: how many tables it analyzed; `autovacuum`: the server's setting.

    .venv/bin/python bench/statistics.py [--passages 100000] [--queries 20]
    .venv/bin/python bench/statistics.py --quick     # 2,000 passages, 5 queries
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import harness
from search import Corpus, TimedSearches, fill
from sqlalchemy import text

from backburner.clock import utcnow
from backburner.db.all_tables import table_names
from backburner.db.engine import create_engine_for_url
from backburner.db.statistics import stale_tables
from backburner.files.search.searcher import SearchMode
from backburner.leader.static import StaticLeadership
from backburner.scheduler.housekeeping import STATISTICS_JOB_ID, statistics_job
from backburner.scheduler.jobs import JobContext


async def lexical_p50_ms(searches: TimedSearches, queries: list[tuple[str, Any]]) -> float:
    return harness.median(
        [(await searches.one(query, vector, SearchMode.LEXICAL))[0] for query, vector in queries]
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    passages, count = (2000, 5) if args.quick else (args.passages, args.queries)
    url = await harness.create_database("bench_statistics", migrated=True)
    engine = create_engine_for_url(url, pool_size=5, max_overflow=5, pool_timeout=30)
    try:
        corpus = Corpus(passages)
        harness.log(f"writing {passages:,} passages")
        source_id, _ = await fill(engine, corpus)
        queries = corpus.queries(count)
        searches = TimedSearches(engine, source_id)
        async with engine.connect() as conn:
            autovacuum = await conn.scalar(text("SHOW autovacuum"))
            # The writers' counts reach the server's statistics within a second.
            deadline = time.monotonic() + 30
            while "passages" not in await stale_tables(conn, ["passages"]) and time.monotonic() < deadline:
                await conn.rollback()
                await asyncio.sleep(0.2)
        harness.log(f"{count} lexical searches before the job")
        before = await lexical_p50_ms(searches, queries)
        leadership = await StaticLeadership.claim(engine, "bench-statistics", "bench")
        job = statistics_job(engine=engine, tables=table_names(), interval_s=30)
        async with engine.connect() as conn:
            stale = await stale_tables(conn, table_names())
        started = time.perf_counter()
        await job.run(JobContext(STATISTICS_JOB_ID, utcnow(), leadership))
        analyze_s = time.perf_counter() - started
        harness.log(f"{count} lexical searches after the job")
        after = await lexical_p50_ms(searches, queries)
    finally:
        await engine.dispose()
        await harness.drop_database(url)
    return {
        "passages": passages,
        "queries": count,
        "lexical_p50_ms_before": round(before, 1),
        "lexical_p50_ms_after": round(after, 1),
        "analyze_s": round(analyze_s, 2),
        "tables_analyzed": len(stale),
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
