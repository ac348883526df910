"""Parsers on real files written by the tests: PDF (reportlab), DOCX (python-docx), text in
several encodings, HTML, JSON, CSV, and the bad inputs that must fail with a clear reason."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import docx
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from backburner.files.pipeline.budget import FileBudget, ParseLimits
from backburner.files.pipeline.chunking import chunk_text
from backburner.files.pipeline.parsers import (
    SUPPORTED_EXTENSIONS,
    DocumentKind,
    ParseError,
    Parser,
    parse_code,
    parse_csv,
    parse_docx,
    parse_html,
    parse_json,
    parse_jsonl,
    parse_markdown,
    parse_pdf,
    parse_text,
    parser_for,
)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_pdf(pages: list[str]) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for text in pages:
        pdf.drawString(72, 780, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Annual Report", level=1)
    document.add_paragraph("Revenue grew by twelve percent in the northern region.")
    document.add_heading("Offices", level=2)
    document.add_paragraph("The Lisbon office opened in March.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "City"
    table.cell(0, 1).text = "Staff"
    table.cell(1, 0).text = "Lisbon"
    table.cell(1, 1).text = "42"
    document.add_paragraph("Closing remarks after the table.")
    document.save(str(path))
    return path


# --- formats ----------------------------------------------------------------------------------


def test_pdf(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "report.pdf",
        make_pdf(["Revenue grew by twelve percent this quarter.", "Page two mentions the Lisbon office."]),
    )
    parsed = parse_pdf(path)
    assert parsed.kind is DocumentKind.PDF
    assert "Revenue grew by twelve percent this quarter." in parsed.text
    assert "Page two mentions the Lisbon office." in parsed.text
    assert parsed.text.index("Revenue") < parsed.text.index("Lisbon")


@pytest.mark.parametrize(
    "content",
    [
        b"%PDF-1.4\n" + bytes(range(256)) * 8,
        b"this is not a PDF at all",
        make_pdf(["a page that will be cut in half"])[:300],
    ],
    ids=["garbage-after-header", "not-a-pdf", "truncated"],
)
def test_corrupt_pdf(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ParseError, match="corrupt PDF"):
        parse_pdf(write(tmp_path, "broken.pdf", content))


def test_pdf_without_text(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="page has no text layer"):
        parse_pdf(write(tmp_path, "blank.pdf", make_pdf([""])))


def test_docx_keeps_headings_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    parsed = parse_docx(make_docx(tmp_path / "report.docx"))
    assert parsed.kind is DocumentKind.DOCX
    assert parsed.text.split("\n\n") == [
        "# Annual Report",
        "Revenue grew by twelve percent in the northern region.",
        "## Offices",
        "The Lisbon office opened in March.",
        "City | Staff",
        "Lisbon | 42",
        "Closing remarks after the table.",
    ]


def test_corrupt_docx(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="corrupt DOCX"):
        parse_docx(write(tmp_path, "random.docx", os.urandom(2048)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "a zip, but not a Word document")
    with pytest.raises(ParseError, match="corrupt DOCX"):
        parse_docx(write(tmp_path, "zip.docx", buffer.getvalue()))


def test_markdown_and_code_keep_their_text(tmp_path: Path) -> None:
    md = parse_markdown(write(tmp_path, "notes.md", "# Title\r\n\r\nSome *text*.\r\n"))
    assert md == md.__class__(text="# Title\n\nSome *text*.\n", kind=DocumentKind.MARKDOWN)
    code = parse_code(write(tmp_path, "main.py", "def main() -> None:\n    print('hi')\n"))
    assert code.kind is DocumentKind.CODE
    assert "print('hi')" in code.text


def test_html_keeps_text_and_drops_scripts_and_styles(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Guide</title>
    <style>body { color: red }</style><script>var secret = "do not index";</script></head>
    <body><h1>Install &amp; run</h1><p>First <b>install</b> the package.</p>
    <ul><li>one</li><li>two</li></ul><h2>Usage</h2><p>Run it<br>twice.</p>
    <noscript>enable js</noscript></body></html>"""
    parsed = parse_html(write(tmp_path, "guide.html", html))
    assert parsed.kind is DocumentKind.HTML
    assert "secret" not in parsed.text
    assert "color" not in parsed.text
    assert "enable js" not in parsed.text
    assert parsed.text.split("\n\n") == [
        "Guide",
        "# Install & run",
        "First install the package.",
        "one",
        "two",
        "## Usage",
        "Run it\ntwice.",
    ]


