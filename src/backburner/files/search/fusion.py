"""Reciprocal rank fusion: each ranking adds 1 / (k + rank) to the passages it found."""

from __future__ import annotations

from collections.abc import Sequence

# The constant of Cormack, Clarke and Büttcher (2009); it damps the weight of the very top ranks.
RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """(passage id, fused score) best first; a passage found by several rankings sums its shares.

    Ties keep the order in which the passages were first seen, so the result is deterministic.
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        for position, passage_id in enumerate(ranking, start=1):
            fused[passage_id] = fused.get(passage_id, 0.0) + 1.0 / (k + position)
    return sorted(fused.items(), key=lambda item: -item[1])
