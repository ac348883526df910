"""A user's query as plain search terms: nothing of its text reaches a full-text query language.

FTS5 and `tsquery` each have a syntax (quotes, `AND`, `NEAR(`, `*`, `:`, `!`); a query is reduced
to runs of letters and digits first, so that whatever the user typed is only ever words.
"""

from __future__ import annotations

import re

# PostgreSQL's `english` stop words (Snowball's list): its `tsvector` drops them, and so does
# the query here, on both databases. A word in nearly every passage ranks nothing and would make
# the full-text engine score every passage of the source.
_STOP_WORDS = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the and
    but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own
    same so than too very s t can will just don should now
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
# Runs of letters and digits; `_` splits words, as both databases' tokenisers do.
_WORD = re.compile(r"[^\W_]+")
# Bounds the cost of one query: each term is a branch of the full-text query.
MAX_TERMS = 32
MAX_TERM_CHARS = 64


def query_terms(query: str) -> list[str]:
    """The distinct words of `query` but stop words, lower-cased, in order of first appearance."""
    terms: dict[str, None] = {}
    for match in _WORD.finditer(query):
        word = match.group().lower()
        # A lone surrogate cannot be encoded for the database; it is no word anyway.
        if word in STOP_WORDS or len(word) > MAX_TERM_CHARS or not word.isprintable():
            continue
        if _has_surrogate(word):
            continue
        terms.setdefault(word)
        if len(terms) == MAX_TERMS:
            break
    return list(terms)


def _has_surrogate(word: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in word)