def test_json_is_pretty_printed(tmp_path: Path) -> None:
    parsed = parse_json(write(tmp_path, "data.json", '{"name":"Ada","langs":["en","fr"],"note":"café"}'))
    assert parsed.kind is DocumentKind.JSON
    assert json.loads(parsed.text) == {"name": "Ada", "langs": ["en", "fr"], "note": "café"}
    assert '  "name": "Ada"' in parsed.text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"a": 1,}', "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 9"),
        ('{\n  "a": \n}', "invalid JSON: Expecting value at line 3 column 1"),
        ("[" * 100_000, "invalid JSON: nested deeper than the limit of"),
    ],
)
def test_invalid_json_says_why(tmp_path: Path, content: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_json(write(tmp_path, "bad.json", content))
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_jsonl(tmp_path: Path) -> None:
    parsed = parse_jsonl(write(tmp_path, "rows.jsonl", '{"a": 1}\n\n{"b": [1, 2]}\n'))
    assert parsed.text == '{"a": 1}\n{"b": [1, 2]}'
    with pytest.raises(ParseError, match="invalid JSON on line 2"):
        parse_jsonl(write(tmp_path, "bad.jsonl", '{"a": 1}\nnope\n'))


def test_csv_rows_become_lines(tmp_path: Path) -> None:
    parsed = parse_csv(write(tmp_path, "people.csv", 'name,city\nAda,London\n"Smith, J",Paris\n\n'))
    assert parsed.kind is DocumentKind.CSV
    assert parsed.text == "name, city\nAda, London\nSmith, J, Paris"
    tsv = parse_csv(write(tmp_path, "people.tsv", "name\tcity\nAda\tLondon\n"))
    assert tsv.text == "name, city\nAda, London"
    semi = parse_csv(write(tmp_path, "semi.csv", "name;city\nAda;London\nBob;Rome\n"))
    assert semi.text == "name, city\nAda, London\nBob, Rome"


# --- encodings --------------------------------------------------------------------------------

FRENCH = "Le café était très chaud, et la crème brûlée délicieuse. Où est l'hôtel ? " * 5
GERMAN = "Ünïcödé über alles, schöne Grüße aus Köln. " * 5
CURLY = "“Curly quotes” — and an ellipsis… naïve café " * 5
RUSSIAN = "Привет, как дела? Это русский текст для проверки. " * 5
JAPANESE = "日本語のテキストです。これはテストです。" * 10


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (FRENCH.encode("latin-1"), FRENCH),
        (GERMAN.encode("latin-1"), GERMAN),
        (FRENCH.encode("utf-8"), FRENCH),
        (FRENCH.encode("utf-8-sig"), FRENCH),
        (FRENCH.encode("utf-16"), FRENCH),  # with a byte-order mark
        (b"\xfe\xff" + GERMAN.encode("utf-16-be"), GERMAN),
        (CURLY.encode("cp1252"), CURLY),
        (RUSSIAN.encode("cp1251"), RUSSIAN),
        (JAPANESE.encode("shift_jis"), JAPANESE),
    ],
    ids=[
        "latin-1",
        "latin-1-german",
        "utf-8",
        "utf-8-bom",
        "utf-16-bom",
        "utf-16-be-bom",
        "cp1252",
        "cp1251",
        "shift-jis",
    ],
)
def test_encodings_are_detected(tmp_path: Path, data: bytes, expected: str) -> None:
    assert parse_text(write(tmp_path, "text.txt", data)).text == expected


def test_invalid_bytes_in_utf8_text_are_replaced(tmp_path: Path) -> None:
    data = ("Mostly valid UTF-8 text with an accent: é. " * 200).encode() + b"\xff\xfe\xfa" + b" end"
    parsed = parse_text(write(tmp_path, "mixed.txt", data))
    assert parsed.text.endswith(" end")
    assert "accent" in parsed.text


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(4096),
        bytes(b for b in os.urandom(8192) if b),  # random, but without NUL bytes
        b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16,
        bytes(range(1, 32)) * 200,
    ],
    ids=["random", "random-without-nul", "elf", "control-characters"],
)
def test_binary_named_txt_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ParseError, match=r"^not a text file: binary content"):
        parse_text(write(tmp_path, "innocent.txt", content))


ALL_PARSERS: list[Parser] = [
    parse_text,
    parse_code,
    parse_markdown,
    parse_html,
    parse_pdf,
    parse_docx,
    parse_json,
    parse_jsonl,
    parse_csv,
]


