"""Chunking: sizes, overlap, structure (headings, paragraphs, sentences) and coverage."""

from __future__ import annotations

import hashlib
import itertools
import random
import re

import pytest

from backburner.files.pipeline.chunking import (
    Chunk,
    _spans,
    chunk_text,
    heading_offsets,
    iter_chunks,
    validate_chunking,
)

WORDS = [
    *("river", "stone", "cloud", "maple", "harbor", "lantern", "copper", "meadow", "signal", "orbit"),
    *("velvet", "canyon", "ember", "quartz", "willow", "falcon", "glacier", "prism", "tundra", "beacon"),
]


def sentence(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return body[0].upper() + body[1:] + rng.choice(".!?")


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(3, 25)) for _ in range(sentences))


def markdown_document(seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    for section in range(12):
        parts.append(f"{'#' * rng.randint(1, 3)} Section {section}")
        for _ in range(rng.randint(0, 5)):
            parts.append(paragraph(rng, rng.randint(1, 12)))
        if rng.random() < 0.3:
            parts.append("```python\n# a comment, not a heading\n\nprint('hi')\n```")
    return "\n\n".join(parts) + "\n"


def positions(text: str, chunks: list[Chunk]) -> list[int]:
    """Where each chunk starts in the text (chunks are in order and may overlap)."""
    found: list[int] = []
    cursor = 0
    for chunk in chunks:
        at = text.find(chunk.text, cursor)
        assert at != -1, f"chunk {chunk.index} is not a slice of the text"
        found.append(at)
        cursor = at  # a chunk may start where the previous one did (overlap of a short core)
    return found


def assert_covers(text: str, kind: str, size: int, overlap: int, chunks: list[Chunk]) -> None:
    """Every non-space character of the text is in a chunk, using the chunker's exact spans."""
    headings = heading_offsets(text) if kind == "markdown" else []
    spans = list(_spans(text, headings, size, overlap))
    assert [text[start:end].strip() for start, end in spans] == [c.text for c in chunks]
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"{len(missing)} characters in no chunk, first at {missing[0]}"


SIZES = [(200, 0), (200, 40), (500, 100), (1200, 150), (80, 79)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("size", "overlap"), SIZES)
def test_every_chunk_fits_and_all_text_is_covered(seed: int, size: int, overlap: int) -> None:
    text = markdown_document(seed)
    for kind in ("markdown", "text"):
        chunks = chunk_text(text, kind, size, overlap)
        assert chunks
        assert [c.index for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert 0 < len(chunk.text) <= size
            assert chunk.text == chunk.text.strip()
            assert chunk.sha256 == hashlib.sha256(chunk.text.encode()).hexdigest()
        assert_covers(text, kind, size, overlap, chunks)


@pytest.mark.parametrize("seed", range(6))
def test_headings_begin_chunks(seed: int) -> None:
    text = markdown_document(seed)
    chunks = chunk_text(text, "markdown", 500, 100)
    starts = positions(text, chunks)
    for heading in heading_offsets(text):
        # Either a chunk starts at the heading, or the chunk starts at the heading just above it
        # with nothing but headings in between.
        owner = max(i for i, at in enumerate(starts) if at <= heading)
        head = text[starts[owner] : heading]
        assert starts[owner] == heading or all(
            line.startswith("#") for line in head.split("\n") if line.strip()
        ), f"heading at {heading} is inside chunk {owner}"


def test_code_fences_hide_hash_lines() -> None:
    text = "# Real\n\n```\n# comment\n\n## also a comment\n```\n\n~~~\n# tilde\n~~~\n\n## Second\n"
    assert [text[o:].split("\n", 1)[0] for o in heading_offsets(text)] == ["# Real", "## Second"]


def test_a_heading_followed_by_a_subheading_shares_its_chunk() -> None:
    text = "# Title\n\n## Part one\n\nBody of part one.\n\n## Part two\n\nBody of part two.\n"
    assert [c.text for c in chunk_text(text, "markdown", 60, 10)] == [
        "# Title\n\n## Part one\n\nBody of part one.",
        "## Part two\n\nBody of part two.",
    ]


def test_hash_lines_in_plain_text_and_code_are_not_headings() -> None:
    text = "# just a comment line\n\nx = 1\n\n# another comment\n\ny = 2\n"
    assert [c.text for c in chunk_text(text, "code", 200, 20)] == [text.strip()]


def test_paragraphs_that_fit_are_kept_whole() -> None:
    rng = random.Random(7)
    paragraphs = [paragraph(rng, rng.randint(1, 5)) for _ in range(60)]
    paragraphs = [p for p in paragraphs if len(p) <= 400]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, "text", 500, 100)
    for p in paragraphs:
        assert any(p in c.text for c in chunks), "a paragraph that fits was split"


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    rng = random.Random(3)
    text = " ".join(sentence(rng, 12) for _ in range(300))  # one long paragraph
    chunks = chunk_text(text, "text", 400, 80)
    assert len(chunks) > 10
    for previous, current in itertools.pairwise(chunks):
        shared = _shared_prefix_suffix(previous.text, current.text)
        assert 40 <= shared <= 80, f"{shared} characters shared"


def _shared_prefix_suffix(previous: str, current: str) -> int:
    for length in range(min(len(previous), len(current)), 0, -1):
        if previous.endswith(current[:length]):
            return length
    return 0


def test_no_overlap_crosses_a_heading() -> None:
    text = "# One\n\n" + "alpha beta gamma. " * 20 + "\n\n# Two\n\nshort body.\n"
    chunks = chunk_text(text, "markdown", 200, 60)
    assert chunks[-1].text == "# Two\n\nshort body."


def test_long_paragraphs_split_at_sentence_ends() -> None:
    rng = random.Random(11)
    text = " ".join(sentence(rng, rng.randint(4, 10)) for _ in range(200))
    chunks = chunk_text(text, "text", 300, 0)
    assert all(c.text[-1] in ".!?" for c in chunks[:-1])
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_text_without_sentences_splits_between_words() -> None:
    text = " ".join(["word"] * 1000)
    chunks = chunk_text(text, "text", 103, 10)
    assert all(c.text.split(" ") == ["word"] * len(c.text.split(" ")) for c in chunks)


def test_a_10_mb_single_line_is_split_by_size() -> None:
    text = "x" * (10 * 1024 * 1024)
    chunks = chunk_text(text, "text", 1000, 100)
    # Cores of 900 characters, each but the first preceded by 100 characters of overlap.
    assert len(chunks[0].text) == 900
    assert {len(c.text) for c in chunks[1:-1]} == {1000}
    assert len(chunks) == -(-len(text) // 900)
    assert sum(len(c.text) for c in chunks) - 100 * (len(chunks) - 1) == len(text)


def test_a_10_mb_line_of_dots_stays_linear() -> None:
    # A run of sentence punctuation with no space must not make the sentence search quadratic.
    chunks = chunk_text("." * (10 * 1024 * 1024), "text", 1200, 150)
    assert max(len(c.text) for c in chunks) <= 1200


def test_windows_newlines_and_blank_input() -> None:
    assert [c.text for c in chunk_text("a\r\n\r\nb\rc", "text", 3, 0)] == ["a", "b\nc"]
    assert chunk_text("", "text", 100, 10) == []
    assert chunk_text(" \n\n \t", "markdown", 100, 10) == []


def test_iterator_matches_list_and_is_deterministic() -> None:
    text = markdown_document(1)
    assert list(iter_chunks(text, "markdown", 300, 50)) == chunk_text(text, "markdown", 300, 50)
    assert chunk_text(text, "markdown", 300, 50) == chunk_text(text, "markdown", 300, 50)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-5, 0), (100, 100), (100, 150), (100, -1)])
def test_invalid_settings_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=re.escape(str(size if size < 1 else overlap))):
        validate_chunking(size, overlap)
    with pytest.raises(ValueError):
        chunk_text("text", "text", size, overlap)
