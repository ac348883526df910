"""Bytes of a text file to str: encoding detection, invalid bytes replaced, binary refused."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

# Detection looks at a prefix only: decisions on a sample keep a 50 MB file linear and fast.
SAMPLE_BYTES = 256 * 1024
# Above these shares of the decoded sample, the "text" is binary content with a text name.
MAX_CONTROL_RATIO = 0.05
MAX_REPLACEMENT_RATIO = 0.05

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that do not occur in text: C0 except tab, newlines, form feed; DEL; C1.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_NON_ASCII_LETTER = re.compile(r"(?![\x00-\x7f])[^\W\d_]")
_LETTER = re.compile(r"[^\W\d_]")
_WESTERN_PUNCTUATION = re.compile(
    "[\u00a0-\u00a5\u00a7\u00a9\u00ab\u00ae\u00b0\u00b1\u00b7\u00bb\u00bf\u00d7\u00f7"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u20ac\u2122]"
)


class BinaryContent(ValueError):
    """The bytes are not text."""


def decode_text(data: bytes) -> str:
    """Decode text of unknown encoding; raises `BinaryContent` for content that is not text."""
    encoding = detect_encoding(data)
    text = data.decode(encoding, errors="replace")
    _refuse_binary(text[:SAMPLE_BYTES])
    return text.replace("\r\n", "\n").replace("\r", "\n")


def detect_encoding(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    sample = data[:SAMPLE_BYTES]
    if b"\x00" in sample:
        # Text in UTF-16/32 without a byte-order mark is rare; NUL bytes are the mark of binary.
        raise BinaryContent("binary content (NUL bytes)")
    if _is_utf8(data):
        return "utf-8"
    if _looks_western(sample):
        return "cp1252"
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        # No encoding reads cleanly. cp1252 maps almost every byte, so the control-character
        # check after decoding tells text with a few odd bytes from binary content.
        return "cp1252"
    return best.encoding


def _is_utf8(data: bytes) -> bool:
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError as exc:
        # Only the end of the data may be cut inside a character; anything earlier is not UTF-8.
        return exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"
    return True


def _looks_western(sample: bytes) -> bool:
    """Mostly ASCII letters with some accented ones: legacy Western European text (cp1252).

    Statistical detectors often pick a Central European code page for short French or German
    text; text in Cyrillic or Greek code pages has mostly non-ASCII letters and is not taken.
    """
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:  # bytes that cp1252 leaves undefined
        return False
    non_ascii = len(_NON_ASCII.findall(text))
    if non_ascii == 0:
        return False
    accented = len(_NON_ASCII_LETTER.findall(text))
    plausible = accented + len(_WESTERN_PUNCTUATION.findall(text))
    letters = len(_LETTER.findall(text))
    return plausible >= 0.95 * non_ascii and accented <= 0.3 * max(letters, 1)


def _refuse_binary(sample: str) -> None:
    if not sample:
        return
    if len(_CONTROL.findall(sample)) > MAX_CONTROL_RATIO * len(sample):
        raise BinaryContent("binary content (control characters)")
    if sample.count("\ufffd") > MAX_REPLACEMENT_RATIO * len(sample):
        raise BinaryContent("binary content (undecodable bytes)")
