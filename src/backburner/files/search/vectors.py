"""Vector search: a source's vectors in numpy matrices, cached per instance, scored off the loop.

The database stays the source of truth. A cached matrix is keyed by (organization, source,
model, dimensions) and tagged with the source's `passages_version`, which every write or delete
of its passages bumps in the same transaction; a search reads the version with the source (it
does so anyway) and refreshes the matrix when it changed, whichever instance wrote. A refresh
reads again only the vectors of files whose tag changed (`PassageStore.vector_files`), so that
searching a large source while files are added to it does not read all of it each time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from weakref import WeakValueDictionary

import numpy as np
import numpy.typing as npt

from backburner.files.search.lexical import Ranking
from backburner.files.store.passages import PassageStore, StoredVectors, VectorTag

# A million 256-float vectors take 1 GiB; sources beyond the budget are read for each search.
DEFAULT_CACHE_BYTES = 2 * 1024**3

CacheKey = tuple[str, str, str, int]


# A refresh adds a segment; past this many, all but the largest are merged into one, so that
# a refresh copies the rows of recent files instead of the whole source.
MAX_SEGMENTS = 8

Float32s = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Segment:
    """Rows of whole files: every vector of a file is in one segment."""

    ids: npt.NDArray[np.int64]
    files: npt.NDArray[np.int32]  # index into `file_ids`, per row
    file_ids: tuple[str, ...]
    unit: Float32s  # one row per passage, of length 1 (or all zeros)

    @classmethod
    def build(cls, stored: StoredVectors, dimensions: int) -> Segment:
        unit = np.frombuffer(b"".join(stored.vectors), dtype="<f4").astype(np.float32)
        unit = unit.reshape(len(stored.ids), dimensions)
        norms = np.linalg.norm(unit, axis=1, keepdims=True)
        np.divide(unit, norms, out=unit, where=norms > 0)
        file_ids = tuple(dict.fromkeys(stored.file_ids))
        code = {file_id: index for index, file_id in enumerate(file_ids)}
        files = np.fromiter((code[f] for f in stored.file_ids), dtype=np.int32, count=len(stored.ids))
        return cls(np.asarray(stored.ids, dtype=np.int64), files, file_ids, unit)

    @classmethod
    def merge(cls, segments: Sequence[Segment]) -> Segment:
        offsets = np.cumsum([0] + [len(s.file_ids) for s in segments[:-1]], dtype=np.int32)
        return cls(
            np.concatenate([s.ids for s in segments]),
            np.concatenate([s.files + offset for s, offset in zip(segments, offsets, strict=True)]),
            tuple(file_id for s in segments for file_id in s.file_ids),
            np.concatenate([s.unit for s in segments]),
        )

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.files.nbytes + self.unit.nbytes)

    def only(self, kept: set[str]) -> Segment | None:
        """This segment's rows of the `kept` files (itself if it holds no other file)."""
        codes = [index for index, file_id in enumerate(self.file_ids) if file_id in kept]
        if len(codes) == len(self.file_ids):
            return self
        if not codes:
            return None
        rows = np.isin(self.files, codes)
        recode = np.full(len(self.file_ids), -1, dtype=np.int32)
        recode[codes] = np.arange(len(codes), dtype=np.int32)
        return Segment(
            self.ids[rows], recode[self.files[rows]], tuple(self.file_ids[c] for c in codes), self.unit[rows]
        )

    def top(
        self, query: Float32s, allowed: frozenset[str] | None, limit: int
    ) -> tuple[npt.NDArray[np.int64], Float32s]:
        """Ids and cosines of this segment's best `limit` rows, unordered."""
        scores = self.unit @ query
        if allowed is not None:
            codes = [index for index, file_id in enumerate(self.file_ids) if file_id in allowed]
            scores[~np.isin(self.files, codes)] = -np.inf
        limit = min(limit, len(scores))
        best = np.argpartition(-scores, limit - 1)[:limit]
        return self.ids[best], scores[best]


