"""Text to chunks of bounded size that follow the document's structure.

The text is cut into consecutive *cores*, then each chunk is its core preceded by up to
`overlap_chars` of the text just before it, so that a passage cut in two is still found whole in
one of the chunks. Where a core ends, in order of preference:

1. at the next heading, when the rest of the section fits (headings always start a chunk, and
   such a chunk carries no overlap from the previous section; a heading directly followed by
   another one shares its chunk);
2. at the last paragraph break that leaves room for the full overlap, or else at the first one
   that fits in the chunk at all (a paragraph that fits is kept whole, with less overlap);
3. at the last line break, sentence end or space in the window;
4. at exactly the window's size (a single 10 MB line without spaces still splits).

Breaks closer than a quarter of the window to the core's start are not taken (except to keep a
paragraph whole), so chunks do not come out tiny. Each step searches only a window of at most
`size_chars` characters with C-level string methods: the whole run is linear in the text length.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Document kinds whose lines starting with `#` are headings. Parsers turn HTML and DOCX headings
# into Markdown ones; in source code `#` starts a comment.
HEADING_KINDS = frozenset({"markdown", "html", "docx"})

_PARAGRAPH = "\n\n"
_NON_SPACE = re.compile(r"\S")
_SPACE = re.compile(r"\s")
# Constant-time alternatives only (no repeated groups), so a run of dots cannot make it quadratic.
_SENTENCE_END = re.compile(r"(?:[.!?\u2026][\"'\u201d\u2019)\]]?(?=\s)|[\u3002\uff01\uff1f])")
_HEADING_OR_FENCE = re.compile(r"^(?:#{1,6}(?=[ \t]|$)|(`{3,}|~{3,}))", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    sha256: str


def validate_chunking(size_chars: int, overlap_chars: int) -> None:
    if size_chars < 1:
        raise ValueError(f"size_chars must be at least 1, got {size_chars}")
    if overlap_chars < 0:
        raise ValueError(f"overlap_chars must not be negative, got {overlap_chars}")
    if overlap_chars >= size_chars:
        raise ValueError(f"overlap_chars ({overlap_chars}) must be smaller than size_chars ({size_chars})")


def chunk_text(text: str, kind: str, size_chars: int, overlap_chars: int) -> list[Chunk]:
    return list(iter_chunks(text, kind, size_chars, overlap_chars))


def iter_chunks(text: str, kind: str, size_chars: int, overlap_chars: int) -> Iterator[Chunk]:
    """The chunks one at a time, so a caller can embed and store them in batches."""
    for index, piece in enumerate(iter_chunk_texts(text, kind, size_chars, overlap_chars)):
        yield Chunk(index=index, text=piece, sha256=hashlib.sha256(piece.encode()).hexdigest())


def iter_chunk_texts(text: str, kind: str, size_chars: int, overlap_chars: int) -> Iterator[str]:
    """The chunks' texts alone, for callers that need no digest."""
    validate_chunking(size_chars, overlap_chars)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    headings = heading_offsets(text) if kind in HEADING_KINDS else []
    for start, end in _spans(text, headings, size_chars, overlap_chars):
        yield text[start:end].strip()


def heading_offsets(text: str) -> list[int]:
    """Offsets of Markdown ATX headings (`# Title`), ignoring lines inside fenced code blocks."""
    offsets: list[int] = []
    fence: str | None = None
    for match in _HEADING_OR_FENCE.finditer(text):
        marker = match.group(1)
        if marker is not None:
            if fence is None:
                fence = marker[0]
            elif marker[0] == fence:
                fence = None
        elif fence is None:
            offsets.append(match.start())
    return offsets


def _spans(text: str, headings: list[int], size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each chunk: the core [core, end) with the overlap before it."""
    n = len(text)
    window = size - overlap  # a core this long leaves room for the full overlap
    min_fill = max(1, window // 4)
    heading_set = set(headings)
    previous_core: int | None = None
    core = _skip_space(text, 0)
    while core < n:
        next_index = bisect.bisect_right(headings, core)
        section_end = headings[next_index] if next_index < len(headings) else n
        # A heading right above another (a title, then a subtitle) stays with it: a chunk of
        # a bare heading would match nothing.
        last = core
        while (
            core in heading_set
            and section_end < n
            and section_end - core <= size
            and _bare_heading(text, last, section_end)
        ):
            last = section_end
            next_index += 1
            section_end = headings[next_index] if next_index < len(headings) else n
        if section_end - core <= size:
            end = section_end
        else:
            end = _core_end(text, core, size, window, min_fill, headings)
        start = core
        if previous_core is not None and core not in heading_set and overlap:
            start = _overlap_start(text, previous_core, core, min(overlap, size - (end - core)))
        yield start, end
        previous_core = core
        core = _skip_space(text, end)


def _core_end(text: str, core: int, size: int, window: int, min_fill: int, headings: list[int]) -> int:
    """Where a core starting at `core` ends, given that its section is longer than `size`."""
    low, high, limit = core + min_fill, core + window, core + size
    p = text.rfind(_PARAGRAPH, low, high + len(_PARAGRAPH))
    if p != -1:
        return p
    # Keep the paragraph that crosses the window whole, at the cost of overlap, if it fits.
    p = text.find(_PARAGRAPH, high, limit + len(_PARAGRAPH))
    if p != -1:
        return p
    p = text.rfind(_PARAGRAPH, core + 1, low + len(_PARAGRAPH) - 1)
    if p != -1 and _paragraph_fits(text, _skip_space(text, p), size, headings):
        return p
    p = text.rfind("\n", low, high + 1)
    if p != -1:
        return p
    last_sentence = -1
    for match in _SENTENCE_END.finditer(text, low, high):
        last_sentence = match.end()
    if last_sentence != -1:
        return last_sentence
    p = max(text.rfind(" ", low, high + 1), text.rfind("\t", low, high + 1))
    if p != -1:
        return p
    return high


def _bare_heading(text: str, heading: int, section_end: int) -> bool:
    line_end = text.find("\n", heading, section_end)
    return line_end == -1 or not text[line_end:section_end].strip()


def _paragraph_fits(text: str, start: int, size: int, headings: list[int]) -> bool:
    limit = start + size
    if limit >= len(text) or text.find(_PARAGRAPH, start, limit + len(_PARAGRAPH)) != -1:
        return True
    next_index = bisect.bisect_right(headings, start)
    return next_index < len(headings) and headings[next_index] <= limit


def _overlap_start(text: str, previous_core: int, core: int, budget: int) -> int:
    """The start of at most `budget` characters before `core`, moved forward to a word start."""
    if budget <= 0:
        return core
    start = max(previous_core, core - budget)
    if start == previous_core:
        return start
    space = _SPACE.search(text, start, core)
    if space is None:
        return start  # one long word: overlap starts inside it
    return _skip_space(text, space.start())


def _skip_space(text: str, pos: int) -> int:
    match = _NON_SPACE.search(text, pos)
    return match.start() if match is not None else len(text)
