"""The `hash` embedder: feature hashing of words and word pairs, with no model at all."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from itertools import filterfalse, repeat
from operator import add, itemgetter, mod, sub, truediv, xor

# Punctuation becomes a space before splitting on spaces: several times faster than a `\w+`
# regex on chunk-sized text. ASCII punctuation, then the common Unicode punctuation blocks.
_SEPARATORS = str.maketrans(
    dict.fromkeys(
        [
            *"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»¿¡·§¶°",
            *map(chr, range(0x2000, 0x2070)),  # General Punctuation
            *map(chr, range(0x3000, 0x3005)),  # CJK spaces and marks
            *map(chr, range(0x3008, 0x3020)),  # CJK brackets
            *map(chr, range(0xFF01, 0xFF10)),  # full-width punctuation
        ],
        " ",
    )
)
_STOP_WORDS = frozenset(
    str.split(
        """
    a an and are as at be but by for from has have he her his i if in into is it its me my no not
    of on or our she so that the their them then there these they this to was we were what when
    where which who why will with you your do does did can could would should been being than too
    very s t just about also how all any both each more most other some such only own same
    """
    )
)
# Each token's hash values are kept for reuse (text has a small working vocabulary); past this
# many tokens the tables start again rather than grow without end.
MAX_VOCABULARY = 500_000


def tokenize(text: str) -> list[str]:
    """Lower-cased words without stop words, in order."""
    return list(filterfalse(_STOP_WORDS.__contains__, text.lower().translate(_SEPARATORS).split()))


class HashEmbedder:
    """Feature hashing of word unigrams and bigrams into a signed, L2-normalised vector.

    No model and no network: the default, so that everything works offline. Deterministic across
    processes and machines (BLAKE2b, never Python's salted `hash()`).

    The vector has `dimensions` buckets; a *code* in `[0, 2 * dimensions)` names a bucket
    (`code // 2`) and a sign (`code % 2`). Each token is hashed once into three independent codes:
    its own, and a left and a right part that place a bigram `(x, y)` at `left[x] ^ right[y]`
    (or `(left[x] + right[y]) mod codes` when the code count is not a power of two) - a universal
    hash of the pair. Lookups, counting and projection then run in C (`itemgetter`, `Counter`,
    `map`), so a 1,000-character chunk costs well under 100 microseconds.
    """

    name = "hash"

    def __init__(self, dimensions: int = 256, *, max_batch_size: int = 1024) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        self._dimensions = dimensions
        self._max_batch_size = max_batch_size
        self._codes = 2 * dimensions
        self._xor_pairs = self._codes & (self._codes - 1) == 0
        self._unigram: dict[str, int] = {}
        self._left: dict[str, int] = {}
        self._right: dict[str, int] = {}

    @property
    def model(self) -> str:
        return f"feature-hash-v1-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # A small batch is quicker inline than through a thread hop.
        if sum(map(len, texts)) < 32_768:
            return self.embed_sync(texts)
        return await asyncio.to_thread(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The same vectors, synchronously (in a thread or a process pool)."""
        return [self._vector(text) for text in texts]

    async def aclose(self) -> None:
        return None

    def _vector(self, text: str) -> list[float]:
        tokens = tokenize(text)
        if not tokens:
            return [0.0] * self._dimensions
        # Local references: another thread may replace the tables while this one reads them.
        unigram, left, right = self._tables_with(tokens)
        if len(tokens) == 1:
            counts = Counter((unigram[tokens[0]],))
        else:
            lookup = itemgetter(*tokens)  # one C call for all the lookups
            lefts: tuple[int, ...] = lookup(left)
            rights: tuple[int, ...] = lookup(right)
            if self._xor_pairs:
                bigrams = tuple(map(xor, lefts, rights[1:]))
            else:
                bigrams = tuple(map(mod, map(add, lefts, rights[1:]), repeat(self._codes)))
            counts = Counter(lookup(unigram) + bigrams)
        get = counts.get
        vector = list(
            map(
                sub,
                map(get, range(0, self._codes, 2), repeat(0)),
                map(get, range(1, self._codes, 2), repeat(0)),
            )
        )
        norm = math.hypot(*vector)
        if norm == 0.0:
            return [0.0] * self._dimensions
        return list(map(truediv, vector, repeat(norm)))

    def _tables_with(self, tokens: list[str]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        unigram, left, right = self._unigram, self._left, self._right
        if all(map(unigram.__contains__, tokens)):  # the usual case once the vocabulary is warm
            return unigram, left, right
        missing = set(tokens).difference(unigram)
        if len(unigram) + len(missing) > MAX_VOCABULARY:
            unigram, left, right = {}, {}, {}
            self._unigram, self._left, self._right = unigram, left, right
            missing = set(tokens)
        codes = self._codes
        for token in missing:
            digest = hashlib.blake2b(token.encode(), digest_size=24, person=b"backburner-hash").digest()
            left[token] = int.from_bytes(digest[8:16], "little") % codes
            right[token] = int.from_bytes(digest[16:24], "little") % codes
            # Written last: a token present here has its other two codes too.
            unigram[token] = int.from_bytes(digest[:8], "little") % codes
        return unigram, left, right


_PROCESS_EMBEDDERS: dict[int, HashEmbedder] = {}


def hash_vectors(texts: Sequence[str], dimensions: int) -> list[list[float]]:
    """`HashEmbedder(dimensions)` vectors from a plain function, for `ProcessPoolExecutor`.

    Each process keeps one embedder per size so that its token tables are reused between calls.
    """
    embedder = _PROCESS_EMBEDDERS.get(dimensions)
    if embedder is None:
        embedder = _PROCESS_EMBEDDERS.setdefault(dimensions, HashEmbedder(dimensions))
    return embedder.embed_sync(texts)