@dataclass(frozen=True, slots=True)
class VectorMatrix:
    """A source's vectors of one model: its segments, scored with one matrix-vector product each."""

    version: int
    tags: Mapping[str, VectorTag | None]  # per file, as read before its vectors
    segments: tuple[Segment, ...]

    @property
    def nbytes(self) -> int:
        return sum(segment.nbytes for segment in self.segments)

    @classmethod
    def build(
        cls, version: int, tags: Mapping[str, VectorTag | None], stored: StoredVectors, dimensions: int
    ) -> VectorMatrix:
        """Runs in a thread: about a second for a million vectors."""
        return cls(version, tags, ()).refreshed(version, tags, set(), stored, dimensions)

    def unchanged(self, tags: Mapping[str, VectorTag | None]) -> set[str]:
        """The files of `tags` whose rows here are still current."""
        return {f for f, tag in tags.items() if tag is not None and self.tags.get(f, None) == tag}

    def refreshed(
        self,
        version: int,
        tags: Mapping[str, VectorTag | None],
        kept: set[str],
        stored: StoredVectors,
        dimensions: int,
    ) -> VectorMatrix:
        """The rows of the `kept` files, where they are, and the `stored` rows of the others in a
        segment of their own; in a thread."""
        segments = [s for s in (segment.only(kept) for segment in self.segments) if s is not None]
        if stored.ids:
            segments.append(Segment.build(stored, dimensions))
        if len(segments) > MAX_SEGMENTS:
            largest = max(segments, key=lambda s: len(s.ids))
            segments = [largest, Segment.merge([s for s in segments if s is not largest])]
        return VectorMatrix(version, tags, tuple(segments))

    def top(self, query: Sequence[float], allowed: frozenset[str] | None, limit: int) -> Ranking:
        """(passage id, cosine) of the `limit` rows nearest `query`, best first: one matrix-vector
        product per segment and a partial sort, whatever the number of rows."""
        q = np.asarray(query, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        if norm == 0.0 or limit < 1:
            return []
        found = [segment.top(q / norm, allowed, limit) for segment in self.segments if len(segment.ids)]
        if not found:
            return []
        ids = np.concatenate([part_ids for part_ids, _ in found])
        scores = np.concatenate([part_scores for _, part_scores in found])
        best = np.argsort(-scores, kind="stable")[:limit]
        return [(int(ids[i]), float(scores[i])) for i in best if np.isfinite(scores[i])]


class VectorIndex:
    """This instance's cache of vector matrices: when full, the organization holding the most
    gives up its least recently used."""

    def __init__(self, passages: PassageStore, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.passages = passages
        self.max_bytes = max_bytes
        self._cache: OrderedDict[CacheKey, VectorMatrix] = OrderedDict()
        # A lock lives while a search holds or waits for it: one per source ever searched would
        # grow without end.
        self._loading: WeakValueDictionary[CacheKey, asyncio.Lock] = WeakValueDictionary()
        self.vectors_read = 0  # from the database, since this index was made

    async def search(
        self,
        organization_id: str,
        source_id: str,
        version: int,
        model: str,
        query: Sequence[float],
        allowed: frozenset[str] | None,
        limit: int,
    ) -> Ranking:
        """`version` is the source's `passages_version`, read before this call."""
        matrix = await self._matrix((organization_id, source_id, model, len(query)), version)
        return await asyncio.to_thread(matrix.top, query, allowed, limit)

    async def _matrix(self, key: CacheKey, version: int) -> VectorMatrix:
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent searches of a changed source read it once
            cached = self._cache.get(key)
            if cached is not None and cached.version >= version:  # as fresh or fresher
                self._cache.move_to_end(key)
                return cached
            organization_id, source_id, model, dimensions = key
            # The tags are read before the rows: a file written in between is read with its
            # newer rows under its older tag, and read again at the next refresh.
            tags = await self.passages.vector_files(organization_id, source_id, model)
            kept = cached.unchanged(tags) if cached is not None else set()
            base = cached if cached is not None and kept else VectorMatrix(version, tags, ())
            # With nothing to keep, the whole source in one read rather than lists of file ids.
            fresh = [file_id for file_id in tags if file_id not in kept] if kept else None
            stored = await self.passages.vectors(organization_id, source_id, model, dimensions, fresh)
            matrix = await asyncio.to_thread(base.refreshed, version, tags, kept, stored, dimensions)
            # The version was read before the rows: a write in between makes the next search
            # refresh them again, never keeps a stale matrix.
            self.vectors_read += len(stored.ids)
            self._keep(key, matrix)
            return matrix

    def _keep(self, key: CacheKey, matrix: VectorMatrix) -> None:
        self._cache.pop(key, None)
        if matrix.nbytes > self.max_bytes:
            return
        self._cache[key] = matrix
        total = sum(m.nbytes for m in self._cache.values())
        while total > self.max_bytes:
            total -= self._cache.pop(self._eviction_victim(key)).nbytes

    def _eviction_victim(self, kept: CacheKey) -> CacheKey:
        """The least recently used matrix (other than `kept`) of the organization whose matrices
        take the most room: a tenant searching many large sources pushes out its own, never a
        smaller tenant's."""
        held: dict[str, int] = {}
        for (organization_id, *_), matrix in self._cache.items():
            held[organization_id] = held.get(organization_id, 0) + matrix.nbytes
        # `max` keeps the first of equals: the least recently used.
        return max((key for key in self._cache if key != kept), key=lambda key: held[key[0]])
