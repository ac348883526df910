"""Rewrite the settings table of README.md from the Settings model."""

from pathlib import Path

from backburner.settings_docs import render_into

readme = Path(__file__).resolve().parent.parent / "README.md"
readme.write_text(render_into(readme.read_text()))
