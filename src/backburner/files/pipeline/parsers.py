"""Parsers: a file on disk to plain text, chosen by extension and content type.

Each parser is a top-level function `parse(path) -> ParsedDocument`, synchronous and picklable,
so the caller can run it in a thread or a process pool. A file the parser cannot read raises
`ParseError` with a reason meant for the user.

Structured formats keep their headings as Markdown headings (`# Title`), so the chunker can start
chunks at them whatever the source format.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from backburner.files.pipeline.budget import NO_LIMITS, ParseLimits, too_many_pages, too_much_text
from backburner.files.textcodec import BinaryContent, decode_text

logger = logging.getLogger(__name__)


class DocumentKind(StrEnum):
    TEXT = "text"
    CODE = "code"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"
    DOCX = "docx"
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    text: str
    kind: DocumentKind
    # What the user should know: part of the file that yields no text, for one.
    warnings: tuple[str, ...] = ()


class ParseError(Exception):
    """The file cannot be read as its type; `reason` is shown to the user."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


Parser = Callable[[Path, ParseLimits], ParsedDocument]


# --- reading ----------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParseError("file not found") from None
    if not data:
        raise ParseError("file is empty")
    return data


def _check_not_empty(path: Path) -> None:
    """The common messages for binary formats, whose parser opens the file itself."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ParseError("file not found") from None
    if size == 0:
        raise ParseError("file is empty")


def _read_text(path: Path, limits: ParseLimits) -> str:
    try:
        text = decode_text(_read_bytes(path))
    except BinaryContent as exc:
        raise ParseError(f"not a text file: {exc}") from None
    _check_length(len(text), limits)
    return text


def _check_length(chars: int, limits: ParseLimits) -> None:
    if chars > limits.max_text_chars:
        raise ParseError(too_much_text(limits.max_text_chars))


def _document(text: str, kind: DocumentKind, limits: ParseLimits) -> ParsedDocument:
    if not text.strip():
        raise ParseError("no text found in the file")
    _check_length(len(text), limits)
    return ParsedDocument(text=text, kind=kind)


# --- parsers ----------------------------------------------------------------------------------


def parse_text(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    return _document(_read_text(path, limits), DocumentKind.TEXT, limits)


def parse_code(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    return _document(_read_text(path, limits), DocumentKind.CODE, limits)


def parse_markdown(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    return _document(_read_text(path, limits), DocumentKind.MARKDOWN, limits)


def _too_deep(what: str) -> str:
    return f"{what}: nested deeper than the limit of {sys.getrecursionlimit()} levels"


def parse_json(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    text = _read_text(path, limits)
    try:
        value = json.loads(text)
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ParseError(_too_deep("invalid JSON")) from None
    return _document(pretty, DocumentKind.JSON, limits)


def parse_jsonl(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    lines: list[str] = []
    for number, line in enumerate(_read_text(path, limits).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.dumps(json.loads(line), ensure_ascii=False))
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON on line {number}: {exc.msg}") from None
        except RecursionError:
            raise ParseError(_too_deep(f"invalid JSON on line {number}")) from None
    return _document("\n".join(lines), DocumentKind.JSON, limits)


def parse_csv(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    text = _read_text(path, limits)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(text)
    try:
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
        # One row per line, fields joined so that each line reads on its own.
        lines = [", ".join(field.strip() for field in row) for row in rows if any(f.strip() for f in row)]
    except csv.Error as exc:
        raise ParseError(f"invalid CSV: {exc}") from None
    return _document("\n".join(lines), DocumentKind.CSV, limits)


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:16384], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def parse_html(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    from bs4 import BeautifulSoup  # imported here: worker processes that never see HTML skip it

    # Decoded like any text file, so binary content gets the same refusal.
    markup = _read_text(path, limits)
    with warnings.catch_warnings():
        # bs4 warns about XHTML and about markup that looks like a file name; neither matters here.
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object"]):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            title = " ".join(heading.get_text(" ").split())
            heading.replace_with(f"\n\n{'#' * level} {title}\n\n" if title else "\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    return _document(_tidy_blocks(soup.get_text()), DocumentKind.HTML, limits)


_BLOCK_TAGS = [
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li", "ul", "ol",
    "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "figure", "figcaption", "form", "title",
    "address", "hr",
]  # fmt: skip


def parse_pdf(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    from pypdf import PdfReader

    _check_not_empty(path)
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("the PDF is encrypted")
        if len(reader.pages) > limits.max_pages:
            raise ParseError(too_many_pages(len(reader.pages), limits.max_pages))
        pages: list[str] = []
        chars = 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            chars += len(pages[-1])
            _check_length(chars, limits)
    except (ParseError, MemoryError):  # a MemoryError is the pool's memory limit: not the file's fault
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, KeyError...)
        raise ParseError(f"corrupt PDF: {exc or type(exc).__name__}") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    blank = sum(1 for page in pages if not page.strip())
    if not text:
        raise ParseError(no_text_layer(len(pages)))
    warnings = (pages_without_text(blank, len(pages)),) if blank else ()
    return ParsedDocument(text=text, kind=DocumentKind.PDF, warnings=warnings)


def pages_without_text(blank: int, pages: int) -> str:
    if blank == 1:
        return f"1 of {pages} pages has no text layer; it is not searchable"
    return f"{blank} of {pages} pages have no text layer; they are not searchable"


def no_text_layer(pages: int) -> str:
    if pages == 1:
        return "the PDF's page has no text layer (a scanned document?); nothing in it is searchable"
    return (
        f"none of the PDF's {pages} pages has a text layer (a scanned document?); nothing in it is searchable"
    )


def parse_docx(path: Path, limits: ParseLimits = NO_LIMITS) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    _check_not_empty(path)
    try:
        document = docx.Document(str(path))
        blocks = list(_docx_blocks(document.iter_inner_content()))
    except PackageNotFoundError:
        raise ParseError("corrupt DOCX: not a Word document package") from None
    except MemoryError:
        raise
    except Exception as exc:  # zip, XML and missing-part errors of a damaged package
        raise ParseError(f"corrupt DOCX: {exc or type(exc).__name__}") from None
    return _document("\n\n".join(blocks), DocumentKind.DOCX, limits)


def _docx_blocks(items: Iterable[Any]) -> Iterable[str]:
    from docx.table import Table

    for item in items:
        if isinstance(item, Table):
            for row in item.rows:
                cells = [" ".join(cell.text.split()) for cell in row.cells]
                if any(cells):
                    yield " | ".join(cells)
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _heading_level(item.style.name if item.style is not None else "")
        yield f"{'#' * level} {text}" if level else text


def _heading_level(style_name: str) -> int:
    if style_name == "Title":
        return 1
    if style_name.startswith("Heading "):
        suffix = style_name.removeprefix("Heading ")
        if suffix.isdigit():
            return min(max(int(suffix), 1), 6)
    return 0


def _tidy_blocks(text: str) -> str:
    """Collapse spaces inside lines and runs of blank lines into one paragraph break."""
    paragraphs: list[str] = []
    lines: list[str] = []
    for raw in text.split("\n"):
        line = " ".join(raw.split())
        if line:
            lines.append(line)
        elif lines:
            paragraphs.append("\n".join(lines))
            lines = []
    if lines:
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


# --- choosing a parser ------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CODE_EXTENSIONS = _words(
    """
    .py .pyi .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .scala .groovy .c .h .cc .cpp .cxx .hpp
    .hh .cs .go .rs .rb .php .pl .pm .lua .r .jl .swift .m .mm .dart .hs .ml .mli .ex .exs .erl
    .clj .cljs .elm .fs .fsx .vb .sh .bash .zsh .fish .ps1 .bat .sql .css .scss .sass .less .vue
    .svelte .xml .xsl .yaml .yml .toml .ini .cfg .conf .properties .gradle .cmake .mk .proto
    .graphql .tf
    """
)
_TEXT_EXTENSIONS = _words(".txt .text .log .rst .adoc .tex .org .srt .vtt .env.example")
_TEXT_NAMES = _words("makefile dockerfile readme license licence changelog authors contributing notice")

_PARSERS_BY_EXTENSION: dict[str, Parser] = {
    **dict.fromkeys(_TEXT_EXTENSIONS, parse_text),
    **dict.fromkeys(_CODE_EXTENSIONS, parse_code),
    **dict.fromkeys((".md", ".markdown", ".mdx", ".mkd"), parse_markdown),
    **dict.fromkeys((".html", ".htm", ".xhtml"), parse_html),
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".json": parse_json,
    **dict.fromkeys((".jsonl", ".ndjson"), parse_jsonl),
    **dict.fromkeys((".csv", ".tsv"), parse_csv),
    ".ipynb": parse_json,  # notebooks are JSON; their cells' text survives pretty-printing
}

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_PARSERS_BY_EXTENSION)

_PARSERS_BY_CONTENT_TYPE: dict[str, Parser] = {
    "text/plain": parse_text,
    "text/markdown": parse_markdown,
    "text/x-markdown": parse_markdown,
    "text/html": parse_html,
    "application/xhtml+xml": parse_html,
    "application/pdf": parse_pdf,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": parse_docx,
    "application/json": parse_json,
    "application/x-ndjson": parse_jsonl,
    "application/jsonl": parse_jsonl,
    "text/csv": parse_csv,
    "text/tab-separated-values": parse_csv,
}


def parser_for(filename: str, content_type: str | None = None) -> Parser | None:
    """The parser for an upload, or None when the type is not supported (HTTP 415).

    A known extension decides, since browsers and clients often send a generic content type;
    otherwise the content type does, and any other `text/*` type reads as plain text.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name.lower()
    for suffix in _suffixes(name):
        parser = _PARSERS_BY_EXTENSION.get(suffix)
        if parser is not None:
            return parser
    if name in _TEXT_NAMES:
        return parse_text
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    parser = _PARSERS_BY_CONTENT_TYPE.get(media_type)
    if parser is not None:
        return parser
    if media_type.startswith("text/"):
        return parse_text
    return None


def _suffixes(name: str) -> list[str]:
    # Longest first, so that `.env.example` wins over `.example`.
    parts = name.split(".")
    return ["." + ".".join(parts[i:]) for i in range(1, len(parts))]
