"""Parsing and chunking one file: the CPU-bound step, run in a pool process.

It takes and returns plain picklable values and raises `ParseError` for bad input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from backburner.files.pipeline.budget import ParseLimits
from backburner.files.pipeline.chunking import iter_chunk_texts
from backburner.files.pipeline.parsers import ParseError, parser_for


@dataclass(frozen=True, slots=True)
class ChunkedDocument:
    kind: str
    # Chunk i's text; plain strings cross the process boundary several times cheaper than
    # `Chunk` objects.
    texts: list[str]
    chars: int
    parse_s: float
    chunk_s: float
    warnings: list[str]


def parse_and_chunk(
    path: str,
    file_name: str,
    content_type: str | None,
    size_chars: int,
    overlap_chars: int,
    limits: ParseLimits,
) -> ChunkedDocument:
    """Parse the file at `path` with the parser its name and type choose, then chunk the text."""
    parser = parser_for(file_name, content_type)
    if parser is None:
        raise ParseError(f"unsupported file type: {file_name}")
    started = time.perf_counter()
    document = parser(Path(path), limits)
    parsed = time.perf_counter()
    texts = list(iter_chunk_texts(document.text, document.kind.value, size_chars, overlap_chars))
    if not texts:  # a file is never COMPLETED with nothing to search
        raise ParseError("no text found in the file")
    return ChunkedDocument(
        kind=document.kind.value,
        texts=texts,
        chars=len(document.text),
        parse_s=parsed - started,
        chunk_s=time.perf_counter() - parsed,
        warnings=list(document.warnings),
    )
