"""Rules about user text that hold everywhere: a name must show at least one character."""

from __future__ import annotations

import unicodedata

# Separators, control and format characters (zero-width spaces, joiners, direction marks).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
# Blank letters and symbols that Unicode does not file under the categories above.
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: empty, or only spaces and invisible characters (any script)."""
    return all(
        ch.isspace() or ch in _BLANK_CHARACTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
        for ch in text
    )


def check_name(text: str) -> str:
    """`text` itself, or ValueError when it is blank or holds a control character (PostgreSQL
    refuses NUL in text; the others make names unreadable). Pydantic turns that into a 422."""
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ValueError("a name may not contain control characters (tabs, line breaks, NUL)")
    if is_blank(text):
        raise ValueError("a name must contain a visible character; this one is only blank characters")
    return text
