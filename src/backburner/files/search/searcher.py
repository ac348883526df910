"""One search of a source: the rankings its mode asks for, fused by reciprocal rank, as hits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.files.embedding.embedders import Embedder
from backburner.files.search.filters import SearchFilter, allowed_file_ids
from backburner.files.search.fusion import reciprocal_rank_fusion
from backburner.files.search.lexical import LexicalIndex, Ranking
from backburner.files.search.modes import SearchMode
from backburner.files.search.terms import query_terms
from backburner.files.search.vectors import VectorIndex
from backburner.files.store.passages import PassageStore
from backburner.files.store.records import SourceRecord

# How deep each ranking is read before fusing: a passage second in one ranking and fortieth in
# the other must still be seen by both.
FUSION_DEPTH = 50


@dataclass(frozen=True, slots=True)
class SearchHit:
    score: float  # the fused score in `hybrid`, the mode's own score otherwise
    rank: int  # 1-based
    vector_score: float | None  # None where that ranking did not find the passage
    lexical_score: float | None
    passage_id: int
    file_id: str
    file_name: str
    chunk_index: int
    text: str


class Searcher:
    def __init__(
        self,
        engine: AsyncEngine,
        passages: PassageStore,
        query_embedder: Callable[[str | None], Embedder],
        vectors: VectorIndex,
        lexical: LexicalIndex,
    ) -> None:
        self.engine = engine
        self.passages = passages
        # The embedder of a source's active model (None: the configured one); the query is
        # embedded with it, and only vectors of its model are read.
        self.query_embedder = query_embedder
        self.vectors = vectors
        self.lexical = lexical

    async def search(
        self,
        source: SourceRecord,
        query: str,
        k: int,
        mode: SearchMode = SearchMode.HYBRID,
        search_filter: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """The `k` best passages of the source for `query`, best first."""
        search_filter = search_filter or SearchFilter()
        depth = max(k, FUSION_DEPTH) if mode is SearchMode.HYBRID else k
        vector: Ranking = []
        lexical: Ranking = []
        if mode is SearchMode.LEXICAL:
            lexical = await self._lexical(source, query, search_filter, depth)
        elif mode is SearchMode.VECTOR:
            vector = await self._vector(source, query, search_filter, depth)
        else:
            vector, lexical = await asyncio.gather(
                self._vector(source, query, search_filter, depth),
                self._lexical(source, query, search_filter, depth),
            )
        if mode is SearchMode.HYBRID:
            order = reciprocal_rank_fusion([[i for i, _ in vector], [i for i, _ in lexical]])[:k]
        else:
            order = (vector or lexical)[:k]
        found = await self.passages.by_id(source.organization_id, [i for i, _ in order])
        vector_scores, lexical_scores = dict(vector), dict(lexical)
        hits: list[SearchHit] = []
        for passage_id, score in order:
            if (hit := found.get(passage_id)) is None:  # deleted since it was ranked
                continue
            hits.append(
                SearchHit(
                    score=score,
                    rank=len(hits) + 1,
                    vector_score=vector_scores.get(passage_id),
                    lexical_score=lexical_scores.get(passage_id),
                    passage_id=passage_id,
                    file_id=hit.file_id,
                    file_name=hit.file_name,
                    chunk_index=hit.chunk_index,
                    text=hit.text,
                )
            )
        return hits

    async def _vector(
        self, source: SourceRecord, query: str, search_filter: SearchFilter, limit: int
    ) -> Ranking:
        embedder = self.query_embedder(source.embedding_model)
        [query_vector] = await embedder.embed([query])
        allowed = None
        if not search_filter.empty:
            allowed = await allowed_file_ids(self.engine, source.organization_id, source.id, search_filter)
            if not allowed:
                return []
        return await self.vectors.search(
            source.organization_id,
            source.id,
            source.passages_version,
            embedder.model,
            query_vector,
            allowed,
            limit,
        )

    async def _lexical(
        self, source: SourceRecord, query: str, search_filter: SearchFilter, limit: int
    ) -> Ranking:
        terms = query_terms(query)
        return await self.lexical.search(source.organization_id, source.id, terms, search_filter, limit)
