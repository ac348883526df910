"""The pure parts of search: query terms, reciprocal rank fusion, glob translation, top-k."""

from __future__ import annotations

import numpy as np

from backburner.files.search.filters import SearchFilter, glob_to_like, glob_to_sqlite_glob
from backburner.files.search.fusion import reciprocal_rank_fusion
from backburner.files.search.lexical import fts5_match
from backburner.files.search.terms import MAX_TERMS, query_terms
from backburner.files.search.vectors import MAX_SEGMENTS, VectorMatrix
from backburner.files.store.passages import StoredVectors
from tests.support.rankings import same_ranking


def test_query_terms_are_words_only() -> None:
    assert query_terms('Who is "Thaddeus" Quimby? AND NEAR(x, y) col:term * -a_b') == [
        "thaddeus",
        "quimby",
        "near",
        "x",
        "y",
        "col",
        "term",
        "b",
    ]  # fmt: skip (stop words dropped: who, is, and, a)
    assert query_terms("\x00 \ud800 ' \" ( ) * ^ : !") == []
    assert query_terms("Ünïcödé ß 42") == ["ünïcödé", "ß", "42"]
    assert len(query_terms(" ".join(f"w{i}" for i in range(1000)))) == MAX_TERMS
    assert fts5_match(["a", "b"]) == '"a" OR "b"'


def test_reciprocal_rank_fusion_sums_the_shares_of_each_ranking() -> None:
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 4]]))
    assert fused[3] == 1 / 63 + 1 / 61
    assert fused[1] == 1 / 61 and fused[4] == 1 / 62
    # 2 and 4 tie: the first seen comes first.
    assert [i for i, _ in reciprocal_rank_fusion([[1, 2, 3], [3, 4]])] == [3, 1, 2, 4]
    assert reciprocal_rank_fusion([[], []]) == []


def test_globs_keep_every_other_character_literal() -> None:
    assert glob_to_like("*.md") == "%.md"
    assert glob_to_like("a_b%c?\\") == "a\\_b\\%c_\\\\"
    assert glob_to_sqlite_glob("[x]*.md") == "[[]x]*.md"
    assert SearchFilter.of(["a,b", " c "], "").file_ids == frozenset({"a", "b", "c"})
    assert SearchFilter.of(None, None).empty


def test_top_k_is_exact_and_honours_the_file_filter() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 16)).astype("<f4")
    stored = StoredVectors(
        list(range(100, 600)), [f"file-{i % 3}" for i in range(500)], [v.tobytes() for v in vectors]
    )
    matrix = VectorMatrix.build(1, {f"file-{i}": (1, "m", 0) for i in range(3)}, stored, 16)
    query = rng.standard_normal(16).tolist()
    exact = vectors @ np.asarray(query, dtype=np.float32) / np.linalg.norm(vectors, axis=1)
    expected = [100 + int(i) for i in np.argsort(-exact)[:10]]
    assert [i for i, _ in matrix.top(query, None, 10)] == expected
    only = matrix.top(query, frozenset({"file-1"}), 10)
    assert len(only) == 10 and all((i - 100) % 3 == 1 for i, _ in only)
    assert matrix.top(query, frozenset({"file-9"}), 10) == []
    assert matrix.top([0.0] * 16, None, 10) == []


def _stored(rows: dict[str, list[int]], vectors: np.ndarray) -> StoredVectors:
    """The rows of each file (passage ids, which index `vectors`), in the order given."""
    pairs = [(file_id, i) for file_id, ids in rows.items() for i in ids]
    return StoredVectors(
        [i for _, i in pairs], [f for f, _ in pairs], [vectors[i].tobytes() for _, i in pairs]
    )


def _rows(matrix: VectorMatrix) -> dict[int, tuple[str, tuple[float, ...]]]:
    """Passage id -> (file id, unit vector rounded), wherever the row is."""
    return {
        int(i): (segment.file_ids[code], tuple(np.round(unit, 6)))
        for segment in matrix.segments
        for i, code, unit in zip(segment.ids, segment.files, segment.unit, strict=True)
    }


def test_a_refreshed_matrix_keeps_unchanged_files_and_equals_a_full_build() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((40, 8)).astype("<f4")
    before = {"a": list(range(0, 10)), "b": list(range(10, 14)), "c": list(range(14, 20))}
    old_tags = {"a": (10, "m", 0), "b": (4, "m", 0), "c": (6, "m", 0), "r": None}
    old = VectorMatrix.build(1, old_tags, _stored(before, vectors), 8)
    # b grew, c was deleted, d is new, r (re-embedding) is never kept; a is unchanged.
    tags = {"a": (10, "m", 0), "b": (8, "m", 0), "d": (5, "m", 0), "r": None}
    assert old.unchanged(tags) == {"a"}
    fresh = {"b": list(range(10, 14)) + list(range(30, 34)), "d": list(range(20, 25))}
    refreshed = old.refreshed(2, tags, {"a"}, _stored(fresh, vectors), 8)
    full = VectorMatrix.build(2, tags, _stored({"a": before["a"], **fresh}, vectors), 8)

    assert _rows(refreshed) == _rows(full)
    assert refreshed.version == 2 and refreshed.tags == tags
    for _ in range(5):
        query = rng.standard_normal(8).tolist()
        assert same_ranking(refreshed.top(query, None, 7), full.top(query, None, 7))
        assert same_ranking(
            refreshed.top(query, frozenset({"a", "d"}), 7), full.top(query, frozenset({"a", "d"}), 7)
        )
    assert refreshed.top(query, frozenset({"c"}), 7) == []


def test_refreshes_keep_few_segments_and_copy_only_the_small_ones() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2000, 8)).astype("<f4")
    rows = {f"f{n}": list(range(n * 100, n * 100 + 100)) for n in range(10)}
    tags = {file_id: (100, "m", 0) for file_id in rows}
    matrix = VectorMatrix.build(1, tags, _stored(rows, vectors), 8)
    for n in range(10, 20):  # one new file per refresh, and one file removed every other time
        new = f"f{n}"
        rows[new] = list(range(n * 100, n * 100 + 100))
        if n % 2:
            del rows[f"f{n - 10}"]
        tags = {file_id: (100, "m", 0) for file_id in rows}
        kept = matrix.unchanged(tags)
        assert kept == set(rows) - {new}
        first = matrix.segments[0]
        matrix = matrix.refreshed(n, tags, kept, _stored({new: rows[new]}, vectors), 8)
        assert len(matrix.segments) <= MAX_SEGMENTS
        if n % 2 == 0:  # nothing removed: the first segment is kept as it is, not copied
            assert any(segment is first for segment in matrix.segments)
        assert _rows(matrix) == _rows(VectorMatrix.build(n, tags, _stored(rows, vectors), 8))
    query = rng.standard_normal(8).tolist()
    full = VectorMatrix.build(20, tags, _stored(rows, vectors), 8)
    assert matrix.top(query, None, 25) == full.top(query, None, 25)
