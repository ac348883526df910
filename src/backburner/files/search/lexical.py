"""Lexical search on each database's own full-text engine; the index is the database's (0011).

Both rankings reward the rare words of a query: FTS5's BM25 on SQLite; on PostgreSQL, whose
`ts_rank` has no notion of how rare a word is, each term is weighted by its inverse document
frequency among the passages that match (`TsvectorIndex`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any, ClassVar, Protocol

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    TextClause,
    cast,
    column,
    distinct,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading
from backburner.files.search.filters import SearchFilter, file_conditions
from backburner.files.store.versions import waiting_versions
from backburner.files.tables import files, passages

# (passage id, score), best first; a higher score is better.
Ranking = list[tuple[int, float]]


class LexicalIndex(Protocol):
    async def search(
        self,
        organization_id: str,
        source_id: str,
        terms: Sequence[str],
        search_filter: SearchFilter,
        limit: int,
    ) -> Ranking:
        """The passages of the source holding any of `terms`, best first, at most `limit`."""
        ...


def lexical_index(engine: AsyncEngine) -> LexicalIndex:
    if engine.dialect.name == "postgresql":
        return TsvectorIndex(engine)
    return Fts5Index(engine)


def _scoped(
    query: Select[Any],
    organization_id: str,
    source_id: str,
    search_filter: SearchFilter,
    postgres: bool,
) -> Select[Any]:
    query = query.where(
        passages.c.organization_id == organization_id,
        passages.c.source_id == source_id,
        # Few files of a source are versions in waiting: one small index read, and no join.
        passages.c.file_id.not_in(waiting_versions(organization_id, source_id)),
    )
    if not search_filter.empty:
        query = query.join(files, files.c.id == passages.c.file_id).where(
            *file_conditions(search_filter, postgres)
        )
    return query


# --- SQLite: FTS5 ---------------------------------------------------------------------------------

_FTS = table("passages_fts", column("rowid", Integer))
_FTS_TABLE: ColumnElement[Any] = literal_column("passages_fts")


def fts5_match(terms: Sequence[str]) -> str:
    """An FTS5 query matching any of the terms, each a quoted string (never FTS5 syntax)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


class Fts5Index:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def search(
        self,
        organization_id: str,
        source_id: str,
        terms: Sequence[str],
        search_filter: SearchFilter,
        limit: int,
    ) -> Ranking:
        if not terms:
            return []
        # FTS5's `rank` is BM25 (lower is better); ordered by it, FTS5 sorts its matches
        # itself: 36 ms against 90 ms by `bm25()` for the same ten passages (100,000 passages).
        rank: ColumnElement[Any] = literal_column("passages_fts.rank")
        matched: Select[Any] = (
            select(passages.c.id, (-rank).label("score"))
            .select_from(_FTS)
            .join(passages, passages.c.id == _FTS.c.rowid)
            .where(_FTS_TABLE.bool_op("MATCH")(fts5_match(terms)))
        )
        scoped = _scoped(matched, organization_id, source_id, search_filter, postgres=False)
        query = scoped.order_by(rank).limit(limit)
        async with reading(self.engine) as conn:
            return [(int(row.id), float(row.score)) for row in await conn.execute(query)]


# --- PostgreSQL: tsvector -------------------------------------------------------------------------

_CONFIG: ColumnElement[Any] = literal_column("'english'::regconfig")
_VECTOR: ColumnElement[Any] = literal_column("passages.search_vector")
# The most `ts_rank(vector, query, 1)` adds to a passage's score: each term gives at most its
# weight (0.1 for the `D` of every lexeme `to_tsvector` writes) times sum(1/i^2) / (pi^2/6) < 1,
# averaged over the terms, then divided by log2(length + 1) >= 1.
_MAX_TERM_FREQUENCY_SCORE = 0.1


class TsvectorIndex:
    """BM25-like: the sum of the idf of the terms a passage holds, plus `ts_rank` within a term.

    The idf needs each term's count of matches, and only the passages the GIN index returns per
    term are read for it: their ids, never their `tsvector` (read, it is a detoasted kilobyte and
    more per row). `ts_rank` is then computed only for the passages whose idf sum can still reach
    the top `limit`: those within `_MAX_TERM_FREQUENCY_SCORE` of the `limit`-th best. Against
    scoring every match with `ts_rank` and a flag per term, the same ranking in 23 ms instead of
    127 ms at the median (100,000 passages; `bench/search.py`'s queries).
    """

    # For the search's transaction only:
    # - no parallel workers: they cost more to start than these scans take (35.7 ms against 19.9);
    # - no sequential scan of passages: it tests each passage's `tsvector`, read out of line,
    #   which the planner prices as a cheap operator. It took that scan for common words once the
    #   GIN index's pending list had grown (`bench/planner.py`); the GIN index, or the source's
    #   own index for a small source, is always cheaper.
    plan_settings: ClassVar[TextClause] = text(
        "SELECT set_config('max_parallel_workers_per_gather', '0', true),"
        " set_config('enable_seqscan', 'off', true)"
    )

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def search(
        self,
        organization_id: str,
        source_id: str,
        terms: Sequence[str],
        search_filter: SearchFilter,
        limit: int,
    ) -> Ranking:
        if not terms or limit < 1:
            return []
        # One plain query per term (`plainto_tsquery` reads no operators).
        queries: list[ColumnElement[Any]] = [func.plainto_tsquery(_CONFIG, term) for term in terms]
        scans = [
            _scoped(
                select(passages.c.id, literal(i).label("term")).where(_VECTOR.bool_op("@@")(q)),
                organization_id,
                source_id,
                search_filter,
                postgres=True,
            )
            for i, q in enumerate(queries)
        ]
        hits = union_all(*scans).cte("hits")
        frequency = (
            select(hits.c.term, cast(func.count(), Float).label("df")).group_by(hits.c.term).cte("frequency")
        )
        matched = select(cast(func.count(distinct(hits.c.id)), Float)).scalar_subquery()
        # BM25's idf over the matching passages: a word every match holds weighs little.
        idf = func.ln(1.0 + (matched - frequency.c.df + 0.5) / (frequency.c.df + 0.5))
        summed = (
            select(hits.c.id, func.sum(idf).label("idf"))
            .select_from(hits.join(frequency, frequency.c.term == hits.c.term))
            .group_by(hits.c.id)
            .cte("summed")
        )
        # The `limit`-th best idf sum: a passage below it by more than `ts_rank` can add is out.
        cutoff = (
            select(summed.c.idf).order_by(summed.c.idf.desc()).offset(limit - 1).limit(1).scalar_subquery()
        )
        lowest = func.coalesce(cutoff, literal(float("-inf"), Float)) - _MAX_TERM_FREQUENCY_SCORE
        any_term = reduce(lambda a, b: a.op("||")(b), queries)
        score = (summed.c.idf + func.ts_rank(_VECTOR, any_term, 1)).label("score")
        query = (
            select(summed.c.id, score)
            .join(passages, passages.c.id == summed.c.id)
            .where(summed.c.idf >= lowest)
            .order_by(score.desc(), summed.c.id)
            .limit(limit)
        )
        async with reading(self.engine) as conn:
            await conn.execute(self.plan_settings)
            return [(int(row.id), float(row.score)) for row in await conn.execute(query)]
