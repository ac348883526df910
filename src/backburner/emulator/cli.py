"""``backburner emulator``: serve the provider emulator from the command line.

Mount it with ``register(app)``, which adds the ``emulator`` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from backburner.cli_common import bind_or_exit
from backburner.emulator.config import DEFAULT_HOST, DEFAULT_PORT, EmulatorConfig
from backburner.emulator.server import run_emulator


def load_config(path: Path | None) -> EmulatorConfig:
    """Reads an EmulatorConfig from a YAML or JSON file; no file means the defaults."""
    if path is None:
        return EmulatorConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return EmulatorConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--config") from exc


def emulator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    complete_after: Annotated[
        float | None,
        typer.Option(
            "--complete-after",
            min=0,
            help="Seconds after creation at which each batch ends (default 5, or the config file's value).",
        ),
    ] = None,
    embedding_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--embedding-latency-ms",
            min=0,
            max=60_000,
            help="Milliseconds `/v1/embeddings` waits before each answer (default 0).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML or JSON file of EmulatorConfig fields (faults, scenario, ...)."),
    ] = None,
) -> None:
    """Serve a local Anthropic Message Batches and OpenAI Batch API (and OpenAI's
    `/v1/embeddings`), with fault injection."""
    settings = load_config(config)
    if embedding_latency_ms is not None:
        settings = settings.model_copy(update={"embedding_latency_ms": embedding_latency_ms})
    sock = bind_or_exit(host, port, how_to_change="choose another with --port")
    typer.echo(
        f"Provider emulator on http://{host}:{port} "
        f"(Anthropic base_url http://{host}:{port}, OpenAI base_url http://{host}:{port}/v1)"
    )
    run_emulator(host, port, complete_after, config=settings, sockets=[sock])


def register(app: typer.Typer) -> None:
    """Adds the ``emulator`` command to ``app``."""
    app.command("emulator")(emulator)


# One command: `python -m backburner.emulator` runs it with no sub-command to name.
emulator_cli = typer.Typer(help="Serve the provider emulator.", add_completion=False)
emulator_cli.command()(emulator)
