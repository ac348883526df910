"""A user's query as plain search terms: nothing of its text reaches a full-text query language.

FTS5 and `tsquery` each have a syntax (quotes, `AND`, `NEAR(`, `*`, `:`, `!`); a query is reduced
to runs of letters and digits first, so that whatever the user typed is only ever words.
"""

from __future__ import annotations

import re

# Runs of letters and digits; `_` splits words, as both databases' tokenisers do.
_WORD = re.compile(r"[^\W_]+")
# Bounds the cost of one query: each term is a branch of the full-text query.
MAX_TERMS = 32
MAX_TERM_CHARS = 64


def query_terms(query: str) -> list[str]:
    """The distinct words of `query`, lower-cased, in order of first appearance."""
    terms: dict[str, None] = {}
    for match in _WORD.finditer(query):
        word = match.group().lower()
        # A lone surrogate cannot be encoded for the database; it is no word anyway.
        if len(word) > MAX_TERM_CHARS or not word.isprintable() or _has_surrogate(word):
            continue
        terms.setdefault(word)
        if len(terms) == MAX_TERMS:
            break
    return list(terms)


def _has_surrogate(word: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in word)