@pytest.mark.parametrize("parser", ALL_PARSERS, ids=lambda p: p.__name__)
def test_empty_file(tmp_path: Path, parser: Parser) -> None:
    with pytest.raises(ParseError) as caught:
        parser(write(tmp_path, "empty", b""))
    assert caught.value.reason == "file is empty"


@pytest.mark.parametrize("parser", ALL_PARSERS, ids=lambda p: p.__name__)
def test_missing_file(tmp_path: Path, parser: Parser) -> None:
    with pytest.raises(ParseError, match="file not found"):
        parser(tmp_path / "gone")


def test_whitespace_only_text_has_no_text(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no text found"):
        parse_text(write(tmp_path, "blank.txt", "  \n\n\t \n"))


def test_a_10_mb_single_line(tmp_path: Path) -> None:
    line = ("lorem ipsum dolor sit amet " * 400_000)[: 10 * 1024 * 1024]
    parsed = parse_text(write(tmp_path, "one-line.txt", line))
    assert parsed.text == line
    chunks = chunk_text(parsed.text, parsed.kind, 1200, 150)
    assert max(len(c.text) for c in chunks) <= 1200
    assert len(chunks) >= len(line) // 1200


# --- choosing a parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "parser"),
    [
        ("a.txt", None, parse_text),
        ("A.PDF", "application/octet-stream", parse_pdf),
        ("report.pdf", "text/plain", parse_pdf),  # a known extension wins
        ("notes.md", None, parse_markdown),
        ("page.HTM", None, parse_html),
        ("doc.docx", None, parse_docx),
        ("x.json", None, parse_json),
        ("x.ndjson", None, parse_jsonl),
        ("x.csv", None, parse_csv),
        ("x.tsv", None, parse_csv),
        ("script.py", None, parse_code),
        ("Component.tsx", None, parse_code),
        ("Makefile", None, parse_text),
        ("dir/README", None, parse_text),
        ("no-extension", "text/markdown; charset=utf-8", parse_markdown),
        ("download", "application/pdf", parse_pdf),
        ("weird.xyz", "text/x-custom", parse_text),
        ("archive.tar.gz", "text/plain", parse_text),
    ],
)
def test_parser_for(filename: str, content_type: str | None, parser: Parser) -> None:
    assert parser_for(filename, content_type) is parser


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("photo.png", "image/png"),
        ("photo.png", None),
        ("legacy.doc", "application/msword"),
        ("blob", "application/octet-stream"),
        ("blob", None),
        ("sheet.xlsx", ""),
    ],
)
def test_unsupported_types(filename: str, content_type: str | None) -> None:
    assert parser_for(filename, content_type) is None


def test_supported_extensions() -> None:
    for extension in [".txt", ".md", ".html", ".pdf", ".docx", ".json", ".csv", ".py"]:
        assert extension in SUPPORTED_EXTENSIONS
        assert parser_for("file" + extension) is not None
    assert all(ext.startswith(".") and ext == ext.lower() for ext in SUPPORTED_EXTENSIONS)


@pytest.mark.parametrize("parser", ALL_PARSERS, ids=lambda p: p.__name__)
def test_parsers_and_their_results_pickle(tmp_path: Path, parser: Parser) -> None:
    # Process pools send the function and get the document back by pickling.
    assert pickle.loads(pickle.dumps(parser)) is parser
    error = pickle.loads(pickle.dumps(ParseError("file is empty")))
    assert error.reason == "file is empty"
    parsed = parse_text(write(tmp_path, "a.txt", "hello"))
    assert pickle.loads(pickle.dumps(parsed)) == parsed


def test_a_files_parse_budget_grows_with_its_size_up_to_the_cap() -> None:
    budget = FileBudget(ParseLimits(10, 10), parse_timeout_s=120, parse_s_per_mb=20, memory_limit_mb=64)
    assert budget.parse_s(1_000) == 5.0  # a floor for the smallest files
    assert budget.parse_s(2_000_000) == 40.0
    assert budget.parse_s(50_000_000) == 120.0  # the cap


def test_a_pdf_over_its_page_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(make_pdf([f"page {i} says something" for i in range(5)]))
    with pytest.raises(ParseError, match=r"more than the limit of 2 \(file_max_pages\)"):
        parse_pdf(path, ParseLimits(max_pages=2, max_text_chars=10**9))
    with pytest.raises(ParseError, match=r"file_max_text_chars"):
        parse_pdf(path, ParseLimits(max_pages=100, max_text_chars=50))
