"""The README stays true: its settings table is the model's, and it opens with the two commands."""

from pathlib import Path

from backburner.settings_docs import render_into

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_the_model() -> None:
    text = README.read_text()
    assert render_into(text) == text, "run `.venv/bin/python scripts/update_readme_settings.py`"


def test_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    assert text.index("make run") < text.index("make test") < text.index("settings-table:begin")
