"""Benchmark: what each database's full-text index costs a bare INSERT, whatever its options.

`bench/search.py` measures `ingest_slowdown` through the product's write path. This script
measures the floor beneath it: the same passages (`search.py`'s corpus: about 1,200 characters
of generated text and a 1 KiB vector each) inserted with nothing but `executemany`, 128 rows a
transaction, into a table with no index on the text (`plain`) and into the same table indexed
each way below. The product's way is `product`, as migration 0011 makes it; the others are the
options one might try instead. Variants take turns over the rounds; each figure is a median.

- SQLite (the standard `sqlite3` module, WAL, `synchronous=NORMAL` as the product sets them): an
  external-content FTS5 table filled by a trigger, with the porter stemmer (`product`), without
  it (`unicode61`), the `ascii` tokenizer, `detail=none`, or `columnsize=0`.
- PostgreSQL (asyncpg, the product's driver): the generated `to_tsvector('english', text)`
  column alone (`tsvector_only`), with its GIN index (`product`), the `simple` configuration
  (no stemming, no stop words) with GIN, and GIN without its pending list (`fastupdate=off`).

Prints, per database and variant, `rows_per_s` and `slowdown` (1 - rows/s / plain rows/s).

    .venv/bin/python bench/index_cost.py [--rows 20000] [--rounds 3]
    .venv/bin/python bench/index_cost.py --quick     # 1,000 rows, one round
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import harness
from search import Corpus

BATCH = 128
PLAIN = "CREATE TABLE passages (id INTEGER PRIMARY KEY, file_id TEXT, text TEXT, embedding BLOB)"
PLAIN_POSTGRES = "CREATE TABLE passages (id bigserial PRIMARY KEY, file_id text, text text, embedding bytea)"
INSERT = "INSERT INTO passages (file_id, text, embedding) VALUES "
FTS5 = (
    "CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='id', {})",
    "CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN "
    "INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text); END",
)
SQLITE_VARIANTS = {
    "plain": None,
    "product": "tokenize='porter unicode61 remove_diacritics 2'",
    "unicode61": "tokenize='unicode61 remove_diacritics 2'",
    "ascii": "tokenize='ascii'",
    "detail_none": "tokenize='porter unicode61 remove_diacritics 2', detail=none",
    "columnsize_0": "tokenize='porter unicode61 remove_diacritics 2', columnsize=0",
}
TSVECTOR = (
    "ALTER TABLE passages ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('{}'::regconfig, text)) STORED"
)
GIN = "CREATE INDEX ON passages USING gin (search_vector){}"
POSTGRES_VARIANTS = {
    "plain": [],
    "tsvector_only": [TSVECTOR.format("english")],
    "product": [TSVECTOR.format("english"), GIN.format("")],
    "simple_config": [TSVECTOR.format("simple"), GIN.format("")],
    "fastupdate_off": [TSVECTOR.format("english"), GIN.format(" WITH (fastupdate = off)")],
}

Rows = list[tuple[str, str, bytes]]


def sqlite_rows_per_s(path: Path, fts_options: str | None, rows: Rows) -> float:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(PLAIN)
        if fts_options is not None:
            db.execute(FTS5[0].format(fts_options))
            db.execute(FTS5[1])
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO passages (file_id, text, embedding) VALUES (?, ?, ?)",
                rows[start : start + BATCH],
            )
            db.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        db.close()
        for suffix in ("-wal", "-shm", ""):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


async def postgres_rows_per_s(dsn: str, statements: list[str], rows: Rows) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS passages")
        await conn.execute(
            PLAIN.replace("INTEGER PRIMARY KEY", "bigserial PRIMARY KEY").replace("BLOB", "bytea")
        )
        for statement in statements:
            await conn.execute(statement)
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.executemany(INSERT + "($1, $2, $3)", rows[start : start + BATCH])
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def measure(variants: dict[str, Callable[[], Any]], rounds: int, database: str) -> dict[str, Any]:
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    for number in range(rounds):
        order = list(variants) if number % 2 == 0 else list(reversed(variants))
        for name in order:
            result = variants[name]()
            speeds[name].append(await result if asyncio.iscoroutine(result) else result)
            harness.log(f"{database} round {number + 1}/{rounds}, {name}: {speeds[name][-1]:,.0f} rows/s")
    plain = harness.median(speeds["plain"])
    return {
        name: {
            "rows_per_s": round(harness.median(values)),
            "slowdown": round(1 - harness.median(values) / plain, 3),
        }
        for name, values in speeds.items()
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    count, rounds = (1000, 1) if args.quick else (args.rows, args.rounds)
    corpus = Corpus(count)
    rows = [
        (f"file-{start // 1000}", text, vector.astype("<f4").tobytes())
        for start, texts, vectors in corpus.batches()
        for text, vector in zip(texts, vectors, strict=True)
    ]
    result: dict[str, Any] = {"rows": count, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="bench-index-cost-") as tmp:
        path = Path(tmp) / "passages.db"
        result["sqlite"] = await measure(
            {
                name: (lambda options=options: sqlite_rows_per_s(path, options, rows))
                for name, options in SQLITE_VARIANTS.items()
            },
            rounds,
            "sqlite",
        )
    url = await harness.create_database("bench_index_cost")
    try:
        dsn = url.replace("+asyncpg", "")
        result["postgres"] = await measure(
            {
                name: (lambda statements=statements: postgres_rows_per_s(dsn, statements, rows))
                for name, statements in POSTGRES_VARIANTS.items()
            },
            rounds,
            "postgres",
        )
    finally:
        await harness.drop_database(url)
    result["machine"] = harness.machine_load()
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 rows, one round")
    return parser.parse_args()


if __name__ == "__main__":
    harness.emit(asyncio.run(main(parse_args())))
