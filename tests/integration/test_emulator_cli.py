"""``backburner emulator`` as a real process, and its mounting on a Typer app."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
import typer
from typer.testing import CliRunner

from backburner.emulator.cli import emulator_cli, register
from tests.emulator_support.sdk import API_KEY, message_requests

START_DEADLINE_S = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "emulator.yaml"
    config.write_text(
        "faults:\n"
        "  - {route: anthropic.batches.list, kind: server_error, count: 1}\n"
        "scenario:\n"
        "  error_every: 2\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backburner.emulator",
            "--port",
            str(port),
            "--complete-after",
            "0",
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=15)
            raise
        # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status tells what stopped it.
        assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
        assert "Finished server process" in stderr.decode()


async def _wait_until_serving(base_url: str) -> None:
    async with asyncio.timeout(START_DEADLINE_S), httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while True:
            try:
                if (await http.get("/_emulator/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # poll interval while the process starts, not a synchronization


async def test_command_serves_the_sdk_with_its_config_file(emulator_process: str) -> None:
    await _wait_until_serving(emulator_process)
    async with anthropic.AsyncAnthropic(
        base_url=emulator_process, api_key=API_KEY, max_retries=0, timeout=15
    ) as claude:
        created = await claude.messages.batches.create(requests=message_requests(["a", "b"]))
        # --complete-after 0: the batch has ended as soon as it exists.
        assert created.processing_status == "ended"
        assert (created.request_counts.succeeded, created.request_counts.errored) == (1, 1)
        lines = [line.result.type async for line in await claude.messages.batches.results(created.id)]
        assert lines == ["succeeded", "errored"]
        with pytest.raises(anthropic.InternalServerError):
            await claude.messages.batches.list()
        assert [batch.id async for batch in claude.messages.batches.list()] == [created.id]


def test_register_exposes_the_options_and_no_sub_commands() -> None:
    registered = typer.Typer()
    register(registered)

    @registered.command()
    def other() -> None:
        """Another command, so that 'emulator' is a sub-command."""

    runner = CliRunner()
    environment = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = runner.invoke(registered, ["emulator", "--help"], env=environment)
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--complete-after", "--config"):
        assert option in result.output
    assert "COMMAND" not in result.output
    alone = runner.invoke(emulator_cli, ["--help"], env=environment)
    assert alone.exit_code == 0 and "--complete-after" in alone.output and "COMMAND" not in alone.output


def test_a_bad_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("complete_after_s: -1\nunknown_field: 1\n")
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        """Another command."""

    result = CliRunner().invoke(
        app, ["emulator", "--config", str(config)], env={"COLUMNS": "200", "NO_COLOR": "1"}
    )

    assert result.exit_code == 2
    assert "unknown_field" in result.output and "complete_after_s" in result.output
