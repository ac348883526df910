"""The `hash` embedder: feature hashing of words and word pairs, with no model at all."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

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


class HashEmbedder:
    """Feature hashing of word unigrams and bigrams into a signed, L2-normalised vector.

    No model and no network: the default, so that everything works offline. Deterministic across
    processes and machines (BLAKE2b, never Python's salted `hash()`).

    The vector has `dimensions` buckets; a *code* in `[0, 2 * dimensions)` names a bucket
    (`code // 2`) and a sign (`code % 2`). Each word is hashed once into three independent codes:
    its own, and a left and a right part that place a bigram `(x, y)` at `left[x] ^ right[y]`
    (or `(left[x] + right[y]) mod codes` when the code count is not a power of two) - a universal
    hash of the pair. Stop words are dropped before pairing.

    A batch is embedded at once with numpy: each word gets a number in a vocabulary (hashed the
    first time it is seen), and the codes of the whole batch are counted into one matrix by a
    single `bincount`. Python only splits the texts and looks the words up, so the cost per
    chunk falls as batches grow.
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
        # Threads share the tables (`embed` runs large batches in threads): one grows them at a time.
        self._lock = threading.Lock()
        self._vocabulary = _Vocabulary()

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
        result: list[list[float]] = self.embed_matrix(texts).tolist()
        return result

    def embed_packed_sync(self, texts: Sequence[str]) -> list[bytes]:
        """The vectors as little-endian float32 bytes (`vectors.vector_to_bytes`), one per text."""
        packed = self.embed_matrix(texts).astype("<f4").tobytes()
        size = 4 * self._dimensions
        return [packed[start : start + size] for start in range(0, len(packed), size)]

    def embed_matrix(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text: the normalised vectors (all zeros for a text without words)."""
        rows = len(texts)
        dimensions = self._dimensions
        words_per_text = [_words(text) for text in texts]
        words = list(chain.from_iterable(words_per_text))
        ids, tables = self._ids(words)
        keep = ~tables.stop[ids]
        ids = ids[keep]
        # The text of each kept word, ascending.
        row_of = np.repeat(np.arange(rows, dtype=np.int64), list(map(len, words_per_text)))[keep]
        codes = tables.unigram[ids]
        if len(ids) > 1:
            lefts, rights = tables.left[ids[:-1]], tables.right[ids[1:]]
            pairs = lefts ^ rights if self._xor_pairs else (lefts + rights) % self._codes
            same_text = row_of[:-1] == row_of[1:]
            codes = np.concatenate((codes, pairs[same_text]))
            row_of = np.concatenate((row_of, row_of[:-1][same_text]))
        # Even codes add one to their bucket, odd codes subtract one.
        signs = 1.0 - 2.0 * (codes & 1)
        counts = np.bincount(row_of * dimensions + (codes >> 1), weights=signs, minlength=rows * dimensions)
        # (An empty batch of codes counts as integers: made float for the division.)
        matrix = counts.astype(np.float64, copy=False).reshape(rows, dimensions)
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        norms[norms == 0.0] = 1.0  # all-zero rows stay zero
        matrix /= norms[:, None]
        return matrix

    async def aclose(self) -> None:
        return None

    def _ids(self, words: list[str]) -> tuple[NDArray[np.int64], _Tables]:
        """The words' vocabulary numbers, and the tables they index."""
        with self._lock:
            vocabulary = self._vocabulary
            lookup = vocabulary.ids.__getitem__
            try:
                ids = np.fromiter(map(lookup, words), np.int64, len(words))
            except KeyError:  # new words: hash them, then look all of them up again
                missing = set(words).difference(vocabulary.ids)
                if len(vocabulary.ids) + len(missing) > MAX_VOCABULARY:
                    vocabulary = self._vocabulary = _Vocabulary()
                    missing = set(words)
                vocabulary.add(sorted(missing), self._codes)
                lookup = vocabulary.ids.__getitem__
                ids = np.fromiter(map(lookup, words), np.int64, len(words))
            return ids, vocabulary.tables


def _words(text: str) -> list[str]:
    """Lower-cased words, stop words included (the vocabulary marks those)."""
    return text.lower().translate(_SEPARATORS).split()


class _Tables(NamedTuple):
    """Per vocabulary number: the word's three codes and whether it is a stop word."""

    unigram: NDArray[np.int64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    stop: NDArray[np.bool_]


class _Vocabulary:
    """Word -> number, and the tables those numbers index.

    Words are only added, under the embedder's lock, into slots past those in use, and a growing
    table is a new array: a thread reading the tables it took for its numbers reads consistent
    values without the lock.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        empty = np.zeros(0, np.int64)
        self.tables = _Tables(empty, empty, empty, np.zeros(0, np.bool_))

    def add(self, words: Sequence[str], codes: int) -> None:
        used = len(self.ids)
        tables = self.tables
        if used + len(words) > len(tables.unigram):
            capacity = max(used + len(words), 2 * len(tables.unigram), 1024)
            tables = self.tables = _Tables(
                np.resize(tables.unigram, capacity),
                np.resize(tables.left, capacity),
                np.resize(tables.right, capacity),
                np.resize(tables.stop, capacity),
            )
        unigram, left, right, stop = tables
        for number, word in enumerate(words, start=used):
            digest = hashlib.blake2b(word.encode(), digest_size=24, person=b"backburner-hash").digest()
            unigram[number] = int.from_bytes(digest[:8], "little") % codes
            left[number] = int.from_bytes(digest[8:16], "little") % codes
            right[number] = int.from_bytes(digest[16:24], "little") % codes
            stop[number] = word in _STOP_WORDS
            # Written last: a word with a number has its codes.
            self.ids[word] = number


_PROCESS_EMBEDDERS: dict[int, HashEmbedder] = {}


def hash_embed_packed(dimensions: int, texts: list[str]) -> list[bytes]:
    """`hash` vectors of `texts`, packed as float32 bytes, from a plain function that a pool
    process runs; each process keeps one embedder per size, its token tables warm."""
    embedder = _PROCESS_EMBEDDERS.get(dimensions)
    if embedder is None:
        embedder = _PROCESS_EMBEDDERS.setdefault(dimensions, HashEmbedder(dimensions))
    return embedder.embed_packed_sync(texts)
