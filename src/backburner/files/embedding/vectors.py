"""Embedding vectors: cosine similarity and a compact byte form for database blob columns."""

from __future__ import annotations

import math
import operator
import sys
from array import array
from collections.abc import Sequence

# float32, little-endian whatever the host: a database written on one machine reads on another.
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity in [-1, 1]; 0.0 when either vector is all zeros."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different sizes: {len(a)} and {len(b)}")
    norms = math.hypot(*a) * math.hypot(*b)
    if norms == 0.0:
        return 0.0
    return math.fsum(map(operator.mul, a, b)) / norms


def vector_to_bytes(vector: Sequence[float]) -> bytes:
    packed = array("f", vector)
    if not _LITTLE_ENDIAN_HOST:
        packed.byteswap()
    return packed.tobytes()


def vector_from_bytes(data: bytes) -> list[float]:
    if len(data) % 4:
        raise ValueError(f"a float32 vector needs a multiple of 4 bytes, got {len(data)}")
    packed = array("f")
    packed.frombytes(data)
    if not _LITTLE_ENDIAN_HOST:
        packed.byteswap()
    return packed.tolist()
