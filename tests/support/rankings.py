"""Comparing search rankings whose cosines come from differently split matrix products."""

from __future__ import annotations

from collections.abc import Sequence

import pytest


def same_ranking(found: Sequence[tuple[int, float]], expected: Sequence[tuple[int, float]]) -> bool:
    """The same passages in the same order, with the same cosines but for the last bits: those
    depend on how numpy splits a product, which follows the alignment of the memory it got."""
    return [i for i, _ in found] == [i for i, _ in expected] and [s for _, s in found] == pytest.approx(
        [s for _, s in expected], rel=1e-5, abs=1e-6
    )
