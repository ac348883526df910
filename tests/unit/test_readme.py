"""The README stays true: its settings table is the model's, and it opens with the two commands."""

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from backburner.cli import app
from backburner.settings import Settings
from backburner.settings_docs import render_into

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_the_model() -> None:
    text = README.read_text()
    assert render_into(text) == text, "run `.venv/bin/python scripts/update_readme_settings.py`"


def test_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    assert text.index("make run") < text.index("make test") < text.index("settings-table:begin")


def _documented_command_lines() -> list[str]:
    """Every `backburner ...` line of the README's shell blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("backburner ")
    ]


def test_every_documented_command_runs_with_its_options() -> None:
    """Each command line of the README names a command that exists and options it takes."""
    lines = _documented_command_lines()
    assert len(lines) >= 20, lines
    runner = CliRunner()
    env = {"COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    for line in lines:
        words = shlex.split(line.replace("[", " ").replace("]", " ").replace("&", " "))[1:]
        path = []
        for word in words:
            if word.startswith("-") or not re.fullmatch(r"[a-z]+", word):
                break
            path.append(word)
        result = runner.invoke(app, [*path, "--help"], env=env)
        assert result.exit_code == 0, (line, result.output)
        for option in (word.split("=")[0] for word in words if word.startswith("--")):
            assert option in result.output, (line, option)


def test_the_client_commands_name_their_environment_variables() -> None:
    runner = CliRunner()
    env = {"COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    for path in (["batches", "list"], ["files", "list"], ["scheduler", "status"]):
        output = runner.invoke(app, [*path, "--help"], env=env).output
        assert "BACKBURNER_URL" in output and "BACKBURNER_API_KEY" in output, path


def test_the_readme_states_what_a_frozen_leader_costs() -> None:
    text = README.read_text()
    assert "freezes or loses its connection" not in text  # the old claim of "a second or two"
    lease = Settings.model_fields["leader_lease_seconds"].default
    assert f"`leader_lease_seconds` ({lease:g} s by default" in text
    assert "what the lease trades" in text.lower() or "The lease is the trade" in text
