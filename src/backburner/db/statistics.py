"""Planner statistics on PostgreSQL, gathered when autovacuum has not gathered them.

PostgreSQL plans each query from the statistics ANALYZE keeps. Autovacuum refreshes them as
tables change, but it may be turned off, or not yet have reached a table that just grew from
nothing. Without them the planner guesses: a lexical search then reads its source's passages
through the source's index and tests every one (1.7 s at 100,000 passages) instead of asking the
full-text index for each word's (30 ms).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Autovacuum's own rule for when a table needs ANALYZE, with the server's settings.
_STALE = text(
    """
    SELECT relname FROM pg_stat_user_tables
    WHERE schemaname = current_schema()
      AND relname = ANY(:tables)
      AND n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
          + current_setting('autovacuum_analyze_scale_factor')::float8 * n_live_tup
    ORDER BY relname
    """
)


async def stale_tables(conn: AsyncConnection, tables: Collection[str]) -> list[str]:
    """Those of `tables` whose rows changed since their last ANALYZE by more than
    `autovacuum_analyze_threshold` + `autovacuum_analyze_scale_factor` times their rows."""
    rows = await conn.execute(_STALE, {"tables": sorted(tables)})
    return [str(name) for (name,) in rows]


async def analyze(conn: AsyncConnection, table: str) -> None:
    await conn.execute(text(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}"))
