"""Upload names: no directories, no control characters, never empty, bounded."""

from __future__ import annotations

import pytest

from backburner.files.names import DEFAULT_NAME, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("dir/sub/..", "sub"),
        ("..", DEFAULT_NAME),
        ("", DEFAULT_NAME),
        ("   ", DEFAULT_NAME),
        ("...", DEFAULT_NAME),
        ("/", DEFAULT_NAME),
        (".bashrc", "bashrc"),
        ("notes\x00.txt", "notes.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("line\nbreak.md", "linebreak.md"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("  spaced    out  .txt", "spaced out .txt"),
        ("trailing dots...", "trailing dots"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
        ("résumé.docx", "résumé.docx"),
        ("Cafe\u0301.md", "Café.md"),
    ],
)
def test_sanitize(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_long_names_keep_their_extension_within_the_byte_limit() -> None:
    name = sanitize_filename("x" * 1000 + ".markdown")
    assert name.endswith(".markdown")
    assert len(name.encode()) == 255
    wide = sanitize_filename("é" * 300 + ".txt")  # two bytes each: never cut inside one
    assert wide.endswith(".txt")
    assert len(wide.encode()) <= 255
    wide.encode().decode()
    assert len(sanitize_filename("y" * 300, max_bytes=40).encode()) == 40


def test_never_returns_separators_or_controls() -> None:
    for raw in ["a/b\\c", "x\x01y\x7fz", "../\x00/..", "\t\r\n"]:
        name = sanitize_filename(raw)
        assert name
        assert "/" not in name and "\\" not in name
        assert all(ch.isprintable() for ch in name)
